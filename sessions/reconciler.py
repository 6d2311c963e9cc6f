"""The reconciler: find status changes no webhook reported, and deliver them ourselves.

Webhooks are not a durable log: a few attempts, then dropped; a disabled endpoint gets nothing,
and nothing is ever backfilled. The reconciler assumes nothing of `updated_at` (the SDK calls it
"a timestamp") and has no horizon: a session that rested a week and wakes is caught like one a
minute old. What can have changed, and so what a sweep looks at:

1. sessions running now (`statuses=[running, rescheduling]`, every page): a tracked one whose
   latest status delivery is not a run start has woken (or its start was never reported); an
   untracked one with no status delivery is new to us;
2. with an admin key, the webhook endpoint's state (sessions/endpoint.py);
3. a rotating scan of resting sessions (`statuses=[idle, terminated]`, oldest first, a page or
   two a sweep): an untracked one with no status delivery, created after the discovery floor, is
   new to us; a tracked, settled one whose runtime or token cost grew since we last saw it ran
   in between (woke and rested again between two sweeps, its webhooks lost);
4. tracked sessions that are not settled (store/watch.py: their latest status delivery does
   not report a rest, or something since says they are busy, or idlehook woke them), from a
   rotating cursor; running ones whose start was delivered cost nothing;
5. what the scan found.

Checking a session is one read of its latest status event, plus a retrieve unless a listing
returned it: the transition is (status, processed_at). If no delivery of the matching type
arrived at or after it, a synthetic one goes into the inbox, source "reconcile", with the
deterministic event id

    rec_<session_id>_<status>_<transition time>

so the same handlers run exactly as if the webhook had come, and a later sweep finds the id
taken. It looks for a covering delivery right before writing: the webhook may have come while
the sweep ran. Twins can still happen (a webhook late after the synthetic, or landing between
that look and the write); the routing step settles them with `late_duplicate()`
(handlers/twins.py), so only the first stored of the two runs handlers. A session's latest
transition is what is delivered: one that woke, ran and rested twice between two sweeps gets its
latest rest (handlers read the session as it is). Transitions younger than `settle` are left
for the next sweep: their webhook may be in flight.

Every call is counted, and all but the admin key's endpoint read are paced in the shared read
budget by the client's transport: a sweep spends at most `max_calls` (a backlog is worked
through over several sweeps, the cursors kept in the store), and, with nothing changing, costs
one page of running sessions, `scan_pages` pages of resting ones and the endpoint read.
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

from handlers.billing import token_usd
from handlers.events import (
    NOTIFIED_AS,
    REST_TYPES,
    STATUS_TYPES,
    TYPES_OF_STATUS,
)
from handlers.twins import CLOCK_SKEW, covers
from sessions import metrics
from sessions.endpoint import EndpointWatch
from sessions.reap_io import PacedCalls, StatusEvent
from sessions.session_view import as_utc
from store import delivered, watch
from store.delivered import transition_event_id
from store.inbox import Inbox, NewDelivery
from store.models import Source, utcnow
from store.sessions import SessionStore, SessionUpdate
from store.watch import EndpointRecord, Watched

log = structlog.get_logger(__name__)

# Status -> the type a synthetic delivery gets, and every type that covers a transition to it
# (both families; `session.requires_action` is an idle: handlers/events.py).
SYNTHETIC_TYPE = NOTIFIED_AS
MATCHING_TYPES = TYPES_OF_STATUS
BUSY = ["running", "rescheduling"]
RESTING = ["idle", "terminated"]
PAGE = 100  # sessions per list call
# Unsettled tracked rows read per sweep (most cost nothing: running, their start delivered).
ROW_WINDOW = 2000
# Named instants in reconcile_cursors (store/watch.py).
TRACKED_CURSOR = "tracked"  # first_seen_at of the last unsettled session checked
SCAN_CURSOR = "scan"  # created_at the scan of resting sessions resumes at
FLOOR = "discover_from"  # untracked resting sessions created before this are not ours to fill
SILENCE = "silence"  # the earliest change no webhook reported, until one comes
# Runtime is metered per millisecond, list cost in cents: smaller moves are rounding.
ACTIVE_EPSILON = 0.0005
COST_EPSILON = 1e-9


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


def transition_at(status: str, latest: StatusEvent | None, session: Any) -> datetime | None:
    """When the session entered `status` (its current one), or None: ask again next sweep.

    The latest status event says, when it reports that status. A session with no status event
    at all has rested since it was created; an archived one ended when it was archived. Any
    other mismatch is a status that moved between two reads (pure).
    """
    if latest is not None and latest.status == status:
        return latest.at
    archived = getattr(session, "archived_at", None)
    if status == "terminated" and archived is not None:
        return as_utc(archived)
    if latest is None and status in RESTING:
        return as_utc(session.created_at)
    return None


def fingerprint(session: Any) -> tuple[float | None, float | None]:
    """(runtime, token cost) of a session object: both only grow, and only while it runs."""
    usage = getattr(session, "usage", None)
    active = getattr(usage, "active_seconds", None) if usage is not None else None
    return (float(active) if active is not None else None), token_usd(usage)


def ran_since(row: Watched, session: Any) -> bool:
    """Did a resting session run since we last recorded it (pure)? Not relying on
    `updated_at`: a run accrues runtime (`usage.active_seconds`), and tokens if it called the
    model. A status other than the one recorded counts too."""
    if row.status is not None and str(session.status) != row.status:
        return True
    active, cost = fingerprint(session)
    if active is not None and (
        row.active_seconds is None or active > row.active_seconds + ACTIVE_EPSILON
    ):
        return True
    return cost is not None and (row.token_usd is None or cost > row.token_usd + COST_EPSILON)


@dataclass
class ReconcileReport:
    examined: int = 0  # sessions looked at: listed, or tracked and not settled
    changed: int = 0  # sessions checked because something may have changed
    synthesised: list[str] = field(default_factory=list)  # synthetic event ids written
    failed: list[str] = field(default_factory=list)  # session ids to look at again
    waiting: int = 0  # transitions younger than `settle`: their webhook may be in flight
    deferred: int = 0  # sessions the call budget left for the next sweep
    calls: int = 0  # API calls made (pages, retrieves, event reads, endpoint reads)
    budget: int = 0
    running: int = 0  # sessions listed running
    scanned: int = 0  # resting sessions listed by the rotating scan
    scan_wrapped: bool = False  # the scan reached the newest: it starts over next sweep
    silence_seconds: float = 0.0
    first_unreported_at: datetime | None = None
    alarm: bool = False
    endpoint: EndpointRecord | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "examined": self.examined,
            "changed": self.changed,
            "synthesised": self.synthesised,
            "failed": self.failed,
            "waiting": self.waiting,
            "deferred": self.deferred,
            "calls": self.calls,
            "budget": self.budget,
            "running": self.running,
            "scanned": self.scanned,
            "scan_wrapped": self.scan_wrapped,
            "silence_seconds": round(self.silence_seconds, 3),
            "first_unreported_at": (
                self.first_unreported_at.isoformat() if self.first_unreported_at else None
            ),
            "alarm": self.alarm,
            "endpoint": self.endpoint.as_dict() if self.endpoint else None,
        }


@dataclass
class _Sweep:
    """One sweep's running state: what it has spent, seen and checked."""

    now: datetime
    report: ReconcileReport
    start_calls: int
    listed: dict[str, Any] = field(default_factory=dict)  # session id -> listed object
    checked: set[str] = field(default_factory=set)
    seen: set[str] = field(default_factory=set)
    unreported: list[datetime] = field(default_factory=list)  # uncovered transition times
    deferred: set[str] = field(default_factory=set)  # wanted a check the budget could not pay


