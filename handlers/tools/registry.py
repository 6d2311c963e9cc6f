"""Custom tools: what runs when a session calls one, found in config and by entry point.

A tool is written as the SDK already has users write them (`beta_tool` / `beta_async_tool`
from `anthropic`), or is a plain function (its schema derived the SDK's way), or a `CustomTool`
built with `custom_tool(fn, input_schema=...)`. Entry points in the `idlehook.tools` group, and
`[tools] modules = ["pkg.mod:attr"]`, may name one tool or a list of them.

A reference that cannot be loaded is a `ToolLoadError` naming it and why, in one line (startup
refuses it). A call whose input does not fit the tool's schema is a `ToolArgumentError` naming
the tool, each argument at fault and the schema, which is what the agent is answered.
"""

import asyncio
import importlib
import inspect
import json
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from importlib.metadata import entry_points
from typing import Any

import pydantic
import structlog
from anthropic.lib.tools import (
    BetaAsyncFunctionTool,
    BetaFunctionTool,
    beta_async_tool,
    beta_tool,
)

ENTRY_POINT_GROUP = "idlehook.tools"
log = structlog.get_logger(__name__)

ToolCall = Callable[[dict[str, Any]], Awaitable[Any]]
# The schema quoted in an argument error: enough for the agent to correct its call.
MAX_SCHEMA_CHARS = 1000


class ToolLoadError(ValueError):
    """A `[tools]` reference or `idlehook.tools` entry point that cannot be loaded."""


class ToolArgumentError(ValueError):
    """A call's input does not fit the tool's schema (the agent is told which argument)."""

    def __init__(self, tool: str, problems: Iterable[str], schema: dict[str, Any]) -> None:
        quoted = json.dumps(schema, sort_keys=True, separators=(",", ":"), default=str)
        if len(quoted) > MAX_SCHEMA_CHARS:
            quoted = quoted[:MAX_SCHEMA_CHARS] + "..."
        super().__init__(f"tool {tool!r}: {'; '.join(problems)}; schema: {quoted}")


def _argument_problems(exc: pydantic.ValidationError) -> list[str]:
    problems = []
    for error in exc.errors(include_url=False, include_input=False):
        where = ".".join(map(str, error["loc"]))
        problems.append(f"argument {where!r}: {error['msg']}" if where else str(error["msg"]))
    return problems or [str(exc)]


@dataclass(frozen=True)
class CustomTool:
    """A tool the caller runs: `call(input)` returns a string or SDK content blocks."""

    name: str
    call: ToolCall
    description: str = ""
    input_schema: dict[str, Any] = field(default_factory=lambda: {"type": "object"})
    idempotent: bool = False

    def to_param(self) -> dict[str, Any]:
        """The agent's `tools[]` entry declaring it (`{"type": "custom", ...}`)."""
        return {
            "type": "custom",
            "name": self.name,
            "description": self.description,
            "input_schema": self.input_schema,
        }


def custom_tool(
    fn: Callable[..., Any],
    *,
    name: str | None = None,
    description: str | None = None,
    input_schema: dict[str, Any] | None = None,
    idempotent: bool = False,
) -> CustomTool:
    """A plain function (sync or async, called with the input as keyword arguments) as a tool."""
    if input_schema is None:
        derived = as_custom_tool(fn)
        return replace(
            derived,
            name=name or derived.name,
            description=description or derived.description,
            idempotent=idempotent,
        )
    is_async = inspect.iscoroutinefunction(fn)
    tool_name = name or fn.__name__
    schema = input_schema
    try:
        signature: inspect.Signature | None = inspect.signature(fn)
    except (TypeError, ValueError):  # some builtins have none: let the call say what is wrong
        signature = None

    async def call(arguments: dict[str, Any]) -> Any:
        _check_arguments(tool_name, signature, schema, arguments)
        if is_async:
            return await fn(**arguments)
        return await asyncio.to_thread(fn, **arguments)

    return CustomTool(
        name=name or fn.__name__,
        call=call,
        description=description or inspect.getdoc(fn) or "",
        input_schema=input_schema,
        idempotent=idempotent,
    )


def _check_arguments(
    tool: str,
    signature: inspect.Signature | None,
    schema: dict[str, Any],
    arguments: dict[str, Any],
) -> None:
    """A `custom_tool` with a hand-written schema: its required keys, then the function's."""
    required = schema.get("required") or []
    missing = [key for key in required if key not in arguments]
    if missing:
        raise ToolArgumentError(tool, [f"argument {k!r}: Field required" for k in missing], schema)
    if signature is not None:
        try:
            signature.bind(**arguments)
        except TypeError as exc:
            raise ToolArgumentError(tool, [str(exc)], schema) from None


def _sdk_arguments(
    tool: BetaFunctionTool[Any] | BetaAsyncFunctionTool[Any], exc: ValueError
) -> ValueError:
    """The SDK's bare "Invalid arguments for function X" made to say which and against what."""
    cause = exc.__cause__
    if isinstance(cause, pydantic.ValidationError):
        return ToolArgumentError(tool.name, _argument_problems(cause), dict(tool.input_schema))
    return exc


