"""Acks while the worker is busy (issue 18): `idlehook serve` as the README runs it (worker on,
SQLite, real processes) with 50,000 runs waiting and the API down or slow, under a burst of
distinct signed deliveries.

1. A fresh SQLite file; the backlog goes in through the target tree's own receiver
   (`idlehook serve --no-worker`, distinct sessions, so every run is its lane's head), which is
   then stopped.
2. `idlehook serve` (default: worker on) over it, the API either a closed port ("down") or a stub
   that answers every request with a 503 after `BENCH_API_LATENCY` seconds ("slow"; the SDK
   retries it twice). Its worker claims and fails runs for a few seconds first.
3. `wrk -t1 -c32` for `BENCH_SECONDS` of distinct, freshly signed deliveries (1 s warm-up
   before); acks/s, p50, p99, and the deliveries stored over the burst (>= acked).

`--root DIR` serves another checkout (its `idlehook serve`, with `PYTHONPATH=DIR`), e.g. the
tree before the worker moved out of the receiver; the load and the checks stay this tree's.
`measure()` returns the figures as a dict (bench/budget.py calls it).
"""

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bench.common import (
    PYTHON,
    ROOT,
    SECRET,
    children,
    cpu_seconds,
    free_port,
    save,
    wait_http,
)
from bench.load import _requests_file, _wrk
from idlehook.settings import env_flag, env_value
from store.engine import make_engine

SECONDS = float(str(env_value("BENCH_SECONDS", "6")))
BACKLOG = int(str(env_value("BENCH_BACKLOG", "50000")))
API_LATENCY = float(str(env_value("BENCH_API_LATENCY", "1.0")))
CONNECTIONS = 32
# The goal (issue 18): at least this many acks/s, p99 under this many ms, on 2 cores.
GOAL_RPS = 5000.0
GOAL_P99_MS = 100.0


# -- the API, down or slow -----------------------------------------------------------------------


@contextlib.contextmanager
def api(mode: str, latency: float = API_LATENCY) -> Iterator[str]:
    """The API's base URL: a port nothing listens on, or a stub answering 503 after `latency`."""
    if mode == "down":
        yield f"http://127.0.0.1:{free_port()}"
        return
    loop = asyncio.new_event_loop()
    port = free_port()

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                await reader.readexactly(length)
                await asyncio.sleep(latency)
                body = b'{"type":"error","error":{"type":"overloaded_error","message":"slow"}}'
                writer.write(
                    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
                    b"content-length: %d\r\n\r\n%s" % (len(body), body)
                )
                await writer.drain()
        writer.close()

    server = loop.run_until_complete(asyncio.start_server(answer, "127.0.0.1", port))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        loop.call_soon_threadsafe(server.close)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)


# -- idlehook serve, from a given tree -----------------------------------------------------------


def _env(root: Path, work: Path, url: str, api_url: str) -> dict[str, str]:
    inherited = os.environ.items()  # noqa: TID251
    env = {k: v for k, v in inherited if not k.startswith(("IDLEHOOK_", "ANTHROPIC_"))}
    env.update(
        {
            "PYTHONPATH": str(root),
            "IDLEHOOK_CONFIG": str(work / "no-config.toml"),
            "IDLEHOOK_DATABASE_URL": url,
            "IDLEHOOK_DATA_DIR": str(work / "data"),
            "IDLEHOOK_RESULTS_DIR": str(work / "results"),
            "IDLEHOOK_JSON_LOGS": "true",
            "ANTHROPIC_BASE_URL": api_url,
            "ANTHROPIC_API_KEY": "sk-bench",
            "ANTHROPIC_WEBHOOK_SIGNING_KEY": SECRET,
        }
    )
    return env


