"""Deployments and their runs: a pinned agent version plus everything a session needs, fired
manually (`/run`, synchronous) or by a cron schedule evaluated on the emulated clock.

A deployment's `budget` is stamped onto each session it fires, so its pinned agent must be
budgetable when the budget is set (400 `model_not_budgetable`); each fire checks again through
the session create, and a failure there is recorded on the run."""

import asyncio
from datetime import datetime
from typing import Any

import structlog

from emulator import budgets, cron, sessions, validation
from emulator.clock import rfc3339
from emulator.core import Emulator
from emulator.errors import APIError, BadRequest, NotFound
from emulator.ids import new_id
from emulator.pagination import Page, paginate
from emulator.query import Query, in_range, parse_time
from emulator.state import DeploymentRecord

log = structlog.get_logger(__name__)


def _schedule(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    sched = validation.as_object(value, "schedule")
    if sched.get("type") != "cron":
        raise BadRequest("schedule.type: only cron is supported")
    expression = validation.required_str(sched, "expression")
    timezone = sched.get("timezone") or "UTC"
    try:
        cron.parse(expression)
        cron.zone(timezone)
    except cron.CronError as exc:
        raise BadRequest(f"schedule: {exc}") from None
    return {"type": "cron", "expression": expression, "timezone": timezone, "last_run_at": None}


def _pin(emu: Emulator, value: Any) -> dict[str, Any]:
    ref = validation.agent_ref(value, allow_overrides=False)
    record = emu.store.agent(ref["id"])
    version = ref.get("version") or record.latest["version"]
    if version > len(record.versions):
        raise NotFound(f"agent {ref['id']} has no version {version}")
    return {"type": "agent", "id": ref["id"], "version": version}


def _budget(emu: Emulator, value: Any, pin: dict[str, Any]) -> dict[str, Any] | None:
    budget = budgets.parse(value)
    if budget is not None:
        budgets.require_budgetable(emu, emu.store.agent(pin["id"]).versions[pin["version"] - 1])
    return budget


def _arm(emu: Emulator, record: DeploymentRecord) -> None:
    sched = record.body["schedule"]
    if sched is None or record.body["archived_at"] is not None:
        record.next_fire = None
        return
    parsed, tz = cron.parse(sched["expression"]), cron.zone(sched["timezone"])
    record.next_fire = cron.next_after(parsed, tz, emu.clock.emulated_wall())


def public(emu: Emulator, record: DeploymentRecord) -> dict[str, Any]:
    body = dict(record.body)
    sched = body["schedule"]
    if sched is not None:
        upcoming: list[datetime] = []
        if body["archived_at"] is None and record.next_fire is not None:
            parsed, tz = cron.parse(sched["expression"]), cron.zone(sched["timezone"])
            upcoming = [record.next_fire, *cron.upcoming(parsed, tz, record.next_fire, 4)]
        body["schedule"] = {**sched, "upcoming_runs_at": [rfc3339(t) for t in upcoming]}
    return body


def create(emu: Emulator, body: Any) -> dict[str, Any]:
    body = validation.as_object(body)
    env_id = validation.required_str(body, "environment_id")
    emu.store.environment(env_id)
    resources = validation.optional_list(body, "resources")
    vault_ids = validation.optional_list(body, "vault_ids")
    if len(resources) > 500 or len(vault_ids) > 50:
        raise BadRequest("at most 500 resources and 50 vault_ids")
    now = rfc3339(emu.clock.now())
    pin = _pin(emu, body.get("agent"))
    deployment: dict[str, Any] = {
        "id": new_id("depl_"),
        "type": "deployment",
        "name": validation.required_str(body, "name", max_len=256),
        "description": validation.optional_str(body, "description"),
        "agent": pin,
        "environment_id": env_id,
        "initial_events": validation.initial_events(
            body.get("initial_events"), validation.DEPLOYMENT_INITIAL_TYPES, min_count=1
        ),
        "metadata": validation.metadata(body.get("metadata")),
        "resources": [
            {k: v for k, v in r.items() if k != "authorization_token"} for r in resources
        ],
        "vault_ids": vault_ids,
        "budget": _budget(emu, body.get("budget"), pin),
        "schedule": _schedule(body.get("schedule")),
        "status": "active",
        "paused_reason": None,
        "created_at": now,
        "updated_at": now,
        "archived_at": None,
    }
    record = DeploymentRecord(deployment["id"], deployment)
    _arm(emu, record)
    emu.store.deployments[record.id] = record
    emu.webhook("deployment.created", record.id)
    return public(emu, record)


def update(emu: Emulator, deployment_id: str, body: Any) -> dict[str, Any]:
    body = validation.as_object(body)
    record = emu.store.deployment(deployment_id)
    if record.body["archived_at"] is not None:
        raise BadRequest(f"deployment {deployment_id} is archived")
    dep = record.body
    # Checked before anything changes: the budget must fit the agent the update leaves pinned.
    pin = _pin(emu, body["agent"]) if "agent" in body else dep["agent"]
    budget = _budget(emu, body["budget"] if "budget" in body else dep["budget"], pin)
    if "name" in body:
        dep["name"] = validation.required_str(body, "name", max_len=256)
    if "description" in body:
        dep["description"] = validation.optional_str(body, "description")
    dep["agent"], dep["budget"] = pin, budget
    if "environment_id" in body:
        dep["environment_id"] = emu.store.environment(body["environment_id"])["id"]
    if "initial_events" in body:
        dep["initial_events"] = validation.initial_events(
            body["initial_events"], validation.DEPLOYMENT_INITIAL_TYPES, min_count=1
        )
    if "metadata" in body:
        patch = validation.metadata(body["metadata"], allow_null_values=True)
        dep["metadata"] = {k: v for k, v in {**dep["metadata"], **patch}.items() if v is not None}
    for key in ("resources", "vault_ids"):
        if key in body:
            dep[key] = body[key] or []
    if "schedule" in body:
        dep["schedule"] = _schedule(body["schedule"])
        _arm(emu, record)
    dep["updated_at"] = rfc3339(emu.clock.now())
    emu.webhook("deployment.updated", record.id)
    return public(emu, record)


def set_paused(emu: Emulator, deployment_id: str, paused: bool) -> dict[str, Any]:
    record = emu.store.deployment(deployment_id)
    if record.body["archived_at"] is not None:
        raise BadRequest(f"deployment {deployment_id} is archived")
    record.body["status"] = "paused" if paused else "active"
    record.body["paused_reason"] = {"type": "manual"} if paused else None
    record.body["updated_at"] = rfc3339(emu.clock.now())
    if not paused:
        _arm(emu, record)  # unpausing does not backfill missed runs
    emu.webhook("deployment.paused" if paused else "deployment.unpaused", record.id)
    return public(emu, record)


def archive(emu: Emulator, deployment_id: str) -> dict[str, Any]:
    record = emu.store.deployment(deployment_id)
    if record.body["archived_at"] is None:
        record.body.update(
            archived_at=rfc3339(emu.clock.now()), status="active", paused_reason=None
        )
        record.next_fire = None
        emu.webhook("deployment.archived", record.id)
    return public(emu, record)


def list_deployments(emu: Emulator, q: Query) -> Page:
    include_archived, agent_id, status = (
        q.get_bool("include_archived"),
        q.get("agent_id"),
        q.get("status"),
    )
    bounds = q.time_range("created_at")
    rows = [
        public(emu, r)
        for r in emu.store.deployments.values()
        if (include_archived or r.body["archived_at"] is None)
        and (agent_id is None or r.body["agent"]["id"] == agent_id)
        and (status is None or r.body["status"] == status)
        and (not bounds or in_range(parse_time("created_at", r.body["created_at"]), bounds))
    ]
    rows.sort(key=lambda d: (d["created_at"], d["id"]), reverse=True)
    return paginate(
        rows, limit=q.get_int("limit", 20, maximum=100), page=q.get("page"), order="desc"
    )


def run(emu: Emulator, deployment_id: str, scheduled_at: datetime | None = None) -> dict[str, Any]:
    """Fire the deployment once; the run records the session or the error, never both."""
    record = emu.store.deployment(deployment_id)
    dep = record.body
    if dep["archived_at"] is not None:
        raise BadRequest(f"deployment {deployment_id} is archived")
    trigger: dict[str, Any] = (
        {"type": "manual"}
        if scheduled_at is None
        else {"type": "schedule", "scheduled_at": rfc3339(scheduled_at)}
    )
    run_record: dict[str, Any] = {
        "id": new_id("drun_"),
        "type": "deployment_run",
        "deployment_id": deployment_id,
        "agent": dict(dep["agent"]),
        "trigger_context": trigger,
        "created_at": rfc3339(emu.clock.now()),
        "session_id": None,
        "error": None,
    }
    emu.store.runs[run_record["id"]] = run_record
    if scheduled_at is not None:
        emu.webhook("deployment_run.started", run_record["id"])
    try:
        _check_rate(emu)
        session = sessions.create(
            emu,
            {
                "agent": dep["agent"],
                "environment_id": dep["environment_id"],
                "initial_events": dep["initial_events"],
                "metadata": dep["metadata"],
                "resources": dep["resources"],
                "vault_ids": dep["vault_ids"],
                "budget": dep["budget"],
            },
            deployment_id=deployment_id,
            from_deployment=True,
        )
        run_record["session_id"] = session.id
    except APIError as exc:
        run_record["error"] = {"type": _run_error_type(exc), "message": exc.message}
    if scheduled_at is not None:
        kind = "deployment_run.failed" if run_record["error"] else "deployment_run.succeeded"
        emu.webhook(kind, run_record["id"])
    return run_record


def _check_rate(emu: Emulator) -> None:
    limits = emu.config.rate_limits
    if (
        limits.enabled
        and emu.limiter.acquire("create", limits.create_per_minute, limits.algorithm) is not None
    ):
        raise APIError("session creation rate limited", error_code="session_rate_limited_error")


def _run_error_type(exc: APIError) -> str:
    if exc.error_code == "session_rate_limited_error":
        return "session_rate_limited_error"
    if exc.error_code in ("environment_not_found", "environment_archived"):
        return f"{exc.error_code}_error"
    if "agent" in exc.message and "archived" in exc.message:
        return "agent_archived_error"
    return "session_creation_rejected_error"


def list_runs(emu: Emulator, q: Query) -> Page:
    deployment_id, trigger = q.get("deployment_id"), q.get("trigger_type")
    has_error = None if q.get("has_error") is None else q.get_bool("has_error")
    bounds = q.time_range("created_at")
    rows = [
        r
        for r in emu.store.runs.values()
        if (deployment_id is None or r["deployment_id"] == deployment_id)
        and (trigger is None or r["trigger_context"]["type"] == trigger)
        and (has_error is None or (r["error"] is not None) == has_error)
        and (not bounds or in_range(parse_time("created_at", r["created_at"]), bounds))
    ]
    rows.sort(key=lambda r: (r["created_at"], r["id"]), reverse=True)
    return paginate(
        rows, limit=q.get_int("limit", 20, maximum=1000), page=q.get("page"), order="desc"
    )


async def scheduler(emu: Emulator) -> None:
    """Fire due schedules; runs for the life of the app."""
    while True:
        await asyncio.sleep(emu.config.scheduler_tick_seconds)
        try:
            tick(emu)
        except Exception:
            log.exception("scheduler.tick_failed")


def tick(emu: Emulator) -> None:
    now = emu.clock.emulated_wall()
    for record in list(emu.store.deployments.values()):
        dep = record.body
        if record.next_fire is None or record.next_fire > now:
            continue
        scheduled_at = record.next_fire
        _arm(emu, record)
        if dep["status"] != "active" or dep["archived_at"] is not None:
            continue
        run(emu, record.id, scheduled_at=scheduled_at)
        dep["schedule"]["last_run_at"] = rfc3339(scheduled_at)
