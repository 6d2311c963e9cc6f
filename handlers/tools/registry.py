"""Custom tools: what runs when a session calls one, found in config and by entry point.

A tool is written as the SDK already has users write them (`beta_tool` / `beta_async_tool`
from `anthropic`), or is a plain function (its schema derived the SDK's way), or a `CustomTool`
built with `custom_tool(fn, input_schema=...)`. Entry points in the `idlehook.tools` group, and
`[tools] modules = ["pkg.mod:attr"]`, may name one tool or a list of them.
"""

import asyncio
import importlib
import inspect
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from importlib.metadata import entry_points
from typing import Any

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

    async def call(arguments: dict[str, Any]) -> Any:
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


def as_custom_tool(obj: Any) -> CustomTool:
    """Whatever a user registered, as a `CustomTool`. Raises TypeError for anything else."""
    if isinstance(obj, CustomTool):
        return obj
    if isinstance(obj, BetaAsyncFunctionTool):
        async_tool = obj

        async def call_async(arguments: dict[str, Any]) -> Any:
            return await async_tool.call(arguments)

        return _from_sdk(obj, call_async)
    if isinstance(obj, BetaFunctionTool):
        sync_tool = obj

        async def call_sync(arguments: dict[str, Any]) -> Any:
            return await asyncio.to_thread(sync_tool.call, arguments)

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
    """`package.module:attribute` -> the tool(s) it names."""
    module_name, sep, attribute = reference.partition(":")
    if not sep or not module_name or not attribute:
        raise ValueError(f"tool reference {reference!r}: expected 'package.module:attribute'")
    target: Any = importlib.import_module(module_name)
    for part in attribute.split("."):
        target = getattr(target, part)
    return [as_custom_tool(item) for item in _flatten(target)]


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
        cls, modules: Iterable[str] = (), idempotent: Iterable[str] = (), discover: bool = True
    ) -> "ToolRegistry":
        """Config references first, then the `idlehook.tools` entry points."""
        found: list[CustomTool] = []
        for reference in modules:
            found.extend(load_reference(reference))
        if discover:
            for ep in entry_points(group=ENTRY_POINT_GROUP):
                found.extend(as_custom_tool(item) for item in _flatten(ep.load()))
        registry = cls(found, idempotent)
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
