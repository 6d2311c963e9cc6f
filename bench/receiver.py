"""Receiver throughput and ack latency: idlehook vs a bare endpoint vs the docs' handler.

Each target runs as real uvicorn processes (bench.targets); load comes from another process
(wrk, else bench.loadgen). For idlehook every 2xx is checked against the rows committed.
"""

import contextlib
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anthropic
import sqlalchemy as sa
from standardwebhooks import Webhook

from bench.common import (
    PYTHON,
    SECRET,
    children,
    cpu_seconds,
    database,
    emulator_process,
    free_port,
    process,
    save,
    signed_event,
    wait_http,
)
from bench.load import drive
from emulator.ids import new_id
from idlehook.settings import env_value
from store.engine import make_engine, migrate, sqlite_path
from store.ingest import NewDelivery, SqliteWriter, to_row

SECONDS = float(str(env_value("BENCH_SECONDS", "6")))


@contextlib.contextmanager
def targets(
    kind: str, n: int, db: str = "", emulator: str = ""
) -> Iterator[tuple[list[int], list[int]]]:
    """`n` target processes: their ports and pids."""
    ports = [free_port() for _ in range(n)]
    pids: list[int] = []
    with contextlib.ExitStack() as stack:
        for port in ports:
            args = [PYTHON, "-m", "bench.targets", kind, "--port", str(port), "--db", db]
            if emulator:
                args += ["--emulator", emulator]
            pids.append(stack.enter_context(process(args)).pid)
        for port in ports:
            wait_http(f"http://127.0.0.1:{port}/")
        yield ports, pids


def _driven(pids: list[int], ports: list[int], **load: Any) -> dict[str, Any]:
    """`drive` the ports, with the CPU the targets, and their writer processes, spent per second
    of the load itself."""

    def cpu() -> tuple[float, float]:
        writers = [child for pid in pids for child in children(pid)]
        return sum(map(cpu_seconds, pids)), sum(map(cpu_seconds, writers))

    figures = drive(ports, seconds=SECONDS, probe=cpu, **load)
    # The Python load generator (no wrk) measures no CPU: shown as nan.
    nan = float("nan")
    figures["cpu_server"], figures["cpu_writer"] = figures.pop("probe_rates", (nan, nan))
    return figures


def stored_rows(url: str) -> int:
    engine = make_engine(url, pool_size=1)
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.text("SELECT count(*) FROM deliveries")).scalar_one())
    finally:
        engine.dispose()


def measure(
    kind: str, n: int, backend: str, workdir: Path, *, emulator: str = "", **load: Any
) -> dict[str, Any]:
    """One row of the matrix. `load` goes to `drive` (connections, ordered_ids, sessions...)."""
    shape = {
        "connections": load.get("connections", 64),
        "ids": "ordered" if load.get("ordered_ids") else "random",
    }
    if kind != "idlehook":
        with targets(kind, n, emulator=emulator) as (ports, pids):
            figures = _driven(pids, ports, **load)
        return {"target": kind, "processes": n, "backend": "-", **shape, **figures}
    with database(backend, workdir) as url:
        engine = make_engine(url, pool_size=1)
        migrate(engine)  # once, before several processes would race to do it
        engine.dispose()
        with targets(kind, n, db=url) as (ports, pids):
            figures = _driven(pids, ports, **load)
        rows = stored_rows(url)
    # Every acknowledged delivery must be on disk; in-flight ones at the cut-off may be too.
    figures["stored_rows"] = rows
    figures["all_acked_stored"] = rows >= figures["ok"]
    return {"target": kind, "processes": n, "backend": backend, **shape, **figures}


