"""Agents (immutable versions), environments, and files: the things sessions refer to."""

from typing import Any

from emulator import validation
from emulator.clock import rfc3339
from emulator.core import Emulator
from emulator.errors import BadRequest, Conflict
from emulator.ids import new_id
from emulator.pagination import Page, paginate
from emulator.query import Query, in_range, parse_time
from emulator.state import AgentRecord

TOOLSET_TOOLS = ("bash", "edit", "read", "write", "glob", "grep", "web_fetch", "web_search")
_ALWAYS_ALLOW = {"type": "always_allow"}


def _model(value: Any) -> dict[str, Any]:
    if isinstance(value, str) and value:
        return {"id": value, "effort": {"type": "high"}, "speed": "standard"}
    if isinstance(value, dict) and isinstance(value.get("id"), str):
        return {"effort": {"type": "high"}, "speed": "standard", **value}
    raise BadRequest("model: required, a model id or {id, effort?, speed?}")


def _tool(raw: Any, i: int) -> dict[str, Any]:
    tool = validation.as_object(raw, f"tools[{i}]")
    kind = tool.get("type")
    if kind in ("agent_toolset_20260401", "mcp_toolset"):
        default = {
            "enabled": True,
            "permission_policy": _ALWAYS_ALLOW,
            **(tool.get("default_config") or {}),
        }
        configs = []
        for j, cfg in enumerate(tool.get("configs") or []):
            cfg = validation.as_object(cfg, f"tools[{i}].configs[{j}]")
            name = cfg.get("name")
            if kind == "agent_toolset_20260401" and name not in TOOLSET_TOOLS:
                raise BadRequest(f"tools[{i}].configs[{j}].name: unknown tool {name!r}")
            filled = {
                "enabled": default["enabled"],
                "permission_policy": default["permission_policy"],
                **cfg,
            }
            if kind == "agent_toolset_20260401":
                filled["type"] = name
            configs.append(filled)
        out = {"type": kind, "configs": configs, "default_config": default}
        if kind == "mcp_toolset":
            out["mcp_server_name"] = validation.required_str(tool, "mcp_server_name")
        return out
    if kind == "custom":
        validation.required_str(tool, "name")
        schema = tool.get("input_schema")
        if not isinstance(schema, dict) or schema.get("type") != "object":
            raise BadRequest(f"tools[{i}].input_schema: expected a JSON schema of type object")
        return {
            "type": "custom",
            "name": tool["name"],
            "description": tool.get("description") or "",
            "input_schema": schema,
        }
    raise BadRequest(f"tools[{i}].type: unsupported {kind!r}")


def _agent_fields(body: dict[str, Any], base: dict[str, Any] | None) -> dict[str, Any]:
    out = dict(base) if base else {}
    if base is None or "name" in body:
        out["name"] = validation.required_str(body, "name", max_len=256)
    if base is None or "model" in body:
        out["model"] = _model(body.get("model"))
    for key in ("description", "system"):
        if base is None or key in body:
            out[key] = validation.optional_str(body, key) or None
    if base is None or "tools" in body:
        tools = validation.optional_list(body, "tools")
        if len(tools) > 256:
            raise BadRequest("tools: at most 256")
        out["tools"] = [_tool(t, i) for i, t in enumerate(tools)]
    for key in ("mcp_servers", "skills"):
        if base is None or key in body:
            out[key] = validation.optional_list(body, key)
    if base is None or "multiagent" in body:
        out["multiagent"] = body.get("multiagent")
    if base is None or "execution_identity" in body:
        out["execution_identity"] = body.get("execution_identity") or {"type": "service_account"}
    if base is None:
        out["metadata"] = validation.metadata(body.get("metadata"))
    elif "metadata" in body:
        patch = validation.metadata(body["metadata"], allow_null_values=True)
        merged = {k: v for k, v in {**out["metadata"], **patch}.items() if v is not None}
        out["metadata"] = validation.metadata(merged)
    return out


def create_agent(emu: Emulator, body: Any) -> dict[str, Any]:
    body = validation.as_object(body)
    now = rfc3339(emu.clock.now())
    agent_id = new_id("agent_")
    agent = {
        "id": agent_id,
        "type": "agent",
        "version": 1,
        **_agent_fields(body, None),
        "created_at": now,
        "updated_at": now,
        "archived_at": None,
    }
    emu.store.agents[agent_id] = AgentRecord(agent_id, [agent])
    emu.creates["agents"] += 1
    emu.webhook("agent.created", agent_id)
    return agent


def retrieve_agent(emu: Emulator, agent_id: str, version: int | None) -> dict[str, Any]:
    record = emu.store.agent(agent_id)
    if version is None:
        return record.latest
    if not 1 <= version <= len(record.versions):
        raise BadRequest(f"version: agent {agent_id} has versions 1-{len(record.versions)}")
    return record.versions[version - 1]