@contextlib.contextmanager
def serve(
    root: Path, env: dict[str, str], cwd: Path, *, worker: bool, log: Path | None = None
) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """`idlehook serve` of the tree at `root` (its port, its process), stopped with SIGINT."""
    port = free_port()
    args = [PYTHON, "-m", "idlehook.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
    if not worker:
        args.append("--no-worker")
    out = log.open("ab") if log is not None else subprocess.DEVNULL
    try:
        proc = subprocess.Popen(
            args,
            cwd=cwd,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=None if env_flag("BENCH_DEBUG") else out,
            start_new_session=True,
        )
    finally:
        if log is not None and not isinstance(out, int):
            out.close()
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", timeout=60)
        yield port, proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def _count(url: str, table: str) -> int:
    engine = make_engine(url, pool_size=1)
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one())
    finally:
        engine.dispose()


def _runs_by_state(url: str) -> dict[str, int]:
    engine = make_engine(url, pool_size=1)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT state, count(*) FROM handler_runs GROUP BY state"))
            return {str(state): int(n) for state, n in rows}
    finally:
        engine.dispose()


def _attempts(url: str) -> int:
    engine = make_engine(url, pool_size=1)
    try:
        with engine.connect() as conn:
            q = sa.text("SELECT coalesce(sum(attempts), 0) FROM handler_runs")
            return int(conn.execute(q).scalar_one())
    finally:
        engine.dispose()


def _cpu(pid: int) -> float:
    try:
        return cpu_seconds(pid)
    except OSError:
        return 0.0


def _name(pid: int) -> str:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return str(pid)
    return (
        "worker" if b"worker" in argv else "writer" if b"store.writer_process" in argv else str(pid)
    )


