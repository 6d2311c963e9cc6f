"""The `idlehook` command: one module per command group, no logic inside.

Each group module exposes `register(subparsers)`; it adds its commands and sets `func` on each
parser, a callable taking the parsed arguments and returning the exit code.

Building the parser imports nothing heavy (no SDK, SQLAlchemy, pydantic or rich): a group
module imports those inside its `run_*` functions, so `idlehook --help` and a typo answer at
once. tests/cli/test_cli_speed.py holds it to that.
"""

import argparse
import importlib
import sys
from collections.abc import Sequence

from idlehook.errors import ConfigError, database_error

# Command-group modules, in the order `idlehook --help` lists them.
GROUPS = [
    "idlehook.cli.demo",
    "idlehook.cli.config",
    "idlehook.cli.serve",
    "idlehook.cli.worker",
    "idlehook.cli.recovery",
    "idlehook.cli.sessions",
    "idlehook.cli.show",
    "idlehook.cli.followups",
    "idlehook.cli.budget",
    "idlehook.cli.reap",
    "idlehook.cli.approvals",
    "idlehook.cli.keys",
    "idlehook.cli.emulator",
]

# A command says what it did on stdout; log lines are for servers, or for asking (-v).
COMMAND_LOG_LEVEL = "WARNING"
# Exit code when the database cannot be reached or used.
EXIT_DATABASE = 3


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="idlehook",
        description="Run Claude Managed Agents in production without holding streams open.",
    )
    parser.add_argument(
        "--config", default=None, help="TOML config file (default: ./idlehook.toml if present)"
    )
    parser.add_argument("--log-json", action="store_true", default=None, help="JSON log lines")
    loudness = parser.add_mutually_exclusive_group()
    loudness.add_argument(
        "-v",
        "--verbose",
        dest="log_level",
        action="store_const",
        const="INFO",
        help="log what the command does (info lines, on stderr)",
    )
    loudness.add_argument(
        "-q",
        "--quiet",
        dest="log_level",
        action="store_const",
        const="ERROR",
        help="log errors only (serve and worker too)",
    )
    loudness.add_argument(
        "--log-level",
        dest="log_level",
        type=str.upper,
        choices=("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"),
        metavar="LEVEL",
        help="DEBUG, INFO, WARNING, ERROR (default: WARNING; serve and worker: INFO)",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in GROUPS:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    from idlehook import logs

    # Servers (serve, worker) log at info by default; every other command only warnings.
    level = args.log_level or getattr(args, "default_log_level", COMMAND_LOG_LEVEL)
    previous = logs.saved()
    # Logs always go to stderr, whatever ran before in this process: stdout is the command's
    # output (a session id, JSON) and must stay clean. Uncached, so a later reconfiguration
    # (a command's own settings, a test's capture) takes effect for loggers already in use.
    logs.configure_logging(json=True if args.log_json else None, level=level, cache=False)
    try:
        code = func(args)
    except KeyboardInterrupt:
        return 130
    except ConfigError as exc:
        print(f"idlehook: configuration error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        line = database_error(exc, lambda: _database_url(args))
        if line is None or level == "DEBUG":  # --log-level debug: the whole traceback
            raise
        print(f"error: {line}", file=sys.stderr)
        return EXIT_DATABASE
    finally:
        # In-process callers (tests) get their own logging back.
        logs.restore(previous)
    return int(code or 0)


def _database_url(args: argparse.Namespace) -> str | None:
    """The database the command used: its settings again (they loaded once already)."""
    from idlehook.loading import settings_from_args

    try:
        return settings_from_args(args).database_url
    except Exception:
        return None


if __name__ == "__main__":
    sys.exit(main())
