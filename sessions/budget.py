"""Spend ceilings the API enforces: amounts, priced models, and the rules for raising one.

Pure: no I/O. The API takes a budget as integer cents in a string and enforces it itself; what
idlehook adds is checking the API's rules locally first, so an operator gets a sentence naming
the problem (and no call is spent) instead of a bare 400.
"""

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from fnmatch import fnmatchcase
from typing import Any

from anthropic.types.beta import BetaManagedAgentsBudgetLimitParam

from handlers.spend import format_usd

# Models with a public list price, as glob patterns: `[launch] priced_models` replaces this.
DEFAULT_PRICED_MODELS = ("claude-opus-*", "claude-sonnet-*", "claude-haiku-*", "claude-3*")
# Far above any one session's sane spend: a larger figure is a typo (cents for dollars).
MAX_BUDGET_USD = 10_000
NOT_BUDGETABLE = "model_not_budgetable"
CREATE_ONLY = "budget_create_only"
NOT_RAISED = "budget_not_raised"
TERMINATED = "session_terminated"
# Callable agents are followed this far (each one is a paced read, cached).
MAX_AGENTS_READ = 25


class BudgetError(Exception):
    """A budget that will not be set; the message is for the operator, as is."""


class InvalidBudget(BudgetError):
    """Bad input: not a positive, sane number of US dollars."""


class BudgetNotFound(BudgetError):
    """No such session."""


class BudgetRefused(BudgetError):
    """The API's rules say no; `reason` is the API's own code for it."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class BudgetUnavailable(BudgetError):
    """The API could not be asked (unreachable, rate limited, failing): try again later."""


def usd_to_cents(usd: object) -> int:
    """US dollars -> integer cents, rounded half up; raises InvalidBudget."""
    if isinstance(usd, bool) or not isinstance(usd, int | float):
        raise InvalidBudget("expected a number of US dollars, e.g. 12.50")
    if not math.isfinite(usd) or usd <= 0:
        raise InvalidBudget(f"{usd} is not a positive amount of US dollars")
    if usd > MAX_BUDGET_USD:
        raise InvalidBudget(
            f"${usd:,.2f} is over ${MAX_BUDGET_USD:,}, the most idlehook accepts for one session"
        )
    # Through the decimal text, not the binary float: 0.145 must round to 15 cents, not 14.
    cents = int((Decimal(repr(float(usd))) * 100).quantize(Decimal(1), ROUND_HALF_UP))
    if cents < 1:
        raise InvalidBudget(f"${usd} is under one cent")
    return cents


def metadata_value(cents: int) -> str:
    """What BUDGET_KEY holds (build_metadata writes the same): dollars, two decimals."""
    return f"{cents / 100:.2f}"


def budget_param(cents: int) -> BetaManagedAgentsBudgetLimitParam:
    """The wire shape of a cap, for the create and update calls."""
    return {"type": "limit", "max_list_cost": {"amount": str(cents), "currency": "USD"}}


# -- which models a budgeted launch can run --------------------------------------------------


@dataclass(frozen=True)
class ModelUse:
    """One model an agent can run, and how: `via` completes "agent X ... model M"."""

    model: str
    via: str


def priced(model: str, patterns: Iterable[str]) -> bool:
    return any(fnmatchcase(model, pattern) for pattern in patterns)


def agent_models(agent: Any) -> tuple[list[ModelUse], list[tuple[str, int]]]:
    """The models an agent (BetaManagedAgentsAgent) runs itself, and the saved agents it can
    call (id, version), whose models count too. Inline agents are not known before they run."""
    uses = [ModelUse(str(agent.model.id), "runs")]
    calls: list[tuple[str, int]] = []
    multi = getattr(agent, "multiagent", None)
    if multi is None:
        return uses, calls
    if multi.type == "coordinator":
        for entry in multi.agents:
            if entry.type == "advisor":
                uses.append(ModelUse(str(entry.model), "can consult the advisor"))
            elif entry.type == "agent":
                calls.append((entry.id, entry.version))
        return uses, calls
    advisor = getattr(multi, "advisor", None)
    if advisor is not None and advisor.type == "enabled":
        uses.append(ModelUse(str(advisor.model), "can consult the advisor"))
    for member in (getattr(multi, "subagents", None), getattr(multi, "workflows", None)):
        if member is not None and member.type == "enabled":
            calls.extend((ref.id, ref.version) for ref in member.predefined_agents)
    return uses, calls


def unbudgetable(
    agent_id: str, uses: Sequence[tuple[str, ModelUse]], patterns: Sequence[str]
) -> str | None:
    """Why a budget cannot be enforced on `agent_id`, or None. `uses` pairs each model use
    with the agent it belongs to (agent_id itself, or one it can call)."""
    for owner, use in uses:
        if priced(use.model, patterns):
            continue
        how = (
            f"{use.via} model" if owner == agent_id else f"can call {owner}, which {use.via} model"
        )
        return (
            f"agent {agent_id} {how} {use.model}, which has no public list price, so the API "
            f"cannot enforce a budget on it ({NOT_BUDGETABLE}); launch without --budget or add "
            "it to [launch] priced_models"
        )
    return None


def api_refusal(exc: Exception) -> BudgetRefused | None:
    """The API's own 400 for a budget rule, as the same clear error idlehook gives; else None."""
    code = getattr(exc, "error_code", None)
    if getattr(exc, "status_code", None) != 400 or code not in _API_REASONS:
        return None
    detail = getattr(exc, "api_message", None) or str(exc)
    return BudgetRefused(code, f"{_API_REASONS[code]} ({code}; the API said: {detail})")


_API_REASONS = {
    CREATE_ONLY: "budgets can only be raised on sessions created with one",
    NOT_RAISED: "the new cap must be above what the session has already spent",
    NOT_BUDGETABLE: (
        "a model this session can run has no public list price, so the API cannot enforce a "
        "budget on it (remove that model from [launch] priced_models, or launch without "
        "--budget)"
    ),
}


# -- raising a budget ------------------------------------------------------------------------


def check_raise(
    session_id: str,
    *,
    status: str,
    archived: bool,
    current_cents: int | None,
    spent: int,
    new_cents: int,
) -> None:
    """The API's update rules, checked before the update call; raises BudgetRefused."""
    if status == "terminated" or archived:
        raise BudgetRefused(
            TERMINATED,
            f"session {session_id} is {'archived' if archived else status}: its "
            "budget can no longer change",
        )
    if current_cents is None:
        raise BudgetRefused(
            CREATE_ONLY,
            f"session {session_id} has no budget: budgets can only be raised on sessions created "
            f"with one ({CREATE_ONLY})",
        )
    if new_cents <= current_cents:
        raise BudgetRefused(
            NOT_RAISED,
            f"the new cap {format_usd(new_cents)} is not above the current cap "
            f"{format_usd(current_cents)}: a budget can only be raised ({NOT_RAISED})",
        )
    if new_cents <= spent:
        raise BudgetRefused(
            NOT_RAISED,
            f"the new cap {format_usd(new_cents)} is not above what session {session_id} has "
            f"already spent ({format_usd(spent)}) ({NOT_RAISED})",
        )
