"""Recording deliveries: insert-if-new and the routing run, one transaction per batch.

The SQL of the ingest path, and nothing about who calls it: the inbox's writer process runs it
for the webhook path, the reconciler runs it in-process for its synthetic deliveries.

De-duplication is one upsert per batch, portable across SQLite (>= 3.35) and PostgreSQL:

    INSERT ... VALUES (...), (...) ON CONFLICT (event_id)
    DO UPDATE SET duplicates = deliveries.duplicates + excluded.duplicates + 1, ...
    RETURNING id, event_id, duplicates

A row inserted returns exactly the duplicates it was inserted with (the extra copies seen in this
batch); an updated row returns more. So "new" needs no second query and no dialect trick.
"""

import contextlib
import functools
import math
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from json.encoder import encode_basestring_ascii
from typing import Any, Final, NamedTuple

import sqlalchemy as sa
import structlog
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from store.engine import sqlite_connect
from store.models import UNFINISHED_STATES, Delivery, HandlerRun, RunState, Source
from store.runs import ROUTE_HANDLER

log = structlog.get_logger(__name__)

# Rows per multi-row statement on SQLite: 12 x 256 parameters, far below its limit of 32,766.
_SQLITE_CHUNK = 256
# A plain str, not the enum member: it crosses to the writer process with every delivery.
WEBHOOK: str = Source.WEBHOOK.value

_quote = encode_basestring_ascii

_deliveries: sa.Table = Delivery.__table__  # type: ignore[attr-defined]
_runs: sa.Table = HandlerRun.__table__  # type: ignore[attr-defined]


class StoreUnavailable(Exception):
    """The database could not take the write (down, locked, full): nothing was committed."""


class NewDelivery(NamedTuple):
    """A delivery as the edge saw it; the inbox decides whether it is new.

    A named tuple, not a dataclass: the webhook path builds one per request, and a tuple costs a
    fifth of a frozen dataclass to make and turns into its wire form (store/frames.py) cheaply.
    """

    event_id: str
    event_type: str
    resource_id: str
    session_id: str | None
    event_created_at: datetime | None
    received_at: datetime
    body: str
    headers: Mapping[str, str] = {}  # never mutated
    secret_index: int | None = None
    source: str = WEBHOOK

    @property
    def lane(self) -> str:
        return self.session_id or f"delivery:{self.event_id}"


class IngestResult(NamedTuple):
    new: bool
    delivery_id: int


def session_id_for(event_type: str, resource_id: str) -> str | None:
    """Session events (thread events too) carry the session id in `data.id`."""
    return resource_id if event_type.startswith("session.") else None


# A delivery as one plain tuple, in NewDelivery's field order, its two datetimes as float seconds
# since the epoch (exact to the microsecond for any instant before the year 2242). The form the
# SQL below takes, and the one that crosses to the writer process (store/frames.py): the
# webhook path builds it directly, sparing the event loop a NewDelivery and its conversion.
Row = tuple[str, str, str, str | None, float | None, float, str, dict[str, str], int | None, str]
_ID: Final = 0
_RECEIVED: Final = 5


# The instants a Row carries exactly, to the microsecond, as float seconds (any before 2242).
ROW_EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)
ROW_LATEST = datetime(2200, 1, 1, tzinfo=UTC)


def to_row(d: NewDelivery) -> Row:
    """Raises ValueError for a naive datetime (which instant it means is anybody's guess) or one
    outside ROW_EARLIEST..ROW_LATEST."""
    created = d.event_created_at
    for moment in (d.received_at, created):
        if moment is None:
            continue
        if moment.tzinfo is None:
            raise ValueError("naive datetime given to the store; use an aware UTC datetime")
        if not ROW_EARLIEST <= moment < ROW_LATEST:
            raise ValueError(f"{moment.isoformat()} is outside the instants the store keeps")
    return (
        d.event_id,
        d.event_type,
        d.resource_id,
        d.session_id,
        None if created is None else created.timestamp(),
        d.received_at.timestamp(),
        d.body,
        d.headers if type(d.headers) is dict else dict(d.headers),
        d.secret_index,
        str(d.source),  # a Source member is a str subclass, which the wire refuses
    )


