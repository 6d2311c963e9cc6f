"""Retention: old, finished history deleted in short batches, never what anything still needs.

Each kind of history has its own age (`[retention]`, or one `--older-than` for all); `None`
keeps it forever, and no age is shorter than `FLOOR`. What is kept whatever its age:

- a run that is not finished (pending, running, failed and waiting for a retry), and every
  other run of the same delivery; a dead letter until `dead_runs` (it is replayable);
- a delivery while any of its runs is kept (its runs go first, each by its own age), or while
  a duplicate of it arrived within its age (Anthropic may still be retrying it);
- for every session not known deleted, the newest status delivery of each (type, source), as
  the reconciler reads them: the newest by row id decides whether a session is settled
  (store/watch.py), and the newest by arrival and event time whether a transition was already
  delivered (sessions/reconciler.py `_delivered`); without them it would synthesise, and the
  handlers run, again;
- launches, follow-ups, tool calls and approvals that are not finished (queued or creating;
  recorded or sending; started or finished but not sent; pending or decided but not sent);
  and, for a session not known deleted, the follow-up, tool call and approval it was last sent
  (each one tells the reconciler idlehook woke the session), the newest follow-up that planned
  a run allowance (the next follow-up reuses it), and every follow-up of a session with one not
  yet sent (a recovery search excludes their messages);
- a tracked session unless it was deleted more than `sessions` ago and none of its deliveries
  is left (the mark is what makes its remaining deliveries unprotected).

`FLOOR`, 24 hours: Anthropic retries a webhook a few times with backoff of up to about two
minutes each, so a delivery's event id must stay (to de-duplicate a retry) far less long than
this; a day also covers a receiver journal drained late and a clock that is off.

Deletes run `batch_size` rows a transaction (5,000 by default), walking each table in key
order, so the inbox writer waits at most one short batch for SQLite's write lock; each batch
re-checks its condition in the DELETE itself, so a row that changed meanwhile is left alone.
"""

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from store.models import (
    Approval,
    ApprovalState,
    Delivery,
    FollowUp,
    FollowUpState,
    HandlerRun,
    Launch,
    LaunchState,
    ReaperAction,
    RunState,
    ToolCall,
    ToolCallState,
    TrackedSession,
    UnrecognisedDelivery,
)

FLOOR = timedelta(hours=24)
DEFAULT_BATCH = 5000

# The kinds of history, each with its own age; the settings' `[retention]` keys.
KINDS = (
    "runs",
    "dead_runs",
    "deliveries",
    "unrecognised",
    "launches",
    "follow_ups",
    "tool_calls",
    "approvals",
    "audit",
    "sessions",
)

_runs = HandlerRun.__table__  # type: ignore[attr-defined]
_deliveries = Delivery.__table__  # type: ignore[attr-defined]
_unrecognised = UnrecognisedDelivery.__table__  # type: ignore[attr-defined]
_launches = Launch.__table__  # type: ignore[attr-defined]
_follow_ups = FollowUp.__table__  # type: ignore[attr-defined]
_tool_calls = ToolCall.__table__  # type: ignore[attr-defined]
_approvals = Approval.__table__  # type: ignore[attr-defined]
_audit = ReaperAction.__table__  # type: ignore[attr-defined]
_tracked = TrackedSession.__table__  # type: ignore[attr-defined]


# -- the pure part: how old is old enough ---------------------------------------------------------


@dataclass(frozen=True)
class RetentionPolicy:
    """How long each kind of history is kept (None: forever); `status_types` are the event
    types the reconciler reads as status deliveries (the newest of them are kept)."""

    ages: Mapping[str, timedelta | None]
    status_types: frozenset[str]
    batch_size: int = DEFAULT_BATCH

    def __post_init__(self) -> None:
        unknown = set(self.ages) - set(KINDS)
        if unknown:
            raise ValueError(f"unknown kinds of history: {sorted(unknown)}")
        if self.batch_size < 1:
            raise ValueError("batch_size must be at least 1")


