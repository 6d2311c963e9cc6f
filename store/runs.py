"""The run queue: claim under a lease, renew, complete (fenced by the lease), retry; and the
operator's recovery: re-route a delivery, discard a dead letter.

Every write after the claim is fenced by (owner, attempt): one worker id serves all of a
worker's tasks and may re-claim its own expired run, so the owner alone cannot tell a stale
attempt from the live one, while `attempts` goes up on every claim.

A run is claimable when it is due and it is the first unfinished run of its lane, ordered by
(delivery_id, position), and no other run of the lane holds a live lease. So one session's runs
go one at a time and in order, while different lanes run in parallel.

PostgreSQL: candidates are locked with `FOR UPDATE SKIP LOCKED`, then each lane is fenced with a
transaction-scoped advisory lock and re-checked, so concurrent claimers on several machines never
take two runs of one lane even when deliveries commit out of id order. SQLite: the engine opens
every transaction with `BEGIN IMMEDIATE`, which serialises claimers outright.

Re-routing (`reroute`, and `replay`, which re-routes a dead letter's delivery) adds a new
`_route` run to the delivery, one `generation` up, after every run it has (position: the
delivery's highest + 1): the lane runs it after the delivery's earlier runs and before later
deliveries' unfinished ones, and its handlers land behind it in the same generation. The key is
(delivery_id, handler, generation): two re-routes of one delivery at once collide on it, and one
loses. A handler that already succeeded for the delivery (or was discarded) is not added again,
so a re-route never repeats work done; its dead letters are superseded by the new routing.
"""

import dataclasses
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from store.engine import is_sqlite
from store.models import TRACEPARENT, Delivery, HandlerRun, RunState, TrackedSession

# The worker's routing step, queued behind each new delivery (store/ingest.py): bookkeeping,
# not a plugin. The one definition; the ingest SQL, the worker and the page import it.
ROUTE_HANDLER = "_route"

_runs = HandlerRun.__table__  # type: ignore[attr-defined]
_deliveries = Delivery.__table__  # type: ignore[attr-defined]
_sessions = TrackedSession.__table__  # type: ignore[attr-defined]
_UNFINISHED = [RunState.PENDING.value, RunState.RUNNING.value, RunState.FAILED.value]
_WAITING = [RunState.PENDING.value, RunState.FAILED.value]
# A re-route does not add a handler again whose run for the delivery is done or still to come.
_NOT_AGAIN = [RunState.SUCCEEDED.value, RunState.DISCARDED.value, *_UNFINISHED]
# The decision of a routing that added no handler, recorded before migration 0011.
UNRECORDED_NOTHING = "nothing (unrecorded)"


@dataclass(frozen=True)
class ClaimedRun:
    id: int
    delivery_id: int
    lane: str
    position: int
    handler: str
    attempts: int  # including the attempt this claim starts
    lease_expires_at: datetime


@dataclass(frozen=True)
class DeliveryView:
    id: int
    event_id: str
    event_type: str
    resource_id: str
    session_id: str | None
    source: str
    received_at: datetime
    event_created_at: datetime | None
    # The W3C trace context of the webhook's receipt (kept headers' `traceparent`, set only
    # when the receiver traced it): the worker's spans continue that trace.
    traceparent: str | None = None


@dataclass(frozen=True)
class PriorRun:
    handler: str
    position: int
    state: str


@dataclass(frozen=True)
class DeadLetter:
    id: int
    handler: str
    lane: str
    event_id: str
    event_type: str
    attempts: int
    last_error: str | None
    finished_at: datetime | None


RerouteOutcome = Literal["rerouted", "would_reroute", "busy", "unrouted"]


@dataclass(frozen=True)
class DeadRun:
    """A dead letter with its delivery, as recovery lists, replays and discards them."""

    id: int
    delivery_id: int
    handler: str
    lane: str
    session_id: str | None
    event_id: str
    event_type: str
    attempts: int
    last_error: str | None
    finished_at: datetime | None


