"""The inbox ingest path: record a delivery once, and queue its routing run, in one commit.

Webhook requests go through a single writer task that groups whatever is queued (up to
`max_batch`) into one transaction, so a burst pays one commit (one fsync) instead of one per
request. Each caller awaits a future resolved only after its own delivery is committed.

De-duplication is one upsert per batch, portable across SQLite (>= 3.35) and PostgreSQL:

    INSERT ... VALUES (...), (...) ON CONFLICT (event_id)
    DO UPDATE SET duplicates = deliveries.duplicates + excluded.duplicates + 1, ...
    RETURNING id, event_id, duplicates

A row inserted returns exactly the duplicates it was inserted with (the extra copies seen in this
batch); an updated row returns more. So "new" needs no second query and no dialect trick. (On
SQLite the same three columns are read back in one aggregated row right after the upsert, in the
same transaction: see `_sqlite_outcomes_sql`.)
"""

import asyncio
import contextlib
import functools
import json
import queue
import sqlite3
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
import structlog
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from store.engine import make_engine
from store.models import (
    UNFINISHED_STATES,
    Delivery,
    HandlerRun,
    RunState,
    Source,
    utcnow,
)

log = structlog.get_logger(__name__)

ROUTE_HANDLER = "_route"
DEFAULT_MAX_BATCH = 256
# Rows per multi-row statement on SQLite: 12 x 256 parameters, far below its limit of 32,766.
_SQLITE_CHUNK = 256

_deliveries: sa.Table = Delivery.__table__  # type: ignore[attr-defined]
_runs: sa.Table = HandlerRun.__table__  # type: ignore[attr-defined]


class StoreUnavailable(Exception):
    """The database could not take the write (down, locked, full): nothing was committed."""


@dataclass(frozen=True)
class NewDelivery:
    """A delivery as the edge saw it; the inbox decides whether it is new."""

    event_id: str
    event_type: str
    resource_id: str
    session_id: str | None
    event_created_at: datetime | None
    received_at: datetime
    body: str
    headers: dict[str, str] = field(default_factory=dict)
    secret_index: int | None = None
    source: str = Source.WEBHOOK

    @property
    def lane(self) -> str:
        return self.session_id or f"delivery:{self.event_id}"


@dataclass(frozen=True)
class IngestResult:
    new: bool
    delivery_id: int


def session_id_for(event_type: str, resource_id: str) -> str | None:
    """Session events (thread events too) carry the session id in `data.id`."""
    return resource_id if event_type.startswith("session.") else None


@dataclass(frozen=True)
class Extra:
    """Copies of one event beyond the first in a batch, and when the last of them arrived."""

    count: int
    last_at: datetime | None


def plan_batch(items: Sequence[NewDelivery]) -> tuple[list[NewDelivery], dict[str, Extra]]:
    """The first copy of each event id, in arrival order, and the copies that came after it."""
    firsts: dict[str, NewDelivery] = {}
    extra: dict[str, Extra] = {}
    for item in items:
        if item.event_id in firsts:
            seen = extra[item.event_id]
            extra[item.event_id] = Extra(seen.count + 1, item.received_at)
        else:
            firsts[item.event_id] = item
            extra[item.event_id] = Extra(0, None)
    return list(firsts.values()), extra


_Pending = tuple[NewDelivery, "asyncio.Future[IngestResult]"]
_Outcome = IngestResult | StoreUnavailable
_STOP = object()