def cutoffs(policy: RetentionPolicy, now: datetime) -> dict[str, datetime | None]:
    """Per kind, the instant before which a row is old enough (None: kept forever). An age
    under FLOOR counts as FLOOR, whoever asked for it."""
    found: dict[str, datetime | None] = {}
    for kind in KINDS:
        age = policy.ages.get(kind)
        found[kind] = None if age is None else now - max(age, FLOOR)
    return found


@dataclass
class PruneReport:
    """Rows deleted (or, dry run, that would be) per table, and the cut-offs used."""

    dry_run: bool
    cutoffs: dict[str, datetime | None]
    deleted: dict[str, int] = field(default_factory=dict)
    batches: int = 0

    @property
    def total(self) -> int:
        return sum(self.deleted.values())


# -- what may go, as SQL over the (unaliased) table -----------------------------------------------

Cuts = Mapping[str, datetime | None]


def _before(column: Any, cut: datetime | None) -> Any:
    return sa.false() if cut is None else column < cut


def _known_deleted(session_id: Any) -> Any:
    return sa.exists().where(_tracked.c.id == session_id, _tracked.c.deleted_at.is_not(None))


def _run_done(run: Any, cuts: Cuts) -> Any:
    """A finished run past its age (succeeded: `runs`; a dead letter, and one discarded or
    superseded by a re-route: `dead_runs`)."""
    finished = sa.func.coalesce(run.c.finished_at, run.c.updated_at)
    dead = [RunState.DEAD.value, RunState.DISCARDED.value, RunState.SUPERSEDED.value]
    return sa.or_(
        sa.and_(run.c.state == RunState.SUCCEEDED.value, _before(finished, cuts["runs"])),
        sa.and_(run.c.state.in_(dead), _before(finished, cuts["dead_runs"])),
    )


def _runs_prunable(cuts: Cuts) -> Any:
    """A delivery's runs go together, once every one of them may: a dead letter kept for its
    90 days keeps its delivery's succeeded runs (its `_route` among them), or a replay would
    find the delivery unrouted, and a re-route would run again a handler whose success was
    pruned."""
    sibling = _runs.alias("sibling")
    kept_sibling = sa.exists().where(
        sibling.c.delivery_id == _runs.c.delivery_id, sa.not_(_run_done(sibling, cuts))
    )
    return sa.and_(_run_done(_runs, cuts), sa.not_(kept_sibling))


def _delivery_old(delivery: Any, cuts: Cuts) -> Any:
    """Old, and no run of it to keep (runs kept keep their delivery)."""
    cut = cuts["deliveries"]
    run = _runs.alias("its_run")
    kept_run = sa.exists().where(run.c.delivery_id == delivery.c.id, sa.not_(_run_done(run, cuts)))
    last_seen = sa.func.coalesce(delivery.c.last_duplicate_at, delivery.c.received_at)
    return sa.and_(_before(delivery.c.received_at, cut), _before(last_seen, cut), sa.not_(kept_run))


def _deliveries_prunable(cuts: Cuts, status_types: Collection[str]) -> Any:
    d = _deliveries
    newer = _deliveries.alias("newer")
    superseded = sa.exists().where(
        newer.c.session_id == d.c.session_id,
        newer.c.event_type == d.c.event_type,
        newer.c.source == d.c.source,
        newer.c.id > d.c.id,
        newer.c.received_at >= d.c.received_at,
        sa.or_(d.c.event_created_at.is_(None), newer.c.event_created_at >= d.c.event_created_at),
    )
    needed = sa.and_(
        d.c.session_id.is_not(None),
        d.c.event_type.in_(sorted(status_types)),
        sa.not_(_known_deleted(d.c.session_id)),
        sa.not_(superseded),
    )
    return sa.and_(_delivery_old(d, cuts), sa.not_(needed))


