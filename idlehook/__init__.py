"""idlehook: run Claude Managed Agents in production.

Plugins import only from this package: the handler Protocol, the types a handler sees (the
SDK's session event union and file metadata among them), and `idlehook.testing` to test one.
"""

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
