"""`idlehook show`: one session, everything idlehook knows of it. No logic here.

    idlehook show SESSION [--json] [--events N] [--no-api]

Status and stop reason, metadata, owner/route/agent, times, deadline, cost, the archive, every
delivery and what routing made of it, handler runs, approvals, tool calls, follow-ups, reaper
actions, and the transcript's latest events: from the archived events.jsonl when saved (no API
call), else one paced read of the latest events. The session itself is read once from the API
(live status, usage, model) unless it is deleted or `--no-api`; one the store has never heard
of is found that way. Exit codes: 0 shown, 1 not found anywhere.
"""

import argparse
import asyncio
import json
import sys
from typing import TYPE_CHECKING, Any

from idlehook.cli import tables

if TYPE_CHECKING:
    from sessions.session_report import SessionReport


def register(subparsers: Any) -> None:
    show = subparsers.add_parser(
        "show",
        help="one session: status, metadata, cost, deliveries, runs, approvals, transcript",
        description="Everything idlehook knows of one session, and at most two paced API reads.",
    )
    show.add_argument("session", metavar="SESSION")
    show.add_argument("--json", action="store_true", help="print it as JSON")
    show.add_argument(
        "--events", type=int, default=10, metavar="N", help="latest transcript events to list"
    )
    show.add_argument(
        "--no-api", action="store_true", help="the store and the archive only: no API read"
    )
    show.set_defaults(func=run_show)


async def _report(args: argparse.Namespace) -> "SessionReport":
    from handlers.builtin.archive_store import open_store
    from idlehook import loading
    from sessions.session_report import build

    settings = loading.settings_from_args(args)
    engine = loading.open_engine(settings, pool_size=2)
    try:
        archive = settings.archive
        common: dict[str, Any] = {
            "results_dir": open_store(settings.results_dir, archive.url, archive.storage_options),
            "pricing": settings.pricing(),
            "latest": max(0, args.events),
        }
        if args.no_api:
            return await build(engine, args.session, client=None, **common)
        from idlehook import wiring

        async with wiring.api_client(settings, engine, max_retries=0) as client:
            return await build(engine, args.session, client=client, **common)
    finally:
        engine.dispose()


def run_show(args: argparse.Namespace) -> int:
    report = asyncio.run(_report(args))
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    elif report.found:
        render(report)
    if not report.found:
        reason = "; ".join(report.notes) or "unknown"
        print(f"error: no session {args.session} ({reason})", file=sys.stderr)
        return 1
    return 0


def _when(value: Any) -> str:
    if value is None:
        return ""
    text = value if isinstance(value, str) else value.isoformat()
    return str(text)[:19].replace("T", " ")


def _usd(value: float | None) -> str:
    return "" if value is None else f"${value:.4f}"


def render(report: "SessionReport") -> None:
    from sessions.tracked_view import user_metadata

    d = report.detail
    t = d.tracked
    lines = [f"{report.session_id}  {report.status_label}"]
    if report.title:
        lines.append(f"  title     {report.title}")
    who = [
        f"owner {t.owner}" if t and t.owner else "",
        f"route {t.route}" if t and t.route else "",
        "launched by idlehook" if t and t.launched_by_us else "not launched by idlehook",
    ]
    lines.append("  " + ", ".join(w for w in who if w))
    if report.agent_id:
        version = f" v{report.agent_version}" if report.agent_version is not None else ""
        env = f", environment {t.environment_id}" if t and t.environment_id else ""
        lines.append(f"  agent     {report.agent_id}{version}{env}")
    times = [
        ("created", report.created_at),
        ("updated", report.updated_at),
        ("status at", t.status_at if t else None),
        ("deleted", report.deleted_at),
        ("deadline", t.deadline if t else None),
        ("interrupted", t.interrupted_at if t else None),
        ("reap requested", t.reap_requested_at if t else None),
        ("result saved", t.result_captured_at if t else None),
    ]
    lines.append("  " + ", ".join(f"{k} {_when(v)}" for k, v in times if v is not None))
    if t and t.interrupt_reason:
        lines.append(f"  interrupted by idlehook: {t.interrupt_reason}")
    user = user_metadata(report.metadata)
    lines.append("  metadata  " + (" ".join(f"{k}={v}" for k, v in user.items()) or "(none)"))
    c = report.cost
    runtime = f"{c.runtime_seconds:.0f}s" if c.runtime_seconds is not None else "?"
    budget = f", budget {_usd(c.budget_usd)}" if c.budget_usd is not None else ""
    lines.append(
        f"  cost      {_usd(c.total_usd) or '?'}: runtime {_usd(c.runtime_usd) or '?'} "
        f"({runtime} running), tokens {_usd(c.token_usd) or '?'}{budget} "
        f"[billing {c.billing_model}, from the {c.source}]"
    )
    for m in c.by_model:
        lines.append(
            f"  model     {m.model}: {m.input_tokens or 0} in, {m.output_tokens or 0} out, "
            f"{m.cache_read_input_tokens or 0} cache read, "
            f"{m.cache_creation_input_tokens or 0} cache write, {_usd(m.token_usd) or '?'}"
        )
    if report.archive is not None:
        a = report.archive
        lines.append(
            f"  archive   {a.path} (result.json {'yes' if a.result_json else 'no'}, "
            f"events.jsonl {'yes' if a.events_jsonl else 'no'}, {a.turn_results} turn results)"
        )
    if d.launch is not None:
        lines.append(
            f"  launch    {d.launch.id} key {d.launch.idempotency_key}: {d.launch.state} "
            f"after {d.launch.attempts} attempt(s)"
            + (f", error: {d.launch.error}" if d.launch.error else "")
        )
    reads = ", ".join(report.api_reads) or "none"
    lines.append(f"  API reads {reads}")
    for note in report.notes:
        lines.append(f"  note      {note}")
    # Plain lines, never folded: a path or an id in them stays whole for copy and paste.
    print("\n".join(lines), flush=True)
    _sections(report)


