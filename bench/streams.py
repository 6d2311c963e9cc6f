"""Streams against webhooks: N concurrent long sessions watched two ways, measured client side.

(a) the tutorial's way: one asyncio process creates each session, opens its SSE stream
    (`client.beta.sessions.events.stream`), sends the user message, reads until
    `session.status_idle`, writes the transcript and result; nobody deletes the session.
(b) idlehook: `idlehook serve` (receiver + worker) launches each with `initial_events` and holds
    no connection; the emulator's webhooks drive archive, log, then delete.

Each side gets a fresh emulator process (rate limits off: N creates at 300/min would take
minutes at speed 1; the run time stays real). The watching process is sampled from here through
/proc: RSS, open sockets, CPU. "Waiting" is the window in which all N sessions are running and
none has finished: what it costs to hold N jobs in flight. Cost comes from the emulator's
ledger (GET /_emulator/billing) when the last result is on disk, under both billing models.

`python -m bench.streams` runs both sides; `python -m bench.streams client ...` is side (a)'s
watching process.
"""

import argparse
import asyncio
import json
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import anthropic
import httpx
import httpx2  # the SDK's own fork of httpx: its client takes only httpx2 objects

from bench.common import (
    PYTHON,
    children,
    cpu_seconds,
    emulator_process,
    open_sockets,
    process,
    rss_kib,
    save,
)
from bench.e2e_latency import TOKEN, agent_and_environment, stack
from idlehook.settings import env_flag, env_value

N = int(str(env_value("BENCH_STREAMS", "1000")))
RUN_SECONDS = float(str(env_value("BENCH_STREAMS_RUN_SECONDS", "30")))
SCRIPT = "long:5"  # five agent messages spread over the run: a stream sees a few frames
EMULATOR_ARGS = ("--no-rate-limits", "--run-seconds", str(RUN_SECONDS), "--default-script", SCRIPT)
USD_PER_HOUR = 0.08
DEADLINE = 150.0  # per side, launch to last result (and delete)


# -- side (a): the watching process --------------------------------------------------------


async def watch_one(
    client: anthropic.AsyncAnthropic,
    agent: str,
    env: str,
    out: Path,
    i: int,
    setup: asyncio.Semaphore,
) -> None:
    async with setup:
        session = await client.beta.sessions.create(agent=agent, environment_id=env)
        # Stream first: it has no replay, so the message goes only once it is listening.
        stream = await client.beta.sessions.events.stream(session.id)
        await client.beta.sessions.events.send(
            session.id,
            events=[{"type": "user.message", "content": [{"type": "text", "text": f"job {i}"}]}],
        )
    events: list[dict[str, Any]] = []
    stop: str | None = None
    async with stream:
        async for event in stream:
            events.append(event.to_dict(mode="json"))
            if event.type == "session.status_idle":
                stop = event.stop_reason.type
                if stop != "requires_action":
                    break
    folder = out / session.id
    folder.mkdir(parents=True)
    (folder / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    (folder / "result.json").write_text(json.dumps({"session_id": session.id, "stop": stop}))


async def watch_all(url: str, agent: str, env: str, n: int, out: Path) -> dict[str, Any]:
    # One connection per stream: the pool must hold all of them plus the setup calls.
    http = anthropic.DefaultAsyncHttpxClient(
        limits=httpx2.Limits(max_connections=n + 100, max_keepalive_connections=100)
    )
    async with anthropic.AsyncAnthropic(
        api_key="bench", base_url=url, max_retries=5, http_client=http
    ) as client:
        setup = asyncio.Semaphore(50)
        results = await asyncio.gather(
            *(watch_one(client, agent, env, out, i, setup) for i in range(n)),
            return_exceptions=True,
        )
    errors = [repr(r) for r in results if isinstance(r, BaseException)]
    return {"ok": n - len(errors), "errors": errors[:5], "error_count": len(errors)}


def client_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="bench.streams client")
    parser.add_argument("--emulator", required=True)
    parser.add_argument("--agent", required=True)
    parser.add_argument("--env", required=True)
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--report", type=Path, required=True)
    args = parser.parse_args(argv)
    report = asyncio.run(watch_all(args.emulator, args.agent, args.env, args.n, args.out))
    args.report.write_text(json.dumps(report))


# -- the orchestrator -----------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    at: float
    running: int
    idle: int
    live: int
    cpu: float
    rss_kib: int
    sockets: int


