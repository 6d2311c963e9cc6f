"""Within the API's budget (issue 18): finished sessions per minute at the documented limits.

The API allows 300 creates and 600 read-class calls (get, list, events, files, delete, archive,
update, send) a minute. That budget, not the receiver, caps how many sessions idlehook carries.

Three processes on loopback, as in `e2e_latency`: the emulator (`idlehook emulator`, rate limits
on: 300 creates, 600 reads per emulated minute, token bucket), the whole service (`idlehook
serve`: receiver, worker, sweeps; SQLite) with one route, finished sessions (every idle stop
reason but `requires_action`) -> the given handlers, and this driver.

1. Sustained: sessions launched through `POST /sessions` at `BENCH_BUDGET_LAUNCH_RPM` (280 per
   emulated minute, under the create limit, above any finishing rate the read limit allows)
   for a warm-up and a window; finished = deleted at the emulator (the `delete` handler refuses
   unless `archive` succeeded first; the result.json of every deleted session is checked). The
   emulator's read bucket (a minute's worth may burst) is spent first, so the window is the
   steady state that minutes of demand above the limit reach.
2. API calls per finished session by route, counted at the emulator (`/_emulator/stats`: its
   per-route request and 429 counters), for `archive`+`delete`, `archive`, `log`, and
   `archive`+`delete` with every webhook delivered twice and the second event family on. Sweeps
   off here (as in `e2e_latency`), so the table is the routes' own cost; 1 and 3 keep them.
3. A burst: `BENCH_BUDGET_BURST` sessions created straight at the emulator with its limits off,
   with turns long enough to end together once the limits are back on (a full bucket: a burst
   after a quiet spell); time from the first idle to the last deletion, calls and 429s.
4. `bench/serve_acks.py`'s `measure()`, when that module exists (acks under a busy worker).

What is scaled, and why the figure is still per real minute at the documented limits: the
emulator runs `speed` times faster (`--speed`), so its limits stay 300/600 per *emulated*
minute (300*speed, 600*speed per real minute), and so does every duration it keeps: turn
length, the `retry-after` it sends, webhook retry backoff. idlehook is given the same real-time
budget (`create_rpm = 300*speed`, `read_rpm = 600*speed`) and its periods are divided by the
same factor: the reconciler's and watchdog's intervals, the reconciler's settle time, the
worker's retry backoff. Calls per session do not depend on the clock, and the budget is a number
of calls per minute, so sessions per emulated minute are the sessions per real minute the real
API at 300/600 would carry, as long as the budget, not this 2-vCPU box, is what runs out. Hence
part 1 runs in real time (speed 1) by default, and each figure prints the CPU share of the serve
process tree and of the emulator beside it, and the share of the read budget used: a figure
with the budget well under 100 % used and no 429s measures idlehook or the box, not the budget.
The emulator counts `GET /v1/files` in no rate class (the real API's files endpoints do count);
the table shows those calls apart and counts them as reads.

Knobs (env): BENCH_BUDGET_SPEED (1: part 1), BENCH_BUDGET_WARMUP / BENCH_BUDGET_WINDOW (1 and 2
emulated minutes), BENCH_BUDGET_LAUNCH_RPM (280), BENCH_BUDGET_ROUTE_SPEED (10: part 2, whose
counts do not depend on the clock), BENCH_BUDGET_ROUTE_SESSIONS (40), BENCH_BUDGET_BURST (1000),
BENCH_BUDGET_BURST_SPEED (4), BENCH_BUDGET_BURST_HOLD (45: real seconds each burst turn runs, so
all are created before any idles), BENCH_BUDGET_BURST_SECONDS (200: real seconds of drain before
part 3 stops and reports `complete: false` with the rate so far), BENCH_BUDGET_PARTS (1,2,3,4),
BENCH_BUDGET_ACKS_API (down: serve_acks' API mode). Parts 1-3 take about 7-8 minutes on the
defaults (part 3 at 4x: 1,000 sessions at 8 reads each need 13 emulated minutes, over 3 real
ones, the drain bound); part 4 as long as serve_acks takes.
"""

import asyncio
import contextlib
import importlib
import importlib.util
import json
import os
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import anthropic
import httpx

from bench.common import (
    PYTHON,
    ROOT,
    SECRET,
    WEBHOOK_PATH,
    children,
    cpu_seconds,
    free_port,
    process,
    save,
    wait_http,
)
from idlehook.settings import env_value

