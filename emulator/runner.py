"""Drives a session's scripted turn on the event loop: running, agent events spread over the
run time (emulated), then idle with a stop_reason, or termination. Blocking tool calls park the
turn in `record.remaining` until the answers arrive, as does a budget pause until the budget is
raised or removed.

The turn keeps a schedule (`record.turn_ends_at`), so when it is cut short while running (an
interrupt, a delete, an archive) the ledger records what it would still have cost: the running
time left until its scheduled end and the list cost of its remaining `Say` steps.
"""

import asyncio
from typing import Any

import structlog

from emulator import budgets, pricing
from emulator.clock import rfc3339
from emulator.core import Emulator
from emulator.ids import new_id
from emulator.scripts import (
    Fail,
    ProduceFile,
    ReachBudget,
    Refuse,
    Reschedule,
    Say,
    Step,
    UseCustomTool,
    UseTool,
    choose_script,
    is_blocking,
    steps_for,
)
from emulator.state import SessionRecord
from emulator.validation import message_text

log = structlog.get_logger(__name__)

# Tokens of one model request: every `Say` step is one.
INPUT_TOKENS_PER_REQUEST = 1200
OUTPUT_TOKENS_PER_REQUEST = 180
REQUEST_USD = pricing.token_usd(INPUT_TOKENS_PER_REQUEST, OUTPUT_TOKENS_PER_REQUEST)


def empty_usage() -> dict[str, Any]:
    return {
        "input_tokens": 0,
        "output_tokens": 0,
        "cache_read_input_tokens": 0,
        "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
        "list_cost": {"amount": "0", "currency": "USD"},
        "server_tool_use": {"web_search_requests": 0, "web_fetch_requests": 0},
    }


def run_seconds(emu: Emulator, record: SessionRecord) -> float:
    raw = record.body["metadata"].get("emulator_run_seconds")
    if raw is not None:
        try:
            return max(0.0, float(raw))
        except ValueError:
            pass
    return emu.config.run_seconds


def steps_for_message(emu: Emulator, record: SessionRecord, message: dict[str, Any]) -> list[Step]:
    first_text = record.first_text
    text = message_text(message) if message.get("type") == "user.message" else None
    script = choose_script(record.body["metadata"], text or first_text, emu.config.default_script)
    return steps_for(script)


def start_turn(
    emu: Emulator,
    record: SessionRecord,
    steps: list[Step],
    answers: list[dict[str, Any]] | None = None,
) -> None:
    answers = answers or []
    record.remaining = list(steps)
    # Running at once, so a create with initial_events answers `running` as the real API does.
    emu.session_event(record, "session.status_running")
    emu.set_status(record, "running")
    _outcomes(record, "running")
    # The run time is spread evenly: a pause before each answer and step, and one before idle.
    record.step_seconds = run_seconds(emu, record) / (len(record.remaining) + len(answers) + 1)
    _schedule(emu, record, len(answers))
    record.task = emu.spawn(_drive(emu, record, answers))


def _schedule(emu: Emulator, record: SessionRecord, answers_left: int = 0) -> None:
    """When the running turn ends if nothing cuts it short; re-anchored after every step, so a
    timer that fires late does not count as time avoided."""
    pauses = answers_left + len(record.remaining) + 1
    record.turn_ends_at = emu.clock.elapsed() + record.step_seconds * pauses


def cut_short(emu: Emulator, record: SessionRecord) -> None:
    """Record on the ledger what the running turn would still have cost: called before an
    interrupt, a delete or an archive stops it. A session not running costs nothing more."""
    if record.status != "running" or record.turn_ends_at is None:
        return
    says = sum(1 for step in record.remaining if isinstance(step, Say))
    emu.ledger.cut_short(record.id, emu.clock.elapsed(), record.turn_ends_at, says * REQUEST_USD)
    record.turn_ends_at = None


def interrupt(emu: Emulator, record: SessionRecord) -> None:
    cut_short(emu, record)
    if record.task is not None and record.task is not asyncio.current_task():
        record.task.cancel()
    record.task = None
    record.remaining = []
    record.blocking.clear()
    record.queued_messages.clear()
    if record.status in ("running", "idle"):
        _idle(emu, record, {"type": "end_turn"})


