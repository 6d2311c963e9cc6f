"""`idlehook config check [--json]`: load the configuration as `serve` would and say what it does.

Prints the effective routes (the written ones, and the built-in ones kept beside them) and any
warnings; a configuration `serve` or `worker` would refuse is one `idlehook: configuration
error: ...` line on stderr and exit 2. With --json the report goes to stdout either way.
"""

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from idlehook.config_check import ConfigReport


def register(subparsers: Any) -> None:
    config = subparsers.add_parser("config", help="check the configuration before running it")
    commands = config.add_subparsers(dest="config_command", metavar="COMMAND", required=True)
    check = commands.add_parser(
        "check",
        help="validate routes, handlers, plugin tables and tools as `serve` would; print the "
        "effective routes",
    )
    check.add_argument("--json", action="store_true", help="print the report as JSON")
    check.set_defaults(func=run_check)


def run_check(args: argparse.Namespace) -> int:
    from idlehook import config_check
    from idlehook.errors import ConfigError
    from idlehook.loading import settings_from_args

    settings = settings_from_args(args)
    report = config_check.check(settings)
    if args.json:
        print(json.dumps(report.as_dict(), indent=2, sort_keys=True, default=str))
    else:
        render(report)
    if report.errors:
        raise ConfigError("; ".join(report.errors))
    return 0


def render(report: "ConfigReport") -> None:
    from rich.markup import escape

    from idlehook.cli import tables

    if report.ok:
        table = tables.table("route", "event types", "conditions", "handlers", "from")
        for route in report.routes:
            conditions = "; ".join(f"{k}: {_value(v)}" for k, v in route.conditions.items())
            cells = (
                route.name,
                ", ".join(route.event_types) or "(any)",
                conditions or "(none)",
                ", ".join(route.handlers),
                "built in" if route.builtin else "config",
            )
            table.add_row(*map(escape, cells))
        tables.print_table(table)
        tools = "not loaded (no route runs answer)" if report.tools is None else None
        print(f"tools: {tools or ', '.join(report.tools or ()) or 'none'}")
        print(f"installed handlers: {', '.join(report.installed_handlers)}")
    for warning in report.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if report.ok:
        print(
            "configuration ok"
            + (f" ({len(report.warnings)} warning(s))" if report.warnings else "")
        )


def _value(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(map(str, value))
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items())
    return str(value)
