"""API calls per finished session, counted at the emulator, through `idlehook serve` (built by
`wiring.service`): archive + delete cost at most 3 read-class calls a session, whatever the
duplicates and the second family; a transition no route wants costs none."""

import base64
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session, col, select

from handlers.config import RouteRule
from store.models import Delivery, HandlerRun, RunState, TrackedSession
from tests.support.servers import wait_for
from tests.support.stack import Running, emulator_and_service

SECRET = "whsec_" + base64.b64encode(b"B" * 32).decode()
TOKEN = "e2e-budget-token"
IDLE = ["session.status_idled", "session.idled"]
# What is spent on one session after its launch (the emulator's own request keys).
PER_SESSION = (
    "GET /v1/sessions/{id}",
    "GET /v1/sessions/{id}/events",
    "GET /v1/files",
    "DELETE /v1/sessions/{id}",
)


class Stack(Running):
    def calls(self) -> Counter[str]:
        return Counter({key: self.emulator.requests[key] for key in PER_SESSION})

    def settled(self) -> bool:
        with Session(self.svc.engine) as db:
            busy = db.exec(
                select(HandlerRun).where(
                    col(HandlerRun.state).in_([RunState.PENDING, RunState.RUNNING, RunState.FAILED])
                )
            ).first()
        return busy is None and self.emulator.sender.pending() == 0

    def deleted(self, ids: list[str]) -> bool:
        with Session(self.svc.engine) as db:
            rows = db.exec(select(TrackedSession).where(col(TrackedSession.id).in_(ids))).all()
        return len(rows) == len(ids) and all(r.deleted_at is not None for r in rows)

    def delivered(self) -> Counter[str]:
        with Session(self.svc.engine) as db:
            return Counter(d.event_type for d in db.exec(select(Delivery)).all())


@contextmanager
def stack(db_url: str, tmp_path: Path, routes: list[RouteRule], **emulator: Any) -> Iterator[Stack]:
    with emulator_and_service(
        db_url,
        tmp_path,
        secret=SECRET,
        token=TOKEN,
        owner="budget",
        emulator_config=emulator,
        routes=routes,
    ) as running:
        yield running.view(Stack)


def launch(s: Stack, n: int) -> list[str]:
    agent, env = s.agent_and_environment("budget")
    return [
        s.start_session(agent, env, f"job {i}", {"emulator_script": "end_turn"}) for i in range(n)
    ]


@pytest.mark.parametrize(
    "noise",
    [{}, {"second_family": True, "faults": {"duplicate": 1.0}}],
    ids=["plain", "duplicated_and_second_family"],
)
def test_archive_and_delete_cost_three_calls_per_session(
    db_url: str, tmp_path: Path, noise: dict[str, Any]
) -> None:
    route = RouteRule(name="finished", event_types=IDLE, handlers=["archive", "delete"])
    with stack(db_url, tmp_path, [route], **noise) as s:
        before = s.calls()
        ids = launch(s, 4)
        wait_for(lambda: s.deleted(ids), timeout=30)
        wait_for(s.settled, timeout=30)
        spent = s.calls() - before
        delivered = s.delivered()
        for sid in ids:
            assert (s.settings.results_dir / sid / "events.jsonl").exists()
    if noise:
        assert delivered["session.idled"] == len(ids)  # the twin came, and was routed
    # Per session: the session and its transcript (routing, shared by archive and delete), and
    # the delete. No files listed: not configured.
    assert sum(spent.values()) <= 3 * len(ids), spent
    assert spent["GET /v1/files"] == 0


def test_transitions_no_route_wants_cost_nothing(db_url: str, tmp_path: Path) -> None:
    """Every notification of these sessions (created, run started, idled, both families) goes to
    no handler: none is worth a call."""
    route = RouteRule(
        name="only_terminations", event_types=["session.status_terminated"], handlers=["archive"]
    )
    # Written routes keep the built-in `requires_action -> answer` rule, which reads each idle
    # session for its stop reason; claiming requires_action (by type: no read) opts out of it.
    no_answers = RouteRule(
        name="no_answers", event_types=["session.requires_action"], handlers=["log"]
    )
    with stack(db_url, tmp_path, [route, no_answers], second_family=True) as s:
        before = s.calls()
        launch(s, 3)
        wait_for(lambda: s.delivered()["session.idled"] == 3, timeout=30)
        wait_for(s.settled, timeout=30)
        assert s.calls() - before == Counter()
