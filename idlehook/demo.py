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
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import anthropic
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
from handlers.config import WorkerSettings
from handlers.durations import parse_duration
from handlers.events import IDLE_TYPES, STATUS_IDLED, STATUS_TYPES
from idlehook import wiring
from idlehook.settings import ReaperSettings, ReconcileSettings, Settings
from sessions.launcher import LaunchRequest
from store import delivered, reaper_actions
from store.intake_counts import intake_counts
from store.models import ReaperAction, ReaperActionKind, RunState, Source, TrackedSession
from store.runs import RunStore
from store.sessions import SessionStore

WEBHOOK_PATH = "/webhooks/anthropic"
STREAM_REQUEST = "GET /v1/sessions/{id}/events/stream"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)  # "ever", for the store's "deliveries since"


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

    @property
    def rests_archived(self) -> bool:
        """Archived by the default routes once it rests (the runaway is checked as stopped)."""
        return self.archived and not self.runaway

    @property
    def budgeted(self) -> bool:
        return self.budget_usd is not None

    @property
    def waiting(self) -> bool:
        """Left waiting for a person: nothing saves it, so nothing may delete it."""
        return not self.archived


CaseKind = Literal[
    "archived", "rests_archived", "webhooks_dropped", "budgeted", "runaway", "waiting"
]


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


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    detail: str = ""


@dataclass
class DemoReport:
    sessions: list[dict[str, Any]] = field(default_factory=list)
    numbers: dict[str, Any] = field(default_factory=dict)
    checks: list[CheckResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

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
    await reaper.run()
    # The interrupted run's own idle webhook may still be in its handlers: a second pass (the
    # next cron run) deletes it once they are done.
    await _until(lambda: _unfinished_runs(engine) == 0, 20, "the handler runs to drain")
    await reaper.run()
    report.numbers["elapsed_seconds"] = round(time.monotonic() - started, 2)
    observed = Observed(
        engine=engine,
        settings=settings,
        emulator=emulator,
        ids=ids,
        missed_before_sweep=missed_before,
        gone_from_api=await _gone_from_api(client, list(ids.values())),
    )
    report.sessions = [_session_row(observed, i) for i in range(len(CASES))]
    report.numbers.update(_numbers(observed))
    report.checks = [check.run(observed) for check in SPECIFICATION]


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
        e["data"]["id"] == session_id and e["data"]["type"] == STATUS_IDLED
        for e in emulator.sender.emitted
    )


def _settled(engine: Engine, settings: Settings, case: Case, session_id: str) -> bool:
    if case.archived:
        return (settings.results_dir / session_id / "result.json").exists()
    row = SessionStore(engine).get(session_id)
    return row is not None and row.stop_reason == "requires_action"


def _unfinished_runs(engine: Engine) -> int:
    return RunStore(engine).unfinished()


async def _gone_from_api(client: AsyncAnthropic, session_ids: list[str]) -> frozenset[str]:
    gone = set()
    for sid in session_ids:
        try:
            await client.beta.sessions.retrieve(sid)
        except anthropic.NotFoundError:
            gone.add(sid)
    return frozenset(gone)


# -- what the run left, as the checks read it ------------------------------------------------


