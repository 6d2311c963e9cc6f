"""Moving journaled deliveries (store/journal.py) into the store once it takes writes again.

Every receiver runs one. Each pass first takes over segments whose writer died (their locks
are free), then moves every sealed segment into the store, oldest first, one transaction per
batch of records, through the inbox's own SQL (store/ingest.py) and store/unrecognised.py. So
the store's de-duplication holds: a delivery both journaled and later retried by Anthropic (or
journaled after a commit whose answer was lost with its writer) is stored once and routed once.
A segment is deleted only once all of it is committed. When nothing sealed is left, the active
segment is sealed and moved too: appends never share a file with the drain.

A record the database refuses outright (bad data, not an outage) or that this version cannot
read is set aside in `rejected/` with an error line, so one bad record cannot hold back the
rest; an outage ends the pass, and the next one starts where it stopped.
"""

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import partial

import sqlalchemy as sa
import structlog
from sqlalchemy.engine import Engine

from store import journal_records as records
from store import unrecognised
from store.ingest import Row, StoreUnavailable, write_resilient, write_rows
from store.journal import Batch, Journal, Segment
from store.models import utcnow
from store.unrecognised import Unrecognised

log = structlog.get_logger(__name__)

DEFAULT_BATCH = 256


@dataclass
class DrainCounts:
    """What the drainer moved since it started (read by /metrics)."""

    stored: int = 0
    duplicates: int = 0
    rejected: int = 0
    skipped_bytes: int = 0


@dataclass(frozen=True)
class _Moved:
    ok: bool  # False: the store is down; nothing of the batch counts as moved
    stored: int = 0
    duplicates: int = 0
    rejected: int = 0


_DOWN = _Moved(ok=False)


class JournalDrainer:
    def __init__(
        self,
        journal: Journal,
        engine: Engine,
        *,
        on_new: Callable[[], None] | None = None,
        on_moved: Callable[[], None] | None = None,
        every: float = 1.0,
        batch: int = DEFAULT_BATCH,
        now: Callable[[], datetime] = utcnow,
    ) -> None:
        self.journal = journal
        self.engine = engine
        # Told when drained deliveries were new, so an in-process worker claims them at once.
        self.on_new = on_new
        # Told after each batch the store took: it takes writes again.
        self.on_moved = on_moved
        self.every = every
        self.batch = batch
        self.now = now
        self.counts = DrainCounts()
        self.stopping = asyncio.Event()

    async def run(self) -> None:
        """Drain every `every` seconds until `stop()`; a failing pass is logged, not fatal."""
        while not self.stopping.is_set():
            try:
                await self.drain_once()
            except Exception as exc:  # the receiver must outlive any one pass
                log.warning("journal.drain_failed", error=repr(exc)[:300])
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), timeout=self.every)

    def stop(self) -> None:
        self.stopping.set()

    async def drain_once(self) -> bool:
        """One pass; True if everything journaled so far is now in the store."""
        adopted = await asyncio.to_thread(self.journal.adopt_orphans)
        if adopted:
            self.journal.adopted(adopted)
        for segment in self.journal.drainable():
            if not await self._drain(segment):
                return False
        if not self.journal.active_depth():
            return True
        # The store took everything sealed: take what was appended since, too.
        await self.journal.seal()
        for segment in self.journal.drainable():
            if not await self._drain(segment):
                return False
        return True

    async def _drain(self, segment: Segment) -> bool:
        while True:
            batch = await asyncio.to_thread(self.journal.read, segment, self.batch)
            if batch.skipped:
                # A torn tail (a crash mid-append: never acknowledged) or a corrupt record.
                self.counts.skipped_bytes += batch.skipped
                log.warning("journal.bytes_skipped", file=segment.path.name, bytes=batch.skipped)
            if batch.count:
                moved = await asyncio.to_thread(self._store, batch)
                if not moved.ok:
                    return False
                self.journal.advance(segment, batch)
                self._report(segment, batch, moved)
            else:
                self.journal.advance(segment, batch)
            if batch.count < self.batch:  # read to its end
                await self.journal.retire(segment)
                log.info("journal.segment_drained", file=segment.path.name)
                return True

    def _store(self, batch: Batch) -> _Moved:
        """Commit `batch` (off the event loop)."""
        rows: list[Row] = []
        items: list[Unrecognised] = []
        for record in batch.records:
            if isinstance(record, Unrecognised):
                items.append(record)
            else:
                rows.append(record)
        now = self.now()
        stored = duplicates = 0
        refused: list[bytes] = list(batch.bad)
        write = partial(write_rows, self.engine)
        for row, outcome in zip(rows, write_resilient(write, rows, now.timestamp()), strict=True):
            if isinstance(outcome, StoreUnavailable):
                if not _refused(outcome):
                    log.info("journal.store_unavailable", error=str(outcome))
                    return _DOWN
                refused.append(records.encode(row))
            elif outcome.new:
                stored += 1
            else:
                duplicates += 1
        for item in items:
            try:
                [new] = unrecognised.write(self.engine, [item])
            except StoreUnavailable as exc:
                if not _refused(exc):
                    log.info("journal.store_unavailable", error=str(exc))
                    return _DOWN
                refused.append(records.encode(item))
                continue
            stored += new
            duplicates += not new
        if refused:
            try:
                path = self.journal.quarantine(refused)
            except OSError as exc:
                log.error("journal.quarantine_failed", error=str(exc))
                return _DOWN
            log.error("journal.records_rejected", count=len(refused), file=str(path))
        return _Moved(True, stored, duplicates, len(refused))

    def _report(self, segment: Segment, batch: Batch, moved: _Moved) -> None:
        self.counts.stored += moved.stored
        self.counts.duplicates += moved.duplicates
        self.counts.rejected += moved.rejected
        log.warning(
            "journal.drained",
            file=segment.path.name,
            stored=moved.stored,
            duplicate=moved.duplicates,
            rejected=moved.rejected,
            keys=[records.key(r) for r in batch.records],
        )
        if self.on_moved is not None:
            self.on_moved()
        if moved.stored and self.on_new is not None:
            self.on_new()


def _refused(exc: StoreUnavailable) -> bool:
    """The database said no to this record itself, not an outage: retrying will not help.
    Anything else (down, locked, full, read-only, a missing table) is waited out."""
    cause = exc.__cause__
    if isinstance(cause, sa.exc.DBAPIError):
        refusal = isinstance(cause, sa.exc.IntegrityError | sa.exc.DataError)
        return refusal and not cause.connection_invalidated
    # A value the driver could not even bind.
    return isinstance(cause, sa.exc.StatementError)
