"""idlehook: run Claude Managed Agents in production.

Plugins import only from this package: the handler Protocol, the types a handler sees (the
SDK's session event union and file metadata among them), and `idlehook.testing` to test one.
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from handlers.api import (
        BetaFileMetadata,
        BetaManagedAgentsSessionEvent,
        Handler,
        HandlerContext,
        Notification,
        PermanentError,
        PluginConfigError,
        Pricing,
        PriorRun,
        SessionMarker,
        SessionResult,
        SharedConfig,
    )


def __getattr__(name: str) -> Any:
    # Lazy: `idlehook.cli` and `idlehook.errors` live in this package, and the SDK that
    # handlers.api brings in costs a second at start; a command that never loads a plugin
    # (`idlehook --help`, `status`) must not pay it.
    if name in __all__ and name != "__version__":
        from handlers import api

        return getattr(api, name)
    raise AttributeError(f"module 'idlehook' has no attribute {name!r}")


__version__ = "0.1.0"

__all__ = [
    "BetaFileMetadata",
    "BetaManagedAgentsSessionEvent",
    "Handler",
    "HandlerContext",
    "Notification",
    "PermanentError",
    "PluginConfigError",
    "Pricing",
    "PriorRun",
    "SessionMarker",
    "SessionResult",
    "SharedConfig",
    "__version__",
]
