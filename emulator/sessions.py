"""Sessions: create, retrieve, list, update, delete, archive, and the events a client sends.

Budgets follow the API's rules (`budgets.py` for the shape and the price check): a budget can
only be set at create, replaced by a higher cap or removed (never re-added), not on a
terminated session; an accepted change resumes a turn paused on its budget. While paused, a
`user.message` is a 400 and a `user.interrupt` is dropped.
"""

from typing import Any

from emulator import budgets, catalog, multiagent, runner, scripts, validation
from emulator.clock import rfc3339
from emulator.core import Emulator
from emulator.errors import BadRequest, Conflict, NotFound
from emulator.ids import new_id
from emulator.pagination import Page, paginate
from emulator.query import Query, in_range
from emulator.state import SessionRecord

OVERRIDABLE = ("model", "system", "tools", "mcp_servers", "skills")
STATUSES = ("rescheduling", "running", "idle", "terminated")


def agent_snapshot(emu: Emulator, ref: dict[str, Any]) -> dict[str, Any]:
    record = emu.store.agent(ref["id"])
    if record.archived_at is not None:
        raise BadRequest(f"agent {ref['id']} is archived")
    version = ref.get("version")
    if version is not None and not 1 <= version <= len(record.versions):
        raise NotFound(f"agent {ref['id']} has no version {version}")
    agent = record.versions[(version or len(record.versions)) - 1]
    snapshot = {
        # A session's agent is a thread agent's fields plus its multiagent configuration.
        key: agent[key]
        for key in (*multiagent.THREAD_AGENT_FIELDS, "multiagent")
    }
    snapshot["type"] = "agent"
    snapshot["multiagent"] = multiagent.for_session(emu, snapshot["multiagent"])
    if ref["type"] == "agent_with_overrides":
        for key in OVERRIDABLE:
            if key in ref:
                snapshot[key] = _override(key, ref[key])
    return snapshot


def _override(key: str, value: Any) -> Any:
    """An override replaces the field whole, filled in as on the agent."""
    if key == "model":
        return catalog.model_config(value, "agent.model")
    if key == "system":
        if value is not None and not isinstance(value, str):
            raise BadRequest("agent.system: expected a string or null")
        return value or None
    where = f"agent.{key}"
    items = validation.optional_list({where: value}, where)
    if key == "tools":
        return catalog.tools(items)
    if key == "mcp_servers":
        return catalog.mcp_servers(items)
    return catalog.skills(items)


def _resources(emu: Emulator, raw: list[Any]) -> list[dict[str, Any]]:
    out = []
    now = rfc3339(emu.clock.now())
    for i, item in enumerate(raw):
        res = validation.as_object(item, f"resources[{i}]")
        kind = res.get("type")
        if kind == "github_repository":
            url = validation.required_str(res, "url")
            name = url.rstrip("/").rsplit("/", 1)[-1].removesuffix(".git")
            entry = {
                "id": new_id("sesrsc_"),
                "type": kind,
                "url": url,
                "mount_path": res.get("mount_path") or f"/workspace/{name}",
                "created_at": now,
                "updated_at": now,
            }
            if res.get("checkout") is not None:
                entry["checkout"] = res["checkout"]
        elif kind == "file":
            file_id = validation.required_str(res, "file_id")
            entry = {
                "id": new_id("sesrsc_"),
                "type": kind,
                "file_id": file_id,
                "mount_path": res.get("mount_path") or f"/mnt/session/uploads/{file_id}",
                "created_at": now,
                "updated_at": now,
            }
        elif kind == "memory_store":
            entry = {k: v for k, v in res.items() if k != "authorization_token"}
        else:
            raise BadRequest(f"resources[{i}].type: unsupported {kind!r}")
        out.append(entry)
    return out


def create(
    emu: Emulator, body: Any, *, deployment_id: str | None = None, from_deployment: bool = False
) -> SessionRecord:
    body = validation.as_object(body)
    ref = validation.agent_ref(body.get("agent"))
    env_id = validation.required_str(body, "environment_id")
    allowed = (
        validation.DEPLOYMENT_INITIAL_TYPES if from_deployment else validation.SESSION_INITIAL_TYPES
    )
    initial = validation.initial_events(body.get("initial_events"), allowed)
    metadata = validation.metadata(body.get("metadata"))
    title = validation.optional_str(body, "title")
    vault_ids = validation.optional_list(body, "vault_ids")
    resources = _resources(emu, validation.optional_list(body, "resources"))
    budget = budgets.parse(body.get("budget"))
    env = emu.store.environment(env_id)
    if env["archived_at"] is not None:
        raise BadRequest(f"environment {env_id} is archived", error_code="environment_archived")
    snapshot = agent_snapshot(emu, ref)
    if budget is not None:
        budgets.require_budgetable(emu, snapshot)
    script_text = next(
        (validation.message_text(e) for e in initial if e["type"] == "user.message"), None
    )
    if "emulator_script" in metadata:
        scripts.steps_for(metadata["emulator_script"])  # an unknown script is a 400 up front
    now = emu.clock.now()
    record = SessionRecord(
        id=new_id("sesn_"),
        body={
            "type": "session",
            "agent": snapshot,
            "environment_id": env_id,
            "deployment_id": deployment_id,
            "title": title,
            "metadata": metadata,
            "vault_ids": vault_ids,
            "resources": resources,
            "budget": budget,
            "outcome_evaluations": [],
            "created_at": rfc3339(now),
        },
        created_at=now,
        created_emulated=emu.clock.elapsed(),
        usage=runner.empty_usage(),
        first_text=script_text,
    )
    record.body["id"] = record.id
    emu.store.sessions[record.id] = record
    emu.ledger.created(record.id, record.created_emulated)
    emu.creates["sessions"] += 1
    emu.webhook("session.created", record.id)
    if initial:
        _accept(emu, record, initial)
    return record