def _wait_for_line(log: Path, text: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in log.read_text(errors="replace"):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{text} not logged within {timeout}s")
        time.sleep(0.2)


def _sessions(n: int, tag: str) -> list[str]:
    return [f"sesn_{tag}{i:07d}" for i in range(n)]


def fill(port: int, url: str, count: int, work: Path) -> int:
    """`count` distinct deliveries through the receiver on `port`, each its own session."""
    for round_ in range(10):
        missing = count - _count(url, "deliveries")
        if missing <= 0:
            break
        file = work / f"fill{round_}.tsv"
        _requests_file(missing, _sessions(missing, f"fill{round_}x"), file)
        # Long enough for every line at ~2,000/s; lines sent twice only come back duplicates,
        # and a round cut short is made up by the next.
        _wrk(port, 1, CONNECTIONS, missing / 2000 + 2, file)
    return _count(url, "deliveries")


def measure(
    mode: str = "down",
    *,
    root: Path = ROOT,
    backlog: int = BACKLOG,
    seconds: float = SECONDS,
    connections: int = CONNECTIONS,
    settle: float = 3.0,
    worker: bool = True,
) -> dict[str, Any]:
    """One run: the figures of the burst against `idlehook serve` of `root` (worker on, unless
    `worker` is off: the receiver alone, the ceiling on this machine now)."""
    root = root.resolve()
    with tempfile.TemporaryDirectory(prefix="serve-acks-") as tmp, api(mode) as api_url:
        work = Path(tmp)
        url = f"sqlite:///{work / 'idlehook.db'}"
        env = _env(root, work, url, api_url)
        log = work / "serve.log"
        started = time.monotonic()
        with serve(root, env, work, worker=False, log=log) as (port, _):
            stored_backlog = fill(port, url, backlog, work)
        fill_seconds = time.monotonic() - started
        # The burst's requests, signed now (5-minute window), one session each.
        burst = work / "burst.tsv"
        count = int(12_000 * (seconds + 1)) + 1000
        _requests_file(count, _sessions(count, "burst"), burst)
        warm = work / "warm.tsv"
        _requests_file(3000, _sessions(3000, "warm"), warm)
        with serve(root, env, work, worker=worker, log=log) as (port, proc):
            if worker:
                # Up (its imports cost seconds of CPU), then at work on the backlog.
                _wait_for_line(log, '"worker.started"')
            time.sleep(settle)
            workers = children(proc.pid)
            _wrk(port, 1, 8, 1, warm)
            attempts_before = _attempts(url)
            before = _count(url, "deliveries")
            pids = [proc.pid, *workers]
            cpu_before = [_cpu(pid) for pid in pids]
            t0 = time.monotonic()
            run = _wrk(port, 1, connections, seconds, burst)
            span = time.monotonic() - t0
            cpu = [
                round((_cpu(pid) - c) / span, 2) for pid, c in zip(pids, cpu_before, strict=True)
            ]
            names = ["receiver", *(_name(pid) for pid in workers)]
            after = _count(url, "deliveries")
            attempts_after = _attempts(url)
        states = _runs_by_state(url)
    ok = run["requests"] - run["non2xx"]
    rps = ok / (run["duration_us"] / 1e6)
    figures = {
        "tree": str(root),
        "api": mode if mode == "down" else f"slow ({API_LATENCY:g} s, 503)",
        "worker": worker,
        "backlog": stored_backlog,
        "fill_seconds": round(fill_seconds, 1),
        "connections": connections,
        "seconds": seconds,
        "requests": run["requests"],
        "ok": ok,
        "non2xx": run["non2xx"],
        "socket_errors": run["socket_errors"],
        "wrapped": bool(run["wrapped"]),
        "rps": round(rps, 1),
        "p50_ms": run["p50_us"] / 1000,
        "p99_ms": run["p99_us"] / 1000,
        "stored_during_burst": after - before,
        "all_acked_stored": after - before >= ok,
        # The worker was at work: claims it made over the burst (attempts started), its process.
        "worker_claims_per_s": round((attempts_after - attempts_before) / span, 1),
        "serve_children": len(workers),
        # CPU seconds per second of the burst, per process (2 cores; wrk takes its share).
        "cpu": dict(zip(names, cpu, strict=True)),
        "runs_by_state": states,
    }
    figures["goal_met"] = bool(
        figures["rps"] >= GOAL_RPS
        and figures["p99_ms"] < GOAL_P99_MS
        and figures["all_acked_stored"]
        and not figures["non2xx"]
    )
    return figures


def line(r: dict[str, Any]) -> str:
    return (
        f"api {r['api']:18} {'worker on ' if r['worker'] else 'no worker '}"
        f"backlog {r['backlog']:6d}  {r['rps']:7.0f} acks/s  "
        f"p50 {r['p50_ms']:6.1f} ms  p99 {r['p99_ms']:7.1f} ms  non-2xx {r['non2xx']}  "
        f"stored {r['stored_during_burst']} >= acked {r['ok']}: {r['all_acked_stored']}  "
        f"worker claims {r['worker_claims_per_s']}/s  goal {'met' if r['goal_met'] else 'MISSED'}"
        + f"  cpu {r['cpu']}"
        + ("  WRAPPED" if r["wrapped"] else "")
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.serve_acks", description=__doc__)
    parser.add_argument("--root", type=Path, default=ROOT, help="the checkout to serve")
    parser.add_argument("--api", choices=["down", "slow", "both"], default="both")
    parser.add_argument(
        "--also-no-worker", action="store_true", help="also measure `serve --no-worker` (ceiling)"
    )
    args = parser.parse_args(argv)
    modes = ["down", "slow"] if args.api == "both" else [args.api]
    results = []
    for mode in modes:
        results.append(measure(mode, root=args.root))
        print(line(results[-1]), flush=True)
    if args.also_no_worker:
        ceiling = measure(modes[0], root=args.root, worker=False)
        print(line(ceiling), flush=True)
        results.append(ceiling)
    name = "serve_acks" if args.root.resolve() == ROOT else "serve_acks_other_tree"
    save(name, {"results": results})
    print(json.dumps(results, indent=2))
    return 0 if all(r["goal_met"] for r in results if r["worker"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
