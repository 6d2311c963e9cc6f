"""The pure parts and the store underneath: policy, tool registry, result content, the
exactly-once claim on tool calls, and first-decision-wins approvals (SQLite and PostgreSQL)."""

import asyncio
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import pytest
from anthropic.lib.tools import ToolError, beta_async_tool, beta_tool

from handlers.config import ApprovalRule
from handlers.tools.policy import HeldCall, apply_rules
from handlers.tools.registry import ToolRegistry, custom_tool, load_reference
from handlers.tools.runner import run_tool, to_content
from store import approvals, tool_calls
from store.approvals import Decision
from store.engine import make_engine
from store.models import TrackedSession
from store.tool_calls import INTERRUPTED, Next

T0 = datetime(2026, 1, 1, tzinfo=UTC)
V = TypeVar("V")


def must(value: V | None) -> V:
    assert value is not None
    return value


LEASE = timedelta(seconds=30)


def call(tool="bash", input=None, agent="agent_1", **metadata):
    return HeldCall(tool, input or {"command": "ls"}, agent, metadata)


def test_policy_first_matching_rule_decides_else_the_default() -> None:
    rules = [
        ApprovalRule(name="no-rm", tools=["bash"], input_pattern=r"rm\s", action="deny"),
        ApprovalRule(agent_ids=["agent_ops"], action="allow"),
        ApprovalRule(metadata={"env": "prod"}, action="deny", message="not in prod"),
    ]
    assert apply_rules(rules, "ask", call(input={"command": "rm -rf /"})).action == "deny"
    assert (
        apply_rules(rules, "ask", call(input={"command": "rm -rf /"})).message
        == "Denied by policy."
    )
    assert apply_rules(rules, "ask", call(input={"command": "rm -rf /"})).rule == "no-rm"
    assert apply_rules(rules, "ask", call(agent="agent_ops")).action == "allow"
    prod = apply_rules(rules, "ask", call(env="prod"))
    assert (prod.action, prod.message, prod.rule) == ("deny", "not in prod", "2")
    default = apply_rules(rules, "ask", call())
    assert (default.action, default.rule) == ("ask", None)


def test_invalid_input_pattern_is_rejected_by_settings() -> None:
    with pytest.raises(ValueError, match="input_pattern"):
        ApprovalRule(input_pattern="(", action="deny")


def test_registry_takes_sdk_tools_plain_functions_and_references() -> None:
    @beta_tool
    def add(a: int, b: int) -> str:
        """Add two numbers."""
        return str(a + b)

    @beta_async_tool
    async def shout(text: str) -> str:
        """Shout."""
        return text.upper()

    def plain(x: int) -> dict[str, int]:
        """Double it."""
        return {"x": x * 2}

    raw = custom_tool(lambda **kw: "ok", name="raw", input_schema={"type": "object"})
    registry = ToolRegistry([add, shout, plain, raw], idempotent=["add"])
    assert registry.names() == ["add", "shout", "plain", "raw"]
    assert must(registry.get("add")).idempotent
    assert not must(registry.get("shout")).idempotent
    assert must(registry.get("add")).input_schema["required"] == ["a", "b"]
    assert must(registry.get("plain")).to_param()["type"] == "custom"

    async def run_all():
        return [
            await run_tool(must(registry.get("add")), {"a": 2, "b": 3}, 5),
            await run_tool(must(registry.get("shout")), {"text": "hi"}, 5),
            await run_tool(must(registry.get("plain")), {"x": 4}, 5),
            await run_tool(must(registry.get("add")), {"a": "x"}, 5),
        ]

    added, shouted, doubled, invalid = asyncio.run(run_all())
    assert added.content == [{"type": "text", "text": "5"}]
    assert not added.is_error
    assert shouted.content[0]["text"] == "HI"
    assert doubled.content[0]["text"] == '{"x": 8}'
    assert invalid.is_error
    # Which tool, which argument and why, and the schema to call it by (not the SDK's bare
    # "Invalid arguments for function add").
    text = invalid.content[0]["text"]
    assert "tool 'add': argument 'a': Input should be a valid integer" in text
    assert "argument 'b': Missing required argument" in text
    assert '"required":["a","b"]' in text
    with pytest.raises(ValueError, match="two tools"):
        ToolRegistry([add, add])
    assert [t.name for t in load_reference("tests.tools.sample_tools:lookup")] == ["lookup"]
    with pytest.raises(ValueError, match=r"package\.module:attribute"):
        load_reference("nocolon")


