"""The reconciler: find status changes no webhook reported, and deliver them ourselves.

Webhooks are not a durable log: three attempts, then dropped; a disabled endpoint gets nothing.
A sweep lists recent sessions (the list is ordered by created_at, so: every session created in
the lookback window) and looks at those whose `updated_at` moved past the cursor. For each, the
transition is the latest status event in its event list (`updated_at` also moves on metadata
edits, which are not transitions). If no delivery of the matching type arrived at or after the
transition, it writes one into the inbox, source "reconcile", with the deterministic event id

    rec_<session_id>_<status>_<transition time>

so the same handlers run exactly as if the webhook had come, and a second sweep finds the id
taken. Right before writing, it looks for a covering delivery again: the webhook may have come
while the sweep ran. Twins can still happen (a webhook late after the synthetic, or landing
between that look and the write); the routing step settles them with `late_duplicate()`, so
only the first stored of the two runs handlers.

Transitions younger than `settle` are left for the next sweep: their webhook may be in flight.
"""

import asyncio
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import anthropic
import structlog
from anthropic import AsyncAnthropic
from sqlalchemy.engine import Engine

from sessions import metrics
from sessions.reap_io import Gate, OpenGate, PacedCalls
from sessions.session_view import as_utc
from store import audit
from store.audit import transition_event_id
from store.inbox import Inbox, NewDelivery
from store.models import Source, utcnow

log = structlog.get_logger(__name__)

CURSOR = "sessions"
# Status -> the webhook type its transition produces, as Anthropic sends it.
SYNTHETIC_TYPE = {
    "idle": "session.status_idled",
    "running": "session.status_run_started",
    "terminated": "session.status_terminated",
}
# Status -> every webhook type that reports it (the documented family and the second one).
MATCHING_TYPES = {
    "idle": frozenset({"session.status_idled", "session.idled"}),
    "running": frozenset({"session.status_run_started", "session.running"}),
    "terminated": frozenset({"session.status_terminated"}),
}
STATUS_OF_TYPE = {t: status for status, types in MATCHING_TYPES.items() for t in types}
ALL_MATCHING = frozenset(STATUS_OF_TYPE)
# A webhook's envelope time and the event's processed_at come from different code paths.
CLOCK_SKEW = timedelta(seconds=1)


def covers(
    deliveries: Sequence[audit.SeenDelivery], status: str, at: datetime
) -> audit.SeenDelivery | None:
    """A delivery reporting `status` at or after the transition at `at`, if any (pure)."""
    wanted = MATCHING_TYPES[status]
    for d in deliveries:
        if d.event_type not in wanted:
            continue
        if d.received_at >= at:
            return d
        if d.event_created_at is not None and d.event_created_at >= at - CLOCK_SKEW:
            return d
    return None


def envelope(event_id: str, event_type: str, session_id: str, at: datetime) -> str:
    """The body a real webhook would have had: the same thin shape."""
    return json.dumps(
        {
            "type": "event",
            "id": event_id,
            "created_at": as_utc(at).isoformat().replace("+00:00", "Z"),
            "data": {"type": event_type, "id": session_id},
        },
        separators=(",", ":"),
    )


@dataclass
class SweepReport:
    examined: int = 0
    changed: int = 0
    synthesised: list[str] = field(default_factory=list)  # synthetic event ids written
    failed: list[str] = field(default_factory=list)  # session ids to look at again
    through: datetime | None = None
    silence_seconds: float = 0.0
    alarm: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "examined": self.examined,
            "changed": self.changed,
            "synthesised": self.synthesised,
            "failed": self.failed,
            "through": self.through.isoformat() if self.through else None,
            "silence_seconds": round(self.silence_seconds, 3),
            "alarm": self.alarm,
        }


