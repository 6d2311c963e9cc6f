"""`idlehook worker`, `idlehook status`: the run queue from a shell (`replay`: cli/recovery.py).

idlehook worker [--drain] [--sweeps]   claim and run handler runs until SIGTERM/SIGINT; with
                                      --sweeps also the launch queue and the sweeps (what
                                      `idlehook serve` runs as its worker process)
idlehook status [--json] [--dead N]   the last webhook's age, rejected requests by reason, the
                                      silence alarm, queue depth, handler runs by state (routing
                                      steps apart, as on the page), dead letters, sessions,
                                      deliveries stored, the local journal; no SDK is imported
"""

import argparse
import json
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import asyncio

    from rich.console import Console
    from sqlalchemy.engine import Engine

    from idlehook.settings import Settings
    from store.intake_counts import IntakeCounts, Liveness
    from store.journal import JournalStats
    from store.rejections import RejectionCount
    from store.runs import QueueStatus
    from store.watch import EndpointRecord


def register(subparsers: Any) -> None:
    worker = subparsers.add_parser("worker", help="run handler plugins for stored notifications")
    worker.add_argument(
        "--drain", action="store_true", help="exit once nothing is claimable (batch mode)"
    )
    worker.add_argument("--concurrency", type=int, default=None, help="runs at once (default 8)")
    worker.add_argument(
        "--sweeps",
        action="store_true",
        help="also drain the launch queue and run the watchdog, reconciler, approvals sweep and "
        "scheduled reaper (as `serve`'s worker process does)",
    )
    # Given by `idlehook serve` to the worker process it supervises (idlehook/supervise.py).
    worker.add_argument("--parent-fd", type=int, default=None, help=argparse.SUPPRESS)
    # A server's log is its record: info lines unless asked otherwise (-q, --log-level).
    worker.set_defaults(func=run_worker, default_log_level="INFO")

    status = subparsers.add_parser(
        "status",
        help="webhooks (the last one, rejections, silence alarm), queue depth, runs, dead letters",
    )
    status.add_argument("--json", action="store_true", help="print the same as JSON")
    status.add_argument("--dead", type=int, default=10, metavar="N", help="latest N dead letters")
    status.set_defaults(func=run_status)


# -- commands --------------------------------------------------------------------------------


def run_worker(args: argparse.Namespace) -> int:
    import asyncio

    from idlehook import tracing, wiring

    settings = wiring.settings_from_args(args)
    if args.concurrency is not None:
        worker_settings = settings.worker.model_copy(update={"concurrency": args.concurrency})
        settings = settings.model_copy(update={"worker": worker_settings})
    if args.sweeps and args.drain:
        raise wiring.ConfigError("--sweeps runs until stopped; it cannot be combined with --drain")
    engine = wiring.open_engine(settings)
    # `[tracing]`: each process its own provider (serve's receiver has one of its own).
    tracing.configure(settings, role="worker")
    try:
        asyncio.run(_work(settings, engine, args))
    finally:
        engine.dispose()
        tracing.shutdown()  # the last spans out
    return 0


async def _work(settings: "Settings", engine: "Engine", args: argparse.Namespace) -> None:
    import asyncio
    import signal

    from idlehook import wiring

    async with wiring.api_client(settings, engine) as client:
        if args.sweeps:
            work = wiring.background(settings, engine, client)
            stop, wake, run = work.stop, work.worker.wake, work.run()
        else:
            worker = wiring.worker(settings, engine, client)
            stop, wake, run = worker.stop, worker.wake, worker.run(drain=args.drain)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            # Graceful: stop claiming, let in-flight runs finish (their leases cover a crash).
            loop.add_signal_handler(sig, stop)
        if args.parent_fd is not None:
            _follow_parent(loop, args.parent_fd, stop, wake)
        try:
            await run
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)