def store_ceiling(workdir: Path, batch: int, rows: int = 20_000) -> float:
    """Deliveries/s that the writer process's own SQLite path commits at this batch size.

    No HTTP, no signature, no event loop, no pipe: the most one writer could acknowledge, on
    this disk, with `synchronous=FULL`. Ids shaped like Anthropic's (random), one session.
    """
    with database("sqlite", workdir) as url:
        engine = make_engine(url, pool_size=1)
        migrate(engine)
        engine.dispose()
        path = sqlite_path(url)
        assert path is not None
        writer = SqliteWriter(path)
        try:
            signer = Webhook(SECRET)
            now = datetime.now(UTC)
            batches = [
                [to_row(_delivery(signer, new_id("wevt_"), now)) for _ in range(batch)]
                for _ in range(max(1, rows // batch))
            ]
            started = time.perf_counter()
            for items in batches:
                writer(items, now.timestamp())
            return len(batches) * batch / (time.perf_counter() - started)
        finally:
            writer.close()


def _delivery(signer: Webhook, event_id: str, now: datetime) -> NewDelivery:
    body, headers = signed_event(signer, event_id, "sesn_bench")
    return NewDelivery(
        event_id=event_id,
        event_type="session.status_idled",
        resource_id="sesn_bench",
        session_id="sesn_bench",
        event_created_at=now,
        received_at=now,
        body=body.decode(),
        headers={k: v for k, v in headers.items() if k != "webhook-signature"},
        secret_index=0,
    )


def reference_sessions(emulator: str, n: int = 16) -> list[str]:
    client = anthropic.Anthropic(api_key="bench", base_url=emulator, max_retries=0)
    agent = client.beta.agents.create(name="bench", model="claude-opus-4-7")
    env = client.beta.environments.create(name="bench", config={"type": "cloud"})
    return [client.beta.sessions.create(agent=agent.id, environment_id=env.id).id for _ in range(n)]


def line(r: dict[str, Any], base: float) -> str:
    return (
        f"{r['target']:9} {r['backend']:8} x{r['processes']} c{r['connections']:<3} "
        f"{r['ids']:7} {r['rps']:8.0f} req/s  p50 {r['p50_ms']:6.1f} ms  p99 {r['p99_ms']:7.1f} ms"
        f"  non-2xx {r['non2xx']:5d}  {r['rps'] / base:6.1%} of bare  "
        f"cpu {r['cpu_server']:.2f}+{r['cpu_writer']:.2f}"
        + (f"  stored {r['stored_rows']} ok={r['all_acked_stored']}" if "stored_rows" in r else "")
        + ("  WRAPPED" if r.get("wrapped") else "")
    )


def _rps(results: list[dict[str, Any]], kind: str, connections: int) -> float:
    return float(
        next(
            r["rps"]
            for r in results
            if r["target"] == kind
            and r["processes"] == 1
            and r["connections"] == connections
            and r["ids"] == "random"
            and r["backend"] in ("-", "sqlite")
        )
    )


def _bare(results: list[dict[str, Any]], connections: int) -> float:
    """Bare x1 at these connections, once measured; else bare x1 at 64."""
    try:
        return _rps(results, "bare", connections)
    except StopIteration:
        return float(results[0]["rps"])


def main() -> None:
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        # (kind, processes, backend, load): the headline first, then what it depends on.
        plan: list[tuple[str, int, str, dict[str, Any]]] = [
            ("bare", 1, "-", {}),
            ("idlehook", 1, "sqlite", {}),
            ("idlehook", 1, "sqlite", {"ordered_ids": True}),
            ("idlehook", 1, "postgres", {}),
            ("bare", 2, "-", {}),
            ("idlehook", 2, "sqlite", {}),
            ("idlehook", 2, "postgres", {}),
            ("idlehook", 4, "postgres", {}),
            # A group commit amortises its fsync over whatever is in flight; a bare endpoint
            # has nothing to amortise: the ratio moves with the connections, so show it.
            ("bare", 1, "-", {"connections": 16}),
            ("idlehook", 1, "sqlite", {"connections": 16}),
            ("bare", 1, "-", {"connections": 256}),
            ("idlehook", 1, "sqlite", {"connections": 256}),
        ]
        for kind, n, backend, load in plan:
            results.append(measure(kind, n, backend, work, **load))
            print(line(results[-1], _bare(results, results[-1]["connections"])), flush=True)
        with emulator_process("--no-rate-limits", "--speed", "1000") as emu:
            sessions = reference_sessions(emu)
            results.append(
                measure("reference", 1, "-", work, emulator=emu, sessions=sessions, expect_rps=3000)
            )
            print(line(results[-1], results[0]["rps"]), flush=True)
        # The writer's own ceiling, beside the HTTP figures: at 64 connections the group commit
        # sees batches of ~20 deliveries (idlehook_inbox_batch_size).
        ceilings = {n: store_ceiling(work, n) for n in (1, 20, 256)}
        for n, rate in ceilings.items():
            print(
                f"store alone (the writer's SQLite path, FULL) batch {n:3d}: {rate:8.0f} "
                f"deliveries/s  {rate / results[0]['rps']:6.1%} of bare x1",
                flush=True,
            )
    headline = [r for r in results if r["connections"] == 64 and r["ids"] == "random"]
    bare = {r["processes"]: r["rps"] for r in headline if r["target"] == "bare"}
    one = {
        r["backend"]: r["rps"]
        for r in headline
        if r["target"] == "idlehook" and r["processes"] == 1
    }
    ref = next(r["rps"] for r in results if r["target"] == "reference")
    summary = {
        "idlehook_sqlite_x1_vs_bare_x1": one["sqlite"] / bare[1],
        "idlehook_postgres_x1_vs_bare_x1": one["postgres"] / bare[1],
        "idlehook_sqlite_x1_vs_reference": one["sqlite"] / ref,
        "postgres_scaling": {
            r["processes"]: r["rps"] / one["postgres"]
            for r in headline
            if r["target"] == "idlehook" and r["backend"] == "postgres"
        },
        "sqlite_x1_vs_bare_by_connections": {
            c: _rps(results, "idlehook", c) / _rps(results, "bare", c) for c in (16, 64, 256)
        },
        "goal_85pct_of_bare_sqlite": one["sqlite"] / bare[1] >= 0.85,
        "store_ceiling_by_batch": ceilings,
    }
    print(
        f"idlehook sqlite x1 / bare x1: {summary['idlehook_sqlite_x1_vs_bare_x1']:.1%} (goal 85%)"
    )
    print(
        f"idlehook sqlite x1 / reference handler: {summary['idlehook_sqlite_x1_vs_reference']:.1f}x"
    )
    print(f"postgres scaling vs x1: {summary['postgres_scaling']}")
    save("receiver", {"seconds": SECONDS, "results": results, "summary": summary})


if __name__ == "__main__":
    main()
