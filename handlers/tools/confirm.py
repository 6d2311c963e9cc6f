"""Tool uses held for confirmation: decide by policy or record for a person, tell the forward
target, send `user.tool_confirmation` once decided, and deny what waited too long.

Everyone who decides (the policy in the worker, `idlehook approve/deny`, `POST /approvals/{id}`,
the expiry sweep) goes through `store.approvals.decide`, a compare-and-set from `pending`, then
`send`. A decision whose send failed stays `decided`; the sweep and the next notification about
the session send it.
"""

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
import structlog
from anthropic import AsyncAnthropic
from sqlalchemy.engine import Engine

from handlers.config import ApprovalSettings, ForwardSettings
from handlers.durations import parse_duration
from handlers.signed_post import post_signed
from handlers.tools.blocking import Blocking, send_answer
from handlers.tools.policy import HeldCall, apply_policy
from store import approvals
from store.approvals import ApprovalView, Decision
from store.models import ApprovalState

log = structlog.get_logger(__name__)


def confirmation_event(approval: ApprovalView) -> dict[str, Any]:
    event: dict[str, Any] = {
        "type": "user.tool_confirmation",
        "tool_use_id": approval.tool_use_id,
        "result": approval.decision,
    }
    if approval.decision == Decision.DENY and approval.message:
        event["deny_message"] = approval.message
    return event


async def send(
    engine: Engine, client: AsyncAnthropic, approval: ApprovalView, now: datetime
) -> bool:
    """Send a decided approval's confirmation and mark it sent; True if the API took it now."""
    accepted = await send_answer(
        client, approval.session_id, confirmation_event(approval), approval.tool_use_id
    )
    await asyncio.to_thread(approvals.mark_sent, engine, approval.id, now)
    log.info(
        "approval.sent",
        approval_id=approval.id,
        session_id=approval.session_id,
        decision=approval.decision,
        decided_by=approval.decided_by,
        accepted=accepted,
    )
    return accepted


def notice(approval: ApprovalView) -> str:
    """What the forward target receives when a person is needed."""
    return json.dumps(
        {
            "type": "idlehook.approval_requested",
            "approval_id": approval.id,
            "session_id": approval.session_id,
            "tool_use_id": approval.tool_use_id,
            "tool_name": approval.tool_name,
            "input": approval.input,
            "agent_id": approval.agent_id,
            "requested_at": approval.requested_at.isoformat(),
            "expires_at": approval.expires_at.isoformat() if approval.expires_at else None,
        },
        separators=(",", ":"),
        sort_keys=True,
        default=str,
    )


async def notify(
    engine: Engine,
    config: ForwardSettings,
    approval: ApprovalView,
    now: datetime,
    transport: httpx.AsyncBaseTransport | None = None,
) -> bool:
    """Tell the forward target a person is needed; False when no target is configured."""
    if not config.url:
        return False
    # Stable across retries: the target de-duplicates on it.
    message_id = f"approval_{approval.tool_use_id}"
    await post_signed(config, message_id, notice(approval), now, transport)
    await asyncio.to_thread(approvals.mark_notified, engine, approval.id, now)
    log.info("approval.notified", approval_id=approval.id, session_id=approval.session_id)
    return True


@dataclass(frozen=True)
class HeldOutcome:
    approval: ApprovalView
    action: str  # allow | deny | ask (what the policy said when it was first seen)


class Confirmer:
    """Settles one session's held tool uses on a `requires_action` notification."""

    def __init__(
        self,
        engine: Engine,
        client: AsyncAnthropic,
        settings: ApprovalSettings,
        forward: ForwardSettings,
        *,
        now: Callable[[], datetime],
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.engine = engine
        self.client = client
        self.settings = settings
        self.forward = forward
        self.now = now
        self.transport = transport
        self.timeout: timedelta = parse_duration(settings.timeout)

    async def hold(
        self,
        session_id: str,
        call: Blocking,
        agent_id: str | None,
        metadata: dict[str, str],
    ) -> HeldOutcome:
        """Decide (or record for a person) and, once decided, send. Idempotent per tool use."""
        existing = await asyncio.to_thread(approvals.find, self.engine, call.id)
        if existing is None:
            held = HeldCall(call.name, call.input, agent_id, metadata)
            decision = apply_policy(self.settings, held)
            now = self.now()
            chosen = None if decision.action == "ask" else Decision(decision.action)
            recorded, _ = await asyncio.to_thread(
                lambda: approvals.record(
                    self.engine,
                    session_id=session_id,
                    tool_use_id=call.id,
                    tool_name=call.name,
                    input=call.input,
                    agent_id=agent_id,
                    now=now,
                    expires_at=now + self.timeout,
                    decision=chosen,
                    message=decision.message,
                    decided_by="policy" if chosen else None,
                )
            )
            existing = recorded
            log.info(
                "approval.held",
                approval_id=recorded.id,
                tool=call.name,
                action=decision.action,
                rule=decision.rule,
            )
        action = existing.decision or "ask"
        if existing.state == ApprovalState.DECIDED:
            await send(self.engine, self.client, existing, self.now())
        elif existing.state == ApprovalState.PENDING and existing.notified_at is None:
            await notify(self.engine, self.forward, existing, self.now(), self.transport)
        return HeldOutcome(existing, action)


@dataclass(frozen=True)
class Settled:
    approval: ApprovalView
    decided: bool  # False: it was no longer pending (decided before)
    sent: bool  # the confirmation was accepted now (False: failed, or already answered)
    error: str | None = None


class NotFound(Exception):
    pass


async def settle(
    engine: Engine,
    client: AsyncAnthropic,
    approval_id: int,
    decision: Decision,
    *,
    message: str | None,
    by: str,
    now: datetime,
) -> Settled:
    """A person's decision: record it (first decision wins), then send it.

    A failed send leaves the decision recorded; the sweep sends it later.
    """
    decided = await asyncio.to_thread(
        lambda: approvals.decide(engine, approval_id, decision, message=message, by=by, now=now)
    )
    approval = await asyncio.to_thread(approvals.get, engine, approval_id)
    if approval is None:
        raise NotFound(f"no approval {approval_id}")
    if approval.state != ApprovalState.DECIDED:
        return Settled(approval, decided, sent=False)
    try:
        sent = await send(engine, client, approval, now)
    except Exception as exc:
        log.warning("approval.send_failed", approval_id=approval_id, error=type(exc).__name__)
        return Settled(approval, decided, sent=False, error=f"{type(exc).__name__}: {exc}"[:300])
    fresh = await asyncio.to_thread(approvals.get, engine, approval_id)
    return Settled(fresh or approval, decided, sent=sent)


@dataclass(frozen=True)
class ApprovalSweepReport:
    expired: list[int]
    resent: list[int]


async def sweep(
    engine: Engine, client: AsyncAnthropic, settings: ApprovalSettings, now: datetime
) -> ApprovalSweepReport:
    """Deny approvals past their time (their sessions go to the reaper), and send decisions whose
    send failed earlier."""
    expired = await asyncio.to_thread(approvals.expire, engine, now, settings.expired_message)
    for approval in expired:
        log.info("approval.expired", approval_id=approval.id, session_id=approval.session_id)
    resent: list[int] = []
    for approval in await asyncio.to_thread(approvals.unsent, engine):
        try:
            await send(engine, client, approval, now)
            resent.append(approval.id)
        except Exception as exc:  # the next sweep tries again
            log.warning("approval.send_failed", approval_id=approval.id, error=type(exc).__name__)
    return ApprovalSweepReport([a.id for a in expired], resent)
