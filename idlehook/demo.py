"""`idlehook demo`: the whole job on the embedded default, in one process, in under a minute.

The emulator, the receiver and a worker run on loopback against a fresh SQLite database, with
the default routes (no `[[routes]]`: every outcome archived). A batch of sessions with mixed
outcomes is launched (no stream held), one of them under a spend ceiling the API enforces and
one a runaway that would run for hours; their webhooks drive the handlers; one session's
webhooks are dropped and the reconciler finds it; the reaper interrupts the runaway past its
`max_running` and deletes what is done. Billing is as the API documents it (runtime only while
running, plus tokens): the saving reported is the runtime the interrupt avoided, read from the
emulator's ledger, and deleting idle sessions is reported as the clean-up it is. Every number
is read back from the store, the files on disk or the emulator, and each check is a fact the run
must establish; the exit code says whether all held.
"""

import asyncio
import base64
import contextlib
import json
import random
import secrets
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
from anthropic import AsyncAnthropic
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy.engine import Engine

from emulator.app import create_emulator
from emulator.config import EmulatorConfig
from emulator.control import billing_report
from emulator.core import Emulator
from idlehook import wiring
from idlehook.settings import (
    ReaperSettings,
    ReconcileSettings,
    Settings,
    WorkerSettings,
)
from sessions.durations import parse_duration
from sessions.launcher import LaunchRequest
from store.contents import read_all
from store.models import HandlerRun, ReaperActionKind, RunState, Source
from store.runs import RunStore
from store.sessions import SessionStore

WEBHOOK_PATH = "/webhooks/anthropic"
IDLE_TYPES = ["session.status_idled", "session.idled"]


# A run scripted to go on for two emulated hours (three minutes of wall time at the demo's
# 40x), and the limit that stops it. Session timestamps are wall-clock time, so the reaper's
# limit is too: 4 s of wall time is 160 emulated seconds.
RUNAWAY_SECONDS = 7200.0
MAX_RUNNING = "4s"


@dataclass(frozen=True)
class Case:
    label: str
    script: str
    archived: bool  # the default routes save its transcript and result
    webhooks_dropped: bool = False
    budget_usd: float | None = None
    runaway: bool = False


CASES = (
    Case("finished", "end_turn", archived=True),
    Case("finished", "tools", archived=True),
    Case("needs approval", "requires_action", archived=False),
    Case("failed (retries exhausted)", "retries_exhausted", archived=True),
    Case("refused", "refusal", archived=True),
    # Twenty model calls at ~$0.006 each: the $0.02 ceiling stops it after four.
    Case("stopped on its budget", "long:20", archived=True, budget_usd=0.02),
    Case("terminated", "terminate", archived=True),
    Case("webhook dropped", "end_turn", archived=True, webhooks_dropped=True),
    Case("runaway", "long:3", archived=True, runaway=True),
)


@dataclass
class Check:
    name: str
    ok: bool
    detail: str = ""


@dataclass
class DemoReport:
    sessions: list[dict[str, Any]] = field(default_factory=list)
    numbers: dict[str, Any] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    def check(self, name: str, ok: bool, detail: str = "") -> None:
        self.checks.append(Check(name, bool(ok), detail))

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "sessions": self.sessions,
            "numbers": self.numbers,
            "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in self.checks],
        }