async def sample(http: httpx.AsyncClient, emulator_url: str, pid: int, began: float) -> Sample:
    stats = (await http.get(emulator_url + "/_emulator/stats", timeout=30)).json()
    by_status = stats["sessions"]["by_status"]
    return Sample(
        at=time.monotonic() - began,
        running=by_status.get("running", 0),
        idle=by_status.get("idle", 0),
        live=stats["sessions"]["live"],
        # The serve process and its inbox writer process: both are idlehook's cost.
        cpu=cpu_seconds(pid) + sum(map(cpu_seconds, children(pid))),
        rss_kib=rss_kib(pid) + sum(map(rss_kib, children(pid))),
        sockets=open_sockets(pid),
    )


async def billing(http: httpx.AsyncClient, emulator_url: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for model in ("exists", "running"):
        report = (await http.get(f"{emulator_url}/_emulator/billing?model={model}")).json()
        seconds = report["total_container_seconds"]
        out[model] = {"container_hours": seconds / 3600, "usd": report["total_cost_usd"]}
    return out


def progress(s: Sample, results: int) -> None:
    if env_flag("BENCH_PROGRESS"):
        print(
            f"{s.at:6.1f}s running {s.running} idle {s.idle} live {s.live} "
            f"results {results} cpu {s.cpu:.1f}",
            file=sys.stderr,
        )


def summarise(
    samples: list[Sample], n: int, done_at: float, cost: dict[str, Any], live_after: int
) -> dict[str, Any]:
    waiting = [s for s in samples if s.running == n]
    if len(waiting) >= 2:
        span = waiting[-1].at - waiting[0].at
        cpu_waiting = waiting[-1].cpu - waiting[0].cpu
    else:
        span, cpu_waiting = 0.0, float("nan")
    return {
        "sessions": n,
        "seconds_to_last_result": done_at,
        "waiting_window_s": span,
        "cpu_s_waiting": cpu_waiting,
        "cpu_share_waiting": cpu_waiting / span if span else float("nan"),
        "cpu_s_total": samples[-1].cpu - samples[0].cpu,
        "rss_mib_peak": max(s.rss_kib for s in samples) / 1024,
        "rss_mib_waiting": max((s.rss_kib for s in waiting), default=0) / 1024,
        "sockets_peak": max(s.sockets for s in samples),
        "sockets_waiting": max((s.sockets for s in waiting), default=0),
        "cost": cost,
        "sessions_left_undeleted": live_after,
        "usd_per_hour_still_accruing_exists": live_after * USD_PER_HOUR,
        "exists_usd_one_hour_later": cost["exists"]["usd"] + live_after * USD_PER_HOUR,
        "samples": [asdict(s) for s in samples],
    }


async def side_streams(workdir: Path) -> dict[str, Any]:
    with emulator_process(*EMULATOR_ARGS) as url:
        agent, env = agent_and_environment(url)
        out, report = workdir / "results", workdir / "client.json"
        args = [PYTHON, "-m", "bench.streams", "client", "--emulator", url]
        args += ["--agent", agent, "--env", env, "--n", str(N)]
        args += ["--out", str(out), "--report", str(report)]
        async with httpx.AsyncClient() as http:
            began = time.monotonic()
            with process(args) as client:
                samples = []
                while client.poll() is None:
                    if time.monotonic() - began > DEADLINE:
                        break  # stopped with the process; `complete` says so
                    samples.append(await sample(http, url, client.pid, began))
                    progress(samples[-1], len(list(out.glob("*/result.json"))))
                    await asyncio.sleep(0.5)
            done_at = time.monotonic() - began
            cost = await billing(http, url)
            live = (await http.get(url + "/_emulator/stats")).json()["sessions"]["live"]
        figures = summarise(samples, N, done_at, cost, live)
        figures["client"] = json.loads(report.read_text()) if report.exists() else None
        figures["results_on_disk"] = sum(1 for _ in out.glob("*/result.json"))
        figures["complete"] = figures["results_on_disk"] == N
        return figures


async def launch_all(http: httpx.AsyncClient, receiver_url: str, agent: str, env: str) -> int:
    gate = asyncio.Semaphore(32)

    async def one(i: int) -> bool:
        async with gate:
            response = await http.post(
                receiver_url + "/sessions",
                headers={"authorization": f"Bearer {TOKEN}"},
                json={"agent": agent, "environment": env, "message": f"job {i}"},
                timeout=60,
            )
            return response.status_code == 201

    return sum(await asyncio.gather(*(one(i) for i in range(N))))


async def side_idlehook(workdir: Path) -> dict[str, Any]:
    routes = [
        {
            "name": "finished",
            "event_types": ["session.status_idled"],
            "stop_reasons": ["end_turn"],
            "handlers": ["archive", "log", "delete"],
        }
    ]
    with stack(workdir, *EMULATOR_ARGS, routes=routes) as s:
        agent, env = agent_and_environment(s.emulator_url)
        async with httpx.AsyncClient() as http:
            began = time.monotonic()
            launching = asyncio.create_task(launch_all(http, s.receiver_url, agent, env))
            samples: list[Sample] = []
            while True:
                samples.append(await sample(http, s.emulator_url, s.serve_pid, began))
                progress(samples[-1], len(list(s.results_dir.glob("*/result.json"))))
                if launching.done() and samples[-1].live == 0:
                    break
                if time.monotonic() - began > DEADLINE:
                    break  # `complete` says so
                await asyncio.sleep(0.5)
            done_at = time.monotonic() - began
            cost = await billing(http, s.emulator_url)
            if not launching.done():
                launching.cancel()
            launched = launching.result() if not launching.cancelled() else -1
        figures = summarise(samples, N, done_at, cost, samples[-1].live)
        figures["launched"] = launched
        figures["results_on_disk"] = sum(1 for _ in s.results_dir.glob("*/result.json"))
        figures["complete"] = figures["results_on_disk"] == N and samples[-1].live == 0
        return figures


def line(name: str, f: dict[str, Any]) -> str:
    return (
        f"  {name:9} RSS {f['rss_mib_waiting']:6.1f} MiB  sockets {f['sockets_waiting']:5d}  "
        f"CPU waiting {f['cpu_s_waiting']:5.2f} s / {f['waiting_window_s']:4.1f} s "
        f"({f['cpu_share_waiting']:.1%})  CPU total {f['cpu_s_total']:5.1f} s  "
        f"last result {f['seconds_to_last_result']:5.1f} s  "
        f"exists {f['cost']['exists']['container_hours']:.2f} h ${f['cost']['exists']['usd']:.4f}  "
        f"running {f['cost']['running']['container_hours']:.2f} h "
        f"${f['cost']['running']['usd']:.4f}  left undeleted {f['sessions_left_undeleted']}"
    )


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "a").mkdir()
        (Path(tmp) / "b").mkdir()
        if env_flag("BENCH_STREAMS_ONLY_IDLEHOOK"):
            print(json.dumps(asyncio.run(side_idlehook(Path(tmp) / "b")), default=str)[:3000])
            return
        streams = asyncio.run(side_streams(Path(tmp) / "a"))
        idlehook = asyncio.run(side_idlehook(Path(tmp) / "b"))
    ratios = {
        key: idlehook[key] / streams[key] if streams[key] else float("nan")
        for key in ("rss_mib_waiting", "sockets_waiting", "cpu_s_waiting", "cpu_s_total")
    }
    for model in ("exists", "running"):
        ratios[f"usd_{model}"] = idlehook["cost"][model]["usd"] / streams["cost"][model]["usd"]
    ratios["usd_exists_one_hour_later"] = (
        idlehook["exists_usd_one_hour_later"] / streams["exists_usd_one_hour_later"]
    )
    print(f"{N} sessions, {RUN_SECONDS:g} s runs ({SCRIPT}), emulator rate limits off")
    print(line("streams", streams))
    print(line("idlehook", idlehook))
    print(
        "idlehook / streams: "
        + ", ".join(f"{key} {value:.2f}x" for key, value in ratios.items())
        + f"; results on disk {streams['results_on_disk']} vs {idlehook['results_on_disk']}"
    )
    save(
        "streams",
        {
            "sessions": N,
            "run_seconds": RUN_SECONDS,
            "script": SCRIPT,
            "rate_limits": "off",
            "streams": streams,
            "idlehook": idlehook,
            "idlehook_over_streams": ratios,
        },
    )


if __name__ == "__main__":
    if sys.argv[1:2] == ["client"]:
        client_main(sys.argv[2:])
    else:
        main()