def update_agent(emu: Emulator, agent_id: str, body: Any) -> dict[str, Any]:
    body = validation.as_object(body)
    record = emu.store.agent(agent_id)
    if record.archived_at is not None:
        raise BadRequest(f"agent {agent_id} is archived")
    expected = body.get("version")
    if expected is not None and expected != record.latest["version"]:
        raise Conflict(f"version: expected {record.latest['version']}, got {expected}")
    fields = _agent_fields({k: v for k, v in body.items() if k != "version"}, record.latest)
    if all(fields.get(k) == v for k, v in record.latest.items() if k in fields):
        return record.latest
    agent = {
        **fields,
        "version": record.latest["version"] + 1,
        "updated_at": rfc3339(emu.clock.now()),
    }
    record.versions.append(agent)
    emu.webhook("agent.updated", agent_id)
    return agent


def archive_agent(emu: Emulator, agent_id: str) -> dict[str, Any]:
    record = emu.store.agent(agent_id)
    if record.archived_at is None:
        record.archived_at = emu.clock.now()
        for version in record.versions:
            version["archived_at"] = rfc3339(record.archived_at)
        emu.webhook("agent.archived", agent_id)
    return record.latest


def list_agents(emu: Emulator, q: Query) -> Page:
    include_archived = q.get_bool("include_archived")
    bounds = q.time_range("created_at")
    rows = [
        r.latest
        for r in emu.store.agents.values()
        if (include_archived or r.archived_at is None)
        and (not bounds or in_range(parse_time("created_at", r.latest["created_at"]), bounds))
    ]
    rows.sort(key=lambda a: (a["created_at"], a["id"]), reverse=True)
    return paginate(
        rows, limit=q.get_int("limit", 20, maximum=100), page=q.get("page"), order="desc"
    )


def list_agent_versions(emu: Emulator, agent_id: str, q: Query) -> Page:
    versions = list(reversed(emu.store.agent(agent_id).versions))
    return paginate(
        versions, limit=q.get_int("limit", 20, maximum=100), page=q.get("page"), order="desc"
    )


def create_environment(emu: Emulator, body: Any) -> dict[str, Any]:
    body = validation.as_object(body)
    config = body.get("config") or {"type": "cloud"}
    if not isinstance(config, dict) or config.get("type") not in ("cloud", "self_hosted"):
        raise BadRequest("config.type: expected cloud or self_hosted")
    if config["type"] == "cloud":
        packages: dict[str, Any] = {k: [] for k in ("apt", "cargo", "gem", "go", "npm", "pip")}
        packages.update({k: v for k, v in (config.get("packages") or {}).items() if k != "type"})
        config = {
            "type": "cloud",
            "networking": config.get("networking") or {"type": "unrestricted"},
            "packages": {"type": "packages", **packages},
        }
    scope = body.get("scope")
    if scope is not None and scope not in ("organization", "account"):
        raise BadRequest("scope: expected organization or account")
    now = rfc3339(emu.clock.now())
    env = {
        "id": new_id("env_"),
        "type": "environment",
        "name": validation.required_str(body, "name", max_len=256),
        "description": validation.optional_str(body, "description"),
        "metadata": validation.metadata(body.get("metadata")),
        "config": config,
        "scope": scope,
        "created_at": now,
        "updated_at": now,
        "archived_at": None,
    }
    emu.store.environments[env["id"]] = env
    emu.webhook("environment.created", env["id"])
    return env


def archive_environment(emu: Emulator, env_id: str) -> dict[str, Any]:
    env = emu.store.environment(env_id)
    if env["archived_at"] is None:
        env["archived_at"] = rfc3339(emu.clock.now())
        emu.webhook("environment.archived", env_id)
    return env


def delete_environment(emu: Emulator, env_id: str) -> dict[str, Any]:
    emu.store.environment(env_id)
    del emu.store.environments[env_id]
    emu.webhook("environment.deleted", env_id)
    return {"id": env_id, "type": "environment_deleted"}


def list_environments(emu: Emulator, q: Query) -> Page:
    include_archived = q.get_bool("include_archived")
    rows = [
        e for e in emu.store.environments.values() if include_archived or e["archived_at"] is None
    ]
    rows.sort(key=lambda e: (e["created_at"], e["id"]), reverse=True)
    return paginate(
        rows, limit=q.get_int("limit", 20, maximum=1000), page=q.get("page"), order="desc"
    )


def list_files(emu: Emulator, q: Query) -> Page:
    ids = q.get_list("ids")
    scope_id = q.get("scope_id")
    rows = [
        f
        for f in emu.store.files.values()
        if (scope_id is None or (f.get("scope") or {}).get("id") == scope_id)
        and (not ids or f["id"] in ids)
    ]
    rows.sort(key=lambda f: (f["created_at"], f["id"]), reverse=True)
    if ids:
        return Page(rows, None, None)
    return paginate(
        rows, limit=q.get_int("limit", 20, maximum=1000), page=q.get("page"), order="desc"
    )
