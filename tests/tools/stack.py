"""The whole service against the emulator, set up for tool and approval tests."""

import base64
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from handlers.config import ApprovalSettings, ToolsSettings, WorkerSettings
from idlehook import wiring
from tests.support.servers import wait_for
from tests.support.stack import Running, emulator_and_service

SECRET = "whsec_" + base64.b64encode(b"T" * 32).decode()
TOKEN = "tools-management-token"
STREAM = "GET /v1/sessions/{id}/events/stream"


class Stack(Running):
    def launch(self, script: str, **metadata: str) -> str:
        agent, env = self.agent_and_environment("tools")
        return self.start_session(agent, env, "go", {"emulator_script": script, **metadata})

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
        async with wiring.api_client(self.settings, self.svc.engine) as api:
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
    with emulator_and_service(
        db_url,
        tmp_path,
        secret=SECRET,
        token=TOKEN,
        owner="tools",
        emulator_config={"speed": speed, "run_seconds": run_seconds, "faults": faults or {}},
        worker=WorkerSettings(poll_seconds=0.1, backoff_base_seconds=0.1, lease_seconds=5),
        tools=tools or ToolsSettings(modules=["tests.tools.sample_tools:lookup"]),
        approvals=approvals or ApprovalSettings(),
        **overrides,
    ) as running:
        yield running.view(Stack)
