"""Request-body checks the real API makes, each failing with a 400 that says what is wrong."""

from typing import Any

from emulator.errors import BadRequest

MAX_METADATA_PAIRS = 16
MAX_METADATA_KEY = 64
MAX_METADATA_VALUE = 512
MAX_INITIAL_EVENTS = 50
SESSION_INITIAL_TYPES = ("user.message", "user.define_outcome")
DEPLOYMENT_INITIAL_TYPES = ("user.message", "user.define_outcome", "system.message")
SENDABLE_TYPES = (
    "user.message",
    "user.interrupt",
    "user.tool_confirmation",
    "user.custom_tool_result",
    "user.define_outcome",
    "user.tool_result",
    "system.message",
)


def as_object(body: Any, what: str = "request body") -> dict[str, Any]:
    if not isinstance(body, dict):
        raise BadRequest(f"{what}: expected a JSON object")
    return body


def required_str(body: dict[str, Any], key: str, *, max_len: int = 100_000) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value:
        raise BadRequest(f"{key}: required, a non-empty string")
    if len(value) > max_len:
        raise BadRequest(f"{key}: at most {max_len} characters")
    return value


def optional_str(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise BadRequest(f"{key}: expected a string or null")
    return value


def optional_list(body: dict[str, Any], key: str) -> list[Any]:
    value = body.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise BadRequest(f"{key}: expected an array")
    return value


def metadata(value: Any, *, allow_null_values: bool = False) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadRequest("metadata: expected an object", error_code="invalid_metadata")
    if len(value) > MAX_METADATA_PAIRS:
        raise BadRequest(
            f"metadata: at most {MAX_METADATA_PAIRS} pairs", error_code="invalid_metadata"
        )
    for key, item in value.items():
        if not key or len(key) > MAX_METADATA_KEY:
            raise BadRequest(
                f"metadata: keys must be 1-{MAX_METADATA_KEY} characters",
                error_code="invalid_metadata",
            )
        if item is None and allow_null_values:
            continue
        if not isinstance(item, str):
            raise BadRequest("metadata: values must be strings", error_code="invalid_metadata")
        if len(item) > MAX_METADATA_VALUE:
            raise BadRequest(
                f"metadata: values must be at most {MAX_METADATA_VALUE} characters",
                error_code="invalid_metadata",
            )
    return dict(value)


def agent_ref(value: Any, *, allow_overrides: bool = True) -> dict[str, Any]:
    """The three session forms: "agent_…", {type:"agent",id,version?},
    {type:"agent_with_overrides",id,version?,...}. Returns a dict with type/id/version?."""
    if isinstance(value, str):
        if not value:
            raise BadRequest("agent: must not be empty")
        return {"type": "agent", "id": value}
    if not isinstance(value, dict):
        raise BadRequest("agent: expected an agent id or an agent reference object")
    kind = value.get("type")
    allowed = ("agent", "agent_with_overrides") if allow_overrides else ("agent",)
    if kind not in allowed:
        raise BadRequest(f"agent.type: expected one of {', '.join(allowed)}")
    if not isinstance(value.get("id"), str) or not value["id"]:
        raise BadRequest("agent.id: required")
    version = value.get("version")
    if version is not None and (not isinstance(version, int) or version < 1):
        raise BadRequest("agent.version: expected a positive integer")
    if kind == "agent":
        extra = set(value) - {"type", "id", "version"}
        if extra:
            raise BadRequest(f"agent: unexpected field(s) {', '.join(sorted(extra))}")
    return dict(value)


def _content(event: dict[str, Any], where: str) -> None:
    content = event.get("content")
    if not isinstance(content, list) or not content:
        raise BadRequest(f"{where}.content: required, a non-empty array")
    for i, block in enumerate(content):
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            raise BadRequest(f"{where}.content[{i}]: expected a content block")
        if block["type"] == "text" and not isinstance(block.get("text"), str):
            raise BadRequest(f"{where}.content[{i}].text: required")


def event(value: Any, where: str, allowed: tuple[str, ...]) -> dict[str, Any]:
    ev = as_object(value, where)
    kind = ev.get("type")
    if kind not in allowed:
        raise BadRequest(f"{where}.type: must be one of {', '.join(allowed)}, got {kind!r}")
    if kind in ("user.message", "system.message"):
        _content(ev, where)
    elif kind == "user.define_outcome":
        required_str(ev, "description")
        if not isinstance(ev.get("rubric"), dict):
            raise BadRequest(f"{where}.rubric: required")
        max_it = ev.get("max_iterations")
        if max_it is not None and (not isinstance(max_it, int) or not 1 <= max_it <= 20):
            raise BadRequest(f"{where}.max_iterations: 1-20")
    elif kind == "user.tool_confirmation":
        if not isinstance(ev.get("tool_use_id"), str):
            raise BadRequest(f"{where}.tool_use_id: required")
        if ev.get("result") not in ("allow", "deny"):
            raise BadRequest(f"{where}.result: must be allow or deny")
        if ev.get("deny_message") is not None and ev["result"] != "deny":
            raise BadRequest(f"{where}.deny_message: only allowed when result is deny")
    elif kind == "user.custom_tool_result":
        if not isinstance(ev.get("custom_tool_use_id"), str):
            raise BadRequest(f"{where}.custom_tool_use_id: required")
    elif kind == "user.tool_result" and not isinstance(ev.get("tool_use_id"), str):
        raise BadRequest(f"{where}.tool_use_id: required")
    return ev


def initial_events(value: Any, allowed: tuple[str, ...], *, min_count: int = 0) -> list[Any]:
    if value is None:
        value = []
    if not isinstance(value, list):
        raise BadRequest("initial_events: expected an array")
    if not min_count <= len(value) <= MAX_INITIAL_EVENTS:
        raise BadRequest(f"initial_events: {min_count}-{MAX_INITIAL_EVENTS} events")
    return [event(ev, f"initial_events[{i}]", allowed) for i, ev in enumerate(value)]


def message_text(ev: dict[str, Any]) -> str:
    return " ".join(
        str(block.get("text", "")) for block in ev.get("content", []) if block.get("type") == "text"
    )