def _sessions_prunable(cuts: Cuts) -> Any:
    d = _deliveries.alias("session_delivery")
    left = sa.exists().where(d.c.session_id == _tracked.c.id, sa.not_(_delivery_old(d, cuts)))
    return sa.and_(
        _tracked.c.deleted_at.is_not(None),
        _before(_tracked.c.deleted_at, cuts["sessions"]),
        sa.not_(left),
    )


def _sent_prunable(table: Any, sent: str, cut: datetime | None) -> Any:
    """A row sent to the API before `cut`, unless its session (not known deleted) still needs
    it: the last one sent tells the reconciler idlehook woke the session (store/watch.py)."""
    later = table.alias("later")
    superseded = sa.exists().where(
        later.c.session_id == table.c.session_id,
        later.c.sent_at.is_not(None),
        sa.or_(
            later.c.sent_at > table.c.sent_at,
            sa.and_(later.c.sent_at == table.c.sent_at, later.c.id > table.c.id),
        ),
    )
    needed = [sa.not_(superseded)]
    if table is _follow_ups:
        # sessions/followups: the next follow-up reuses the newest planned allowance, and a
        # recovery search leaves out every message of the session's follow-ups.
        newer_plan = sa.exists().where(
            later.c.session_id == table.c.session_id,
            later.c.id > table.c.id,
            later.c.allowance_seconds.is_not(None),
        )
        unsent = sa.exists().where(
            later.c.session_id == table.c.session_id, later.c.state != FollowUpState.SENT.value
        )
        needed += [sa.and_(table.c.allowance_seconds.is_not(None), sa.not_(newer_plan)), unsent]
    return sa.and_(
        table.c.state == sent,
        table.c.sent_at.is_not(None),
        _before(table.c.sent_at, cut),
        sa.not_(sa.and_(sa.not_(_known_deleted(table.c.session_id)), sa.or_(*needed))),
    )


def _launches_prunable(cut: datetime | None) -> Any:
    done = [LaunchState.CREATED.value, LaunchState.FAILED.value]
    finished = sa.func.coalesce(_launches.c.finished_at, _launches.c.updated_at)
    return sa.and_(_launches.c.state.in_(done), _before(finished, cut))


def _received_prunable(table: Any, cut: datetime | None) -> Any:
    last_seen = sa.func.coalesce(table.c.last_duplicate_at, table.c.received_at)
    return sa.and_(_before(table.c.received_at, cut), _before(last_seen, cut))


# -- walking a table in short transactions --------------------------------------------------------


@dataclass(frozen=True)
class _Table:
    """One table's walk. `since`: a column no later than any time the condition compares with
    the cut-off, in near key order: a batch whose rows are all younger than `stop` ends the walk.
    `ordered`: an indexed time column the walk follows instead (keyset on it and the key)."""

    name: str
    table: Any
    prunable: Callable[[Cuts], Any]
    stop: Callable[[Cuts], datetime | None]
    since: Any = None
    ordered: Any = None


def _latest(*cuts: datetime | None) -> datetime | None:
    present = [c for c in cuts if c is not None]
    return max(present) if present else None


def _sent_table(kind: str, table: Any, state: str, since: Any) -> _Table:
    return _Table(
        kind,
        table,
        lambda cuts: _sent_prunable(table, state, cuts[kind]),
        lambda cuts: cuts[kind],
        since=since,
    )