CREATE_LIMIT = 300  # per minute, documented
READ_LIMIT = 600
SPEED = float(str(env_value("BENCH_BUDGET_SPEED", "1")))
ROUTE_SPEED = float(str(env_value("BENCH_BUDGET_ROUTE_SPEED", "10")))
WARMUP_MIN = float(str(env_value("BENCH_BUDGET_WARMUP", "1")))
WINDOW_MIN = float(str(env_value("BENCH_BUDGET_WINDOW", "2")))
LAUNCH_RPM = float(str(env_value("BENCH_BUDGET_LAUNCH_RPM", "280")))
ROUTE_SESSIONS = int(str(env_value("BENCH_BUDGET_ROUTE_SESSIONS", "40")))
BURST = int(str(env_value("BENCH_BUDGET_BURST", "1000")))
BURST_SPEED = float(str(env_value("BENCH_BUDGET_BURST_SPEED", "4")))
BURST_SECONDS = float(str(env_value("BENCH_BUDGET_BURST_SECONDS", "200")))
# Real seconds every burst turn runs: creating all of them (limits off) must fit in it.
BURST_HOLD = float(str(env_value("BENCH_BUDGET_BURST_HOLD", "45")))
ACKS_MODE = str(env_value("BENCH_BUDGET_ACKS_API", "down"))  # serve_acks: down | slow
PARTS = {p.strip() for p in str(env_value("BENCH_BUDGET_PARTS", "1,2,3,4")).split(",")}
TOKEN = "bench-token"
IDLE_TYPES = ["session.status_idled", "session.idled"]
ARCHIVE_DELETE = ["archive", "delete"]

# Columns of the calls table: route keys as the emulator counts them.
COLUMNS: dict[str, tuple[str, ...]] = {
    "GET session": ("GET /v1/sessions/{id}",),
    "GET events": ("GET /v1/sessions/{id}/events",),
    "GET files": ("GET /v1/files",),
    "DELETE": ("DELETE /v1/sessions/{id}",),
    "POST": (
        "POST /v1/sessions/{id}",
        "POST /v1/sessions/{id}/archive",
        "POST /v1/sessions/{id}/events",
    ),
}
CREATE_ROUTES = ("POST /v1/sessions", "POST /v1/agents")


def say(*parts: object) -> None:
    print(*parts, flush=True)


@dataclass(frozen=True)
class Stack:
    emulator_url: str
    receiver_url: str
    results_dir: Path
    serve_pid: int
    emulator_pid: int
    speed: float


@dataclass
class Sample:
    at: float  # time.monotonic()
    wall: float  # time.time()
    deleted: int
    live: int
    idle: int
    requests: dict[str, int]
    limited: dict[str, int]
    cpu: float  # serve process and its children, CPU seconds
    emulator_cpu: float


@dataclass
class Counts:
    """Calls answered (429s excluded) and 429s by route, between two samples."""

    answered: dict[str, int] = field(default_factory=dict)
    limited: dict[str, int] = field(default_factory=dict)

    @classmethod
    def between(cls, a: Sample, b: Sample) -> "Counts":
        keys = set(a.requests) | set(b.requests)
        limited = {k: b.limited.get(k, 0) - a.limited.get(k, 0) for k in keys}
        answered = {
            k: b.requests.get(k, 0) - a.requests.get(k, 0) - limited[k] for k in sorted(keys)
        }
        return cls(
            {k: v for k, v in answered.items() if v},
            {k: v for k, v in limited.items() if v},
        )

    def reads(self) -> int:
        """Read-class calls (everything but creates; files included, as the real API counts)."""
        return sum(v for k, v in self.answered.items() if k not in CREATE_ROUTES)

    def per_session(self, sessions: int) -> dict[str, float]:
        n = max(1, sessions)
        row = {
            name: sum(self.answered.get(k, 0) for k in keys) / n for name, keys in COLUMNS.items()
        }
        # Lists (the reconciler's first sweep), the launcher's agent and environment reads.
        row["other"] = self.reads() / n - sum(row.values())
        row["reads"] = self.reads() / n
        row["create"] = self.answered.get("POST /v1/sessions", 0) / n
        return row

    def total_429(self) -> int:
        return sum(self.limited.values())


def _toml(value: Any) -> str:
    # JSON strings, numbers, booleans and arrays of them are valid TOML values.
    return json.dumps(value)