class Reconciler:
    def __init__(
        self,
        client: AsyncAnthropic,
        engine: Engine,
        inbox: Inbox | None = None,
        *,
        now: Callable[[], datetime] = utcnow,
        lookback: timedelta = timedelta(hours=24),
        settle: timedelta = timedelta(seconds=30),
        silence_alarm: timedelta = timedelta(minutes=5),
        max_calls: int = 100,
        scan_pages: int = 2,
        endpoint: EndpointWatch | None = None,
    ) -> None:
        """`lookback`: sessions idlehook never heard of that rest (idle or terminated) are
        filled in only if created at most this long before the first sweep, so a first start
        does not archive an organisation's history. Tracked sessions, and any session found
        running, have no such limit. `max_calls` caps the API calls a sweep makes."""
        if max_calls < 3:
            raise ValueError("max_calls must be at least 3 (a page of each list, a check)")
        self.engine = engine
        self.inbox = inbox or Inbox(engine)
        self.calls = PacedCalls(client)
        self.now = now
        self.lookback = lookback
        self.settle = settle
        self.silence_alarm = silence_alarm
        self.max_calls = max_calls
        self.scan_pages = max(1, scan_pages)
        self.endpoint = endpoint
        self.sessions = SessionStore(engine)

    async def aclose(self) -> None:
        """Close the admin client the endpoint watch holds, if any (the API client is the
        caller's)."""
        if self.endpoint is not None:
            await self.endpoint.client.close()

    async def sweep(self) -> ReconcileReport:
        now = self.now()
        run = _Sweep(now, ReconcileReport(budget=self.max_calls), self.calls.made)
        report = run.report
        try:
            await self._running(run)
            if self.endpoint is not None and self._left(run) >= 1:
                report.endpoint = await self.endpoint.check(self.calls.call, now)
            scan = await self._scan(run)
            await self._unsettled(run)
            await self._scanned(run, scan)
        finally:
            report.calls = self.calls.made - run.start_calls
            metrics.RECONCILE_API_CALLS.inc(report.calls)
        report.examined = len(run.seen)
        report.deferred = len(run.deferred - run.checked)
        await asyncio.to_thread(self._silence, run)
        log.info(
            "reconcile.swept",
            examined=report.examined,
            changed=report.changed,
            synthesised=len(report.synthesised),
            failed=len(report.failed),
            waiting=report.waiting,
            deferred=report.deferred,
            calls=report.calls,
            alarm=report.alarm,
        )
        return report

    def _left(self, run: _Sweep) -> int:
        return self.max_calls - (self.calls.made - run.start_calls)

    # -- the listings ------------------------------------------------------------------------

    async def _list(
        self,
        run: _Sweep,
        statuses: list[str],
        *,
        max_pages: int | None,
        created_at_gte: datetime | None = None,
    ) -> tuple[list[Any], bool]:
        """Sessions in `statuses`, oldest first, a paced call a page while the budget lasts;
        and whether the listing reached its end."""
        params: dict[str, Any] = {
            "statuses": statuses,
            "include_archived": True,
            "order": "asc",
            "limit": PAGE,
        }
        if created_at_gte is not None:
            params["created_at_gte"] = created_at_gte
        client = self.calls.client
        found: list[Any] = []
        if self._left(run) < 1:
            return found, False
        page = await self.calls.call(lambda: client.beta.sessions.list(**params))
        pages = 1
        found.extend(page.data)
        while page.has_next_page():
            if (max_pages is not None and pages >= max_pages) or self._left(run) < 1:
                return found, False
            current = page
            page = await self.calls.call(current.get_next_page)
            pages += 1
            found.extend(page.data)
        return found, True

    async def _rows(self, ids: Sequence[str]) -> dict[str, Watched]:
        rows = await asyncio.to_thread(
            watch.watched,
            self.engine,
            status_types=STATUS_TYPES,
            quiet_types=REST_TYPES,
            ids=list(ids),
        )
        return {row.id: row for row in rows}

    async def _known(self, ids: Sequence[str]) -> set[str]:
        return await asyncio.to_thread(
            watch.with_status_deliveries, self.engine, list(ids), STATUS_TYPES
        )

    # -- 1. running now ------------------------------------------------------------------------

    async def _running(self, run: _Sweep) -> None:
        sessions, _ = await self._list(run, BUSY, max_pages=None)
        run.report.running = len(sessions)
        run.listed.update((s.id, s) for s in sessions)
        run.seen.update(s.id for s in sessions)
        rows = await self._rows([s.id for s in sessions])
        known = await self._known([s.id for s in sessions if s.id not in rows])

        def woke(session: Any) -> bool:
            row = rows.get(session.id)
            if row is None:
                return session.id not in known  # new to us
            return row.last_status_type not in MATCHING_TYPES["running"]

        await self._check_each(run, [s for s in sessions if woke(s)])

    async def _check_each(self, run: _Sweep, sessions: Sequence[Any]) -> datetime | None:
        """Check listed sessions in order while the budget lasts; the created_at of the first
        left unchecked, if any."""
        for i, session in enumerate(sessions):
            if session.id in run.checked:
                continue
            if not await self._check(run, session.id, session, cost=1):
                run.deferred.update(s.id for s in sessions[i + 1 :])
                return as_utc(session.created_at)
        return None

    # -- 3. the rotating scan of resting sessions ----------------------------------------------

    async def _scan(self, run: _Sweep) -> list[tuple[Any, bool]]:
        """List a page or two of resting sessions from the cursor; return them in order, each
        with whether it needs a check."""
        now = run.now
        floor = await asyncio.to_thread(
            watch.first_mark, self.engine, FLOOR, now - self.lookback, now
        )
        cursor = await asyncio.to_thread(watch.read_mark, self.engine, SCAN_CURSOR)
        sessions, done = await self._list(
            run, RESTING, max_pages=self.scan_pages, created_at_gte=cursor
        )
        run.report.scanned = len(sessions)
        run.report.scan_wrapped = done
        run.seen.update(s.id for s in sessions)
        for s in sessions:
            run.listed.setdefault(s.id, s)
        rows = await self._rows([s.id for s in sessions])
        known = await self._known([s.id for s in sessions if s.id not in rows])
        found: list[tuple[Any, bool]] = []
        for session in sessions:
            row = rows.get(session.id)
            if row is None:
                wanted = session.id not in known and as_utc(session.created_at) >= floor
            else:
                wanted = not row.settled or ran_since(row, session)
            found.append((session, wanted))
        return found

    async def _scanned(self, run: _Sweep, scan: list[tuple[Any, bool]]) -> None:
        """Check what the scan found, then move its cursor past what is done (the list filters
        `created_at >= cursor`: the session it resumes at is listed again, never skipped)."""
        if not scan and not run.report.scan_wrapped:
            return  # no page was affordable: the cursor stays
        resume = await self._check_each(run, [s for s, wanted in scan if wanted])
        if resume is None and not run.report.scan_wrapped:
            resume = as_utc(scan[-1][0].created_at)
        await asyncio.to_thread(watch.set_mark, self.engine, SCAN_CURSOR, resume, run.now)

    # -- 4. tracked sessions that are not settled ----------------------------------------------

    async def _unsettled(self, run: _Sweep) -> None:
        cursor = await asyncio.to_thread(watch.read_mark, self.engine, TRACKED_CURSOR)
        rows = await asyncio.to_thread(self._unsettled_rows, cursor)

        def needs_check(row: Watched) -> bool:
            if row.id in run.checked:
                return False
            listed = run.listed.get(row.id)
            # Running, and its start delivered: nothing missed (the running list is complete
            # unless the budget cut it short, and then `listed` is simply absent).
            return not (
                listed is not None
                and str(listed.status) in BUSY
                and row.last_status_type in MATCHING_TYPES["running"]
            )

        last = cursor  # nothing looked at: resume where this sweep meant to
        for i, row in enumerate(rows):
            run.seen.add(row.id)
            if needs_check(row):
                listed = run.listed.get(row.id)
                if not await self._check(run, row.id, listed, cost=1 if listed else 2):
                    run.deferred.update(r.id for r in rows[i + 1 :] if needs_check(r))
                    break
            last = row.first_seen_at
        else:
            # Every row read was looked at: start from the first again next sweep, unless the
            # window was full (then carry on after it).
            last = last if len(rows) >= ROW_WINDOW else None
        await asyncio.to_thread(watch.set_mark, self.engine, TRACKED_CURSOR, last, run.now)

    def _unsettled_rows(self, cursor: datetime | None) -> list[Watched]:
        """Unsettled tracked rows after the cursor, then (wrapping round) those before it."""
        common: dict[str, Any] = {
            "status_types": STATUS_TYPES,
            "quiet_types": REST_TYPES,
            "unsettled_only": True,
        }
        rows = watch.watched(self.engine, after=cursor, limit=ROW_WINDOW, **common)
        if cursor is not None and len(rows) < ROW_WINDOW:
            rows += watch.watched(self.engine, upto=cursor, limit=ROW_WINDOW - len(rows), **common)
        return rows

    # -- checking one session ------------------------------------------------------------------

    async def _check(self, run: _Sweep, session_id: str, listed: Any | None, *, cost: int) -> bool:
        """Deliver the session's latest transition if nothing reported it. False (nothing
        done) when the budget cannot pay for it: the caller stops there."""
        if self._left(run) < cost:
            run.deferred.add(session_id)
            return False
        run.checked.add(session_id)
        run.seen.add(session_id)
        run.report.changed += 1
        try:
            await self._settle(run, session_id, listed)
        except Exception as exc:  # one session's trouble must not stop the sweep
            log.error("reconcile.session_failed", session_id=session_id, error=type(exc).__name__)
            run.report.failed.append(session_id)
        return True

    async def _settle(self, run: _Sweep, session_id: str, listed: Any | None) -> None:
        now = run.now
        try:
            session = listed if listed is not None else await self.calls.retrieve(session_id)
            status = str(session.status)
            if status not in SYNTHETIC_TYPE:
                return  # rescheduling: nothing to report until it runs or rests
            latest = await self.calls.latest_status(session_id)
        except anthropic.NotFoundError:
            await asyncio.to_thread(self.sessions.mark_deleted, session_id, now)
            return
        at = transition_at(status, latest, session)
        if at is None:
            return  # it moved on between two reads: the next sweep sees where it went
        if await asyncio.to_thread(_delivered, self.engine, session_id, status, at):
            await self._remember(session_id, status, session, now)
            return
        run.unreported.append(at)
        if at > now - self.settle:
            run.report.waiting += 1
            return
        delivery = synthetic_delivery(session_id, status, at, now)
        result = await asyncio.to_thread(self.inbox.ingest_sync, delivery)
        if result.new:
            run.report.synthesised.append(delivery.event_id)
            metrics.RECONCILE_SYNTHETIC.labels(event_type=delivery.event_type).inc()
            log.warning(
                "reconcile.synthesised",
                session_id=session_id,
                event_type=delivery.event_type,
                transition_at=at.isoformat(),
            )
        await self._remember(session_id, status, session, now)

    async def _remember(self, session_id: str, status: str, session: Any, now: datetime) -> None:
        """Its latest transition is delivered: track it (routing would, but may not have yet),
        and, if it rests, remember its runtime and token cost, so the scan can tell when it
        has run again. Its status is the routing step's to record."""
        seen = SessionUpdate.from_api(session, token_usd=token_usd(getattr(session, "usage", None)))
        kept = ["created_at"]
        if status in RESTING:
            kept += ["active_seconds", "token_usd"]  # a busy session's are no fingerprint yet
        await asyncio.to_thread(self.sessions.record, session_id, seen.only(*kept), now)

    # -- the silence alarm ---------------------------------------------------------------------

    def _silence(self, run: _Sweep) -> None:
        """Sessions changed (as the API says: transitions this reconciler read that no delivery
        covered) and no webhook at all came after the earliest of them, for `silence_alarm`."""
        now, report = run.now, run.report
        last = delivered.last_webhook_received_at(self.engine)
        stored = watch.read_mark(self.engine, SILENCE)
        if stored is not None and last is not None and last >= stored:
            stored = None  # a webhook came after it: the endpoint was alive then
        fresh = [t for t in run.unreported if last is None or t > last]
        first = min([t for t in (stored, *fresh) if t is not None], default=None)
        if first != watch.read_mark(self.engine, SILENCE):
            watch.set_mark(self.engine, SILENCE, first, now)
        reference = last or first
        report.first_unreported_at = first
        report.silence_seconds = max(0.0, (now - reference).total_seconds()) if reference else 0.0
        report.alarm = first is not None and now - first >= self.silence_alarm
        metrics.WEBHOOK_SILENCE.set(report.silence_seconds)
        metrics.WEBHOOK_SILENCE_ALARM.set(1 if report.alarm else 0)
        if report.alarm:
            log.error(
                "reconcile.webhook_silence",
                silence_seconds=round(report.silence_seconds, 1),
                first_unreported_at=first.isoformat() if first else None,
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


def _delivered(engine: Engine, session_id: str, status: str, at: datetime) -> bool:
    """Is the transition to `status` at `at` delivered by now, by us or by a webhook?"""
    if delivered.delivery_exists(engine, transition_event_id(session_id, status, at)):
        return True
    since = at - CLOCK_SKEW
    fresh = delivered.deliveries_since(engine, [session_id], MATCHING_TYPES[status], since)
    return covers(fresh.get(session_id, []), status, at) is not None