@dataclass(frozen=True)
class Reroute:
    """One delivery's re-route: what its latest routing decided, and what happened now."""

    delivery_id: int
    event_id: str
    event_type: str
    session_id: str | None
    received_at: datetime
    decision: str | None  # the latest routing's, before this re-route
    runs: tuple[str, ...]  # that routing's handler runs, "name:state"
    outcome: RerouteOutcome
    route_run_id: int | None = None  # the new `_route` run
    superseded: tuple[int, ...] = ()  # dead letters it replaced


@dataclass(frozen=True)
class QueueStatus:
    unfinished: int
    runs_by_state: dict[str, int]
    dead_letters: list[DeadLetter]
    sessions_by_status: dict[str, int] = field(default_factory=dict)


def _lane_free(now: datetime) -> Any:
    """No earlier unfinished run in the lane, and no live lease on another of its runs."""
    other = _runs.alias("other")
    earlier_unfinished = (
        sa.select(sa.literal(1))
        .where(
            other.c.lane == _runs.c.lane,
            other.c.state.in_(_UNFINISHED),
            # A row value, not an OR: one range on the index (lane, state, delivery_id,
            # position); the OR read every unfinished run of the lane, for every candidate.
            sa.tuple_(other.c.delivery_id, other.c.position)
            < sa.tuple_(_runs.c.delivery_id, _runs.c.position),
        )
        .exists()
    )
    live_elsewhere = (
        sa.select(sa.literal(1))
        .where(
            other.c.lane == _runs.c.lane,
            other.c.id != _runs.c.id,
            other.c.state == RunState.RUNNING.value,
            other.c.lease_expires_at > now,
        )
        .exists()
    )
    return sa.and_(~earlier_unfinished, ~live_elsewhere)


def _claimable(now: datetime) -> Any:
    """The claim predicate over `handler_runs` (the outer, unaliased table)."""
    due = sa.or_(
        sa.and_(_runs.c.state.in_(_WAITING), _runs.c.next_attempt_at <= now),
        # A worker that died keeps its lease until it expires; then anyone may take the run.
        sa.and_(_runs.c.state == RunState.RUNNING.value, _runs.c.lease_expires_at <= now),
    )
    return sa.and_(due, _lane_free(now))


def _due_by_state(now: datetime) -> list[Any]:
    """`_claimable` as one query per state, each walking ix_handler_runs_claim (state,
    next_attempt_at, id) in claim order, so a LIMIT stops the walk at the first runs that
    qualify. Over one OR'd query SQLite tested every due run of the backlog and sorted them:
    100-500 ms under the write lock with 50,000 runs waiting (bench/serve_acks.py)."""
    free = _lane_free(now)
    waiting = [
        sa.and_(_runs.c.state == state, _runs.c.next_attempt_at <= now, free) for state in _WAITING
    ]
    expired = sa.and_(
        _runs.c.state == RunState.RUNNING.value, _runs.c.lease_expires_at <= now, free
    )
    return [*waiting, expired]


def _unique(handlers: Sequence[str]) -> list[str]:
    return [h for i, h in enumerate(handlers) if h not in handlers[:i] and h != ROUTE_HANDLER]


