"""The whole service against the emulator, set up for tool and approval tests."""

import base64
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic
import httpx

from emulator import Emulator, EmulatorConfig, create_emulator
from idlehook import wiring
from idlehook.settings import (
    ApprovalSettings,
    ReaperSettings,
    ReconcileSettings,
    Settings,
    ToolsSettings,
    WorkerSettings,
)
from tests.support.servers import serve, wait_for

SECRET = "whsec_" + base64.b64encode(b"T" * 32).decode()
TOKEN = "tools-management-token"
PATH = "/webhooks/anthropic"
STREAM = "GET /v1/sessions/{id}/events/stream"


@dataclass
class Stack:
    emulator: Emulator
    emulator_url: str
    receiver_url: str
    settings: Settings
    svc: wiring.Service

    def client(self) -> anthropic.Anthropic:
        return anthropic.Anthropic(api_key="k", base_url=self.emulator_url, max_retries=0)

    def launch(self, script: str, **metadata: str) -> str:
        client = self.client()
        agent = client.beta.agents.create(name="tools", model="claude-opus-4-7")
        env = client.beta.environments.create(
            name="tools", config={"type": "cloud", "networking": {"type": "limited"}}
        )
        response = httpx.post(
            self.receiver_url + "/sessions",
            headers={"authorization": f"Bearer {TOKEN}"},
            json={
                "agent": agent.id,
                "environment": env.id,
                "message": "go",
                "metadata": {"emulator_script": script, **metadata},
            },
            timeout=30,
        )
        assert response.status_code == 201, response.text
        return str(response.json()["session_id"])

    def events(self, session_id: str) -> list[Any]:
        return list(self.client().beta.sessions.events.list(session_id))

    def stop_reason(self, session_id: str) -> str | None:
        idles = [e for e in self.events(session_id) if e.type == "session.status_idle"]
        return idles[-1].stop_reason.type if idles else None

    def blocking(self, session_id: str) -> list[str]:
        idles = [e for e in self.events(session_id) if e.type == "session.status_idle"]
        if not idles or idles[-1].stop_reason.type != "requires_action":
            return []
        return list(idles[-1].stop_reason.event_ids)

    def wait_end_turn(self, session_id: str, timeout: float = 30) -> None:
        def ended() -> bool:
            session = self.client().beta.sessions.retrieve(session_id)
            return session.status == "idle" and self.stop_reason(session_id) == "end_turn"

        wait_for(ended, timeout=timeout, interval=0.1)

    def of_type(self, session_id: str, kind: str) -> list[Any]:
        return [e for e in self.events(session_id) if e.type == kind]

    def streams_opened(self) -> int:
        return int(self.emulator.requests.get(STREAM, 0))

    async def reconcile(self) -> Any:
        async with wiring.api_client(self.settings) as api:
            return await wiring.reconciler(self.settings, self.svc.engine, api).sweep()


@contextmanager
def stack(
    db_url: str,
    tmp_path: Path,
    *,
    tools: ToolsSettings | None = None,
    approvals: ApprovalSettings | None = None,
    faults: dict[str, Any] | None = None,
    speed: float = 50,
    run_seconds: float = 2.0,
    **overrides: Any,
) -> Iterator[Stack]:
    """`speed` 1 for reconciler tests: it compares the API's timestamps with our clock."""
    emu = Emulator(
        EmulatorConfig(
            speed=speed, run_seconds=run_seconds, webhook_secrets=[SECRET], faults=faults or {}
        )
    )
    with serve(create_emulator(emulator=emu)) as emulator_url:
        settings = Settings(
            database_url=db_url,
            results_dir=tmp_path / "results",
            api_key="k",
            base_url=emulator_url,
            webhook_signing_keys=[SECRET],
            api_token=TOKEN,
            owner="tools",
            worker=WorkerSettings(poll_seconds=0.1, backoff_base_seconds=0.1, lease_seconds=5),
            reaper=ReaperSettings(idle_for="0s"),
            reconcile=ReconcileSettings(settle_seconds=0, interval_seconds=3600),
            watchdog_seconds=3600,
            tools=tools or ToolsSettings(modules=["tests.tools.sample_tools:lookup"]),
            approvals=approvals or ApprovalSettings(),
            **overrides,
        )
        svc = wiring.service(settings)
        try:
            with serve(svc.app, timeout_keep_alive=60) as receiver_url:
                emu.apply_config({"webhook_urls": [receiver_url + PATH]})
                yield Stack(emu, emulator_url, receiver_url, settings, svc)
        finally:
            svc.engine.dispose()
