"""`idlehook start`, `idlehook sessions`, `idlehook launches`. No logic here.

    idlehook start --agent agent_01:3 --environment env_01 --message "Triage #42" --deadline 2h
    idlehook start ... --queue                 enqueue and return at once (a worker creates it)
    idlehook start ... --budget 12.50          a spend ceiling the API enforces (`idlehook budget`)
    idlehook start --batch jobs.jsonl          enqueue one launch per JSON line
    idlehook sessions [--json]                 tracked sessions: status, age, route, cost
    idlehook launches [--state failed]         the launch queue

`--file` takes a `file_...` id, or a local path, which is uploaded first (the emulator has no
upload endpoint, so against it only ids work). Exit codes: 0 launched or queued, 1 refused or
failed, 3 still queued when the wait ran out.
"""

import argparse
import asyncio
import json
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from sqlalchemy.engine import Engine

from handlers.durations import format_duration
from idlehook import wiring
from idlehook.cli import progress
from idlehook.settings import Settings
from sessions.launch_queue import LaunchDrainer
from sessions.launcher import (
    InvalidLaunch,
    Launcher,
    LaunchError,
    LaunchRequest,
    LaunchResult,
    describe_tracked,
)
from sessions.metadata import MetadataError, parse_pairs
from store import approvals
from store.launches import LaunchStore
from store.models import Launch, LaunchState, utcnow

EXIT_PENDING = 3


def register(subparsers: Any) -> None:
    start = subparsers.add_parser(
        "start",
        help="start a session (one create call; never waits for the run)",
        description="Start a session with its first message in the create call.",
    )
    start.add_argument("--agent", metavar="ID[:VERSION]", help="pinned to the current version")
    start.add_argument("--environment", metavar="ENV_ID")
    start.add_argument("--message", metavar="TEXT", help="the first user message")
    start.add_argument("--title")
    start.add_argument(
        "--metadata", action="append", default=[], metavar="KEY=VALUE", help="repeatable"
    )
    start.add_argument("--route", help="stamped as idlehook_route, for routing its webhooks")
    start.add_argument("--deadline", metavar="DURATION", help="e.g. 2h: interrupted after")
    start.add_argument(
        "--max-running",
        metavar="DURATION",
        help="interrupt any run of it going on longer (overrides [reaper] max_running)",
    )
    start.add_argument(
        "--idle-for",
        metavar="DURATION",
        help="keep it this long at rest before reaping (overrides [reaper] idle_for)",
    )
    start.add_argument(
        "--file",
        action="append",
        default=[],
        dest="files",
        metavar="PATH|FILE_ID",
        help="mount a file (repeatable)",
    )
    start.add_argument("--idempotency-key", metavar="KEY", help="same key, same session")
    start.add_argument("--strict", action="store_true", help="refuse unrestricted networking")
    start.add_argument(
        "--budget",
        type=float,
        default=None,
        metavar="USD",
        help="a spend ceiling the API enforces (overrides [launch] budget_usd)",
    )
    start.add_argument("--queue", action="store_true", help="enqueue and return at once")
    start.add_argument("--batch", metavar="FILE.jsonl", help="enqueue one launch per line")
    start.add_argument(
        "--drain",
        action="store_true",
        help="with --batch: create the queued launches from here (paced), with a progress bar",
    )
    start.add_argument(
        "--wait", type=float, default=300.0, metavar="SECONDS", help="give up waiting after"
    )
    start.add_argument("--json", action="store_true", help="print the result as JSON")
    start.set_defaults(func=run_start)

    listing = subparsers.add_parser("sessions", help="list tracked sessions")
    listing.add_argument("--limit", type=int, default=100)
    listing.add_argument("--all", action="store_true", help="include deleted sessions")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=run_sessions)

    launches = subparsers.add_parser("launches", help="list the launch queue")
    launches.add_argument(
        "--state", action="append", choices=[s.value for s in LaunchState], default=[]
    )
    launches.add_argument("--limit", type=int, default=50)
    launches.add_argument("--json", action="store_true")
    launches.set_defaults(func=run_launches)


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 1


# -- start -----------------------------------------------------------------------------------