class RunStore:
    """Every write to `handler_runs`; each method is one short transaction (call from a thread)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # -- claiming -------------------------------------------------------------------------------

    def claim(
        self, owner: str, now: datetime, lease: timedelta, limit: int = 1
    ) -> list[ClaimedRun]:
        if limit < 1:
            return []
        with self.engine.begin() as conn:
            if is_sqlite(self.engine):
                ids = self._candidates(conn, now, limit, lock=False)
            else:
                ids = self._fenced_candidates(conn, now, limit)
            if not ids:
                return []
            expires = now + lease
            conn.execute(
                _runs.update()
                .where(_runs.c.id.in_(ids))
                .values(
                    state=RunState.RUNNING.value,
                    lease_owner=owner,
                    lease_expires_at=expires,
                    attempts=_runs.c.attempts + 1,
                    updated_at=now,
                )
            )
            rows = conn.execute(
                sa.select(
                    _runs.c.id,
                    _runs.c.delivery_id,
                    _runs.c.lane,
                    _runs.c.position,
                    _runs.c.handler,
                    _runs.c.attempts,
                ).where(_runs.c.id.in_(ids))
            ).all()
        by_id = {row.id: row for row in rows}
        return [
            ClaimedRun(
                id=r.id,
                delivery_id=r.delivery_id,
                lane=r.lane,
                position=r.position,
                handler=r.handler,
                attempts=r.attempts,
                lease_expires_at=expires,
            )
            for r in (by_id[i] for i in ids)
        ]

    def _candidates(self, conn: Connection, now: datetime, limit: int, lock: bool) -> list[int]:
        columns = (_runs.c.id, _runs.c.lane, _runs.c.next_attempt_at)
        order = (_runs.c.next_attempt_at, _runs.c.id)
        if lock:
            query = (
                sa.select(*columns)
                .where(_claimable(now))
                .order_by(*order)
                .limit(limit)
                .with_for_update(skip_locked=True, of=_runs)
            )
            found = list(conn.execute(query))
        else:
            found = []
            for where in _due_by_state(now):
                query = sa.select(*columns).where(where).order_by(*order).limit(limit)
                found.extend(conn.execute(query))
            found.sort(key=lambda row: (row.next_attempt_at, row.id))
        lanes: set[str] = set()
        ids: list[int] = []
        for row in found:
            if row.lane not in lanes:  # belt and braces: one run per lane per claim
                lanes.add(row.lane)
                ids.append(row.id)
        return ids[:limit]

    def _fenced_candidates(self, conn: Connection, now: datetime, limit: int) -> list[int]:
        """SKIP LOCKED alone cannot see another claimer's uncommitted run in the same lane; the
        lane advisory lock, held to commit, makes the re-check below see it once committed."""
        fenced: list[int] = []
        for run_id in self._candidates(conn, now, limit, lock=True):
            lane = conn.execute(sa.select(_runs.c.lane).where(_runs.c.id == run_id)).scalar_one()
            got = conn.execute(
                sa.select(sa.func.pg_try_advisory_xact_lock(sa.func.hashtext(lane)))
            ).scalar_one()
            if not got:
                continue
            still = conn.execute(
                sa.select(_runs.c.id).where(_runs.c.id == run_id, _claimable(now))
            ).first()
            if still is not None:
                fenced.append(run_id)
        return fenced

    def renew(
        self, run_id: int, owner: str, now: datetime, lease: timedelta, *, attempt: int
    ) -> bool:
        """Heartbeat: extend the lease; False when it was lost (the run went to someone else)."""
        with self.engine.begin() as conn:
            result = conn.execute(
                _runs.update()
                .where(*self._held(run_id, owner, attempt))
                .values(lease_expires_at=now + lease, updated_at=now)
            )
        return result.rowcount == 1

    # -- completion (every write is fenced by the lease) -------------------------------------------

    @staticmethod
    def _held(run_id: int, owner: str, attempt: int) -> tuple[Any, ...]:
        return (
            _runs.c.id == run_id,
            _runs.c.lease_owner == owner,
            _runs.c.attempts == attempt,
            _runs.c.state == RunState.RUNNING.value,
        )

    def succeed(
        self, run_id: int, owner: str, now: datetime, duration_ms: float, *, attempt: int
    ) -> bool:
        with self.engine.begin() as conn:
            return self._finish_succeeded(conn, run_id, owner, attempt, now, duration_ms)

    def _finish_succeeded(
        self,
        conn: Connection,
        run_id: int,
        owner: str,
        attempt: int,
        now: datetime,
        duration_ms: float,
    ) -> bool:
        result = conn.execute(
            _runs.update()
            .where(*self._held(run_id, owner, attempt))
            .values(
                state=RunState.SUCCEEDED.value,
                lease_owner=None,
                lease_expires_at=None,
                duration_ms=duration_ms,
                updated_at=now,
                finished_at=now,
            )
        )
        return result.rowcount == 1

    def complete_route(
        self,
        run_id: int,
        owner: str,
        now: datetime,
        duration_ms: float,
        handlers: Sequence[str],
        *,
        attempt: int,
        decision: str | None = None,
    ) -> bool:
        """Finish a routing run and add its handlers' runs right behind it (positions 1..n at
        ingest), atomically: the next delivery of the lane must not slip in between the two
        writes. A re-route's (generation > 0) skips handlers already done for the delivery."""
        with self.engine.begin() as conn:
            run = conn.execute(
                sa.select(
                    _runs.c.delivery_id,
                    _runs.c.lane,
                    _runs.c.created_at,
                    _runs.c.position,
                    _runs.c.generation,
                ).where(*self._held(run_id, owner, attempt))
            ).first()
            if run is None or not self._finish_succeeded(
                conn, run_id, owner, attempt, now, duration_ms
            ):
                return False
            if decision is not None:
                conn.execute(
                    _runs.update().where(_runs.c.id == run_id).values(decision=decision[:40])
                )
            existing = set(
                conn.execute(
                    sa.select(_runs.c.handler).where(
                        _runs.c.delivery_id == run.delivery_id,
                        sa.or_(_runs.c.generation == run.generation, _runs.c.state.in_(_NOT_AGAIN)),
                    )
                ).scalars()
            )
            rows = [
                {
                    "delivery_id": run.delivery_id,
                    "lane": run.lane,
                    "position": run.position + offset,
                    "generation": run.generation,
                    "handler": name,
                    "state": RunState.PENDING.value,
                    "attempts": 0,
                    # Due as of the delivery, not of its routing: claims take the oldest due
                    # first, so a routed delivery's handlers go ahead of the deliveries that
                    # came after it. In a burst each session is finished while its shared reads
                    # are fresh (handlers.reads), instead of every delivery routed first and
                    # every transcript read again by handlers run minutes later.
                    "next_attempt_at": min(run.created_at, now),
                    "created_at": now,
                    "updated_at": now,
                }
                for offset, name in enumerate(
                    [h for h in _unique(handlers) if h not in existing], start=1
                )
            ]
            if rows:
                conn.execute(_runs.insert(), rows)
        return True

    def fail(
        self,
        run_id: int,
        owner: str,
        now: datetime,
        error: str,
        retry_at: datetime | None,
        duration_ms: float,
        *,
        attempt: int,
    ) -> RunState | None:
        """Record a failed attempt: FAILED until `retry_at`, or DEAD when None. None: lease lost."""
        state = RunState.DEAD if retry_at is None else RunState.FAILED
        with self.engine.begin() as conn:
            result = conn.execute(
                _runs.update()
                .where(*self._held(run_id, owner, attempt))
                .values(
                    state=state.value,
                    lease_owner=None,
                    lease_expires_at=None,
                    last_error=error,
                    duration_ms=duration_ms,
                    next_attempt_at=retry_at or now,
                    updated_at=now,
                    finished_at=now if retry_at is None else None,
                )
            )
        return state if result.rowcount == 1 else None

    # -- reads ------------------------------------------------------------------------------------

    def delivery(self, delivery_id: int) -> DeliveryView:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(_deliveries).where(_deliveries.c.id == delivery_id)).one()
        return DeliveryView(
            id=row.id,
            event_id=row.event_id,
            event_type=row.event_type,
            resource_id=row.resource_id,
            session_id=row.session_id,
            source=row.source,
            received_at=row.received_at,
            event_created_at=row.event_created_at,
            traceparent=(row.headers or {}).get(TRACEPARENT),
        )

    def prior_runs(self, delivery_id: int, position: int) -> list[PriorRun]:
        """The runs before `position` for the same delivery, in order."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(_runs.c.handler, _runs.c.position, _runs.c.state)
                .where(
                    _runs.c.delivery_id == delivery_id,
                    _runs.c.position < position,
                    # Replaced by a re-route: its successor, if routed, is in the list instead.
                    _runs.c.state != RunState.SUPERSEDED.value,
                )
                .order_by(_runs.c.position)
            ).all()
        return [PriorRun(handler=r.handler, position=r.position, state=r.state) for r in rows]

    def get(self, run_id: int) -> HandlerRun:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(_runs).where(_runs.c.id == run_id)).one()
        return HandlerRun.model_validate(dict(row._mapping))

    def runs_for_delivery(self, delivery_id: int) -> list[HandlerRun]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(_runs)
                .where(_runs.c.delivery_id == delivery_id)
                .order_by(_runs.c.position)
            ).all()
        return [HandlerRun.model_validate(dict(r._mapping)) for r in rows]

    def runs_in_lane(self, lane: str) -> list[HandlerRun]:
        """A lane's runs (a session's lane is its id) in the order they run."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(_runs)
                .where(_runs.c.lane == lane)
                .order_by(_runs.c.delivery_id, _runs.c.position)
            ).all()
        return [HandlerRun.model_validate(dict(r._mapping)) for r in rows]

    def unfinished(self) -> int:
        with self.engine.connect() as conn:
            count = conn.execute(
                sa.select(sa.func.count()).where(_runs.c.state.in_(_UNFINISHED))
            ).scalar_one()
        return int(count)

    def status(self, dead_limit: int = 10) -> QueueStatus:
        with self.engine.connect() as conn:
            counted = conn.execute(
                sa.select(_runs.c.state, _runs.c.handler, sa.func.count()).group_by(
                    _runs.c.state, _runs.c.handler
                )
            ).all()
            # Handler runs only: a `_route` run is idlehook's routing step, which the page does
            # not count either (`idlehook status` shows them apart, store/intake_counts.py)...
            by_state: dict[str, int] = {}
            for state, handler, n in counted:
                if handler != ROUTE_HANDLER:
                    by_state[state] = by_state.get(state, 0) + int(n)
            # ...while the inbox depth counts every delivery not yet routed too.
            unfinished = sum(int(n) for state, _, n in counted if state in _UNFINISHED)
            dead = conn.execute(
                sa.select(
                    _runs.c.id,
                    _runs.c.handler,
                    _runs.c.lane,
                    _runs.c.attempts,
                    _runs.c.last_error,
                    _runs.c.finished_at,
                    _deliveries.c.event_id,
                    _deliveries.c.event_type,
                )
                .join(_deliveries, _deliveries.c.id == _runs.c.delivery_id)
                .where(_runs.c.state == RunState.DEAD.value)
                .order_by(_runs.c.updated_at.desc(), _runs.c.id.desc())
                .limit(dead_limit)
            ).all()
            sessions = {
                (row.status or "unknown"): int(row.n)
                for row in conn.execute(
                    sa.select(_sessions.c.status, sa.func.count().label("n")).group_by(
                        _sessions.c.status
                    )
                )
            }
        return QueueStatus(
            unfinished=unfinished,
            runs_by_state=by_state,
            dead_letters=[
                DeadLetter(
                    id=r.id,
                    handler=r.handler,
                    lane=r.lane,
                    event_id=r.event_id,
                    event_type=r.event_type,
                    attempts=r.attempts,
                    last_error=r.last_error,
                    finished_at=r.finished_at,
                )
                for r in dead
            ],
            sessions_by_status=sessions,
        )

    # -- operator actions: recovery (idlehook/cli/recovery.py, console/recovery_api.py) -----------

    def dead_runs(
        self,
        ids: Sequence[int] = (),
        handler: str | None = None,
        session_id: str | None = None,
        limit: int | None = None,
    ) -> list[DeadRun]:
        """Dead letters, oldest first (all of them when no filter is given)."""
        conditions: list[Any] = [_runs.c.state == RunState.DEAD.value]
        if ids:
            conditions.append(_runs.c.id.in_(list(ids)))
        if handler is not None:
            conditions.append(_runs.c.handler == handler)
        if session_id is not None:
            conditions.append(_deliveries.c.session_id == session_id)
        query = (
            sa.select(
                _runs.c.id,
                _runs.c.delivery_id,
                _runs.c.handler,
                _runs.c.lane,
                _runs.c.attempts,
                _runs.c.last_error,
                _runs.c.finished_at,
                _deliveries.c.session_id,
                _deliveries.c.event_id,
                _deliveries.c.event_type,
            )
            .join(_deliveries, _deliveries.c.id == _runs.c.delivery_id)
            .where(*conditions)
            .order_by(_runs.c.id)
        )
        if limit is not None:
            query = query.limit(limit)
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [
            DeadRun(
                id=r.id,
                delivery_id=r.delivery_id,
                handler=r.handler,
                lane=r.lane,
                session_id=r.session_id,
                event_id=r.event_id,
                event_type=r.event_type,
                attempts=r.attempts,
                last_error=r.last_error,
                finished_at=r.finished_at,
            )
            for r in rows
        ]

    def discard(
        self, runs: Sequence[DeadRun], now: datetime, *, by: str, reason: str
    ) -> list[DeadRun]:
        """Take dead letters off the list for good, keeping who, when and why. Only runs still
        dead are discarded (not one replayed meanwhile); those are returned."""
        if not reason.strip():
            raise ValueError("a reason is required to discard a dead letter")
        if not runs:
            return []
        with self.engine.begin() as conn:
            done = set(
                conn.execute(
                    _runs.update()
                    .where(
                        _runs.c.id.in_([r.id for r in runs]),
                        _runs.c.state == RunState.DEAD.value,
                    )
                    .values(
                        state=RunState.DISCARDED.value,
                        resolved_by=by[:200],
                        resolved_at=now,
                        resolution=reason.strip(),
                        updated_at=now,
                    )
                    .returning(_runs.c.id)
                ).scalars()
            )
        return [r for r in runs if r.id in done]

    def deliveries_to_reroute(
        self,
        *,
        session_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        unmatched: bool = False,
        event_types: Collection[str] | None = None,
        limit: int | None = None,
    ) -> list[int]:
        """Delivery ids, in lane order, that have been routed and match every filter given:
        the session's, received in [since, until), whose latest routing matched no rule, of
        these event types."""
        route = _runs.alias("route")
        conditions: list[Any] = [
            sa.exists().where(
                route.c.delivery_id == _deliveries.c.id, route.c.handler == ROUTE_HANDLER
            )
        ]
        if session_id is not None:
            conditions.append(_deliveries.c.session_id == session_id)
        if since is not None:
            conditions.append(_deliveries.c.received_at >= since)
        if until is not None:
            conditions.append(_deliveries.c.received_at < until)
        if unmatched:
            conditions.append(_unmatched(_deliveries.c.id))
        if event_types is not None:
            conditions.append(_deliveries.c.event_type.in_(sorted(event_types)))
        query = sa.select(_deliveries.c.id).where(*conditions).order_by(_deliveries.c.id)
        if limit is not None:
            query = query.limit(limit)
        with self.engine.connect() as conn:
            return [int(i) for i in conn.execute(query).scalars()]

    def reroute(
        self,
        delivery_ids: Sequence[int],
        now: datetime,
        *,
        by: str,
        note: str = "rerouted",
        dry_run: bool = False,
    ) -> list[Reroute]:
        """Route each delivery again through the current routes: a new `_route` run (the worker
        routes it and adds the handlers not already done), its dead letters superseded by it.
        A delivery with a run still to finish is left alone (`busy`): its routing is under way.
        One short transaction per delivery, in lane order."""
        out = []
        for delivery_id in sorted(set(delivery_ids)):
            try:
                with self.engine.begin() as conn:
                    out.append(self._reroute_one(conn, delivery_id, now, by, note, dry_run))
            except sa.exc.IntegrityError:
                # Another re-route of this delivery took the same generation first.
                out.append(self._reroute_view(delivery_id, "busy"))
        return out

    def replay(
        self,
        now: datetime,
        ids: Sequence[int] = (),
        handler: str | None = None,
        session_id: str | None = None,
        *,
        by: str = "replay",
    ) -> list[int]:
        """Re-route the deliveries of the dead letters chosen (all when no filter is given);
        the dead letters superseded, by id. The CLI and the page check the routes first."""
        chosen = self.dead_runs(ids, handler, session_id)
        done = self.reroute([r.delivery_id for r in chosen], now, by=by, note="replayed")
        return sorted(i for r in done for i in r.superseded)

    def _reroute_view(self, delivery_id: int, outcome: RerouteOutcome) -> Reroute:
        with self.engine.connect() as conn:
            return _describe(conn, delivery_id, outcome)

    def _reroute_one(
        self, conn: Connection, delivery_id: int, now: datetime, by: str, note: str, dry: bool
    ) -> Reroute:
        runs = conn.execute(
            sa.select(
                _runs.c.id,
                _runs.c.lane,
                _runs.c.position,
                _runs.c.generation,
                _runs.c.handler,
                _runs.c.state,
            ).where(_runs.c.delivery_id == delivery_id)
        ).all()
        routes = [r for r in runs if r.handler == ROUTE_HANDLER]
        if not routes:
            return _describe(conn, delivery_id, "unrouted")
        if any(r.state in _UNFINISHED for r in runs):
            return _describe(conn, delivery_id, "busy")
        if dry:
            return _describe(conn, delivery_id, "would_reroute")
        seen = _describe(conn, delivery_id, "rerouted")
        new_id = conn.execute(
            _runs.insert()
            .values(
                delivery_id=delivery_id,
                lane=routes[0].lane,
                position=max(r.position for r in runs) + 1,
                generation=max(r.generation for r in runs) + 1,
                handler=ROUTE_HANDLER,
                state=RunState.PENDING.value,
                attempts=0,
                next_attempt_at=now,
                created_at=now,
                updated_at=now,
            )
            .returning(_runs.c.id)
        ).scalar_one()
        superseded = [r.id for r in runs if r.state == RunState.DEAD.value]
        if superseded:
            conn.execute(
                _runs.update()
                .where(_runs.c.id.in_(superseded), _runs.c.state == RunState.DEAD.value)
                .values(
                    state=RunState.SUPERSEDED.value,
                    superseded_by=new_id,
                    resolved_by=by[:200],
                    resolved_at=now,
                    resolution=note,
                    updated_at=now,
                )
            )
        return dataclasses.replace(
            seen, route_run_id=int(new_id), superseded=tuple(sorted(superseded))
        )