def _free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@contextlib.asynccontextmanager
async def _serving(app: Any) -> AsyncIterator[str]:
    sock = _free_socket()
    server = uvicorn.Server(uvicorn.Config(app, log_level="error", access_log=False, lifespan="on"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await task
        sock.close()


async def _until(predicate: Callable[[], Any], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(predicate):
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


def demo_settings(data_dir: Path, emulator_url: str, secret: str) -> Settings:
    return Settings(
        database_url=f"sqlite:///{data_dir / 'idlehook.db'}",
        data_dir=data_dir,
        results_dir=data_dir / "results",
        api_key="demo-key",
        base_url=emulator_url,
        webhook_signing_keys=[secret],
        owner="idlehook-demo",
        worker=WorkerSettings(poll_seconds=0.2, backoff_base_seconds=0.2),
        # idle_for 0s so the demo shows the clean-up; the default (24h) keeps finished sessions
        # for follow-ups, and idle time is not billed.
        reaper=ReaperSettings(idle_for="0s", interrupt_wait_seconds=5.0),
        reconcile=ReconcileSettings(settle_seconds=0, interval_seconds=3600),
        watchdog_seconds=3600,
    )


async def run_demo(
    data_dir: Path, console: Console, *, speed: float = 40.0, duplicate: float = 0.3
) -> DemoReport:
    await asyncio.to_thread(data_dir.mkdir, parents=True, exist_ok=True)
    report = DemoReport()
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    # Bound now so the emulator can be told where to deliver; served once the app exists.
    sock = _free_socket()
    receiver_port = sock.getsockname()[1]
    emulator = Emulator(
        EmulatorConfig(
            speed=speed,
            run_seconds=6.0,
            webhook_urls=[f"http://127.0.0.1:{receiver_port}{WEBHOOK_PATH}"],
            webhook_secrets=[secret],
            faults={"duplicate": duplicate},
        ),
        # Seeded: the injected duplicates are the same from run to run, so the demo's check
        # that some were suppressed does not hang on luck.
        rng=random.Random(11),
    )
    async with _serving(create_emulator(emulator=emulator)) as emulator_url:
        settings = demo_settings(data_dir, emulator_url, secret)
        svc = wiring.service(settings)
        server = uvicorn.Server(
            uvicorn.Config(svc.app, log_level="error", access_log=False, lifespan="on")
        )
        serving = asyncio.create_task(server.serve(sockets=[sock]))
        try:
            while not server.started:
                if serving.done():
                    serving.result()
                await asyncio.sleep(0.01)
            console.print(
                f"[bold]emulator[/bold] {emulator_url}   [bold]receiver[/bold] "
                f"http://127.0.0.1:{receiver_port}{WEBHOOK_PATH}   [bold]store[/bold] "
                f"{settings.database_url}"
            )
            await _drive(svc, emulator, settings, console, report)
        finally:
            server.should_exit = True
            await serving
            sock.close()
            await svc.client.close()
            svc.engine.dispose()
    return report


async def _drive(
    svc: wiring.Service,
    emulator: Emulator,
    settings: Settings,
    console: Console,
    report: DemoReport,
) -> None:
    client: AsyncAnthropic = svc.client
    engine = svc.engine
    agent = await client.beta.agents.create(
        name="demo triage agent",
        model="claude-opus-4-7",
        system="Triage the ticket and report.",
        tools=[{"type": "agent_toolset_20260401"}],
    )
    environment = await client.beta.environments.create(
        name="demo-limited",
        config={
            "type": "cloud",
            "networking": {"type": "limited", "allowed_hosts": ["api.github.com"]},
        },
    )
    launcher = wiring.launcher(settings, engine, client)

    def request(case: Case, index: int) -> LaunchRequest:
        metadata = {"emulator_script": case.script}
        if case.runaway:
            metadata["emulator_run_seconds"] = str(RUNAWAY_SECONDS)
        return LaunchRequest(
            agent=agent.id,
            environment=environment.id,
            message=f"Ticket #{index}: please triage.",
            title=f"demo {index}: {case.label}",
            metadata=metadata,
            deadline="1h" if not case.runaway else "6h",
            budget_usd=case.budget_usd,
            max_running=MAX_RUNNING if case.runaway else None,
        )

    started = time.monotonic()
    ids: dict[int, str] = {}
    # The session whose webhooks Anthropic "drops": launched alone while every delivery is lost.
    dropped = [i for i, c in enumerate(CASES) if c.webhooks_dropped]
    emulator.apply_config({"faults": {"drop_all": True}})
    for i in dropped:
        result = await launcher.start(request(CASES[i], i))
        assert result.session_id is not None, result.error
        ids[i] = result.session_id
    await _until(
        lambda: all(_emitted_idle(emulator, ids[i]) for i in dropped), 20, "the dropped run"
    )
    emulator.apply_config({"faults": {"drop_all": False}})

    rest = [i for i in range(len(CASES)) if i not in ids]
    results = await asyncio.gather(*(launcher.start(request(CASES[i], i)) for i in rest))
    for i, result in zip(rest, results, strict=True):
        assert result.session_id is not None, result.error
        ids[i] = result.session_id
    report.numbers["launch_seconds"] = round(time.monotonic() - started, 2)

    # Progress: each session counts once the webhooks have driven it to where it settles.
    def settled() -> int:
        return sum(
            1
            for i, c in enumerate(CASES)
            if not c.runaway and _settled(engine, settings, c, ids[i])
        )

    runaway = [i for i, c in enumerate(CASES) if c.runaway]
    expected_by_webhook = len(CASES) - len(dropped) - len(runaway)
    with Progress(
        TextColumn("[bold]webhooks → handlers"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} sessions"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as progress:
        task = progress.add_task("run", total=expected_by_webhook)
        deadline = time.monotonic() + 40
        while True:
            done = await asyncio.to_thread(settled)
            progress.update(task, completed=min(done, expected_by_webhook))
            if done >= expected_by_webhook or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        await _until(lambda: _unfinished_runs(engine) == 0, 20, "the handler runs to drain")

    missed_before = not _settled(engine, settings, CASES[dropped[0]], ids[dropped[0]])
    console.print("[bold]reconciler[/bold]: listing sessions for transitions no webhook reported")
    sweep = await wiring.reconciler(settings, engine, client).sweep()
    report.numbers["synthetic_deliveries"] = len(sweep.synthesised)
    if svc.worker is not None:
        svc.worker.wake()
    await _until(
        lambda: all(_settled(engine, settings, CASES[i], ids[i]) for i in dropped),
        20,
        "the reconciled session to be archived",
    )
    await _until(lambda: _unfinished_runs(engine) == 0, 20, "the handler runs to drain")

    limit = parse_duration(MAX_RUNNING).total_seconds()
    await _until(
        lambda: all(_running_for(emulator, ids[i]) > limit for i in runaway),
        30,
        "the runaway to run past max_running",
    )
    console.print(
        "[bold]reaper[/bold]: interrupting the run past max_running, deleting what is saved"
    )
    archive = wiring.archiver(settings, engine, client)
    reaper = wiring.reaper(settings, engine, client, wiring.reap_policy(settings), archive)
    reap = await reaper.run()
    # The interrupted run's own idle webhook may still be in its handlers: a second pass (the
    # next cron run) deletes it once they are done.
    await _until(lambda: _unfinished_runs(engine) == 0, 20, "the handler runs to drain")
    again = await reaper.run()
    reap.outcomes.extend(again.outcomes)
    report.numbers["elapsed_seconds"] = round(time.monotonic() - started, 2)
    await _summarise(svc, emulator, settings, ids, reap, missed_before, report)


def _running_for(emulator: Emulator, session_id: str) -> float:
    """Wall-clock seconds the session has been running (0 when it is not running)."""
    record = emulator.store.sessions[session_id]
    if record.status != "running":
        return 0.0
    rows = billing_report(emulator)["sessions"]
    emulated = float(next(r["running_seconds"] for r in rows if r["session_id"] == session_id))
    return emulated / emulator.clock.speed


def _emitted_idle(emulator: Emulator, session_id: str) -> bool:
    return any(
        e["data"]["id"] == session_id and e["data"]["type"] == "session.status_idled"
        for e in emulator.sender.emitted
    )


def _settled(engine: Engine, settings: Settings, case: Case, session_id: str) -> bool:
    if case.archived:
        return (settings.results_dir / session_id / "result.json").exists()
    row = SessionStore(engine).get(session_id)
    return row is not None and row.stop_reason == "requires_action"


def _unfinished_runs(engine: Engine) -> int:
    return RunStore(engine).unfinished()


async def _summarise(
    svc: wiring.Service,
    emulator: Emulator,
    settings: Settings,
    ids: dict[int, str],
    reap: Any,
    missed_before: bool,
    report: DemoReport,
) -> None:
    engine = svc.engine
    deleted_ids = set(reap.ids(ReaperActionKind.DELETED))
    contents = read_all(engine)
    deliveries, runs, tracked = contents.deliveries, contents.runs, contents.tracked
    by_session: dict[str, list[HandlerRun]] = {}
    delivery_session = {d.id: d.session_id for d in deliveries}
    for run in runs:
        sid = delivery_session.get(run.delivery_id)
        if sid is not None:
            by_session.setdefault(sid, []).append(run)

    for i, case in enumerate(CASES):
        sid = ids[i]
        row = tracked.get(sid)
        archive_runs = [
            r
            for r in by_session.get(sid, [])
            if r.handler == "archive" and r.state == RunState.SUCCEEDED
        ]
        report.sessions.append(
            {
                "session_id": sid,
                "case": case.label,
                "status": row.status if row else None,
                "stop_reason": row.stop_reason if row else None,
                "archived": (settings.results_dir / sid / "events.jsonl").exists(),
                "outcome": (_outcome(settings, sid) or {}).get("outcome"),
                "archive_runs": len(archive_runs),
                "deleted": sid in deleted_ids,
            }
        )

    states: dict[str, int] = {}
    for run in runs:
        states[run.state] = states.get(run.state, 0) + 1
    webhook_deliveries = [d for d in deliveries if d.source == Source.WEBHOOK]
    reconciled = [d for d in deliveries if d.source == Source.RECONCILE]
    duplicates = sum(d.duplicates for d in deliveries)
    billing = billing_report(emulator)
    rate = float(billing["rate_usd_per_container_hour"])
    meters = {row["session_id"]: row for row in billing["sessions"]}
    runaway = [ids[i] for i, c in enumerate(CASES) if c.runaway]
    interrupted = set(reap.ids(ReaperActionKind.INTERRUPTED))
    avoided_seconds = sum(float(meters[sid]["avoided_running_seconds"]) for sid in runaway)
    avoided_usd = sum(
        float(meters[sid]["avoided_runtime_usd"]) + float(meters[sid]["avoided_token_usd"])
        for sid in runaway
    )
    delete_saving = sum(
        o.saving_usd_per_hour for o in reap.outcomes if o.action is ReaperActionKind.DELETED
    )
    report.numbers.update(
        {
            "sessions_launched": len(ids),
            "session_creates_seen_by_api": emulator.creates["sessions"],
            "event_streams_opened": emulator.requests["GET /v1/sessions/{id}/events/stream"],
            "deliveries_stored": len(webhook_deliveries),
            "deliveries_reconciled": len(reconciled),
            "duplicates_suppressed": duplicates,
            "handler_runs": states,
            "results_dir": str(settings.results_dir),
            "billing_model": billing["model"],
            "runtime_hours_billed": round(billing["total_container_seconds"] / 3600, 4),
            "token_usd_billed": round(float(billing.get("total_token_usd", 0.0)), 4),
            # The real saving under the documented model: a run nobody waited for, stopped.
            "runaway_runs_interrupted": len(interrupted),
            "runaway_runtime_avoided_hours": round(avoided_seconds / 3600, 4),
            "runaway_usd_avoided": round(avoided_usd, 4),
            # Idle sessions accrue no runtime: deleting them is clean-up, and saves $0.
            "idle_sessions_deleted_as_cleanup": len(deleted_ids),
            "usd_per_hour_saved_by_deleting_idle_sessions": round(delete_saving, 4),
        }
    )

    archived_cases = [i for i, c in enumerate(CASES) if c.archived]
    by_webhook = [i for i in archived_cases if not CASES[i].runaway]
    report.check(
        "every launch created exactly one session",
        report.numbers["session_creates_seen_by_api"] == len(CASES)
        and len(set(ids.values())) == len(CASES),
        f"{report.numbers['session_creates_seen_by_api']} creates for {len(CASES)} launches",
    )
    report.check(
        "no event stream was held open: webhooks did the waiting",
        report.numbers["event_streams_opened"] == 0,
    )
    report.check(
        "with no routes configured, every outcome was archived exactly once",
        all(
            report.sessions[i]["archived"] and report.sessions[i]["archive_runs"] == 1
            for i in by_webhook
        ),
        ", ".join(
            f"{report.sessions[i]['case']}={report.sessions[i]['archive_runs']}" for i in by_webhook
        ),
    )
    report.check(
        "duplicate webhooks were stored once and not processed again",
        duplicates > 0 and all(report.sessions[i]["archive_runs"] <= 1 for i in archived_cases),
        f"{duplicates} duplicate deliveries suppressed",
    )
    dropped = [ids[i] for i, c in enumerate(CASES) if c.webhooks_dropped]
    report.check(
        "the session whose webhooks were dropped was found by the reconciler",
        missed_before
        and all(any(d.session_id == sid for d in reconciled) for sid in dropped)
        and not any(
            d.session_id in dropped for d in webhook_deliveries if d.event_type in IDLE_TYPES
        ),
        f"{len(reconciled)} synthetic deliveries",
    )
    budgeted = [i for i, c in enumerate(CASES) if c.budget_usd is not None]
    report.check(
        "the budgeted launch carried its ceiling and the API stopped it there",
        all(
            emulator.store.sessions[ids[i]].body.get("budget") is not None
            and report.sessions[i]["stop_reason"] == "budget_reached"
            for i in budgeted
        ),
        f"{len(budgeted)} budgeted",
    )
    outcomes = [_outcome(settings, sid) for sid in runaway]
    report.check(
        "the runaway was interrupted past max_running and archived as interrupted by idlehook",
        interrupted == set(runaway)
        and all(
            o is not None
            and (o.get("outcome"), o.get("interrupted_by"), o.get("interrupt_reason"))
            == ("interrupted", "idlehook", "max_running")
            for o in outcomes
        ),
        f"max_running {MAX_RUNNING} of wall time",
    )
    report.check(
        "its billed runtime stopped: the ledger shows the runtime the interrupt avoided",
        avoided_seconds > 0 and all(not emulator.store.sessions[sid].task for sid in runaway),
        f"{avoided_seconds / 3600:.2f} h, ${avoided_usd:.4f} avoided",
    )
    waiting = [ids[i] for i, c in enumerate(CASES) if not c.archived]
    report.check(
        "the session waiting for approval was kept (its result is not saved)",
        all(sid not in deleted_ids for sid in waiting),
    )
    report.check(
        "every archived session was deleted and the API no longer has it",
        deleted_ids == {ids[i] for i in archived_cases}
        and await _all_gone(svc.client, deleted_ids),
        f"{len(deleted_ids)} deleted",
    )
    report.check(
        "no dead letters, nothing left pending",
        states.get(RunState.DEAD, 0) == 0 and _unfinished_runs(engine) == 0,
        f"runs by state: {states}",
    )
    report.check("the reaper reported no failures", bool(reap.ok))
    report.check(
        "deleting idle sessions saved $0 (billing model running); the interrupt saved its rate",
        billing["model"] == "running"
        and delete_saving == 0.0
        and abs(reap.saving_usd_per_hour - len(interrupted) * rate) < 1e-9,
        f"{len(interrupted)} x ${rate}/h stopped",
    )


def _outcome(settings: Settings, session_id: str) -> dict[str, Any] | None:
    path = settings.results_dir / session_id / "result.json"
    if not path.exists():
        return None
    loaded: dict[str, Any] = json.loads(path.read_text())
    return loaded


async def _all_gone(client: AsyncAnthropic, session_ids: set[str]) -> bool:
    import anthropic

    for sid in session_ids:
        try:
            await client.beta.sessions.retrieve(sid)
        except anthropic.NotFoundError:
            continue
        return False
    return True


def render(report: DemoReport, console: Console) -> None:
    table = Table(title="Sessions")
    for column in ("session", "case", "status", "outcome", "archived", "deleted"):
        table.add_column(column)
    for row in report.sessions:
        table.add_row(
            row["session_id"],
            row["case"],
            str(row["status"]),
            str(row["outcome"] or row["stop_reason"] or ""),
            "yes" if row["archived"] else "no",
            "yes" if row["deleted"] else "no",
        )
    console.print(table)
    numbers = Table(title="Summary", show_header=False)
    numbers.add_column("what")
    numbers.add_column("value", justify="right")
    for key, value in report.numbers.items():
        numbers.add_row(key.replace("_", " "), str(value))
    console.print(numbers)
    for check in report.checks:
        mark = "[green]✓[/green]" if check.ok else "[red]✗[/red]"
        console.print(
            f"{mark} {check.name}" + (f"  [dim]({check.detail})[/dim]" if check.detail else "")
        )
    console.print(
        "[bold green]demo passed[/bold green]" if report.ok else "[bold red]demo FAILED[/bold red]"
    )
