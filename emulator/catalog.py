"""Agents (immutable versions), environments, and files: the things sessions refer to.

Responses carry what the server fills in, never a bare echo of the request: the SDK's response
types require it. An agent's model gets `effort` as `{type}` (a bare level string accepted)
and `speed`; skills get a `version` (`latest` when none was pinned); `multiagent` is resolved
(`multiagent.py`). A cloud environment gets every package list (`[]` for null or omitted) and
full networking: `limited` without `allowed_hosts`, `allow_mcp_servers` or
`allow_package_managers` gets `[]`, `false`, `false`.
"""

from typing import Any

from emulator import multiagent, validation
from emulator.clock import rfc3339
from emulator.core import Emulator
from emulator.errors import BadRequest, Conflict
from emulator.ids import new_id
from emulator.pagination import Page, paginate
from emulator.query import Query, in_range, parse_time
from emulator.state import AgentRecord

TOOLSET_TOOLS = ("bash", "edit", "read", "write", "glob", "grep", "web_fetch", "web_search")
_ALWAYS_ALLOW = {"type": "always_allow"}
EFFORTS = ("low", "medium", "high", "xhigh", "max")
DEFAULT_EFFORT = "high"  # the API resolves a per-model default; one for every model here
PACKAGE_MANAGERS = ("apt", "cargo", "gem", "go", "npm", "pip")


def model_config(value: Any, where: str = "model") -> dict[str, Any]:
    """`{id, effort:{type}, speed, inference_geo?}` from a model id or a model object."""
    if isinstance(value, str) and value:
        value = {"id": value}
    if not isinstance(value, dict) or not isinstance(value.get("id"), str) or not value["id"]:
        raise BadRequest(f"{where}: required, a model id or {{id, effort?, speed?}}")
    effort = value.get("effort")
    if isinstance(effort, dict):
        effort = effort.get("type")
    effort = DEFAULT_EFFORT if effort is None else effort
    if effort not in EFFORTS:
        raise BadRequest(f"{where}.effort: one of {', '.join(EFFORTS)}")
    speed = value.get("speed") or "standard"
    if speed not in ("standard", "fast"):
        raise BadRequest(f"{where}.speed: standard or fast")
    out: dict[str, Any] = {"id": value["id"], "effort": {"type": effort}, "speed": speed}
    if value.get("inference_geo") is not None:
        out["inference_geo"] = value["inference_geo"]
    return out


def _skill(raw: Any, i: int) -> dict[str, Any]:
    skill = validation.as_object(raw, f"skills[{i}]")
    if skill.get("type") not in ("anthropic", "custom"):
        raise BadRequest(f"skills[{i}].type: expected anthropic or custom")
    version = skill.get("version")
    if version is not None and not isinstance(version, str):
        raise BadRequest(f"skills[{i}].version: expected a string")
    return {
        "type": skill["type"],
        "skill_id": validation.required_str(skill, "skill_id"),
        "version": version or "latest",  # the API pins the latest when none is given
    }


def _mcp_server(raw: Any, i: int) -> dict[str, Any]:
    server = validation.as_object(raw, f"mcp_servers[{i}]")
    if server.get("type", "url") != "url":
        raise BadRequest(f"mcp_servers[{i}].type: expected url")
    return {
        "type": "url",
        "name": validation.required_str(server, "name"),
        "url": validation.required_str(server, "url"),
    }


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


def tools(raw: list[Any]) -> list[dict[str, Any]]:
    if len(raw) > 256:
        raise BadRequest("tools: at most 256")
    return [_tool(t, i) for i, t in enumerate(raw)]


def mcp_servers(raw: list[Any]) -> list[dict[str, Any]]:
    return [_mcp_server(m, i) for i, m in enumerate(raw)]


def skills(raw: list[Any]) -> list[dict[str, Any]]:
    return [_skill(k, i) for i, k in enumerate(raw)]


