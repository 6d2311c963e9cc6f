"""End-to-end latency: the emulator's idle transition -> the archive handler's files on disk.

Three processes on loopback: the emulator (`idlehook emulator`), the whole service (`idlehook
serve`: receiver + worker, SQLite), and this driver launching sessions through the service's
`POST /sessions` at a steady rate. Per session, t0 = `created_at` of the `session.status_idled`
webhook event the emulator emitted (wall clock, taken when the turn ended, so the run time and
launch are before it) and t1 = mtime of `<results_dir>/<session>/result.json`. No faults: the
emulator posts each webhook at once. The receiver's ack time (from the emulator's attempt log)
splits the figure into delivery+ack and worker+archive.

The create/read rate limits are raised (both sides) so 8 launches/s fit; nothing else changes.
"""

import asyncio
import contextlib
import json
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import anthropic
import httpx

from bench.common import (
    PYTHON,
    SECRET,
    WEBHOOK_PATH,
    free_port,
    percentile,
    process,
    save,
    wait_http,
)
from handlers.config import WorkerSettings
from idlehook.settings import env_value

RATE = float(str(env_value("BENCH_E2E_RATE", "8")))
SECONDS = float(str(env_value("BENCH_E2E_SECONDS", "20")))
RUN_SECONDS = 1.0  # the emulated turn; before t0, so it does not count
GOAL_MS = 50.0
TOKEN = "bench-token"
CREATE_RPM = 6000
READ_RPM = 60000


@dataclass(frozen=True)
class Stack:
    emulator_url: str
    receiver_url: str
    results_dir: Path
    serve_pid: int


def _toml(value: Any) -> str:
    # JSON strings, numbers, booleans and arrays are valid TOML values.
    return json.dumps(value)


def service_config(
    path: Path,
    *,
    database_url: str,
    results_dir: Path,
    emulator_url: str,
    routes: list[dict[str, Any]] | None = None,
    extra: dict[str, Any] | None = None,
) -> None:
    """An `idlehook.toml` for `idlehook serve` against the emulator."""
    top = {
        "database_url": database_url,
        "results_dir": str(results_dir),
        "api_key": "bench",
        "base_url": emulator_url,
        "webhook_signing_keys": [SECRET],
        "api_token": TOKEN,
        "owner": "bench",
        "create_rpm": CREATE_RPM,
        "read_rpm": READ_RPM,
        "watchdog_seconds": 3600,
        "json_logs": True,
        **(extra or {}),
    }
    lines = [f"{key} = {_toml(value)}" for key, value in top.items()]
    lines += ["[reconcile]", "interval_seconds = 3600", "settle_seconds = 0"]
    for rule in routes or []:
        lines.append("[[routes]]")
        lines += [f"{key} = {_toml(value)}" for key, value in rule.items()]
    path.write_text("\n".join(lines) + "\n")


@contextlib.contextmanager
def stack(
    workdir: Path,
    *emulator_args: str,
    routes: list[dict[str, Any]] | None = None,
    extra: dict[str, Any] | None = None,
) -> Iterator[Stack]:
    """Emulator and `idlehook serve` as processes, webhooks from one to the other."""
    emu_port, serve_port = free_port(), free_port()
    emulator_url = f"http://127.0.0.1:{emu_port}"
    receiver_url = f"http://127.0.0.1:{serve_port}"
    results_dir = workdir / "results"
    config = workdir / "idlehook.toml"
    service_config(
        config,
        database_url=f"sqlite:///{workdir / 'idlehook.db'}",
        results_dir=results_dir,
        emulator_url=emulator_url,
        routes=routes,
        extra=extra,
    )
    emulator = [
        *(PYTHON, "-m", "idlehook.cli", "emulator", "--port", str(emu_port)),
        *("--webhook-url", receiver_url + WEBHOOK_PATH, "--webhook-secret", SECRET),
        *emulator_args,
    ]
    serve = [PYTHON, "-m", "idlehook.cli", "--config", str(config), "serve"]
    with process(emulator), process([*serve, "--port", str(serve_port)]) as served:
        wait_http(emulator_url + "/_emulator/config")
        wait_http(receiver_url + "/")
        yield Stack(emulator_url, receiver_url, results_dir, served.pid)


def agent_and_environment(emulator_url: str) -> tuple[str, str]:
    client = anthropic.Anthropic(api_key="bench", base_url=emulator_url, max_retries=5)
    agent = client.beta.agents.create(name="bench", model="claude-opus-4-7").id
    env = client.beta.environments.create(
        name="bench", config={"type": "cloud", "networking": {"type": "limited"}}
    ).id
    return agent, env


