"""The handlers this process may run: entry-point discovery with an allowlist, or instances.

A plugin's own configuration is its `[plugins.<name>]` table. The class an entry point names
may declare `Config`, a pydantic model: the table is validated against it here, at startup, and
the plugin built as `Plugin(config)`. A class without `Config` is built as `Plugin()`, and a
table for it is an error (it would be silently ignored). The built-in plugins come through the
same door: wiring turns their older sections (`[archive]`, `[forward]`, ...) into their tables.

A route naming a handler no entry point provides is refused at startup (`unknown_handler`),
never left to dead-letter every run it would have had.
"""

import difflib
from collections.abc import Collection, Iterable, Mapping
from importlib.metadata import entry_points
from typing import Any

from pydantic import BaseModel, ValidationError

from handlers.api import Handler, PluginConfigError

ENTRY_POINT_GROUP = "idlehook.handlers"


def installed_names() -> list[str]:
    """The handler names the `idlehook.handlers` entry points provide, without loading them."""
    return sorted({ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)})


def unknown_handler(name: str, where: str, installed: Collection[str]) -> str:
    """The one-line refusal of a handler name no entry point provides, with the closest."""
    close = difflib.get_close_matches(name, sorted(installed), n=1)
    hint = f"; did you mean {close[0]}?" if close else ""
    names = ", ".join(sorted(installed)) or "none"
    return f"unknown handler {name!r} in {where} (installed: {names}{hint})"


def config_model(plugin: type[Any]) -> type[BaseModel] | None:
    """The plugin class's `Config` model, or None when it takes no configuration."""
    model = getattr(plugin, "Config", None)
    if model is None:
        return None
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        raise PluginConfigError(f"plugin {plugin!r}: `Config` must be a pydantic BaseModel class")
    return model


def build(plugin: type[Any], name: str, table: Mapping[str, Any] | None) -> Handler:
    """`plugin` built with its table validated against its `Config` (see the module docstring)."""
    model = config_model(plugin)
    if model is None:
        if table:
            raise PluginConfigError(
                f"plugin {name!r} takes no configuration, but [plugins.{name}] sets "
                f"{', '.join(sorted(table))}"
            )
        handler = plugin()
    else:
        try:
            config = model.model_validate(dict(table or {}))
        except ValidationError as exc:
            raise PluginConfigError(_explain(name, exc)) from None
        handler = plugin(config)
    if not isinstance(handler, Handler):
        raise PluginConfigError(f"plugin {name!r}: {plugin!r} is not a handler (`name`, `handle`)")
    if handler.name != name:
        raise PluginConfigError(f"entry point {name!r} loads a handler named {handler.name!r}")
    return handler


def _explain(name: str, exc: ValidationError) -> str:
    # Inputs are left out: a table may hold the plugin's own secrets.
    problems = "; ".join(
        f"{'.'.join(map(str, e['loc'])) or '(table)'}: {e['msg']}" for e in exc.errors()
    )
    return f"plugin {name!r}: [plugins.{name}] {problems}"


class Registry:
    def __init__(self, handlers: Iterable[Handler] = ()) -> None:
        self._by_name: dict[str, Handler] = {}
        for handler in handlers:
            if not isinstance(handler, Handler):
                raise TypeError(f"{handler!r} is not a handler (needs `name` and `handle`)")
            if handler.name in self._by_name:
                raise ValueError(f"two handlers are named {handler.name!r}")
            self._by_name[handler.name] = handler

    @classmethod
    def discover(
        cls,
        allow: Collection[str] | None = None,
        tables: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> "Registry":
        """Load the `idlehook.handlers` entry points (only those in `allow` when it is given),
        each built with its table from `tables`. Raises PluginConfigError on a table that does
        not fit its plugin, and on a name in `allow` that no entry point provides."""
        tables = tables or {}
        loaded: list[Handler] = []
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            if allow is not None and ep.name not in allow:
                continue
            loaded.append(build(ep.load(), ep.name, tables.get(ep.name)))
        registry = cls(loaded)
        missing = sorted(set(allow or ()) - set(registry.names()))
        if missing:
            # A route naming it would dead-letter every run it gets.
            installed = installed_names()
            raise PluginConfigError(
                "; ".join(unknown_handler(name, "the routes", installed) for name in missing)
            )
        return registry

    def get(self, name: str) -> Handler | None:
        return self._by_name.get(name)

    def names(self) -> list[str]:
        return list(self._by_name)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name
