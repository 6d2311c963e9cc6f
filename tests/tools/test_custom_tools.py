"""Custom tools answered from the webhook, end to end (emulator -> receiver -> worker -> SDK),
exactly once under duplicated and reconciled notifications and a worker that died mid-call."""

import asyncio
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from handlers.config import ToolsSettings
from store import tool_calls
from store.models import Delivery, ToolCall, ToolCallState, utcnow
from store.tool_calls import INTERRUPTED
from tests.support.servers import wait_for
from tests.tools import sample_tools
from tests.tools.stack import stack

# The reconciler compares the API's timestamps with the wall clock (no emulated speed-up), and
# takes transitions under a second apart for one (clock skew): keep them further apart.
RECONCILABLE: dict[str, Any] = {"speed": 1, "run_seconds": 3.0}


@pytest.fixture(autouse=True)
def _fresh_calls():
    sample_tools.CALLS.clear()
    yield
    sample_tools.CALLS.clear()


def _rows(engine: Engine, session_id: str) -> list[tool_calls.ToolCallView]:
    return tool_calls.for_session(engine, session_id)


def test_three_custom_tools_run_once_each_under_duplicates_with_no_stream(
    db_url: str, tmp_path: Path
) -> None:
    with stack(db_url, tmp_path, faults={"duplicate": 1.0}) as s:
        sid = s.launch("custom_tools:3")
        s.wait_end_turn(sid)

        assert s.streams_opened() == 0
        assert len(sample_tools.CALLS) == 3
        results = s.of_type(sid, "user.custom_tool_result")
        uses = s.of_type(sid, "agent.custom_tool_use")
        assert [r.custom_tool_use_id for r in results] == [u.id for u in uses]
        assert [r.content[0].text for r in results] == [f"found emulator #{i}" for i in (1, 2, 3)]
        assert not any(r.is_error for r in results)
        rows = _rows(s.svc.engine, sid)
        assert [(r.state, r.attempts) for r in rows] == [(ToolCallState.SENT, 1)] * 3
        assert sum(d.duplicates for d in _deliveries(s)) > 0


def _deliveries(s):
    with Session(s.svc.engine) as db:
        return list(db.exec(select(Delivery)).all())


def test_reconciled_notifications_answer_each_call_once(db_url: str, tmp_path: Path) -> None:
    with stack(db_url, tmp_path, faults={"drop_all": True}, **RECONCILABLE) as s:
        sid = s.launch("custom_tools:2")

        def done() -> bool:
            asyncio.run(s.reconcile())  # no webhook ever arrives: the sweep finds each idle
            return s.stop_reason(sid) == "end_turn"

        wait_for(lambda: s.blocking(sid), timeout=30)
        wait_for(done, timeout=60, interval=0.2)
        for _ in range(2):  # sweeping again finds nothing new to answer
            asyncio.run(s.reconcile())
        assert len(sample_tools.CALLS) == 2
        assert len(s.of_type(sid, "user.custom_tool_result")) == 2
        assert all(r.attempts == 1 for r in _rows(s.svc.engine, sid))
        assert s.streams_opened() == 0


def _dead_call(engine: Engine, session_id: str, use_id: str) -> None:
    """What a worker that died mid-call leaves behind: `started`, its lease run out."""
    now = utcnow()
    with engine.begin() as conn:
        conn.execute(
            ToolCall.__table__.insert().values(  # type: ignore[attr-defined]
                custom_tool_use_id=use_id,
                session_id=session_id,
                tool_name="lookup",
                input={"query": "emulator"},
                state=ToolCallState.STARTED.value,
                attempts=1,
                owner="dead-worker",
                lease_expires_at=now - timedelta(seconds=1),
                is_error=False,
                started_at=now - timedelta(seconds=30),
            )
        )


@pytest.mark.parametrize("idempotent", [False, True], ids=["not_idempotent", "idempotent"])
def test_a_call_whose_worker_died_is_rerun_only_when_idempotent(
    sqlite_url: str, tmp_path: Path, idempotent: bool
) -> None:
    tools = ToolsSettings(
        modules=["tests.tools.sample_tools:lookup"], idempotent=["lookup"] if idempotent else []
    )
    with stack(sqlite_url, tmp_path, tools=tools, faults={"drop_all": True}, **RECONCILABLE) as s:
        sid = s.launch("custom_tools:1")
        (use_id,) = wait_for(lambda: s.blocking(sid), timeout=30)
        _dead_call(s.svc.engine, sid, use_id)
        asyncio.run(s.reconcile())
        s.wait_end_turn(sid)

        (result,) = s.of_type(sid, "user.custom_tool_result")
        (row,) = _rows(s.svc.engine, sid)
        assert row.state == ToolCallState.SENT
        if idempotent:
            assert len(sample_tools.CALLS) == 1
            assert not result.is_error
            assert row.attempts == 2
        else:
            assert sample_tools.CALLS == []
            assert result.is_error
            assert result.content[0].text == INTERRUPTED
            assert "interrupted" in result.content[0].text


def test_a_tool_that_raises_answers_an_error_and_the_session_goes_on(
    db_url: str, tmp_path: Path
) -> None:
    tools = ToolsSettings(modules=["tests.tools.sample_tools:failing_lookup"])
    with stack(db_url, tmp_path, tools=tools) as s:
        sid = s.launch("custom_tools:2")
        s.wait_end_turn(sid)
        results = s.of_type(sid, "user.custom_tool_result")
        assert len(results) == 2
        assert all(r.is_error for r in results)
        text = results[0].content[0].text
        assert text.startswith("RuntimeError: backend unavailable")
        assert "sk-secret-123" not in text
        assert "Traceback" not in text
        assert len(sample_tools.CALLS) == 2