def public(emu: Emulator, record: SessionRecord) -> dict[str, Any]:
    return emu.session_json(record)


def retrieve(emu: Emulator, session_id: str) -> dict[str, Any]:
    return public(emu, emu.store.session(session_id))


def list_sessions(emu: Emulator, q: Query) -> Page:
    order = q.order("desc")
    limit = q.get_int("limit", 20, maximum=1000)
    statuses = q.get_list("statuses")
    for status in statuses:
        if status not in STATUSES:
            raise BadRequest(f"statuses: unknown status {status!r}")
    bounds = q.time_range("created_at")
    agent_id, deployment_id = q.get("agent_id"), q.get("deployment_id")
    agent_version = q.get("agent_version")
    if agent_version is not None and agent_id is None:
        raise BadRequest("agent_version: only together with agent_id")
    include_archived = q.get_bool("include_archived")
    rows = []
    for record in emu.store.sessions.values():
        agent = record.body["agent"]
        if record.deleted or (record.archived_at is not None and not include_archived):
            continue
        if statuses and record.status not in statuses:
            continue
        if agent_id is not None and agent["id"] != agent_id:
            continue
        if agent_version is not None and str(agent["version"]) != agent_version:
            continue
        if deployment_id is not None and record.body["deployment_id"] != deployment_id:
            continue
        if bounds and not in_range(record.created_at, bounds):
            continue
        rows.append(record)
    rows.sort(key=lambda r: (r.created_at, r.id), reverse=order == "desc")
    page = paginate(rows, limit=limit, page=q.get("page"), order=order)
    return Page([public(emu, r) for r in page.data], page.next_page, page.prev_page)


def update(emu: Emulator, session_id: str, body: Any) -> dict[str, Any]:
    record = emu.store.session(session_id)
    body = validation.as_object(body)
    if record.archived_at is not None:
        raise Conflict(f"session {session_id} is archived")
    if "vault_ids" in body:
        raise BadRequest("vault_ids: cannot be updated")
    # Checked before anything changes: a rejected budget leaves the session as it was.
    budget = _checked_budget(emu, record, body["budget"]) if "budget" in body else None
    changed: dict[str, Any] = {}
    if "title" in body:
        record.body["title"] = validation.optional_str(body, "title")
        changed["title"] = record.body["title"]
    if "metadata" in body:
        patch = validation.metadata(body["metadata"], allow_null_values=True)
        merged = {**record.body["metadata"], **patch}
        merged = {k: v for k, v in merged.items() if v is not None}
        validation.metadata(merged)
        record.body["metadata"] = merged
        changed["metadata"] = merged
    if "agent" in body:
        if record.status == "running":
            raise BadRequest("agent: cannot be updated while the session is running")
        agent_patch = validation.as_object(body["agent"], "agent")
        for key in ("tools", "mcp_servers"):
            if key in agent_patch:
                record.body["agent"][key] = _override(key, agent_patch[key])
        changed["agent"] = record.body["agent"]
    if "budget" in body:
        if budget != record.body["budget"]:
            changed["budget"] = budget
            record.budget_armed = True  # a new value can be reached (and announced) again
        if budget is None and record.body["budget"] is not None:
            record.budget_removed = True
        record.body["budget"] = budget
    if changed or emu.config.updated_at_moves == "always":
        emu.touch(record)
    if changed:
        emu.session_event(record, "session.updated", **changed)
        emu.webhook("session.updated", record.id)
    if "budget" in body and record.budget_paused and record.status == "idle":
        # An accepted raise or removal resumes the paused turn where it stopped.
        record.budget_paused = False
        runner.start_turn(emu, record, record.remaining)
    return public(emu, record)


