"""`idlehook start`, `idlehook sessions`, `idlehook launches`. No logic here.

    idlehook start --agent agent_01:3 --environment env_01 --message "Triage #42" --deadline 2h
    idlehook start ... --queue                 enqueue and return at once (a worker creates it)
    idlehook start ... --budget 12.50          a spend ceiling the API enforces (`idlehook budget`)
    idlehook start --batch jobs.jsonl          enqueue one launch per JSON line
    idlehook sessions [--json]                 tracked sessions: status (stop reason), age,
                                               route, metadata, cost
    idlehook sessions --status idle --stop-reason end_turn --agent agent_01[:3]
                      --metadata team=core --owner ops --all     filtered (every filter must match)
    idlehook launches [--state failed]         the launch queue

`--file` takes a `file_...` id, or a local path, which is uploaded first (the emulator has no
upload endpoint, so against it only ids work). Exit codes: 0 launched or queued, 1 refused or
failed, 3 still queued when the wait ran out.
"""

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from idlehook.cli import tables

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from idlehook.cli import progress
    from idlehook.settings import Settings
    from sessions.launcher import Launcher, LaunchRequest, LaunchResult
    from store.models import Launch
    from store.sessions import SessionFilter

EXIT_PENDING = 3
# The API's session statuses, and store.models.LaunchState's values: spelled out so that
# `idlehook --help` imports neither the SDK nor the store.
STATUSES = ("rescheduling", "running", "idle", "terminated")
LAUNCH_STATES = ("queued", "creating", "created", "failed")


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

    listing = subparsers.add_parser(
        "sessions",
        help="list tracked sessions (filter by status, stop reason, agent, metadata, owner)",
        description="Tracked sessions, newest first. Repeat a filter to accept any of its "
        "values; different filters must all match, and so must every --metadata pair.",
    )
    listing.add_argument("--limit", type=int, default=100)
    listing.add_argument("--all", action="store_true", help="include deleted sessions")
    listing.add_argument(
        "--status", action="append", default=[], choices=STATUSES, help="repeatable"
    )
    listing.add_argument(
        "--stop-reason",
        action="append",
        default=[],
        metavar="REASON",
        help="an idle session's: end_turn, requires_action, retries_exhausted, ... (repeatable)",
    )
    listing.add_argument("--agent", action="append", default=[], metavar="ID[:VERSION]")
    listing.add_argument(
        "--metadata", action="append", default=[], metavar="KEY=VALUE", help="all must match"
    )
    listing.add_argument("--owner", action="append", default=[], metavar="OWNER")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=run_sessions)

    launches = subparsers.add_parser("launches", help="list the launch queue")
    launches.add_argument("--state", action="append", choices=LAUNCH_STATES, default=[])
    launches.add_argument("--limit", type=int, default=50)
    launches.add_argument("--json", action="store_true")
    launches.set_defaults(func=run_launches)


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 1


# -- start -----------------------------------------------------------------------------------


def _request_from_flags(args: argparse.Namespace, files: list[str]) -> "LaunchRequest":
    from sessions.launcher import InvalidLaunch, LaunchRequest
    from sessions.metadata import MetadataError, parse_pairs

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


async def _start(
    args: argparse.Namespace, settings: "Settings", engine: "Engine", report: "progress.Report"
) -> list["LaunchResult"]:
    from idlehook import wiring

    # Launch retries go through the durable queue, never the SDK: it sends no idempotency key.
    async with wiring.api_client(settings, engine, max_retries=0) as client:
        return await _launch(args, wiring.launcher(settings, engine, client), report)


async def _launch(
    args: argparse.Namespace, launcher: "Launcher", report: "progress.Report"
) -> list["LaunchResult"]:
    if args.batch:
        from sessions.batch import read_batch

        batch = read_batch(Path(args.batch), args.strict, args.budget)
        queued = await launcher.enqueue_many(batch)
        return await _drain(launcher, queued, report) if args.drain else queued
    files = []
    for item in args.files:
        files.append(item if item.startswith("file_") else await launcher.upload(Path(item)))
    request = _request_from_flags(args, files)
    if args.queue:
        return [await launcher.enqueue(request)]
    return [await launcher.start(request, wait_seconds=args.wait)]


_DONE = ("created", "failed")


async def _drain(
    launcher: "Launcher", queued: list["LaunchResult"], report: "progress.Report"
) -> list["LaunchResult"]:
    """Create the queue's launches from this process; report ours as they finish."""
    from sessions.launch_queue import LaunchDrainer
    from sessions.launcher import LaunchResult

    drainer = LaunchDrainer(launcher, poll_seconds=0.2)
    ids = [r.launch_id for r in queued]

    def rows() -> list["Launch | None"]:
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
    from idlehook import wiring
    from idlehook.cli import progress
    from sessions.launcher import LaunchError
    from store.models import LaunchState

    if args.drain and not args.batch:
        return _fail("--drain goes with --batch")
    settings = wiring.settings_from_args(args)
    engine = wiring.open_engine(settings, pool_size=4)
    console = tables.console(stderr=True)
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


