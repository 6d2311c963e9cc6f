"""The message the `publish_*` plugins send for one handled transition: a versioned JSON document.

    {"schema": "idlehook.session_result/1", "message_id": "<event id>:<handler>", ...}

Pure: built from the session's `SessionResult`, the notification, and where `archive` saved the
transcript (if an `archive` run before this one succeeded for the same delivery). Every key is
always present (null when unknown), so a consumer never has to guess a key's absence.
`publish_schema.json` beside this module is the JSON Schema of this model (written by
`write_json_schema()`; a test checks it is current and validates sent messages against it).

The version in `schema` changes only on an incompatible change (a key removed, renamed or its
meaning changed); adding a key is compatible, so consumers ignore keys they do not know.
"""

import json
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from handlers.api import HandlerContext, Notification, SessionResult

SCHEMA = "idlehook.session_result/1"
SCHEMA_FILE = Path(__file__).with_name("publish_schema.json")
# The built-in whose success means the transcript is on disk (handlers/builtin/archive.py).
ARCHIVE = "archive"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EventRef(_Strict):
    """The notification this message answers: one transition of the session."""

    id: str  # the webhook's event id (or the reconciler's synthetic one)
    type: str  # e.g. session.status_idled, session.status_terminated
    source: str  # "webhook" or "reconcile"
    created_at: datetime | None  # when the API says the transition happened
    received_at: datetime


class Cost(_Strict):
    """What the session has cost so far, under `billing_model` (handlers/billing.py)."""

    billing_model: str  # "running": runtime while running + tokens; "exists": the tutorial's
    total_usd: float | None
    runtime_usd: float | None
    token_usd: float | None
    active_seconds: float | None  # billed runtime


class Archive(_Strict):
    """Where `archive` wrote the session's files: paths on the worker's filesystem, or URLs
    (e.g. `s3://bucket/prefix/<session>/events.jsonl`) when `[archive] url` is set."""

    directory: str
    transcript: str  # events.jsonl: every event, in order
    result: str  # result.json: the latest result


class SessionResultMessage(_Strict):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    # `schema` would shadow a BaseModel attribute: the field is `schema_` in Python only.
    schema_: Literal["idlehook.session_result/1"] = Field(alias="schema")
    message_id: str  # "<event id>:<handler>": the same on every retry and replay
    session_id: str
    status: str  # idle | terminated | ...
    stop_reason: str | None
    outcome: str | None  # the stop reason, "interrupted" or "terminated"
    final_message: str | None  # text of the last agent.message
    title: str | None
    agent_id: str | None
    agent_version: int | None
    metadata: dict[str, str]
    usage: dict[str, Any]  # as the API reports it
    cost: Cost
    archive: Archive | None  # null: no archive run saved it before this message
    event: EventRef
    event_count: int
    produced_at: datetime


def message_id(event_id: str, handler: str) -> str:
    """One id per (transition, plugin): what brokers de-duplicate retries and replays on."""
    return f"{event_id}:{handler}"


def build_message(
    result: SessionResult,
    event: Notification,
    *,
    handler: str,
    archive_dir: Path | str | None,
    now: datetime,
) -> dict[str, Any]:
    """The message for `result`, as JSON-ready values. `archive_dir`: a local folder, or the
    folder's URL (a str) when the archive is an object store."""
    archive = None
    if isinstance(archive_dir, Path):
        archive = Archive(
            directory=str(archive_dir),
            transcript=str(archive_dir / "events.jsonl"),
            result=str(archive_dir / "result.json"),
        )
    elif archive_dir is not None:
        folder = archive_dir.rstrip("/")
        archive = Archive(
            directory=folder,
            transcript=f"{folder}/events.jsonl",
            result=f"{folder}/result.json",
        )
    return SessionResultMessage(
        schema_=SCHEMA,
        message_id=message_id(event.event_id, handler),
        session_id=result.session_id,
        status=result.status,
        stop_reason=result.stop_reason,
        outcome=result.outcome,
        final_message=result.final_message,
        title=result.title,
        agent_id=result.agent_id,
        agent_version=result.agent_version,
        metadata=dict(result.metadata),
        usage=dict(result.usage),
        cost=Cost(
            billing_model=result.billing_model,
            total_usd=result.cost_usd,
            runtime_usd=result.runtime_usd,
            token_usd=result.token_usd,
            active_seconds=result.active_seconds,
        ),
        archive=archive,
        event=EventRef(
            id=event.event_id,
            type=event.event_type,
            source=event.source,
            created_at=event.event_created_at,
            received_at=event.received_at,
        ),
        event_count=result.event_count,
        produced_at=now,
    ).model_dump(mode="json", by_alias=True)


def archive_dir(ctx: HandlerContext) -> Path | str | None:
    """Where `archive` saved this session, if an `archive` run of this delivery succeeded
    before this one (lane order: it finished first); else None. A URL (`[archive] url`) or a
    path under `results_dir`."""
    done = any(r.handler == ARCHIVE and r.state == "succeeded" for r in ctx.prior_runs)
    if not done:
        return None
    if ctx.config.archive_url:
        return f"{ctx.config.archive_url.rstrip('/')}/{ctx.session_id}"
    return ctx.config.results_dir / ctx.session_id


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def json_schema() -> dict[str, Any]:
    """The JSON Schema of the message (what `publish_schema.json` holds). Unknown keys are
    allowed, unlike in the model: a consumer of version 1 must accept keys added later."""
    schema = _open(SessionResultMessage.model_json_schema(mode="serialization", by_alias=True))
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        **schema,
        "title": SCHEMA,
        "description": "One handled transition of a session, as the publish_* plugins send it.",
    }


def write_json_schema() -> None:
    """Rewrite `publish_schema.json` after a change to the model (and say so in the README):
    `python -c "from handlers.builtin.publish_message import *; write_json_schema()"`."""
    SCHEMA_FILE.write_text(json.dumps(json_schema(), indent=2, sort_keys=True) + "\n")


def _open(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _open(v) for k, v in node.items() if k != "additionalProperties" or v}
    if isinstance(node, list):
        return [_open(v) for v in node]
    return node
