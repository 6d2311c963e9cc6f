"""The `idlehook` command: one module per command group, no logic inside.

Each group module exposes `register(subparsers)`; it adds its commands and sets `func` on each
parser, a callable taking the parsed arguments and returning the exit code.
"""

import argparse
import importlib
import sys
from collections.abc import Sequence

from idlehook.logs import configure_logging
from idlehook.wiring import ConfigError

# Command-group modules, in the order `idlehook --help` lists them.
GROUPS = [
    "idlehook.cli.demo",
    "idlehook.cli.serve",
    "idlehook.cli.worker",
    "idlehook.cli.sessions",
    "idlehook.cli.followups",
    "idlehook.cli.budget",
    "idlehook.cli.reap",
    "idlehook.cli.approvals",
    "idlehook.cli.keys",
    "idlehook.cli.emulator",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="idlehook",
        description="Run Claude Managed Agents in production without holding streams open.",
    )
    parser.add_argument(
        "--config", default=None, help="TOML config file (default: ./idlehook.toml if present)"
    )
    parser.add_argument("--log-json", action="store_true", default=None, help="JSON log lines")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in GROUPS:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # Logs always go to stderr, whatever ran before in this process: stdout is the command's
    # output (a session id, JSON) and must stay clean. Uncached, so a later reconfiguration
    # (a command's own settings, a test's capture) takes effect for loggers already in use.
    configure_logging(json=True if args.log_json else None, cache=False)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        code = func(args)
    except KeyboardInterrupt:
        return 130
    except ConfigError as exc:
        print(f"idlehook: configuration error: {exc}", file=sys.stderr)
        return 2
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
