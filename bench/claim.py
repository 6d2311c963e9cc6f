"""The claim query against a long history: is its cost bounded by what is ready?

    .venv/bin/python -m bench.claim        # figures in bench/results/claim.json

For SQLite and PostgreSQL, a fresh migrated database is filled (in-database bulk inserts) with
`BENCH_CLAIM_HISTORY` finished handler runs (default 1,000,000: a `_route` and an `archive` run
per delivery, 1 % of them dead letters, received in the past: a tenth in one session's lane, the
rest over 50,000 lanes), and then `BENCH_CLAIM_READY` (8) new deliveries with a pending `_route`
run each: one in that long lane, half of the others in lanes that have history. Timed with
`RunStore.claim` itself (store/runs.py):

- `empty`: a claim when nothing is due (what every idle worker does every `poll_seconds`);
- `one`: claiming the ready runs one at a time (limit 1), put back after each round;
- `batch`: claiming them all at once (limit 8).

The SELECT the claim sends is captured as it runs and explained (SQLite: EXPLAIN QUERY PLAN;
PostgreSQL: EXPLAIN (ANALYZE, BUFFERS), in a transaction rolled back), with the figures for
the same database before and after `ANALYZE` (PostgreSQL's autovacuum runs it on its own; SQLite
runs it only when asked, e.g. by `PRAGMA optimize`).
"""

import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from bench.common import database, save
from store.engine import is_sqlite, make_engine, migrate
from store.models import Delivery, HandlerRun, RunState
from store.runs import RunStore

HISTORY = int(os.environ.get("BENCH_CLAIM_HISTORY", "1000000"))  # noqa: TID251
READY = int(os.environ.get("BENCH_CLAIM_READY", "8"))  # noqa: TID251
LANES = 50_000
# One long-lived session's lane holds this share of the history (a session woken a great many
# times): the claim's per-lane checks must not grow with it either.
HOT_SHARE = 10
ROUNDS = 30
LEASE = timedelta(seconds=60)

_runs = HandlerRun.__table__  # type: ignore[attr-defined]
_deliveries = Delivery.__table__  # type: ignore[attr-defined]


# -- filling ------------------------------------------------------------------------------------


def _lane_sql(deliveries: int) -> str:
    hot = deliveries // HOT_SHARE
    return f"CASE WHEN i <= {hot} THEN 'sesn_hot' ELSE 'sesn_' || mod(i, {LANES}) END"


def _fill_sqlite(engine: Engine, deliveries: int, start: datetime) -> None:
    # A recursive CTE inserts in SQLite's own loop: ~10x faster than executemany from Python.
    # Timestamps are written as SQLAlchemy writes them ("YYYY-MM-DD HH:MM:SS.ffffff"), one
    # delivery per second of history, so text comparison orders them as the store does.
    base = start.strftime("%Y-%m-%d %H:%M:%S")
    ts = f"datetime('{base}', '+' || i || ' seconds') || '.000000'"
    lane = _lane_sql(deliveries)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            f"""
            WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {deliveries})
            INSERT INTO deliveries (id, event_id, event_type, resource_id, session_id,
                event_created_at, received_at, source, body, headers, duplicates)
            SELECT i, 'wevt_hist_' || i, 'session.status_idled', {lane}, {lane}, {ts}, {ts},
                'webhook',
                '{{"type":"event","id":"wevt_hist_' || i || '"}}', '{{}}', 0
            FROM n
            """
        )
        _insert_runs(conn)


def _insert_runs(conn: Connection) -> None:
    """A finished `_route` and `archive` run per delivery (1 in 100 archives dead)."""
    for position, handler in enumerate(("_route", "archive")):
        conn.exec_driver_sql(
            f"""
            INSERT INTO handler_runs (delivery_id, lane, position, handler, state, attempts,
                next_attempt_at, created_at, updated_at, finished_at, duration_ms)
            SELECT id, session_id, {position}, '{handler}',
                CASE WHEN mod(id, 100) = 0 AND {position} = 1 THEN 'dead' ELSE 'succeeded' END,
                1, received_at, received_at, received_at, received_at, 5.0
            FROM deliveries ORDER BY id
            """
        )


