"""`idlehook send`: a follow-up message to a session that already exists. No logic here.

    idlehook send sesn_01 --message "Now fix it" [--idempotency-key K] [--deadline 2h] [--json]

Prints the sent `user.message` event id. The same key sends once: a repeat prints the first
send's event id and says nothing new was sent. Without a key a fresh one is made, so running the
command again sends the message again. Exit codes: 0 sent (now or before); 1 refused (bad input,
unknown or closed session, key taken); 3 not sent now, the API or store unreachable: retry with
the printed idempotency key, which is safe.
"""

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from idlehook.settings import Settings
    from sessions.followups import FollowUpResult

EXIT_RETRY = 3


def register(subparsers: Any) -> None:
    send = subparsers.add_parser(
        "send",
        help="send a follow-up message to an existing session (idle or running)",
        description="Send one more user message to a session and re-arm its deadline.",
    )
    send.add_argument("session", metavar="SESSION", help="the session id (sesn_...)")
    send.add_argument("--message", "-m", required=True, metavar="TEXT")
    send.add_argument("--idempotency-key", metavar="KEY", help="same key, one message")
    send.add_argument(
        "--deadline",
        metavar="DURATION",
        help="e.g. 2h: the new run's allowance (default: the session's own allowance)",
    )
    send.add_argument("--json", action="store_true", help="print the result as JSON")
    send.set_defaults(func=run_send)


async def _send(
    args: argparse.Namespace, settings: "Settings", engine: "Engine"
) -> "FollowUpResult":
    from idlehook import wiring

    # No SDK retries: it sends no idempotency key (the follow-up settles doubt itself).
    async with wiring.api_client(settings, engine, max_retries=0) as client:
        launcher = wiring.launcher(settings, engine, client)
        return await launcher.send(
            args.session,
            args.message,
            idempotency_key=args.idempotency_key,
            deadline=args.deadline,
        )


def run_send(args: argparse.Namespace) -> int:
    import asyncio

    from idlehook import wiring
    from sessions.followups import FollowUpError, FollowUpUnavailable

    settings = wiring.settings_from_args(args)
    engine = wiring.open_engine(settings, pool_size=2)
    try:
        result = asyncio.run(_send(args, settings, engine))
    except FollowUpUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_RETRY
    except FollowUpError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
        return 0
    print(result.event_id or "sent")
    if not result.new:
        key = result.idempotency_key
        note = (
            f"an earlier attempt with idempotency key {key} delivered it"
            if result.recovered
            else f"already sent with idempotency key {key}"
        )
        print(f"{note}: nothing new sent", file=sys.stderr)
    if result.deadline is not None:
        print(f"deadline: {result.deadline.isoformat(timespec='seconds')}", file=sys.stderr)
    return 0
