"""`idlehook serve` (the receiver, plus a worker process running the worker and the sweeps unless
--no-worker) and `idlehook db`.

Before it listens, `serve` says on stdout where and with what (address, webhook path, worker,
database, signing keys), and a receiver with no signing key at all refuses to start: it would
answer every webhook 401 until Anthropic disabled the endpoint.
"""

import argparse
import sys
from typing import TYPE_CHECKING, Any

from idlehook.cli import prune

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from idlehook import supervise
    from idlehook.settings import Settings
    from receiver.app import ExtraLifespan

# Exit code for a configuration serve cannot run with (as for every command's bad config).
EXIT_CONFIG = 2
NO_KEY = (
    "error: no webhook signing key: every webhook would be refused (401). Set "
    "ANTHROPIC_WEBHOOK_SIGNING_KEY=whsec_... (the endpoint's secret, from the Console) or run "
    "`idlehook keys add whsec_...`, then start again"
)


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
    # A server's log is its record: info lines unless asked otherwise (-q, --log-level).
    serve.set_defaults(func=run_serve, default_log_level="INFO")

    db = subparsers.add_parser("db", help="database schema")
    db_commands = db.add_subparsers(dest="db_command", metavar="COMMAND", required=True)
    db_commands.add_parser("migrate", help="bring the schema up to date").set_defaults(
        func=run_migrate
    )
    prune.register(db_commands)


def run_serve(args: argparse.Namespace) -> int:
    import gc

    from idlehook import config_check, supervise, tracing, wiring
    from idlehook.logs import configure_logging
    from receiver import server
    from receiver.http_guard import HttpLimits

    settings = wiring.settings_from_args(args)
    # A config that would silently disable something is refused before anything logs, in one
    # line (the worker process checks it again: it may run without serve).
    if not args.no_worker:
        config_check.require(settings)
    # A long-lived server reconfigures nothing later, so its loggers may cache their pipeline
    # (main() configures uncached for tests); every delivery logs a line, so this is hot.
    configure_logging(json=True if args.log_json else settings.json_logs, cache=True)
    # `[tracing]`: this process's provider (its worker process installs its own).
    tracing.configure(settings, role="receiver")
    # No key at all: refused before anything else starts, in one line (the store's keys count,
    # so the schema is brought up to date first).
    engine = wiring.open_engine(settings)
    keys = _signing_keys(settings, engine)
    if not sum(keys):
        engine.dispose()
        print(NO_KEY, file=sys.stderr)
        return EXIT_CONFIG
    # Before the server opens its sockets and the writer its files: the open-file limit up, the
    # connection cap under it (the cap follows the limit, not the files open now).
    limits = server.prepare(HttpLimits.from_settings(settings.http))
    # The worker and the sweeps run in a process of their own (idlehook/supervise.py): in this
    # one they took the event loop and SQLite's write lock from the webhook path.
    worker: supervise.Supervisor | None = None
    if not args.no_worker:
        argv = supervise.worker_argv(args.config, args.log_json)
        if getattr(args, "log_level", None):  # -q / -v / --log-level: the worker logs alike
            argv[3:3] = ["--log-level", args.log_level]
        worker = supervise.Supervisor(argv)
    svc = wiring.service(
        settings,
        engine=engine,
        run_worker=False,
        checked=not args.no_worker,  # done above: its warnings logged once
        on_new=worker.wake if worker is not None else None,
        lifespan=_worker_process(worker) if worker is not None else None,
    )
    # Everything built so far lives as long as the process: out of the collector's sight, a
    # full collection no longer walks the SDK's and SQLAlchemy's objects (p99 ack 100 ms -> 10 ms
    # under load, bench/README.md).
    gc.freeze()
    host, port = args.host or settings.host, args.port or settings.port
    print(_banner(settings, host, port, worker is not None, keys), flush=True)
    # The one server configuration (receiver/server.py): header/body deadlines, header cap,
    # connection cap. The tests run this same function.
    config = server.uvicorn_config(svc.app, limits, host=host, port=port)
    try:
        started = server.run(config)
    finally:
        svc.inbox.close()  # no writer process outlives the receiver; disposes the engine too
        tracing.shutdown()  # the last spans out
    return 0 if started else 3  # uvicorn's own exit code for a server that never started


def _signing_keys(settings: "Settings", engine: "Engine") -> tuple[int, int]:
    """(from the environment or config, verifying from the store), as the receiver loads them."""
    from store import signing_keys
    from store.models import utcnow

    return len(settings.signing_key_values()), len(signing_keys.verifying(engine, utcnow()))


def _banner(settings: "Settings", host: str, port: int, worker: bool, keys: tuple[int, int]) -> str:
    from idlehook.errors import masked_url
    from receiver.config import WEBHOOK_PATH

    shown = f"[{host}]" if ":" in host else host
    env, stored = keys
    page = "page at /" if settings.api_token else "page off (no IDLEHOOK_API_TOKEN)"
    work = (
        f"worker process: on ({settings.worker.concurrency} runs at once)"
        if worker
        else "worker process: off (--no-worker: run `idlehook worker` elsewhere)"
    )
    return (
        f"idlehook serve: listening on http://{shown}:{port}{WEBHOOK_PATH} (webhook path), "
        f"{page}, {work}, database {masked_url(settings.database_url)}, "
        f"signing keys: {env + stored} ({env} from env, {stored} from the store)"
    )


def _worker_process(worker: "supervise.Supervisor") -> "ExtraLifespan":
    """The worker process for as long as the receiver serves: started once service() has
    migrated the schema; stopped in the lifespan's shutdown, because uvicorn re-raises the
    SIGTERM it caught once it returns, and nothing after `server.run` would get to run."""
    import asyncio
    import contextlib
    from collections.abc import AsyncIterator

    from receiver.app import ReceiverApp

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
    from idlehook.errors import masked_url
    from idlehook.loading import settings_from_args
    from store.engine import make_engine, migrate, schema_revision

    settings = settings_from_args(args)
    engine = make_engine(settings.database_url, pool_size=1)
    try:
        migrate(engine)
        revision = schema_revision(engine)
    finally:
        engine.dispose()
    print(f"schema of {masked_url(settings.database_url)} is up to date (revision {revision})")
    return 0