def _fill_postgres(engine: Engine, deliveries: int, start: datetime) -> None:
    base = start.replace(tzinfo=None).isoformat(sep=" ")
    ts = f"(TIMESTAMP '{base}' + i * INTERVAL '1 second')"
    lane = _lane_sql(deliveries)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            f"""
            INSERT INTO deliveries (id, event_id, event_type, resource_id, session_id,
                event_created_at, received_at, source, body, headers, duplicates)
            SELECT i, 'wevt_hist_' || i, 'session.status_idled', {lane}, {lane}, {ts}, {ts},
                'webhook',
                '{{"type":"event","id":"wevt_hist_' || i || '"}}', '{{}}', 0
            FROM generate_series(1, {deliveries}) AS i
            """
        )
        conn.exec_driver_sql(
            f"SELECT setval(pg_get_serial_sequence('deliveries', 'id'), {deliveries})"
        )
        _insert_runs(conn)


def fill(engine: Engine, history_runs: int, now: datetime) -> float:
    """History (finished runs and their deliveries) ending an hour ago; seconds it took."""
    deliveries = history_runs // 2
    start = now - timedelta(hours=1) - timedelta(seconds=deliveries)
    began = time.perf_counter()
    (_fill_sqlite if is_sqlite(engine) else _fill_postgres)(engine, deliveries, start)
    return time.perf_counter() - began


def add_ready(engine: Engine, count: int, now: datetime) -> list[int]:
    """`count` new deliveries with a pending `_route` each, in lanes with and without history."""
    ids: list[int] = []
    with engine.begin() as conn:
        for n in range(count):
            lane = "sesn_hot" if n == 0 else f"sesn_{n}" if n % 2 == 0 else f"sesn_new_{n}"
            delivery_id = conn.execute(
                _deliveries.insert()
                .values(
                    event_id=f"wevt_ready_{n}",
                    event_type="session.status_idled",
                    resource_id=lane,
                    session_id=lane,
                    event_created_at=now,
                    received_at=now,
                    source="webhook",
                    body="{}",
                    headers={},
                    duplicates=0,
                )
                .returning(_deliveries.c.id)
            ).scalar_one()
            conn.execute(
                _runs.insert().values(
                    delivery_id=delivery_id,
                    lane=lane,
                    position=0,
                    handler="_route",
                    state=RunState.PENDING.value,
                    attempts=0,
                    next_attempt_at=now,
                    created_at=now,
                    updated_at=now,
                )
            )
            ids.append(int(delivery_id))
    return ids


def put_back(engine: Engine, delivery_ids: list[int], now: datetime) -> None:
    with engine.begin() as conn:
        conn.execute(
            _runs.update()
            .where(_runs.c.delivery_id.in_(delivery_ids))
            .values(
                state=RunState.PENDING.value,
                lease_owner=None,
                lease_expires_at=None,
                attempts=0,
                next_attempt_at=now,
            )
        )


# -- timing -------------------------------------------------------------------------------------


@contextmanager
def captured_select(engine: Engine) -> Iterator[list[tuple[str, Any]]]:
    """The claim's candidate SELECTs (statement, parameters) as the driver received them."""
    seen: list[tuple[str, Any]] = []

    def grab(conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool) -> None:
        head = statement.lstrip().upper()
        if head.startswith("SELECT") and "ORDER BY" in head and "LIMIT" in head:
            seen.append((statement, params))

    sa.event.listen(engine, "before_cursor_execute", grab)
    try:
        yield seen
    finally:
        sa.event.remove(engine, "before_cursor_execute", grab)


