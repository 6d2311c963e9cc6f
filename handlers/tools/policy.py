"""Pure: who decides a tool use held for confirmation — allow, deny (with a message), or ask a
person — from the tool's name, its input, the agent and the session's metadata."""

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from handlers.config import ApprovalRule, ApprovalSettings

DEFAULT_DENY_MESSAGE = "Denied by policy."


@dataclass(frozen=True)
class HeldCall:
    tool_name: str
    input: Mapping[str, Any]
    agent_id: str | None
    metadata: Mapping[str, str]


@dataclass(frozen=True)
class PolicyDecision:
    action: str  # "allow" | "deny" | "ask"
    message: str | None  # the deny message the agent sees
    rule: str | None  # the matching rule's name (or index); None: the default


def serialise_input(value: Mapping[str, Any]) -> str:
    """The text `input_pattern` is searched in: stable, compact JSON."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def matches(rule: ApprovalRule, call: HeldCall) -> bool:
    if rule.tools and call.tool_name not in rule.tools:
        return False
    if rule.agent_ids and call.agent_id not in rule.agent_ids:
        return False
    if any(call.metadata.get(key) != value for key, value in rule.metadata.items()):
        return False
    return rule.input_pattern is None or (
        re.search(rule.input_pattern, serialise_input(call.input)) is not None
    )


def _message(action: str, message: str | None) -> str | None:
    if action != "deny":
        return None
    return message or DEFAULT_DENY_MESSAGE


def apply_rules(rules: Sequence[ApprovalRule], default: str, call: HeldCall) -> PolicyDecision:
    """The first matching rule decides; none matching falls back to `default`."""
    for index, rule in enumerate(rules):
        if matches(rule, call):
            return PolicyDecision(
                rule.action, _message(rule.action, rule.message), rule.name or str(index)
            )
    return PolicyDecision(default, _message(default, None), None)


def apply_policy(settings: ApprovalSettings, call: HeldCall) -> PolicyDecision:
    return apply_rules(settings.rules, settings.default, call)
