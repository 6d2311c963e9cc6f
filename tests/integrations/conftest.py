"""The `broker` fixture: each test here runs once per broker (tests/integrations/brokers.py)."""

import asyncio
from collections.abc import Iterator

import pytest

from tests.integrations.brokers import BROKERS, NAMES, Broker, require


@pytest.fixture(params=list(BROKERS))
def broker(request: pytest.FixtureRequest) -> Iterator[Broker]:
    kind = BROKERS[request.param]()
    require(kind.port, NAMES[request.param])
    asyncio.run(kind.prepare())
    yield kind
    asyncio.run(kind.cleanup())