class Reconciler:
    def __init__(
        self,
        client: AsyncAnthropic,
        engine: Engine,
        inbox: Inbox | None = None,
        *,
        gate: Gate | None = None,
        now: Callable[[], datetime] = utcnow,
        lookback: timedelta = timedelta(hours=24),
        settle: timedelta = timedelta(seconds=30),
        silence_alarm: timedelta = timedelta(minutes=15),
    ) -> None:
        self.engine = engine
        self.inbox = inbox or Inbox(engine)
        self.calls = PacedCalls(client, gate or OpenGate())
        self.now = now
        self.lookback = lookback
        self.settle = settle
        self.silence_alarm = silence_alarm

    async def sweep(self) -> SweepReport:
        now = self.now()
        horizon = now - self.settle
        start = now - self.lookback
        cursor = await asyncio.to_thread(audit.read_cursor, self.engine, CURSOR)
        since = max(cursor, start) if cursor is not None else start
        sessions = await self.calls.list_sessions(created_at_gte=start)
        report = SweepReport(examined=len(sessions))
        changed = [
            s
            for s in sessions
            if str(s.status) in SYNTHETIC_TYPE and since < as_utc(s.updated_at) <= horizon
        ]
        report.changed = len(changed)
        through = horizon
        if changed:
            ids = [s.id for s in changed]
            seen = await asyncio.to_thread(
                audit.deliveries_since, self.engine, ids, ALL_MATCHING, since
            )
            for session in changed:
                try:
                    await self._settle(session, seen.get(session.id, []), since, now, report)
                except Exception as exc:  # one session's trouble must not stop the sweep
                    log.error(
                        "reconcile.session_failed", session_id=session.id, error=type(exc).__name__
                    )
                    report.failed.append(session.id)
                    # Hold the cursor just before it, so the next sweep looks again.
                    through = min(through, as_utc(session.updated_at) - timedelta(microseconds=1))
        if through > since:
            await asyncio.to_thread(audit.write_cursor, self.engine, CURSOR, through, now)
        report.through = max(through, since)
        await asyncio.to_thread(self._silence, now, report)
        log.info(
            "reconcile.swept",
            examined=report.examined,
            changed=report.changed,
            synthesised=len(report.synthesised),
            failed=len(report.failed),
            alarm=report.alarm,
        )
        return report

    async def _settle(
        self,
        session: Any,
        seen: Sequence[audit.SeenDelivery],
        since: datetime,
        now: datetime,
        report: SweepReport,
    ) -> None:
        status = str(session.status)
        updated = as_utc(session.updated_at)
        # Cheap first: a matching delivery after the last change of any kind covers it.
        if covers(seen, status, updated) is not None:
            return
        latest = await self.calls.latest_status(session.id)
        at = latest.at if latest is not None and latest.status == status else updated
        if covers(seen, status, at) is not None:
            return
        # `seen` is as old as the sweep: a webhook that committed since must not get a twin.
        if await asyncio.to_thread(_delivered, self.engine, session.id, status, at, since):
            return
        delivery = synthetic_delivery(session.id, status, at, now)
        result = await asyncio.to_thread(self.inbox.ingest_sync, delivery)
        if result.new:
            report.synthesised.append(delivery.event_id)
            metrics.RECONCILE_SYNTHETIC.labels(event_type=delivery.event_type).inc()
            log.warning(
                "reconcile.synthesised",
                session_id=session.id,
                event_type=delivery.event_type,
                transition_at=at.isoformat(),
            )

    def _silence(self, now: datetime, report: SweepReport) -> None:
        last = audit.last_webhook_received_at(self.engine)
        first_missed = audit.first_synthetic_after(self.engine, last)
        reference = last or first_missed
        report.silence_seconds = max(0.0, (now - reference).total_seconds()) if reference else 0.0
        report.alarm = first_missed is not None and now - first_missed >= self.silence_alarm
        metrics.WEBHOOK_SILENCE.set(report.silence_seconds)
        metrics.WEBHOOK_SILENCE_ALARM.set(1 if report.alarm else 0)
        if report.alarm:
            log.error(
                "reconcile.webhook_silence",
                silence_seconds=round(report.silence_seconds, 1),
                first_missed_at=first_missed.isoformat() if first_missed else None,
                hint="sessions change status but no webhook arrives: is the endpoint disabled?",
            )


