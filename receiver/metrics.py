"""Prometheus metrics for the webhook edge, on prometheus_client's default REGISTRY.

Labels are bounded: event types outside the SDK's known set count as "other", rejection
reasons are fixed tokens, key indexes are bounded by the configured keys.
"""

import functools
import threading
from collections.abc import Callable, Iterator

import structlog
from prometheus_client import REGISTRY, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

log = structlog.get_logger(__name__)

DELIVERIES = Counter(
    "idlehook_webhook_deliveries",
    "Webhook deliveries by event type and outcome (stored, duplicate, rejected).",
    ["event_type", "outcome"],
)
REJECTIONS = Counter(
    "idlehook_webhook_rejections",
    "Webhook requests refused, by reason and status.",
    ["reason", "status"],
)
SIGNATURE_FAILURES = Counter(
    "idlehook_webhook_signature_failures",
    "Webhook signature checks that failed, by reason.",
    ["reason"],
)
KEY_MATCHES = Counter(
    "idlehook_webhook_signing_key_matches",
    "Verified deliveries by the index of the signing key that matched (rotation progress).",
    ["key_index"],
)
BATCH_SIZE = Histogram(
    "idlehook_inbox_batch_size",
    "Deliveries committed per inbox transaction (group commit).",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
)
ACK_SECONDS = Histogram(
    "idlehook_webhook_ack_seconds",
    "Time from request start to the response, for answered webhook deliveries.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)


# The webhook path counts every delivery; `labels()` re-validates and locks on each call, so
# its children are looked up once per label set (the sets are bounded, see above).
@functools.lru_cache(maxsize=512)
def _delivery_counter(event_type: str, outcome: str) -> Counter:
    return DELIVERIES.labels(event_type, outcome)


@functools.lru_cache(maxsize=64)
def _key_counter(key_index: int) -> Counter:
    return KEY_MATCHES.labels(str(key_index))


def delivered(event_type: str, outcome: str) -> None:
    _delivery_counter(event_type, outcome).inc()


def key_matched(key_index: int) -> None:
    _key_counter(key_index).inc()


class InboxDepthCollector(Collector):
    """`idlehook_inbox_depth`, read from the store at scrape time (one cheap count)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sources: list[Callable[[], int]] = []

    def attach(self, source: Callable[[], int]) -> None:
        with self._lock:
            self._sources.append(source)

    def detach(self, source: Callable[[], int]) -> None:
        with self._lock:
            if source in self._sources:
                self._sources.remove(source)

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            source = self._sources[-1] if self._sources else None
        if source is None:
            return
        try:
            depth = source()
        except Exception as exc:  # a scrape must not fail because the store is down
            log.warning("metrics.depth_unavailable", error=type(exc).__name__)
            return
        gauge = GaugeMetricFamily(
            "idlehook_inbox_depth", "Handler runs not yet finished (pending, running, failed)."
        )
        gauge.add_metric([], depth)
        yield gauge

    def describe(self) -> Iterator[Metric]:
        return iter(())  # not known before the first scrape; keeps registration side-effect free


INBOX_DEPTH = InboxDepthCollector()
REGISTRY.register(INBOX_DEPTH)