def write_config(
    path: Path, s_url: str, workdir: Path, speed: float, handlers: list[str], sweeps: bool
) -> None:
    """`idlehook.toml` at the documented limits scaled by `speed` (see the module docstring)."""
    top: dict[str, Any] = {
        "database_url": f"sqlite:///{workdir / 'idlehook.db'}",
        "results_dir": str(workdir / "results"),
        "api_key": "bench",
        "base_url": s_url,
        "webhook_signing_keys": [SECRET],
        "api_token": TOKEN,
        "owner": "bench",
        "create_rpm": round(CREATE_LIMIT * speed),
        "read_rpm": round(READ_LIMIT * speed),
        "watchdog_seconds": 60 / speed if sweeps else 3600,
        "json_logs": True,
    }
    lines = [f"{key} = {_toml(value)}" for key, value in top.items()]
    lines += [
        "[reconcile]",
        f"interval_seconds = {_toml(60 / speed if sweeps else 3600)}",
        f"settle_seconds = {_toml(30 / speed)}",
        "[worker]",
        f"backoff_base_seconds = {_toml(2 / speed)}",
        f"backoff_max_seconds = {_toml(300 / speed)}",
        "[[routes]]",
        'name = "finished"',
        f"event_types = {_toml(IDLE_TYPES)}",
        'except_stop_reasons = ["requires_action"]',
        f"handlers = {_toml(handlers)}",
    ]
    path.write_text("\n".join(lines) + "\n")


@contextlib.contextmanager
def stack(
    workdir: Path,
    *,
    speed: float,
    handlers: list[str],
    sweeps: bool,
    emulator_args: Sequence[str] = (),
) -> Iterator[Stack]:
    emu_port, serve_port = free_port(), free_port()
    emulator_url = f"http://127.0.0.1:{emu_port}"
    receiver_url = f"http://127.0.0.1:{serve_port}"
    config = workdir / "idlehook.toml"
    write_config(config, emulator_url, workdir, speed, handlers, sweeps)
    emulator = [
        *(PYTHON, "-m", "idlehook.cli", "emulator", "--port", str(emu_port)),
        *("--webhook-url", receiver_url + WEBHOOK_PATH, "--webhook-secret", SECRET),
        *("--speed", str(speed)),
        *("--create-rpm", str(CREATE_LIMIT), "--read-rpm", str(READ_LIMIT)),
        *emulator_args,
    ]
    serve = [PYTHON, "-m", "idlehook.cli", "--config", str(config), "serve"]
    with process(emulator) as emu, process([*serve, "--port", str(serve_port)]) as served:
        wait_http(emulator_url + "/_emulator/config")
        wait_http(receiver_url + "/")
        yield Stack(emulator_url, receiver_url, workdir / "results", served.pid, emu.pid, speed)


def tree_cpu(pid: int) -> float:
    """CPU seconds of `pid` and its descendants (the inbox writer, a worker process)."""
    total = 0.0
    with contextlib.suppress(OSError, ValueError):
        total += cpu_seconds(pid)
        for child in children(pid):
            total += tree_cpu(child)
    return total


async def sample(http: httpx.AsyncClient, s: Stack) -> Sample:
    stats = (await http.get(s.emulator_url + "/_emulator/stats", timeout=60)).json()
    sessions = stats["sessions"]
    return Sample(
        at=time.monotonic(),
        wall=time.time(),
        deleted=sessions["total"] - sessions["live"],
        live=sessions["live"],
        idle=sessions["by_status"].get("idle", 0),
        requests=stats["requests"],
        limited=stats["rate_limited"],
        cpu=tree_cpu(s.serve_pid),
        emulator_cpu=tree_cpu(s.emulator_pid),
    )


async def setup(s: Stack) -> tuple[str, str]:
    async with anthropic.AsyncAnthropic(
        api_key="bench", base_url=s.emulator_url, max_retries=8
    ) as client:
        agent = (await client.beta.agents.create(name="budget", model="claude-opus-4-7")).id
        env = (
            await client.beta.environments.create(
                name="budget", config={"type": "cloud", "networking": {"type": "limited"}}
            )
        ).id
    return agent, env


