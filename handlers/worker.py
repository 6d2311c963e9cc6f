"""The worker loop: claim runs under a lease, route or call the plugin, complete (lease-fenced).

Concurrency is bounded by `Settings.worker.concurrency`; lanes keep one session's runs serial
(the claim query sees to that). Database calls run in threads so the event loop keeps serving.
"""

import asyncio
import collections
import contextlib
import dataclasses
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

import anthropic
import structlog
from anthropic import AsyncAnthropic

from handlers import metrics
from handlers.api import HandlerContext, Notification, PriorRun
from handlers.config import HandlerSettings
from handlers.events import DELETED_TYPES, STATUS_TYPES, is_known
from handlers.marking import interruption_reader, session_marker
from handlers.plugin_config import shared_config
from handlers.reads import DeliveryReads
from handlers.redact import describe_error
from handlers.registry import Registry
from handlers.retry import PermanentError, next_attempt
from handlers.route_rules import candidate_rules
from handlers.routing import route_delivery
from handlers.spans import RunSpans
from handlers.twins import late_duplicate
from handlers.wakes import wake_reader
from store import delivered
from store.models import RunState, utcnow
from store.runs import ROUTE_HANDLER, ClaimedRun, DeliveryView, RunStore
from store.sessions import SessionStore, SessionUpdate

log = structlog.get_logger(__name__)

# A delivery's shared reads: kept for this long, and for this many recent deliveries.
READS_TTL_SECONDS = 60.0
READS_KEPT = 64
# After a failed claim (the store is down), the next try comes this much later.
CLAIM_RETRY_SECONDS = 1.0
# How long each plugin's `aclose` may take when the worker stops (all close at once): a broker
# that does not answer must not hold up a shutdown that serve ends with SIGKILL after 20 s
# (idlehook/supervise.py), and the process's exit drops whatever is still open.
PLUGIN_CLOSE_SECONDS = 5.0


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def _notification(delivery: DeliveryView) -> Notification:
    return Notification(
        delivery_id=delivery.id,
        event_id=delivery.event_id,
        event_type=delivery.event_type,
        resource_id=delivery.resource_id,
        session_id=delivery.session_id,
        source=delivery.source,
        received_at=delivery.received_at,
        event_created_at=delivery.event_created_at,
    )