async def _drive(emu: Emulator, record: SessionRecord, answers: list[dict[str, Any]]) -> None:
    try:
        await _run(emu, record, answers)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("runner.crashed", session_id=record.id)


async def _run(emu: Emulator, record: SessionRecord, answers: list[dict[str, Any]]) -> None:
    delay = record.step_seconds
    for i, answer in enumerate(answers):
        await emu.clock.sleep(delay)
        _answer(emu, record, answer)
        _schedule(emu, record, len(answers) - i - 1)
    pending: list[str] = []
    while True:
        while record.remaining:
            await emu.clock.sleep(delay)
            if record.deleted:
                return
            # Taken off only once it runs: until then a cut-short turn counts it as avoided.
            step = record.remaining.pop(0)
            event_id = _execute(emu, record, step)
            _schedule(emu, record)
            if isinstance(step, Fail) and step.retry_status == "terminal":
                return _terminate(emu, record)
            if isinstance(step, Fail | Refuse):
                record.remaining = []
                record.queued_messages.clear()
                if isinstance(step, Refuse):
                    return _idle(emu, record, {"type": "refusal"}, _refusal_details(step))
                return _idle(emu, record, {"type": "retries_exhausted"})
            if isinstance(step, ReachBudget):
                # Forced, budget or not: what is left, and a word on resuming, waits.
                record.remaining = [Say("Resumed after the budget change."), *record.remaining]
                return _pause_on_budget(emu, record)
            if isinstance(step, Say) and budgets.reached(record):
                return _pause_on_budget(emu, record)  # the remaining steps wait
            if event_id is not None:
                pending.append(event_id)
                record.blocking[event_id] = "custom" if isinstance(step, UseCustomTool) else "tool"
                if not (record.remaining and is_blocking(record.remaining[0])):
                    return _idle(emu, record, {"type": "requires_action", "event_ids": pending})
        if not record.queued_messages:
            break
        message = record.queued_messages.pop(0)
        record.remaining = steps_for_message(emu, record, message)
        _schedule(emu, record)
    await emu.clock.sleep(delay)
    _outcomes(record, "satisfied", emu)
    _idle(emu, record, {"type": "end_turn"})


def _pause_on_budget(emu: Emulator, record: SessionRecord) -> None:
    """The documented budget pause: `session.usage` (usage and budget), then idle with
    `budget_reached`; the webhook once per budget value. No thread events: the emulator runs
    one thread and does not model threads."""
    record.budget_paused = True
    emu.session_event(
        record, "session.usage", usage=emu.usage(record), budget=record.body["budget"]
    )
    _idle(emu, record, {"type": "budget_reached"})
    if record.budget_armed:
        record.budget_armed = False
        emu.webhook("session.budget_reached", record.id)


def _refusal_details(step: Refuse) -> dict[str, Any]:
    return {"type": "refusal", "category": step.category, "explanation": step.explanation}


def _execute(emu: Emulator, record: SessionRecord, step: Step) -> str | None:
    """Emit the events for one step; returns the event id when the step blocks the turn."""
    if isinstance(step, Say):
        start = emu.session_event(record, "span.model_request_start")
        emu.session_event(
            record, "agent.message", preview=True, content=[{"type": "text", "text": step.text}]
        )
        _add_usage(emu, record)
        emu.session_event(
            record,
            "span.model_request_end",
            model_request_start_id=start["id"],
            is_error=False,
            model_usage={
                "input_tokens": INPUT_TOKENS_PER_REQUEST,
                "output_tokens": OUTPUT_TOKENS_PER_REQUEST,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
            },
        )
        return None
    if isinstance(step, UseTool):
        permission = "ask" if step.ask else "allow"
        policy = "always_ask" if step.ask else "always_allow"
        use = emu.session_event(
            record,
            "agent.tool_use",
            name=step.name,
            input={"command": "echo hello"},
            evaluated_permission=permission,
            evaluation={"type": policy},
        )
        if step.ask:
            return str(use["id"])
        _tool_result(emu, record, use["id"], "hello")
        return None
    if isinstance(step, UseCustomTool):
        use = emu.session_event(
            record, "agent.custom_tool_use", name=step.name, input={"query": "emulator"}
        )
        return str(use["id"])
    if isinstance(step, Fail):
        emu.session_event(
            record,
            "session.error",
            error={
                "type": "model_request_failed_error"
                if step.retry_status == "exhausted"
                else "unknown_error",
                "message": f"Scripted failure ({step.retry_status}).",
                "retry_status": {"type": step.retry_status},
            },
        )
        return None
    if isinstance(step, Reschedule):
        emu.session_event(
            record,
            "session.error",
            error={
                "type": "model_overloaded_error",
                "message": "Scripted transient error.",
                "retry_status": {"type": "retrying"},
            },
        )
        emu.session_event(record, "session.status_rescheduled")
        emu.set_status(record, "rescheduling")
        emu.session_event(record, "session.status_running")
        emu.set_status(record, "running")
        return None
    if isinstance(step, ReachBudget | Refuse):
        return None  # the turn's end is the runner's: see `_run`
    if isinstance(step, ProduceFile):
        _produce_file(emu, record, step.filename)
        return None
    raise AssertionError(f"unhandled step {step!r}")