class Inbox:
    """The only writer of deliveries. Owns its engine; `close()` disposes it.

    The writer is a thread of its own, not a task that hops to a thread per batch: it takes
    whatever has queued while it was committing, writes it, hands the outcomes back to the
    callers' event loop, and goes straight on to the next batch. The loop never schedules the
    writer, so a batch never waits for the loop to get round to it, and the database work
    (which releases the GIL) overlaps with the loop's parsing and answering.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        max_batch: int = DEFAULT_MAX_BATCH,
        now: Callable[[], datetime] = utcnow,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self.engine = engine
        self.max_batch = max_batch
        self.now = now
        # Observes each committed batch size; the receiver feeds it to a histogram.
        self.on_batch = on_batch
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._lock = threading.Lock()

    @classmethod
    def connect(cls, url: str, **kwargs: Any) -> "Inbox":
        return cls(make_engine(url), **kwargs)

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        self._ensure_writer()

    def _ensure_writer(self) -> None:
        with self._lock:
            if self._writer is not None and self._writer.is_alive():
                return
            self._writer = threading.Thread(
                target=self._run_writer, name="inbox-writer", daemon=True
            )
            self._writer.start()

    async def stop(self) -> None:
        """Finish what is queued (its callers are answered), then stop the writer."""
        with self._lock:
            writer = self._writer
        if writer is None or not writer.is_alive():
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # FIFO: the writer reaches the stop mark after every delivery queued before it, and
        # resolves `done` after it has handed their outcomes to their loop. `_writer` stays set
        # meanwhile, so an ingest racing the stop queues behind the mark, not into a second
        # writer that could take the mark meant for this one.
        self._queue.put((_STOP, done))
        await done
        await asyncio.to_thread(writer.join)
        with self._lock:
            if self._writer is writer:
                self._writer = None
        if not self._queue.empty():
            self._ensure_writer()  # queued while stopping: answered by a new writer, not never

    def close(self) -> None:
        self.engine.dispose()

    # -- ingest ----------------------------------------------------------------------------

    async def ingest(self, delivery: NewDelivery) -> IngestResult:
        """Record `delivery` through the batch writer; returns once it is committed."""
        if self._writer is None or not self._writer.is_alive():
            self._ensure_writer()
        future: asyncio.Future[IngestResult] = asyncio.get_running_loop().create_future()
        self._queue.put((delivery, future))
        return await future

    def ingest_sync(self, delivery: NewDelivery) -> IngestResult:
        """The same insert-if-new, outside the event loop (the reconciler's path)."""
        return self.write_batch([delivery])[0]

    def _run_writer(self) -> None:
        while True:
            batch: list[_Pending] = []
            stop: asyncio.Future[None] | None = None
            item = self._queue.get()
            while True:
                if item[0] is _STOP:
                    stop = item[1]
                    break
                batch.append(item)
                if len(batch) >= self.max_batch:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            if batch:
                self._commit(batch)
            if stop is not None:
                _call_soon(stop.get_loop(), _resolve, stop)
                return

    def _commit(self, batch: list[_Pending]) -> None:
        items = [item for item, _ in batch]
        outcomes: list[_Outcome]
        try:
            outcomes = self._write_resilient(items)
        except Exception as exc:  # the writer must outlive any single batch
            log.exception("inbox.batch_failed", size=len(items))
            outcomes = [StoreUnavailable(type(exc).__name__)] * len(items)
        loops: dict[asyncio.AbstractEventLoop, list[tuple[_Pending, _Outcome]]] = {}
        for pending, outcome in zip(batch, outcomes, strict=True):
            loops.setdefault(pending[1].get_loop(), []).append((pending, outcome))
        for loop, settled in loops.items():  # one loop, unless tests share an inbox
            _call_soon(loop, _settle, settled)

    def _write_resilient(self, items: list[NewDelivery]) -> list[IngestResult | StoreUnavailable]:
        try:
            return list(self.write_batch(items))
        except StoreUnavailable as exc:
            cause = exc.__cause__
            if len(items) == 1 or not isinstance(cause, sa.exc.DBAPIError) or _is_outage(cause):
                return [exc] * len(items)
        # The database refused something other than an outage (one bad row, say): retry one by
        # one so a single poison delivery cannot fail everyone it was batched with.
        log.warning("inbox.batch_split", size=len(items))
        outcomes: list[IngestResult | StoreUnavailable] = []
        for item in items:
            try:
                outcomes.extend(self.write_batch([item]))
            except StoreUnavailable as exc:
                log.warning("inbox.delivery_refused", event_id=item.event_id, error=str(exc))
                outcomes.append(exc)
        return outcomes

    def write_batch(self, items: Sequence[NewDelivery]) -> list[IngestResult]:
        """Record `items` in one transaction; results line up with `items`."""
        if not items:
            return []
        now = self.now()
        firsts, extra = plan_batch(items)
        try:
            with self.engine.begin() as conn:
                raw = conn.dialect.name == "sqlite"
                if raw:
                    rows = _sqlite_upsert_deliveries(conn, firsts, extra)
                else:
                    # One global lock order: receivers upserting the same redelivered events in
                    # different orders would otherwise deadlock and 503 both batches.
                    ordered = sorted(firsts, key=lambda d: d.event_id)
                    rows = _upsert_deliveries(conn, ordered, extra)
                fresh = [d for d in firsts if rows[d.event_id][1] == extra[d.event_id].count]
                if fresh and raw:
                    _sqlite_insert_runs(conn, [(rows[d.event_id][0], d) for d in fresh], now)
                elif fresh:
                    conn.execute(
                        sa.insert(_runs),
                        [_routing_run(rows[d.event_id][0], d, now) for d in fresh],
                    )
        except sa.exc.SQLAlchemyError as exc:
            raise StoreUnavailable(_reason(exc)) from exc
        if self.on_batch is not None:
            self.on_batch(len(items))
        fresh_ids = {d.event_id for d in fresh}
        results: list[IngestResult] = []
        for item in items:
            delivery_id = rows[item.event_id][0]
            is_new = item.event_id in fresh_ids
            fresh_ids.discard(item.event_id)  # later copies in this batch are duplicates
            results.append(IngestResult(new=is_new, delivery_id=delivery_id))
        return results

    # -- reads for health and metrics ------------------------------------------------------

    def ping(self) -> None:
        """Raise StoreUnavailable unless the inbox table answers."""
        try:
            with self.engine.connect() as conn:
                conn.execute(sa.select(_deliveries.c.id).limit(1)).all()
        except sa.exc.SQLAlchemyError as exc:
            raise StoreUnavailable(_reason(exc)) from exc

    def depth(self) -> int:
        """Handler runs not yet finished: the worker's backlog."""
        query = (
            sa.select(sa.func.count())
            .select_from(_runs)
            .where(_runs.c.state.in_([str(s) for s in UNFINISHED_STATES]))
        )
        try:
            with self.engine.connect() as conn:
                return int(conn.execute(query).scalar_one())
        except sa.exc.SQLAlchemyError as exc:
            raise StoreUnavailable(_reason(exc)) from exc


def _call_soon(loop: asyncio.AbstractEventLoop, callback: Callable[..., None], *args: Any) -> None:
    # A loop that closed while its batch was being written has nobody left to answer.
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(callback, *args)


def _resolve(done: "asyncio.Future[None]") -> None:
    if not done.done():
        done.set_result(None)


def _settle(settled: list[tuple[_Pending, _Outcome]]) -> None:
    """On the callers' loop: answer each caller, then log the commit in one line."""
    stored: list[str] = []
    duplicate: list[str] = []
    for (item, future), outcome in settled:
        if not isinstance(outcome, StoreUnavailable):
            (stored if outcome.new else duplicate).append(item.event_id)
        if future.done():  # the caller went away (client disconnect, cancel)
            continue
        if isinstance(outcome, StoreUnavailable):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)
    if stored or duplicate:
        # One line per commit, naming every event in it: "did event X arrive?" is one grep.
        log.info("inbox.committed", stored=stored, duplicate=duplicate)


