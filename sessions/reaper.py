"""The reaper: list sessions, judge each by policy, re-check, then interrupt, archive, delete.

`plan()` lists and judges; `execute(plan)` re-reads the store's guards, re-fetches each
candidate and acts only if nothing changed since it was chosen. `run()` is both, and is what
cron (`idlehook reap`) and the worker's schedule call. Every action, including a dry run's
(`would_delete`, never `deleted`) and a skip, leaves an audit row in `reaper_actions`; every
session examined and left alone is a `kept` row with its reason in the report and the log, not
in the store (a sweep every few minutes would write one per session each time).
"""

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

import anthropic
import structlog
from anthropic import AsyncAnthropic
from sqlalchemy.engine import Engine

from sessions import metrics
from sessions.reap_io import UNREAD, PacedCalls, Snapshot, snapshot_of
from sessions.reap_policy import (
    BUSY,
    RESTING,
    Action,
    Block,
    Kept,
    Ownership,
    ReapPolicy,
    Reason,
    Verdict,
    blocker,
    choose,
    excluded,
    idle_for,
    max_running,
    may_run_too_long,
    needs_archive,
    ownership,
    saving_per_hour,
    span,
)
from sessions.session_view import SessionView, as_utc, saved_since, view_of
from store import approvals, reap_guards, reaper_actions
from store.models import ReaperAction, ReaperActionKind, TrackedSession, utcnow
from store.sessions import SessionStore

log = structlog.get_logger(__name__)

ALL_STATUSES = ("idle", "terminated", "running", "rescheduling")
_SAVING_ACTIONS = (
    ReaperActionKind.DELETED,
    ReaperActionKind.INTERRUPTED,
    ReaperActionKind.WOULD_DELETE,
    ReaperActionKind.WOULD_INTERRUPT,
)
# A dry run names what it would do with words of its own: no row, log line or page of it can
# be read as a deletion.
_WOULD = {
    ReaperActionKind.DELETED: ReaperActionKind.WOULD_DELETE,
    ReaperActionKind.INTERRUPTED: ReaperActionKind.WOULD_INTERRUPT,
    ReaperActionKind.ARCHIVED: ReaperActionKind.WOULD_ARCHIVE,
}
GONE = "already_gone"

# Saves events.jsonl/result.json of one session, as the archive handler does.
Archiver = Callable[[str], Awaitable[None]]


@dataclass(frozen=True)
class Candidate:
    view: SessionView
    verdict: Verdict
    snapshot: Snapshot


@dataclass(frozen=True)
class StoreFacts:
    """What the store knows of a batch of sessions, read in one go."""

    tracked: dict[str, TrackedSession]
    pending_runs: dict[str, int]
    pending_approvals: dict[str, int]


@dataclass(frozen=True)
class Plan:
    candidates: list[Candidate]
    examined: int
    kept: list["Outcome"] = field(default_factory=list)  # the rest, each with its reason


@dataclass(frozen=True)
class Outcome:
    session_id: str
    action: ReaperActionKind
    reason: str
    dry_run: bool
    status: str
    saving_usd_per_hour: float = 0.0
    error: str | None = None
    detail: str | None = None  # why, in words a person can check: "running 3h05m > 2h"

    @property
    def failed(self) -> bool:
        return self.action in (ReaperActionKind.FAILED, ReaperActionKind.REFUSED)


@dataclass
class ReapReport:
    run_id: str
    dry_run: bool
    examined: int = 0
    outcomes: list[Outcome] = field(default_factory=list)
    rate_limited: int = 0
    billing_model: str = "running"
    # Every examined session no action was chosen for, with why (`Keep`): with `outcomes`, a
    # row for each session examined.
    kept: list[Outcome] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(o.failed for o in self.outcomes)

    @property
    def saving_usd_per_hour(self) -> float:
        """What this run's interrupts and deletes stopped, under `billing_model`."""
        return sum(o.saving_usd_per_hour for o in self.outcomes if o.action in _SAVING_ACTIONS)

    def ids(self, action: ReaperActionKind) -> list[str]:
        return [o.session_id for o in self.outcomes if o.action is action]

    @property
    def kept_by_reason(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for o in self.kept:
            counts[o.reason] = counts.get(o.reason, 0) + 1
        return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))

    def as_dict(self) -> dict[str, Any]:
        """The JSON of `idlehook reap --json`: `actions` (a dry run's say `would_delete`,
        `would_interrupt`, `would_archive`) and `kept`, one row per session left alone."""
        return {
            "run_id": self.run_id,
            "dry_run": self.dry_run,
            "examined": self.examined,
            "ok": self.ok,
            "billing_model": self.billing_model,
            "saving_usd_per_hour": round(self.saving_usd_per_hour, 6),
            "rate_limited": self.rate_limited,
            "actions": [
                {
                    "session_id": o.session_id,
                    "action": str(o.action),
                    "reason": o.reason,
                    "status": o.status,
                    "saving_usd_per_hour": o.saving_usd_per_hour,
                    "detail": o.detail,
                    "error": o.error,
                }
                for o in self.outcomes
            ],
            "kept": [
                {
                    "session_id": o.session_id,
                    "action": str(o.action),
                    "reason": o.reason,
                    "status": o.status,
                    "detail": o.detail,
                }
                for o in self.kept
            ],
            "kept_by_reason": self.kept_by_reason,
        }