def _datetime(seconds: float | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)


@dataclass(frozen=True)
class Extra:
    """Copies of one event beyond the first in a batch, and when the last of them arrived."""

    count: int
    last_at: float | None


def plan_batch(rows: Sequence[Row]) -> tuple[list[Row], dict[str, Extra]]:
    """The first copy of each event id, in arrival order, and the copies that came after it."""
    firsts: dict[str, Row] = {}
    extra: dict[str, Extra] = {}
    for row in rows:
        event_id = row[_ID]
        if event_id in firsts:
            extra[event_id] = Extra(extra[event_id].count + 1, row[_RECEIVED])
        else:
            firsts[event_id] = row
            extra[event_id] = Extra(0, None)
    return list(firsts.values()), extra


# Records rows in one transaction at `now` (epoch seconds); results line up with the rows.
Write = Callable[[Sequence[Row], float], list[IngestResult]]


def write_batch(engine: Engine, items: Sequence[NewDelivery], now: datetime) -> list[IngestResult]:
    """Record `items` in one transaction on `engine`; results line up with `items`.

    Raises StoreUnavailable, with the driver's error as its cause, when nothing was committed.
    """
    return write_rows(engine, [to_row(d) for d in items], now.timestamp())


def write_rows(engine: Engine, rows: Sequence[Row], now: float) -> list[IngestResult]:
    """`write_batch` for rows already in their compact form."""
    if not rows:
        return []
    firsts, extra = plan_batch(rows)
    try:
        with engine.begin() as conn:
            if conn.dialect.name == "sqlite":
                raw = conn.connection.driver_connection
                assert isinstance(raw, sqlite3.Connection)
                recorded = _sqlite_record(raw, firsts, extra, now)
            else:
                recorded = _record(conn, firsts, extra, now)
    except sa.exc.SQLAlchemyError as exc:
        raise StoreUnavailable(_reason(exc)) from exc
    return _results(rows, recorded)


class SqliteWriter:
    """`write_rows` over a sqlite3 connection of its own: the writer process's SQLite path.

    The same SQL and values as through the engine, without SQLAlchemy's pool, events and
    transaction machinery around each batch (a fifth of the writer's time per delivery).
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None

    def __call__(self, rows: Sequence[Row], now: float) -> list[IngestResult]:
        if not rows:
            return []
        firsts, extra = plan_batch(rows)
        try:
            conn = self._connection()
            _sqlite_run(conn, "BEGIN IMMEDIATE")
            try:
                recorded = _sqlite_record(conn, firsts, extra, now)
                _sqlite_run(conn, "COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise
        except sa.exc.SQLAlchemyError as exc:
            if isinstance(exc, sa.exc.DBAPIError) and _is_outage(exc):
                self.close()  # a fresh connection for the next batch, whatever broke this one
            raise StoreUnavailable(_reason(exc)) from exc
        return _results(rows, recorded)

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            try:
                self._conn = sqlite_connect(self.path)
            except sqlite3.Error as exc:
                raise _wrapped("connect", exc) from exc
        return self._conn

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(sqlite3.Error):
                conn.close()


def write_resilient(
    write: Write, rows: Sequence[Row], now: float
) -> list[IngestResult | StoreUnavailable]:
    """`write(rows, now)`, except that one refused delivery fails only itself, not its batch."""
    try:
        return list(write(rows, now))
    except StoreUnavailable as exc:
        cause = exc.__cause__
        if len(rows) == 1 or not isinstance(cause, sa.exc.DBAPIError) or _is_outage(cause):
            return [exc] * len(rows)
    # The database refused something other than an outage (one bad row, say): retry one by
    # one so a single poison delivery cannot fail everyone it was batched with.
    log.warning("inbox.batch_split", size=len(rows))
    outcomes: list[IngestResult | StoreUnavailable] = []
    for row in rows:
        try:
            outcomes.extend(write([row], now))
        except StoreUnavailable as exc:
            log.warning("inbox.delivery_refused", event_id=row[_ID], error=str(exc))
            outcomes.append(exc)
    return outcomes


def _results(rows: Sequence[Row], recorded: dict[str, tuple[int, bool]]) -> list[IngestResult]:
    """Per row: new only for the first copy of an event that this batch inserted."""
    fresh = {event_id for event_id, (_, new) in recorded.items() if new}
    results: list[IngestResult] = []
    for row in rows:
        event_id = row[_ID]
        is_new = event_id in fresh
        fresh.discard(event_id)  # later copies in this batch are duplicates
        results.append(IngestResult(is_new, recorded[event_id][0]))
    return results


def ping(engine: Engine) -> None:
    """Raise StoreUnavailable unless the inbox table answers."""
    try:
        with engine.connect() as conn:
            conn.execute(sa.select(_deliveries.c.id).limit(1)).all()
    except sa.exc.SQLAlchemyError as exc:
        raise StoreUnavailable(_reason(exc)) from exc


def depth(engine: Engine) -> int:
    """Handler runs not yet finished: the worker's backlog."""
    query = (
        sa.select(sa.func.count())
        .select_from(_runs)
        .where(_runs.c.state.in_([str(s) for s in UNFINISHED_STATES]))
    )
    try:
        with engine.connect() as conn:
            return int(conn.execute(query).scalar_one())
    except sa.exc.SQLAlchemyError as exc:
        raise StoreUnavailable(_reason(exc)) from exc