def _follow_parent(
    loop: "asyncio.AbstractEventLoop", fd: int, stop: Callable[[], None], wake: Callable[[], None]
) -> None:
    """`serve`'s worker process: claim when serve says new work is stored; once serve is gone
    (even SIGKILLed), stop, and exit after a short grace whatever is still in flight."""
    import structlog

    from idlehook import supervise

    log = structlog.get_logger(__name__)

    def gone() -> None:
        log.warning("worker.parent_gone", grace_seconds=supervise.ORPHAN_GRACE_SECONDS)
        supervise.exit_after(supervise.ORPHAN_GRACE_SECONDS)
        loop.call_soon_threadsafe(stop)

    supervise.watch_parent(fd, on_wake=wake, on_gone=gone)


def status_dict(status: "QueueStatus") -> dict[str, Any]:
    from dataclasses import asdict

    return json.loads(json.dumps(asdict(status), default=str))  # type: ignore[no-any-return]


def run_status(args: argparse.Namespace) -> int:
    # No SDK here (idlehook.loading, not wiring): status answers in a fraction of a second.
    import sqlalchemy as sa

    from idlehook.loading import open_engine, settings_from_args
    from store import approvals, rejections
    from store.intake_counts import intake_counts, liveness, routing_by_state
    from store.journal import scan_directory, store_key
    from store.models import utcnow
    from store.runs import RunStore
    from store.sessions import unsaved_outcomes
    from store.watch import endpoint_record

    settings = settings_from_args(args)
    # From files, first: while the store is down the journal is what there is to show.
    journal = scan_directory(settings.journal_dir(), store_key(settings.database_url))
    try:
        engine = open_engine(settings)
    except sa.exc.SQLAlchemyError as exc:
        return _store_down(args.json, settings.database_url, settings.journal_dir(), journal, exc)
    now = utcnow()
    try:
        intake = intake_counts(engine)
        status = RunStore(engine).status(dead_limit=args.dead)
        routing = routing_by_state(engine)
        waiting = sum(approvals.count_pending_by_session(engine).values())
        unsaved, unsaved_ids = unsaved_outcomes(engine)
        endpoint = endpoint_record(engine)
        alive = liveness(engine)
        refused = rejections.summary(engine, now)
    finally:
        engine.dispose()
    alarm_after = timedelta(seconds=settings.reconcile.silence_alarm_seconds)
    if args.json:
        body = status_dict(status) | {
            "routing_by_state": routing,
            "pending_approvals": waiting,
            "unsaved_outcomes": {"count": unsaved, "session_ids": unsaved_ids},
            "deliveries": intake.as_dict(),
            "journal": journal_dict(settings.journal_dir(), journal),
            "webhook_endpoint": endpoint.as_dict() if endpoint is not None else None,
            "webhooks": liveness_dict(alive, now, alarm_after),
            "rejections": rejections_dict(refused),
        }
        print(json.dumps(body, indent=2, sort_keys=True))
        return 0
    from idlehook.cli import tables

    console = tables.console()
    render_endpoint(endpoint, console)
    render_liveness(alive, now, alarm_after, console)
    render_rejections(refused, console)
    render_intake(intake, journal, console)
    render_status(
        status, console, pending_approvals=waiting, unsaved=(unsaved, unsaved_ids), routing=routing
    )
    return 0


def liveness_dict(alive: "Liveness", now: datetime, alarm_after: timedelta) -> dict[str, Any]:
    last, since = alive.last_webhook_at, alive.unreported_since
    return {
        "last_received_at": last.isoformat() if last else None,
        "last_received_seconds_ago": round((now - last).total_seconds(), 1) if last else None,
        "silence_alarm": alive.alarm(now, alarm_after),
        "silence_alarm_seconds": alarm_after.total_seconds(),
        # As of the reconciler's last sweep: a status change no webhook reported since.
        "unreported_change_since": since.isoformat() if since else None,
    }


def rejections_dict(refused: "list[RejectionCount]") -> dict[str, Any]:
    return {
        "last_hour": sum(r.last_hour for r in refused),
        "total": sum(r.total for r in refused),
        "by_reason": [r.as_dict() for r in refused],
    }


