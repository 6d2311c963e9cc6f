"""The handlers this process may run: entry-point discovery with an allowlist, or instances."""

from collections.abc import Collection, Iterable
from importlib.metadata import entry_points

import structlog

from handlers.api import Handler

ENTRY_POINT_GROUP = "idlehook.handlers"
log = structlog.get_logger(__name__)


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
    def discover(cls, allow: Collection[str] | None = None) -> "Registry":
        """Load the `idlehook.handlers` entry points; only those in `allow` when it is given."""
        loaded: list[Handler] = []
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            if allow is not None and ep.name not in allow:
                continue
            handler = ep.load()()
            if handler.name != ep.name:
                raise ValueError(f"entry point {ep.name!r} loads a handler named {handler.name!r}")
            loaded.append(handler)
        registry = cls(loaded)
        missing = set(allow or ()) - set(registry.names())
        if missing:
            log.warning("handlers.not_installed", names=sorted(missing))
        return registry

    def get(self, name: str) -> Handler | None:
        return self._by_name.get(name)

    def names(self) -> list[str]:
        return list(self._by_name)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name