def _upsert_deliveries(
    conn: Connection, firsts: list[NewDelivery], extra: dict[str, Extra]
) -> dict[str, tuple[int, int]]:
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    values = [
        {
            "event_id": d.event_id,
            "event_type": d.event_type,
            "resource_id": d.resource_id,
            "session_id": d.session_id,
            "event_created_at": d.event_created_at,
            "received_at": d.received_at,
            "source": str(d.source),
            "body": d.body,
            "headers": d.headers,
            "secret_index": d.secret_index,
            "duplicates": extra[d.event_id].count,
            "last_duplicate_at": extra[d.event_id].last_at,
        }
        for d in firsts
    ]
    # executemany, so SQLAlchemy's "insertmanyvalues" sends multi-row VALUES pages from one
    # cached statement. That needs every parameter inside VALUES: the SET clause reads only
    # `excluded`, never a bind of its own.
    stmt = insert(_deliveries)
    upsert = stmt.on_conflict_do_update(
        index_elements=[_deliveries.c.event_id],
        set_={
            "duplicates": _deliveries.c.duplicates + stmt.excluded.duplicates + 1,
            "last_duplicate_at": sa.func.coalesce(
                stmt.excluded.last_duplicate_at, stmt.excluded.received_at
            ),
        },
    ).returning(_deliveries.c.id, _deliveries.c.event_id, _deliveries.c.duplicates)
    result = conn.execute(upsert, values)
    return {event_id: (row_id, dups) for row_id, event_id, dups in result}


# SQLite runs the same upsert through the driver: SQLAlchemy's executemany + insertmanyvalues
# machinery cost more CPU than SQLite's own work, on the one thread every request shares. The
# SQL and the stored values are what SQLAlchemy would send (its DateTime text, its JSON).
_DELIVERY_COLUMNS = (
    "event_id, event_type, resource_id, session_id, event_created_at, received_at, source, body,"
    " headers, secret_index, duplicates, last_duplicate_at"
)
_RUN_COLUMNS = (
    "delivery_id, lane, position, handler, state, attempts, next_attempt_at, created_at, updated_at"
)


@functools.lru_cache(maxsize=64)
def _values(width: int, count: int) -> str:
    row = "(" + ", ".join(["?"] * width) + ")"
    return ", ".join([row] * count)


