"""Fixtures for tests that run `idlehook` commands in-process against the emulator.

A test module takes them by assignment (`w = cli.w`), so pytest collects them there and only
there; `config_fixture(owner)` makes the `config` fixture for that module's owner."""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from idlehook import logs
from tests.sessions.test_launch_helpers import API_KEY, World, world


@pytest.fixture(autouse=True)
def logging_back_to_defaults() -> Iterator[None]:
    # Logs to stderr for the whole test: `main()` restores the logging it found when a command
    # returns, and structlog's default writes to stdout, where the in-process emulator's lines
    # (logged from its thread between commands) would mix into a command's captured output.
    previous = logs.saved()
    logs.configure_logging(json=False, level="WARNING", cache=False)
    yield
    # The level too: a later test's service configures logging with the level last chosen.
    logs.restore(previous)


@pytest.fixture
def w() -> Iterator[World]:
    with world() as running:
        yield running


def config_fixture(owner: str) -> Any:
    @pytest.fixture
    def config(tmp_path: Path, sqlite_url: str, w: World) -> Path:
        path = tmp_path / "idlehook.toml"
        path.write_text(
            f'database_url = "{sqlite_url}"\n'
            f'base_url = "{w.url}"\n'
            f'api_key = "{API_KEY}"\n'
            f'owner = "{owner}"\n'
        )
        return path

    return config
