"""Webhook delivery as Anthropic does it: thin signed events POSTed from background tasks, at
most N attempts per event per endpoint with jittered backoff, the same `webhook-id` on every
attempt and the timestamp re-stamped, then dropped for good. A 3xx disables the endpoint at
once; sustained failure disables it too. Faults (drop, duplicate, delay, reorder, burst) are
applied here. Every attempt is logged for tests."""

import asyncio
import json
import random
from collections.abc import Callable, Coroutine
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx
import structlog
from standardwebhooks import Webhook

from emulator.clock import SpeedClock, rfc3339
from emulator.config import EmulatorConfig
from emulator.faults import DeliveryPlan, plan_delivery
from emulator.ids import new_id

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class AttemptRecord:
    event_id: str
    type: str
    data_id: str
    url: str
    attempt: int
    status: int | None
    outcome: str  # delivered | failed | error | redirect | dropped | endpoint_disabled
    at: str
    timestamp: int | None = None
    error: str | None = None


@dataclass
class EndpointState:
    url: str
    enabled: bool = True
    disabled_reason: str | None = None
    consecutive_failed_events: int = 0
    failing_since: float | None = None
    delivered: int = 0


@dataclass
class _Held:
    url: str
    event: dict[str, Any]
    plan: DeliveryPlan


@dataclass
class SentEvent:
    event: dict[str, Any]
    urls: list[str] = field(default_factory=list)


def sign(secrets: list[str], msg_id: str, timestamp: Any, payload: str) -> str:
    """One `v1,<sig>` entry per secret, space-separated: receivers knowing any one verify."""
    return " ".join(Webhook(secret).sign(msg_id, timestamp, payload) for secret in secrets)


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
        cfg = self._config()
        event = {
            "id": new_id("wevt_"),
            "created_at": rfc3339(self._clock.now()),
            "type": "event",
            "data": {
                "id": data_id,
                "type": data_type,
                "organization_id": cfg.organization_id,
                "workspace_id": cfg.workspace_id,
                **extra,
            },
        }
        self.emitted.append(event)
        for url in cfg.webhook_urls:
            endpoint = self.endpoints.setdefault(url, EndpointState(url))
            if not endpoint.enabled:
                self._record(event, url, 0, None, "endpoint_disabled")
                continue
            plan = plan_delivery(cfg.faults, self._rng)
            if plan.drop:
                self._record(event, url, 0, None, "dropped")
                continue
            if cfg.faults.reorder_window > 1:
                self._hold(_Held(url, event, plan), cfg)
            else:
                self._spawn(self._deliver_planned(url, event, plan))
        return event

    def enable(self, url: str) -> None:
        self.endpoints[url] = EndpointState(url)

    def log_entries(self) -> list[dict[str, Any]]:
        return [asdict(a) for a in self.attempts]

    def endpoint_states(self) -> list[dict[str, Any]]:
        return [asdict(e) for e in self.endpoints.values()]

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
            await self._deliver_planned(item.url, item.event, item.plan)

    # -- delivery -------------------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver_planned(self, url: str, event: dict[str, Any], plan: DeliveryPlan) -> None:
        if plan.delay_seconds > 0:
            await self._clock.sleep(plan.delay_seconds)
        for _ in range(plan.copies):
            if plan.burst > 1:
                await asyncio.gather(*(self._deliver(url, event) for _ in range(plan.burst)))
            else:
                await self._deliver(url, event)

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                transport=self._transport, follow_redirects=False, trust_env=False
            )
        return self._client

    async def _deliver(self, url: str, event: dict[str, Any]) -> None:
        payload = json.dumps(event, separators=(",", ":"))
        cfg = self._config()
        for attempt in range(1, cfg.webhook_max_attempts + 1):
            endpoint = self.endpoints.setdefault(url, EndpointState(url))
            if not endpoint.enabled:
                self._record(event, url, attempt, None, "endpoint_disabled")
                return
            outcome, status, ts, error = await self._post(url, event["id"], payload, cfg)
            self._record(event, url, attempt, status, outcome, ts, error)
            if outcome == "delivered":
                endpoint.consecutive_failed_events = 0
                endpoint.failing_since = None
                endpoint.delivered += 1
                return
            if outcome == "redirect":
                self._disable(endpoint, f"redirect ({status})")
                return
            if endpoint.failing_since is None:
                endpoint.failing_since = self._clock.elapsed()
            if attempt < cfg.webhook_max_attempts:
                await self._clock.sleep(
                    backoff_seconds(
                        attempt,
                        cfg.webhook_backoff_min_seconds,
                        cfg.webhook_backoff_max_seconds,
                        self._rng,
                    )
                )
        endpoint = self.endpoints.setdefault(url, EndpointState(url))
        endpoint.consecutive_failed_events += 1
        since = endpoint.failing_since if endpoint.failing_since is not None else 0.0
        if (
            endpoint.consecutive_failed_events >= cfg.disable_after_failed_events
            and self._clock.elapsed() - since >= cfg.disable_after_seconds
        ):
            self._disable(endpoint, "sustained failure")

    async def _post(
        self, url: str, msg_id: str, payload: str, cfg: EmulatorConfig
    ) -> tuple[str, int | None, int, str | None]:
        now = self._clock.now()
        timestamp = int(now.timestamp())
        headers = {
            "content-type": "application/json",
            "user-agent": "Anthropic-Webhooks-Emulator/1",
            "webhook-id": msg_id,
            "webhook-timestamp": str(timestamp),
        }
        if cfg.webhook_secrets:
            headers["webhook-signature"] = sign(cfg.webhook_secrets, msg_id, now, payload)
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

    def _disable(self, endpoint: EndpointState, reason: str) -> None:
        endpoint.enabled = False
        endpoint.disabled_reason = reason
        log.warning("webhook.endpoint_disabled", url=endpoint.url, reason=reason)

    def _record(
        self,
        event: dict[str, Any],
        url: str,
        attempt: int,
        status: int | None,
        outcome: str,
        timestamp: int | None = None,
        error: str | None = None,
    ) -> None:
        record = AttemptRecord(
            event_id=event["id"],
            type=event["data"]["type"],
            data_id=event["data"]["id"],
            url=url,
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
            url=url,
            attempt=attempt,
            status=status,
            outcome=outcome,
        )