def test_tool_errors_timeouts_and_content_shapes() -> None:
    async def boom(**_):
        raise ToolError([{"type": "text", "text": "structured"}])

    async def slow(**_):
        await asyncio.sleep(5)

    async def run_both():
        return (
            await run_tool(custom_tool(boom, input_schema={}), {}, 5),
            await run_tool(custom_tool(slow, input_schema={}), {}, 0.05),
        )

    structured, timed_out = asyncio.run(run_both())
    assert structured.is_error
    assert structured.content == [{"type": "text", "text": "structured"}]
    assert timed_out.is_error
    assert "timed out" in timed_out.content[0]["text"]
    assert to_content(None) == [{"type": "text", "text": "(no output)"}]
    assert to_content([{"type": "weird"}]) == [{"type": "text", "text": '{"type": "weird"}'}]


@pytest.fixture
def engine(db_url):
    engine = make_engine(db_url, pool_size=2)
    yield engine
    engine.dispose()


def claim(engine, owner, now=T0, idempotent=False):
    return tool_calls.claim(
        engine,
        custom_tool_use_id="sevt_1",
        session_id="sesn_1",
        tool_name="lookup",
        input={"q": 1},
        owner=owner,
        now=now,
        lease=LEASE,
        idempotent=idempotent,
    )


def test_a_tool_call_is_claimed_once_and_a_dead_owner_settled_by_idempotence(engine) -> None:
    first = claim(engine, "w1")
    assert first.next is Next.RUN
    assert claim(engine, "w2").next is Next.BUSY
    # w1 dies; its lease runs out. Not idempotent: answered "interrupted", never re-run.
    later = T0 + LEASE + timedelta(seconds=1)
    settled = claim(engine, "w2", now=later)
    assert (settled.next, settled.interrupted) == (Next.SEND, True)
    assert settled.call.result == INTERRUPTED
    assert settled.call.is_error
    assert not tool_calls.finish(engine, first.call.id, "w1", '"late"', False, later)
    assert claim(engine, "w3", now=later).next is Next.SEND
    tool_calls.mark_sent(engine, first.call.id, later)
    assert claim(engine, "w4", now=later).next is Next.DONE


def test_an_idempotent_call_is_taken_over_and_the_old_owner_fenced(engine) -> None:
    first = claim(engine, "w1", idempotent=True)
    later = T0 + LEASE + timedelta(seconds=1)
    taken = claim(engine, "w2", now=later, idempotent=True)
    assert (taken.next, taken.call.attempts, taken.call.owner) == (Next.RUN, 2, "w2")
    assert not tool_calls.renew(engine, first.call.id, "w1", later, LEASE)
    assert not tool_calls.finish(engine, first.call.id, "w1", '"stale"', False, later)
    assert tool_calls.finish(engine, first.call.id, "w2", '"fresh"', False, later)
    assert must(tool_calls.get(engine, "sevt_1")).result == '"fresh"'


def record(engine, tool_use_id="sevt_t1", expires=T0 + timedelta(minutes=5), **kw):
    return approvals.record(
        engine,
        session_id="sesn_1",
        tool_use_id=tool_use_id,
        tool_name="bash",
        input={"command": "ls"},
        agent_id="agent_1",
        now=T0,
        expires_at=expires,
        **kw,
    )


def test_approvals_first_decision_wins_and_a_second_record_changes_nothing(engine) -> None:
    view, created = record(engine)
    assert created
    assert [p.tool_use_id for p in approvals.list_pending(engine)] == ["sevt_t1"]
    again, created_again = record(engine, decision=Decision.ALLOW, decided_by="policy")
    assert not created_again
    assert again.id == view.id
    assert again.state == "pending"
    assert approvals.decide(engine, view.id, Decision.DENY, message="no", by="cli", now=T0)
    assert not approvals.decide(engine, view.id, Decision.ALLOW, message=None, by="http", now=T0)
    decided = must(approvals.get(engine, view.id))
    assert (decided.decision, decided.message, decided.decided_by) == ("deny", "no", "cli")
    assert approvals.list_pending(engine) == []
    assert [u.id for u in approvals.unsent(engine)] == [view.id]
    approvals.mark_sent(engine, view.id, T0)
    assert approvals.unsent(engine) == []


def test_expired_approvals_are_denied_and_their_sessions_marked_for_reaping(engine) -> None:
    with engine.begin() as conn:
        conn.execute(
            TrackedSession.__table__.insert().values(  # type: ignore[attr-defined]
                id="sesn_1", launched_by_us=True, metadata={}, first_seen_at=T0, updated_at=T0
            )
        )
    old, _ = record(engine, "sevt_old", expires=T0 + timedelta(seconds=1))
    record(engine, "sevt_new", expires=T0 + timedelta(hours=1))
    denied = approvals.expire(engine, T0 + timedelta(minutes=1), "too late")
    assert [(d.id, d.decision, d.message, d.decided_by) for d in denied] == [
        (old.id, "deny", "too late", "expiry")
    ]
    assert [p.tool_use_id for p in approvals.list_pending(engine)] == ["sevt_new"]
    with engine.connect() as conn:
        row = conn.execute(TrackedSession.__table__.select()).first()  # type: ignore[attr-defined]
    assert row.reap_requested_at is not None