class Worker:
    def __init__(
        self,
        store: RunStore,
        registry: Registry,
        client: AsyncAnthropic,
        settings: HandlerSettings,
        *,
        now: Callable[[], datetime] = utcnow,
        worker_id: str | None = None,
        sessions: SessionStore | None = None,
        close_plugins: bool = True,
    ) -> None:
        self.store = store
        self.sessions = sessions or SessionStore(store.engine)
        self.registry = registry
        self.client = client
        self.settings = settings
        self.now = now
        self.worker_id = worker_id or default_worker_id()
        # False: whoever built the worker closes the plugins itself (`close_plugins()`), as
        # idlehook.testing's harness does once after many `run(drain=True)`.
        self._closes_plugins = close_plugins
        self._mark = session_marker(self.sessions, now)
        self._interruption = interruption_reader(self.sessions)
        self._woken = wake_reader(store.engine)
        self._shared = shared_config(settings)
        self.lease = timedelta(seconds=settings.worker.lease_seconds)
        self._stopping = asyncio.Event()
        self._wakeup = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._inflight: set[asyncio.Task[None]] = set()
        # Each recent delivery's shared reads (handlers.api.DeliveryReads), oldest first.
        self._reads: collections.OrderedDict[int, tuple[float, DeliveryReads]] = (
            collections.OrderedDict()
        )
        # Each run's span (`[tracing]`); the recent routing spans, parents of their handlers'.
        self._spans = RunSpans(READS_KEPT)
        unknown = {h for rule in settings.routes for h in rule.handlers} - set(registry.names())
        if unknown:
            log.warning("worker.routes_name_missing_handlers", handlers=sorted(unknown))

    # -- control ----------------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop claiming; in-flight runs finish. Safe from a signal handler or another thread."""
        self._call(self._stopping.set)

    def wake(self) -> None:
        """New work was stored: claim now instead of at the next poll."""
        self._call(self._wakeup.set)

    def _call(self, fn: Callable[[], None]) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            fn()
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            fn()
        else:
            loop.call_soon_threadsafe(fn)

    @property
    def in_flight(self) -> int:
        return len(self._inflight)

    # -- the loop ---------------------------------------------------------------------------------

    async def run(self, drain: bool = False) -> None:
        """Claim and dispatch until `stop()`; with `drain`, return once nothing is claimable and
        nothing is in flight (runs waiting for a later retry are left for the next worker)."""
        self._loop = asyncio.get_running_loop()
        self._stopping.clear()
        limit = self.settings.worker.concurrency
        log.info("worker.started", worker_id=self.worker_id, concurrency=limit, drain=drain)
        try:
            while not self._stopping.is_set():
                self._wakeup.clear()
                free = limit - len(self._inflight)
                claimed: list[ClaimedRun] = []
                if free > 0:
                    try:
                        claimed = await asyncio.to_thread(
                            self.store.claim, self.worker_id, self.now(), self.lease, free
                        )
                    except Exception as exc:
                        if drain:
                            raise  # a batch run says so and exits
                        # The store is down: a long-lived worker (inside `serve`, where nothing
                        # would restart it) waits it out and claims again.
                        log.warning(
                            "worker.claim_failed",
                            worker_id=self.worker_id,
                            error=describe_error(exc),
                        )
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(self._stopping.wait(), CLAIM_RETRY_SECONDS)
                        continue
                for run in claimed:
                    metrics.CLAIMS.inc()
                    task = asyncio.create_task(self._execute(run))
                    self._inflight.add(task)
                    task.add_done_callback(self._finished)
                if claimed:
                    continue  # there may be more: claim again before sleeping
                # A run that finished during the claim may have unblocked its lane's next one:
                # `_wakeup` (cleared before the claim) says so; look again before leaving.
                if drain and not self._inflight and not self._wakeup.is_set():
                    return
                await self._idle()
        finally:
            if self._inflight:
                await asyncio.gather(*self._inflight, return_exceptions=True)
            if self._closes_plugins:
                await self.close_plugins()  # after the last run: none of them is in use
            log.info("worker.stopped", worker_id=self.worker_id)

    async def close_plugins(self) -> None:
        """Await each plugin's optional `aclose()` (handlers/api.py), all at once, each within
        `PLUGIN_CLOSE_SECONDS`. A failure or a timeout is logged, never raised: one plugin must
        not keep the others open, nor turn a clean stop into a crash. `run` calls it once its
        in-flight runs have finished, unless the worker was built with `close_plugins=False`."""
        closers = [
            (name, close)
            for name in self.registry.names()
            if callable(close := getattr(self.registry.get(name), "aclose", None))
        ]
        if closers:
            await asyncio.gather(*(self._close_one(name, close) for name, close in closers))

    async def _close_one(self, name: str, close: Callable[[], Awaitable[None]]) -> None:
        try:
            await asyncio.wait_for(close(), PLUGIN_CLOSE_SECONDS)
        except TimeoutError:
            log.warning("worker.plugin_close_timeout", handler=name, seconds=PLUGIN_CLOSE_SECONDS)
        except asyncio.CancelledError:
            # A plugin's own cancellation (its client cancelled a task it awaited): the stop
            # goes on. The worker's own cancellation still arrives at its next await.
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
            log.warning("worker.plugin_close_failed", handler=name, error="cancelled")
        except Exception as exc:
            log.warning("worker.plugin_close_failed", handler=name, error=describe_error(exc))

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        # A finished run may unblock the next one in its lane.
        self._wakeup.set()

    async def _idle(self) -> None:
        waits = [
            asyncio.create_task(self._wakeup.wait()),
            asyncio.create_task(self._stopping.wait()),
        ]
        try:
            await asyncio.wait(
                waits, timeout=self.settings.worker.poll_seconds, return_when="FIRST_COMPLETED"
            )
        finally:
            for waiter in waits:
                waiter.cancel()

    # -- one run ----------------------------------------------------------------------------------

    async def _execute(self, run: ClaimedRun) -> None:
        # The worker's id too: with several workers on one store, which one ran it.
        bound = log.bind(
            run_id=run.id,
            handler=run.handler,
            lane=run.lane,
            attempt=run.attempts,
            worker_id=self.worker_id,
        )
        started = time.monotonic()
        work = asyncio.create_task(self._attempt(run, bound))
        keeper = asyncio.create_task(self._keep_lease(run, bound))
        try:
            await asyncio.wait({work, keeper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            keeper.cancel()
            # The lease is gone (or we are being cancelled): the run's next owner redoes it, so
            # this attempt must stop causing side effects now.
            work.cancel()
            await asyncio.gather(work, keeper, return_exceptions=True)
        if work.cancelled():
            self._observe(run, started, "lease_lost", bound)
            return
        try:
            handlers, decision = work.result()
            if run.handler == ROUTE_HANDLER:
                done = await asyncio.to_thread(
                    self.store.complete_route,
                    run.id,
                    self.worker_id,
                    self.now(),
                    _ms(started),
                    handlers,
                    attempt=run.attempts,
                    decision=decision,
                )
            else:
                done = await asyncio.to_thread(
                    self.store.succeed,
                    run.id,
                    self.worker_id,
                    self.now(),
                    _ms(started),
                    attempt=run.attempts,
                )
            self._observe(run, started, "succeeded" if done else "lease_lost", bound)
        except Exception as exc:
            await self._failed(run, exc, started, bound)

    async def _attempt(self, run: ClaimedRun, bound: Any) -> tuple[list[str], str | None]:
        """Route (the handlers to add, and the decision kept on the run for `reroute
        --unmatched`) or call the plugin (nothing to add); raise to fail."""
        if run.attempts > self.settings.worker.max_attempts:
            raise PermanentError("lease expired on the last attempt (worker died?)")
        delivery = await asyncio.to_thread(self.store.delivery, run.delivery_id)
        with self._spans.run(run.handler, delivery, run.attempts):
            if run.handler == ROUTE_HANDLER:
                return await self._route(delivery, bound)
            await self._call_plugin(run, delivery, bound)
            return [], None

    async def _route(self, delivery: DeliveryView, bound: Any) -> tuple[list[str], str]:
        if delivery.event_type not in DELETED_TYPES and await self._deleted(delivery.session_id):
            # A late notification about a session already deleted: every handler would 404.
            metrics.NOTIFICATIONS.labels(
                event_type=delivery.event_type if is_known(delivery.event_type) else "unknown",
                decision="session_deleted",
            ).inc()
            bound.info(
                "notification.session_deleted",
                event_id=delivery.event_id,
                session_id=delivery.session_id,
            )
            return [], "session_deleted"
        # A transition no rule wants runs nothing either way: no call to tell twins apart.
        wanted = bool(candidate_rules(self.settings.routes, delivery.event_type))
        if wanted and await late_duplicate(
            self.client,
            self.store.engine,
            session_id=delivery.session_id,
            event_type=delivery.event_type,
            event_id=delivery.event_id,
            source=delivery.source,
        ):
            # The reconciler already delivered this transition; the handlers saw it then.
            metrics.NOTIFICATIONS.labels(
                event_type=delivery.event_type, decision="late_duplicate"
            ).inc()
            bound.info("notification.late_duplicate", event_id=delivery.event_id)
            return [], "late_duplicate"
        outcome = await route_delivery(
            delivery,
            self.settings.routes,
            self.client,
            self.now(),
            self.settings.pricing(),
            # Read afresh on every routing attempt; its handlers share what it read.
            reads=self._reads_for(delivery.id, fresh=True),
        )
        if outcome.update is not None and delivery.session_id is not None:
            update = outcome.update
            if not outcome.fetched and update.status is not None:
                update = await asyncio.to_thread(self._unless_superseded, delivery, update)
            await asyncio.to_thread(self.sessions.record, delivery.session_id, update, self.now())
        known = is_known(delivery.event_type)
        metrics.NOTIFICATIONS.labels(
            event_type=delivery.event_type if known else "unknown",
            decision=outcome.decision.reason,
        ).inc()
        bound.info(
            "notification.routed",
            event_id=delivery.event_id,
            event_type=delivery.event_type,
            session_id=delivery.session_id,
            known_type=known,
            decision=outcome.decision.reason,
            rules=list(outcome.decision.rules),
            handlers=list(outcome.decision.handlers),
            session_status=outcome.facts.status if outcome.facts else None,
            stop_reason=outcome.facts.stop_reason if outcome.facts else None,
            session_gone=outcome.session_gone,
        )
        return list(outcome.decision.handlers), outcome.decision.reason

    def _unless_superseded(self, delivery: DeliveryView, update: SessionUpdate) -> SessionUpdate:
        """A status implied by a notification (nothing fetched) is news only while no status
        notification of a later transition (by the API's event time) is stored. Routed late
        behind a backlog, a run start must not mark busy a session that has rested since (its
        idle stored, not yet routed): the reconciler would take it for a wake and spend a read
        on it. A late retry of an older webhook is stored later but is no such news."""
        assert delivery.session_id is not None
        created = delivery.event_created_at
        if created is not None and delivered.newer_delivery(
            self.store.engine, delivery.session_id, created, STATUS_TYPES
        ):
            return dataclasses.replace(update, status=None)
        return update

    def _reads_for(self, delivery_id: int, fresh: bool = False) -> DeliveryReads:
        """The reads this delivery's routing and earlier handlers made here, if recent; else
        new ones (always new with `fresh`).

        Bounded in number and age: a retry minutes later reads afresh, and a worker holds the
        transcripts of a few deliveries at a time, not of every session it has seen."""
        now = time.monotonic()
        made, reads = self._reads.pop(delivery_id, (now, DeliveryReads()))
        if fresh or now - made >= READS_TTL_SECONDS:
            made, reads = now, DeliveryReads()
        self._reads[delivery_id] = (made, reads)
        while len(self._reads) > READS_KEPT:
            self._reads.popitem(last=False)
        return reads

    async def _call_plugin(self, run: ClaimedRun, delivery: DeliveryView, bound: Any) -> None:
        handler = self.registry.get(run.handler)
        if handler is None:
            raise PermanentError(f"no handler named {run.handler!r} is installed or allowed")
        prior = await asyncio.to_thread(self.store.prior_runs, run.delivery_id, run.position)
        ctx = HandlerContext(
            event=_notification(delivery),
            client=self.client,
            log=bound.bind(event_id=delivery.event_id, session_id=delivery.session_id),
            now=self.now,
            config=self._shared,  # never Settings: plugins see nothing secret of idlehook's
            handler=run.handler,
            attempt=run.attempts,
            prior_runs=[
                PriorRun(handler=p.handler, state=p.state, reads_only=self._reads_only(p.handler))
                for p in prior
            ],
            mark=self._mark,
            reads=self._reads_for(run.delivery_id),
            interruption=self._interruption,
            woken=self._woken,
        )
        try:
            await handler.handle(ctx)
        except anthropic.NotFoundError:
            if not await self._deleted(delivery.session_id):
                raise
            # Deleted since routing (the reaper, or an earlier delete run): nothing left to do.
            bound.info("run.session_deleted", session_id=delivery.session_id)

    def _reads_only(self, name: str) -> bool:
        """Whether the run named `name` never acts on the session (the routing step only reads)."""
        if name == ROUTE_HANDLER:
            return True
        return bool(getattr(self.registry.get(name), "reads_only", False))

    async def _deleted(self, session_id: str | None) -> bool:
        """Whether the tracked session is recorded as deleted."""
        if session_id is None:
            return False
        tracked = await asyncio.to_thread(self.sessions.get, session_id)
        return tracked is not None and tracked.deleted_at is not None

    async def _failed(self, run: ClaimedRun, exc: Exception, started: float, bound: Any) -> None:
        now = self.now()
        retry_at = next_attempt(run.attempts, exc, now, self.settings.worker)
        error = describe_error(exc)
        state = await asyncio.to_thread(
            self.store.fail,
            run.id,
            self.worker_id,
            now,
            error,
            retry_at,
            _ms(started),
            attempt=run.attempts,
        )
        if state is None:
            self._observe(run, started, "lease_lost", bound)
            return
        if state is RunState.DEAD:
            metrics.DEAD_LETTERS.labels(handler=run.handler).inc()
            bound.error("run.dead", error=error, exc_info=not isinstance(exc, PermanentError))
        else:
            metrics.RETRIES.labels(handler=run.handler).inc()
            bound.warning("run.failed", error=error, retry_at=retry_at)
        self._observe(run, started, state.value, bound, log_it=False)

    def _observe(
        self, run: ClaimedRun, started: float, outcome: str, bound: Any, log_it: bool = True
    ) -> None:
        elapsed = time.monotonic() - started
        metrics.RUNS.labels(handler=run.handler, outcome=outcome).inc()
        metrics.DURATION.labels(handler=run.handler).observe(elapsed)
        if outcome == "lease_lost":
            metrics.LEASES_LOST.inc()
            bound.warning("run.lease_lost", detail="completion discarded; another worker owns it")
        elif log_it:
            bound.info("run.succeeded", duration_ms=round(elapsed * 1000, 1))

    async def _keep_lease(self, run: ClaimedRun, bound: Any) -> None:
        """Renew the lease until cancelled; return once it is lost: renewal refused, or the
        store unreachable until the lease ran out (someone else may hold the run by then)."""
        interval = self.lease.total_seconds() / 3
        expires = run.lease_expires_at
        while True:
            left = (expires - self.now()).total_seconds()
            await asyncio.sleep(max(0.0, min(interval, left)))
            now = self.now()
            try:
                held = await asyncio.to_thread(
                    self.store.renew, run.id, self.worker_id, now, self.lease, attempt=run.attempts
                )
            except Exception as exc:
                if self.now() >= expires:
                    bound.warning("run.lease_expired", error=describe_error(exc))
                    return
                bound.warning("run.lease_renewal_error", error=describe_error(exc))
                continue
            if not held:
                bound.warning("run.lease_renewal_refused")
                return
            expires = now + self.lease


def _ms(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 3)
