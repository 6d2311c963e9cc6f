"""`idlehook worker`, `idlehook replay`, `idlehook status`: the run queue from a shell.

idlehook worker [--drain] [--sweeps]   claim and run handler runs until SIGTERM/SIGINT; with
                                      --sweeps also the launch queue and the sweeps (what
                                      `idlehook serve` runs as its worker process)
idlehook replay [--id N]... [--handler NAME] [--session ID]   re-run dead letters
idlehook status [--json] [--dead N]   queue depth, runs by state, dead letters, sessions,
                                      deliveries stored, the local journal
"""

import argparse
import asyncio
import json
import signal
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import structlog
from rich.console import Console
from rich.table import Table
from sqlalchemy.engine import Engine

from idlehook import supervise, wiring
from idlehook.settings import Settings
from store import approvals
from store.intake_counts import IntakeCounts, intake_counts
from store.journal import JournalStats, scan_directory, store_key
from store.models import utcnow
from store.runs import QueueStatus, RunStore
from store.sessions import unsaved_outcomes
from store.watch import EndpointRecord, endpoint_record

log = structlog.get_logger(__name__)


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
    worker.set_defaults(func=run_worker)

    replay = subparsers.add_parser("replay", help="re-run dead-lettered handler runs")
    replay.add_argument("--id", dest="ids", type=int, action="append", default=[], metavar="N")
    replay.add_argument("--handler", default=None, metavar="NAME")
    replay.add_argument("--session", default=None, metavar="ID")
    replay.set_defaults(func=run_replay)

    status = subparsers.add_parser("status", help="queue depth, runs by state, dead letters")
    status.add_argument("--json", action="store_true", help="print the same as JSON")
    status.add_argument("--dead", type=int, default=10, metavar="N", help="latest N dead letters")
    status.set_defaults(func=run_status)


# -- commands --------------------------------------------------------------------------------


def run_worker(args: argparse.Namespace) -> int:
    settings = wiring.settings_from_args(args)
    if args.concurrency is not None:
        worker_settings = settings.worker.model_copy(update={"concurrency": args.concurrency})
        settings = settings.model_copy(update={"worker": worker_settings})
    if args.sweeps and args.drain:
        raise wiring.ConfigError("--sweeps runs until stopped; it cannot be combined with --drain")
    engine = wiring.open_engine(settings)
    try:
        asyncio.run(_work(settings, engine, args))
    finally:
        engine.dispose()
    return 0


async def _work(settings: Settings, engine: Engine, args: argparse.Namespace) -> None:
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
    loop: asyncio.AbstractEventLoop, fd: int, stop: Callable[[], None], wake: Callable[[], None]
) -> None:
    """`serve`'s worker process: claim when serve says new work is stored; once serve is gone
    (even SIGKILLed), stop, and exit after a short grace whatever is still in flight."""

    def gone() -> None:
        log.warning("worker.parent_gone", grace_seconds=supervise.ORPHAN_GRACE_SECONDS)
        supervise.exit_after(supervise.ORPHAN_GRACE_SECONDS)
        loop.call_soon_threadsafe(stop)

    supervise.watch_parent(fd, on_wake=wake, on_gone=gone)


def run_replay(args: argparse.Namespace) -> int:
    settings = wiring.settings_from_args(args)
    engine = wiring.open_engine(settings)
    try:
        ids = RunStore(engine).replay(
            utcnow(), ids=args.ids, handler=args.handler, session_id=args.session
        )
    finally:
        engine.dispose()
    Console().print(
        f"replayed {len(ids)} run(s)" + (f": {', '.join(map(str, ids))}" if ids else "")
    )
    return 0


def status_dict(status: QueueStatus) -> dict[str, Any]:
    return json.loads(json.dumps(asdict(status), default=str))  # type: ignore[no-any-return]


def run_status(args: argparse.Namespace) -> int:
    settings = wiring.settings_from_args(args)
    # From files, first: while the store is down the journal is what there is to show.
    journal = scan_directory(settings.journal_dir(), store_key(settings.database_url))
    try:
        engine = wiring.open_engine(settings)
    except sa.exc.SQLAlchemyError as exc:
        return _store_down(args.json, settings.journal_dir(), journal, exc)
    try:
        intake = intake_counts(engine)
        status = RunStore(engine).status(dead_limit=args.dead)
        waiting = sum(approvals.count_pending_by_session(engine).values())
        unsaved, unsaved_ids = unsaved_outcomes(engine)
        endpoint = endpoint_record(engine)
    finally:
        engine.dispose()
    if args.json:
        body = status_dict(status) | {
            "pending_approvals": waiting,
            "unsaved_outcomes": {"count": unsaved, "session_ids": unsaved_ids},
            "deliveries": intake.as_dict(),
            "journal": journal_dict(settings.journal_dir(), journal),
            "webhook_endpoint": endpoint.as_dict() if endpoint is not None else None,
        }
        print(json.dumps(body, indent=2, sort_keys=True))
        return 0
    console = Console()
    render_endpoint(endpoint, console)
    render_intake(intake, journal, console)
    render_status(status, console, pending_approvals=waiting, unsaved=(unsaved, unsaved_ids))
    return 0


def journal_dict(path: Path, journal: JournalStats) -> dict[str, Any]:
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


def render_intake(intake: IntakeCounts | None, journal: JournalStats, console: Console) -> None:
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
    age = f", oldest {oldest:.0f}s ago" if oldest is not None else ""
    left = f", {journal.orphaned} file(s) left by a stopped receiver" if journal.orphaned else ""
    console.print(
        f"[yellow]Local journal:[/yellow] {journal.depth} deliveries acknowledged but not yet in "
        f"the store{age}{left}; a running receiver moves them in once the store takes writes",
        highlight=False,
    )


def _store_down(as_json: bool, path: Path, journal: JournalStats, exc: Exception) -> int:
    reason = type(getattr(exc, "orig", None) or exc).__name__
    if as_json:
        body = {"store": {"error": reason}, "journal": journal_dict(path, journal)}
        print(json.dumps(body, indent=2, sort_keys=True))
    else:
        console = Console()
        console.print(f"[red]Store unavailable:[/red] {reason}", highlight=False)
        render_intake(None, journal, console)
    return 3


def render_endpoint(endpoint: EndpointRecord | None, console: Console) -> None:
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
    status: QueueStatus,
    console: Console,
    pending_approvals: int = 0,
    unsaved: tuple[int, list[str]] = (0, []),
) -> None:
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
    runs = Table("state", "runs", title="Runs by state")
    for state, count in sorted(status.runs_by_state.items()):
        runs.add_row(state, str(count))
    console.print(runs)
    sessions = Table("status", "sessions", title="Tracked sessions by status")
    for state, count in sorted(status.sessions_by_status.items()):
        sessions.add_row(state, str(count))
    console.print(sessions)
    dead = Table("id", "handler", "lane", "event", "attempts", "finished", "error", title="Dead")
    for letter in status.dead_letters:
        dead.add_row(
            str(letter.id),
            letter.handler,
            letter.lane,
            f"{letter.event_type} {letter.event_id}",
            str(letter.attempts),
            letter.finished_at.isoformat(timespec="seconds") if letter.finished_at else "",
            (letter.last_error or "")[:120],
        )
    console.print(dead)
