"""Spend ceilings, the pure part: amounts, priced models, the raise rules, the API's refusals,
and the `[launch]` settings."""

import math
from typing import Any

import anthropic
import httpx2 as httpx  # the SDK's own httpx, which its exceptions are built on
import pytest
from anthropic.types.beta import BetaManagedAgentsAgent
from pydantic import ValidationError

from handlers import spend
from handlers.spend import BUDGET_KEY
from idlehook.settings import LaunchSettings, Settings
from sessions import budget
from sessions.budget import BudgetRefused, InvalidBudget
from sessions.launcher import InvalidLaunch, LaunchRequest, PreparedLaunch, prepare
from store.models import utcnow


@pytest.mark.parametrize(
    ("usd", "cents"),
    [(12.5, 1250), (0.01, 1), (0.145, 15), (1, 100), (0.005, 1), (9999.999, 1_000_000)],
)
def test_dollars_become_integer_cents_rounded_half_up(usd: float, cents: int) -> None:
    assert budget.usd_to_cents(usd) == cents


@pytest.mark.parametrize(
    ("usd", "message"),
    [
        (0, "not a positive amount"),
        (-5, "not a positive amount"),
        (math.nan, "not a positive amount"),
        (math.inf, "not a positive amount"),
        (0.004, "under one cent"),
        (10_000.01, "over \\$10,000"),
        (1e12, "over \\$10,000"),
        ("12", "expected a number"),
        (True, "expected a number"),
        (None, "expected a number"),
    ],
)
def test_bad_amounts_are_refused_clearly(usd: Any, message: str) -> None:
    with pytest.raises(InvalidBudget, match=message):
        budget.usd_to_cents(usd)


def test_the_wire_shape_is_cents_in_a_string() -> None:
    assert budget.budget_param(1250) == {
        "type": "limit",
        "max_list_cost": {"amount": "1250", "currency": "USD"},
    }


def test_a_budget_goes_in_the_create_call_and_survives_the_queue() -> None:
    request = LaunchRequest(agent="agent_1", environment="env_1", message="hi", budget_usd=7.25)
    prepared = prepare(request, owner="o", strict_default=False, now=utcnow())
    assert prepared.budget_cents == 725
    assert prepared.metadata[BUDGET_KEY] == "7.25"
    again = PreparedLaunch.from_json(prepared.to_json())
    assert again == prepared
    params = again.create_params(3)
    assert params["budget"] == budget.budget_param(725)
    # A launch queued before budgets existed has no key for it, and stays uncapped.
    old = {k: v for k, v in prepared.to_json().items() if k != "budget_cents"}
    assert "budget" not in PreparedLaunch.from_json(old).create_params(3)


def test_the_request_overrides_the_setting_and_the_alias_works() -> None:
    def cents(**fields: Any) -> int | None:
        request = LaunchRequest.parse({"agent": "a", "environment": "e", "message": "m", **fields})
        now = utcnow()
        return prepare(
            request, owner="o", strict_default=False, now=now, budget_default=3.0
        ).budget_cents

    assert cents() == 300
    assert cents(budget_usd=5) == 500
    assert cents(budget=0.5) == 50
    with pytest.raises(InvalidLaunch, match=r"budget: -1\.0 is not a positive amount"):
        cents(budget_usd=-1)
    with pytest.raises(InvalidLaunch, match="budget_usd"):
        cents(budget_usd="lots")


def test_launch_settings_parse_and_refuse_nonsense() -> None:
    assert LaunchSettings().budget_usd is None
    assert "claude-opus-*" in LaunchSettings().priced_models
    settings = Settings(launch={"budget_usd": 2.5, "priced_models": ["claude-*"]})
    assert settings.launch.budget_usd == 2.5
    with pytest.raises(ValidationError, match="not a positive amount"):
        LaunchSettings(budget_usd=0)
    with pytest.raises(ValidationError, match="over \\$10,000"):
        LaunchSettings(budget_usd=50_000)
    with pytest.raises(ValidationError, match="extra"):
        LaunchSettings.model_validate({"budget": 3})


# -- priced models ---------------------------------------------------------------------------


def agent(model: str, multiagent: dict[str, Any] | None = None) -> BetaManagedAgentsAgent:
    """An agent as the SDK parses it from the API."""
    return BetaManagedAgentsAgent.model_validate(
        {
            "id": "agent_root",
            "type": "agent",
            "version": 2,
            "name": "n",
            "model": {"id": model},
            "multiagent": multiagent,
            "execution_identity": {"type": "service_account"},
            "mcp_servers": [],
            "metadata": {},
            "skills": [],
            "tools": [],
            "created_at": "2026-01-01T00:00:00Z",
            "updated_at": "2026-01-01T00:00:00Z",
        }
    )


def test_a_single_agent_runs_its_own_model() -> None:
    uses, calls = budget.agent_models(agent("claude-sonnet-4-6"))
    assert [u.model for u in uses] == ["claude-sonnet-4-6"]
    assert calls == []


def test_a_coordinator_can_call_its_roster_and_consult_an_advisor() -> None:
    multi = {
        "type": "coordinator",
        "agents": [
            {"type": "agent", "id": "agent_helper", "version": 4},
            {"type": "advisor", "model": "claude-opus-4-7"},
        ],
    }
    uses, calls = budget.agent_models(agent("claude-sonnet-4-6", multi))
    assert [u.model for u in uses] == ["claude-sonnet-4-6", "claude-opus-4-7"]
    assert calls == [("agent_helper", 4)]