def _agent_fields(
    emu: Emulator, body: dict[str, Any], base: dict[str, Any] | None, self_ref: dict[str, Any]
) -> dict[str, Any]:
    out = dict(base) if base else {}
    if base is None or "name" in body:
        out["name"] = validation.required_str(body, "name", max_len=256)
    if base is None or "model" in body:
        out["model"] = model_config(body.get("model"))
    for key in ("description", "system"):
        if base is None or key in body:
            out[key] = validation.optional_str(body, key) or None
    if base is None or "tools" in body:
        out["tools"] = tools(validation.optional_list(body, "tools"))
    if base is None or "mcp_servers" in body:
        out["mcp_servers"] = mcp_servers(validation.optional_list(body, "mcp_servers"))
    if base is None or "skills" in body:
        out["skills"] = skills(validation.optional_list(body, "skills"))
    if base is None or "multiagent" in body:
        out["multiagent"] = multiagent.resolve(emu, body.get("multiagent"), self_ref)
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
    self_ref = {"type": "agent", "id": agent_id, "version": 1}
    agent = {
        "id": agent_id,
        "type": "agent",
        "version": 1,
        **_agent_fields(emu, body, None, self_ref),
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
    self_ref = {"type": "agent", "id": agent_id, "version": record.latest["version"] + 1}
    patch = {k: v for k, v in body.items() if k != "version"}
    fields = _agent_fields(emu, patch, record.latest, self_ref)
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


def _string_list(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BadRequest(f"{where}: expected an array of strings")
    return list(value)


def _flag(value: Any, where: str, default: bool) -> bool:
    if value is None:
        return default
    if not isinstance(value, bool):
        raise BadRequest(f"{where}: expected true or false")
    return value


def _networking(raw: Any, base: dict[str, Any] | None) -> dict[str, Any]:
    """Full networking from a request's; on update, `base` supplies what a limited request
    omits (when it was limited already)."""
    if raw is None:
        return base or {"type": "unrestricted"}
    net = validation.as_object(raw, "config.networking")
    kind = net.get("type")
    if kind == "unrestricted":
        return {"type": "unrestricted"}
    if kind != "limited":
        raise BadRequest("config.networking.type: expected unrestricted or limited")
    kept = base if base is not None and base["type"] == "limited" else {}

    def pick(key: str) -> Any:
        return net[key] if key in net else kept.get(key)

    where = "config.networking"
    return {
        "type": "limited",
        "allowed_hosts": _string_list(pick("allowed_hosts"), f"{where}.allowed_hosts"),
        "allow_mcp_servers": _flag(pick("allow_mcp_servers"), f"{where}.allow_mcp_servers", False),
        "allow_package_managers": _flag(
            pick("allow_package_managers"), f"{where}.allow_package_managers", False
        ),
    }


def _packages(raw: Any, base: dict[str, Any] | None) -> dict[str, Any]:
    if raw is None:
        return base or {"type": "packages", **{k: [] for k in PACKAGE_MANAGERS}}
    given = validation.as_object(raw, "config.packages")
    if given.get("type", "packages") != "packages":
        raise BadRequest("config.packages.type: expected packages")
    out: dict[str, Any] = {"type": "packages"}
    for key in PACKAGE_MANAGERS:
        value = given[key] if key in given else (base or {}).get(key)
        out[key] = _string_list(value, f"config.packages.{key}")
    return out


def environment_config(raw: Any, base: dict[str, Any] | None = None) -> dict[str, Any]:
    """The config as the API returns it (SDK BetaCloudConfig / BetaSelfHostedConfig). On
    update (`base`), omitted parts keep their value; a change of type starts afresh."""
    if raw is None:
        return base or environment_config({"type": "cloud"})
    config = validation.as_object(raw, "config")
    kind = config.get("type")
    if kind == "self_hosted":
        return {"type": "self_hosted"}
    if kind != "cloud":
        raise BadRequest("config.type: expected cloud or self_hosted")
    kept = base if base is not None and base["type"] == "cloud" else None
    networking = _networking(config.get("networking"), kept["networking"] if kept else None)
    packages = _packages(config.get("packages"), kept["packages"] if kept else None)
    wants_packages = any(packages[k] for k in PACKAGE_MANAGERS)
    if (
        networking["type"] == "limited"
        and wants_packages
        and not networking["allow_package_managers"]
    ):
        raise BadRequest(
            "config.packages: under limited networking, "
            "networking.allow_package_managers must be true"
        )
    return {"type": "cloud", "networking": networking, "packages": packages}


def _scope(body: dict[str, Any]) -> Any:
    scope = body.get("scope")
    if scope is not None and scope not in ("organization", "account"):
        raise BadRequest("scope: expected organization or account")
    return scope


def create_environment(emu: Emulator, body: Any) -> dict[str, Any]:
    body = validation.as_object(body)
    config = environment_config(body.get("config"))
    now = rfc3339(emu.clock.now())
    env = {
        "id": new_id("env_"),
        "type": "environment",
        "name": validation.required_str(body, "name", max_len=256),
        "description": validation.optional_str(body, "description"),
        "metadata": validation.metadata(body.get("metadata")),
        "config": config,
        "scope": _scope(body),
        "created_at": now,
        "updated_at": now,
        "archived_at": None,
    }
    emu.store.environments[env["id"]] = env
    emu.webhook("environment.created", env["id"])
    return env


def update_environment(emu: Emulator, env_id: str, body: Any) -> dict[str, Any]:
    """Omitted fields are kept; `description: null` clears it; a metadata value of null or ""
    deletes the key. A change fires `environment.updated`; a no-op fires nothing."""
    env = emu.store.environment(env_id)
    body = validation.as_object(body)
    fields: dict[str, Any] = {}
    if body.get("name") is not None:
        fields["name"] = validation.required_str(body, "name", max_len=256)
    if "description" in body:
        fields["description"] = validation.optional_str(body, "description")
    if body.get("scope") is not None:
        fields["scope"] = _scope(body)
    if body.get("config") is not None:
        fields["config"] = environment_config(body["config"], env["config"])
    if body.get("metadata") is not None:
        patch = validation.metadata(body["metadata"], allow_null_values=True)
        merged = {k: v for k, v in {**env["metadata"], **patch}.items() if v not in (None, "")}
        fields["metadata"] = validation.metadata(merged)
    if any(env[k] != v for k, v in fields.items()):
        env.update(fields)
        env["updated_at"] = rfc3339(emu.clock.now())
        emu.webhook("environment.updated", env_id)
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
