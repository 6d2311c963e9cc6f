"""Shared helpers for the launch tests (no tests here): an emulator on loopback with an agent and
two environments, and a Launcher wired to it over the real SDK."""

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import anthropic

from emulator.app import create_emulator
from emulator.config import EmulatorConfig
from emulator.core import Emulator
from sessions.launcher import Launcher
from sessions.pacing import Pacer
from store.engine import make_engine
from tests.sessions.paced import paced_client
from tests.support.servers import serve

API_KEY = "sk-test-launcher"


@dataclass
class World:
    url: str
    emu: Emulator
    agent_id: str
    limited_env: str
    open_env: str

    def sync_client(self) -> anthropic.Anthropic:
        return anthropic.Anthropic(api_key=API_KEY, base_url=self.url, max_retries=0)

    def async_client(self, pacer: Pacer | None = None) -> anthropic.AsyncAnthropic:
        """On the paced transport when given a pacer, as idlehook builds its clients."""
        if pacer is not None:
            return paced_client(self.url, pacer, api_key=API_KEY)
        return anthropic.AsyncAnthropic(api_key=API_KEY, base_url=self.url, max_retries=0)

    def open_streams(self) -> int:
        return sum(len(s.subscribers) for s in self.emu.store.sessions.values())

    def session_creates(self) -> int:
        return self.emu.creates["sessions"]


@contextmanager
def world(**config: Any) -> Iterator[World]:
    config.setdefault("run_seconds", 3600.0)  # sessions keep running unless a test says not
    emu = Emulator(EmulatorConfig(**config))
    with serve(create_emulator(emulator=emu)) as url:
        client = anthropic.Anthropic(api_key=API_KEY, base_url=url, max_retries=0)
        agent = client.beta.agents.create(name="launcher-test", model="claude-sonnet-4-6")
        limited = client.beta.environments.create(
            name="limited",
            config={
                "type": "cloud",
                "networking": {
                    "type": "limited",
                    "allowed_hosts": ["example.com"],
                    "allow_mcp_servers": False,
                    "allow_package_managers": False,
                },
            },
        )
        unrestricted = client.beta.environments.create(
            name="open", config={"type": "cloud", "networking": {"type": "unrestricted"}}
        )
        yield World(url, emu, agent.id, limited.id, unrestricted.id)


@contextmanager
def launcher_for(
    w: World, db_url: str, *, rpm: dict[str, float] | None = None, block: int = 1, **kwargs: Any
) -> Iterator[Launcher]:
    engine = make_engine(db_url, pool_size=8)
    try:
        pacer = Pacer(engine, rpm or {"create": 60_000, "read": 60_000}, block=block)
        kwargs.setdefault("owner", "tests")
        yield Launcher(engine, w.async_client(pacer), **kwargs)
    finally:
        engine.dispose()
