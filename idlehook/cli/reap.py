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
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import structlog
from anthropic import AsyncAnthropic
from rich.console import Console
from rich.table import Table
from sqlalchemy.engine import Engine

from handlers.api import HandlerContext, Notification
from handlers.builtin.archive import ArchiveHandler
from handlers.result import SessionResult
from idlehook.logs import configure_logging
from idlehook.settings import Settings
from sessions.durations import DurationError, parse_duration
from sessions.pacing import Pacer
from sessions.reap_policy import ReapPolicy
from sessions.reaper import Archiver, Reaper, ReapReport
from sessions.reconciler import Reconciler, SweepReport
from store.engine import make_engine
from store.models import ReaperActionKind, utcnow
from store.sessions import SessionStore


def register(subparsers: Any) -> None:
    reap = subparsers.add_parser("reap", help="delete orphaned sessions (once; for cron)")
    reap.add_argument("--dry-run", action="store_true", help="show what would go; change nothing")
    reap.add_argument("--idle-for", metavar="DURATION", help="grace for idle sessions (15m)")
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


# -- building (the lead's wiring.py may take these over) -----------------------------------


def policy_from_settings(
    settings: Settings,
    *,
    idle_for: str | None = None,
    max_age: str | None = None,
    include_unowned: bool = False,
) -> ReapPolicy:
    cfg = settings.reaper
    age = max_age or cfg.max_age
    return ReapPolicy(
        owner=settings.owner,
        idle_for=parse_duration(idle_for or cfg.idle_for),
        include_unowned=include_unowned or cfg.include_unowned,
        max_age=parse_duration(age) if age else None,
        owned_deployments=frozenset(cfg.owned_deployments),
        exclude_metadata=dict(cfg.exclude_metadata),
        archive_before_delete=cfg.archive_before_delete,
        container_usd_per_hour=cfg.container_usd_per_hour,
    )


def client_from_settings(settings: Settings) -> AsyncAnthropic:
    return AsyncAnthropic(api_key=settings.api_key.get_secret_value(), base_url=settings.base_url)


def pacer_from_settings(settings: Settings, engine: Engine) -> Pacer:
    return Pacer(engine, rpm={"create": settings.create_rpm, "read": settings.read_rpm})


def archiver(
    settings: Settings,
    engine: Engine,
    client: AsyncAnthropic,
    now: Callable[[], datetime] = utcnow,
) -> Archiver:
    """The archive plugin's own code, run by the reaper on a session nothing has saved yet."""
    sessions = SessionStore(engine)
    handler = ArchiveHandler(settings.results_dir)
    log = structlog.get_logger("idlehook.reaper.archive")

    async def mark(
        session_id: str,
        *,
        result_captured: bool = False,
        transcript_saved: bool = False,
        deleted: bool = False,
        result: SessionResult | None = None,
    ) -> None:
        await asyncio.to_thread(
            sessions.mark,
            session_id,
            now(),
            result_captured=result_captured,
            transcript_saved=transcript_saved,
            deleted=deleted,
        )

    async def archive(session_id: str) -> None:
        notification = Notification(
            delivery_id=0,
            event_id=f"reaper_{session_id}",
            event_type="session.status_idled",
            resource_id=session_id,
            session_id=session_id,
            source="reaper",
            received_at=now(),
        )
        ctx = HandlerContext(
            event=notification,
            client=client,
            log=log.bind(session_id=session_id),
            now=now,
            settings=settings,
            handler=handler.name,
            mark=mark,
        )
        await handler.handle(ctx)

    return archive


def build_reaper(
    settings: Settings,
    engine: Engine,
    client: AsyncAnthropic,
    policy: ReapPolicy,
    archive: Archiver | None = None,
) -> Reaper:
    return Reaper(
        client,
        engine,
        policy,
        gate=pacer_from_settings(settings, engine),
        archive=archive,
        lookback=parse_duration(settings.reaper.lookback),
        interrupt_wait_seconds=settings.reaper.interrupt_wait_seconds,
    )