def _tables(policy: RetentionPolicy) -> list[_Table]:
    """In order: runs before their deliveries, deliveries before their sessions."""
    sent = (
        ("follow_ups", _follow_ups, FollowUpState.SENT.value, _follow_ups.c.created_at),
        ("tool_calls", _tool_calls, ToolCallState.SENT.value, _tool_calls.c.started_at),
        ("approvals", _approvals, ApprovalState.SENT.value, _approvals.c.requested_at),
    )
    return [
        _Table(
            "handler_runs",
            _runs,
            _runs_prunable,
            lambda c: _latest(c["runs"], c["dead_runs"]),
            since=_runs.c.created_at,
        ),
        _Table(
            "deliveries",
            _deliveries,
            lambda c: _deliveries_prunable(c, policy.status_types),
            lambda c: c["deliveries"],
            ordered=_deliveries.c.received_at,
        ),
        _Table(
            "unrecognised_deliveries",
            _unrecognised,
            lambda c: _received_prunable(_unrecognised, c["unrecognised"]),
            lambda c: c["unrecognised"],
            ordered=_unrecognised.c.received_at,
        ),
        _Table(
            "launches",
            _launches,
            lambda c: _launches_prunable(c["launches"]),
            lambda c: c["launches"],
            since=_launches.c.created_at,
        ),
        *(_sent_table(kind, table, state, since) for kind, table, state, since in sent),
        _Table(
            "reaper_actions",
            _audit,
            lambda c: _before(_audit.c.at, c["audit"]),
            lambda c: c["audit"],
            since=_audit.c.at,
        ),
        _Table(
            "tracked_sessions",
            _tracked,
            _sessions_prunable,
            lambda c: c["sessions"],
            ordered=_tracked.c.deleted_at,
        ),
    ]


def _window(
    conn: Connection, spec: _Table, stop: datetime, after: tuple[Any, Any] | None, batch: int
) -> tuple[list[Any], tuple[Any, Any] | None]:
    """The next key window of at most `batch` rows that may hold something old enough, and
    where the one after it starts (None: this is the last)."""
    key = spec.table.c.id
    if spec.ordered is not None:
        query = sa.select(key, spec.ordered).where(spec.ordered < stop)
        if after is not None:
            at, last = after
            query = query.where(spec.ordered >= at, sa.or_(spec.ordered > at, key > last))
        query = query.order_by(spec.ordered, key)
    else:
        query = sa.select(key, spec.since)
        if after is not None:
            query = query.where(key > after[1])
        query = query.order_by(key)
    rows = conn.execute(query.limit(batch)).all()
    if len(rows) < batch:
        return [row[0] for row in rows], None
    if spec.ordered is None and min(row[1] for row in rows) >= stop:
        # This window is younger than the cut-off, and so (near enough) is every later one.
        return [row[0] for row in rows], None
    return [row[0] for row in rows], (rows[-1][1], rows[-1][0])


def _prune_window(conn: Connection, spec: _Table, where: Any, ids: list[Any], dry_run: bool) -> int:
    key = spec.table.c.id
    chosen = list(conn.execute(sa.select(key).where(key.in_(ids), where)).scalars())
    if not chosen or dry_run:
        return len(chosen)
    if spec.table is _deliveries:
        # Their runs are all done (the condition says so); normally gone already.
        conn.execute(_runs.delete().where(_runs.c.delivery_id.in_(chosen)))
    return int(conn.execute(spec.table.delete().where(key.in_(chosen), where)).rowcount)


def prune(
    engine: Engine, policy: RetentionPolicy, now: datetime, *, dry_run: bool = False
) -> PruneReport:
    """Delete (dry run: count) what is old enough, table by table, `batch_size` rows a
    transaction. The conditions look through what a real run deletes first (a delivery's
    runs, a session's deliveries), so a dry run counts what a real one would delete."""
    cuts = cutoffs(policy, now)
    report = PruneReport(dry_run=dry_run, cutoffs=cuts)
    for spec in _tables(policy):
        stop = spec.stop(cuts)
        report.deleted[spec.name] = 0
        if stop is None:
            continue
        where = spec.prunable(cuts)
        after: tuple[Any, Any] | None = None
        while True:
            # One short transaction a window: SQLite's write lock is free again between two.
            with engine.begin() as conn:
                ids, after = _window(conn, spec, stop, after, policy.batch_size)
                if ids:
                    report.deleted[spec.name] += _prune_window(conn, spec, where, ids, dry_run)
            report.batches += 1
            if after is None:
                break
    return report
