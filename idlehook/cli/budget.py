"""`idlehook budget`: raise a session's spend ceiling. No logic here.

    idlehook budget sesn_01 12.50 [--json]     new cap $12.50; the API resumes a paused session

Only a session created with a budget can have it raised, only upwards, and only above what it has
spent; each refusal is explained and costs no update call. Exit codes: 0 raised, 1 refused or
failed.
"""

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from idlehook.settings import Settings
    from sessions.budget_raise import RaisedBudget


def register(subparsers: Any) -> None:
    command = subparsers.add_parser(
        "budget",
        help="raise a session's spend ceiling (resumes one paused on it)",
        description="Raise the budget of a session created with one.",
    )
    command.add_argument("session", metavar="SESSION")
    command.add_argument("usd", type=float, metavar="USD", help="the new cap in US dollars")
    command.add_argument("--json", action="store_true", help="print the new budget as JSON")
    command.set_defaults(func=run_budget)


async def _raise(settings: "Settings", session_id: str, usd: float) -> "RaisedBudget":
    from idlehook import wiring

    engine = wiring.open_engine(settings, pool_size=2)
    try:
        async with wiring.api_client(settings, engine, max_retries=0) as client:
            return await wiring.launcher(settings, engine, client).raise_budget(session_id, usd)
    finally:
        engine.dispose()


def run_budget(args: argparse.Namespace) -> int:
    import asyncio

    from idlehook import wiring
    from sessions.budget import BudgetError, usd_to_cents

    settings = wiring.settings_from_args(args)
    try:
        usd_to_cents(args.usd)  # bad input opens nothing
        raised = asyncio.run(_raise(settings, args.session, args.usd))
    except BudgetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(raised.to_json(), indent=2))
        return 0
    print(
        f"{raised.session_id}: budget raised from ${raised.previous_cap_usd:.2f} to "
        f"${raised.cap_usd:.2f} (spent ${raised.spent_usd:.2f}; now {raised.status})"
    )
    return 0