def _unmatched(delivery_id: Any) -> Any:
    """The delivery's latest routing finished and matched no rule (or, routed before the
    decision was recorded, added no handler)."""
    route = _runs.alias("latest_route")
    later = _runs.alias("later_route")
    handler = _runs.alias("any_handler")
    no_later = ~(
        sa.select(sa.literal(1))
        .where(
            later.c.delivery_id == route.c.delivery_id,
            later.c.handler == ROUTE_HANDLER,
            later.c.generation > route.c.generation,
        )
        .exists()
    )
    no_handler = ~(
        sa.select(sa.literal(1))
        .where(handler.c.delivery_id == route.c.delivery_id, handler.c.handler != ROUTE_HANDLER)
        .exists()
    )
    return (
        sa.select(sa.literal(1))
        .where(
            route.c.delivery_id == delivery_id,
            route.c.handler == ROUTE_HANDLER,
            route.c.state == RunState.SUCCEEDED.value,
            no_later,
            sa.or_(route.c.decision == "no_rule", sa.and_(route.c.decision.is_(None), no_handler)),
        )
        .exists()
    )


def _describe(conn: Connection, delivery_id: int, outcome: RerouteOutcome) -> Reroute:
    """A delivery and its latest routing, as a re-route reports it."""
    d = conn.execute(
        sa.select(
            _deliveries.c.event_id,
            _deliveries.c.event_type,
            _deliveries.c.session_id,
            _deliveries.c.received_at,
        ).where(_deliveries.c.id == delivery_id)
    ).one()
    runs = conn.execute(
        sa.select(_runs.c.handler, _runs.c.state, _runs.c.generation, _runs.c.decision)
        .where(_runs.c.delivery_id == delivery_id)
        .order_by(_runs.c.position)
    ).all()
    routes = [r for r in runs if r.handler == ROUTE_HANDLER]
    latest = max((r.generation for r in routes), default=0)
    route = next((r for r in routes if r.generation == latest), None)
    # Every run of the delivery that counts now: a replaced one is history.
    handlers = [
        r for r in runs if r.handler != ROUTE_HANDLER and r.state != RunState.SUPERSEDED.value
    ]
    decision = None if route is None else route.decision
    if route is not None and route.state != RunState.SUCCEEDED.value:
        decision = f"routing {route.state}"
    elif route is not None and decision is None:
        latest_handlers = [r for r in runs if r.handler != ROUTE_HANDLER and r.generation == latest]
        decision = "matched (unrecorded)" if latest_handlers else UNRECORDED_NOTHING
    return Reroute(
        delivery_id=delivery_id,
        event_id=d.event_id,
        event_type=d.event_type,
        session_id=d.session_id,
        received_at=d.received_at,
        decision=decision,
        runs=tuple(f"{r.handler}:{r.state}" for r in handlers),
        outcome=outcome,
    )