def _render_drained(results: list["LaunchResult"]) -> None:
    created = sum(1 for r in results if r.state == "created")
    table = tables.table(
        "launch", "key", "state", "session", "error",
        title=f"{created} of {len(results)} launches created", ids=("launch", "key"),
    )  # fmt: skip
    for r in results:
        style = "red" if r.state == "failed" else ""
        table.add_row(
            str(r.launch_id), r.idempotency_key, r.state, r.session_id or "", r.error or "",
            style=style,
        )  # fmt: skip
    tables.print_table(table)


# -- listings --------------------------------------------------------------------------------


def _filter(args: argparse.Namespace) -> "SessionFilter":
    """The filters as the store takes them; a bad one raises ValueError, said as usage."""
    from sessions.metadata import MetadataError, parse_pairs
    from store.sessions import SessionFilter

    for agent in args.agent:
        agent_id, sep, version = agent.partition(":")
        if not agent_id or (sep and not version.isdigit()):
            raise ValueError(f"bad --agent {agent!r}: use ID or ID:VERSION")
    try:
        metadata = parse_pairs(args.metadata)
    except MetadataError as exc:
        raise ValueError(str(exc)) from None
    return SessionFilter(
        status=tuple(args.status),
        stop_reason=tuple(args.stop_reason),
        agent=tuple(args.agent),
        owner=tuple(args.owner),
        metadata=metadata,
        include_deleted=args.all,
    )


def compact_metadata(pairs: dict[str, str]) -> str:
    """`k=v k2=v2`: the caller's own pairs, as a cell."""
    return " ".join(f"{k}={v}" for k, v in pairs.items())


def run_sessions(args: argparse.Namespace) -> int:
    from idlehook import loading
    from sessions.tracked_view import describe_tracked, status_label, user_metadata
    from store import approvals
    from store.launches import LaunchStore
    from store.models import utcnow

    try:
        where = _filter(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    settings = loading.settings_from_args(args)
    engine = loading.open_engine(settings, pool_size=4)
    try:
        rows = LaunchStore(engine).tracked(limit=args.limit, where=where)
        waiting = approvals.count_pending_by_session(engine)
    finally:
        engine.dispose()
    now = utcnow()
    # `pending_approvals`: held tool uses waiting for a person (`idlehook approvals`).
    described = [
        describe_tracked(r, now)
        | {
            "status_label": status_label(r.status, r.stop_reason),
            "metadata": user_metadata(r.session_metadata),
            "deleted_at": r.deleted_at.isoformat() if r.deleted_at else None,
            "pending_approvals": waiting.get(r.id, 0),
        }
        for r in rows
    ]
    if args.json:
        print(json.dumps(described, indent=2))
        return 0
    columns = ["session", "status", "age", "route", "metadata", "result", "cost", "budget"]
    columns += ["deadline", "approvals"] + (["deleted"] if args.all else [])
    cells: list[list[str]] = []
    for item in described:
        status = item["status_label"]
        if item["reap_requested"]:
            status += " (reap)"
        row = [
            item["id"],
            status,
            format_duration_s(item["age_seconds"]),
            item["route"] or "",
            compact_metadata(item["metadata"]),
            "yes" if item["result_captured"] else "",
            f"${item['cost_usd']:.4f}" if item["cost_usd"] is not None else "",
            # A budget caps the token list cost, not runtime.
            _budget_cell(item["token_usd"], item["budget_usd"]),
            _minute(item["deadline"]),
            str(item["pending_approvals"] or ""),
        ]
        if args.all:
            row.append(_minute(item["deleted_at"]))
        cells.append(row)
    out = tables.console()
    if out.width < tables.PIPED_WIDTH:
        # On a terminal every column costs width the others fold into: show only those with
        # something in them. Piped, the columns stay the same for awk whatever the rows hold.
        keep = [i for i in range(len(columns)) if i < 2 or any(r[i] for r in cells)]
        columns = [columns[i] for i in keep]
        cells = [[r[i] for i in keep] for r in cells]
    table = tables.table(*columns, title=f"{len(described)} tracked sessions")
    for line in cells:
        table.add_row(*line)
    tables.print_table(table, out)
    return 0


def _minute(iso: str | None) -> str:
    return iso[:16].replace("T", " ") if iso else ""


def _budget_cell(spent: float | None, cap: float | None) -> str:
    """Spent of cap, for a session launched with a spend ceiling; empty when uncapped."""
    return "" if cap is None else f"${spent or 0:.2f} / ${cap:.2f}"


def format_duration_s(seconds: float | None) -> str:
    from datetime import timedelta

    from handlers.durations import format_duration

    return "" if seconds is None else format_duration(timedelta(seconds=seconds))


def run_launches(args: argparse.Namespace) -> int:
    from idlehook import loading
    from sessions.launcher import LaunchResult
    from store.launches import LaunchStore

    settings = loading.settings_from_args(args)
    engine = loading.open_engine(settings, pool_size=4)
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
    table = tables.table(
        "id", "key", "state", "attempts", "session", "error",
        title=f"launches: {summary}", ids=("id", "key"),
    )  # fmt: skip
    for item in described:
        table.add_row(
            str(item["launch_id"]),
            item["idempotency_key"],
            item["state"],
            str(item["attempts"]),
            item["session_id"] or "",
            item["error"] or "",
        )
    tables.print_table(table)
    return 0
