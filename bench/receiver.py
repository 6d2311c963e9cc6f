"""Receiver throughput and ack latency: idlehook vs a bare endpoint vs the docs' handler.

Each target runs as real uvicorn processes (bench.targets); load comes from another process
(wrk, else bench.loadgen). For idlehook every 2xx is checked against the rows committed.
"""

import contextlib
import tempfile
import time
import uuid
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
    database,
    emulator_process,
    free_port,
    process,
    save,
    signed_event,
    wait_http,
)
from bench.load import drive
from idlehook.settings import env_value
from store.engine import make_engine, migrate
from store.inbox import Inbox, NewDelivery

SECONDS = float(str(env_value("BENCH_SECONDS", "6")))


@contextlib.contextmanager
def targets(kind: str, n: int, db: str = "", emulator: str = "") -> Iterator[list[int]]:
    ports = [free_port() for _ in range(n)]
    with contextlib.ExitStack() as stack:
        for port in ports:
            args = [PYTHON, "-m", "bench.targets", kind, "--port", str(port), "--db", db]
            if emulator:
                args += ["--emulator", emulator]
            stack.enter_context(process(args))
        for port in ports:
            wait_http(f"http://127.0.0.1:{port}/")
        yield ports


def stored_rows(url: str) -> int:
    engine = make_engine(url, pool_size=1)
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.text("SELECT count(*) FROM deliveries")).scalar_one())
    finally:
        engine.dispose()


def measure(kind: str, n: int, backend: str, workdir: Path, **kw: Any) -> dict[str, Any]:
    if kind != "idlehook":
        with targets(kind, n, emulator=kw.get("emulator", "")) as ports:
            figures = drive(ports, seconds=SECONDS, **kw.get("load", {}))
        return {"target": kind, "processes": n, "backend": "-", **figures}
    with database(backend, workdir) as url:
        engine = make_engine(url, pool_size=1)
        migrate(engine)  # once, before several processes would race to do it
        engine.dispose()
        with targets(kind, n, db=url) as ports:
            figures = drive(ports, seconds=SECONDS)
        rows = stored_rows(url)
    # Every acknowledged delivery must be on disk; in-flight ones at the cut-off may be too.
    figures["stored_rows"] = rows
    figures["all_acked_stored"] = rows >= figures["ok"]
    return {"target": kind, "processes": n, "backend": backend, **figures}


def store_ceiling(workdir: Path, batch: int, rows: int = 20_000) -> float:
    """Deliveries/s that `Inbox.write_batch` alone commits on SQLite at this batch size.

    No HTTP, no signature, no event loop: the most the receiver could acknowledge with one
    writer, on this disk, with `synchronous=FULL`. Distinct random event ids, as Anthropic sends.
    """
    with database("sqlite", workdir) as url:
        inbox = Inbox.connect(url)
        try:
            migrate(inbox.engine)
            signer = Webhook(SECRET)
            now = datetime.now(UTC)
            batches = [
                [_delivery(signer, f"wevt_{uuid.uuid4().hex}", now) for _ in range(batch)]
                for _ in range(max(1, rows // batch))
            ]
            started = time.perf_counter()
            for items in batches:
                inbox.write_batch(items)
            return len(batches) * batch / (time.perf_counter() - started)
        finally:
            inbox.close()


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
        f"{r['target']:9} {r['backend']:8} x{r['processes']}  {r['rps']:8.0f} req/s  "
        f"p50 {r['p50_ms']:6.1f} ms  p99 {r['p99_ms']:7.1f} ms  "
        f"non-2xx {r['non2xx']:5d}  {r['rps'] / base:6.1%} of bare x1"
        + (f"  stored {r['stored_rows']} ok={r['all_acked_stored']}" if "stored_rows" in r else "")
    )


def main() -> None:
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        plan: list[tuple[str, int, str]] = [
            ("bare", 1, "-"),
            ("idlehook", 1, "sqlite"),
            ("idlehook", 1, "postgres"),
            ("bare", 2, "-"),
            ("idlehook", 2, "sqlite"),
            ("idlehook", 2, "postgres"),
            ("idlehook", 4, "postgres"),
        ]
        for kind, n, backend in plan:
            results.append(measure(kind, n, backend, work))
            print(line(results[-1], results[0]["rps"]), flush=True)
        with emulator_process("--no-rate-limits", "--speed", "1000") as emu:
            sessions = reference_sessions(emu)
            load = {"sessions": sessions, "expect_rps": 3000}
            results.append(measure("reference", 1, "-", work, emulator=emu, load=load))
            print(line(results[-1], results[0]["rps"]), flush=True)
        # The writer's own ceiling, beside the HTTP figures: at 64 connections the group commit
        # sees batches of ~25-30 deliveries (idlehook_inbox_batch_size).
        ceilings = {n: store_ceiling(work, n) for n in (1, 32, 256)}
        for n, rate in ceilings.items():
            print(
                f"store alone (Inbox.write_batch, SQLite FULL) batch {n:3d}: {rate:8.0f} "
                f"deliveries/s  {rate / results[0]['rps']:6.1%} of bare x1",
                flush=True,
            )
    bare = {r["processes"]: r["rps"] for r in results if r["target"] == "bare"}
    one = {
        r["backend"]: r["rps"] for r in results if r["target"] == "idlehook" and r["processes"] == 1
    }
    ref = next(r["rps"] for r in results if r["target"] == "reference")
    summary = {
        "idlehook_sqlite_x1_vs_bare_x1": one["sqlite"] / bare[1],
        "idlehook_postgres_x1_vs_bare_x1": one["postgres"] / bare[1],
        "idlehook_sqlite_x1_vs_reference": one["sqlite"] / ref,
        "postgres_scaling": {
            r["processes"]: r["rps"] / one["postgres"]
            for r in results
            if r["target"] == "idlehook" and r["backend"] == "postgres"
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
