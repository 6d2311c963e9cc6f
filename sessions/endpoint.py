"""The webhook endpoint's state, as Anthropic reports it: read on every reconcile sweep.

Anthropic disables an endpoint after sustained failure (about 20 failed deliveries in a row), on
a 3xx, or for a non-public address; re-enabling it is manual and nothing sent meanwhile is ever
delivered. With an admin key (`ANTHROPIC_ADMIN_KEY`) idlehook reads the endpoint through the
organization webhooks API (`client.beta.organization.webhooks`: retrieve by
`[reconcile] endpoint_id`, else list and match `[reconcile] endpoint_url`), one paced call a
sweep, and alarms at once on `disabled`: `idlehook_webhook_endpoint_disabled` 1, an error log
line every sweep, a red banner on the web page and in `idlehook status`.

That API lists organization endpoints; an endpoint made for one workspace in the Console may not
be among them, and is then reported `not_found` (a warning: the silence alarm still watches).
"""

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import anthropic
import structlog
from anthropic import AsyncAnthropic
from sqlalchemy.engine import Engine

from sessions import metrics
from store import watch
from store.watch import EndpointRecord

log = structlog.get_logger(__name__)

# The sweep's paced caller: `await call(fn)` waits for a read slot, then awaits `fn()`.
Caller = Callable[[Callable[[], Awaitable[Any]]], Awaitable[Any]]


def same_url(a: str, b: str) -> bool:
    return a.strip().rstrip("/").lower() == b.strip().rstrip("/").lower()


class EndpointWatch:
    """Reads one endpoint's state with the admin client and records it (store, metric, log)."""

    def __init__(
        self,
        client: AsyncAnthropic,
        engine: Engine,
        *,
        url: str | None = None,
        endpoint_id: str | None = None,
    ) -> None:
        if not url and not endpoint_id:
            raise ValueError("the endpoint is found by its id or its URL; neither was given")
        self.client = client
        self.engine = engine
        self.url = url
        self.endpoint_id = endpoint_id

    async def check(self, call: Caller, now: datetime) -> EndpointRecord | None:
        """One read (a page per 100 endpoints when found by URL), through `call` (the sweep's
        paced caller). None when the API could not be read: the last state stands."""
        webhooks = self.client.beta.organization.webhooks
        try:
            found = await self._find(webhooks, call)
        except anthropic.APIError as exc:
            status = getattr(exc, "status_code", None)
            log.warning(
                "reconcile.webhook_endpoint_unreadable",
                error=type(exc).__name__,
                status=status,
                hint="the admin key may be wrong, or organization webhooks are not on for it",
            )
            return None
        if found is None:
            record = await asyncio.to_thread(
                watch.record_endpoint, self.engine, "not_found", self._wanted(), now
            )
            metrics.WEBHOOK_ENDPOINT_DISABLED.set(0)
            log.warning(
                "reconcile.webhook_endpoint_not_found",
                wanted=self._wanted(),
                hint="the organization webhooks API lists organization endpoints only",
            )
            return record
        state = str(found.state)
        reason = found.disabled_reason or ""
        previous = await asyncio.to_thread(watch.endpoint_record, self.engine)
        record = await asyncio.to_thread(watch.record_endpoint, self.engine, state, reason, now)
        metrics.WEBHOOK_ENDPOINT_DISABLED.set(1 if state == "disabled" else 0)
        if state == "disabled":
            log.error(
                "reconcile.webhook_endpoint_disabled",
                endpoint_id=found.id,
                url=found.url,
                disabled_reason=reason or "(disabled by a person)",
                since=record.since.isoformat(),
                hint="re-enable it in the Console (Manage > Webhooks); events sent while it was "
                "disabled are never delivered, the reconciler fills in status changes",
            )
        elif previous is not None and previous.state == "disabled":
            log.info("reconcile.webhook_endpoint_enabled", endpoint_id=found.id, url=found.url)
        return record

    def _wanted(self) -> str:
        return self.endpoint_id or self.url or ""

    async def _find(self, webhooks: Any, call: Caller) -> Any | None:
        if self.endpoint_id:
            try:
                return await call(lambda: webhooks.retrieve(self.endpoint_id))
            except anthropic.NotFoundError:
                return None
        assert self.url is not None
        page = await call(lambda: webhooks.list(limit=100))
        while True:
            for endpoint in page.data:
                if same_url(endpoint.url, self.url):
                    return endpoint
            if not page.has_next_page():
                return None
            current = page
            page = await call(current.get_next_page)