def age(seconds: float) -> str:
    """A short, rounded age: 42s, 5m 3s, 2h 4m, 3d 2h."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60}s"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60}m"
    return f"{s // 86400}d {s % 86400 // 3600}h"


def render_liveness(
    alive: "Liveness", now: datetime, alarm_after: timedelta, console: "Console"
) -> None:
    """The last webhook's age, and the reconciler's silence alarm (red when on)."""
    last = alive.last_webhook_at
    when = (
        f"{age((now - last).total_seconds())} ago ({last.isoformat(timespec='seconds')})"
        if last
        else "never"
    )
    console.print(f"[bold]Last webhook received:[/bold] {when}", highlight=False)
    since = alive.unreported_since
    if alive.alarm(now, alarm_after):
        assert since is not None
        console.print(
            f"[red]Silence alarm: ON[/red]: sessions changed status since "
            f"{since.isoformat(timespec='seconds')} ({age((now - since).total_seconds())} ago) "
            "and no webhook came: is the endpoint disabled, or its URL or key wrong?",
            highlight=False,
        )
    elif since is not None and (last is None or last < since):
        console.print(
            f"[yellow]Silence alarm: watching[/yellow]: a change at "
            f"{since.isoformat(timespec='seconds')} no webhook reported yet (alarm after "
            f"{age(alarm_after.total_seconds())})",
            highlight=False,
        )
    else:
        console.print("[bold]Silence alarm:[/bold] off", highlight=False)


def render_rejections(refused: "list[RejectionCount]", console: "Console") -> None:
    """Requests the webhook path refused, by status and reason: a wrong key shows as 401s."""
    if not refused:
        console.print("[bold]Rejected webhook requests:[/bold] none")
        return
    from idlehook.cli import tables

    hour = sum(r.last_hour for r in refused)
    style = "red" if any(r.status == 401 and r.last_hour for r in refused) else "bold"
    console.print(
        f"[{style}]Rejected webhook requests:[/{style}] {hour} in the last hour, "
        f"{sum(r.total for r in refused)} in all",
        highlight=False,
    )
    t = tables.table("status", "reason", "last hour", "total")
    for r in refused:
        t.add_row(str(r.status), r.reason, str(r.last_hour), str(r.total))
    tables.print_table(t, console)
    if any(r.status == 401 for r in refused):
        console.print(
            "  401: signed with a key this receiver does not hold: compare `idlehook keys list` "
            "with the endpoint's secret in the Console",
            highlight=False,
        )


def journal_dict(path: Path, journal: "JournalStats") -> dict[str, Any]:
    oldest = journal.oldest_seconds(time.time())
    return {
        "path": str(path),
        "depth": journal.depth,
        "oldest_seconds": None if oldest is None else round(oldest, 1),
        "bytes": journal.bytes,
        "files": journal.files,
        "orphaned_files": journal.orphaned,
        "other_databases_files": journal.other_stores,
    }


def render_intake(
    intake: "IntakeCounts | None", journal: "JournalStats", console: "Console"
) -> None:
    """Deliveries stored and duplicates suppressed, and what waits in the local journal."""
    if intake is not None:
        console.print(
            f"[bold]Deliveries stored:[/bold] {intake.stored} (duplicates suppressed: "
            f"{intake.duplicates}); unrecognised bodies kept: {intake.unrecognised}",
            highlight=False,
        )
    if not journal.depth:
        console.print("[bold]Local journal:[/bold] empty")
        return
    oldest = journal.oldest_seconds(time.time())
    ago = f", oldest {oldest:.0f}s ago" if oldest is not None else ""
    left = f", {journal.orphaned} file(s) left by a stopped receiver" if journal.orphaned else ""
    console.print(
        f"[yellow]Local journal:[/yellow] {journal.depth} deliveries acknowledged but not yet in "
        f"the store{ago}{left}; a running receiver moves them in once the store takes writes",
        highlight=False,
    )


def _store_down(
    as_json: bool, url: str, path: Path, journal: "JournalStats", exc: Exception
) -> int:
    import sys

    from idlehook.cli import tables
    from idlehook.errors import database_error, masked_url

    reason = type(getattr(exc, "orig", None) or exc).__name__
    line = database_error(exc, lambda: url) or f"cannot open database {masked_url(url)}: {reason}"
    print(f"error: {line}", file=sys.stderr)
    if as_json:
        body = {
            "store": {"error": reason},
            "database": masked_url(url),
            "journal": journal_dict(path, journal),
        }
        print(json.dumps(body, indent=2, sort_keys=True))
    else:
        console = tables.console()
        console.print(f"[red]Store unavailable:[/red] {reason}", highlight=False)
        render_intake(None, journal, console)
    return 3


def render_endpoint(endpoint: "EndpointRecord | None", console: "Console") -> None:
    """The webhook endpoint's state as the reconciler last read it; red while disabled."""
    if endpoint is None:
        console.print(
            "[bold]Webhook endpoint:[/bold] not read (set ANTHROPIC_ADMIN_KEY and "
            "\\[reconcile] endpoint_url or endpoint_id)"
        )
        return
    checked = endpoint.checked_at.isoformat(timespec="seconds")
    if endpoint.state == "disabled":
        console.print(
            f"[red]Webhook endpoint: DISABLED[/red] ({endpoint.reason or 'by a person'}) since "
            f"{endpoint.since.isoformat(timespec='seconds')}, read {checked}: Anthropic sends it "
            "nothing and resends nothing; re-enable it in the Console (Manage > Webhooks)",
            highlight=False,
        )
        return
    detail = f" ({endpoint.reason})" if endpoint.reason else ""
    console.print(
        f"[bold]Webhook endpoint:[/bold] {endpoint.state}{detail}, read {checked}", highlight=False
    )


