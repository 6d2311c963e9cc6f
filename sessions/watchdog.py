"""The deadline watchdog: catch what the webhooks missed, stop what overran.

Webhooks are at-most-3-attempts and then dropped, so a session we launched may sit "running" in
our store long after it went idle. Each sweep looks at our sessions whose last known status is
not idle or terminated and fetches those that have been silent too long, or are past their
deadline. A session past its deadline and still running gets a `user.interrupt` and is marked
for the reaper (`reap_requested_at`). `plan` is the pure decision; `Watchdog` does the I/O.
"""

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

import anthropic
import structlog
from anthropic import AsyncAnthropic
from sqlalchemy.engine import Engine

from handlers.billing import Pricing, session_cost
from store.launches import QUIET_STATUSES, LaunchStore
from store.models import TrackedSession, utcnow
from store.sessions import SessionStore, SessionUpdate

log = structlog.get_logger(__name__)

STILL_RUNNING = ("running", "rescheduling")

Reason = Literal["past_deadline", "silent"]


def plan(session: TrackedSession, now: datetime, silence: timedelta) -> Reason | None:
    """Why the watchdog should fetch this session now, or None to leave it be."""
    if session.status in QUIET_STATUSES or session.reap_requested_at is not None:
        return None
    if session.deadline is not None and now >= session.deadline:
        return "past_deadline"
    heard = [t for t in (session.last_webhook_at, session.polled_at) if t is not None]
    last = max(heard) if heard else (session.created_at or session.first_seen_at)
    if now - last >= silence:
        return "silent"
    return None


def should_interrupt(status: str, deadline: datetime | None, now: datetime) -> bool:
    return deadline is not None and now >= deadline and status in STILL_RUNNING


@dataclass
class WatchdogReport:
    checked: int = 0
    polled: int = 0
    status_changed: int = 0
    interrupted: int = 0
    gone: int = 0
    errors: int = 0
    changes: dict[str, str] = field(default_factory=dict)  # session id -> new status


class Watchdog:
    def __init__(
        self,
        engine: Engine,
        client: AsyncAnthropic,
        *,
        silence: timedelta = timedelta(minutes=10),
        batch: int = 200,
        now: Callable[[], datetime] = utcnow,
        pricing: Pricing | None = None,
    ) -> None:
        self.store = LaunchStore(engine, now=now)
        self.sessions = SessionStore(engine)
        self.pricing = pricing or Pricing()
        # Paced by the client's transport (sessions/paced_transport.py), which also pushes the
        # read class back after a 429; a sweep stops at one rather than retrying.
        self.client = client.with_options(max_retries=0)
        self.silence = silence
        self.batch = batch
        self._now = now

    async def sweep(self) -> WatchdogReport:
        report = WatchdogReport()
        candidates = await asyncio.to_thread(self.store.watch_candidates, self.batch)
        now = self._now()
        for session in candidates:
            report.checked += 1
            reason = plan(session, now, self.silence)
            if reason is None:
                continue
            with structlog.contextvars.bound_contextvars(session_id=session.id, reason=reason):
                try:
                    await self._check(session, report)
                except anthropic.APIError as exc:
                    report.errors += 1
                    log.warning("watchdog.fetch_failed", error=type(exc).__name__)
                    if isinstance(exc, anthropic.RateLimitError):
                        # The API is the one short of breath: stop this sweep here.
                        break
        if report.polled:
            log.info(
                "watchdog.sweep",
                checked=report.checked,
                polled=report.polled,
                status_changed=report.status_changed,
                interrupted=report.interrupted,
                gone=report.gone,
            )
        return report

    async def _check(self, tracked: TrackedSession, report: WatchdogReport) -> None:
        try:
            session = await self.client.beta.sessions.retrieve(tracked.id)
        except anthropic.NotFoundError:
            report.gone += 1
            log.info("watchdog.session_gone")
            await asyncio.to_thread(self.sessions.mark_deleted, tracked.id, self._now())
            return
        report.polled += 1
        cost = session_cost(session, self.pricing, now=self._now())
        seen = SessionUpdate.from_api(session, cost_usd=cost.total_usd, token_usd=cost.token_usd)
        # What a poll has always recorded: the run's progress. Its other facts are the routing
        # step's, from the notifications.
        polled = seen.only("status", "active_seconds", "cost_usd", "token_usd")
        await asyncio.to_thread(self.sessions.record_poll, tracked.id, polled, self._now())
        if session.status != tracked.status:
            report.status_changed += 1
            report.changes[tracked.id] = session.status
            log.info("watchdog.status_changed", was=tracked.status, now=session.status)
        if should_interrupt(session.status, tracked.deadline, self._now()):
            await asyncio.to_thread(
                self.sessions.record_interrupt, tracked.id, "past_deadline", self._now()
            )
            await self.client.beta.sessions.events.send(
                tracked.id, events=[{"type": "user.interrupt"}]
            )
            await asyncio.to_thread(self.sessions.request_reap, [tracked.id], self._now())
            report.interrupted += 1
            log.warning("watchdog.interrupted_past_deadline", deadline=str(tracked.deadline))
