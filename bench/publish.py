"""The publish cost per session (issue 21): route `archive` alone, then `archive` + each
`publish_*` plugin, side by side in one run, against the real local brokers (Redis 6379,
NATS JetStream 4222, RabbitMQ 5672; a broker that is down gives a "skipped" row).

Per route, two stacks of processes on loopback, as in `e2e_latency`: the emulator (`idlehook
emulator`, limits raised on both sides) and `idlehook serve` (SQLite), route
`session.status_idled` -> the route's handlers, the plugin's `[plugins.<name>]` table with names
of its own (tests/integrations/brokers.py makes and removes them).

A. Latency: `serve` with its worker process. `BENCH_PUBLISH_SESSIONS` sessions launched through
   `POST /sessions` at `BENCH_PUBLISH_RATE`/s (after 3 not measured). t0 = `created_at` of the
   `session.status_idled` webhook the emulator sent (it sends at once: no faults), t1 = the
   session's `result.json` written (idle -> archived) and its message received by a live
   consumer in this process (idle -> published): an XREAD, a NATS subscription on the subject,
   an AMQP queue bound to the exchange. Messages per session: what that consumer received.
B. The worker alone: `serve --no-worker` stores the webhooks of `BENCH_PUBLISH_BURST` sessions
   created straight at the emulator; then a worker built here as `idlehook worker` builds it
   (`wiring.worker`) drains them: sessions/s = sessions / the drain's wall time (first
   connections included). API calls per session are counted at the emulator
   (`/_emulator/stats`) over the drain: routing and handlers, nothing else (no launch, no
   sweep). Messages per session: what the broker holds afterwards (XLEN, the JetStream
   stream's count, the queue's ready count). Publish time: each plugin's send-and-acknowledge
   (its `_send`), timed around the call: the broker's round trip under the worker's
   concurrency, without building the message or recording the save.

Figures only, no asserts on speed. Knobs (env): BENCH_PUBLISH_SESSIONS (40), BENCH_PUBLISH_RATE
(5), BENCH_PUBLISH_BURST (200), BENCH_PUBLISH_ROUTES (archive,redis,nats,amqp).
"""

import asyncio
import contextlib
import json
import socket
import sqlite3
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import anthropic
import httpx

from bench.budget import Counts, Stack, launch_at, sample, setup
from bench.common import PYTHON, SECRET, WEBHOOK_PATH, free_port, percentile, process, save
from bench.common import wait_http as wait_up
from bench.e2e_latency import CREATE_RPM, READ_RPM, service_config
from idlehook import wiring
from idlehook.logs import configure_logging
from idlehook.settings import Settings, env_value
from tests.integrations.brokers import BROKERS, Broker

SESSIONS = int(str(env_value("BENCH_PUBLISH_SESSIONS", "40")))
RATE = float(str(env_value("BENCH_PUBLISH_RATE", "5")))
BURST = int(str(env_value("BENCH_PUBLISH_BURST", "200")))
ROUTES = [
    r.strip() for r in str(env_value("BENCH_PUBLISH_ROUTES", "archive,redis,nats,amqp")).split(",")
]
RUN_SECONDS = 1.0  # the emulated turn; before t0, so it does not count
IDLED = "session.status_idled"
WARMUP = 3


def say(*parts: object) -> None:
    print(*parts, flush=True)


# -- the stack ------------------------------------------------------------------------------------


