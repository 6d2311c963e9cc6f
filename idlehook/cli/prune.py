"""`idlehook db prune`: delete old, finished history once (the `[retention]` sweep, for cron).

    idlehook db prune --dry-run          per table, what would be deleted
    idlehook db prune --older-than 30d   every kind of history older than 30 days

Without `--older-than`, each kind keeps its `[retention]` age. Nothing younger than 24 hours
goes, whatever is asked: a retried webhook is de-duplicated by the event id it keeps.
"""

import argparse
import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

    from store.retention import PruneReport


def register(db_commands: Any) -> None:
    """Adds `prune` to the `idlehook db` group (idlehook/cli/serve.py)."""
    cmd = db_commands.add_parser("prune", help="delete old, finished history (once; for cron)")
    cmd.add_argument(
        "--older-than",
        metavar="DURATION",
        default=None,
        help="one age for every kind of history, at least 24h (default: [retention])",
    )
    cmd.add_argument("--dry-run", action="store_true", help="count what would go; delete nothing")
    cmd.add_argument("--json", action="store_true", help="print the counts as JSON")
    cmd.set_defaults(func=run_prune)


def run_prune(args: argparse.Namespace) -> int:
    from handlers.durations import DurationError, parse_duration
    from idlehook import wiring  # the [retention] policy is built there
    from idlehook.cli import tables
    from store.models import utcnow
    from store.retention import FLOOR, prune

    console = tables.console()  # piped: wide, never an ellipsis
    settings = wiring.settings_from_args(args)
    try:
        if args.older_than is not None and parse_duration(args.older_than) < FLOOR:
            raise DurationError(
                f"--older-than {args.older_than} is under the 24h floor: a retried webhook "
                "is de-duplicated by the event id its delivery keeps"
            )
        policy = wiring.retention_policy(settings, older_than=args.older_than)
    except DurationError as exc:
        console.print(f"[red]error:[/red] {exc}")
        return 2
    engine = wiring.open_engine(settings, pool_size=1)
    try:
        report = prune(engine, policy, utcnow(), dry_run=args.dry_run)
    finally:
        engine.dispose()
    if args.json:
        print(json.dumps(as_dict(report), indent=2))
    else:
        render(console, report)
    return 0


def as_dict(report: "PruneReport") -> dict[str, Any]:
    return {
        "dry_run": report.dry_run,
        "would_delete" if report.dry_run else "deleted": report.deleted,
        "total": report.total,
        "cutoffs": {k: v.isoformat() if v else None for k, v in report.cutoffs.items()},
        "batches": report.batches,
    }


def render(console: "Console", report: "PruneReport") -> None:
    from rich.table import Table

    verb = "would delete" if report.dry_run else "deleted"
    table = Table(title=f"idlehook db prune{' --dry-run' if report.dry_run else ''}")
    table.add_column("table")
    table.add_column(verb, justify="right")
    for name, count in report.deleted.items():
        table.add_row(name, f"{count:,}")
    console.print(table)
    console.print(f"{verb} {report.total:,} row(s) in {report.batches} batch(es)")