def as_custom_tool(obj: Any) -> CustomTool:
    """Whatever a user registered, as a `CustomTool`. Raises TypeError for anything else."""
    if isinstance(obj, CustomTool):
        return obj
    if isinstance(obj, BetaAsyncFunctionTool):
        async_tool = obj

        async def call_async(arguments: dict[str, Any]) -> Any:
            try:
                return await async_tool.call(arguments)
            except ValueError as exc:
                raise _sdk_arguments(async_tool, exc) from exc.__cause__

        return _from_sdk(obj, call_async)
    if isinstance(obj, BetaFunctionTool):
        sync_tool = obj

        async def call_sync(arguments: dict[str, Any]) -> Any:
            try:
                return await asyncio.to_thread(sync_tool.call, arguments)
            except ValueError as exc:
                raise _sdk_arguments(sync_tool, exc) from exc.__cause__

        return _from_sdk(obj, call_sync)
    if inspect.isfunction(obj) or inspect.ismethod(obj):
        wrapped = beta_async_tool(obj) if inspect.iscoroutinefunction(obj) else beta_tool(obj)
        tool = as_custom_tool(wrapped)
        return replace(tool, idempotent=bool(getattr(obj, "idempotent", False)))
    raise TypeError(f"{obj!r} is not a tool (use beta_tool, beta_async_tool or custom_tool)")


def _from_sdk(
    tool: BetaFunctionTool[Any] | BetaAsyncFunctionTool[Any], call: ToolCall
) -> CustomTool:
    return CustomTool(
        name=tool.name,
        call=call,
        description=tool.description,
        input_schema=dict(tool.input_schema),
        idempotent=bool(
            getattr(tool, "idempotent", False) or getattr(tool.func, "idempotent", False)
        ),
    )


def _flatten(obj: Any) -> Iterator[Any]:
    if isinstance(obj, list | tuple):
        for item in obj:
            yield from _flatten(item)
    else:
        yield obj


def load_reference(reference: str) -> list[CustomTool]:
    """`package.module:attribute` -> the tool(s) it names. Raises ToolLoadError."""
    module_name, sep, attribute = reference.partition(":")
    if not sep or not module_name or not attribute:
        raise ToolLoadError(f"[tools] modules: {reference!r}: expected 'package.module:attribute'")
    try:
        target: Any = importlib.import_module(module_name)
    except Exception as exc:  # anything the module raises while importing: the user's code
        raise ToolLoadError(
            f"[tools] modules: {reference!r}: cannot import {module_name}: {_one_line(exc)}"
        ) from None
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ToolLoadError(
                f"[tools] modules: {reference!r}: {module_name} has no attribute {attribute!r}"
            ) from None
    try:
        return [as_custom_tool(item) for item in _flatten(target)]
    except TypeError as exc:
        raise ToolLoadError(f"[tools] modules: {reference!r}: {exc}") from None


def _entry_point_tools(ep: Any) -> list[CustomTool]:
    where = f"entry point {ep.name!r} ({ep.value}) in {ENTRY_POINT_GROUP}"
    try:
        return [as_custom_tool(item) for item in _flatten(ep.load())]
    except Exception as exc:  # a broken installed package: name it rather than a traceback
        raise ToolLoadError(f"{where}: {_one_line(exc)}") from None


def _one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".replace("\n", " ")


class ToolRegistry:
    def __init__(self, tools: Iterable[Any] = (), idempotent: Iterable[str] = ()) -> None:
        marked = set(idempotent)
        self._by_name: dict[str, CustomTool] = {}
        for obj in tools:
            tool = as_custom_tool(obj)
            if tool.name in marked:
                tool = replace(tool, idempotent=True)
            if tool.name in self._by_name:
                raise ValueError(f"two tools are named {tool.name!r}")
            self._by_name[tool.name] = tool

    @classmethod
    def load(
        cls,
        modules: Iterable[str] = (),
        idempotent: Iterable[str] = (),
        discover: bool = True,
        announce: bool = True,
    ) -> "ToolRegistry":
        """Config references first, then the `idlehook.tools` entry points. Raises
        ToolLoadError (one line: which reference and why), or ValueError on two same names."""
        found: list[CustomTool] = []
        for reference in modules:
            found.extend(load_reference(reference))
        if discover:
            for ep in entry_points(group=ENTRY_POINT_GROUP):
                found.extend(_entry_point_tools(ep))
        registry = cls(found, idempotent)
        if announce:
            log.info("tools.loaded", tools=registry.names())
        return registry

    def get(self, name: str) -> CustomTool | None:
        return self._by_name.get(name)

    def names(self) -> list[str]:
        return list(self._by_name)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __len__(self) -> int:
        return len(self._by_name)
