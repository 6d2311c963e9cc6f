"""Fixtures for the worker and plugins: the emulator on loopback, the SDK, a migrated store."""

import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anthropic
import pytest
from sqlalchemy.engine import Engine

from emulator.app import create_emulator
from emulator.config import EmulatorConfig
from handlers.config import WorkerSettings
from idlehook.settings import Settings
from store.engine import make_engine
from store.runs import RunStore
from tests.support.servers import serve

API_KEY = "sk-test-handlers"


@pytest.fixture
def emulator_url() -> Iterator[str]:
    # Emulated turns take run_seconds / speed real seconds: fast enough to wait for.
    config = EmulatorConfig(speed=200.0, run_seconds=2.0)
    with serve(create_emulator(config)) as url:
        yield url


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = make_engine(db_url, pool_size=8)
    yield engine
    engine.dispose()


@pytest.fixture
def store(engine: Engine) -> RunStore:
    return RunStore(engine)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        api_key="k",
        results_dir=tmp_path / "results",
        worker=WorkerSettings(
            concurrency=4,
            lease_seconds=30,
            poll_seconds=0.05,
            max_attempts=3,
            backoff_base_seconds=0.01,
            backoff_max_seconds=0.02,
        ),
    )


@pytest.fixture
async def client(emulator_url: str) -> AsyncIterator[anthropic.AsyncAnthropic]:
    async with anthropic.AsyncAnthropic(
        api_key=API_KEY, base_url=emulator_url, max_retries=0
    ) as client:
        yield client


class Sessions:
    """Make emulator sessions through the real SDK (a sync client: tests may call from anywhere)."""

    def __init__(self, url: str) -> None:
        self.api = anthropic.Anthropic(api_key=API_KEY, base_url=url, max_retries=0)
        agent = self.api.beta.agents.create(name="tester", model="claude-sonnet-4-5")
        self.agent_id = agent.id
        self.env_id = self.api.beta.environments.create(name="env").id

    def start(self, text: str = "hello", script: str = "end_turn", **kw: object) -> str:
        session = self.api.beta.sessions.create(
            agent=self.agent_id,
            environment_id=self.env_id,
            metadata={"emulator_script": script, **kw.get("metadata", {})},  # type: ignore[dict-item]
            initial_events=[{"type": "user.message", "content": [{"type": "text", "text": text}]}],
        )
        return session.id

    def wait_status(self, session_id: str, status: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while self.api.beta.sessions.retrieve(session_id).status != status:
            if time.monotonic() > deadline:
                raise AssertionError(f"{session_id} never became {status}")
            time.sleep(0.02)

    def finished(self, script: str = "end_turn") -> str:
        session_id = self.start(script=script)
        self.wait_status(session_id, "idle")
        return session_id


@pytest.fixture
def sessions(emulator_url: str) -> Iterator[Sessions]:
    s = Sessions(emulator_url)
    yield s
    s.api.close()
