"""Settings and the store for a command, without the SDK: what `status`, `sessions`, `keys` and
`db` need, importable in a fraction of the time `idlehook.wiring` takes (which builds clients,
the worker and the app, and re-exports these two)."""

import argparse
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from idlehook.errors import ConfigError
from idlehook.logs import configure_logging
from idlehook.settings import Settings

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine


def _explain(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'config'}: {e['msg']}" for e in exc.errors()
        )
    return str(exc)


def settings_from_args(args: argparse.Namespace, **overrides: Any) -> Settings:
    """Settings for a command, and logging configured to match them."""
    config = getattr(args, "config", None)
    try:
        settings = Settings.load(config=Path(config) if config else None, **overrides)
    except (ValidationError, FileNotFoundError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(_explain(exc)) from None
    if settings.json_logs is not None and not getattr(args, "log_json", None):
        # The config file chose the format; main() has already sent logs to stderr.
        configure_logging(json=settings.json_logs, cache=False)
    return settings


def open_engine(settings: Settings, *, pool_size: int = 10) -> "Engine":
    """The engine, with the schema brought up to date (idempotent)."""
    from store.engine import make_engine, migrate

    engine = make_engine(settings.database_url, pool_size=pool_size)
    migrate(engine)
    return engine