def _answer(emu: Emulator, record: SessionRecord, answer: dict[str, Any]) -> None:
    if answer["type"] == "user.tool_confirmation":
        if answer["result"] == "allow":
            _tool_result(emu, record, answer["tool_use_id"], "hello")
        else:
            message = answer.get("deny_message") or "The user denied this tool call."
            _tool_result(emu, record, answer["tool_use_id"], message, is_error=True)
            _execute(emu, record, Say(f"Understood, not running it: {message}"))


def _tool_result(
    emu: Emulator, record: SessionRecord, tool_use_id: str, text: str, is_error: bool = False
) -> None:
    emu.session_event(
        record,
        "agent.tool_result",
        tool_use_id=tool_use_id,
        content=[{"type": "text", "text": text}],
        is_error=is_error,
    )


def _idle(
    emu: Emulator,
    record: SessionRecord,
    stop_reason: dict[str, Any],
    stop_details: dict[str, Any] | None = None,
) -> None:
    record.turn_ends_at = None
    extra: dict[str, Any] = {"stop_details": stop_details} if stop_details is not None else {}
    emu.session_event(record, "session.status_idle", stop_reason=stop_reason, **extra)
    emu.set_status(record, "idle")
    if stop_reason["type"] == "requires_action":
        emu.second_family("session.requires_action", record.id)


def _terminate(emu: Emulator, record: SessionRecord) -> None:
    record.turn_ends_at = None
    record.remaining = []
    record.blocking.clear()
    record.queued_messages.clear()
    emu.session_event(record, "session.status_terminated")
    emu.set_status(record, "terminated")


def _add_usage(emu: Emulator, record: SessionRecord) -> None:
    usage = record.usage
    usage["input_tokens"] += INPUT_TOKENS_PER_REQUEST
    usage["output_tokens"] += OUTPUT_TOKENS_PER_REQUEST
    usd = pricing.token_usd(usage["input_tokens"], usage["output_tokens"])
    usage["list_cost"] = {"amount": str(pricing.cents(usd)), "currency": "USD"}
    emu.ledger.spent(record.id, REQUEST_USD)


def _outcomes(record: SessionRecord, result: str, emu: Emulator | None = None) -> None:
    for outcome in record.body["outcome_evaluations"]:
        if outcome["completed_at"] is not None:
            continue
        outcome["result"] = result
        if result == "satisfied" and emu is not None:
            outcome["explanation"] = "Scripted run: criteria met."
            outcome["completed_at"] = rfc3339(emu.clock.now())


def _produce_file(emu: Emulator, record: SessionRecord, filename: str) -> None:
    file_id = new_id("file_")
    content = f"produced by {record.id}\n".encode()
    emu.store.files[file_id] = {
        "id": file_id,
        "type": "file",
        "filename": filename,
        "mime_type": "text/plain",
        "size_bytes": len(content),
        "created_at": rfc3339(emu.clock.now()),
        "downloadable": True,
        "scope": {"type": "session", "id": record.id},
    }