@contextlib.contextmanager
def stack(
    workdir: Path, handlers: list[str], broker: Broker | None, worker: bool
) -> Iterator[Stack]:
    """Emulator and `idlehook serve` (with its worker process, or `--no-worker`)."""
    workdir.mkdir(parents=True, exist_ok=True)
    emu_port, serve_port = free_port(), free_port()
    emulator_url = f"http://127.0.0.1:{emu_port}"
    receiver_url = f"http://127.0.0.1:{serve_port}"
    config = workdir / "idlehook.toml"
    service_config(
        config,
        database_url=f"sqlite:///{workdir / 'idlehook.db'}",
        results_dir=workdir / "results",
        emulator_url=emulator_url,
        routes=[{"name": "idled", "event_types": [IDLED], "handlers": handlers}],
    )
    if broker is not None:
        # JSON strings, numbers and booleans are TOML values too.
        table = [f"{key} = {json.dumps(value)}" for key, value in broker.table().items()]
        with config.open("a") as out:
            out.write("\n".join([f"[plugins.{broker.plugin}]", *table]) + "\n")
    emulator = [
        *(PYTHON, "-m", "idlehook.cli", "emulator", "--port", str(emu_port)),
        *("--webhook-url", receiver_url + WEBHOOK_PATH, "--webhook-secret", SECRET),
        *("--run-seconds", str(RUN_SECONDS)),
        *("--create-rpm", str(CREATE_RPM), "--read-rpm", str(READ_RPM)),
    ]
    serve = [PYTHON, "-m", "idlehook.cli", "--config", str(config), "serve"]
    serve += ["--port", str(serve_port), *([] if worker else ["--no-worker"])]
    with process(emulator) as emu, process(serve) as served:
        wait_up(emulator_url + "/_emulator/config")
        wait_up(receiver_url + "/")
        yield Stack(emulator_url, receiver_url, workdir / "results", served.pid, emu.pid, 1.0)


