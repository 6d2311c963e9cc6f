"""Webhook delivery as Anthropic does it: thin signed events POSTed from background tasks, at
most N attempts per event per endpoint with jittered backoff, the same `webhook-id` on every
attempt and the timestamp re-stamped, then dropped for good. Faults (drop, duplicate, delay,
reorder, burst) are applied here. Every attempt is logged for tests.

Endpoints are of two kinds. Workspace endpoints, the ones the Console registers, are the
config's `webhook_urls`, keyed by URL, signed with `webhook_secrets`, and get every event that
is not an organization type. Organization endpoints (the organization webhooks API) are keyed
by id, signed with their own secret, and get only the organization types they subscribed to.

Auto-disable, as the docs put it: a 3xx disables the endpoint at once (reason `redirect`);
roughly 20 consecutive failed deliveries (`disable_after_failed_deliveries`: any non-2xx, a
timeout, a connection error, every attempt counted, a 2xx resets the count) disable it with
reason `sustained_failure`; with `disable_on_private_address`, a host that resolves to a
non-public address disables it before anything is sent (`invalid_address`). A disabled
endpoint gets nothing more (not even the retries of events already under way) until it is
re-enabled, and what was emitted meanwhile is never delivered. Console test events
(`send_test`) go to an endpoint whatever it subscribed to, and count like any other
delivery."""

import asyncio
import ipaddress
import json
import random
import socket
from collections.abc import Callable, Coroutine
from dataclasses import asdict, dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx
import structlog
from standardwebhooks import Webhook

from emulator.clock import SpeedClock, rfc3339
from emulator.config import EmulatorConfig
from emulator.faults import DeliveryPlan, plan_delivery
from emulator.ids import new_id

log = structlog.get_logger(__name__)

# Organization-level types: only organization endpoints get them, and their data carries no
# workspace_id. The organization webhooks API accepts exactly these in `enabled_events`.
ORGANIZATION_EVENT_TYPES = frozenset(
    {
        "external_key.failed",
        "external_key.recovered",
        "external_storage.failed",
        "external_storage.recovered",
        "user_profile.enforcement_action_opened",
        "user_profile.enforcement_action_resolved",
        "user_profile.program_status_updated",
    }
)
# The Console's "send test event": its shape is not in the SDK nor the docs (which only say an
# endpoint gets "test events" besides its subscriptions), so by default it is the usual
# envelope with a `data.type` the SDK's union does not know. `send_test` takes another.
TEST_EVENT_TYPE = "webhook.test"

EndpointKind = Literal["workspace", "organization"]
# Why an endpoint is disabled: the API's own reasons, or `caller` for a manual disable (the
# organization API shows that as an empty disabled_reason).
DisabledReason = Literal["redirect", "sustained_failure", "invalid_address", "caller"]


@dataclass(frozen=True)
class AttemptRecord:
    event_id: str
    type: str
    data_id: str
    url: str
    endpoint: str  # the URL (workspace endpoint) or id (organization endpoint)
    attempt: int
    status: int | None
    # delivered | failed | error | redirect | invalid_address | dropped | endpoint_disabled
    outcome: str
    at: str
    timestamp: int | None = None
    error: str | None = None


@dataclass
class EndpointState:
    key: str  # the URL of a workspace endpoint, the id of an organization one
    url: str
    kind: EndpointKind = "workspace"
    enabled: bool = True
    disabled_reason: DisabledReason | None = None
    consecutive_failed_deliveries: int = 0
    failing_since: float | None = None  # emulated seconds at the first failure of the run
    delivered: int = 0
    failed: int = 0  # failed deliveries, all time
    created_at: str | None = None  # RFC 3339, emulated clock
    # Organization endpoints: their own secret and the types they subscribed to.
    secret: str | None = field(default=None, repr=False)
    events: frozenset[str] | None = None

    def public(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("secret")
        out["events"] = sorted(self.events) if self.events is not None else None
        out["state"] = "enabled" if self.enabled else "disabled"
        return out

    def wants(self, data_type: str) -> bool:
        if self.kind == "organization":
            return self.events is not None and data_type in self.events
        return data_type not in ORGANIZATION_EVENT_TYPES


@dataclass
class _Held:
    endpoint: EndpointState
    event: dict[str, Any]
    plan: DeliveryPlan


@dataclass
class SentEvent:
    event: dict[str, Any]
    urls: list[str] = field(default_factory=list)


def sign(secrets: list[str], msg_id: str, timestamp: Any, payload: str) -> str:
    """One `v1,<sig>` entry per secret, space-separated: receivers knowing any one verify."""
    return " ".join(Webhook(secret).sign(msg_id, timestamp, payload) for secret in secrets)


async def private_address(url: str) -> bool:
    """Whether `url`'s host is, or resolves to, an address that is not publicly routable
    (loopback, private, link-local, reserved...). An unresolvable host counts as one."""
    host = urlsplit(url).hostname or ""
    try:
        addresses = [ipaddress.ip_address(host)]
    except ValueError:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, None, type=socket.SOCK_STREAM
            )
        except OSError:
            return True
        addresses = [ipaddress.ip_address(info[4][0]) for info in infos]
    return any(not a.is_global for a in addresses)


