"""The Emulator object: config, clocks, state, sender, ledger and limiter in one place, plus
the few helpers every service shares (session events, status changes, session JSON). Routes,
the control API and in-process tests all call the same methods."""

import asyncio
import random
from collections import Counter
from typing import Any

import httpx
import structlog

from emulator.billing import Ledger
from emulator.clock import SpeedClock, rfc3339
from emulator.config import EmulatorConfig
from emulator.ids import new_id
from emulator.ratelimit import RateLimiter
from emulator.sender import WebhookSender
from emulator.state import SessionRecord, Store

log = structlog.get_logger(__name__)

# Status transitions -> webhook types: the documented family, then the second family (SDK
# union only, behind `second_family`). That family also has session.requires_action (sent
# with session.idled when the idle awaits input) and session.created/archived/deleted, which
# are sent always and once: one type, one event. `pending` for `rescheduling` is inference.
STATUS_WEBHOOKS = {
    "running": "session.status_run_started",
    "idle": "session.status_idled",
    "terminated": "session.status_terminated",
    "rescheduling": "session.status_rescheduled",
}
SECOND_FAMILY = {
    "running": "session.running",
    "idle": "session.idled",
    "rescheduling": "session.pending",
}


class Emulator:
    def __init__(
        self,
        config: EmulatorConfig | None = None,
        *,
        clock: SpeedClock | None = None,
        rng: random.Random | None = None,
        webhook_transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.config = config or EmulatorConfig()
        self.clock = clock or SpeedClock(self.config.speed)
        self.clock.set_speed(self.config.speed)
        self.rng = rng or random.Random()
        self.store = Store()
        self.sender = WebhookSender(lambda: self.config, self.clock, self.rng, webhook_transport)
        self.ledger = Ledger()
        self.limiter = RateLimiter(self.clock.elapsed)
        self.requests: Counter[str] = Counter()
        self.rate_limited: Counter[str] = Counter()
        self.creates: Counter[str] = Counter()
        self.faults_injected: Counter[str] = Counter()
        self.background: set[asyncio.Task[None]] = set()

    # -- config and lifecycle ----------------------------------------------------------

    def apply_config(self, patch: dict[str, Any]) -> EmulatorConfig:
        new = self.config.merged(patch)
        if new.speed != self.config.speed:
            self.clock.set_speed(new.speed)
        for url in set(new.webhook_urls) - set(self.config.webhook_urls):
            self.sender.remove(url)  # a URL (re)added starts enabled, with a clean count
        self.config = new
        return new

    def reset(self) -> None:
        """Forget all state (not the config): between tests sharing one server."""
        for record in self.store.sessions.values():
            if record.task is not None:
                record.task.cancel()
            for queue in record.subscribers:
                queue.put_nowait(None)
        self.store = Store()
        self.sender.reset()
        self.ledger = Ledger()
        self.limiter.reset()
        for counter in (self.requests, self.rate_limited, self.creates, self.faults_injected):
            counter.clear()

    def spawn(self, coro: Any) -> "asyncio.Task[None]":
        task: asyncio.Task[None] = asyncio.create_task(coro)
        self.background.add(task)
        task.add_done_callback(self.background.discard)
        return task

    async def aclose(self) -> None:
        for record in self.store.sessions.values():
            if record.task is not None:
                record.task.cancel()
            for queue in record.subscribers:
                queue.put_nowait(None)
        for task in list(self.background):
            task.cancel()
        await self.sender.aclose()

    # -- webhooks ----------------------------------------------------------------------

    def webhook(self, data_type: str, data_id: str, **extra: Any) -> None:
        self.sender.emit(data_type, data_id, **extra)

    def second_family(self, data_type: str, data_id: str) -> None:
        """A second-family-only type (see SECOND_FAMILY), sent if the switch is on."""
        if self.config.second_family:
            self.sender.emit(data_type, data_id)

    def touch(self, record: SessionRecord, *, status_change: bool = False) -> None:
        """Move the session's updated_at: always for a client's change, for a status change
        only when `updated_at_moves` is `always`."""
        if not status_change or self.config.updated_at_moves == "always":
            record.updated_at = self.clock.now()

    # -- session events and status -----------------------------------------------------

    def session_event(
        self, record: SessionRecord, kind: str, *, preview: bool = False, **fields: Any
    ) -> dict[str, Any]:
        event = {"id": new_id("sevt_"), "type": kind, "processed_at": rfc3339(self.clock.now())}
        event.update(fields)
        self.append_event(record, event, preview=preview)
        return event

    def append_event(
        self, record: SessionRecord, event: dict[str, Any], *, preview: bool = False
    ) -> None:
        record.events.append(event)
        for queue in list(record.subscribers):
            if preview and id(queue) in record.delta_subscribers:
                queue.put_nowait(
                    {"type": "event_start", "event": {"type": event["type"], "id": event["id"]}}
                )
                for i, block in enumerate(event.get("content", [])):
                    queue.put_nowait(
                        {
                            "type": "event_delta",
                            "event_id": event["id"],
                            "delta": {"type": "content_delta", "index": i, "content": block},
                        }
                    )
            queue.put_nowait(event)

    def set_status(self, record: SessionRecord, status: str) -> None:
        if record.status == status and status != "idle":
            return
        now = self.clock.elapsed()
        # The ledger's running clock is the session's active_seconds: one clock, so the
        # billing report and the Session object cannot disagree.
        if status == "running":
            self.ledger.started(record.id, now)
        else:
            self.ledger.stopped(record.id, now)
        if status == "terminated":
            record.ended_emulated = now
        record.status = status
        self.touch(record, status_change=True)
        self.webhook(STATUS_WEBHOOKS[status], record.id)
        if status in SECOND_FAMILY:
            self.second_family(SECOND_FAMILY[status], record.id)
        log.info("session.status", session_id=record.id, status=status)

    def active_seconds(self, record: SessionRecord) -> float:
        return self.ledger.running_seconds(record.id, self.clock.elapsed())

    def usage(self, record: SessionRecord) -> dict[str, Any]:
        """`usage` as the Session and `session.usage` events carry it: tokens, list cost and
        the billed runtime."""
        # A shallow copy is enough: the runner replaces nested values (list_cost), never edits
        # them, so an event holding this copy keeps the numbers of its moment.
        usage = dict(record.usage)
        usage["active_seconds"] = round(self.active_seconds(record), 3)
        return usage

    def session_json(self, record: SessionRecord) -> dict[str, Any]:
        end = record.ended_emulated if record.ended_emulated is not None else self.clock.elapsed()
        usage = self.usage(record)
        active = usage["active_seconds"]
        return {
            **record.body,
            "status": record.status,
            "stats": {
                "active_seconds": active,
                "duration_seconds": round(max(0.0, end - record.created_emulated), 3),
            },
            "usage": usage,
            "updated_at": rfc3339(record.updated_at or record.created_at),
            "archived_at": rfc3339(record.archived_at) if record.archived_at else None,
        }
