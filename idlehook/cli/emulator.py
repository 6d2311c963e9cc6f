"""`idlehook emulator`: serve the local Managed Agents API emulator (state in memory)."""

import argparse
import base64
import secrets
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from emulator.config import EmulatorConfig

# EmulatorConfig's defaults, spelled here so `--help` need not import pydantic and the emulator
# (tests/cli/test_cli_speed.py checks they agree).
DEFAULTS: dict[str, Any] = {
    "webhook_max_attempts": 3,
    "disable_after_failed_deliveries": 20,
    "updated_at_moves": "some",
}


def _default(name: str) -> Any:
    return DEFAULTS[name]


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "emulator",
        help="run a local Managed Agents API emulator that sends signed webhooks",
        description="Serve a local stand-in for the Managed Agents API; state lives in memory.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8700)
    parser.add_argument("--api-key", default=None, help="accept only this key (default: any)")
    parser.add_argument(
        "--webhook-url",
        action="append",
        default=[],
        dest="webhook_urls",
        metavar="URL",
        help="deliver webhooks here (repeatable)",
    )
    parser.add_argument(
        "--webhook-secret",
        action="append",
        default=[],
        dest="webhook_secrets",
        metavar="whsec_...",
        help="signing secret (repeat to rotate)",
    )
    parser.add_argument(
        "--speed", type=float, default=1.0, help="time multiplier: 60 makes a minute last a second"
    )
    parser.add_argument(
        "--billing-model",
        choices=["running", "exists"],
        default="running",
        help="running: runtime billed only while running, as the API bills (default); "
        "exists: from create to delete, for comparison",
    )
    parser.add_argument("--default-script", default="end_turn")
    parser.add_argument(
        "--run-seconds", type=float, default=2.0, help="emulated seconds a scripted turn runs"
    )
    parser.add_argument(
        "--second-family",
        action="store_true",
        help="also send session.running / session.idled / ... webhooks",
    )
    parser.add_argument(
        "--attempts",
        type=int,
        default=_default("webhook_max_attempts"),
        metavar="N",
        help="delivery attempts per event per endpoint, the first included "
        "(default: %(default)s; at least 1)",
    )
    parser.add_argument(
        "--disable-after",
        type=int,
        default=_default("disable_after_failed_deliveries"),
        metavar="N",
        help="disable an endpoint after N failed deliveries in a row (default: %(default)s); "
        "a 3xx disables it at once",
    )
    parser.add_argument(
        "--updated-at-moves",
        choices=["some", "always"],
        default=_default("updated_at_moves"),
        help="some: a session's updated_at moves only on title/metadata/budget/agent updates; "
        "always: on status changes too (default: %(default)s)",
    )
    parser.add_argument("--create-rpm", type=int, default=300)
    parser.add_argument("--read-rpm", type=int, default=600)
    parser.add_argument("--no-rate-limits", action="store_true")
    parser.add_argument(
        "--rate-algorithm", choices=["token_bucket", "sliding_window"], default="token_bucket"
    )
    faults = parser.add_argument_group("faults")
    faults.add_argument("--drop", type=float, default=0.0, help="webhook drop probability")
    faults.add_argument("--drop-all", action="store_true")
    faults.add_argument(
        "--duplicate", type=float, default=0.0, help="probability a webhook is delivered twice"
    )
    faults.add_argument(
        "--delay", type=float, default=0.0, help="extra emulated seconds before each delivery"
    )
    faults.add_argument("--reorder", type=int, default=0, help="shuffle within this window")
    faults.add_argument("--burst", type=int, default=1, help="send N copies concurrently")
    faults.add_argument("--api-5xx", type=float, default=0.0, help="API 5xx probability")
    faults.add_argument("--api-429", type=float, default=0.0, help="API 429 probability")
    faults.add_argument(
        "--slow-pages", type=float, default=0.0, help="extra emulated seconds per list page"
    )
    parser.set_defaults(func=run)


def generate_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def config_from_args(args: argparse.Namespace) -> tuple["EmulatorConfig", str | None]:
    """The config for these arguments, and the secret generated when none was given."""
    from emulator.config import EmulatorConfig

    generated = None if args.webhook_secrets else generate_secret()
    config = EmulatorConfig(
        api_key=args.api_key,
        speed=args.speed,
        webhook_urls=args.webhook_urls,
        webhook_secrets=args.webhook_secrets or [generated],
        second_family=args.second_family,
        webhook_max_attempts=args.attempts,
        disable_after_failed_deliveries=args.disable_after,
        updated_at_moves=args.updated_at_moves,
        default_script=args.default_script,
        run_seconds=args.run_seconds,
        billing_model=args.billing_model,
        rate_limits={
            "enabled": not args.no_rate_limits,
            "algorithm": args.rate_algorithm,
            "create_per_minute": args.create_rpm,
            "read_per_minute": args.read_rpm,
        },
        faults={
            "drop": args.drop,
            "drop_all": args.drop_all,
            "duplicate": args.duplicate,
            "delay_seconds": args.delay,
            "reorder_window": args.reorder,
            "burst": args.burst,
        },
        api_faults={
            "error_5xx": args.api_5xx,
            "error_429": args.api_429,
            "slow_page_seconds": args.slow_pages,
        },
    )
    return config, generated


def run(args: argparse.Namespace) -> int:
    import uvicorn
    from pydantic import ValidationError

    from emulator.app import create_emulator
    from idlehook.logs import configure_logging

    # A server: info lines unless asked otherwise (-q, --log-level).
    configure_logging(json=args.log_json, level=getattr(args, "log_level", None) or "INFO")
    try:
        config, generated = config_from_args(args)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        print(f"idlehook emulator: {problems}", file=sys.stderr)
        return 2
    base_url = f"http://{args.host}:{args.port}"
    print(f"emulator: ANTHROPIC_BASE_URL={base_url}", flush=True)
    if generated is not None:
        # Printed once so the receiver can be configured with it; never logged.
        print(f"emulator: webhook signing secret {generated}", flush=True)
    for url in config.webhook_urls:
        print(f"emulator: webhooks -> {url}", flush=True)
    uvicorn.run(
        create_emulator(config),
        host=args.host,
        port=args.port,
        log_level="warning",
        timeout_graceful_shutdown=3,
    )
    return 0
