"""The one cost function: runtime under a named model plus the token list cost."""

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from handlers.billing import (
    Pricing,
    delete_saving_per_hour,
    interrupt_saving_per_hour,
    session_cost,
    token_usd,
)

CREATED = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def session(active_seconds: float | None, cents: str | None, **extra: Any) -> dict[str, Any]:
    usage: dict[str, Any] = {"active_seconds": active_seconds}
    if cents is not None:
        usage["list_cost"] = {"amount": cents, "currency": "USD"}
    return {"usage": usage, "created_at": CREATED, "updated_at": CREATED, **extra}


def test_running_prices_active_seconds_plus_tokens() -> None:
    cost = session_cost(session(1800.0, "250"), Pricing("running", 0.08))
    assert cost.model == "running"
    assert cost.runtime_usd == pytest.approx(0.04)
    assert cost.token_usd == pytest.approx(2.50)
    assert cost.total_usd == pytest.approx(2.54)


def test_exists_prices_the_whole_life_of_the_session() -> None:
    ten_hours_on = CREATED + timedelta(hours=10)
    cost = session_cost(session(60.0, "0"), Pricing("exists", 0.08), now=ten_hours_on)
    assert cost.runtime_seconds == pytest.approx(36_000)
    assert cost.runtime_usd == pytest.approx(0.80)
    # Without a clock it counts up to updated_at, never past what the API said.
    later = session(60.0, "0", updated_at=CREATED + timedelta(hours=1))
    assert session_cost(later, Pricing("exists", 0.08)).runtime_usd == pytest.approx(0.08)


def test_unknown_parts_stay_unknown() -> None:
    cost = session_cost(session(None, None), Pricing())
    assert cost.runtime_usd is None
    assert cost.token_usd is None
    assert cost.total_usd is None
    assert token_usd({"list_cost": {"amount": "12", "currency": "EUR"}}) is None
    assert token_usd({"list_cost": {"amount": "n/a", "currency": "USD"}}) is None


def test_an_idle_session_saves_nothing_under_the_documented_model() -> None:
    running, exists = Pricing("running", 0.08), Pricing("exists", 0.08)
    assert delete_saving_per_hour("idle", running) == 0.0
    assert delete_saving_per_hour("terminated", running) == 0.0
    assert delete_saving_per_hour("idle", exists) == pytest.approx(0.08)
    assert interrupt_saving_per_hour(running) == pytest.approx(0.08)
    assert interrupt_saving_per_hour(exists) == 0.0
