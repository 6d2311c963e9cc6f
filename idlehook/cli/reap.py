"""`idlehook reap` and `idlehook reconcile`: one pass each, for cron. No logic here.

    idlehook reap --dry-run              what would go, why, and what it would save per hour
    idlehook reap --idle-for 0s          delete idle sessions of ours at once
    idlehook reap --include-unowned --max-age 7d
    idlehook reconcile                   deliver status changes no webhook reported

Exit code 1 when anything failed or was refused (reap), or a sweep failed or the webhook
silence alarm is on (reconcile).
"""

import argparse
import asyncio
import json
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.table import Table
from sqlalchemy.engine import Engine

from handlers.durations import DurationError
from idlehook import wiring
from idlehook.cli import progress
from idlehook.settings import Settings
from sessions.reap_policy import ReapPolicy
from sessions.reaper import Outcome, ReapReport
from sessions.reconciler import ReconcileReport
from store.models import ReaperActionKind


def register(subparsers: Any) -> None:
    reap = subparsers.add_parser("reap", help="delete orphaned sessions (once; for cron)")
    reap.add_argument("--dry-run", action="store_true", help="show what would go; change nothing")
    reap.add_argument(
        "--idle-for", metavar="DURATION", help="how long a resting session is kept (24h)"
    )
    reap.add_argument("--max-age", metavar="DURATION", help="age past which unowned ones go")
    reap.add_argument(
        "--include-unowned", action="store_true", help="also sessions idlehook did not launch"
    )
    reap.add_argument("--json", action="store_true", help="print the report as JSON")
    reap.set_defaults(func=run_reap)

    reconcile = subparsers.add_parser(
        "reconcile", help="deliver status changes no webhook reported (once; for cron)"
    )
    reconcile.add_argument("--json", action="store_true", help="print the report as JSON")
    reconcile.set_defaults(func=run_reconcile)


# -- commands --------------------------------------------------------------------------------


def run_reap(args: argparse.Namespace) -> int:
    console = Console()
    settings = wiring.settings_from_args(args)
    try:
        policy = wiring.reap_policy(
            settings,
            idle_for=args.idle_for,
            max_age=args.max_age,
            include_unowned=args.include_unowned,
        )
    except DurationError as exc:
        console.print(f"[red]error:[/red] {exc}")
        return 2
    engine = wiring.open_engine(settings)
    try:
        with progress.bar(console, "reaping", enabled=not args.json) as report_progress:
            report = asyncio.run(
                _reap(settings, engine, policy, args.dry_run, progress=report_progress)
            )
    finally:
        engine.dispose()
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        render_reap(console, report)
    return exit_code(report)


def exit_code(report: ReapReport) -> int:
    """Non-zero when any session failed or was refused: cron mails, the next run retries."""
    return 0 if report.ok else 1


async def _reap(
    settings: Settings,
    engine: Engine,
    policy: ReapPolicy,
    dry_run: bool,
    progress: Callable[[int, int], None] | None = None,
) -> ReapReport:
    async with wiring.api_client(settings, engine) as client:
        archive = (
            wiring.archiver(settings, engine, client) if policy.archive_before_delete else None
        )
        reaper = wiring.reaper(settings, engine, client, policy, archive)
        return await reaper.run(dry_run=dry_run, progress=progress)


_VERB = {
    ReaperActionKind.DELETED: ("deleted", "would delete"),
    ReaperActionKind.INTERRUPTED: ("interrupted", "would interrupt"),
    ReaperActionKind.ARCHIVED: ("archived", "would archive"),
}


# Narrower than this (an 80-column terminal, a pipe), a table would cut ids or fold every
# reason into slivers: one line per action instead, whole and grep-able.
TABLE_MIN_WIDTH = 120


def render_reap(console: Console, report: ReapReport) -> None:
    title = "reap (dry run)" if report.dry_run else "reap"
    rows = [_cells(o) for o in report.outcomes]
    if console.width < TABLE_MIN_WIDTH:
        console.print(f"{title}: {report.examined} sessions examined", highlight=False)
        for o, (session, status, action, why, saved, error) in zip(
            report.outcomes, rows, strict=True
        ):
            extra = "".join(f"  {part}" for part in (saved and f"${saved}/h", error) if part)
            console.print(
                f"{action:<16} {session}  {status:<12} {why}{extra}",
                style=_style(o),
                highlight=False,
                soft_wrap=True,
            )
    else:
        table = Table(title=f"{title}: {report.examined} sessions examined")
        for column in ("session", "status", "action", "why", "$/h saved", "error"):
            table.add_column(column, justify="right" if column == "$/h saved" else "left")
        for o, cells in zip(report.outcomes, rows, strict=True):
            table.add_row(*cells, style=_style(o))
        console.print(table)
    console.print(saving_line(report))
    if not report.ok:
        console.print("[red]some sessions could not be reaped; they are retried next run[/red]")


def _cells(o: Outcome) -> tuple[str, str, str, str, str, str]:
    done, would = _VERB.get(o.action, (str(o.action), str(o.action)))
    return (
        o.session_id,
        o.status,
        would if o.dry_run else done,
        f"{o.reason}: {o.detail}" if o.detail else o.reason,
        f"{o.saving_usd_per_hour:.4f}" if o.saving_usd_per_hour else "",
        o.error or "",
    )


def _style(o: Outcome) -> str:
    return "red" if o.failed else ("yellow" if o.action is ReaperActionKind.SKIPPED else "")


def saving_line(report: ReapReport) -> str:
    """The run's saving, always with the billing model it is priced under."""
    verb = "would save" if report.dry_run else "saves"
    line = f"{verb} about ${report.saving_usd_per_hour:.4f}/hour of runtime"
    if report.billing_model == "running":
        return (
            f"{line} (billing model: running; idle sessions accrue no runtime, so deletes are "
            "clean-up and save $0; only interrupted runs stop billing)"
        )
    return f"{line} (billing model: exists; every deleted session stops its container)"


def run_reconcile(args: argparse.Namespace) -> int:
    settings = wiring.settings_from_args(args)
    engine = wiring.open_engine(settings)
    try:
        report = asyncio.run(_reconcile(settings, engine))
    finally:
        engine.dispose()
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        render_reconcile(Console(), report)
    disabled = report.endpoint is not None and report.endpoint.state == "disabled"
    return 1 if report.failed or report.alarm or disabled else 0


async def _reconcile(settings: Settings, engine: Engine) -> ReconcileReport:
    async with wiring.api_client(settings, engine) as client:
        reconciler = wiring.reconciler(settings, engine, client)
        try:
            return await reconciler.sweep()
        finally:
            await reconciler.aclose()


def render_reconcile(console: Console, report: ReconcileReport) -> None:
    console.print(
        f"examined {report.examined} sessions, {report.changed} checked, "
        f"{len(report.synthesised)} missed transitions delivered; "
        f"{report.calls} API calls of {report.budget}"
        + (f", {report.deferred} sessions left for the next sweep" if report.deferred else "")
    )
    if report.endpoint is not None and report.endpoint.state == "disabled":
        console.print(
            f"[red]ALARM[/red]: the webhook endpoint is disabled "
            f"({report.endpoint.reason or 'by a person'}); re-enable it in the Console",
            highlight=False,
        )
    for event_id in report.synthesised:
        console.print(f"  delivered {event_id}")
    for session_id in report.failed:
        console.print(f"  [red]failed[/red] {session_id} (retried next sweep)")
    if report.alarm:
        console.print(
            f"[red]ALARM[/red]: no webhook for {report.silence_seconds:.0f}s while sessions "
            "changed status; is the webhook endpoint disabled?"
        )
