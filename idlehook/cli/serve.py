"""`idlehook serve` (the receiver, plus a worker process running the worker and the sweeps unless
--no-worker) and `idlehook db`."""

import argparse
import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator
from typing import Any

from idlehook import supervise, wiring
from idlehook.cli import prune
from idlehook.logs import configure_logging
from receiver import server
from receiver.app import ExtraLifespan, ReceiverApp
from receiver.http_guard import HttpLimits
from store.engine import make_engine, migrate


def register(subparsers: Any) -> None:
    serve = subparsers.add_parser(
        "serve", help="receive signed webhooks; run the worker and sweeps in a process of their own"
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
    prune.register(db_commands)


def run_serve(args: argparse.Namespace) -> int:
    settings = wiring.settings_from_args(args)
    # A long-lived server reconfigures nothing later, so its loggers may cache their pipeline
    # (main() configures uncached for tests); every delivery logs a line, so this is hot.
    configure_logging(json=True if args.log_json else settings.json_logs, cache=True)
    # Before anything opens a file: the open-file limit up, the connection cap under it.
    limits = server.prepare(HttpLimits.from_settings(settings.http))
    # The worker and the sweeps run in a process of their own (idlehook/supervise.py): in this
    # one they took the event loop and SQLite's lock from the webhook path.
    worker: supervise.Supervisor | None = None
    if not args.no_worker:
        worker = supervise.Supervisor(supervise.worker_argv(args.config, args.log_json))
    svc = wiring.service(
        settings,
        run_worker=False,
        on_new=worker.wake if worker is not None else None,
        lifespan=_worker_process(worker) if worker is not None else None,
    )
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


def _worker_process(worker: supervise.Supervisor) -> ExtraLifespan:
    """The worker process for as long as the receiver serves: started once service() has
    migrated the schema; stopped in the lifespan's shutdown, because uvicorn re-raises the
    SIGTERM it caught once it returns, and nothing after `server.run` would get to run."""

    @contextlib.asynccontextmanager
    async def run(_: ReceiverApp) -> AsyncIterator[None]:
        worker.start()
        try:
            yield
        finally:
            # SIGTERM: in-flight runs finish; SIGKILL after a deadline.
            await asyncio.to_thread(worker.stop)

    return run


def run_migrate(args: argparse.Namespace) -> int:
    settings = wiring.settings_from_args(args)
    engine = make_engine(settings.database_url, pool_size=1)
    try:
        migrate(engine)
    finally:
        engine.dispose()
    print("schema is up to date")
    return 0
