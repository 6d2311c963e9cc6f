"""Raise a session's spend ceiling: one paced read to check the API's rules, one paced update.

A person does this (CLI, HTTP, web page) after a session idled with `budget_reached`; the API
resumes the paused session by itself once the new cap is accepted. Every refusal the API would
give is checked first, so a refused raise costs no update call.
"""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import anthropic
import structlog
from anthropic import AsyncAnthropic

from handlers.spend import BUDGET_KEY, cap_cents, spent_cents
from sessions.budget import (
    BudgetNotFound,
    BudgetRefused,
    BudgetUnavailable,
    api_refusal,
    budget_param,
    check_raise,
    metadata_value,
    usd_to_cents,
)
from sessions.metadata import MAX_PAIRS
from sessions.retry_after import retry_after_seconds

log = structlog.get_logger(__name__)

DEFAULT_RETRY_AFTER_S = 1.0
T = TypeVar("T")


@dataclass(frozen=True)
class RaisedBudget:
    session_id: str
    cap_usd: float
    previous_cap_usd: float
    spent_usd: float
    status: str
    metadata: dict[str, str]

    def to_json(self) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            "cap_usd": self.cap_usd,
            "previous_cap_usd": self.previous_cap_usd,
            "spent_usd": self.spent_usd,
            "status": self.status,
        }


async def raise_budget(client: AsyncAnthropic, session_id: str, usd: object) -> RaisedBudget:
    """Set `session_id`'s cap to `usd`; raises InvalidBudget, BudgetNotFound, BudgetRefused or
    BudgetUnavailable, each with a sentence for the operator."""
    new_cents = usd_to_cents(usd)
    session = await _call(session_id, lambda: client.beta.sessions.retrieve(session_id))
    current = cap_cents(session.budget)
    spent = spent_cents(session.usage)
    check_raise(
        session_id,
        status=session.status,
        archived=session.archived_at is not None,
        current_cents=current,
        spent=spent,
        new_cents=new_cents,
    )
    assert current is not None  # check_raise refused a session without one
    metadata = dict(session.metadata or {})
    patch: dict[str, str | None] | None = None
    # The stamped cap is for listings only: never let it cost a raise its last free pair.
    if BUDGET_KEY in metadata or len(metadata) < MAX_PAIRS:
        patch = {BUDGET_KEY: metadata_value(new_cents)}
    extra: dict[str, Any] = {} if patch is None else {"metadata": patch}
    # An update is not a create: the API's 300/min class covers creates only (§7 of the API
    # notes), every other sessions call shares the 600/min one (the client's transport paces).
    updated = await _call(
        session_id,
        lambda: client.beta.sessions.update(
            session_id,
            budget=budget_param(new_cents),
            **extra,
        ),
    )
    log.info(
        "budget.raised",
        session_id=session_id,
        cap_cents=new_cents,
        previous_cap_cents=current,
        spent_cents=spent,
    )
    return RaisedBudget(
        session_id=session_id,
        cap_usd=new_cents / 100,
        previous_cap_usd=current / 100,
        spent_usd=spent_cents(updated.usage) / 100,
        status=updated.status,
        metadata=dict(updated.metadata or {}),
    )


async def _call(session_id: str, call: Callable[[], Awaitable[T]]) -> T:
    """One API call, its failures turned into BudgetErrors."""
    try:
        return await call()
    except anthropic.NotFoundError:
        raise BudgetNotFound(f"unknown session {session_id}") from None
    except anthropic.RateLimitError as exc:
        # The client's transport has already held the class back by the same advice.
        wait = retry_after_seconds(exc.response.headers) or DEFAULT_RETRY_AFTER_S
        raise BudgetUnavailable(f"the API is rate limiting: try again in {wait:g}s") from None
    except anthropic.APIStatusError as exc:
        refusal = api_refusal(exc)
        if refusal is not None:
            raise refusal from None
        if exc.status_code in (400, 409):
            detail = getattr(exc, "api_message", None) or exc.message
            raise BudgetRefused("refused", f"the API refused the change: {detail}") from None
        raise BudgetUnavailable(f"the API failed ({exc.status_code}): try again later") from None
    except anthropic.APIConnectionError:
        raise BudgetUnavailable("could not reach the API: try again later") from None
