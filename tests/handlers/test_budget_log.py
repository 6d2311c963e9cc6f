"""A session that stopped on its spend ceiling, through the worker with the default routes: it is
archived, and the `log` handler says so plainly (stop reason, spent, cap, how to raise it)."""

import json

import structlog

from handlers.builtin.archive import ArchiveHandler
from handlers.builtin.log import LogHandler
from handlers.registry import Registry
from handlers.worker import Worker
from idlehook.settings import Settings
from store.runs import RunStore
from tests.handlers.conftest import Sessions
from tests.handlers.helpers import add_delivery
from tests.handlers.support import run_until

IDLE = "session.status_idled"


def budgeted(sessions: Sessions, script: str, cents: int) -> str:
    """A session created with a cap, as `idlehook start --budget` creates it."""
    session = sessions.api.beta.sessions.create(
        agent=sessions.agent_id,
        environment_id=sessions.env_id,
        budget={"type": "limit", "max_list_cost": {"amount": str(cents), "currency": "USD"}},
        metadata={"emulator_script": script, "idlehook_budget_usd": f"{cents / 100:.2f}"},
        initial_events=[{"type": "user.message", "content": [{"type": "text", "text": "go"}]}],
    )
    sessions.wait_status(session.id, "idle")
    return session.id


async def test_a_budget_stop_is_archived_and_logged_by_default(
    store: RunStore, settings: Settings, client, sessions: Sessions
) -> None:
    session_id = budgeted(sessions, "budget_reached", 500)
    spent = int(sessions.api.beta.sessions.retrieve(session_id).usage.list_cost.amount)  # type: ignore[union-attr]
    registry = Registry([LogHandler(), ArchiveHandler()])
    worker = Worker(store, registry, client, settings)  # no [[routes]]: the defaults
    add_delivery(store.engine, IDLE, session_id)
    with structlog.testing.capture_logs() as logs:
        await run_until(worker, lambda: store.unfinished() == 0)

    result = json.loads((settings.results_dir / session_id / "result.json").read_text())
    assert result["stop_reason"] == "budget_reached"
    [summary] = [e for e in logs if e["event"] == "session.result"]
    assert summary["stop_reason"] == "budget_reached"
    assert summary["budget_usd"] == 5.0
    [stopped] = [e for e in logs if e["event"] == "session.budget_reached"]
    assert stopped["log_level"] == "warning"
    assert stopped["session_id"] == session_id
    assert (stopped["spent_usd"], stopped["budget_usd"]) == (spent / 100, 5.0)
    assert stopped["message"] == (
        f"session {session_id} stopped on its budget: spent ${spent / 100:,.2f} of $5.00; "
        f"`idlehook budget {session_id} USD` raises it and the session resumes"
    )


async def test_other_stops_log_no_budget_line(
    store: RunStore, settings: Settings, client, sessions: Sessions
) -> None:
    session_id = budgeted(sessions, "end_turn", 500)
    worker = Worker(store, Registry([LogHandler(), ArchiveHandler()]), client, settings)
    add_delivery(store.engine, IDLE, session_id)
    with structlog.testing.capture_logs() as logs:
        await run_until(worker, lambda: store.unfinished() == 0)
    [summary] = [e for e in logs if e["event"] == "session.result"]
    assert (summary["stop_reason"], summary["budget_usd"]) == ("end_turn", 5.0)
    assert not [e for e in logs if e["event"] == "session.budget_reached"]