def _request_from_flags(args: argparse.Namespace, files: list[str]) -> LaunchRequest:
    missing = [flag for flag in ("agent", "environment", "message") if not getattr(args, flag)]
    if missing:
        raise InvalidLaunch("missing " + ", ".join(f"--{m}" for m in missing))
    try:
        metadata = parse_pairs(args.metadata)
    except MetadataError as exc:
        raise InvalidLaunch(str(exc)) from None
    fields: dict[str, Any] = {
        "agent": args.agent,
        "environment": args.environment,
        "message": args.message,
        "title": args.title,
        "metadata": metadata,
        "route": args.route,
        "deadline": args.deadline,
        "max_running": args.max_running,
        "idle_for": args.idle_for,
        "files": files,
        "idempotency_key": args.idempotency_key,
    }
    if args.budget is not None:
        fields["budget_usd"] = args.budget
    if args.strict:
        fields["strict"] = True
    return LaunchRequest.parse(fields)


def _read_batch(path: Path, strict: bool, budget: float | None = None) -> list[LaunchRequest]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise InvalidLaunch(f"cannot read {path}: {exc.strerror}") from None
    requests = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except ValueError:
            raise InvalidLaunch(f"{path}:{number}: not valid JSON") from None
        if strict and isinstance(data, dict):
            data.setdefault("strict", True)
        # --budget is the default for lines that name none of their own.
        named = isinstance(data, dict) and bool({"budget", "budget_usd"} & set(data))
        if budget is not None and isinstance(data, dict) and not named:
            data["budget_usd"] = budget
        try:
            requests.append(LaunchRequest.parse(data))
        except InvalidLaunch as exc:
            raise InvalidLaunch(f"{path}:{number}: {exc}") from None
    if not requests:
        raise InvalidLaunch(f"{path}: no launches in it")
    return requests


async def _start(
    args: argparse.Namespace, settings: Settings, engine: Engine, report: progress.Report
) -> list[LaunchResult]:
    # Launch retries go through the durable queue, never the SDK: it sends no idempotency key.
    async with wiring.api_client(settings, engine, max_retries=0) as client:
        return await _launch(args, wiring.launcher(settings, engine, client), report)


async def _launch(
    args: argparse.Namespace, launcher: Launcher, report: progress.Report
) -> list[LaunchResult]:
    if args.batch:
        batch = _read_batch(Path(args.batch), args.strict, args.budget)
        queued = await launcher.enqueue_many(batch)
        return await _drain(launcher, queued, report) if args.drain else queued
    files = []
    for item in args.files:
        files.append(item if item.startswith("file_") else await launcher.upload(Path(item)))
    request = _request_from_flags(args, files)
    if args.queue:
        return [await launcher.enqueue(request)]
    return [await launcher.start(request, wait_seconds=args.wait)]


_DONE = (LaunchState.CREATED, LaunchState.FAILED)


async def _drain(
    launcher: Launcher, queued: list[LaunchResult], report: progress.Report
) -> list[LaunchResult]:
    """Create the queue's launches from this process; report ours as they finish."""
    drainer = LaunchDrainer(launcher, poll_seconds=0.2)
    ids = [r.launch_id for r in queued]

    def rows() -> list[Launch | None]:
        return [launcher.store.get(launch_id) for launch_id in ids]

    async def watch() -> None:
        while not drainer.stopping.is_set():
            done = sum(1 for row in await asyncio.to_thread(rows) if row and row.state in _DONE)
            report(done, len(ids))
            if done == len(ids):
                return
            await asyncio.sleep(0.2)

    watcher = asyncio.create_task(watch())
    try:
        await drainer.run(drain=True)
    finally:
        drainer.stopping.set()
        await watcher
    final = await asyncio.to_thread(rows)
    return [
        LaunchResult.of(row, new=before.new) if row is not None else before
        for before, row in zip(queued, final, strict=True)
    ]


def run_start(args: argparse.Namespace) -> int:
    if args.drain and not args.batch:
        return _fail("--drain goes with --batch")
    settings = wiring.settings_from_args(args)
    engine = wiring.open_engine(settings, pool_size=4)
    console = Console(stderr=True)
    try:
        with progress.bar(console, "launching", enabled=not args.json) as report:
            results = asyncio.run(_start(args, settings, engine, report))
    except LaunchError as exc:
        return _fail(str(exc))
    finally:
        engine.dispose()
    for result in results:
        for warning in result.warnings:
            print(f"warning: {warning}", file=sys.stderr)
    if args.json:
        body: Any = [r.to_json() for r in results] if args.batch else results[0].to_json()
        print(json.dumps(body, indent=2))
    elif args.batch and args.drain:
        _render_drained(results)
    elif args.batch:
        new = sum(1 for r in results if r.new)
        print(f"queued {new} launches ({len(results) - new} already known)")
    else:
        result = results[0]
        print(result.session_id or f"queued launch {result.launch_id} ({result.idempotency_key})")
    if not args.batch and not args.queue and results[0].state != LaunchState.CREATED:
        print("still queued: a worker will create it", file=sys.stderr)
        return EXIT_PENDING
    if args.drain and any(r.state == LaunchState.FAILED for r in results):
        return 1
    return 0


