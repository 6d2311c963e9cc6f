"""Session budgets: `{type:"limit", max_list_cost:{amount:"<int cents>", currency:"USD"}}`.

The rules the API documents: every model a budgeted session can run needs a public list price
(else 400 `model_not_budgetable`, on create, on update, and on a deployment that stamps its
budget onto the sessions it fires); the runner pauses a session once its `usage.list_cost`
reaches the cap (`reached`); the update rules live with the session update in `sessions.py`.
"""

from typing import Any

from emulator import pricing, validation
from emulator.core import Emulator
from emulator.errors import BadRequest
from emulator.state import SessionRecord


def parse(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    budget = validation.as_object(value, "budget")
    cost = budget.get("max_list_cost")
    if budget.get("type") != "limit" or not isinstance(cost, dict):
        raise BadRequest("budget: expected {type:'limit', max_list_cost:{amount, currency}}")
    amount = cost.get("amount")
    if not isinstance(amount, str) or not amount.isdigit() or cost.get("currency") != "USD":
        raise BadRequest("budget.max_list_cost: amount is integer cents as a string, USD")
    return {"type": "limit", "max_list_cost": {"amount": str(int(amount)), "currency": "USD"}}


def cap_cents(budget: dict[str, Any]) -> int:
    return int(budget["max_list_cost"]["amount"])


def spent_cents(record: SessionRecord) -> int:
    return int(record.usage["list_cost"]["amount"])


def reached(record: SessionRecord) -> bool:
    budget = record.body["budget"]
    return budget is not None and spent_cents(record) >= cap_cents(budget)


def _model_id(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("id"), str):
        return str(value["id"])
    return None


def _agent_model(emu: Emulator, agent_id: str, version: Any) -> str | None:
    record = emu.store.agents.get(agent_id)
    if record is None:
        return None  # the emulator does not check rosters; an unknown agent runs nothing
    index = version - 1 if isinstance(version, int) and 1 <= version <= len(record.versions) else -1
    return _model_id(record.versions[index].get("model"))


def models(emu: Emulator, agent: dict[str, Any]) -> list[str]:
    """Every model a session of `agent` (a version, or a session's agent snapshot) can run: its
    own, and in a multiagent configuration each callable agent's (roster and predefined agents,
    by id or `{type:"agent", id, version?}`; `{type:"self"}`) and any advisor `model`."""
    own = _model_id(agent.get("model"))
    found: list[str | None] = [own]

    def visit(node: Any) -> None:
        if isinstance(node, list):
            for item in node:
                # Lists in a multiagent configuration hold agents; the short form is an id.
                if isinstance(item, str):
                    found.append(_agent_model(emu, item, None))
                else:
                    visit(item)
        elif isinstance(node, dict):
            kind = node.get("type")
            if kind == "self":
                found.append(own)
            elif kind == "agent" and isinstance(node.get("id"), str):
                found.append(_agent_model(emu, node["id"], node.get("version")))
            if "model" in node:
                found.append(_model_id(node["model"]))
            for value in node.values():
                if isinstance(value, list | dict):
                    visit(value)

    visit(agent.get("multiagent"))
    return [m for m in found if m is not None]


def require_budgetable(emu: Emulator, agent: dict[str, Any]) -> None:
    unpriced = sorted({m for m in models(emu, agent) if not pricing.has_list_price(m)})
    if unpriced:
        raise BadRequest(
            f"budget: no public list price for {', '.join(unpriced)}; a budget cannot measure it",
            error_code="model_not_budgetable",
        )
