"""`idlehook reap` and `idlehook reconcile`: one pass each, for cron. No logic here.

    idlehook reap --dry-run              what would go, why, what it would save per hour, and
                                         every session kept with its reason
    idlehook reap --idle-for 0s          delete idle sessions of ours at once
    idlehook reap --include-unowned --max-age 7d
    idlehook reconcile                   deliver status changes no webhook reported

Exit code 1 when anything failed or was refused (reap), or a sweep failed or the webhook
silence alarm is on (reconcile); 2 for a bad flag.
"""

import argparse
import asyncio
import json
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console
    from sqlalchemy.engine import Engine

    from idlehook.settings import Settings
    from sessions.reap_policy import ReapPolicy
    from sessions.reaper import Outcome, ReapReport
    from sessions.reconciler import ReconcileReport


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
    reap.add_argument(
        "--all",
        action="store_true",
        help="list every session kept, with its reason (a dry run always does)",
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
    from handlers.durations import DurationError
    from idlehook import wiring
    from idlehook.cli import progress, tables
    from sessions.reap_policy import futile

    settings = wiring.settings_from_args(args)
    try:
        policy = wiring.reap_policy(
            settings,
            idle_for=args.idle_for,
            max_age=args.max_age,
            include_unowned=args.include_unowned,
        )
    except DurationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    given = [name for name in ("idle_for", "max_age") if getattr(args, name)]
    for warning in futile(policy, given=given):
        print(f"warning: {warning}", file=sys.stderr)
    out = tables.console()
    engine = wiring.open_engine(settings)
    try:
        with progress.bar(out, "reaping", enabled=not args.json) as report_progress:
            report = asyncio.run(
                _reap(settings, engine, policy, args.dry_run, progress=report_progress)
            )
    finally:
        engine.dispose()
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        render_reap(out, report, list_kept=args.dry_run or args.all)
    return exit_code(report)


def exit_code(report: "ReapReport") -> int:
    """Non-zero when any session failed or was refused: cron mails, the next run retries."""
    return 0 if report.ok else 1


async def _reap(
    settings: "Settings",
    engine: "Engine",
    policy: "ReapPolicy",
    dry_run: bool,
    progress: Callable[[int, int], None] | None = None,
) -> "ReapReport":
    from idlehook import wiring

    async with wiring.api_client(settings, engine) as client:
        archive = (
            wiring.archiver(settings, engine, client) if policy.archive_before_delete else None
        )
        reaper = wiring.reaper(settings, engine, client, policy, archive)
        return await reaper.run(dry_run=dry_run, progress=progress)


# The report's words (`would_delete`) as a person reads them.
_SAID = {
    "would_delete": "would delete",
    "would_interrupt": "would interrupt",
    "would_archive": "would archive",
}


def render_reap(out: "Console", report: "ReapReport", *, list_kept: bool) -> None:
    """The actions, then the sessions kept (dimmed): each with its reason when `list_kept`,
    else one line counting them by reason."""
    from idlehook.cli import tables

    title = "reap (dry run)" if report.dry_run else "reap"
    shown = [*report.outcomes, *(report.kept if list_kept else [])]
    heading = f"{title}: {report.examined} sessions examined"
    if shown:
        t = tables.table("session", "status", "action", "why", "$/h saved", "error", title=heading)
        for o in shown:
            t.add_row(*_cells(o), style=_style(o))
        tables.print_table(t, out)
    else:
        out.print(heading)
    # Whole lines: a printed table leaves a piped console only as wide as itself.
    if report.kept and not list_kept:
        out.print(kept_line(report), style="dim", soft_wrap=True)
    out.print(saving_line(report), soft_wrap=True)
    if not report.ok:
        out.print(
            "some sessions could not be reaped; they are retried next run",
            style="red",
            soft_wrap=True,
        )


def _cells(o: "Outcome") -> tuple[str, str, str, str, str, str]:
    from store.models import ReaperActionKind

    if o.action is ReaperActionKind.KEPT:
        why = o.detail or o.reason
    else:
        why = f"{o.reason}: {o.detail}" if o.detail else o.reason
    return (
        o.session_id,
        o.status,
        _SAID.get(str(o.action), str(o.action)),
        why,
        f"{o.saving_usd_per_hour:.4f}" if o.saving_usd_per_hour else "",
        o.error or "",
    )


def _style(o: "Outcome") -> str:
    from store.models import ReaperActionKind

    if o.failed:
        return "red"
    if o.action is ReaperActionKind.SKIPPED:
        return "yellow"
    return "dim" if o.action is ReaperActionKind.KEPT else ""


def kept_line(report: "ReapReport") -> str:
    counts = ", ".join(f"{n} {reason}" for reason, n in report.kept_by_reason.items())
    return f"kept {len(report.kept)}: {counts} (--all lists them)"


def saving_line(report: "ReapReport") -> str:
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
    from rich.console import Console

    from idlehook import wiring

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


async def _reconcile(settings: "Settings", engine: "Engine") -> "ReconcileReport":
    from idlehook import wiring

    async with wiring.api_client(settings, engine) as client:
        reconciler = wiring.reconciler(settings, engine, client)
        try:
            return await reconciler.sweep()
        finally:
            await reconciler.aclose()


def render_reconcile(console: "Console", report: "ReconcileReport") -> None:
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