def _print(
    title: str, columns: tuple[str, ...], rows: list[list[str]], ids: tuple[str, ...] = ("id",)
) -> None:
    """A section's table; on a terminal without the columns nothing in it fills (the width is
    better spent on the rest), piped with every column so awk sees the same fields."""
    if not rows:
        return
    out = tables.console()
    if out.width < tables.PIPED_WIDTH:
        keep = [i for i, name in enumerate(columns) if name in ids or any(r[i] for r in rows)]
        columns = tuple(columns[i] for i in keep)
        rows = [[r[i] for i in keep] for r in rows]
    table = tables.table(*columns, title=title, ids=ids)
    for row in rows:
        table.add_row(*row)
    tables.print_table(table, out)


def _sections(report: "SessionReport") -> None:
    d = report.detail
    _print(
        "deliveries",
        ("event_id", "type", "source", "received", "dups", "routing"),
        [
            [x.event_id, x.event_type, x.source, _when(x.received_at),
             str(x.duplicates or ""), x.routing]
            for x in d.deliveries
        ],
        ids=("event_id",),
    )  # fmt: skip
    _print(
        "handler runs",
        ("run", "event_id", "handler", "state", "attempts", "error"),
        [
            [str(r.id), r.event_id, r.handler, r.state, str(r.attempts), r.last_error or ""]
            for r in d.runs
        ],
        ids=("run", "event_id"),
    )
    _print(
        "approvals",
        ("id", "tool_use_id", "tool", "state", "decision", "by", "requested"),
        [
            [str(p.id), p.tool_use_id, p.tool_name, p.state, p.decision or "",
             p.decided_by or "", _when(p.requested_at)]
            for p in d.approvals
        ],
        ids=("id", "tool_use_id"),
    )  # fmt: skip
    _print(
        "tool calls",
        ("custom_tool_use_id", "tool", "state", "attempts", "error", "sent"),
        [
            [c.custom_tool_use_id, c.tool_name, c.state, str(c.attempts),
             "yes" if c.is_error else "", _when(c.sent_at)]
            for c in d.tool_calls
        ],
        ids=("custom_tool_use_id",),
    )  # fmt: skip
    _print(
        "follow-ups",
        ("key", "state", "attempts", "sent", "event_id", "error"),
        [
            [f.idempotency_key, f.state, str(f.attempts), _when(f.sent_at), f.event_id or "",
             f.error or ""]
            for f in d.follow_ups
        ],
        ids=("key", "event_id"),
    )  # fmt: skip
    _print(
        "reaper actions",
        ("at", "action", "reason", "dry run", "run_id", "error"),
        [
            [_when(a.at), a.action, a.reason, "yes" if a.dry_run else "", a.run_id,
             a.error or ""]
            for a in d.reaper_actions
        ],
        ids=("run_id",),
    )  # fmt: skip
    tr = report.transcript
    if tr is not None:
        where = (
            "archived events.jsonl"
            if tr.source == "archive"
            else "one API read" + ("" if tr.complete else " (latest page only)")
        )
        counts = ", ".join(f"{n} {kind}" for kind, n in tr.by_type.items())
        _print(
            f"transcript: {tr.events} events from the {where}; {tr.turns} turn(s)",
            ("processed", "type", "summary", "event_id"),
            [[_when(e.processed_at), e.type, e.summary, e.id or ""] for e in tr.latest],
            ids=("event_id",),
        )
        print(f"  events by type: {counts}")
        if tr.final_message:
            print(f"  final message: {tr.final_message}")