def _checked_budget(emu: Emulator, record: SessionRecord, value: Any) -> dict[str, Any] | None:
    if record.status == "terminated":
        raise BadRequest("budget: cannot be changed on a terminated session")
    budget = budgets.parse(value)
    if budget is None:
        return None
    if record.body["budget"] is None:
        raise BadRequest(
            "budget: a removed budget cannot be re-added"
            if record.budget_removed
            else "budget: a session created without one cannot gain one",
            error_code="budget_create_only",
        )
    budgets.require_budgetable(emu, record.body["agent"])
    if budgets.cap_cents(budget) <= budgets.spent_cents(record):
        raise BadRequest(
            "budget: the cap must exceed what is already spent", error_code="budget_not_raised"
        )
    return budget


def delete(emu: Emulator, session_id: str) -> dict[str, Any]:
    record = emu.store.session(session_id)
    runner.cut_short(emu, record)
    if record.task is not None:
        record.task.cancel()
    now = emu.clock.elapsed()
    record.ended_emulated = now
    emu.ledger.deleted(record.id, now)  # stops the running clock at once
    emu.session_event(record, "session.deleted")
    for queue in record.subscribers:
        queue.put_nowait(None)
    record.deleted = True
    emu.webhook("session.deleted", record.id)
    return {"id": record.id, "type": "session_deleted"}


def archive(emu: Emulator, session_id: str) -> dict[str, Any]:
    record = emu.store.session(session_id)
    if record.archived_at is None:
        runner.cut_short(emu, record)
        if record.task is not None:
            record.task.cancel()
            record.task = None
        record.remaining = []
        record.blocking.clear()
        record.archived_at = emu.clock.now()
        if record.status != "terminated":
            emu.session_event(record, "session.status_terminated")
            emu.set_status(record, "terminated")
        else:
            emu.webhook("session.status_terminated", record.id)
        emu.webhook("session.archived", record.id)
    return public(emu, record)


def send_events(emu: Emulator, session_id: str, body: Any) -> list[dict[str, Any]]:
    record = emu.store.session(session_id)
    body = validation.as_object(body)
    raw = body.get("events")
    if not isinstance(raw, list) or not raw:
        raise BadRequest("events: required, a non-empty array")
    events = [
        validation.event(e, f"events[{i}]", validation.SENDABLE_TYPES) for i, e in enumerate(raw)
    ]
    if record.archived_at is not None or record.status == "terminated":
        raise Conflict(
            f"session {session_id} is {'archived' if record.archived_at else 'terminated'}"
        )
    for ev in events:
        if ev["type"] == "user.tool_confirmation" and ev["tool_use_id"] not in record.blocking:
            raise BadRequest(f"tool_use_id {ev['tool_use_id']}: not awaiting confirmation")
        if ev["type"] == "user.custom_tool_result" and (
            ev["custom_tool_use_id"] not in record.blocking
        ):
            raise BadRequest(f"custom_tool_use_id {ev['custom_tool_use_id']}: not awaited")
        if ev["type"] == "user.message" and record.budget_paused:
            raise BadRequest("the session is paused on its budget; raise or remove it first")
    return _accept(emu, record, events)


def _accept(emu: Emulator, record: SessionRecord, events: list[dict[str, Any]]) -> list[Any]:
    echoed = []
    for ev in events:
        if ev["type"] == "user.interrupt" and record.budget_paused:
            continue  # dropped, as the API documents: no echo, and the pause holds
        echo = {**ev, "id": new_id("sevt_"), "processed_at": rfc3339(emu.clock.now())}
        if ev["type"] == "user.define_outcome":
            echo["outcome_id"] = new_id("outc_")
            record.body["outcome_evaluations"].append(
                {
                    "type": "outcome_evaluation",
                    "outcome_id": echo["outcome_id"],
                    "description": ev["description"],
                    "iteration": 0,
                    "result": "pending",
                    "explanation": None,
                    "completed_at": None,
                }
            )
        emu.append_event(record, echo)
        echoed.append(echo)
        _react(emu, record, echo)
    return echoed


def _react(emu: Emulator, record: SessionRecord, ev: dict[str, Any]) -> None:
    kind = ev["type"]
    if kind == "user.interrupt":
        runner.interrupt(emu, record)
    elif kind == "user.message":
        if record.status == "running" or record.blocking:
            record.queued_messages.append(ev)
        else:
            runner.start_turn(emu, record, runner.steps_for_message(emu, record, ev))
    elif kind in ("user.tool_confirmation", "user.custom_tool_result"):
        key = ev["tool_use_id"] if kind == "user.tool_confirmation" else ev["custom_tool_use_id"]
        record.blocking.pop(key, None)
        record.resolved.append(ev)
        if record.blocking:
            emu.session_event(
                record,
                "session.status_idle",
                stop_reason={"type": "requires_action", "event_ids": list(record.blocking)},
            )
            emu.set_status(record, "idle")
        else:
            answers, record.resolved = record.resolved, []
            runner.start_turn(emu, record, record.remaining, answers)
