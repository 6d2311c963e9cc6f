"""The emulator and the whole service on loopback: `wiring.service`, exactly as `idlehook serve`
builds it, with the emulator's webhooks pointed at its receiver."""

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, TypeVar

import anthropic
import httpx

from emulator import Emulator, EmulatorConfig, create_emulator
from handlers.config import WorkerSettings
from idlehook import wiring
from idlehook.settings import ReaperSettings, ReconcileSettings, Settings
from tests.support.servers import serve

WEBHOOK_PATH = "/webhooks/anthropic"

V = TypeVar("V", bound="Running")


@dataclass
class Running:
    emulator: Emulator
    emulator_url: str
    receiver_url: str
    settings: Settings
    svc: wiring.Service

    def view(self, cls: type[V]) -> V:
        """The same stack as a subclass that adds a test module's own helpers."""
        return cls(**{f.name: getattr(self, f.name) for f in fields(self)})

    def client(self, max_retries: int = 0) -> anthropic.Anthropic:
        return anthropic.Anthropic(api_key="k", base_url=self.emulator_url, max_retries=max_retries)

    def agent_and_environment(
        self, name: str, client: anthropic.Anthropic | None = None
    ) -> tuple[str, str]:
        client = client or self.client()
        agent = client.beta.agents.create(name=name, model="claude-opus-4-7")
        env = client.beta.environments.create(
            name=name, config={"type": "cloud", "networking": {"type": "limited"}}
        )
        return agent.id, env.id

    def start_session(
        self, agent: str, environment: str, message: str, metadata: Mapping[str, str]
    ) -> str:
        """POST /sessions on the service's management API, as an operator would."""
        assert self.settings.api_token is not None
        response = httpx.post(
            self.receiver_url + "/sessions",
            headers={"authorization": f"Bearer {self.settings.api_token.get_secret_value()}"},
            json={
                "agent": agent,
                "environment": environment,
                "message": message,
                "metadata": dict(metadata),
            },
            timeout=30,
        )
        assert response.status_code == 201, response.text
        return str(response.json()["session_id"])


@contextmanager
def emulator(secret: str, **config: Any) -> Iterator[tuple[Emulator, str]]:
    """The in-process emulator on loopback, signing webhooks with `secret`: (Emulator, URL)."""
    values: dict[str, Any] = {"speed": 50, "run_seconds": 5.0, "webhook_secrets": [secret]}
    values.update(config)
    emu = Emulator(EmulatorConfig.model_validate(values))
    with serve(create_emulator(emulator=emu), timeout_keep_alive=60) as url:
        yield emu, url


@contextmanager
def emulator_and_service(
    db_url: str,
    tmp_path: Path,
    *,
    secret: str,
    token: str,
    owner: str,
    emulator_config: Mapping[str, Any] | None = None,
    **overrides: Any,
) -> Iterator[Running]:
    """`overrides` replace Settings fields; `emulator_config` replaces EmulatorConfig fields."""
    with emulator(secret, **(emulator_config or {})) as (emu, emulator_url):
        values: dict[str, Any] = {
            "database_url": db_url,
            "results_dir": tmp_path / "results",
            "api_key": "k",
            "base_url": emulator_url,
            "webhook_signing_keys": [secret],
            "api_token": token,
            "owner": owner,
            "worker": WorkerSettings(poll_seconds=0.1, backoff_base_seconds=0.1),
            "reaper": ReaperSettings(idle_for="0s"),
            "reconcile": ReconcileSettings(settle_seconds=0, interval_seconds=3600),
            "watchdog_seconds": 3600,
        }
        values.update(overrides)
        settings = Settings(**values)
        svc = wiring.service(settings)
        try:
            with serve(svc.app, timeout_keep_alive=60) as receiver_url:
                emu.apply_config({"webhook_urls": [receiver_url + WEBHOOK_PATH]})
                yield Running(emu, emulator_url, receiver_url, settings, svc)
        finally:
            svc.engine.dispose()
