"""An agent's `multiagent` configuration, resolved the way the API returns it.

On the agent (SDK `BetaManagedAgentsMultiagent`), every roster or predefined entry is a
versioned reference `{type:"agent", id, version}`: an id string becomes the agent's latest
version, `{type:"self"}` the agent being saved; an advisor stays `{type:"advisor", model}`.
`multiagent_20261001` gets its defaults: advisor, subagents and workflows `disabled` when
omitted, `inline_agents` `enabled` when omitted. On a session (SDK
`BetaManagedAgentsSessionMultiagent`), each reference is expanded to the full definition of
that agent version.
"""

from collections.abc import Callable
from typing import Any

from emulator import validation
from emulator.core import Emulator
from emulator.errors import BadRequest

MAX_ROSTER = 20
# The fields of a session thread agent (SDK BetaManagedAgentsSessionThreadAgent).
THREAD_AGENT_FIELDS = (
    "id",
    "version",
    "name",
    "description",
    "system",
    "model",
    "tools",
    "mcp_servers",
    "skills",
    "execution_identity",
)


def _reference(
    emu: Emulator, raw: Any, where: str, self_ref: dict[str, Any], *, advisor: bool
) -> dict[str, Any]:
    if isinstance(raw, str):
        raw = {"type": "agent", "id": raw}
    entry = validation.as_object(raw, where)
    kind = entry.get("type")
    if kind == "self":
        return dict(self_ref)
    if kind == "advisor" and advisor:
        return {"type": "advisor", "model": validation.required_str(entry, "model")}
    if kind != "agent":
        allowed = "an agent id, {type:'agent', id, version?}, {type:'self'}"
        raise BadRequest(f"{where}: expected {allowed}" + (" or an advisor" if advisor else ""))
    agent_id = validation.required_str(entry, "id")
    if agent_id == self_ref["id"]:
        return dict(self_ref)
    record = emu.store.agents.get(agent_id)
    if record is None:
        raise BadRequest(f"{where}: agent {agent_id} not found")
    if record.archived_at is not None:
        raise BadRequest(f"{where}: agent {agent_id} is archived")
    version = entry.get("version")
    if version is None:
        version = record.latest["version"]
    if not isinstance(version, int) or not 1 <= version <= len(record.versions):
        raise BadRequest(f"{where}.version: agent {agent_id} has versions 1-{len(record.versions)}")
    if record.versions[version - 1].get("multiagent") is not None:
        raise BadRequest(f"{where}: agent {agent_id} has multiagent set itself")
    return {"type": "agent", "id": agent_id, "version": version}


def _roster(
    emu: Emulator, raw: Any, where: str, self_ref: dict[str, Any], *, advisor: bool
) -> list[dict[str, Any]]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise BadRequest(f"{where}: expected an array")
    if len(raw) > MAX_ROSTER:
        raise BadRequest(f"{where}: at most {MAX_ROSTER} entries")
    return [
        _reference(emu, item, f"{where}[{i}]", self_ref, advisor=advisor)
        for i, item in enumerate(raw)
    ]


def _switch(raw: Any, where: str, enabled: Callable[[dict[str, Any]], dict[str, Any]]) -> Any:
    if raw is None:
        return {"type": "disabled"}
    value = validation.as_object(raw, where)
    if value.get("type") == "disabled":
        return {"type": "disabled"}
    if value.get("type") != "enabled":
        raise BadRequest(f"{where}.type: expected enabled or disabled")
    return enabled(value)


def resolve(emu: Emulator, raw: Any, self_ref: dict[str, Any]) -> dict[str, Any] | None:
    """The agent-level form of `raw`; `self_ref` is `{type:"agent", id, version}` of the
    version being saved."""
    if raw is None:
        return None
    config = validation.as_object(raw, "multiagent")
    kind = config.get("type")
    if kind == "coordinator":
        agents = _roster(emu, config.get("agents"), "multiagent.agents", self_ref, advisor=True)
        if not agents:
            raise BadRequest("multiagent.agents: 1-20 entries")
        return {"type": "coordinator", "agents": agents}
    if kind != "multiagent_20261001":
        raise BadRequest("multiagent.type: expected coordinator or multiagent_20261001")

    def threads(where: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
        def enabled(value: dict[str, Any]) -> dict[str, Any]:
            inline = _switch(
                value.get("inline_agents") or {"type": "enabled"},
                f"{where}.inline_agents",
                lambda _: {"type": "enabled"},
            )
            predefined = _roster(
                emu,
                value.get("predefined_agents"),
                f"{where}.predefined_agents",
                self_ref,
                advisor=False,
            )
            if inline["type"] == "disabled" and not predefined:
                raise BadRequest(f"{where}.predefined_agents: required when inline agents are off")
            return {"type": "enabled", "inline_agents": inline, "predefined_agents": predefined}

        return enabled

    return {
        "type": "multiagent_20261001",
        "advisor": _switch(
            config.get("advisor"),
            "multiagent.advisor",
            lambda v: {"type": "enabled", "model": validation.required_str(v, "model")},
        ),
        "subagents": _switch(
            config.get("subagents"), "multiagent.subagents", threads("multiagent.subagents")
        ),
        "workflows": _switch(
            config.get("workflows"), "multiagent.workflows", threads("multiagent.workflows")
        ),
    }


def thread_agent(emu: Emulator, ref: dict[str, Any]) -> dict[str, Any]:
    """The full definition of the agent version `ref` names, as a session shows it."""
    record = emu.store.agent(ref["id"])
    version = record.versions[ref["version"] - 1]
    out = {key: version.get(key) for key in THREAD_AGENT_FIELDS}
    out["type"] = "agent"
    return out


def for_session(emu: Emulator, config: dict[str, Any] | None) -> dict[str, Any] | None:
    """The session-level form of an agent-level `config`: references expanded."""
    if config is None:
        return None

    def expand(entry: dict[str, Any]) -> dict[str, Any]:
        return thread_agent(emu, entry) if entry["type"] == "agent" else dict(entry)

    if config["type"] == "coordinator":
        return {"type": "coordinator", "agents": [expand(a) for a in config["agents"]]}
    out = dict(config)
    for key in ("subagents", "workflows"):
        part = config[key]
        if part["type"] == "enabled":
            out[key] = {**part, "predefined_agents": [expand(a) for a in part["predefined_agents"]]}
    return out
