"""idlehook: run Claude Managed Agents in production.

Plugins import only from this package: the handler Protocol and the types a handler sees.
"""

from handlers.api import (
    Handler,
    HandlerContext,
    Notification,
    PermanentError,
    PriorRun,
    SessionMarker,
    SessionResult,
)

__version__ = "0.1.0"

__all__ = [
    "Handler",
    "HandlerContext",
    "Notification",
    "PermanentError",
    "PriorRun",
    "SessionMarker",
    "SessionResult",
    "__version__",
]