def _ms(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 3),
        "max_ms": round(ordered[-1] * 1000, 3),
        "mean_ms": round(statistics.fmean(ordered) * 1000, 3),
    }


def timed(call: Callable[[], Any]) -> tuple[float, Any]:
    began = time.perf_counter()
    result = call()
    return time.perf_counter() - began, result


def measure(engine: Engine, ready: list[int]) -> dict[str, Any]:
    store = RunStore(engine)
    now = datetime.now(UTC)
    figures: dict[str, Any] = {}

    put_back(engine, ready, now + timedelta(days=1))  # nothing due
    empty = [timed(lambda: store.claim("bench", now, LEASE))[0] for _ in range(ROUNDS)]
    figures["empty"] = _ms(empty)

    one: list[float] = []
    batch: list[float] = []
    claimed_one = claimed_batch = 0
    for _ in range(ROUNDS // 3):
        put_back(engine, ready, now)
        for _ in ready:
            took, got = timed(lambda: store.claim("bench", now, LEASE, limit=1))
            one.append(took)
            claimed_one += len(got)
        put_back(engine, ready, now)
        took, got = timed(lambda: store.claim("bench", now, LEASE, limit=len(ready)))
        batch.append(took)
        claimed_batch += len(got)
    figures["one"] = _ms(one) | {"claimed": claimed_one, "calls": len(one)}
    figures["batch"] = _ms(batch) | {"claimed": claimed_batch, "calls": len(batch)}
    return figures


def explain(engine: Engine, ready: list[int]) -> str:
    now = datetime.now(UTC)
    put_back(engine, ready, now)
    with captured_select(engine) as seen:
        RunStore(engine).claim("bench-explain", now, LEASE, limit=1)
    put_back(engine, ready, now)
    if not seen:
        return "(no candidate SELECT captured)"
    statement, params = seen[0]
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        if is_sqlite(engine):
            cursor.execute("EXPLAIN QUERY PLAN " + statement, params)
            lines = [
                f"{'  ' * _depth(rows, r)}{r[3]}" for rows in [cursor.fetchall()] for r in rows
            ]
        else:
            cursor.execute("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + statement, params)
            lines = [str(r[0]) for r in cursor.fetchall()]
        raw.rollback()
    finally:
        raw.close()
    return "\n".join(lines)


def _depth(rows: Sequence[Any], row: Any) -> int:
    """Indentation of one EXPLAIN QUERY PLAN row (id, parent, notused, detail)."""
    parents = {r[0]: r[1] for r in rows}
    depth, parent = 0, row[1]
    while parent:
        depth += 1
        parent = parents.get(parent, 0)
    return depth


def analyze(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql("ANALYZE")


def one_engine(kind: str, workdir: Path) -> dict[str, Any]:
    with database(kind, workdir) as url:
        engine = make_engine(url, pool_size=2)
        try:
            migrate(engine)
            now = datetime.now(UTC)
            fill_seconds = fill(engine, HISTORY, now)
            ready = add_ready(engine, READY, now)
            result: dict[str, Any] = {"history_runs": HISTORY, "ready": READY}
            result["fill_seconds"] = round(fill_seconds, 1)
            for stage in ("no_stats", "analyzed"):
                if stage == "analyzed":
                    analyze(engine)
                plan = explain(engine, ready)
                figures = measure(engine, ready)
                result[stage] = figures | {"plan": plan}
                print(f"-- {kind}, {HISTORY:,} finished runs, {stage}")
                for name in ("empty", "one", "batch"):
                    print(f"   {name:6} {figures[name]}")
                print("   plan:\n" + "\n".join("     " + line for line in plan.splitlines()))
                sys.stdout.flush()
            return result
        finally:
            engine.dispose()


def main() -> None:
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="idlehook-bench-claim-") as tmp:
        for kind in ("sqlite", "postgres"):
            figures[kind] = one_engine(kind, Path(tmp))
    save("claim", figures)


if __name__ == "__main__":
    main()