def _sqlite_upsert_sql(count: int) -> str:
    return (
        f"INSERT INTO deliveries ({_DELIVERY_COLUMNS}) VALUES {_values(12, count)}"  # noqa: S608 (placeholders only)
        " ON CONFLICT (event_id) DO UPDATE SET"
        " duplicates = deliveries.duplicates + excluded.duplicates + 1,"
        " last_duplicate_at = coalesce(excluded.last_duplicate_at, excluded.received_at)"
    )


def _sqlite_outcomes_sql(count: int) -> str:
    # One aggregated row, not RETURNING's row per delivery: the driver gives up and retakes
    # the GIL around every row it steps, and each retake waits on the busy event loop.
    return (
        "SELECT json_group_array(json_array(id, event_id, duplicates)) FROM deliveries"  # noqa: S608
        f" WHERE event_id IN ({', '.join(['?'] * count)})"
    )


def _sqlite_time(value: datetime | None) -> str | None:
    """UTCDateTime's naive UTC, in SQLAlchemy's SQLite DateTime text form."""
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError("naive datetime given to the store; use an aware UTC datetime")
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    # "YYYY-MM-DD HH:MM:SS.ffffff" then "+00:00": the slice spares a replace() per timestamp.
    return value.isoformat(" ", "microseconds")[:26]


def _sqlite_execute(conn: Connection, sql: str, params: list[Any]) -> Any:
    """Run `sql`; the first result row, if any (one step of the statement, one GIL retake)."""
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        return cursor.execute(sql, params).fetchone()
    except sqlite3.Error as exc:
        # Wrapped as SQLAlchemy would, so outage/refusal handling sees the same exceptions.
        raise sa.exc.DBAPIError.instance(
            sql, None, exc, sqlite3.Error, dialect=conn.dialect
        ) from exc
    finally:
        cursor.close()


def _sqlite_params(rows: Sequence[Sequence[Any]]) -> list[Any]:
    return [value for row in rows for value in row]


def _sqlite_upsert_deliveries(
    conn: Connection, firsts: list[NewDelivery], extra: dict[str, Extra]
) -> dict[str, tuple[int, int]]:
    try:
        values = [
            (
                d.event_id,
                d.event_type,
                d.resource_id,
                d.session_id,
                _sqlite_time(d.event_created_at),
                _sqlite_time(d.received_at),
                str(d.source),
                d.body,
                json.dumps(d.headers),
                d.secret_index,
                extra[d.event_id].count,
                _sqlite_time(extra[d.event_id].last_at),
            )
            for d in firsts
        ]
    except ValueError as exc:
        raise sa.exc.StatementError(str(exc), "INSERT INTO deliveries", None, exc) from exc
    # One multi-row statement per batch size (prepared once, then cached by sqlite3), chunked
    # so a statement stays well under SQLite's bound-parameter limit.
    out: dict[str, tuple[int, int]] = {}
    for start in range(0, len(values), _SQLITE_CHUNK):
        chunk = values[start : start + _SQLITE_CHUNK]
        _sqlite_execute(conn, _sqlite_upsert_sql(len(chunk)), _sqlite_params(chunk))
        ids = [row[0] for row in chunk]
        (found,) = _sqlite_execute(conn, _sqlite_outcomes_sql(len(ids)), ids)
        out.update((event_id, (row_id, dups)) for row_id, event_id, dups in json.loads(found))
    return out


def _sqlite_insert_runs(
    conn: Connection, fresh: list[tuple[int, NewDelivery]], now: datetime
) -> None:
    stamp = _sqlite_time(now)
    pending = str(RunState.PENDING)
    values = [(i, d.lane, 0, ROUTE_HANDLER, pending, 0, stamp, stamp, stamp) for i, d in fresh]
    for start in range(0, len(values), _SQLITE_CHUNK):
        chunk = values[start : start + _SQLITE_CHUNK]
        sql = f"INSERT INTO handler_runs ({_RUN_COLUMNS}) VALUES {_values(9, len(chunk))}"  # noqa: S608
        _sqlite_execute(conn, sql, _sqlite_params(chunk))


def _routing_run(delivery_id: int, d: NewDelivery, now: datetime) -> dict[str, Any]:
    return {
        "delivery_id": delivery_id,
        "lane": d.lane,
        "position": 0,
        "handler": ROUTE_HANDLER,
        "state": str(RunState.PENDING),
        "attempts": 0,
        "next_attempt_at": now,
        "created_at": now,
        "updated_at": now,
    }


def _is_outage(exc: sa.exc.DBAPIError) -> bool:
    return isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError) or bool(
        exc.connection_invalidated
    )


def _reason(exc: BaseException) -> str:
    # The class name only: driver messages can carry connection strings.
    orig = getattr(exc, "orig", None)
    return type(orig).__name__ if orig is not None else type(exc).__name__
