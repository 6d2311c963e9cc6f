"""The inbox: where every delivery is recorded once, with its routing run, before it is answered.

The webhook path `ingest`s each verified delivery and awaits its commit. The commits happen in
the inbox's writer process (store/writer_process.py, fed by store/writer_link.py), which groups
whatever arrives while it is busy into one transaction, so a burst pays one commit (one fsync)
instead of one per request, and the event loop never waits on SQLite or for the GIL it would
share with a writer thread. The reconciler and tests record in-process (`ingest_sync`,
`write_batch`), through the same SQL (store/ingest.py).
"""

import asyncio
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Engine

from store import ingest, unrecognised
from store.engine import make_engine
from store.ingest import (
    IngestResult,
    NewDelivery,
    Row,
    StoreUnavailable,
    plan_batch,
    session_id_for,
    to_row,
)
from store.models import utcnow
from store.runs import ROUTE_HANDLER
from store.unrecognised import Unrecognised
from store.writer_link import WriterLink

__all__ = [
    "DEFAULT_MAX_BATCH",
    "ROUTE_HANDLER",
    "Inbox",
    "IngestResult",
    "NewDelivery",
    "Row",
    "StoreUnavailable",
    "plan_batch",
    "session_id_for",
    "to_row",
]

DEFAULT_MAX_BATCH = 256


class Inbox:
    """The only writer of deliveries. Owns its engine and its writer process; `close()` ends both.

    Nothing starts until `start()` or the first `ingest`; an inbox used only in-process (the
    reconciler's) never has a writer process.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        max_batch: int = DEFAULT_MAX_BATCH,
        now: Callable[[], datetime] = utcnow,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self.engine = engine
        self.now = now
        self._link = WriterLink(
            engine.url.render_as_string(hide_password=False),
            max_batch=max_batch,
            now=now,
            on_batch=on_batch,
        )

    @classmethod
    def connect(cls, url: str, **kwargs: Any) -> "Inbox":
        return cls(make_engine(url), **kwargs)

    @property
    def on_batch(self) -> Callable[[int], None] | None:
        """Observes each committed batch size; the receiver feeds it to a histogram."""
        return self._link.on_batch

    @on_batch.setter
    def on_batch(self, observe: Callable[[int], None] | None) -> None:
        self._link.on_batch = observe

    @property
    def writer_pid(self) -> int | None:
        return self._link.pid

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the writer process (the receiver's lifespan does, so the first request waits
        for nothing); raises StoreUnavailable if it cannot start."""
        await self._link.start()

    async def stop(self) -> None:
        """Answer everything ingested so far, then stop the writer process."""
        await self._link.stop()

    def close(self) -> None:
        self._link.close()
        self.engine.dispose()

    # -- ingest ----------------------------------------------------------------------------

    async def ingest(self, delivery: NewDelivery) -> IngestResult:
        """Record `delivery` in the writer's next batch; returns once it is committed."""
        return await self._link.submit(ingest.to_row(delivery))

    async def ingest_row(self, row: Row) -> IngestResult:
        """`ingest` for a delivery already in its compact Row form, as the webhook path builds it
        (a NewDelivery's datetimes and their conversion are a cost on every request)."""
        return await self._link.submit(row)

    async def keep_unrecognised(self, item: Unrecognised) -> bool:
        """Keep a signed body that is no known envelope (store/unrecognised.py), in a thread
        of this process: rare, so not worth the writer's pipe. True if it was new."""
        [new] = await asyncio.to_thread(unrecognised.write, self.engine, [item])
        return new

    def ingest_sync(self, delivery: NewDelivery) -> IngestResult:
        """The same insert-if-new, in this process and thread (the reconciler's path)."""
        return self.write_batch([delivery])[0]

    def write_batch(self, items: Sequence[NewDelivery]) -> list[IngestResult]:
        """Record `items` in one transaction, in-process; results line up with `items`."""
        results = ingest.write_batch(self.engine, items, self.now())
        if results and self.on_batch is not None:
            self.on_batch(len(items))
        return results

    # -- reads for health and metrics ------------------------------------------------------

    def ping(self) -> None:
        """Raise StoreUnavailable unless the inbox table answers."""
        ingest.ping(self.engine)

    def depth(self) -> int:
        """Handler runs not yet finished: the worker's backlog."""
        return ingest.depth(self.engine)