def _record(
    conn: Connection, firsts: list[Row], extra: dict[str, Extra], now: float
) -> dict[str, tuple[int, bool]]:
    """Upsert the deliveries and add the new ones' routing runs, through SQLAlchemy Core."""
    # One global lock order: receivers upserting the same redelivered events in different
    # orders would otherwise deadlock and 503 both batches.
    ordered = sorted(firsts, key=lambda r: r[_ID])
    found = _upsert_deliveries(conn, ordered, extra)
    fresh = [r for r in firsts if found[r[_ID]][1] == extra[r[_ID]].count]
    if fresh:
        at = datetime.fromtimestamp(now, UTC)
        conn.execute(sa.insert(_runs), [_routing_run(found[r[_ID]][0], r, at) for r in fresh])
    new = {r[_ID] for r in fresh}
    return {r[_ID]: (found[r[_ID]][0], r[_ID] in new) for r in firsts}


def _upsert_deliveries(
    conn: Connection, firsts: list[Row], extra: dict[str, Extra]
) -> dict[str, tuple[int, int]]:
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    values = [
        {
            "event_id": r[0],
            "event_type": r[1],
            "resource_id": r[2],
            "session_id": r[3],
            "event_created_at": _datetime(r[4]),
            "received_at": datetime.fromtimestamp(r[5], UTC),
            "source": r[9],
            "body": r[6],
            "headers": r[7],
            "secret_index": r[8],
            "duplicates": extra[r[0]].count,
            "last_duplicate_at": _datetime(extra[r[0]].last_at),
        }
        for r in firsts
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
# machinery cost more CPU than SQLite's own work. The SQL and the stored values are what
# SQLAlchemy would send (its DateTime text, its JSON).
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


@functools.lru_cache(maxsize=64)
def _sqlite_upsert_sql(count: int) -> str:
    return (
        f"INSERT INTO deliveries ({_DELIVERY_COLUMNS}) VALUES {_values(12, count)}"  # noqa: S608 (placeholders only)
        " ON CONFLICT (event_id) DO UPDATE SET"
        " duplicates = deliveries.duplicates + excluded.duplicates + 1,"
        " last_duplicate_at = coalesce(excluded.last_duplicate_at, excluded.received_at)"
        " RETURNING id, event_id, duplicates"
    )


@functools.lru_cache(maxsize=64)
def _sqlite_runs_sql(count: int) -> str:
    return f"INSERT INTO handler_runs ({_RUN_COLUMNS}) VALUES {_values(9, count)}"  # noqa: S608


def sqlite_time(seconds: float | None) -> str | None:
    """UTCDateTime's naive UTC, in SQLAlchemy's SQLite DateTime text form ("YYYY-MM-DD
    HH:MM:SS.ffffff"): exactly datetime.fromtimestamp(seconds, UTC)'s, at a third of the cost
    (the writer formats two a delivery, and a batch's fall in the same second or two)."""
    if seconds is None:
        return None
    if seconds < 0:  # before 1970: modf's negative fraction; not worth a fast path
        return datetime.fromtimestamp(seconds, UTC).isoformat(" ", "microseconds")[:26]
    fraction, whole = math.modf(seconds)
    micros = round(fraction * 1e6)  # as fromtimestamp rounds: half to even
    if micros >= 1_000_000:
        whole += 1
        micros -= 1_000_000
    return f"{_second(int(whole))}.{micros:06d}"


@functools.lru_cache(maxsize=256)
def _second(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _json_object(value: Mapping[str, str]) -> str:
    """json.dumps(value) for a str -> str mapping, byte for byte, in a third of the time."""
    return "{" + ", ".join(f"{_quote(k)}: {_quote(v)}" for k, v in value.items()) + "}"


def _wrapped(sql: str, exc: sqlite3.Error) -> sa.exc.StatementError:
    # As SQLAlchemy would wrap it, so outage/refusal handling sees the same exceptions.
    return sa.exc.DBAPIError.instance(sql, None, exc, sqlite3.Error)


def _sqlite_run(conn: sqlite3.Connection, sql: str, params: Sequence[Any] = ()) -> list[Any]:
    """Run `sql` and return its rows."""
    try:
        return conn.execute(sql, params).fetchall()
    except sqlite3.Error as exc:
        raise _wrapped(sql, exc) from exc


def _sqlite_record(
    conn: sqlite3.Connection, firsts: list[Row], extra: dict[str, Extra], now: float
) -> dict[str, tuple[int, bool]]:
    """Upsert the deliveries and add the new ones' routing runs, inside the caller's BEGIN."""
    try:
        values = [
            (
                r[0],
                r[1],
                r[2],
                r[3],
                sqlite_time(r[4]),
                sqlite_time(r[5]),
                r[9],
                r[6],
                _json_object(r[7]),
                r[8],
                extra[r[0]].count,
                sqlite_time(extra[r[0]].last_at),
            )
            for r in firsts
        ]
    except (ValueError, TypeError, OverflowError, OSError) as exc:
        raise sa.exc.StatementError(str(exc), "INSERT INTO deliveries", None, exc) from exc
    # One multi-row statement per batch size (prepared once, then cached by sqlite3), chunked
    # so a statement stays well under SQLite's bound-parameter limit.
    recorded: dict[str, tuple[int, bool]] = {}
    for start in range(0, len(values), _SQLITE_CHUNK):
        chunk = values[start : start + _SQLITE_CHUNK]
        params = [value for row in chunk for value in row]
        for row_id, event_id, dups in _sqlite_run(conn, _sqlite_upsert_sql(len(chunk)), params):
            # Inserted now: exactly the extra copies it was inserted with; updated: more.
            recorded[event_id] = (row_id, dups == extra[event_id].count)
    stamp = sqlite_time(now)
    pending = str(RunState.PENDING)
    runs = [
        (recorded[r[0]][0], _lane(r), 0, ROUTE_HANDLER, pending, 0, stamp, stamp, stamp)
        for r in firsts
        if recorded[r[0]][1]
    ]
    for start in range(0, len(runs), _SQLITE_CHUNK):
        batch = runs[start : start + _SQLITE_CHUNK]
        _sqlite_run(conn, _sqlite_runs_sql(len(batch)), [value for row in batch for value in row])
    return recorded


def _lane(r: Row) -> str:
    """NewDelivery.lane, of a row."""
    return r[3] or f"delivery:{r[0]}"


def _routing_run(delivery_id: int, r: Row, now: datetime) -> dict[str, Any]:
    return {
        "delivery_id": delivery_id,
        "lane": _lane(r),
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
