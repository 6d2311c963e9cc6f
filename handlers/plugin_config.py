"""Settings -> what plugins are configured with: each one's table, and the shared config.

The built-in plugins keep the sections they always had (`[archive]`, `[forward]`, `[tools]`,
`[approvals]`, `[worker] reuse_reads_seconds`, `results_dir`): they are turned into the
built-ins' tables here, and the registry validates them against each built-in's `Config` like
any `[plugins.<name>]` table. A `[plugins.<built-in>]` table is refused rather than merged, so
each setting has one place.
"""

from typing import Any

from handlers.api import SharedConfig
from handlers.config import HandlerSettings

BUILTINS = ("log", "archive", "forward", "delete", "answer")


def shared_config(settings: HandlerSettings) -> SharedConfig:
    """`ctx.config`: the facts every plugin may read, none of them secret."""
    return SharedConfig(
        results_dir=settings.results_dir,
        pricing=settings.pricing(),
        owner=settings.owner,
        archive_url=settings.archive.url,
    )


def builtin_tables(settings: HandlerSettings) -> dict[str, dict[str, Any]]:
    """The built-ins' tables, from their sections."""
    return {
        "archive": {
            "results_dir": settings.results_dir,
            "list_files": settings.archive.list_files,
            "url": settings.archive.url,
            "storage_options": settings.archive.storage_options,
        },
        # Forward sends the result archive writes: files listed only when archive lists them.
        "forward": {**dict(settings.forward), "list_files": settings.archive.list_files},
        "delete": {"reuse_reads_seconds": settings.worker.reuse_reads_seconds},
        "answer": {
            "lease_seconds": settings.worker.lease_seconds,
            "tools": settings.tools,
            "approvals": settings.approvals,
            "forward": settings.forward,
        },
    }


def plugin_tables(settings: HandlerSettings) -> dict[str, dict[str, Any]]:
    """Every plugin's table: the built-ins' from their sections, the others' from `[plugins]`.

    Raises ValueError for a `[plugins.<built-in>]` table."""
    clash = sorted(set(settings.plugins) & set(BUILTINS))
    if clash:
        raise ValueError(
            f"[plugins.{clash[0]}]: built-in plugins are configured in their own sections "
            "([archive], [forward], [tools], [approvals], [worker]), not under [plugins]"
        )
    return {**builtin_tables(settings), **settings.plugins}