def backoff_seconds(attempt: int, low: float, high: float, rng: random.Random) -> float:
    """Emulated seconds before attempt `attempt + 1`: exponential from `low`, jittered,
    clipped to [low, high]."""
    base: float = low * (4.0 ** (attempt - 1))
    jittered: float = base * rng.uniform(0.8, 1.2)
    return min(high, max(low, jittered))


class WebhookSender:
    def __init__(
        self,
        config: Callable[[], EmulatorConfig],
        clock: SpeedClock,
        rng: random.Random,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._config = config
        self._clock = clock
        self._rng = rng
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._held: list[_Held] = []
        self._hold_timer: asyncio.Task[None] | None = None
        self.endpoints: dict[str, EndpointState] = {}
        self.attempts: list[AttemptRecord] = []
        self.emitted: list[dict[str, Any]] = []

    # -- public ---------------------------------------------------------------------------

    def emit(self, data_type: str, data_id: str, **extra: Any) -> dict[str, Any]:
        """Send a `data_type` event about `data_id` to every endpoint that takes the type."""
        cfg = self._config()
        event = self._envelope(data_type, data_id, extra, cfg)
        self.emitted.append(event)
        for endpoint in self._endpoints_for(data_type, cfg):
            if not endpoint.enabled:
                self._record(event, endpoint, 0, None, "endpoint_disabled")
                continue
            plan = plan_delivery(cfg.faults, self._rng)
            if plan.drop:
                self._record(event, endpoint, 0, None, "dropped")
                continue
            if cfg.faults.reorder_window > 1:
                self._hold(_Held(endpoint, event, plan), cfg)
            else:
                self._spawn(self._deliver_planned(endpoint, event, plan))
        return event

    def send_test(
        self,
        keys: list[str] | None = None,
        data_type: str = TEST_EVENT_TYPE,
        data_id: str | None = None,
        body: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """A Console test event: signed and retried like the real ones, sent to the endpoints
        `keys` (default: every endpoint) whatever they subscribed to, faults aside. `body`
        replaces the whole payload (its `id`, if a string, is the `webhook-id`)."""
        cfg = self._config()
        endpoints = [self.endpoint(k) for k in keys] if keys else self._all(cfg)
        event = (
            body
            if body is not None
            else self._envelope(data_type, data_id or new_id("wevt_"), {}, cfg)
        )
        if not isinstance(event.get("id"), str):
            event = {**event, "id": new_id("wevt_")}
        self.emitted.append(event)
        for endpoint in endpoints:
            if not endpoint.enabled:
                self._record(event, endpoint, 0, None, "endpoint_disabled")
                continue
            self._spawn(self._deliver(endpoint, event))
        return event

    # -- endpoints ------------------------------------------------------------------------

    def endpoint(self, key: str) -> EndpointState:
        """A known endpoint by URL (workspace) or id (organization); KeyError if none."""
        if key not in self.endpoints and key in self._config().webhook_urls:
            return self._workspace(key)
        return self.endpoints[key]

    def add_organization_endpoint(
        self, endpoint_id: str, url: str, secret: str, events: list[str]
    ) -> EndpointState:
        endpoint = EndpointState(
            endpoint_id,
            url,
            "organization",
            secret=secret,
            events=frozenset(events),
            created_at=rfc3339(self._clock.now()),
        )
        self.endpoints[endpoint_id] = endpoint
        return endpoint

    def remove(self, key: str) -> None:
        """Forget an endpoint: a deleted organization endpoint, or a workspace URL (re)added
        to the config, which starts afresh."""
        self.endpoints.pop(key, None)

    def enable(self, key: str) -> EndpointState:
        """Enabled again with a clean failure count; what was missed is not replayed."""
        endpoint = self.endpoint(key)
        endpoint.enabled = True
        endpoint.disabled_reason = None
        endpoint.consecutive_failed_deliveries = 0
        endpoint.failing_since = None
        return endpoint

    def disable(self, key: str, reason: DisabledReason = "caller") -> EndpointState:
        endpoint = self.endpoint(key)
        self._disable(endpoint, reason)
        return endpoint

    def log_entries(self) -> list[dict[str, Any]]:
        return [asdict(a) for a in self.attempts]

    def endpoint_states(self) -> list[dict[str, Any]]:
        """Every endpoint: the configured workspace URLs (used or not), then the rest."""
        return [e.public() for e in self._all(self._config(), include_unlisted=True)]

    def reset(self) -> None:
        self.cancel_all()
        self.endpoints.clear()
        self.attempts.clear()
        self.emitted.clear()
        self._held.clear()

    def pending(self) -> int:
        return len(self._tasks) + len(self._held)

    def cancel_all(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        self._tasks.clear()
        if self._hold_timer is not None:
            self._hold_timer.cancel()
            self._hold_timer = None

    async def aclose(self) -> None:
        self.cancel_all()
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def _workspace(self, url: str) -> EndpointState:
        endpoint = self.endpoints.get(url)
        if endpoint is None:
            endpoint = EndpointState(url, url, created_at=rfc3339(self._clock.now()))
            self.endpoints[url] = endpoint
        return endpoint

    def _all(self, cfg: EmulatorConfig, include_unlisted: bool = False) -> list[EndpointState]:
        workspace = [self._workspace(url) for url in cfg.webhook_urls]
        rest = [
            e
            for e in self.endpoints.values()
            if e.kind == "organization" or (include_unlisted and e.key not in cfg.webhook_urls)
        ]
        return workspace + rest

    def _endpoints_for(self, data_type: str, cfg: EmulatorConfig) -> list[EndpointState]:
        return [e for e in self._all(cfg) if e.wants(data_type)]

    def _envelope(
        self, data_type: str, data_id: str, extra: dict[str, Any], cfg: EmulatorConfig
    ) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": data_id,
            "type": data_type,
            "organization_id": cfg.organization_id,
        }
        if data_type not in ORGANIZATION_EVENT_TYPES:
            data["workspace_id"] = cfg.workspace_id
        data.update(extra)
        return {
            "id": new_id("wevt_"),
            "created_at": rfc3339(self._clock.now()),
            "type": "event",
            "data": data,
        }

    # -- reordering -----------------------------------------------------------------------

    def _hold(self, held: _Held, cfg: EmulatorConfig) -> None:
        self._held.append(held)
        if len(self._held) >= cfg.faults.reorder_window:
            self._release()
        elif self._hold_timer is None:
            self._hold_timer = asyncio.create_task(
                self._release_later(cfg.faults.reorder_max_hold_seconds)
            )

    async def _release_later(self, emulated: float) -> None:
        await self._clock.sleep(emulated)
        self._hold_timer = None
        self._release()

    def _release(self) -> None:
        held, self._held = self._held, []
        if self._hold_timer is not None and self._hold_timer is not asyncio.current_task():
            self._hold_timer.cancel()
        self._hold_timer = None
        self._rng.shuffle(held)
        # Sequential, so the shuffled order is the order the receiver sees.
        self._spawn(self._deliver_in_order(held))

    async def _deliver_in_order(self, held: list[_Held]) -> None:
        for item in held:
            await self._deliver_planned(item.endpoint, item.event, item.plan)

    # -- delivery -------------------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver_planned(
        self, endpoint: EndpointState, event: dict[str, Any], plan: DeliveryPlan
    ) -> None:
        if plan.delay_seconds > 0:
            await self._clock.sleep(plan.delay_seconds)
        for _ in range(plan.copies):
            if plan.burst > 1:
                await asyncio.gather(*(self._deliver(endpoint, event) for _ in range(plan.burst)))
            else:
                await self._deliver(endpoint, event)

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                transport=self._transport, follow_redirects=False, trust_env=False
            )
        return self._client

    async def _deliver(self, endpoint: EndpointState, event: dict[str, Any]) -> None:
        payload = json.dumps(event, separators=(",", ":"))
        cfg = self._config()
        for attempt in range(1, cfg.webhook_max_attempts + 1):
            if not endpoint.enabled or self.endpoints.get(endpoint.key) is not endpoint:
                # Disabled (or deleted) since: nothing more goes out, retries included.
                self._record(event, endpoint, attempt, None, "endpoint_disabled")
                return
            if cfg.disable_on_private_address and await private_address(endpoint.url):
                self._record(event, endpoint, attempt, None, "invalid_address")
                self._disable(endpoint, "invalid_address")
                return
            secrets = [endpoint.secret] if endpoint.secret else cfg.webhook_secrets
            outcome, status, ts, error = await self._post(
                endpoint.url, event["id"], payload, secrets, cfg
            )
            self._record(event, endpoint, attempt, status, outcome, ts, error)
            if outcome == "delivered":
                endpoint.consecutive_failed_deliveries = 0
                endpoint.failing_since = None
                endpoint.delivered += 1
                return
            endpoint.failed += 1
            endpoint.consecutive_failed_deliveries += 1
            if endpoint.failing_since is None:
                endpoint.failing_since = self._clock.elapsed()
            if outcome == "redirect":
                self._disable(endpoint, "redirect")
                return
            if (
                endpoint.consecutive_failed_deliveries >= cfg.disable_after_failed_deliveries
                and self._clock.elapsed() - endpoint.failing_since >= cfg.disable_after_seconds
            ):
                self._disable(endpoint, "sustained_failure")
                return
            if attempt < cfg.webhook_max_attempts:
                await self._clock.sleep(
                    backoff_seconds(
                        attempt,
                        cfg.webhook_backoff_min_seconds,
                        cfg.webhook_backoff_max_seconds,
                        self._rng,
                    )
                )

    async def _post(
        self, url: str, msg_id: str, payload: str, secrets: list[str], cfg: EmulatorConfig
    ) -> tuple[str, int | None, int, str | None]:
        now = self._clock.now()
        timestamp = int(now.timestamp())
        headers = {
            "content-type": "application/json",
            "user-agent": "Anthropic-Webhooks-Emulator/1",
            "webhook-id": msg_id,
            "webhook-timestamp": str(timestamp),
        }
        if secrets:
            headers["webhook-signature"] = sign(secrets, msg_id, now, payload)
        try:
            response = await self._http().post(
                url, content=payload.encode(), headers=headers, timeout=cfg.webhook_timeout_seconds
            )
        except Exception as exc:
            # Not only httpx.HTTPError: a peer killed mid-connect can surface as an
            # AttributeError from httpcore/anyio. Any failure to get an answer is a failed
            # attempt to retry, as Anthropic's sender would; never a silently lost event.
            return "error", None, timestamp, type(exc).__name__
        if 200 <= response.status_code < 300:
            return "delivered", response.status_code, timestamp, None
        if 300 <= response.status_code < 400:
            return "redirect", response.status_code, timestamp, None
        return "failed", response.status_code, timestamp, None

    def _disable(self, endpoint: EndpointState, reason: DisabledReason) -> None:
        endpoint.enabled = False
        endpoint.disabled_reason = reason
        log.warning(
            "webhook.endpoint_disabled", endpoint=endpoint.key, url=endpoint.url, reason=reason
        )

    def _record(
        self,
        event: dict[str, Any],
        endpoint: EndpointState,
        attempt: int,
        status: int | None,
        outcome: str,
        timestamp: int | None = None,
        error: str | None = None,
    ) -> None:
        data = event.get("data")
        data = data if isinstance(data, dict) else {}
        record = AttemptRecord(
            event_id=event["id"],
            type=str(data.get("type", event.get("type"))),
            data_id=str(data.get("id", "")),
            url=endpoint.url,
            endpoint=endpoint.key,
            attempt=attempt,
            status=status,
            outcome=outcome,
            at=rfc3339(self._clock.now()),
            timestamp=timestamp,
            error=error,
        )
        self.attempts.append(record)
        log.info(
            "webhook.attempt",
            event_id=record.event_id,
            event_type=record.type,
            url=endpoint.url,
            attempt=attempt,
            status=status,
            outcome=outcome,
        )
