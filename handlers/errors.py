"""Errors a plugin raises on purpose. Imports nothing of idlehook: `idlehook` re-exports it."""


class PermanentError(Exception):
    """Retrying cannot help: the run is dead-lettered at once (replayable by an operator)."""