@dataclass(frozen=True)
class Observed:
    """Where the checks look: the store through its own read functions (sessions, runs,
    deliveries, the reaper's audit), the results folder, and the emulator (the API's side: its
    creates, streams and billing ledger). Nothing here is a query of the demo's own."""

    engine: Engine
    settings: Settings
    emulator: Emulator
    ids: dict[int, str]  # case index -> session id
    # Seen during the run: the dropped session was not settled before the reconciler swept.
    missed_before_sweep: bool
    # The launched sessions the API answered 404 for, once everything was done.
    gone_from_api: frozenset[str]

    def of(self, kind: CaseKind) -> list[str]:
        """The session ids of the cases of one kind (a flag or property of `Case`)."""
        return [self.ids[i] for i, case in enumerate(CASES) if getattr(case, kind)]

    def tracked(self, session_id: str) -> TrackedSession | None:
        return SessionStore(self.engine).get(session_id)

    def archive_runs(self, session_id: str) -> int:
        """Archive runs that succeeded in the session's lane."""
        runs = RunStore(self.engine).runs_in_lane(session_id)
        return sum(1 for r in runs if r.handler == "archive" and r.state == RunState.SUCCEEDED)

    def runs_by_state(self) -> dict[str, int]:
        return RunStore(self.engine).status().runs_by_state

    def archived(self, session_id: str) -> bool:
        return (self.settings.results_dir / session_id / "events.jsonl").exists()

    def result(self, session_id: str) -> dict[str, Any] | None:
        path = self.settings.results_dir / session_id / "result.json"
        if not path.exists():
            return None
        loaded: dict[str, Any] = json.loads(path.read_text())
        return loaded

    def status_deliveries(self, source: Source) -> list[delivered.SeenDelivery]:
        """The launched sessions' status deliveries from `source` (webhook or reconcile)."""
        found = delivered.deliveries_since(
            self.engine, list(self.ids.values()), STATUS_TYPES, EPOCH
        )
        return [d for seen in found.values() for d in seen if d.source == source]

    def idle_webhooks(self, session_id: str) -> list[delivered.SeenDelivery]:
        found = delivered.deliveries_since(self.engine, [session_id], IDLE_TYPES, EPOCH)
        return [d for d in found.get(session_id, []) if d.source == Source.WEBHOOK]

    def reaped(self, kind: ReaperActionKind) -> set[str]:
        """Sessions the reaper acted on (not in a dry run), from its audit trail."""
        return {a.session_id for a in self._actions() if a.action == kind}

    def saving_per_hour(self, kind: ReaperActionKind) -> float:
        return sum(a.est_saving_usd_per_hour for a in self._actions() if a.action == kind)

    def reaper_failures(self) -> list[ReaperAction]:
        failed = (ReaperActionKind.FAILED, ReaperActionKind.REFUSED)
        return [a for a in self._actions() if a.action in failed]

    def _actions(self) -> list[ReaperAction]:
        return [a for a in reaper_actions.read(self.engine) if not a.dry_run]

    def ledger(self) -> dict[str, Any]:
        return billing_report(self.emulator)

    def meter(self, session_id: str) -> dict[str, Any]:
        return next(m for m in self.ledger()["sessions"] if m["session_id"] == session_id)

    def avoided_seconds(self) -> float:
        return sum(float(self.meter(sid)["avoided_running_seconds"]) for sid in self.of("runaway"))

    def avoided_usd(self) -> float:
        return sum(
            float(self.meter(sid)["avoided_runtime_usd"])
            + float(self.meter(sid)["avoided_token_usd"])
            for sid in self.of("runaway")
        )


# -- the specification -----------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    """One fact the run must establish: `holds` decides it, `detail` says what was seen."""

    name: str
    holds: Callable[[Observed], bool]
    detail: Callable[[Observed], str] = lambda _: ""

    def run(self, observed: Observed) -> CheckResult:
        try:
            return CheckResult(self.name, bool(self.holds(observed)), self.detail(observed))
        except Exception as exc:  # a check that cannot read what it needs has not held
            return CheckResult(self.name, False, f"{type(exc).__name__}: {exc}")


def _interrupted_as_idlehook(o: Observed, session_id: str) -> bool:
    result = o.result(session_id) or {}
    fields = (result.get("outcome"), result.get("interrupted_by"), result.get("interrupt_reason"))
    return fields == ("interrupted", "idlehook", "max_running")


