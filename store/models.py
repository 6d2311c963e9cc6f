"""SQLModel tables. The schema is owned by alembic (store/migrations); this is its Python face.

Every timestamp is stored as UTC and read back timezone-aware, on SQLite and PostgreSQL alike.
"""

# No `from __future__ import annotations` here: SQLModel needs the real types (sqlmodel#196).
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Naive UTC in the database, aware UTC in Python: one behaviour on both engines."""

    impl = sa.DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; use an aware UTC datetime")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC)


def ts_column(nullable: bool = True, index: bool = False) -> Any:
    return sa.Column(UTCDateTime(), nullable=nullable, index=index)


def json_column() -> Any:
    return sa.Column(sa.JSON(), nullable=False, default=dict)


class Source(StrEnum):
    WEBHOOK = "webhook"
    RECONCILE = "reconcile"


class RunState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # failed at least once, waiting for its next attempt
    DEAD = "dead"  # out of attempts: a dead letter, replayable
    # Finished, kept for history (store/runs.py): a dead letter a person gave up on, with the
    # reason; and one whose delivery was re-routed (`replay`, `reroute`), replaced by a new run.
    DISCARDED = "discarded"
    SUPERSEDED = "superseded"


UNFINISHED_STATES = (RunState.PENDING, RunState.RUNNING, RunState.FAILED)


# The kept header holding the W3C trace context of a delivery's receipt (`[tracing]` on): the
# worker's spans continue that trace. A request's own `traceparent` is never kept, so only the
# receiver sets it. No migration: the kept headers are a JSON column, and they travel the
# writer pipe, the journal and its drain as they are.
TRACEPARENT = "traceparent"


class Delivery(SQLModel, table=True):
    """One webhook notification as received (or synthesised by the reconciler)."""

    __tablename__ = "deliveries"

    id: int | None = Field(default=None, primary_key=True)
    # The webhook event id (`id` == `webhook-id`): the de-duplication key.
    event_id: str = Field(max_length=200, sa_column_kwargs={"unique": True})
    # Not indexed alone: every query by type also filters by session (ix_deliveries_session_id).
    event_type: str = Field(max_length=200)
    resource_id: str = Field(max_length=200)  # data.id
    session_id: str | None = Field(default=None, max_length=200, index=True)
    event_created_at: datetime | None = Field(default=None, sa_column=ts_column())
    received_at: datetime = Field(default_factory=utcnow, sa_column=ts_column(False, index=True))
    source: str = Field(default=Source.WEBHOOK, max_length=20)
    body: str = Field(sa_column=sa.Column(sa.Text(), nullable=False))
    # The request's kept headers (receiver/intake.py), plus TRACEPARENT when its receipt was
    # traced.
    headers: dict[str, str] = Field(default_factory=dict, sa_column=json_column())
    # Which signing key matched: an environment key's index; a stored key's id, negated.
    secret_index: int | None = None
    duplicates: int = 0  # how many more times the same event id arrived
    last_duplicate_at: datetime | None = Field(default=None, sa_column=ts_column())


class TrackedSession(SQLModel, table=True):
    """A session idlehook launched or has heard of, and what it knows about it."""

    __tablename__ = "tracked_sessions"

    id: str = Field(primary_key=True, max_length=200)
    owner: str | None = Field(default=None, max_length=200)
    launched_by_us: bool = False
    agent_id: str | None = Field(default=None, max_length=200)
    agent_version: int | None = None
    environment_id: str | None = Field(default=None, max_length=200)
    deployment_id: str | None = Field(default=None, max_length=200)
    route: str | None = Field(default=None, max_length=200)
    title: str | None = None
    # `metadata` is reserved on SQLModel classes; the column keeps the API's name.
    session_metadata: dict[str, str] = Field(
        default_factory=dict, sa_column=sa.Column("metadata", sa.JSON(), nullable=False)
    )
    deadline: datetime | None = Field(default=None, sa_column=ts_column())
    status: str | None = Field(default=None, max_length=40, index=True)
    stop_reason: str | None = Field(default=None, max_length=60)
    status_at: datetime | None = Field(default=None, sa_column=ts_column())
    last_webhook_at: datetime | None = Field(default=None, sa_column=ts_column())
    created_at: datetime | None = Field(default=None, sa_column=ts_column())
    first_seen_at: datetime = Field(default_factory=utcnow, sa_column=ts_column(False))
    updated_at: datetime = Field(default_factory=utcnow, sa_column=ts_column(False))
    result_captured_at: datetime | None = Field(default=None, sa_column=ts_column())
    transcript_saved_at: datetime | None = Field(default=None, sa_column=ts_column())
    archived_at: datetime | None = Field(default=None, sa_column=ts_column())
    deleted_at: datetime | None = Field(default=None, sa_column=ts_column(index=True))
    active_seconds: float | None = None
    cost_usd: float | None = None  # runtime + tokens, under the configured billing model
    token_usd: float | None = None  # usage.list_cost alone: what a session budget caps
    # Deadline watchdog (sessions/watchdog.py): when it last fetched the session itself, and
    # when it interrupted a session past its deadline and handed it to the reaper.
    polled_at: datetime | None = Field(default=None, sa_column=ts_column())
    reap_requested_at: datetime | None = Field(default=None, sa_column=ts_column(index=True))
    # When idlehook itself sent the `user.interrupt` that ended the latest run, and why
    # (`past_deadline`, `max_running`): such a run ends `end_turn` like a finished one.
    interrupted_at: datetime | None = Field(default=None, sa_column=ts_column())
    interrupt_reason: str | None = Field(default=None, max_length=40)
    # The matching route's `idle_for`: how long the reaper keeps this session resting.
    idle_for_seconds: float | None = None


class HandlerRun(SQLModel, table=True):
    """One handler's work on one delivery: the unit the worker claims under a lease.

    `lane` serialises work: runs that share a lane (a session's id) are processed one at a time,
    ordered by (delivery_id, position). Position 0 is the routing step, which fetches what the
    route needs and then adds the routed handlers' runs at positions 1..n.
    """

    __tablename__ = "handler_runs"
    __table_args__ = (
        # One run per handler per routing of a delivery: a re-route (`generation` + 1) may add
        # a handler again, never twice in one routing (migration 0011).
        sa.UniqueConstraint(
            "delivery_id", "handler", "generation", name="uq_handler_runs_delivery_generation"
        ),
        sa.Index("ix_handler_runs_claim", "state", "next_attempt_at"),
        # The claim's per-lane checks read only a lane's unfinished runs (migration 0010).
        sa.Index("ix_handler_runs_lane_state", "lane", "state", "delivery_id", "position"),
    )

    id: int | None = Field(default=None, primary_key=True)
    delivery_id: int = Field(foreign_key="deliveries.id")
    lane: str = Field(max_length=200)
    position: int = 0
    handler: str = Field(max_length=100)
    state: str = Field(default=RunState.PENDING, max_length=20)
    attempts: int = 0
    next_attempt_at: datetime = Field(default_factory=utcnow, sa_column=ts_column(False))
    lease_owner: str | None = Field(default=None, max_length=200)
    lease_expires_at: datetime | None = Field(default=None, sa_column=ts_column())
    last_error: str | None = Field(default=None, sa_column=sa.Column(sa.Text(), nullable=True))
    duration_ms: float | None = None
    created_at: datetime = Field(default_factory=utcnow, sa_column=ts_column(False))
    updated_at: datetime = Field(default_factory=utcnow, sa_column=ts_column(False))
    finished_at: datetime | None = Field(default=None, sa_column=ts_column())
    # Which routing of the delivery added this run: 0 at ingest, + 1 per re-route.
    generation: int = Field(
        default=0, sa_column=sa.Column(sa.Integer(), nullable=False, server_default="0")
    )
    # A `_route` run's decision (`matched`, `no_rule`, `stale_idle`, `session_deleted`, ...).
    decision: str | None = Field(default=None, max_length=40)
    # Discarded or superseded: by whom, when, why (a discard's reason); the run that replaced it.
    resolved_by: str | None = Field(default=None, max_length=200)
    resolved_at: datetime | None = Field(default=None, sa_column=ts_column())
    resolution: str | None = Field(default=None, sa_column=sa.Column(sa.Text(), nullable=True))
    superseded_by: int | None = None


# --- launches (sessions/launcher.py, sessions/pacing.py) -------------------------------------


class LaunchState(StrEnum):
    QUEUED = "queued"  # waiting for its turn (or for a retry after a 429/5xx)
    CREATING = "creating"  # a create call was (or is about to be) sent: outcome unknown if stale
    CREATED = "created"
    FAILED = "failed"  # permanently: nothing was created


class Launch(SQLModel, table=True):
    """One session to start: the durable queue every launch goes through, drained under the
    shared create-rate limit. The unique idempotency key makes a repeated start a no-op."""

    __tablename__ = "launches"
    __table_args__ = (sa.Index("ix_launches_claim", "state", "next_attempt_at"),)

    id: int | None = Field(default=None, primary_key=True)
    idempotency_key: str = Field(max_length=200, sa_column_kwargs={"unique": True})
    # The validated LaunchRequest as JSON, with its deadline already made absolute.
    request: dict[str, Any] = Field(default_factory=dict, sa_column=json_column())
    state: str = Field(default=LaunchState.QUEUED, max_length=20)
    attempts: int = 0
    next_attempt_at: datetime = Field(default_factory=utcnow, sa_column=ts_column(False))
    lease_owner: str | None = Field(default=None, max_length=200)
    lease_expires_at: datetime | None = Field(default=None, sa_column=ts_column())
    # Set by the first create call: the lower bound when looking for a session an
    # unanswered call may have created anyway.
    first_attempt_at: datetime | None = Field(default=None, sa_column=ts_column())
    outcome_unknown: bool = False
    session_id: str | None = Field(default=None, max_length=200, index=True)
    agent_version: int | None = None
    error: str | None = Field(default=None, sa_column=sa.Column(sa.Text(), nullable=True))
    warnings: list[str] = Field(
        default_factory=list, sa_column=sa.Column(sa.JSON(), nullable=False, default=list)
    )
    created_at: datetime = Field(default_factory=utcnow, sa_column=ts_column(False))
    updated_at: datetime = Field(default_factory=utcnow, sa_column=ts_column(False))
    finished_at: datetime | None = Field(default=None, sa_column=ts_column())


class RateSlot(SQLModel, table=True):
    """The next free request slot per rate class ("create", "read"), shared by every process.

    Epoch seconds as a float, not a timestamp: the gate advances it with plain arithmetic in
    one UPDATE, which SQLite cannot do on its text datetimes.
    """

    __tablename__ = "rate_slots"

    kind: str = Field(primary_key=True, max_length=40)
    next_at: float = 0.0


class EnvironmentCheck(SQLModel, table=True):
    """Launch preflight: an environment's networking as last seen, cached for a while."""

    __tablename__ = "environment_checks"

    environment_id: str = Field(primary_key=True, max_length=200)
    networking: str | None = Field(default=None, max_length=40)  # unrestricted | limited | None
    checked_at: datetime = Field(default_factory=utcnow, sa_column=ts_column(False))


# --- end launches ------------------------------------------------------------------------------


# --- reaper and reconciler (sessions/reaper.py, sessions/reconciler.py) ------------------------


class ReaperActionKind(StrEnum):
    DELETED = "deleted"
    INTERRUPTED = "interrupted"
    ARCHIVED = "archived"  # saved events.jsonl/result.json itself before deleting
    SKIPPED = "skipped"  # chosen, then held back by a guard (pending work, unsaved result, ...)
    REFUSED = "refused"  # the API said no (4xx): retried on the next run
    FAILED = "failed"
    # A dry run's: what a real run would do; nothing was done.
    WOULD_DELETE = "would_delete"
    WOULD_INTERRUPT = "would_interrupt"
    WOULD_ARCHIVE = "would_archive"
    KEPT = "kept"  # examined and left alone, with its reason (reports and logs; never recorded)


class ReaperAction(SQLModel, table=True):
    """One thing the reaper did (or, with dry_run, would have done) to one session."""

    __tablename__ = "reaper_actions"
    __table_args__ = (sa.Index("ix_reaper_actions_session_at", "session_id", "at"),)

    id: int | None = Field(default=None, primary_key=True)
    run_id: str = Field(max_length=64, index=True)
    session_id: str = Field(max_length=200)
    action: str = Field(max_length=20)
    reason: str = Field(max_length=60)
    dry_run: bool = False
    at: datetime = Field(default_factory=utcnow, sa_column=ts_column(False))
    error: str | None = Field(default=None, sa_column=sa.Column(sa.Text(), nullable=True))
    # Container cost the delete stops (USD per hour); 0 for anything but a delete.
    est_saving_usd_per_hour: float = 0.0


class ReconcileCursor(SQLModel, table=True):
    """A named instant the reconciler keeps (store/watch.py): where its rotating scans resume,
    the earliest change no webhook reported, the webhook endpoint's state as last read."""

    __tablename__ = "reconcile_cursors"

    name: str = Field(primary_key=True, max_length=60)
    through: datetime = Field(sa_column=ts_column(False))
    swept_at: datetime = Field(default_factory=utcnow, sa_column=ts_column(False))


# --- end reaper and reconciler -----------------------------------------------------------------


# --- tools and approvals (handlers/tools/, store/tool_calls.py, store/approvals.py) ------------


class ToolCallState(StrEnum):
    STARTED = "started"  # claimed and (maybe) running: the owner's lease says whose
    FINISHED = "finished"  # result recorded, not yet accepted by the API
    SENT = "sent"  # the API took the result: nothing more to do


class ToolCall(SQLModel, table=True):
    """One `agent.custom_tool_use` answered on the caller's side, recorded before it runs.

    The unique tool-use id is what makes a tool run at most once however many notifications,
    workers or retries reach it.
    """

    __tablename__ = "tool_calls"

    id: int | None = Field(default=None, primary_key=True)
    custom_tool_use_id: str = Field(max_length=200, sa_column_kwargs={"unique": True})
    session_id: str = Field(max_length=200, index=True)
    tool_name: str = Field(max_length=200)
    input: dict[str, Any] = Field(default_factory=dict, sa_column=json_column())
    state: str = Field(default=ToolCallState.STARTED, max_length=20, index=True)
    attempts: int = 0
    owner: str | None = Field(default=None, max_length=200)
    lease_expires_at: datetime | None = Field(default=None, sa_column=ts_column())
    result: str | None = Field(default=None, sa_column=sa.Column(sa.Text(), nullable=True))
    is_error: bool = False
    started_at: datetime = Field(default_factory=utcnow, sa_column=ts_column(False))
    finished_at: datetime | None = Field(default=None, sa_column=ts_column())
    sent_at: datetime | None = Field(default=None, sa_column=ts_column())


class ApprovalState(StrEnum):
    PENDING = "pending"  # waiting for a person
    DECIDED = "decided"  # allow/deny chosen, confirmation not yet accepted by the API
    SENT = "sent"  # the API took the `user.tool_confirmation`


class Approval(SQLModel, table=True):
    """One `agent.tool_use` held for confirmation, and how (and by whom) it was decided."""

    __tablename__ = "approvals"
    __table_args__ = (sa.Index("ix_approvals_state_expires", "state", "expires_at"),)

    id: int | None = Field(default=None, primary_key=True)
    tool_use_id: str = Field(max_length=200, sa_column_kwargs={"unique": True})
    session_id: str = Field(max_length=200, index=True)
    tool_name: str = Field(max_length=200)
    input: dict[str, Any] = Field(default_factory=dict, sa_column=json_column())
    agent_id: str | None = Field(default=None, max_length=200)
    state: str = Field(default=ApprovalState.PENDING, max_length=20)
    decision: str | None = Field(default=None, max_length=10)  # allow | deny
    message: str | None = Field(default=None, sa_column=sa.Column(sa.Text(), nullable=True))
    decided_by: str | None = Field(default=None, max_length=200)  # policy | cli | http | expiry
    requested_at: datetime = Field(default_factory=utcnow, sa_column=ts_column(False))
    expires_at: datetime | None = Field(default=None, sa_column=ts_column())
    decided_at: datetime | None = Field(default=None, sa_column=ts_column())
    sent_at: datetime | None = Field(default=None, sa_column=ts_column())
    # When the forward target was told a person is needed (None: not yet, or no target).
    notified_at: datetime | None = Field(default=None, sa_column=ts_column())


# --- end tools and approvals -------------------------------------------------------------------


# --- follow-ups (sessions/followups.py, store/followups.py) ------------------------------------


class FollowUpState(StrEnum):
    RECORDED = "recorded"  # the key is known; nothing of it reached the API (or it was refused)
    SENDING = "sending"  # a send was (or was about to be) made: if its owner vanished, unknown
    SENT = "sent"  # the API took the `user.message`: a repeat of the key sends nothing


class FollowUp(SQLModel, table=True):
    """One `user.message` sent to an existing session, recorded by idempotency key before it is
    sent: the same key for the same session sends once, across processes and crashes."""

    __tablename__ = "follow_ups"
    __table_args__ = (
        sa.UniqueConstraint("session_id", "idempotency_key", name="uq_follow_ups_session_key"),
    )

    id: int | None = Field(default=None, primary_key=True)
    session_id: str = Field(max_length=200, index=True)
    idempotency_key: str = Field(max_length=200)
    message: str = Field(sa_column=sa.Column(sa.Text(), nullable=False))
    state: str = Field(default=FollowUpState.RECORDED, max_length=20)
    # The claim token of whoever is sending it, and until when that claim holds.
    owner: str | None = Field(default=None, max_length=200)
    lease_expires_at: datetime | None = Field(default=None, sa_column=ts_column())
    attempts: int = 0
    # When the first send went out: the lower bound when looking for a message an unanswered
    # send may have delivered after all.
    first_attempt_at: datetime | None = Field(default=None, sa_column=ts_column())
    event_id: str | None = Field(default=None, max_length=200)  # the echoed user.message id
    # The deadline this follow-up set, and the run allowance it was worked out from (the
    # session's next follow-up reuses the allowance rather than re-deriving a longer one).
    deadline: datetime | None = Field(default=None, sa_column=ts_column())
    allowance_seconds: float | None = None
    error: str | None = Field(default=None, sa_column=sa.Column(sa.Text(), nullable=True))
    created_at: datetime = Field(default_factory=utcnow, sa_column=ts_column(False))
    updated_at: datetime = Field(default_factory=utcnow, sa_column=ts_column(False))
    sent_at: datetime | None = Field(default=None, sa_column=ts_column())


# --- end follow-ups ----------------------------------------------------------------------------


# --- unrecognised deliveries (store/unrecognised.py) ------------------------------------------


class UnrecognisedDelivery(SQLModel, table=True):
    """A validly signed body that is no webhook envelope idlehook knows (a Console test event,
    a new shape, not even JSON): kept as received and acknowledged, never routed to handlers.

    Anthropic disables an endpoint after enough non-2xx answers, so a signed body is never
    refused; it is kept here, byte for byte, for a person (or a later idlehook) to read.
    """

    __tablename__ = "unrecognised_deliveries"

    id: int | None = Field(default=None, primary_key=True)
    # The `webhook-id` header (Standard Webhooks message id, <= 200 printable characters once
    # verified): the same on every retry, so the de-duplication key.
    message_id: str = Field(max_length=200, sa_column_kwargs={"unique": True})
    reason: str = Field(max_length=40)  # why it was not an envelope (body_not_json, ...)
    received_at: datetime = Field(default_factory=utcnow, sa_column=ts_column(False, index=True))
    body: bytes = Field(sa_column=sa.Column(sa.LargeBinary(), nullable=False))
    headers: dict[str, str] = Field(default_factory=dict, sa_column=json_column())
    secret_index: int | None = None
    duplicates: int = 0
    last_duplicate_at: datetime | None = Field(default=None, sa_column=ts_column())


# --- end unrecognised deliveries ---------------------------------------------------------------


# --- webhook signing keys (store/signing_keys.py, receiver/keyring.py) -------------------------


class SigningKeyRecord(SQLModel, table=True):
    """A webhook signing key added at run time (`idlehook keys add`), read by every receiver
    every few seconds, so a rotation needs no restart. The secret is kept as given (`whsec_` +
    base64): HMAC needs it, so the database is as sensitive as the environment that held it."""

    __tablename__ = "signing_keys"

    id: int | None = Field(default=None, primary_key=True)
    # sha256 of the key bytes, hex: one row per key; its first 8 digits are the fingerprint
    # shown by `idlehook keys list` and used as the key's metric label.
    digest: str = Field(max_length=64, sa_column_kwargs={"unique": True})
    # None once the key is past its grace: a key that verifies nothing is not kept.
    secret: str | None = Field(default=None, sa_column=sa.Column(sa.Text(), nullable=True))
    added_at: datetime = Field(default_factory=utcnow, sa_column=ts_column(False))
    retired_at: datetime | None = Field(default=None, sa_column=ts_column())
    # Retired keys still verify until then (the grace period); None: not retired.
    expires_at: datetime | None = Field(default=None, sa_column=ts_column())


# --- end webhook signing keys ------------------------------------------------------------------


# --- webhook rejections (store/rejections.py) ---------------------------------------------------


class WebhookRejection(SQLModel, table=True):
    """Requests the webhook path refused, counted per minute, reason and status: each receiver
    adds what it counted in memory every few seconds (a flood of bad requests is no write load);
    minutes older than a day are folded into one row per reason at `minute` = the epoch."""

    __tablename__ = "webhook_rejections"

    minute: datetime = Field(sa_column=sa.Column(UTCDateTime(), primary_key=True))
    reason: str = Field(max_length=40, primary_key=True)  # bad_signature, body_too_large, ...
    status: int = Field(primary_key=True)  # 401, 400, 413, ...
    count: int = 0


# --- end webhook rejections ---------------------------------------------------------------------
