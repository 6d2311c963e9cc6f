"""wake_reader(): whether idlehook's own records say a session woke after a delivery read it.

The delete plugin reuses what its delivery read of the session when the read is recent
(handlers/builtin/delete.py); before it does, it asks here, for free (the store, no API call),
whether anything idlehook knows of woke the session after that read:
- a follow-up it sent whose message is not in the transcript that was read (sent after the
  read), or one whose send's outcome is unknown;
- a run start it was notified of after this notification (stored after it: a later delivery
  row), whoever caused it. Rows, not clocks, order these: a wake after the read is notified
  after this notification was stored, which was before the read.
"""

import asyncio
from datetime import datetime, timedelta

from sqlalchemy.engine import Engine

from handlers.api import Notification, WakeReader
from handlers.events import RUNNING_TYPES
from store import delivered, followups
from store.models import FollowUpState

# A follow-up's clock is its sender's host, not the worker's: a send this close before the read
# counts as after it unless the read saw its message.
CLOCK_SKEW = timedelta(seconds=1)
# Deliveries are looked up by time first (an index), then ordered by row: one stored after this
# notification was received after it, give or take the receivers' clocks; this is ample.
LOOKBACK = timedelta(hours=1)


def _woken(engine: Engine, event: Notification, since: datetime, seen: frozenset[str]) -> bool:
    assert event.session_id is not None
    for row in followups.for_session(engine, event.session_id):
        if row.state == FollowUpState.SENDING:
            return True  # it may have landed: the session may be running it
        if row.state != FollowUpState.SENT or row.sent_at is None:
            continue
        if row.event_id is not None and row.event_id in seen:
            continue  # the read saw it: its turn came before the read
        if row.sent_at >= since - CLOCK_SKEW:
            return True
    found = delivered.deliveries_since(
        engine, [event.session_id], RUNNING_TYPES, event.received_at - LOOKBACK
    )
    return any(d.id > event.delivery_id for d in found.get(event.session_id, []))


def wake_reader(engine: Engine) -> WakeReader:
    async def woken_since(event: Notification, since: datetime, seen: frozenset[str]) -> bool:
        return await asyncio.to_thread(_woken, engine, event, since, seen)

    return woken_since