async def launch(http: httpx.AsyncClient, url: str, agent: str, env: str, i: int) -> str:
    response = await http.post(
        url + "/sessions",
        headers={"authorization": f"Bearer {TOKEN}"},
        json={"agent": agent, "environment": env, "message": f"job {i}"},
        timeout=60,
    )
    response.raise_for_status()
    session_id: str = response.json()["session_id"]
    return session_id


async def launch_steadily(s: Stack, agent: str, env: str, rate: float, count: int) -> list[str]:
    """`count` launches, one every 1/rate s on schedule (open loop: a slow one doesn't delay)."""
    async with httpx.AsyncClient() as http:
        began = time.monotonic()
        tasks = []
        for i in range(count):
            await asyncio.sleep(max(0.0, began + i / rate - time.monotonic()))
            tasks.append(asyncio.create_task(launch(http, s.receiver_url, agent, env, i)))
        return list(await asyncio.gather(*tasks))


def wait_results(results_dir: Path, ids: list[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    missing = list(ids)
    while missing:
        missing = [sid for sid in missing if not (results_dir / sid / "result.json").exists()]
        if missing and time.monotonic() > deadline:
            raise RuntimeError(f"{len(missing)} sessions never archived")
        time.sleep(0.1)


def _ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def measure(s: Stack, ids: list[str]) -> dict[str, Any]:
    log = httpx.get(s.emulator_url + "/_emulator/webhook-log", timeout=60).json()
    idled = {
        e["data"]["id"]: _ts(e["created_at"])
        for e in log["emitted"]
        if e["data"]["type"] == "session.status_idled"
    }
    acked = {
        a["data_id"]: _ts(a["at"])
        for a in log["attempts"]
        if a["type"] == "session.status_idled" and a["outcome"] == "delivered"
    }
    total, ack, after = [], [], []
    for sid in ids:
        t0 = idled[sid]
        t1 = os.stat(s.results_dir / sid / "result.json").st_mtime
        total.append((t1 - t0) * 1000)
        if sid in acked:
            ack.append((acked[sid] - t0) * 1000)
            after.append((t1 - acked[sid]) * 1000)

    def summary(values: list[float]) -> dict[str, float]:
        return {
            "p50_ms": percentile(values, 50),
            "p99_ms": percentile(values, 99),
            "max_ms": max(values),
        }

    return {
        "idle_to_result": summary(total),
        "idle_to_webhook_ack": summary(ack),
        "ack_to_result": summary(after),
        "failed_attempts": sum(1 for a in log["attempts"] if a["outcome"] != "delivered"),
    }


def main() -> None:
    count = int(RATE * SECONDS)
    with (
        tempfile.TemporaryDirectory() as tmp,
        stack(
            Path(tmp),
            *("--run-seconds", str(RUN_SECONDS)),
            *("--create-rpm", str(CREATE_RPM), "--read-rpm", str(READ_RPM)),
        ) as s,
    ):
        agent, env = agent_and_environment(s.emulator_url)
        # Warm-up: imports, first connections, SQLite pages; not measured.
        warm = asyncio.run(launch_steadily(s, agent, env, RATE, 5))
        wait_results(s.results_dir, warm, timeout=30)
        began = time.monotonic()
        ids = asyncio.run(launch_steadily(s, agent, env, RATE, count))
        wait_results(s.results_dir, ids, timeout=60)
        wall = time.monotonic() - began
        figures = measure(s, ids)
    poll = WorkerSettings().poll_seconds  # the default, which this run keeps
    e2e = figures["idle_to_result"]
    figures |= {
        "sessions": count,
        "rate_per_s": RATE,
        "seconds": wall,
        "goal_p50_ms": GOAL_MS,
        "p50_vs_goal": e2e["p50_ms"] / GOAL_MS,
        "worker_poll_seconds": poll,
        "database": "sqlite",
    }
    print(
        f"{count} sessions at {RATE:g}/s over {wall:.1f} s, worker poll {poll:g} s "
        f"(woken by the receiver on each new delivery)"
    )
    for name in ("idle_to_result", "idle_to_webhook_ack", "ack_to_result"):
        row = figures[name]
        print(
            f"  {name:20} p50 {row['p50_ms']:7.1f} ms  p99 {row['p99_ms']:7.1f} ms  "
            f"max {row['max_ms']:7.1f} ms"
        )
    print(
        f"goal p50 < {GOAL_MS:g} ms: p50 is {figures['p50_vs_goal']:.2f}x the goal "
        f"({'met' if e2e['p50_ms'] < GOAL_MS else 'not met'}); "
        f"failed webhook attempts {figures['failed_attempts']}"
    )
    save("e2e_latency", figures)


if __name__ == "__main__":
    main()
