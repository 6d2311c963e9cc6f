"""`idlehook serve` (receiver, plus worker and sweeps unless --no-worker) and `idlehook db`."""

import argparse
import gc
from typing import Any

from idlehook import wiring
from idlehook.logs import configure_logging
from receiver import server
from receiver.http_guard import HttpLimits
from store.engine import make_engine, migrate


def register(subparsers: Any) -> None:
    serve = subparsers.add_parser(
        "serve", help="receive signed webhooks; run the worker and sweeps in-process"
    )
    serve.add_argument("--host", default=None, help="bind address (default from config)")
    serve.add_argument("--port", type=int, default=None, help="port (default 8080)")
    serve.add_argument(
        "--no-worker",
        action="store_true",
        help="receiver only: run workers elsewhere with `idlehook worker` (scale-out)",
    )
    serve.set_defaults(func=run_serve)

    db = subparsers.add_parser("db", help="database schema")
    db_commands = db.add_subparsers(dest="db_command", metavar="COMMAND", required=True)
    db_commands.add_parser("migrate", help="bring the schema up to date").set_defaults(
        func=run_migrate
    )


def run_serve(args: argparse.Namespace) -> int:
    settings = wiring.settings_from_args(args)
    # A long-lived server reconfigures nothing later, so its loggers may cache their pipeline
    # (main() configures uncached for tests); every delivery logs a line, so this is hot.
    configure_logging(json=True if args.log_json else settings.json_logs, cache=True)
    # Before anything opens a file: the open-file limit up, the connection cap under it.
    limits = server.prepare(HttpLimits.from_settings(settings.http))
    svc = wiring.service(settings, run_worker=not args.no_worker)
    # Everything built so far lives as long as the process: out of the collector's sight, a
    # full collection no longer walks the SDK's and SQLAlchemy's objects (p99 ack 100 ms -> 10 ms
    # under load, bench/README.md).
    gc.freeze()
    # The one server configuration (receiver/server.py): header/body deadlines, header cap,
    # connection cap. The tests run this same function.
    config = server.uvicorn_config(
        svc.app, limits, host=args.host or settings.host, port=args.port or settings.port
    )
    try:
        started = server.run(config)
    finally:
        svc.inbox.close()  # no writer process outlives the receiver; disposes the engine too
    return 0 if started else 3  # uvicorn's own exit code for a server that never started


def run_migrate(args: argparse.Namespace) -> int:
    settings = wiring.settings_from_args(args)
    engine = make_engine(settings.database_url, pool_size=1)
    try:
        migrate(engine)
    finally:
        engine.dispose()
    print("schema is up to date")
    return 0
