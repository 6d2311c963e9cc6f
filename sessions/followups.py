"""Follow-ups: one more `user.message` to a session that already exists, with no stream held.

An idle session costs nothing (runtime is billed only while `running`), so a finished session is
worth keeping for a follow-up; its next idle is routed and archived like its first. A follow-up:

1. is recorded by (session, idempotency key) before anything is sent (store/followups.py), so
   the same key sends once however many processes, retries and crashes reach it. A send whose
   answer never came leaves the row `sending`; the next claimer looks for the message in the
   session's events before sending it again.
2. re-arms the session's watch before the message goes out: the deadline (metadata
   `idlehook_deadline` and the tracked copy) moves to now plus the run's allowance, so the new run
   is never judged by the old, passed deadline; once sent, the tracked session's reap request and
   interruption marks are cleared. Its status is left to the webhooks.
3. is paced by the client's transport (sessions/paced_transport.py), in the "read" class: the
   API's 300/min limit is for creating agents, sessions and vaults; sending events and updating
   a session are "all other" calls, the 600/min class the watchdog's interrupts use too.
"""

import asyncio
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any

import sqlalchemy.exc
import structlog
from anthropic import AsyncAnthropic
from sqlalchemy.engine import Engine

from sessions.followup_rules import (
    DeadlinePlan,
    FollowUpError,
    FollowUpRequest,
    FollowUpUnavailable,
    InvalidFollowUp,
    KeyConflict,
    SessionClosed,
    SessionNotFound,
    check_metadata_room,
    check_open,
    check_session_id,
    classify,
    is_ours,
    new_key,
    plan_deadline,
)
from sessions.metadata import DEADLINE_KEY, format_deadline
from sessions.session_view import as_utc, parse_rfc3339
from store import followups as rows
from store.followups import FollowUpView, Next
from store.models import TrackedSession, utcnow
from store.sessions import SessionStore

log = structlog.get_logger(__name__)

__all__ = [
    "FollowUpError",
    "FollowUpRequest",
    "FollowUpResult",
    "FollowUpUnavailable",
    "FollowUps",
    "InvalidFollowUp",
    "KeyConflict",
    "SessionClosed",
    "SessionNotFound",
]

# How far before our first send the API's processed_at of it may read (clock skew).
SKEW = timedelta(minutes=2)
SEARCH_PAGES = 10


@dataclass(frozen=True)
class FollowUpResult:
    session_id: str
    idempotency_key: str
    event_id: str | None  # the `user.message` the API echoed (None if it echoed nothing)
    # False when this call sent nothing: the key had been sent before, or an earlier attempt's
    # message was found in the session's events (`recovered`).
    new: bool
    recovered: bool = False
    deadline: datetime | None = None  # the re-armed deadline, if the session has one
    sent_at: datetime | None = None

    @classmethod
    def of(cls, row: FollowUpView, *, new: bool, recovered: bool = False) -> "FollowUpResult":
        return cls(
            session_id=row.session_id,
            idempotency_key=row.idempotency_key,
            event_id=row.event_id,
            new=new,
            recovered=recovered,
            deadline=row.deadline,
            sent_at=row.sent_at,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            "idempotency_key": self.idempotency_key,
            "event_id": self.event_id,
            "new": self.new,
            "recovered": self.recovered,
            "deadline": self.deadline.isoformat() if self.deadline else None,
            "sent_at": self.sent_at.isoformat() if self.sent_at else None,
        }


@dataclass
class _Attempt:
    """One claimed row on its way: what may have reached the API if this attempt stops now."""

    row: FollowUpView
    token: str
    # An earlier send may have landed and nobody has looked yet.
    recovering: bool
    # Our own send is out (or going out) and unanswered.
    in_flight: bool = False
    deadline: datetime | None = None


