"""`idlehook approvals`, `idlehook approve`, `idlehook deny`: a person decides a held tool use.

    idlehook approvals [--session ID] [--json]       tool uses waiting for a person
    idlehook approve SESSION TOOL_USE_ID             send `user.tool_confirmation` allow
    idlehook deny SESSION TOOL_USE_ID --message M    ... deny, with what the agent is told

Exit codes: 0 decided and sent; 1 unknown, already decided, or refused; 3 decided but the send
failed (the worker's sweep sends it).
"""

import argparse
import asyncio
import json
import sys
from typing import Any

from rich.console import Console
from rich.table import Table

from handlers.tools.confirm import Settled, settle
from idlehook import wiring
from idlehook.settings import Settings
from store import approvals
from store.approvals import Decision
from store.models import utcnow

EXIT_NOT_SENT = 3


def register(subparsers: Any) -> None:
    listing = subparsers.add_parser("approvals", help="tool uses waiting for a person")
    listing.add_argument("--session", default=None, metavar="ID")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=run_approvals)

    for name, helptext in (("approve", "allow a held tool use"), ("deny", "deny a held tool use")):
        command = subparsers.add_parser(name, help=helptext)
        command.add_argument("session", metavar="SESSION")
        command.add_argument("tool_use_id", metavar="TOOL_USE_ID")
        if name == "deny":
            command.add_argument("--message", "-m", default=None, help="what the agent is told")
        command.set_defaults(func=run_decide, decision=name)


def run_approvals(args: argparse.Namespace) -> int:
    settings = wiring.settings_from_args(args)
    engine = wiring.open_engine(settings, pool_size=2)
    try:
        rows = approvals.list_pending(engine, args.session)
    finally:
        engine.dispose()
    if args.json:
        print(json.dumps([_pending(p) for p in rows], indent=2, default=str))
        return 0
    table = Table(title=f"{len(rows)} pending approvals")
    for column in ("id", "session", "tool_use_id", "tool", "input", "expires"):
        table.add_column(column)
    for p in rows:
        table.add_row(
            str(p.id),
            p.session_id,
            p.tool_use_id,
            p.tool_name,
            json.dumps(p.input)[:60],
            p.expires_at.isoformat(timespec="seconds") if p.expires_at else "",
        )
    Console().print(table)
    return 0


def _pending(p: approvals.PendingApproval) -> dict[str, Any]:
    return {
        "id": p.id,
        "session_id": p.session_id,
        "tool_use_id": p.tool_use_id,
        "tool_name": p.tool_name,
        "input": p.input,
        "requested_at": p.requested_at,
        "expires_at": p.expires_at,
    }


async def _settle(settings: Settings, args: argparse.Namespace, approval_id: int) -> Settled:
    engine = wiring.open_engine(settings, pool_size=2)
    try:
        async with wiring.api_client(settings, engine) as client:
            return await settle(
                engine,
                client,
                approval_id,
                Decision.ALLOW if args.decision == "approve" else Decision.DENY,
                message=getattr(args, "message", None),
                by="cli",
                now=utcnow(),
            )
    finally:
        engine.dispose()


def run_decide(args: argparse.Namespace) -> int:
    settings = wiring.settings_from_args(args)
    engine = wiring.open_engine(settings, pool_size=2)
    try:
        found = approvals.find(engine, args.tool_use_id, session_id=args.session)
    finally:
        engine.dispose()
    if found is None:
        print(f"error: no approval for {args.tool_use_id} in {args.session}", file=sys.stderr)
        return 1
    settled = asyncio.run(_settle(settings, args, found.id))
    approval = settled.approval
    if not settled.decided:
        print(
            f"error: already decided: {approval.decision} by {approval.decided_by}",
            file=sys.stderr,
        )
        return 1
    if settled.error is not None:
        print(f"decided ({approval.decision}); send failed, will retry: {settled.error}")
        return EXIT_NOT_SENT
    print(f"{approval.decision}: {approval.tool_use_id} ({approval.tool_name})")
    return 0