def reachable(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except OSError:
        return False
    return True


def _ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


async def idled_at(http: httpx.AsyncClient, s: Stack) -> dict[str, float]:
    """Each session's first `session.status_idled` webhook: when the emulator sent it."""
    log = (await http.get(s.emulator_url + "/_emulator/webhook-log", timeout=120)).json()
    sent: dict[str, float] = {}
    for e in log["emitted"]:
        if e["data"]["type"] == IDLED:
            sent.setdefault(e["data"]["id"], _ts(e["created_at"]))
    return sent


async def delivered_idles(http: httpx.AsyncClient, s: Stack) -> set[str]:
    log = (await http.get(s.emulator_url + "/_emulator/webhook-log", timeout=120)).json()
    return {
        a["data_id"] for a in log["attempts"] if a["type"] == IDLED and a["outcome"] == "delivered"
    }


async def failed_attempts(http: httpx.AsyncClient, s: Stack) -> dict[str, int]:
    """Webhook attempts that failed, by outcome, status and error."""
    log = (await http.get(s.emulator_url + "/_emulator/webhook-log", timeout=120)).json()
    failed = Counter(
        f"{a['outcome']} {a['status']} {a.get('error')}"
        for a in log["attempts"]
        if a["outcome"] != "delivered"
    )
    return dict(failed)


# -- live consumers (A) ---------------------------------------------------------------------------


@dataclass
class Received:
    """Each message a live consumer got: its session, and when it arrived here (wall clock)."""

    at: dict[str, float] = field(default_factory=dict)  # session id -> first arrival
    count: int = 0

    def note(self, body: bytes) -> None:
        now = time.time()
        self.count += 1
        self.at.setdefault(str(json.loads(body)["session_id"]), now)


@contextlib.asynccontextmanager
async def listening(broker: Any, into: Received) -> AsyncIterator[None]:
    stop = asyncio.Event()
    if broker.plugin == "publish_redis":
        from redis.asyncio import Redis

        client = Redis.from_url(f"redis://127.0.0.1:{broker.port}/0")

        async def read() -> None:
            last = "0"
            while not stop.is_set():
                answer: Any = await client.xread({broker.stream: last}, block=100, count=100)
                for _, entries in answer or []:
                    for entry_id, fields in entries:
                        last = entry_id
                        into.note(fields[b"body"])

        task = asyncio.create_task(read())
        try:
            yield
        finally:
            stop.set()
            await task
            await client.aclose()
    elif broker.plugin == "publish_nats":
        import nats

        nc = await nats.connect(f"nats://127.0.0.1:{broker.port}")

        async def got(msg: Any) -> None:
            into.note(msg.data)

        await nc.subscribe(broker.subject, cb=got)
        try:
            yield
        finally:
            await nc.close()
    else:
        import aio_pika

        connection = await aio_pika.connect(broker.url())
        channel = await connection.channel()
        queue = await channel.declare_queue(broker.queue, durable=True)

        async def consumed(message: Any) -> None:
            into.note(message.body)

        await queue.consume(consumed, no_ack=True)
        try:
            yield
        finally:
            await connection.close()


# -- A: latency through `serve` -------------------------------------------------------------------


async def latency(workdir: Path, handlers: list[str], broker: Broker | None) -> dict[str, Any]:
    received = Received()
    with stack(workdir, handlers, broker, worker=True) as s:
        async with (
            httpx.AsyncClient(limits=httpx.Limits(max_connections=100)) as http,
            listening(broker, received) if broker else contextlib.nullcontext(),
        ):
            agent, env = await setup(s)

            async def finished(ids: list[str], timeout: float) -> bool:
                deadline = time.monotonic() + timeout
                while time.monotonic() < deadline:
                    archived = all((s.results_dir / sid / "result.json").exists() for sid in ids)
                    if archived and (broker is None or all(sid in received.at for sid in ids)):
                        return True
                    await asyncio.sleep(0.05)
                return False

            warm = [
                sid
                for sid in await asyncio.gather(*await launch_at(http, s, agent, env, RATE, WARMUP))
                if sid
            ]
            await finished(warm, 60)
            tasks = await launch_at(http, s, agent, env, RATE, SESSIONS)
            ids = [sid for sid in await asyncio.gather(*tasks) if sid]
            complete = await finished(ids, 90)
            await asyncio.sleep(1.5)  # a duplicate would come in this time
            sent = await idled_at(http, s)
    archived, published, after = [], [], []
    for sid in ids:
        if sid not in sent:
            continue
        result = s.results_dir / sid / "result.json"
        if result.exists():
            archived.append((result.stat().st_mtime - sent[sid]) * 1000)
        if sid in received.at:
            published.append((received.at[sid] - sent[sid]) * 1000)
            if result.exists():
                # What the publish adds: its run comes after the archive's in the lane.
                after.append((received.at[sid] - result.stat().st_mtime) * 1000)
    warm_messages = sum(1 for sid in warm if sid in received.at)
    return {
        "sessions": len(ids),
        "complete": complete,
        "idle_to_archived_ms": summary(archived),
        "idle_to_published_ms": summary(published) if broker else None,
        "archived_to_published_ms": summary(after) if broker else None,
        # The warm-up's messages came first; what came after are the measured sessions'.
        "messages_per_session": (received.count - warm_messages) / max(1, len(ids))
        if broker
        else None,
    }


def summary(values: list[float]) -> dict[str, float]:
    return {"p50": percentile(values, 50), "p95": percentile(values, 95), "n": len(values)}


# -- B: the worker alone --------------------------------------------------------------------------


def time_sends(plugin: Any, into: list[float]) -> None:
    """Time each call of the plugin's `_send` (send and wait for the broker's acknowledgement):
    the bench's own wrapper on this one instance, not a change to the plugin."""
    send = plugin._send

    async def timed(conn: Any, message_id: str, body: bytes) -> Any:
        began = time.perf_counter()
        try:
            return await send(conn, message_id, body)
        finally:
            into.append((time.perf_counter() - began) * 1000)

    vars(plugin)["_send"] = timed


async def create_burst(s: Stack, count: int) -> list[str]:
    agent, env = await setup(s)
    gate = asyncio.Semaphore(32)
    async with anthropic.AsyncAnthropic(
        api_key="bench", base_url=s.emulator_url, max_retries=8
    ) as api:

        async def one(i: int) -> str:
            async with gate:
                session = await api.beta.sessions.create(
                    agent=agent,
                    environment_id=env,
                    initial_events=[
                        {"type": "user.message", "content": [{"type": "text", "text": f"job {i}"}]}
                    ],
                )
                return session.id

        return list(await asyncio.gather(*(one(i) for i in range(count))))


async def stored_idles(http: httpx.AsyncClient, s: Stack, created: list[str]) -> list[str]:
    """The sessions whose idle webhook the receiver took: all of them, or, when an attempt
    failed (the emulator retries after a backoff, as Anthropic does), those stored once
    nothing more arrived for 10 s (the row says how many)."""
    deadline = time.monotonic() + 120
    seen, still_since = 0, time.monotonic()
    while True:
        stored = await delivered_idles(http, s) & set(created)
        if len(stored) == len(created):
            break
        if len(stored) != seen:
            seen, still_since = len(stored), time.monotonic()
        if time.monotonic() > deadline or (seen and time.monotonic() - still_since > 10):
            break
        await asyncio.sleep(0.25)
    return [sid for sid in created if sid in stored]


async def drain(workdir: Path, handlers: list[str], broker: Broker | None) -> dict[str, Any]:
    sends: list[float] = []
    with stack(workdir, handlers, broker, worker=False) as s:
        async with httpx.AsyncClient() as http:
            created = await create_burst(s, BURST)
            ids = await stored_idles(http, s, created)
            failed = await failed_attempts(http, s)
            settings = Settings.load(config=workdir / "idlehook.toml")
            engine = wiring.open_engine(settings)
            try:
                async with wiring.api_client(settings, engine) as client:
                    worker = wiring.worker(settings, engine, client)
                    if broker is not None:
                        time_sends(worker.registry.get(broker.plugin), sends)
                    before = await sample(http, s)
                    began = time.perf_counter()
                    await worker.run(drain=True)
                    seconds = time.perf_counter() - began
                    after = await sample(http, s)
            finally:
                engine.dispose()
    stored = await broker.stored() if broker else None
    with contextlib.closing(sqlite3.connect(workdir / "idlehook.db")) as db:
        states = db.execute(
            "SELECT handler, state, count(*) FROM handler_runs WHERE handler != '_route' "
            "GROUP BY handler, state"
        ).fetchall()
    per_session = Counts.between(before, after).per_session(len(ids))
    return {
        "sessions": len(ids),
        "created": len(created),
        "failed_webhook_attempts": failed,
        "drain_seconds": seconds,
        "sessions_per_s": len(ids) / seconds,
        "calls_per_session": per_session["reads"] + per_session["create"],
        "calls_by_kind": per_session,
        "calls_by_route": Counts.between(before, after).answered,
        "messages_per_session": stored / len(ids) if stored is not None else None,
        "publish_ms": summary(sends) if broker else None,
        # Every run should have succeeded; anything else (a retry pending, dead) shows here.
        "runs": {f"{handler} {state}": n for handler, state, n in states},
    }


# -- the run --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    name: str
    key: str  # "archive", or the broker's key in tests/integrations/brokers.py


CASES = {
    "archive": Case("archive", "archive"),
    "redis": Case("archive + publish_redis", "redis"),
    "nats": Case("archive + publish_nats", "nats"),
    "amqp": Case("archive + publish_amqp", "amqp"),
}


async def measure(workdir: Path, case: Case) -> dict[str, Any]:
    def broker() -> Broker | None:
        return None if case.key == "archive" else BROKERS[case.key]()

    handlers = ["archive"] + ([] if case.key == "archive" else [BROKERS[case.key]().plugin])
    row: dict[str, Any] = {"route": case.name, "handlers": handlers}
    for part, run in (("latency", latency), ("drain", drain)):
        b = broker()
        try:
            if b is not None:
                # AMQP: the queue, bound to the exchange before anything is published (a
                # `mandatory` message no queue takes fails its run).
                await b.prepare()
            began = time.monotonic()
            row[part] = await run(workdir / part, handlers, b)
            row[part]["part_seconds"] = round(time.monotonic() - began, 1)
        finally:
            if b is not None:
                with contextlib.suppress(Exception):
                    await b.cleanup()
    return row


def line(cells: tuple[str, ...], widths: tuple[int, ...]) -> str:
    first, *rest = zip(cells, widths, strict=True)
    return f"{first[0]:{first[1]}}" + "".join(f"  {c:>{w}}" for c, w in rest)


def fmt(pair: dict[str, float] | None) -> str:
    if not pair or not pair["n"]:
        return "-"
    return f"{pair['p50']:.1f} / {pair['p95']:.1f}"


def main() -> None:
    # Errors only: a run that fails shows in its row's run states, not as a line per retry.
    configure_logging(json=True, level="ERROR")
    rows: list[dict[str, Any]] = []
    say(
        f"publish cost per session: A {SESSIONS} sessions at {RATE:g}/s through `serve`; "
        f"B a drain of {BURST} stored sessions by one worker (concurrency "
        f"{Settings(api_key='x').worker.concurrency})"
    )
    widths = (24, 16, 14, 18, 19, 17, 13, 13)
    say(
        line(
            (
                "route",
                "API calls/sess.",
                "msgs/sess. A|B",
                "idle->archived ms",
                "idle->published ms",
                "archived->publ. ms",
                "drain sess./s",
                "publish ms",
            ),
            widths,
        )
    )
    say(
        line(
            ("", "(vs archive)", "", "p50 / p95", "p50 / p95", "p50 / p95", "", "p50 / p95"), widths
        )
    )
    base: float | None = None
    for key in ROUTES:
        case = CASES[key]
        if key != "archive" and not reachable(BROKERS[key]().port):
            say(f"{case.name:24}  skipped: {key} unreachable")
            rows.append({"route": case.name, "skipped": f"{key} unreachable"})
            continue
        with tempfile.TemporaryDirectory() as tmp:
            try:
                row = asyncio.run(measure(Path(tmp), case))
            except Exception as exc:  # one route failing must not lose the others' figures
                say(f"{case.name:24}  failed: {type(exc).__name__}: {exc}"[:300])
                rows.append({"route": case.name, "failed": repr(exc)[:300]})
                continue
        rows.append(row)
        a, b = row["latency"], row["drain"]
        calls = b["calls_per_session"]
        base = calls if key == "archive" else base
        delta = f" ({calls - base:+.2f})" if base is not None and key != "archive" else ""
        msgs = "-"
        if a["messages_per_session"] is not None:
            msgs = f"{a['messages_per_session']:.2f} | {b['messages_per_session']:.2f}"
        cells = (
            case.name,
            f"{calls:.2f}{delta}",
            msgs,
            fmt(a["idle_to_archived_ms"]),
            fmt(a["idle_to_published_ms"]),
            fmt(a["archived_to_published_ms"]),
            f"{b['sessions_per_s']:.1f}",
            fmt(b["publish_ms"]),
        )
        say(line(cells, widths))
    for row in rows:
        if "drain" in row:
            drained = row["drain"]
            say(
                f"  {row['route']}: calls over the drain {drained['calls_by_route']}; "
                f"runs {drained['runs']}; drained {drained['sessions']} of "
                f"{drained['created']} created (failed webhook attempts: "
                f"{drained['failed_webhook_attempts'] or 'none'}); "
                f"A complete: {row['latency']['complete']}; "
                f"A {row['latency']['part_seconds']} s, B {drained['part_seconds']} s"
            )
    save("publish", {"sessions": SESSIONS, "rate_per_s": RATE, "burst": BURST, "rows": rows})


if __name__ == "__main__":
    main()