def render_status(
    status: "QueueStatus",
    console: "Console",
    pending_approvals: int = 0,
    unsaved: tuple[int, list[str]] = (0, []),
    routing: dict[str, int] | None = None,
) -> None:
    from idlehook.cli import tables

    console.print(f"[bold]Unfinished runs (inbox depth):[/bold] {status.unfinished}")
    console.print(f"[bold]Approvals waiting for a person:[/bold] {pending_approvals}")
    count, ids = unsaved
    style = "red" if count else "bold"
    console.print(
        f"[{style}]Ended sessions no route saved:[/{style}] {count}"
        + (": add a [[routes]] rule for them, or let the reaper archive them" if count else "")
    )
    for session_id in ids:
        console.print(f"  {session_id}", highlight=False)
    if status.runs_by_state:
        runs = tables.table("state", "runs", title="Handler runs by state")
        for state, n in sorted(status.runs_by_state.items()):
            runs.add_row(state, str(n))
        tables.print_table(runs, console)
    else:
        console.print("[bold]Handler runs:[/bold] none")
    if routing:
        shown = ", ".join(f"{n} {state}" for state, n in sorted(routing.items()))
        console.print(f"[bold]Routing steps (one per delivery):[/bold] {shown}", highlight=False)
    if status.sessions_by_status:
        sessions = tables.table("status", "sessions", title="Tracked sessions by status")
        for state, n in sorted(status.sessions_by_status.items()):
            sessions.add_row(state, str(n))
        tables.print_table(sessions, console)
    else:
        console.print("[bold]Tracked sessions:[/bold] none")
    if not status.dead_letters:
        console.print("[bold]Dead letters:[/bold] none")
        return
    # A block per dead letter, not a table: a session id and an event id (45 characters each)
    # do not fit side by side on a small terminal, and neither may be cut; nor may the error.
    console.print(
        f"[bold]Dead letters[/bold] (latest {len(status.dead_letters)}; `idlehook replay --id N`):"
    )
    for letter in status.dead_letters:
        finished = letter.finished_at.isoformat(timespec="seconds") if letter.finished_at else "-"
        console.print(
            f"  {letter.id}  {letter.handler}  attempts {letter.attempts}  finished {finished}",
            highlight=False,
        )
        console.print(f"     session {letter.lane}", highlight=False)
        console.print(f"     event   {letter.event_type} {letter.event_id}", highlight=False)
        console.print(f"     error   {letter.last_error or '-'}", highlight=False, markup=False)
