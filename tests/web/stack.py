"""The whole service on loopback (emulator + `wiring.service`), as `idlehook serve` builds it,
with a few sessions run through it so the page has real data to show."""

import base64
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic
import httpx
from sqlmodel import Session, col, select

from emulator import Emulator, EmulatorConfig, create_emulator
from idlehook import wiring
from idlehook.settings import ReaperSettings, ReconcileSettings, Settings, WorkerSettings
from store.models import HandlerRun, RunState
from tests.support.servers import serve, wait_for

SECRET = "whsec_" + base64.b64encode(b"W" * 32).decode()
TOKEN = "web-page-token-0123456789"
PATH = "/webhooks/anthropic"


@dataclass
class WebStack:
    emulator: Emulator
    emulator_url: str
    url: str
    settings: Settings
    svc: wiring.Service

    def client(self) -> anthropic.Anthropic:
        return anthropic.Anthropic(api_key="k", base_url=self.emulator_url, max_retries=0)

    def launch(self, script: str, n: int) -> list[str]:
        client = self.client()
        agent = client.beta.agents.create(name="web", model="claude-opus-4-7")
        env = client.beta.environments.create(
            name="web", config={"type": "cloud", "networking": {"type": "limited"}}
        )
        assert self.settings.api_token is not None
        bearer = f"Bearer {self.settings.api_token.get_secret_value()}"
        ids = []
        for i in range(n):
            response = httpx.post(
                self.url + "/sessions",
                headers={"authorization": bearer},
                json={
                    "agent": agent.id,
                    "environment": env.id,
                    "message": f"job {i}",
                    "metadata": {"emulator_script": script},
                },
                timeout=30,
            )
            assert response.status_code == 201, response.text
            ids.append(response.json()["session_id"])
        return ids

    def succeeded(self, handler: str) -> int:
        with Session(self.svc.engine) as db:
            rows = db.exec(
                select(HandlerRun).where(
                    col(HandlerRun.handler) == handler, col(HandlerRun.state) == RunState.SUCCEEDED
                )
            ).all()
        return len(rows)

    def settle(self, archived: int) -> None:
        wait_for(lambda: self.succeeded("archive") >= archived, timeout=30)


@contextmanager
def web_stack(db_url: str, tmp_path: Path, **overrides: Any) -> Iterator[WebStack]:
    emu = Emulator(EmulatorConfig(speed=50, run_seconds=5.0, webhook_secrets=[SECRET]))
    with serve(create_emulator(emulator=emu)) as emulator_url:
        fields: dict[str, Any] = {
            "database_url": db_url,
            "results_dir": tmp_path / "results",
            "api_key": "k",
            "base_url": emulator_url,
            "webhook_signing_keys": [SECRET],
            "api_token": TOKEN,
            "owner": "web",
            "worker": WorkerSettings(poll_seconds=0.1, backoff_base_seconds=0.1),
            "reaper": ReaperSettings(idle_for="0s"),
            "reconcile": ReconcileSettings(settle_seconds=0, interval_seconds=3600),
            "watchdog_seconds": 3600,
        }
        fields.update(overrides)
        settings = Settings(**fields)
        svc = wiring.service(settings)
        try:
            with serve(svc.app, timeout_keep_alive=60) as url:
                emu.apply_config({"webhook_urls": [url + PATH]})
                yield WebStack(emu, emulator_url, url, settings, svc)
        finally:
            svc.engine.dispose()
