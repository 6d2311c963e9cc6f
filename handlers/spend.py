"""A session's spend ceiling and what it has spent, as the API reports them, in cents.

Pure: no I/O. Read by the `log` plugin (a session that stopped on its budget), the launcher and
the budget raise (sessions/budget.py holds the rules for setting one), and the operator page.
"""

from collections.abc import Mapping
from typing import Any

# The metadata key idlehook stamps the cap on, in USD ("12.50") (sessions/metadata.py writes it),
# so listings read it from the store's copy of the metadata.
BUDGET_KEY = "idlehook_budget_usd"


def format_usd(cents: int | None) -> str:
    return "" if cents is None else f"${cents / 100:,.2f}"


def cap_from_metadata(metadata: Mapping[str, str] | None) -> float | None:
    """The cap (USD) idlehook stamped on a session, or None."""
    raw = (metadata or {}).get(BUDGET_KEY)
    try:
        return float(raw) if raw is not None else None
    except ValueError:
        return None


def _amount_cents(amount: Any) -> int | None:
    """A BetaMonetaryAmount (or its dict) in USD as cents; None when absent or not USD."""
    if amount is None:
        return None
    value = amount.get("amount") if isinstance(amount, dict) else getattr(amount, "amount", None)
    currency = (
        amount.get("currency") if isinstance(amount, dict) else getattr(amount, "currency", None)
    )
    if currency != "USD" or not isinstance(value, str) or not value.isdigit():
        return None
    return int(value)


def cap_cents(budget: Any) -> int | None:
    """A session's `budget` (BetaManagedAgentsBudgetLimit or None) as cents."""
    if budget is None:
        return None
    cost = budget.get("max_list_cost") if isinstance(budget, dict) else budget.max_list_cost
    return _amount_cents(cost)


def spent_cents(usage: Any) -> int:
    """`usage.list_cost` as cents; nothing recorded yet is nothing spent."""
    return _amount_cents(getattr(usage, "list_cost", None)) or 0
