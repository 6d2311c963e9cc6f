"""`idlehook worker`, `idlehook replay`, `idlehook status`: the run queue from a shell.

idlehook worker [--drain]          claim and run handler runs until SIGTERM/SIGINT
idlehook replay [--id N]... [--handler NAME] [--session ID]   re-run dead letters
idlehook status [--json] [--dead N]   queue depth, runs by state, dead letters, sessions
"""

import argparse
import asyncio
import json
import signal
from dataclasses import asdict
from typing import Any

from rich.console import Console
from rich.table import Table
from sqlalchemy.engine import Engine

from idlehook import wiring
from idlehook.settings import Settings
from store import approvals
from store.models import utcnow
from store.runs import QueueStatus, RunStore
from store.sessions import unsaved_outcomes


def register(subparsers: Any) -> None:
    worker = subparsers.add_parser("worker", help="run handler plugins for stored notifications")
    worker.add_argument(
        "--drain", action="store_true", help="exit once nothing is claimable (batch mode)"
    )
    worker.add_argument("--concurrency", type=int, default=None, help="runs at once (default 8)")
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
    engine = wiring.open_engine(settings)
    try:
        asyncio.run(_work(settings, engine, drain=args.drain))
    finally:
        engine.dispose()
    return 0


async def _work(settings: Settings, engine: Engine, drain: bool) -> None:
    async with wiring.api_client(settings) as client:
        worker = wiring.worker(settings, engine, client)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            # Graceful: stop claiming, let in-flight runs finish (their leases cover a crash).
            loop.add_signal_handler(sig, worker.stop)
        try:
            await worker.run(drain=drain)
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)


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
    engine = wiring.open_engine(settings)
    try:
        status = RunStore(engine).status(dead_limit=args.dead)
        waiting = sum(approvals.count_pending_by_session(engine).values())
        unsaved, unsaved_ids = unsaved_outcomes(engine)
    finally:
        engine.dispose()
    if args.json:
        body = status_dict(status) | {
            "pending_approvals": waiting,
            "unsaved_outcomes": {"count": unsaved, "session_ids": unsaved_ids},
        }
        print(json.dumps(body, indent=2, sort_keys=True))
        return 0
    render_status(status, Console(), pending_approvals=waiting, unsaved=(unsaved, unsaved_ids))
    return 0


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