class Reaper:
    def __init__(
        self,
        client: AsyncAnthropic,
        engine: Engine,
        policy: ReapPolicy,
        *,
        archive: Archiver | None = None,
        now: Callable[[], datetime] = utcnow,
        lookback: timedelta = timedelta(days=30),
        statuses: Sequence[str] = ALL_STATUSES,
        interrupt_wait_seconds: float = 10.0,
        poll_seconds: float = 0.25,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        max_rate_retries: int = 5,
        concurrency: int = 8,
    ) -> None:
        self.engine = engine
        self.policy = policy
        self.calls = PacedCalls(client, max_rate_retries=max_rate_retries)
        self.archive = archive
        self.now = now
        self.lookback = lookback
        self.statuses = tuple(statuses)
        self.interrupt_wait_seconds = interrupt_wait_seconds
        self.poll_seconds = poll_seconds
        self.sleep = sleep
        # Sessions judged and acted on at once: one at a time, a sweep moved at the speed of
        # the API's latency, far below its rate limit; the client still paces every call.
        self.concurrency = max(1, concurrency)

    async def run(
        self, *, dry_run: bool = False, progress: Callable[[int, int], None] | None = None
    ) -> ReapReport:
        """`progress(done, total)`, if given, hears after each candidate (the CLI's bar)."""
        plan = await self.plan()
        return await self.execute(plan, dry_run=dry_run, progress=progress)

    # -- choosing ------------------------------------------------------------------------

    async def plan(self) -> Plan:
        now = self.now()
        sessions = await self.calls.list_sessions(
            created_at_gte=now - self.lookback, statuses=self.statuses
        )
        ids = [s.id for s in sessions]
        facts = await asyncio.to_thread(self._store_facts, ids)
        slots = asyncio.Semaphore(self.concurrency)

        async def consider(session: Any) -> Candidate | Outcome:
            async with slots:
                view, verdict, latest = await self._judge(session, facts, now)
                if isinstance(verdict, Kept):
                    return self._kept(view, verdict)
                if verdict.action is Action.INTERRUPT:
                    # A run in progress adds events all the time: "unchanged" means still busy,
                    # which the retrieve before the interrupt checks; no event read for it.
                    return Candidate(view, verdict, snapshot_of(session, None))
                return Candidate(view, verdict, await self.calls.snapshot(session, latest))

        # gather keeps the listing's order, so the plan (and the report) read oldest first.
        considered = await asyncio.gather(*(consider(s) for s in sessions))
        candidates = [c for c in considered if isinstance(c, Candidate)]
        kept = [c for c in considered if isinstance(c, Outcome)]
        log.info(
            "reaper.planned", examined=len(sessions), candidates=len(candidates), kept=len(kept)
        )
        return Plan(candidates, examined=len(sessions), kept=kept)

    async def _judge(
        self, session: Any, facts: "StoreFacts", now: datetime
    ) -> tuple[SessionView, Verdict | Kept, Any]:
        """The view, the verdict (or why it is kept), and the latest event if it was read on
        the way (else UNREAD)."""
        row = facts.tracked.get(session.id)
        pending = facts.pending_runs.get(session.id, 0)
        awaiting = facts.pending_approvals.get(session.id, 0)
        view = view_of(session, row, pending_runs=pending, pending_approvals=awaiting)
        latest_event = UNREAD
        if (
            may_run_too_long(view, self.policy, now)
            and not excluded(view, self.policy)
            and self._may_interrupt(view)
        ):
            started = await self.calls.run_started_at(view.id)
            view = replace(view, run_started_at=started)
        # The store's stop reason may be a turn behind (or missing), and its saved marks may be
        # an earlier turn's: for a resting session of ours the event list has the truth.
        if (
            view.status in RESTING
            and not excluded(view, self.policy)
            and ownership(view, self.policy) is Ownership.OURS
        ):
            # One read serves both the status check and the snapshot: a resting session's
            # latest event is nearly always its status event.
            latest_event = await self.calls.latest_event(view.id)
            latest = await self.calls.latest_status_from(view.id, latest_event)
            if latest is not None:
                view = view_of(
                    session,
                    row,
                    pending_runs=pending,
                    pending_approvals=awaiting,
                    stop_reason=latest.stop_reason,
                    rested_at=latest.at,
                )
        return view, choose(view, self.policy, now), latest_event

    def _may_interrupt(self, view: SessionView) -> bool:
        owned = ownership(view, self.policy)
        return owned is Ownership.OURS or (
            owned is Ownership.UNOWNED and self.policy.include_unowned
        )

    def _store_facts(self, ids: Sequence[str]) -> "StoreFacts":
        waiting = approvals.count_pending_by_session(self.engine)
        return StoreFacts(
            tracked=reap_guards.tracked_sessions(self.engine, ids),
            pending_runs=reap_guards.unfinished_runs(self.engine, ids),
            pending_approvals={sid: n for sid, n in waiting.items() if sid in set(ids)},
        )

    # -- acting --------------------------------------------------------------------------

    async def execute(
        self,
        plan: Plan,
        *,
        dry_run: bool = False,
        progress: Callable[[int, int], None] | None = None,
    ) -> ReapReport:
        report = ReapReport(
            run_id=uuid.uuid4().hex,
            dry_run=dry_run,
            examined=plan.examined,
            billing_model=self.policy.pricing.model,
            kept=[replace(o, dry_run=dry_run) for o in plan.kept],
        )
        for kept in report.kept:
            # Every row in a dry run, which asked for them; a sweep every few minutes would
            # log each resting session each time, so a real run's are debug (and counted below).
            self._log(kept, quiet=not dry_run, run_id=report.run_id)
        total = len(plan.candidates)
        slots = asyncio.Semaphore(self.concurrency)
        done = 0

        async def act(candidate: Candidate) -> list[Outcome]:
            nonlocal done
            async with slots:
                outcomes = await self._act(candidate, dry_run)
                await asyncio.to_thread(self._record, report.run_id, outcomes)
            done += 1
            if progress is not None:
                progress(done, total)
            return outcomes

        for outcomes in await asyncio.gather(*(act(c) for c in plan.candidates)):
            report.outcomes.extend(outcomes)
        report.rate_limited = self.calls.rate_limited
        if not dry_run:
            metrics.REAPER_SAVING.labels(billing_model=report.billing_model).set(
                report.saving_usd_per_hour
            )
        log.info(
            "reaper.done",
            run_id=report.run_id,
            dry_run=dry_run,
            examined=report.examined,
            acted=len(report.outcomes),
            kept=len(report.kept),
            kept_by_reason=report.kept_by_reason,
            ok=report.ok,
            billing_model=report.billing_model,
            saving_usd_per_hour=round(report.saving_usd_per_hour, 4),
        )
        return report

    async def _act(self, candidate: Candidate, dry_run: bool) -> list[Outcome]:
        view, verdict = await self._refresh_guards(candidate.view), candidate.verdict
        block = blocker(view, verdict, self.policy)
        if block is not None:
            return [self._outcome(view, ReaperActionKind.SKIPPED, block, dry_run)]
        if dry_run:
            return self._preview(view, verdict)
        try:
            if verdict.action is Action.INTERRUPT:
                session = await self.calls.retrieve(view.id)
                if str(session.status) not in BUSY:  # it stopped by itself meanwhile
                    return [self._outcome(view, ReaperActionKind.SKIPPED, Block.CHANGED, False)]
                return await self._interrupt_then_reap(view, verdict)
            # Whatever changes a resting session adds an event to it (a new turn its user and
            # status events, an update its `session.updated`), so an unchanged latest event id
            # is an unchanged session: one call where a retrieve plus an event read were two.
            if await self.calls.last_event_id(view.id) != candidate.snapshot.last_event_id:
                return [self._outcome(view, ReaperActionKind.SKIPPED, Block.CHANGED, False)]
            return await self._archive_and_delete(view, verdict)
        except anthropic.NotFoundError:
            await asyncio.to_thread(self._mark_deleted, view.id)
            return [self._outcome(view, ReaperActionKind.SKIPPED, GONE, False)]
        except Exception as exc:  # one session's trouble must not stop the run
            return [self._failure(view, verdict.reason, exc)]

    def _preview(self, view: SessionView, verdict: Verdict) -> list[Outcome]:
        saving = saving_per_hour(view, verdict, self.policy)
        if verdict.action is Action.INTERRUPT:
            return [
                self._outcome(
                    view, ReaperActionKind.INTERRUPTED, verdict.reason, True, saving=saving
                )
            ]
        outcomes = []
        if needs_archive(view, verdict, self.policy):
            outcomes.append(self._outcome(view, ReaperActionKind.ARCHIVED, verdict.reason, True))
        outcomes.append(
            self._outcome(view, ReaperActionKind.DELETED, verdict.reason, True, saving=saving)
        )
        return outcomes

    async def _interrupt_then_reap(self, view: SessionView, verdict: Verdict) -> list[Outcome]:
        """Stop the run, then judge the resting session as any other: past its deadline it
        goes at once; a runaway is kept for `idle_for` like a finished session (its result is
        archived by its idle webhook, or by us before any delete)."""
        # Recorded first, so the result archived off the coming idle says who stopped it.
        await asyncio.to_thread(
            SessionStore(self.engine).record_interrupt, view.id, str(verdict.reason), self.now()
        )
        await self.calls.interrupt(view.id)
        saving = saving_per_hour(view, verdict, self.policy)
        outcomes = [
            self._outcome(view, ReaperActionKind.INTERRUPTED, verdict.reason, False, saving=saving)
        ]
        try:
            session = await self._wait_until_resting(view.id)
            if session is None:
                return outcomes  # still busy: the next run deletes it once idle
            # Now idle: the same guards as any delete, with what the store knows by now. The
            # interrupt ended a turn, so only a save made after that covers the session.
            latest = await self.calls.latest_status(view.id)
            rested_at = latest.at if latest is not None else as_utc(session.updated_at)
            idle = await self._refresh_guards(
                replace(
                    view,
                    status=str(session.status),
                    updated_at=as_utc(session.updated_at),
                    rested_at=rested_at,
                    run_started_at=None,
                    stop_reason=latest.stop_reason if latest is not None else view.stop_reason,
                )
            )
            then = choose(idle, self.policy, self.now())
            if not isinstance(then, Verdict) or then.action is not Action.DELETE:
                return outcomes
            delete = Verdict(Action.DELETE, verdict.reason)
            block = blocker(idle, delete, self.policy)
            if block is not None:
                return [*outcomes, self._outcome(idle, ReaperActionKind.SKIPPED, block, False)]
            return outcomes + await self._archive_and_delete(idle, delete)
        except anthropic.NotFoundError:
            await asyncio.to_thread(self._mark_deleted, view.id)
            return [*outcomes, self._outcome(view, ReaperActionKind.SKIPPED, GONE, False)]
        except Exception as exc:  # keep the interrupt on record next to what went wrong
            return [*outcomes, self._failure(view, verdict.reason, exc)]

    async def _wait_until_resting(self, session_id: str) -> Any | None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.interrupt_wait_seconds
        while True:
            session = await self.calls.retrieve(session_id)
            if session.status in ("idle", "terminated"):
                return session
            if loop.time() >= deadline:
                return None
            await self.sleep(self.poll_seconds)

    async def _archive_and_delete(self, view: SessionView, verdict: Verdict) -> list[Outcome]:
        outcomes: list[Outcome] = []
        if needs_archive(view, verdict, self.policy):
            if self.archive is None:
                return [
                    self._outcome(view, ReaperActionKind.SKIPPED, Block.RESULT_NOT_SAVED, False)
                ]
            try:
                await self.archive(view.id)
            except Exception as exc:
                return [self._failure(view, "archive_failed", exc)]
            outcomes.append(self._outcome(view, ReaperActionKind.ARCHIVED, verdict.reason, False))
        try:
            await self.calls.delete(view.id)
        except anthropic.NotFoundError:
            await asyncio.to_thread(self._mark_deleted, view.id)
            return [*outcomes, self._outcome(view, ReaperActionKind.SKIPPED, GONE, False)]
        except anthropic.APIStatusError as exc:
            if 400 <= exc.status_code < 500:
                # The API said no (e.g. the session started running again): try next run.
                outcomes.append(
                    self._outcome(
                        view,
                        ReaperActionKind.REFUSED,
                        verdict.reason,
                        False,
                        error=f"{exc.status_code}: {_api_message(exc)}",
                    )
                )
                return outcomes
            raise
        await asyncio.to_thread(self._mark_deleted, view.id)
        saving = saving_per_hour(view, verdict, self.policy)
        outcomes.append(
            self._outcome(view, ReaperActionKind.DELETED, verdict.reason, False, saving=saving)
        )
        return outcomes

    async def _refresh_guards(self, view: SessionView) -> SessionView:
        """The store's side of a view, read again: handlers may have run since the plan."""
        facts = await asyncio.to_thread(self._store_facts, [view.id])
        saved = saved_since(facts.tracked.get(view.id), view.rested_at)
        return replace(
            view,
            pending_runs=facts.pending_runs.get(view.id, 0),
            pending_approvals=facts.pending_approvals.get(view.id, 0),
            result_saved=saved,
        )

    # -- recording -----------------------------------------------------------------------

    def _outcome(
        self,
        view: SessionView,
        action: ReaperActionKind,
        reason: str,
        dry_run: bool,
        *,
        saving: float = 0.0,
        error: str | None = None,
    ) -> Outcome:
        """One action (done, or with `dry_run` what would be), logged as `reaper.<action>`."""
        if dry_run:
            action = _WOULD.get(action, action)
        detail = explain(view, reason, self.policy, self.now())
        outcome = Outcome(view.id, action, str(reason), dry_run, view.status, saving, error, detail)
        self._log(outcome)
        return outcome

    def _kept(self, view: SessionView, kept: Kept) -> Outcome:
        return Outcome(
            view.id, ReaperActionKind.KEPT, str(kept.reason), False, view.status, detail=kept.detail
        )

    def _log(self, o: Outcome, *, quiet: bool = False, **extra: Any) -> None:
        """`reaper.deleted`, `reaper.would_delete`, `reaper.kept`, ...: the event says what
        happened. `quiet` logs at debug level."""
        level = log.warning if o.failed else log.debug if quiet else log.info
        level(
            f"reaper.{o.action}",
            session_id=o.session_id,
            reason=o.reason,
            detail=o.detail,
            status=o.status,
            dry_run=o.dry_run,
            billing_model=self.policy.pricing.model,
            saving_usd_per_hour=o.saving_usd_per_hour,
            error=o.error,
            **extra,
        )

    def _failure(self, view: SessionView, reason: str, exc: Exception) -> Outcome:
        log.error("reaper.failed", session_id=view.id, reason=reason, error=type(exc).__name__)
        error = (
            f"{exc.status_code}: {_api_message(exc)}"
            if isinstance(exc, anthropic.APIStatusError)
            else type(exc).__name__
        )
        return Outcome(view.id, ReaperActionKind.FAILED, reason, False, view.status, 0.0, error)

    def _mark_deleted(self, session_id: str) -> None:
        """Kept even for a session idlehook never tracked: the reaper acted on it."""
        SessionStore(self.engine).mark_deleted(session_id, self.now(), track_untracked=True)

    def _record(self, run_id: str, outcomes: Sequence[Outcome]) -> None:
        at = self.now()
        reaper_actions.record(
            self.engine,
            [
                ReaperAction(
                    run_id=run_id,
                    session_id=o.session_id,
                    action=str(o.action),
                    reason=o.reason,
                    dry_run=o.dry_run,
                    at=at,
                    error=o.error,
                    est_saving_usd_per_hour=o.saving_usd_per_hour,
                )
                for o in outcomes
            ],
        )
        for o in outcomes:
            if not o.dry_run:
                metrics.REAPER_ACTIONS.labels(action=str(o.action), reason=o.reason).inc()


