"""What a session costs, and what stopping or deleting it saves, under a named billing model.

Pure: API objects (or their plain fields) in, dollars out. Every figure idlehook writes or shows
comes from here, so the session table, `result.json`, the reaper's audit and the web page agree.

Two models:
- `running` (the default, as documented): runtime is billed only while the session is `running`,
  priced on `usage.active_seconds` ($0.08 per session-hour), plus tokens at list price
  (`usage.list_cost`). An idle session costs nothing, so deleting one saves nothing; what saves
  money is stopping a run nobody waits for, and capping token spend.
- `exists` (the tutorial's view, kept as an option): a container is billed from create to delete,
  so every hour a finished session is kept costs the runtime rate.
"""

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

BillingModel = Literal["running", "exists"]
BILLING_MODELS: tuple[BillingModel, ...] = ("running", "exists")
RUNTIME_USD_PER_HOUR = 0.08


@dataclass(frozen=True)
class Pricing:
    model: BillingModel = "running"
    runtime_usd_per_hour: float = RUNTIME_USD_PER_HOUR

    def runtime_usd(self, seconds: float) -> float:
        return seconds / 3600 * self.runtime_usd_per_hour


@dataclass(frozen=True)
class SessionCost:
    """A session's cost so far; None parts are what the API did not report."""

    model: BillingModel
    runtime_seconds: float | None
    runtime_usd: float | None
    token_usd: float | None

    @property
    def total_usd(self) -> float | None:
        if self.runtime_usd is None and self.token_usd is None:
            return None
        return round((self.runtime_usd or 0.0) + (self.token_usd or 0.0), 6)

    def as_dict(self) -> dict[str, Any]:
        return {
            "billing_model": self.model,
            "runtime_seconds": self.runtime_seconds,
            "runtime_usd": self.runtime_usd,
            "token_usd": self.token_usd,
            "total_usd": self.total_usd,
        }


def _field(obj: Any, name: str) -> Any:
    if obj is None:
        return None
    if isinstance(obj, dict):
        return obj.get(name)
    return getattr(obj, name, None)


def token_usd(usage: Any) -> float | None:
    """`usage.list_cost` in dollars: the API reports integer cents as a string."""
    amount = _field(usage, "list_cost")
    if amount is None or _field(amount, "currency") != "USD":
        return None
    try:
        return int(_field(amount, "amount")) / 100
    except (TypeError, ValueError):
        return None


def _seconds_between(start: Any, end: Any) -> float | None:
    if not isinstance(start, datetime) or not isinstance(end, datetime):
        return None
    return max(0.0, (end - start).total_seconds())


def session_cost(session: Any, pricing: Pricing, *, now: datetime | None = None) -> SessionCost:
    """The cost of an SDK session (or its dict) so far, under `pricing.model`.

    Under `exists`, a session still alive is priced up to `now` (or its `updated_at` when no
    clock is given, which undercounts but never invents time).
    """
    usage = _field(session, "usage")
    tokens = token_usd(usage)
    seconds: float | None
    if pricing.model == "running":
        active = _field(usage, "active_seconds")
        seconds = float(active) if active is not None else None
    else:
        end = now if now is not None else _field(session, "updated_at")
        seconds = _seconds_between(_field(session, "created_at"), end)
    runtime = round(pricing.runtime_usd(seconds), 6) if seconds is not None else None
    return SessionCost(pricing.model, seconds, runtime, tokens)


def delete_saving_per_hour(status: str, pricing: Pricing) -> float:
    """Runtime a delete stops, USD per hour: only under `exists` does a resting session cost."""
    if pricing.model == "exists":
        return pricing.runtime_usd_per_hour
    # Under `running` a resting session accrues nothing; a busy one is interrupted, not deleted.
    return pricing.runtime_usd_per_hour if status in ("running", "rescheduling") else 0.0


def interrupt_saving_per_hour(pricing: Pricing) -> float:
    """Runtime an interrupt stops, USD per hour (tokens come on top and are not guessed)."""
    return pricing.runtime_usd_per_hour if pricing.model == "running" else 0.0