SPECIFICATION: tuple[Check, ...] = (
    Check(
        "every launch created exactly one session",
        lambda o: o.emulator.creates["sessions"] == len(CASES) == len(set(o.ids.values())),
        lambda o: f"{o.emulator.creates['sessions']} creates for {len(CASES)} launches",
    ),
    Check(
        "no event stream was held open: webhooks did the waiting",
        lambda o: o.emulator.requests[STREAM_REQUEST] == 0,
    ),
    Check(
        "with no routes configured, every outcome was archived exactly once",
        lambda o: all(o.archived(s) and o.archive_runs(s) == 1 for s in o.of("rests_archived")),
        lambda o: ", ".join(
            f"{CASES[i].label}={o.archive_runs(o.ids[i])}"
            for i, case in enumerate(CASES)
            if case.rests_archived
        ),
    ),
    Check(
        "duplicate webhooks were stored once and not processed again",
        lambda o: (
            intake_counts(o.engine).duplicates > 0
            and all(o.archive_runs(s) <= 1 for s in o.of("archived"))
        ),
        lambda o: f"{intake_counts(o.engine).duplicates} duplicate deliveries suppressed",
    ),
    Check(
        "the session whose webhooks were dropped was found by the reconciler",
        lambda o: (
            o.missed_before_sweep
            and all(
                delivered.has_reconciled_delivery(o.engine, s) for s in o.of("webhooks_dropped")
            )
            and not any(o.idle_webhooks(s) for s in o.of("webhooks_dropped"))
        ),
        lambda o: f"{len(o.status_deliveries(Source.RECONCILE))} synthetic deliveries",
    ),
    Check(
        "the budgeted launch carried its ceiling and the API stopped it there",
        lambda o: all(
            o.emulator.store.sessions[s].body.get("budget") is not None
            and getattr(o.tracked(s), "stop_reason", None) == "budget_reached"
            for s in o.of("budgeted")
        ),
        lambda o: f"{len(o.of('budgeted'))} budgeted",
    ),
    Check(
        "the runaway was interrupted past max_running and archived as interrupted by idlehook",
        lambda o: (
            o.reaped(ReaperActionKind.INTERRUPTED) == set(o.of("runaway"))
            and all(_interrupted_as_idlehook(o, s) for s in o.of("runaway"))
        ),
        lambda o: f"max_running {MAX_RUNNING} of wall time",
    ),
    Check(
        "its billed runtime stopped: the ledger shows the runtime the interrupt avoided",
        lambda o: (
            o.avoided_seconds() > 0
            and all(not o.emulator.store.sessions[s].task for s in o.of("runaway"))
        ),
        lambda o: f"{o.avoided_seconds() / 3600:.2f} h, ${o.avoided_usd():.4f} avoided",
    ),
    Check(
        "the session waiting for approval was kept (its result is not saved)",
        lambda o: not o.reaped(ReaperActionKind.DELETED) & set(o.of("waiting")),
    ),
    Check(
        "every archived session was deleted and the API no longer has it",
        lambda o: (
            o.reaped(ReaperActionKind.DELETED) == set(o.of("archived"))
            and o.reaped(ReaperActionKind.DELETED) <= o.gone_from_api
        ),
        lambda o: f"{len(o.reaped(ReaperActionKind.DELETED))} deleted",
    ),
    Check(
        "no dead letters, nothing left pending",
        lambda o: (
            o.runs_by_state().get(RunState.DEAD, 0) == 0 and RunStore(o.engine).unfinished() == 0
        ),
        lambda o: f"runs by state: {o.runs_by_state()}",
    ),
    Check("the reaper reported no failures", lambda o: not o.reaper_failures()),
    Check(
        "deleting idle sessions saved $0 (billing model running); the interrupt saved its rate",
        lambda o: (
            o.ledger()["model"] == "running"
            and o.saving_per_hour(ReaperActionKind.DELETED) == 0.0
            and abs(
                o.saving_per_hour(ReaperActionKind.INTERRUPTED)
                - len(o.reaped(ReaperActionKind.INTERRUPTED)) * _rate(o)
            )
            < 1e-9
        ),
        lambda o: f"{len(o.reaped(ReaperActionKind.INTERRUPTED))} x ${_rate(o)}/h stopped",
    ),
)


def _rate(o: Observed) -> float:
    return float(o.ledger()["rate_usd_per_container_hour"])


def _session_row(o: Observed, index: int) -> dict[str, Any]:
    sid = o.ids[index]
    row = o.tracked(sid)
    return {
        "session_id": sid,
        "case": CASES[index].label,
        "status": row.status if row else None,
        "stop_reason": row.stop_reason if row else None,
        "archived": o.archived(sid),
        "outcome": (o.result(sid) or {}).get("outcome"),
        "archive_runs": o.archive_runs(sid),
        "deleted": sid in o.reaped(ReaperActionKind.DELETED),
    }


def _numbers(o: Observed) -> dict[str, Any]:
    ledger = o.ledger()
    return {
        "sessions_launched": len(o.ids),
        "session_creates_seen_by_api": o.emulator.creates["sessions"],
        "event_streams_opened": o.emulator.requests[STREAM_REQUEST],
        "deliveries_stored": len(o.status_deliveries(Source.WEBHOOK)),
        "deliveries_reconciled": len(o.status_deliveries(Source.RECONCILE)),
        "duplicates_suppressed": intake_counts(o.engine).duplicates,
        "handler_runs": o.runs_by_state(),
        "results_dir": str(o.settings.results_dir),
        "billing_model": ledger["model"],
        "runtime_hours_billed": round(ledger["total_container_seconds"] / 3600, 4),
        "token_usd_billed": round(float(ledger.get("total_token_usd", 0.0)), 4),
        # The real saving under the documented model: a run nobody waited for, stopped.
        "runaway_runs_interrupted": len(o.reaped(ReaperActionKind.INTERRUPTED)),
        "runaway_runtime_avoided_hours": round(o.avoided_seconds() / 3600, 4),
        "runaway_usd_avoided": round(o.avoided_usd(), 4),
        # Idle sessions accrue no runtime: deleting them is clean-up, and saves $0.
        "idle_sessions_deleted_as_cleanup": len(o.reaped(ReaperActionKind.DELETED)),
        "usd_per_hour_saved_by_deleting_idle_sessions": round(
            o.saving_per_hour(ReaperActionKind.DELETED), 4
        ),
    }


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
    console.print("[bold]What the run must establish[/bold]")
    for check in report.checks:
        mark = "[green]✓[/green]" if check.ok else "[red]✗[/red]"
        console.print(
            f"{mark} {check.name}" + (f"  [dim]({check.detail})[/dim]" if check.detail else "")
        )
    console.print(
        "[bold green]demo passed[/bold green]" if report.ok else "[bold red]demo FAILED[/bold red]"
    )