def build_reconciler(settings: Settings, engine: Engine, client: AsyncAnthropic) -> Reconciler:
    cfg = settings.reconcile
    return Reconciler(
        client,
        engine,
        gate=pacer_from_settings(settings, engine),
        lookback=parse_duration(cfg.lookback),
        settle=timedelta(seconds=cfg.settle_seconds),
        silence_alarm=timedelta(seconds=cfg.silence_alarm_seconds),
    )


# -- commands --------------------------------------------------------------------------------


def _settings(args: argparse.Namespace) -> Settings:
    settings = Settings.load(config=Path(args.config) if args.config else None)
    if not structlog.is_configured():  # configure once per process: main() may have already
        configure_logging(json=args.log_json if args.log_json else settings.json_logs)
    return settings


def run_reap(args: argparse.Namespace) -> int:
    console = Console()
    settings = _settings(args)
    try:
        policy = policy_from_settings(
            settings,
            idle_for=args.idle_for,
            max_age=args.max_age,
            include_unowned=args.include_unowned,
        )
    except DurationError as exc:
        console.print(f"[red]error:[/red] {exc}")
        return 2
    engine = make_engine(settings.database_url)
    try:
        report = asyncio.run(_reap(settings, engine, policy, args.dry_run))
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
    settings: Settings, engine: Engine, policy: ReapPolicy, dry_run: bool
) -> ReapReport:
    async with client_from_settings(settings) as client:
        archive = archiver(settings, engine, client) if policy.archive_before_delete else None
        reaper = build_reaper(settings, engine, client, policy, archive)
        return await reaper.run(dry_run=dry_run)


_VERB = {
    ReaperActionKind.DELETED: ("deleted", "would delete"),
    ReaperActionKind.INTERRUPTED: ("interrupted", "would interrupt"),
    ReaperActionKind.ARCHIVED: ("archived", "would archive"),
}


def render_reap(console: Console, report: ReapReport) -> None:
    title = "reap (dry run)" if report.dry_run else "reap"
    table = Table(title=f"{title}: {report.examined} sessions examined")
    for column in ("session", "status", "action", "reason", "saves $/h", "error"):
        table.add_column(column, justify="right" if column == "saves $/h" else "left")
    for o in report.outcomes:
        done, would = _VERB.get(o.action, (str(o.action), str(o.action)))
        style = "red" if o.failed else ("yellow" if o.action is ReaperActionKind.SKIPPED else "")
        table.add_row(
            o.session_id,
            o.status,
            would if o.dry_run else done,
            o.reason,
            f"{o.saving_usd_per_hour:.4f}" if o.saving_usd_per_hour else "",
            o.error or "",
            style=style,
        )
    console.print(table)
    saving = sum(
        o.saving_usd_per_hour for o in report.outcomes if o.action is ReaperActionKind.DELETED
    )
    verb = "would save" if report.dry_run else "saves"
    console.print(f"{verb} about ${saving:.4f}/hour in container time")
    if not report.ok:
        console.print("[red]some sessions could not be reaped; they are retried next run[/red]")


def run_reconcile(args: argparse.Namespace) -> int:
    settings = _settings(args)
    engine = make_engine(settings.database_url)
    try:
        report = asyncio.run(_reconcile(settings, engine))
    finally:
        engine.dispose()
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        render_reconcile(Console(), report)
    return 1 if report.failed or report.alarm else 0


async def _reconcile(settings: Settings, engine: Engine) -> SweepReport:
    async with client_from_settings(settings) as client:
        return await build_reconciler(settings, engine, client).sweep()


def render_reconcile(console: Console, report: SweepReport) -> None:
    console.print(
        f"examined {report.examined} sessions, {report.changed} changed, "
        f"{len(report.synthesised)} missed transitions delivered"
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