def _render_drained(results: list[LaunchResult]) -> None:
    created = sum(1 for r in results if r.state == LaunchState.CREATED)
    table = Table(title=f"{created} of {len(results)} launches created")
    for column in ("launch", "key", "state", "session", "error"):
        table.add_column(column)
    for r in results:
        style = "red" if r.state == LaunchState.FAILED else ""
        table.add_row(
            str(r.launch_id),
            r.idempotency_key,
            r.state,
            r.session_id or "",
            (r.error or "")[:80],
            style=style,
        )
    Console().print(table)


# -- listings --------------------------------------------------------------------------------


def run_sessions(args: argparse.Namespace) -> int:
    settings = wiring.settings_from_args(args)
    engine = wiring.open_engine(settings, pool_size=4)
    try:
        rows = LaunchStore(engine).tracked(limit=args.limit, include_deleted=args.all)
        waiting = approvals.count_pending_by_session(engine)
    finally:
        engine.dispose()
    now = utcnow()
    # `pending_approvals`: held tool uses waiting for a person (`idlehook approvals`).
    described = [
        describe_tracked(r, now) | {"pending_approvals": waiting.get(r.id, 0)} for r in rows
    ]
    if args.json:
        print(json.dumps(described, indent=2))
        return 0
    table = Table(title=f"{len(described)} tracked sessions")
    table.add_column("session", no_wrap=True)
    for column in ("status", "age", "route", "result", "cost", "budget", "deadline", "approvals"):
        table.add_column(column)
    for item in described:
        age = item["age_seconds"]
        cost = item["cost_usd"]
        status = item["status"] or "?"
        if item["stop_reason"] == "budget_reached":
            status += " (budget reached)"  # `idlehook budget SESSION USD` raises it
        if item["reap_requested"]:
            status += " (reap)"
        table.add_row(
            item["id"],
            status,
            format_duration_s(age),
            item["route"] or "",
            "yes" if item["result_captured"] else "",
            f"${cost:.4f}" if cost is not None else "",
            # A budget caps the token list cost, not runtime.
            _budget_cell(item["token_usd"], item["budget_usd"]),
            item["deadline"][:16].replace("T", " ") if item["deadline"] else "",
            str(item["pending_approvals"] or ""),
        )
    Console().print(table)
    return 0


def _budget_cell(spent: float | None, cap: float | None) -> str:
    """Spent of cap, for a session launched with a spend ceiling; empty when uncapped."""
    return "" if cap is None else f"${spent or 0:.2f} / ${cap:.2f}"


def format_duration_s(seconds: float | None) -> str:
    return "" if seconds is None else format_duration(timedelta(seconds=seconds))


def run_launches(args: argparse.Namespace) -> int:
    settings = wiring.settings_from_args(args)
    engine = wiring.open_engine(settings, pool_size=4)
    try:
        store = LaunchStore(engine)
        rows = store.recent(args.state, limit=args.limit)
        counts = store.counts()
    finally:
        engine.dispose()
    described = [LaunchResult.of(r, new=False).to_json() | {"attempts": r.attempts} for r in rows]
    if args.json:
        print(json.dumps({"counts": counts, "launches": described}, indent=2))
        return 0
    summary = ", ".join(f"{n} {state}" for state, n in sorted(counts.items())) or "empty"
    table = Table(title=f"launches: {summary}")
    for column in ("id", "key", "state", "attempts", "session", "error"):
        table.add_column(column)
    for item in described:
        table.add_row(
            str(item["launch_id"]),
            item["idempotency_key"],
            item["state"],
            str(item["attempts"]),
            item["session_id"] or "",
            (item["error"] or "")[:80],
        )
    Console().print(table)
    return 0
