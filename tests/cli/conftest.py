"""The running stack (emulator, receiver, worker on SQLite) that `show` and the table tests
drive with CLI processes."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.tools.stack import Stack, stack


@pytest.fixture
def s(sqlite_url: str, tmp_path: Path) -> Iterator[Stack]:
    with stack(sqlite_url, tmp_path) as running:
        yield running