def explain(view: SessionView, reason: str, policy: ReapPolicy, now: datetime) -> str | None:
    """The facts behind a reason, so a dry run can be checked before it is acted on."""
    if reason == Reason.MAX_RUNNING and view.run_started_at is not None:
        limit = max_running(view, policy)
        bound = f" > {span(limit)}" if limit is not None else ""
        return f"running {span(now - view.run_started_at)}{bound}"
    if reason == Reason.PAST_DEADLINE and view.deadline is not None:
        return f"deadline passed {span(now - view.deadline)} ago"
    if reason in (Reason.HANDLED, Reason.IDLE_PAST_GRACE, Reason.BUDGET_REACHED):
        kept = idle_for(view, policy)
        return f"idle {span(now - view.last_activity)} >= {span(kept)}"
    held = _HELD.get(reason)
    return held(view) if held is not None else None


# Why a chosen session was held back, in words (a skipped row's detail).
_HELD: dict[str, Callable[[SessionView], str | None]] = {
    Block.PENDING_HANDLERS: lambda v: f"{v.pending_runs} handler runs not finished",
    Block.AWAITING_APPROVAL: lambda v: f"{v.pending_approvals} tool calls awaiting a person",
    Block.RESULT_NOT_SAVED: lambda v: "no route saved its result, and nothing here archives it",
    Block.CHANGED: lambda v: "changed since it was chosen: judged again next run",
    Block.STILL_RUNNING: lambda v: "running again",
}


def _api_message(exc: anthropic.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])[:300]
    return type(exc).__name__