def test_the_2026_multiagent_shape_names_subagents_workflow_agents_and_the_advisor() -> None:
    ref = {"type": "agent", "id": "agent_sub", "version": 1}
    flow = {"type": "agent", "id": "agent_flow", "version": 2}
    multi = {
        "type": "multiagent_20261001",
        "advisor": {"type": "enabled", "model": "oracle-1"},
        "subagents": {
            "type": "enabled",
            "inline_agents": {"type": "disabled"},
            "predefined_agents": [ref],
        },
        "workflows": {
            "type": "enabled",
            "inline_agents": {"type": "enabled"},
            "predefined_agents": [flow],
        },
    }
    uses, calls = budget.agent_models(agent("claude-haiku-4-5", multi))
    assert [u.model for u in uses] == ["claude-haiku-4-5", "oracle-1"]
    assert calls == [("agent_sub", 1), ("agent_flow", 2)]


def test_unbudgetable_names_the_model_the_agent_and_the_setting() -> None:
    patterns = budget.DEFAULT_PRICED_MODELS
    own = [("agent_x", budget.ModelUse("claude-opus-4-7", "runs"))]
    assert budget.unbudgetable("agent_x", own, patterns) is None
    custom = [("agent_x", budget.ModelUse("custom-model", "runs"))]
    message = budget.unbudgetable("agent_x", custom, patterns)
    assert message == (
        "agent agent_x runs model custom-model, which has no public list price, so the API "
        "cannot enforce a budget on it (model_not_budgetable); launch without --budget or add "
        "it to [launch] priced_models"
    )
    called = [*own, ("agent agent_y:3", budget.ModelUse("custom-model", "runs"))]
    assert "agent agent_x can call agent agent_y:3, which runs model custom-model" in (
        budget.unbudgetable("agent_x", called, patterns) or ""
    )
    assert budget.unbudgetable("agent_x", custom, ["custom-*"]) is None


# -- raising ---------------------------------------------------------------------------------


def refusal(**change: Any) -> BudgetRefused:
    facts: dict[str, Any] = {
        "status": "idle",
        "archived": False,
        "current_cents": 500,
        "spent": 500,
        "new_cents": 1000,
        **change,
    }
    with pytest.raises(BudgetRefused) as caught:
        budget.check_raise("sesn_1", **facts)
    return caught.value


def test_a_raise_above_the_cap_and_the_spend_passes() -> None:
    budget.check_raise(
        "sesn_1", status="idle", archived=False, current_cents=500, spent=500, new_cents=501
    )
    budget.check_raise(
        "sesn_1", status="running", archived=False, current_cents=500, spent=0, new_cents=600
    )


@pytest.mark.parametrize(
    ("change", "reason", "text"),
    [
        ({"current_cents": None}, "budget_create_only", "sessions created with one"),
        ({"new_cents": 500}, "budget_not_raised", "not above the current cap $5.00"),
        ({"new_cents": 400}, "budget_not_raised", "can only be raised"),
        ({"spent": 800, "new_cents": 700}, "budget_not_raised", "already spent ($8.00)"),
        ({"status": "terminated"}, "session_terminated", "sesn_1 is terminated"),
        ({"archived": True}, "session_terminated", "sesn_1 is archived"),
    ],
)
def test_each_rule_refuses_with_its_reason(change: dict[str, Any], reason: str, text: str) -> None:
    refused = refusal(**change)
    assert refused.reason == reason
    assert text in str(refused)


def api_error(status: int, code: str | None, message: str = "no") -> anthropic.APIStatusError:
    error: dict[str, Any] = {"type": "invalid_request_error", "message": message}
    if code is not None:
        error["details"] = {"error_code": code}
    body = {"type": "error", "error": error}
    request = httpx.Request("POST", "https://api.example/v1/sessions")
    response = httpx.Response(status, json=body, request=request)
    return anthropic.AsyncAnthropic(api_key="k")._make_status_error(
        message, body=body, response=response
    )


@pytest.mark.parametrize(
    ("code", "text"),
    [
        ("budget_create_only", "sessions created with one"),
        ("budget_not_raised", "above what the session has already spent"),
        ("model_not_budgetable", "no public list price"),
    ],
)
def test_the_apis_own_refusals_read_like_ours(code: str, text: str) -> None:
    refused = budget.api_refusal(api_error(400, code, "the API's words"))
    assert refused is not None
    assert refused.reason == code
    assert text in str(refused)
    assert "the API's words" in str(refused)


def test_other_errors_are_not_budget_refusals() -> None:
    assert budget.api_refusal(api_error(400, "invalid_metadata")) is None
    assert budget.api_refusal(api_error(400, None)) is None
    assert budget.api_refusal(api_error(500, "model_not_budgetable")) is None
    assert budget.api_refusal(ValueError("x")) is None


def test_reading_caps_and_spend() -> None:
    assert spend.cap_cents(None) is None
    assert spend.cap_cents(budget.budget_param(250)) == 250
    assert spend.cap_from_metadata({BUDGET_KEY: "2.50"}) == 2.5
    assert spend.cap_from_metadata({BUDGET_KEY: "lots"}) is None
    assert spend.cap_from_metadata(None) is None
    assert spend.format_usd(123456) == "$1,234.56"