class FollowUps:
    """Send follow-ups: the one code path for the CLI, the HTTP route and `Launcher.send`."""

    def __init__(
        self,
        engine: Engine,
        client: AsyncAnthropic,
        *,
        now: Callable[[], datetime] = utcnow,
        lease: timedelta = timedelta(minutes=5),
        busy_wait_s: float = 10.0,
        call_timeout_s: float = 60.0,
    ) -> None:
        self.engine = engine
        # No SDK retries: it sends no idempotency key, so a retried send whose answer was lost
        # would post the message twice. An unknown outcome is settled by looking instead.
        self.client = client.with_options(max_retries=0, timeout=call_timeout_s)
        self.sessions = SessionStore(engine)
        self._now = now
        # Far longer than one attempt's calls (each times out at call_timeout_s): a claim that
        # runs out belongs to a sender that died, never to one still waiting on the API.
        self.lease = lease
        self.busy_wait_s = busy_wait_s

    async def send(
        self,
        session_id: str,
        message: str,
        *,
        idempotency_key: str | None = None,
        deadline: str | None = None,
    ) -> FollowUpResult:
        """Send `message` to `session_id` once per key; raises a FollowUpError naming the
        problem (InvalidFollowUp, SessionNotFound, SessionClosed, KeyConflict,
        FollowUpUnavailable)."""
        fields = {"message": message, "idempotency_key": idempotency_key, "deadline": deadline}
        return await self.send_request(session_id, FollowUpRequest.parse(fields))

    async def send_request(self, session_id: str, request: FollowUpRequest) -> FollowUpResult:
        check_session_id(session_id)
        key = request.idempotency_key or new_key(uuid.uuid4().hex)
        token = f"send-{uuid.uuid4().hex}"
        with structlog.contextvars.bound_contextvars(session_id=session_id, idempotency_key=key):
            row, step = await self._claim(session_id, key, request.message, token)
            if step is Next.DONE:
                log.info("followup.already_sent", event_id=row.event_id)
                return FollowUpResult.of(row, new=False)
            attempt = _Attempt(row, token, recovering=step is Next.RECOVER, deadline=row.deadline)
            try:
                return await self._deliver(attempt, request)
            except Exception as exc:
                raise await self._give_up(attempt, exc) from None

    # --- the steps ----------------------------------------------------------------------------

    async def _claim(
        self, session_id: str, key: str, message: str, token: str
    ) -> tuple[FollowUpView, Next]:
        loop = asyncio.get_running_loop()
        give_up = loop.time() + self.busy_wait_s
        while True:
            claim = await asyncio.to_thread(
                partial(
                    rows.claim,
                    self.engine,
                    session_id=session_id,
                    idempotency_key=key,
                    message=message,
                    token=token,
                    now=self._now(),
                    lease=self.lease,
                )
            )
            if claim.next is Next.CONFLICT:
                raise KeyConflict(
                    f"idempotency key {key!r} was already used for a different message to "
                    f"{session_id}: use a new key for a new message"
                )
            if claim.next is not Next.BUSY:
                return claim.row, claim.next
            if loop.time() >= give_up:
                raise KeyConflict(
                    f"a send with idempotency key {key!r} to {session_id} is in progress "
                    "elsewhere: retry with the same key shortly to get its outcome"
                )
            await asyncio.sleep(0.2)

    async def _deliver(self, attempt: _Attempt, request: FollowUpRequest) -> FollowUpResult:
        row = attempt.row
        session_id = row.session_id
        if attempt.recovering:
            assert row.first_attempt_at is not None  # set by begin_send, the only way to `sending`
            found = await self._find_sent(session_id, row.message, row.first_attempt_at)
            if found is not None:
                log.info("followup.recovered", event_id=found)
                return await self._mark(attempt, found, recovered=True)
            attempt.recovering = False  # it never landed: nothing of it reached the session
        tracked = await asyncio.to_thread(self.sessions.get, session_id)
        if tracked is not None and tracked.deleted_at is not None:
            raise SessionClosed(f"session {session_id} was deleted: it takes no more messages")
        session = await self.client.beta.sessions.retrieve(session_id)
        check_open(session_id, str(session.status), session.archived_at is not None)
        metadata = {str(k): str(v) for k, v in (session.metadata or {}).items()}
        plan = await self._plan(session, metadata, tracked, request)
        check_metadata_room(metadata, plan)
        attempt.deadline = plan.deadline if plan is not None else None
        began = await asyncio.to_thread(
            partial(
                rows.begin_send,
                self.engine,
                row.id,
                attempt.token,
                now=self._now(),
                lease=self.lease,
                deadline=attempt.deadline,
                allowance_seconds=plan.allowance.total_seconds() if plan is not None else None,
            )
        )
        if not began:
            raise KeyConflict(f"lost the claim on idempotency key {row.idempotency_key!r}: retry")
        if plan is not None:
            # Before the send: the new run must never be judged by the old, passed deadline.
            await self._rearm(session_id, plan)
        attempt.in_flight = True
        echoed = await self.client.beta.sessions.events.send(
            session_id,
            events=[{"type": "user.message", "content": [{"type": "text", "text": row.message}]}],
        )
        event_id = echoed.data[0].id if echoed.data else None
        return await self._mark(attempt, event_id, recovered=False)

    async def _plan(
        self,
        session: Any,
        metadata: dict[str, str],
        tracked: TrackedSession | None,
        request: FollowUpRequest,
    ) -> DeadlinePlan | None:
        remembered = await asyncio.to_thread(rows.latest_allowance, self.engine, session.id)
        old_deadline = parse_rfc3339(metadata.get(DEADLINE_KEY))
        if old_deadline is None and tracked is not None:
            old_deadline = tracked.deadline
        return plan_deadline(
            self._now(),
            explicit=request.allowance(),
            remembered=timedelta(seconds=remembered) if remembered is not None else None,
            old_deadline=old_deadline,
            created_at=as_utc(session.created_at),
        )

    async def _rearm(self, session_id: str, plan: DeadlinePlan) -> None:
        value = format_deadline(plan.deadline)
        updated = await self.client.beta.sessions.update(session_id, metadata={DEADLINE_KEY: value})
        metadata = {str(k): str(v) for k, v in (updated.metadata or {}).items()}
        await asyncio.to_thread(
            partial(
                self.sessions.rearm,
                session_id,
                deadline=plan.deadline,
                metadata=metadata,
                now=self._now(),
            )
        )
        log.info("followup.deadline_moved", deadline=value)

    async def _mark(
        self, attempt: _Attempt, event_id: str | None, *, recovered: bool
    ) -> FollowUpResult:
        row = attempt.row
        now = self._now()
        # A store failure here propagates: sent (or found) but not recorded, the row is released
        # in doubt, and a retry with the key finds the message and sends nothing.
        marked = await asyncio.to_thread(
            partial(
                rows.mark_sent,
                self.engine,
                row.id,
                attempt.token,
                session_id=row.session_id,
                event_id=event_id,
                now=now,
            )
        )
        if not marked:
            log.warning("followup.claim_lost_after_send", event_id=event_id)
        log.info("followup.sent", event_id=event_id, recovered=recovered)
        return FollowUpResult(
            session_id=row.session_id,
            idempotency_key=row.idempotency_key,
            event_id=event_id,
            new=not recovered,
            recovered=recovered,
            deadline=attempt.deadline,
            sent_at=now,
        )

    async def _find_sent(
        self, session_id: str, message: str, first_attempt: datetime
    ) -> str | None:
        """The id of the `user.message` an earlier, unanswered attempt delivered, if it did.

        Every listed message is looked at: one queued behind a run may not be processed yet,
        and the API does not say where such a one sorts.
        """
        taken = await asyncio.to_thread(rows.sent_event_ids, self.engine, session_id)
        since = first_attempt - SKEW
        page = await self.client.beta.sessions.events.list(
            session_id, types=["user.message"], order="desc", limit=1000
        )
        for _ in range(SEARCH_PAGES):
            for event in page.data:
                if is_ours(event, message, since, taken):
                    return str(event.id)
            if not page.has_next_page():
                return None
            page = await page.get_next_page()
        log.warning("followup.search_truncated", pages=SEARCH_PAGES)
        return None

    # --- failure ------------------------------------------------------------------------------

    async def _give_up(self, attempt: _Attempt, exc: Exception) -> Exception:
        """Release the row as the failure leaves it; return the error to raise."""
        row = attempt.row
        error: Exception
        maybe_done = True
        if isinstance(exc, FollowUpError):
            error, maybe_done = exc, False
        elif isinstance(exc, sqlalchemy.exc.SQLAlchemyError):
            error = FollowUpUnavailable(
                f"the store is unavailable: retry with idempotency key {row.idempotency_key!r}"
            )
        else:
            failure = classify(exc, row.session_id, row.idempotency_key)
            if failure is None:
                error = exc  # a bug, not an outcome: raised as is, the row released in doubt
            else:
                error, maybe_done = failure.error, failure.maybe_done
        # A failed search leaves the earlier attempt as unknown as it was; a failed send is
        # unknown unless the API clearly refused it.
        unknown = attempt.recovering or (attempt.in_flight and maybe_done)
        log.warning("followup.failed", error=str(error)[:300], outcome_unknown=unknown)
        try:
            await asyncio.to_thread(
                partial(
                    rows.release,
                    self.engine,
                    row.id,
                    attempt.token,
                    now=self._now(),
                    error=str(error),
                    outcome_unknown=unknown,
                )
            )
        except sqlalchemy.exc.SQLAlchemyError:
            # Still claimed by us: when the lease runs out, the next claimer looks first.
            log.warning("followup.release_failed")
        return error
