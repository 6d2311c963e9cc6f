"""The launch queue and its preflight cache, and the reads of the sessions it launched (their
rows are written by store/sessions.py, the one writer of `tracked_sessions`).

A launch row moves queued -> creating -> created, or back to queued for a retry, or to failed.
Workers claim rows under a lease; every later write is fenced on the lease token that claim wrote,
so a worker that lost its lease (it stalled, another took over) cannot overwrite the new owner's
outcome.
"""

import dataclasses
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.engine import CursorResult, Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from store import sessions as tracked_sessions
from store.engine import is_sqlite
from store.models import EnvironmentCheck, Launch, LaunchState, TrackedSession, utcnow
from store.sessions import Launched

UNFINISHED = (LaunchState.QUEUED, LaunchState.CREATING)
QUIET_STATUSES = ("idle", "terminated")


@dataclass(frozen=True)
class NewLaunch:
    idempotency_key: str
    request: dict[str, Any]


class LaunchStore:
    def __init__(self, engine: Engine, now: Callable[[], datetime] = utcnow) -> None:
        self.engine = engine
        self._now = now

    def _session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    # --- queue --------------------------------------------------------------------------------

    def add(self, launch: NewLaunch) -> tuple[Launch, bool]:
        """Insert a launch, or return the one holding its idempotency key (and False).

        A failed launch is re-queued with the new request. It keeps `outcome_unknown` and
        `first_attempt_at`: an unanswered create may have started a session after all, and the
        next attempt must look for it before creating another.
        """
        rows = self.add_many([launch])
        return rows[0]

    def add_many(self, launches: Sequence[NewLaunch]) -> list[tuple[Launch, bool]]:
        out: list[tuple[Launch, bool]] = []
        with self._session() as db:
            for item in launches:
                out.append(self._add_one(db, item))
            db.commit()
        return out

    def _add_one(self, db: Session, item: NewLaunch) -> tuple[Launch, bool]:
        now = self._now()
        existing = db.exec(
            select(Launch).where(Launch.idempotency_key == item.idempotency_key)
        ).first()
        if existing is None:
            row = Launch(
                idempotency_key=item.idempotency_key,
                request=item.request,
                next_attempt_at=now,
                created_at=now,
                updated_at=now,
            )
            db.add(row)
            try:
                # A savepoint: a concurrent insert of the same key loses cleanly to the winner.
                with db.begin_nested():
                    db.flush()
            except IntegrityError:
                winner = db.exec(
                    select(Launch).where(Launch.idempotency_key == item.idempotency_key)
                ).one()
                return winner, False
            return row, True
        if existing.state == LaunchState.FAILED:
            existing.request = item.request
            existing.state = LaunchState.QUEUED
            existing.attempts = 0
            existing.error = None
            existing.warnings = []
            existing.next_attempt_at = now
            existing.finished_at = None
            existing.updated_at = now
            db.add(existing)
            return existing, True
        return existing, False

    def get(self, launch_id: int) -> Launch | None:
        with self._session() as db:
            return db.get(Launch, launch_id)

    def claim(
        self, owner: str, *, limit: int, lease: timedelta, only_id: int | None = None
    ) -> list[Launch]:
        """Lease up to `limit` due launches to `owner`.

        Each claim writes its own lease token (`owner` plus a random suffix) to `lease_owner`;
        later writes must present it, so a stalled task still holding an earlier, expired claim
        of the row is fenced out even when the same owner has claimed it again.

        A row found in `creating` with its lease run out belonged to a worker that died around
        its create call: the session may exist, so it comes back flagged `outcome_unknown`.
        """
        now = self._now()
        due = sa.or_(
            sa.and_(
                col(Launch.state) == LaunchState.QUEUED,
                col(Launch.next_attempt_at) <= now,
                sa.or_(col(Launch.lease_expires_at).is_(None), col(Launch.lease_expires_at) < now),
            ),
            sa.and_(col(Launch.state) == LaunchState.CREATING, col(Launch.lease_expires_at) < now),
        )
        query = select(Launch.id).where(due).order_by(col(Launch.next_attempt_at)).limit(limit)
        if only_id is not None:
            query = query.where(Launch.id == only_id)
        if not is_sqlite(self.engine):
            query = query.with_for_update(skip_locked=True)
        token = f"{owner[:180]}:{uuid.uuid4().hex[:12]}"
        with self._session() as db:
            ids = list(db.exec(query))
            if not ids:
                return []
            db.execute(
                sa.update(Launch)
                .where(col(Launch.id).in_(ids))
                .values(
                    outcome_unknown=sa.or_(
                        col(Launch.outcome_unknown), col(Launch.state) == LaunchState.CREATING
                    ),
                    state=LaunchState.QUEUED,
                    lease_owner=token,
                    lease_expires_at=now + lease,
                    updated_at=now,
                )
            )
            db.commit()
            rows = db.exec(select(Launch).where(col(Launch.id).in_(ids))).all()
            return sorted(rows, key=lambda r: (r.next_attempt_at, r.id or 0))

    def _fenced(self, launch_id: int, token: str, **values: Any) -> bool:
        with self.engine.begin() as conn:
            result = conn.execute(
                sa.update(Launch)
                .where(col(Launch.id) == launch_id, col(Launch.lease_owner) == token)
                .values(updated_at=self._now(), **values)
            )
            return bool(cast("CursorResult[Any]", result).rowcount)

    def begin_create(
        self,
        launch_id: int,
        token: str,
        lease: timedelta,
        *,
        agent_version: int | None = None,
        warnings: Sequence[str] = (),
    ) -> bool:
        """Record that a create call is about to go out; False if the lease was lost."""
        now = self._now()
        return self._fenced(
            launch_id,
            token,
            state=LaunchState.CREATING,
            agent_version=agent_version,
            warnings=list(warnings),
            attempts=col(Launch.attempts) + 1,
            first_attempt_at=sa.func.coalesce(col(Launch.first_attempt_at), now),
            lease_expires_at=now + lease,
        )

    def extend(self, launch_id: int, token: str, lease: timedelta) -> bool:
        return self._fenced(launch_id, token, lease_expires_at=self._now() + lease)

    def retry(
        self,
        launch_id: int,
        token: str,
        *,
        at: datetime,
        error: str,
        outcome_unknown: bool,
        count_attempt: bool = False,
    ) -> bool:
        """Back to the queue until `at`. `count_attempt`: a failure before the create call
        (begin_create counts those that got that far)."""
        values: dict[str, Any] = {
            "state": LaunchState.QUEUED,
            "next_attempt_at": at,
            "error": error,
            "lease_owner": None,
            "lease_expires_at": None,
        }
        if outcome_unknown:
            values["outcome_unknown"] = True
        if count_attempt:
            values["attempts"] = col(Launch.attempts) + 1
        return self._fenced(launch_id, token, **values)

    def fail(
        self, launch_id: int, token: str, error: str, *, outcome_unknown: bool = False
    ) -> bool:
        """`outcome_unknown`: the last create went unanswered, so a re-queue checks first."""
        values: dict[str, Any] = {
            "state": LaunchState.FAILED,
            "error": error,
            "lease_owner": None,
            "lease_expires_at": None,
            "finished_at": self._now(),
        }
        if outcome_unknown:
            values["outcome_unknown"] = True
        return self._fenced(launch_id, token, **values)

    def complete(self, launch_id: int, token: str, launched: Launched) -> bool:
        """Mark the launch created and track its session, in one transaction."""
        now = self._now()
        with self.engine.begin() as conn:
            done = conn.execute(
                sa.update(Launch)
                .where(col(Launch.id) == launch_id, col(Launch.lease_owner) == token)
                .values(
                    state=LaunchState.CREATED,
                    session_id=launched.session_id,
                    agent_version=launched.seen.agent_version,
                    error=None,
                    lease_owner=None,
                    lease_expires_at=None,
                    finished_at=now,
                    updated_at=now,
                )
            )
            if not cast("CursorResult[Any]", done).rowcount:
                return False
            tracked_sessions.record_launch(conn, launched, now)
            return True

    def recent(self, states: Iterable[str] | None = None, limit: int = 50) -> list[Launch]:
        query = select(Launch).order_by(col(Launch.id).desc()).limit(limit)
        wanted = list(states or [])
        if wanted:
            query = query.where(col(Launch.state).in_(wanted))
        with self._session() as db:
            return list(db.exec(query))

    def counts(self) -> dict[str, int]:
        with self._session() as db:
            rows = db.exec(select(Launch.state, sa.func.count()).group_by(Launch.state)).all()
        return {state: int(n) for state, n in rows}

    def unfinished(self) -> int:
        with self._session() as db:
            return int(
                db.exec(select(sa.func.count()).where(col(Launch.state).in_(UNFINISHED))).one()
            )

    def next_due(self) -> datetime | None:
        """When the earliest queued launch becomes due (for a drain loop's sleep)."""
        with self._session() as db:
            value = db.exec(
                select(sa.func.min(Launch.next_attempt_at)).where(col(Launch.state).in_(UNFINISHED))
            ).one()
        return value  # type: ignore[no-any-return]

    # --- environment preflight cache ------------------------------------------------------------

    def environment_check(self, environment_id: str) -> EnvironmentCheck | None:
        with self._session() as db:
            return db.get(EnvironmentCheck, environment_id)

    def save_environment_check(self, environment_id: str, networking: str | None) -> None:
        now = self._now()
        for _ in range(2):
            try:
                with self._session() as db:
                    row = db.get(EnvironmentCheck, environment_id)
                    if row is None:
                        row = EnvironmentCheck(environment_id=environment_id)
                    row.networking = networking
                    row.checked_at = now
                    db.add(row)
                    db.commit()
                    return
            except IntegrityError:
                continue

    # --- tracked sessions, read (launcher, watchdog, `idlehook sessions`) -----------------------

    def tracked(
        self,
        limit: int = 100,
        include_deleted: bool = False,
        where: tracked_sessions.SessionFilter | None = None,
    ) -> list[TrackedSession]:
        """Tracked sessions, newest first; the filtering is store/sessions.py's."""
        f = where or tracked_sessions.SessionFilter()
        if include_deleted and not f.include_deleted:
            f = dataclasses.replace(f, include_deleted=True)
        return tracked_sessions.list_tracked(self.engine, f, limit=limit)

    def tracked_session(self, session_id: str) -> TrackedSession | None:
        with self._session() as db:
            return db.get(TrackedSession, session_id)

    def watch_candidates(self, limit: int) -> list[TrackedSession]:
        """Our sessions whose last known status is not quiet (idle or terminated), not yet
        handed to the reaper, least recently heard of first."""
        heard = sa.func.coalesce(
            col(TrackedSession.polled_at),
            col(TrackedSession.last_webhook_at),
            col(TrackedSession.created_at),
            col(TrackedSession.first_seen_at),
        )
        query = (
            select(TrackedSession)
            .where(
                col(TrackedSession.launched_by_us).is_(True),
                col(TrackedSession.deleted_at).is_(None),
                col(TrackedSession.reap_requested_at).is_(None),
                sa.or_(
                    col(TrackedSession.status).is_(None),
                    col(TrackedSession.status).not_in(QUIET_STATUSES),
                ),
            )
            .order_by(heard)
            .limit(limit)
        )
        with self._session() as db:
            return list(db.exec(query))