def synthetic_delivery(session_id: str, status: str, at: datetime, now: datetime) -> NewDelivery:
    """The delivery the reconciler writes for a missed transition to `status` at `at`."""
    event_id = transition_event_id(session_id, status, at)
    event_type = SYNTHETIC_TYPE[status]
    return NewDelivery(
        event_id=event_id,
        event_type=event_type,
        resource_id=session_id,
        session_id=session_id,
        event_created_at=at,
        received_at=now,
        body=envelope(event_id, event_type, session_id, at),
        headers={},
        source=Source.RECONCILE,
    )


def _delivered(engine: Engine, session_id: str, status: str, at: datetime, since: datetime) -> bool:
    """Is the transition to `status` at `at` delivered by now, by us or by a webhook?

    The same question the sweep asked of what it read at its start (`since` is its window).
    """
    if audit.delivery_exists(engine, transition_event_id(session_id, status, at)):
        return True
    fresh = audit.deliveries_since(engine, [session_id], MATCHING_TYPES[status], since)
    return covers(fresh.get(session_id, []), status, at) is not None


def _covered_before(engine: Engine, session_id: str, event_type: str, event_id: str) -> bool:
    """Did a real webhook stored ahead of this synthetic delivery cover its transition?"""
    synthetic = audit.seen_delivery(engine, event_id)
    if synthetic is None or synthetic.event_created_at is None:
        return False
    status, at = STATUS_OF_TYPE[event_type], synthetic.event_created_at
    seen = audit.deliveries_since(engine, [session_id], MATCHING_TYPES[status], at - CLOCK_SKEW)
    earlier = [
        d
        for d in seen.get(session_id, [])
        if d.source == str(Source.WEBHOOK) and d.id < synthetic.id
    ]
    return covers(earlier, status, at) is not None


async def late_duplicate(
    client: AsyncAnthropic,
    engine: Engine,
    *,
    session_id: str | None,
    event_type: str,
    event_id: str,
    source: str,
    gate: Gate | None = None,
) -> bool:
    """True when this status delivery has a twin stored ahead of it that covers the same state.

    The routing step calls this for every delivery and routes a duplicate to no handlers. Of
    two twins, the first stored is routed first (one lane, in delivery order) and runs them.

    A real webhook (source "webhook"): the session's current transition is read from the API;
    if a synthetic delivery for exactly that transition was stored first, the state this
    webhook could make the handlers see has been handled (the webhook is thin, handlers read
    the current session), so handling it again would run them twice.

    A synthetic one (source "reconcile"): a real webhook of the matching type, stored first,
    already covers its transition (it came while the sweep was writing this one).
    """
    if session_id is None or event_type not in ALL_MATCHING:
        return False
    if source == str(Source.RECONCILE):
        return await asyncio.to_thread(_covered_before, engine, session_id, event_type, event_id)
    if source != str(Source.WEBHOOK):
        return False
    # Only a session the reconciler ever filled in can have a late twin: ask the store before
    # spending an API call, so the common path costs one indexed lookup.
    if not await asyncio.to_thread(audit.has_reconciled_delivery, engine, session_id):
        return False
    try:
        latest = await PacedCalls(client, gate or OpenGate()).latest_status(session_id)
    except anthropic.NotFoundError:
        return False  # deleted since: the routing step's own fetch settles it
    if latest is None or latest.status not in SYNTHETIC_TYPE:
        return False
    if transition_event_id(session_id, latest.status, latest.at) == event_id:
        return False
    return await asyncio.to_thread(
        audit.harvested, engine, session_id, latest.status, latest.at, before=event_id
    )
