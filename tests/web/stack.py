"""The whole service on loopback (emulator + `wiring.service`), as `idlehook serve` builds it,
with a few sessions run through it so the page has real data to show."""

import base64
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlmodel import Session, col, select

from store.models import HandlerRun, RunState
from tests.support.servers import wait_for
from tests.support.stack import WEBHOOK_PATH as PATH
from tests.support.stack import Running, emulator_and_service

SECRET = "whsec_" + base64.b64encode(b"W" * 32).decode()
TOKEN = "web-page-token-0123456789"

__all__ = ["PATH", "SECRET", "TOKEN", "WebStack", "web_stack"]


class WebStack(Running):
    @property
    def url(self) -> str:
        return self.receiver_url

    def launch(self, script: str, n: int) -> list[str]:
        agent, env = self.agent_and_environment("web")
        return [
            self.start_session(agent, env, f"job {i}", {"emulator_script": script})
            for i in range(n)
        ]

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
    with emulator_and_service(
        db_url, tmp_path, secret=SECRET, token=TOKEN, owner="web", **overrides
    ) as running:
        yield running.view(WebStack)
