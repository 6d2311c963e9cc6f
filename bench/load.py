"""Drive webhook endpoints from separate processes: wrk when installed, else bench.loadgen."""

import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from standardwebhooks import Webhook

from bench.common import PYTHON, ROOT, SECRET, event_ids, signed_event

LUA = ROOT / "bench" / "webhooks.lua"


def have_wrk() -> bool:
    return shutil.which("wrk") is not None


def _requests_file(count: int, sessions: list[str], path: Path, ordered: bool = False) -> None:
    """`count` distinct signed webhooks, their ids from `bench.common.event_ids(ordered)`."""
    signer = Webhook(SECRET)
    event_id_at = event_ids(ordered)
    with path.open("w") as out:
        for i in range(count):
            event_id = event_id_at(i)
            body, headers = signed_event(signer, event_id, sessions[i % len(sessions)])
            out.write(
                f"{event_id}\t{headers['webhook-timestamp']}\t{headers['webhook-signature']}\t"
                f"{body.decode()}\n"
            )


def _wrk(port: int, threads: int, connections: int, seconds: float, file: Path) -> dict[str, Any]:
    out = subprocess.run(
        [
            "wrk",
            f"-t{threads}",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            "--timeout",
            "10s",
            "-s",
            str(LUA),
            f"http://127.0.0.1:{port}",
            "--",
            str(file),
            str(threads),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def drive(
    ports: list[int],
    *,
    seconds: float,
    connections: int = 64,
    expect_rps: float = 40_000,
    sessions: list[str] | None = None,
    ordered_ids: bool = False,
    probe: Callable[[], tuple[float, ...]] | None = None,
) -> dict[str, Any]:
    """Warm up briefly, then load every port at once; the figures of the measured part.

    `probe` (running totals, CPU seconds say) is read just before and after the load, and their
    rates over that span are returned as `probe_rates`."""
    sessions = sessions or ["sesn_bench"]
    per_port = max(1, connections // len(ports))
    if not have_wrk():
        return _drive_python(ports, seconds, connections, expect_rps, sessions, ordered_ids)
    threads = 1 if len(ports) > 1 else 2
    # Enough distinct events that no thread wraps round to re-send (duplicates ack cheaper).
    count = int(expect_rps * (seconds + 1) * 1.3 / len(ports)) + 1000
    with tempfile.TemporaryDirectory() as tmp:
        warm = Path(tmp) / "warm.tsv"
        _requests_file(3000, sessions, warm)
        files = []
        for i, _ in enumerate(ports):
            files.append(Path(tmp) / f"load{i}.tsv")
            _requests_file(count, sessions, files[-1], ordered=ordered_ids)
        _wrk(ports[0], 1, 8, 1, warm)
        before = probe() if probe else ()
        started = time.monotonic()
        with ThreadPoolExecutor(len(ports)) as pool:
            jobs = zip(ports, files, strict=True)
            runs = list(pool.map(lambda j: _wrk(j[0], threads, per_port, seconds, j[1]), jobs))
        span = time.monotonic() - started
        after = probe() if probe else ()
        rates = [(b - a) / span for a, b in zip(before, after, strict=True)]
    requests = sum(r["requests"] for r in runs)
    non2xx = sum(r["non2xx"] for r in runs)
    return {
        "tool": "wrk",
        "requests": requests,
        "ok": requests - non2xx,
        "non2xx": non2xx,
        "socket_errors": sum(r["socket_errors"] for r in runs),
        "wrapped": any(r["wrapped"] for r in runs),
        "rps": sum((r["requests"] - r["non2xx"]) / (r["duration_us"] / 1e6) for r in runs),
        # Per-process percentiles cannot be merged exactly: report the worst process.
        "p50_ms": max(r["p50_us"] for r in runs) / 1000,
        "p99_ms": max(r["p99_us"] for r in runs) / 1000,
        "probe_rates": rates,
    }


def _drive_python(
    ports: list[int],
    seconds: float,
    connections: int,
    expect_rps: float,
    sessions: list[str],
    ordered_ids: bool,
) -> dict[str, Any]:
    count = int(expect_rps * (seconds + 2) * 1.3)
    out = subprocess.run(
        [
            PYTHON,
            "-m",
            "bench.loadgen",
            "--targets",
            ",".join(f"127.0.0.1:{p}" for p in ports),
            "--connections",
            str(connections),
            "--duration",
            str(seconds),
            "--count",
            str(count),
            "--sessions",
            ",".join(sessions),
            *(["--ordered"] if ordered_ids else []),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    requests = result["requests"]
    return {
        "tool": "python",
        "requests": requests,
        "ok": result["ok"],
        "non2xx": requests - result["ok"],
        "socket_errors": result["errors"],
        "wrapped": result["exhausted"],
        "rps": result["rps"],
        "p50_ms": result["p50_ms"],
        "p99_ms": result["p99_ms"],
    }
