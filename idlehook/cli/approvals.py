"""`idlehook approvals`, `idlehook approve`, `idlehook deny`: a person decides a held tool use.

    idlehook approvals [--session ID] [--json]       tool uses waiting for a person
    idlehook approve ID                              by the number `approvals` lists (and
                                                     POST /approvals/{id} takes)
    idlehook approve SESSION TOOL_USE_ID             the same, by the tool use
    idlehook deny ID|SESSION TOOL_USE_ID --message M ... deny, with what the agent is told

Exit codes: 0 decided and sent; 1 unknown, already decided, or refused; 2 bad arguments; 3 decided
but the send failed (the worker's sweep sends it).
"""

import argparse
import asyncio
import json
import sys
from typing import TYPE_CHECKING, Any

from idlehook.cli import tables

if TYPE_CHECKING:
    from handlers.tools.confirm import Settled
    from idlehook.settings import Settings
    from store.approvals import PendingApproval

EXIT_NOT_SENT = 3
EXIT_USAGE = 2


def register(subparsers: Any) -> None:
    listing = subparsers.add_parser("approvals", help="tool uses waiting for a person")
    listing.add_argument("--session", default=None, metavar="ID")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=run_approvals)

    for name, helptext in (("approve", "allow a held tool use"), ("deny", "deny a held tool use")):
        command = subparsers.add_parser(
            name,
            help=helptext,
            description=f"{helptext.capitalize()}: by the id `idlehook approvals` lists, or by "
            "its session and tool use id.",
        )
        command.add_argument(
            "target", metavar="ID|SESSION", help="the approval's id, or its session"
        )
        command.add_argument(
            "tool_use_id", metavar="TOOL_USE_ID", nargs="?", default=None, help="with SESSION"
        )
        if name == "deny":
            command.add_argument("--message", "-m", default=None, help="what the agent is told")
        command.set_defaults(func=run_decide, decision=name)


def run_approvals(args: argparse.Namespace) -> int:
    from idlehook import loading
    from store import approvals

    settings = loading.settings_from_args(args)
    engine = loading.open_engine(settings, pool_size=2)
    try:
        rows = approvals.list_pending(engine, args.session)
    finally:
        engine.dispose()
    if args.json:
        print(json.dumps([_pending(p) for p in rows], indent=2, default=str))
        return 0
    table = tables.table(
        "id", "session", "tool_use_id", "tool", "input", "expires",
        title=f"{len(rows)} pending approvals",
    )  # fmt: skip
    for p in rows:
        table.add_row(
            str(p.id),
            p.session_id,
            p.tool_use_id,
            p.tool_name,
            json.dumps(p.input),  # folded on a terminal, never cut
            p.expires_at.isoformat(timespec="seconds") if p.expires_at else "",
        )
    tables.print_table(table)
    return 0


def _pending(p: "PendingApproval") -> dict[str, Any]:
    return {
        "id": p.id,
        "session_id": p.session_id,
        "tool_use_id": p.tool_use_id,
        "tool_name": p.tool_name,
        "input": p.input,
        "requested_at": p.requested_at,
        "expires_at": p.expires_at,
    }


async def _settle(settings: "Settings", args: argparse.Namespace, approval_id: int) -> "Settled":
    from handlers.tools.confirm import settle
    from idlehook import wiring
    from store.approvals import Decision
    from store.models import utcnow

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
    from idlehook import loading
    from store import approvals

    by_number = args.tool_use_id is None
    if by_number and not args.target.isdigit():
        print(
            f"error: {args.target!r} is no approval id: give the number `idlehook approvals` "
            "lists, or SESSION TOOL_USE_ID",
            file=sys.stderr,
        )
        return EXIT_USAGE
    settings = loading.settings_from_args(args)
    engine = loading.open_engine(settings, pool_size=2)
    try:
        if by_number:
            found = approvals.get(engine, int(args.target))
        else:
            found = approvals.find(engine, args.tool_use_id, session_id=args.target)
    finally:
        engine.dispose()
    if found is None:
        wanted = (
            f"approval {args.target}"
            if by_number
            else f"approval for {args.tool_use_id} in {args.target}"
        )
        print(f"error: no {wanted}", file=sys.stderr)
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
