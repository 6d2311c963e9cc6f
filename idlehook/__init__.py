"""idlehook: run Claude Managed Agents in production.

Plugins import only from this package: the handler Protocol and the types a handler sees are
re-exported here once the handler API exists.
"""

__version__ = "0.1.0"