async def launch(http: httpx.AsyncClient, s: Stack, agent: str, env: str, i: int) -> str | None:
    try:
        response = await http.post(
            s.receiver_url + "/sessions",
            headers={"authorization": f"Bearer {TOKEN}"},
            json={"agent": agent, "environment": env, "message": f"job {i}"},
            timeout=120,
        )
    except httpx.HTTPError:
        return None
    if response.status_code >= 300:
        return None
    session_id: str | None = response.json().get("session_id")
    return session_id


async def launch_at(
    http: httpx.AsyncClient, s: Stack, agent: str, env: str, per_s: float, count: int
) -> list[asyncio.Task[str | None]]:
    """`count` launches, one every 1/per_s real seconds on schedule (open loop)."""
    began = time.monotonic()
    tasks = []
    for i in range(count):
        await asyncio.sleep(max(0.0, began + i / per_s - time.monotonic()))
        tasks.append(asyncio.create_task(launch(http, s, agent, env, i)))
    return tasks


def has_result(s: Stack, session_id: str) -> bool:
    return (s.results_dir / session_id / "result.json").exists()


async def webhook_log(http: httpx.AsyncClient, s: Stack) -> dict[str, Any]:
    log: dict[str, Any] = (
        await http.get(s.emulator_url + "/_emulator/webhook-log", timeout=120)
    ).json()
    return log


def _ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def emitted(log: dict[str, Any], event_type: str) -> dict[str, float]:
    """Session id -> wall time of its first `event_type` event."""
    out: dict[str, float] = {}
    for e in log["emitted"]:
        if e["data"]["type"] == event_type:
            out.setdefault(e["data"]["id"], _ts(e["created_at"]))
    return out


def cpu_share(a: Sample, b: Sample) -> float:
    return (b.cpu - a.cpu) / max(1e-9, b.at - a.at)


def emulator_cpu_share(a: Sample, b: Sample) -> float:
    return (b.emulator_cpu - a.emulator_cpu) / max(1e-9, b.at - a.at)


async def drain_bucket(s: Stack, agent: str) -> int:
    """Spend the emulator's read bucket (a minute's worth, 600, may burst) until it answers
    429: steady state from the start, as after minutes of demand above the limit."""
    spent = 0
    async with anthropic.AsyncAnthropic(
        api_key="bench", base_url=s.emulator_url, max_retries=0
    ) as client:
        while spent < 10 * READ_LIMIT:
            got = await asyncio.gather(
                *(client.beta.agents.retrieve(agent) for _ in range(50)), return_exceptions=True
            )
            spent += sum(1 for g in got if not isinstance(g, BaseException))
            if any(isinstance(g, anthropic.RateLimitError) for g in got):
                return spent
    return spent


# -- 1. sustained ----------------------------------------------------------------------------


