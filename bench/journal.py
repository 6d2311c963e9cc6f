"""The local journal: what a delivery costs while the store is down, and how fast it drains.

    .venv/bin/python -m bench.journal        # figures in bench/results/journal.json

1. `idlehook serve --no-worker` on a fresh PostgreSQL database, its journal in a temp dir:
   `BENCH_JOURNAL_DELIVERIES` signed deliveries at 32 in flight with the store up (204s), the
   same with the database refusing connections (`ALLOW_CONNECTIONS false`, backends ended: each
   delivery is tried on the store, then journaled: 202s), then the database back: how long
   until /readyz says the journal is empty, and that every delivery is stored once.
2. In-process: `BENCH_JOURNAL_RECORDS` records appended to a Journal (grouped fdatasyncs), then
   drained by a JournalDrainer into SQLite and into PostgreSQL: records per second each way.
"""

import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg
import sqlalchemy as sa
from standardwebhooks import Webhook

from bench.common import (
    PG_ADMIN,
    PYTHON,
    SECRET,
    WEBHOOK_PATH,
    database,
    free_port,
    percentile,
    process,
    save,
    signed_event,
    wait_http,
)
from store.engine import make_engine, migrate
from store.journal import Journal
from store.journal_drain import JournalDrainer
from tests.store.test_journal import row

DELIVERIES = int(os.environ.get("BENCH_JOURNAL_DELIVERIES", "1000"))  # noqa: TID251
RECORDS = int(os.environ.get("BENCH_JOURNAL_RECORDS", "5000"))  # noqa: TID251
IN_FLIGHT = 32


async def _send(url: str, prefix: str, count: int) -> tuple[dict[int, int], list[float]]:
    signer = Webhook(SECRET)
    statuses: dict[int, int] = {}
    latencies: list[float] = []
    queue = list(range(count))
    limits = httpx.Limits(max_connections=IN_FLIGHT)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:

        async def one() -> None:
            while queue:
                n = queue.pop()
                body, headers = signed_event(signer, f"wevt_{prefix}_{n}", f"sesn_{n % 50}")
                started = time.perf_counter()
                answer = await client.post(WEBHOOK_PATH, content=body, headers=headers)
                latencies.append((time.perf_counter() - started) * 1000)
                statuses[answer.status_code] = statuses.get(answer.status_code, 0) + 1

        await asyncio.gather(*(one() for _ in range(IN_FLIGHT)))
    return statuses, latencies


def _summary(statuses: dict[int, int], latencies: list[float], seconds: float) -> dict[str, Any]:
    return {
        "statuses": statuses,
        "per_second": round(len(latencies) / seconds),
        "p50_ms": round(percentile(latencies, 50), 1),
        "p99_ms": round(percentile(latencies, 99), 1),
    }


def _connections(name: str, allow: bool) -> None:
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {str(allow).lower()}')
        if not allow:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                [name],
            )


def outage(workdir: Path) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    with database("postgres", workdir) as url:
        engine = make_engine(url, pool_size=1)
        migrate(engine)
        port = free_port()
        env = {
            "IDLEHOOK_DATABASE_URL": url,
            "IDLEHOOK_DATA_DIR": str(workdir / "data"),
            "IDLEHOOK_CONFIG": str(workdir / "none.toml"),
            "IDLEHOOK_JOURNAL__DRAIN_SECONDS": "0.2",
            "ANTHROPIC_WEBHOOK_SIGNING_KEY": SECRET,
            "ANTHROPIC_API_KEY": "k",
        }
        os.environ.update(env)  # noqa: TID251 (the child inherits them)
        args = [PYTHON, "-m", "idlehook.cli", "serve", "--no-worker", "--port", str(port)]
        base = f"http://127.0.0.1:{port}"
        name = sa.engine.make_url(url).database
        assert name
        with process(args):
            wait_http(base + "/healthz")
            started = time.perf_counter()
            statuses, latencies = asyncio.run(_send(base, "up", DELIVERIES))
            figures["store_up"] = _summary(statuses, latencies, time.perf_counter() - started)
            _connections(name, allow=False)
            started = time.perf_counter()
            statuses, latencies = asyncio.run(_send(base, "down", DELIVERIES))
            figures["store_down"] = _summary(statuses, latencies, time.perf_counter() - started)
            figures["readyz_down"] = httpx.get(base + "/readyz", timeout=30).json()
            _connections(name, allow=True)
            back = time.perf_counter()
            while httpx.get(base + "/readyz", timeout=30).json()["journal"]["depth"]:
                time.sleep(0.05)
            figures["drained_seconds_after_recovery"] = round(time.perf_counter() - back, 2)
        with engine.connect() as conn:
            stored = conn.execute(sa.text("SELECT count(*) FROM deliveries")).scalar_one()
            runs = conn.execute(sa.text("SELECT count(*) FROM handler_runs")).scalar_one()
        engine.dispose()
        figures["stored"] = int(stored)
        figures["routing_runs"] = int(runs)
    return figures


async def _drain_rate(url: str, directory: Path) -> dict[str, Any]:
    engine = make_engine(url, pool_size=2)
    migrate(engine)
    journal = Journal(directory, max_bytes=1 << 30)
    started = time.perf_counter()
    await asyncio.gather(*(journal.append(row(n)) for n in range(RECORDS)))
    appended = time.perf_counter() - started
    drainer = JournalDrainer(journal, engine)
    started = time.perf_counter()
    assert await drainer.drain_once()
    drained = time.perf_counter() - started
    journal.close()
    engine.dispose()
    return {
        "records": RECORDS,
        "append_per_second": round(RECORDS / appended),
        "drain_per_second": round(RECORDS / drained),
        "stored": drainer.counts.stored,
    }


def drain_rates(workdir: Path) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    for kind in ("sqlite", "postgres"):
        with database(kind, workdir) as url:
            figures[kind] = asyncio.run(_drain_rate(url, workdir / f"journal-{kind}"))
    return figures


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="bench-journal-") as tmp:
        workdir = Path(tmp)
        figures = {"outage_postgres": outage(workdir), "drain": drain_rates(workdir)}
    save("journal", figures)
    print(figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
