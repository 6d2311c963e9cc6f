"""Fixtures: the emulator served on loopback, the real SDK pointed at it, and a webhook
receiver that verifies Standard Webhooks signatures and records what arrived."""

import base64
import json
import secrets
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import anthropic
import httpx
import pytest
from standardwebhooks import Webhook
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from emulator.app import create_emulator
from emulator.clock import SpeedClock
from emulator.config import EmulatorConfig
from emulator.core import Emulator
from tests.support.servers import serve

FAST = 200.0  # emulated speed for tests: a 2 s turn takes 10 ms


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


@dataclass
class Received:
    body: str
    headers: dict[str, str]
    verified: bool

    @property
    def event(self) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(self.body)
        return value

    @property
    def data_type(self) -> str:
        return str(self.event["data"]["type"])


@dataclass
class Receiver:
    """Answers from `script` in order (then `default`), verifying with `secret`."""

    secret: str
    url: str = ""
    script: list[int] = field(default_factory=list)
    default: int = 200
    received: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle(self, request: Request) -> Response:
        body = (await request.body()).decode()
        headers = dict(request.headers)
        try:
            Webhook(self.secret).verify(body, headers)
            verified = True
        except Exception:
            verified = False
        with self.lock:
            self.received.append(Received(body, headers, verified))
            status = self.script.pop(0) if self.script else self.default
        return Response(status_code=status, headers={"location": "https://elsewhere.example/"})

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/hook", self.handle, methods=["POST"])])

    def events(self, data_type: str | None = None, session_id: str | None = None) -> list[Received]:
        with self.lock:
            items = list(self.received)
        return [
            r
            for r in items
            if (data_type is None or r.data_type == data_type)
            and (session_id is None or r.event["data"]["id"] == session_id)
        ]

    def types(self, session_id: str | None = None) -> list[str]:
        return [r.data_type for r in self.events(session_id=session_id)]


@dataclass
class Served:
    url: str
    emulator: Emulator

    def client(self, **kwargs: Any) -> anthropic.Anthropic:
        options: dict[str, Any] = {"api_key": "sk-test", "max_retries": 0}
        options.update(kwargs)
        return anthropic.Anthropic(base_url=self.url, _strict_response_validation=True, **options)

    def control(self, method: str, path: str, **kwargs: Any) -> Any:
        response = httpx.request(method, f"{self.url}/_emulator/{path}", **kwargs)
        response.raise_for_status()
        return response.json()


@pytest.fixture
def stack() -> Iterator[ExitStack]:
    with ExitStack() as s:
        yield s


@pytest.fixture
def start(stack: ExitStack) -> Callable[..., Served]:
    """start(**config) -> a served emulator; fast by default."""

    def _start(wall: Callable[[], datetime] | None = None, **overrides: Any) -> Served:
        overrides.setdefault("speed", FAST)
        config = EmulatorConfig.model_validate(overrides)
        clock = SpeedClock(config.speed, wall=wall) if wall is not None else None
        app = create_emulator(emulator=Emulator(config, clock=clock))
        url = stack.enter_context(serve(app))
        return Served(url, app.state.emulator)

    return _start


@pytest.fixture
def receiver(stack: ExitStack) -> Receiver:
    rec = Receiver(secret=new_secret())
    rec.url = stack.enter_context(serve(rec.app())) + "/hook"
    return rec


@pytest.fixture
def served(start: Callable[..., Served]) -> Served:
    return start()


@pytest.fixture
def client(served: Served) -> anthropic.Anthropic:
    return served.client()


def user_message(text: str = "hello") -> Any:
    return {"type": "user.message", "content": [{"type": "text", "text": text}]}


@dataclass
class World:
    agent_id: str
    environment_id: str


def world(client: anthropic.Anthropic) -> World:
    agent = client.beta.agents.create(name="tester", model="claude-sonnet-4-5")
    env = client.beta.environments.create(name="env")
    return World(agent.id, env.id)


def start_session(
    client: anthropic.Anthropic,
    w: World,
    script: str | None = None,
    text: str = "hello",
    **kwargs: Any,
) -> Any:
    metadata = dict(kwargs.pop("metadata", {}))
    if script is not None:
        metadata["emulator_script"] = script
    initial: list[Any] = [user_message(text)]
    return client.beta.sessions.create(
        agent=w.agent_id,
        environment_id=w.environment_id,
        initial_events=initial,
        metadata=metadata,
        **kwargs,
    )


def idle_events(client: anthropic.Anthropic, session_id: str) -> list[Any]:
    return list(client.beta.sessions.events.list(session_id, types=["session.status_idle"]))