async def sustained(workdir: Path) -> dict[str, Any]:
    speed = SPEED
    with stack(workdir, speed=speed, handlers=ARCHIVE_DELETE, sweeps=True) as s:
        async with httpx.AsyncClient(limits=httpx.Limits(max_connections=200)) as http:
            agent, env = await setup(s)
            drained = await drain_bucket(s, agent)
            warm_s, window_s = WARMUP_MIN * 60 / speed, WINDOW_MIN * 60 / speed
            per_s = LAUNCH_RPM * speed / 60
            count = int(per_s * (warm_s + window_s))
            began = time.monotonic()
            launcher = asyncio.create_task(launch_at(http, s, agent, env, per_s, count))
            samples = [await sample(http, s)]
            while time.monotonic() - began < warm_s + window_s:
                await asyncio.sleep(1.0)
                samples.append(await sample(http, s))
            tasks = await launcher
            launched = [t.result() for t in tasks if t.done() and not t.cancelled()]
            for t in tasks:
                t.cancel()
            end = samples[-1]
            start = min(samples, key=lambda x: abs(x.at - began - warm_s))
            log = await webhook_log(http, s)
    deleted_ids = list(emitted(log, "session.deleted"))
    unarchived = sum(1 for sid in deleted_ids if not has_result(s, sid))
    counts = Counts.between(start, end)
    window_min = (end.at - start.at) * speed / 60
    finished = end.deleted - start.deleted
    return {
        "speed": speed,
        "launch_per_emulated_min": LAUNCH_RPM,
        "launched": sum(1 for x in launched if x),
        "launch_not_created": sum(1 for x in launched if not x),  # failed, or queued (202)
        "warmup_emulated_min": (start.at - began) * speed / 60,
        "window_emulated_min": window_min,
        "window_real_s": end.at - start.at,
        "finished_in_window": finished,
        "sessions_per_min": finished / window_min,
        "deleted_total": end.deleted,
        "deleted_without_result_json": unarchived,
        "read_calls_per_min": counts.reads() / window_min,
        "read_calls_fraction_of_limit": counts.reads() / window_min / READ_LIMIT,
        # What the emulator's limiter saw (it leaves GET /v1/files out of every class).
        "limited_read_calls_per_min": (counts.reads() - counts.answered.get("GET /v1/files", 0))
        / window_min,
        "creates_per_min": counts.answered.get("POST /v1/sessions", 0) / window_min,
        "calls_by_route": counts.answered,
        "rate_limited_429": counts.total_429(),
        "rate_limited_by_route": counts.limited,
        "read_calls_per_finished_session": counts.reads() / max(1, finished),
        "serve_cpu_share": cpu_share(start, end),
        "emulator_cpu_share": emulator_cpu_share(start, end),
        "bucket_drained_first": drained,
        "deleted_curve": [
            [round((x.at - began) * speed / 60, 3), x.deleted]
            for x in samples[:: max(1, len(samples) // 40)]
        ],
    }


# -- 2. calls per session by route -------------------------------------------------------------


@dataclass(frozen=True)
class RouteCase:
    name: str
    handlers: list[str]
    emulator_args: tuple[str, ...] = ()


CASES = [
    RouteCase("archive+delete", ARCHIVE_DELETE),
    RouteCase("archive", ["archive"]),
    RouteCase("log", ["log"]),
    RouteCase(
        "archive+delete, dup+2nd family",
        ARCHIVE_DELETE,
        ("--duplicate", "1", "--second-family"),
    ),
]


async def swept_once(http: httpx.AsyncClient, s: Stack, timeout: float = 60) -> None:
    """Wait for the worker process's first reconcile sweep (it lists sessions as it starts):
    launched into that sweep, sessions whose run-start webhook is still in flight are each
    checked, a start-up cost that would otherwise be counted as the route's."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (await sample(http, s)).requests.get("GET /v1/sessions", 0) > 0:
            await asyncio.sleep(1.0)  # the rest of that sweep
            return
        await asyncio.sleep(0.25)
    raise RuntimeError("the worker process never swept: is it running?")


async def quiet(
    http: httpx.AsyncClient, s: Stack, done: Callable[[Sample], bool], timeout: float
) -> tuple[Sample, bool]:
    """Wait for `done` and then no new API call for 2 s (trailing webhooks, routing runs)."""
    deadline = time.monotonic() + timeout
    last = await sample(http, s)
    still_since = time.monotonic()
    while time.monotonic() < deadline:
        await asyncio.sleep(0.25)
        now = await sample(http, s)
        if now.requests != last.requests:
            still_since = now.at
        last = now
        if done(now) and now.at - still_since >= 2.0:
            return now, True
    return last, False


async def route_case(workdir: Path, case: RouteCase) -> dict[str, Any]:
    speed = ROUTE_SPEED
    n = ROUTE_SESSIONS
    with stack(
        workdir,
        speed=speed,
        handlers=case.handlers,
        sweeps=False,
        emulator_args=case.emulator_args,
    ) as s:
        async with httpx.AsyncClient(limits=httpx.Limits(max_connections=100)) as http:
            agent, env = await setup(s)
            await swept_once(http, s)
            before = await sample(http, s)
            tasks = await launch_at(http, s, agent, env, 10.0, n)
            ids = [sid for sid in await asyncio.gather(*tasks) if sid]

            def done(x: Sample) -> bool:
                if "delete" in case.handlers:
                    return x.deleted >= len(ids)
                if "archive" in case.handlers:
                    return all(has_result(s, sid) for sid in ids)
                # `log` leaves nothing to see: every session idle, then the calls stop.
                return x.idle >= len(ids)

            after, complete = await quiet(http, s, done, timeout=90)
            archived = sum(1 for sid in ids if has_result(s, sid))
    counts = Counts.between(before, after)
    return {
        "route": case.name,
        "speed": speed,
        "handlers": case.handlers,
        "emulator_args": list(case.emulator_args),
        "sessions": len(ids),
        "complete": complete,
        "deleted": after.deleted,
        "archived": archived,
        "per_session": counts.per_session(len(ids)),
        "calls_by_route": counts.answered,
        "rate_limited_429": counts.total_429(),
    }


# -- 3. burst -----------------------------------------------------------------------------------


async def burst(workdir: Path) -> dict[str, Any]:
    speed = BURST_SPEED
    hold_real = BURST_HOLD
    with stack(
        workdir,
        speed=speed,
        handlers=ARCHIVE_DELETE,
        sweeps=True,
        emulator_args=("--run-seconds", str(hold_real * speed)),
    ) as s:
        async with httpx.AsyncClient(limits=httpx.Limits(max_connections=100)) as http:
            agent, env = await setup(s)
            config = s.emulator_url + "/_emulator/config"
            await http.put(config, json={"rate_limits": {"enabled": False}})
            created_began = time.monotonic()
            await create_direct(s, agent, env, BURST)
            create_s = time.monotonic() - created_began
            await http.put(config, json={"rate_limits": {"enabled": True}})
            before = await sample(http, s)
            deadline = time.monotonic() + BURST_SECONDS + hold_real
            now = before
            while time.monotonic() < deadline and now.deleted < BURST:
                await asyncio.sleep(0.5)
                now = await sample(http, s)
            log = await webhook_log(http, s)
    idled = emitted(log, "session.status_idled")
    deleted = emitted(log, "session.deleted")
    first_idle = min(idled.values()) if idled else now.wall
    last_idle = max(idled.values()) if idled else now.wall
    counts = Counts.between(before, now)
    complete = now.deleted >= BURST
    last_delete = (max(deleted.values()) if deleted else now.wall) - first_idle
    # Incomplete: the rate over the whole time watched, not up to the last deletion.
    drain_real = last_delete if complete else now.wall - first_idle
    return {
        "sessions": BURST,
        "speed": speed,
        "create_seconds_real": create_s,
        "idled_before_limits_on": sum(1 for t in idled.values() if t < before.wall),
        "idle_spread_emulated_s": (last_idle - first_idle) * speed,
        "complete": complete,
        "deleted": now.deleted,
        "archived": sum(1 for sid in deleted if has_result(s, sid)),
        "drain_real_s": drain_real,
        "last_delete_after_first_idle_real_s": last_delete,
        "runs_by_state": runs_by_state(workdir / "idlehook.db"),
        "drain_emulated_min": drain_real * speed / 60,
        "sessions_per_min": now.deleted / max(1e-9, drain_real * speed / 60),
        "read_calls_per_session": counts.reads() / now.deleted if now.deleted else None,
        "calls_by_route": counts.answered,
        "rate_limited_429": counts.total_429(),
        "rate_limited_by_route": counts.limited,
        "serve_cpu_share": cpu_share(before, now),
        "emulator_cpu_share": emulator_cpu_share(before, now),
    }


def runs_by_state(path: Path) -> dict[str, int]:
    """Handler runs by state in the serve's store (dead letters: sessions that will not finish
    unless replayed); empty when the schema has no such table."""
    with contextlib.suppress(sqlite3.Error), contextlib.closing(sqlite3.connect(path)) as db:
        rows = db.execute("SELECT state, count(*) FROM handler_runs GROUP BY state").fetchall()
        return {str(state): int(n) for state, n in rows}
    return {}


async def create_direct(s: Stack, agent: str, env: str, n: int) -> None:
    async with anthropic.AsyncAnthropic(
        api_key="bench", base_url=s.emulator_url, max_retries=8
    ) as client:
        gate = asyncio.Semaphore(32)

        async def one(i: int) -> None:
            async with gate:
                await client.beta.sessions.create(
                    agent=agent,
                    environment_id=env,
                    metadata={"idlehook_owner": "bench"},
                    initial_events=[
                        {"type": "user.message", "content": [{"type": "text", "text": f"b{i}"}]}
                    ],
                )

        await asyncio.gather(*(one(i) for i in range(n)))


# -- 4. serve_acks -----------------------------------------------------------------------------


def serve_acks() -> dict[str, Any]:
    """HOOK (issue 18, helper C): `bench/serve_acks.py`'s figures, when it exists."""
    if importlib.util.find_spec("bench.serve_acks") is None:
        return {"available": False, "note": "bench/serve_acks.py not in this tree"}
    module = importlib.import_module("bench.serve_acks")
    func = getattr(module, "measure", None)
    if not callable(func):
        return {"available": False, "note": "bench.serve_acks has no measure()"}
    # Its own knobs (BENCH_BACKLOG, BENCH_SECONDS, BENCH_API_LATENCY) apply; this tree served.
    result = func(ACKS_MODE)
    return {"available": True, **result} if isinstance(result, dict) else {"available": False}


# -- report ------------------------------------------------------------------------------------


def modules_from() -> str:
    """Where the child processes import idlehook from (the tree under test)."""
    out = subprocess.run(
        [PYTHON, "-c", "import handlers, idlehook; print(handlers.__file__)"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def print_routes(rows: list[dict[str, Any]]) -> None:
    cols = [*COLUMNS, "other", "reads", "create"]
    say("2. calls per finished session, by route (answered calls; 429s apart)")
    say(f"  {'route':32}" + "".join(f"{c:>12}" for c in cols) + f"{'429s':>7}{'done':>6}")
    say("  (reads: every call but the create, GET files included; POST: archive, update, events)")
    for row in rows:
        cells = "".join(f"{row['per_session'][c]:12.2f}" for c in cols)
        say(
            f"  {row['route']:32}{cells}{row['rate_limited_429']:7d}"
            f"{'yes' if row['complete'] else 'NO':>6}"
        )


def main() -> None:
    figures: dict[str, Any] = {
        "modules_from": modules_from(),
        "limits_per_min": {"create": CREATE_LIMIT, "read": READ_LIMIT},
        "load_average_at_start": os.getloadavg(),
    }
    say(f"idlehook from {figures['modules_from']}")
    with tempfile.TemporaryDirectory() as tmp:
        if "1" in PARTS:
            (Path(tmp) / "sustained").mkdir()
            one = asyncio.run(sustained(Path(tmp) / "sustained"))
            figures["sustained"] = one
            save("budget", figures)  # kept should a later part be cut short
            say(
                f"1. sustained, {one['speed']:g}x, launching {LAUNCH_RPM:g}/min: "
                f"**{one['sessions_per_min']:.0f} sessions/min** finished over "
                f"{one['window_emulated_min']:.1f} min; {one['read_calls_per_min']:.0f} read "
                f"calls/min ({one['read_calls_fraction_of_limit']:.0%} of {READ_LIMIT}), "
                f"{one['read_calls_per_finished_session']:.1f} per finished session; "
                f"429s {one['rate_limited_429']}; serve CPU {one['serve_cpu_share']:.0%}, "
                f"emulator CPU {one['emulator_cpu_share']:.0%}; "
                f"deleted without result.json {one['deleted_without_result_json']}"
            )
            say(f"   calls in the window: {one['calls_by_route']}")
        if "2" in PARTS:
            rows = []
            for i, case in enumerate(CASES):
                (Path(tmp) / f"route{i}").mkdir()
                rows.append(asyncio.run(route_case(Path(tmp) / f"route{i}", case)))
            figures["routes"] = rows
            save("budget", figures)  # kept should a later part be cut short
            print_routes(rows)
        if "3" in PARTS:
            (Path(tmp) / "burst").mkdir()
            three = asyncio.run(burst(Path(tmp) / "burst"))
            figures["burst"] = three
            save("budget", figures)  # kept should a later part be cut short
            say(
                f"3. burst of {three['sessions']} at {three['speed']:g}x: "
                f"{three['deleted']} deleted ({three['archived']} with result.json) "
                f"{'' if three['complete'] else '(INCOMPLETE) '}"
                f"{'in' if three['complete'] else 'after'} {three['drain_emulated_min']:.1f} min "
                f"from the first idle "
                f"(idles spread over {three['idle_spread_emulated_s']:.0f} s); "
                f"{three['sessions_per_min']:.0f} sessions/min; "
                f"{three['read_calls_per_session'] or 0:.1f} read calls per deleted session; "
                f"429s {three['rate_limited_429']}; serve CPU {three['serve_cpu_share']:.0%}, "
                f"emulator CPU {three['emulator_cpu_share']:.0%}"
            )
            say(f"   calls: {three['calls_by_route']}; runs: {three['runs_by_state']}")
    if "4" in PARTS:
        figures["serve_acks"] = serve_acks()
        say(f"4. serve_acks: {figures['serve_acks']}")
    figures["load_average_at_end"] = os.getloadavg()
    save("budget", figures)


if __name__ == "__main__":
    main()
