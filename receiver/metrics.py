"""Prometheus metrics for the webhook edge, on prometheus_client's default REGISTRY.

Labels are bounded: event types outside the SDK's known set count as "other", rejection
reasons are fixed tokens, key labels are bounded by the configured and stored keys.
"""

import bisect
import threading
from collections.abc import Callable, Iterator

import structlog
from prometheus_client import REGISTRY, Counter, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

log = structlog.get_logger(__name__)


class LoopCounter(Collector):
    """A labelled counter bumped on the webhook path, read when /metrics is scraped.

    prometheus_client's Counter takes a lock on every increment, because any thread may share
    it; deliveries are counted on the receiver's event loop thread alone, where a dict
    increment needs none (the lock and label lookup cost a fifth of the HMAC, per delivery).
    """

    def __init__(
        self, name: str, documentation: str, labelnames: tuple[str, ...], register: bool = True
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = labelnames
        self.values: dict[tuple[str, ...], int] = {}
        if register:
            REGISTRY.register(self)

    def inc(self, *labels: str) -> None:
        self.values[labels] = self.values.get(labels, 0) + 1

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for labels, value in list(self.values.items()):
            family.add_metric(list(labels), value)
        yield family

    def describe(self) -> Iterator[Metric]:
        yield CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)


class LoopHistogram(Collector):
    """A histogram observed on the webhook path, likewise without a lock per observation."""

    def __init__(
        self, name: str, documentation: str, buckets: tuple[float, ...], register: bool = True
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.bounds = buckets
        self.labels = [repr(float(b)) for b in buckets]  # the `le` text prometheus_client writes
        self.counts = [0] * (len(buckets) + 1)  # the last: above every bound (+Inf only)
        self.total = 0.0
        if register:
            REGISTRY.register(self)

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value

    def collect(self) -> Iterator[Metric]:
        cumulative: list[tuple[str, float]] = []
        running = 0
        for label, count in zip(self.labels, self.counts, strict=False):
            running += count
            cumulative.append((label, running))
        cumulative.append(("+Inf", running + self.counts[-1]))
        yield HistogramMetricFamily(
            self.name, self.documentation, buckets=cumulative, sum_value=self.total
        )

    def describe(self) -> Iterator[Metric]:
        yield HistogramMetricFamily(self.name, self.documentation)


DELIVERIES = LoopCounter(
    "idlehook_webhook_deliveries",
    "Webhook deliveries by event type and outcome (stored, duplicate, rejected).",
    ("event_type", "outcome"),
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
KEY_MATCHES = LoopCounter(
    "idlehook_webhook_signing_key_matches",
    "Verified deliveries by the signing key that matched (rotation progress): an environment "
    "key's index, or a stored key's fingerprint (`idlehook keys list`).",
    ("key_index",),
)
BATCH_SIZE = Histogram(
    "idlehook_inbox_batch_size",
    "Deliveries committed per inbox transaction (group commit).",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
)
ACK_SECONDS = LoopHistogram(
    "idlehook_webhook_ack_seconds",
    "Time from request start to the response, for answered webhook deliveries.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
# Key indexes are few (one per configured signing key); their label strings are made once.
_KEY_LABELS = tuple(str(i) for i in range(64))


def delivered(event_type: str, outcome: str) -> None:
    DELIVERIES.inc(event_type, outcome)


def key_matched(key: int | str) -> None:
    """Count a match under the key's label (SigningKey.label), or an environment key's index."""
    if isinstance(key, str):
        KEY_MATCHES.inc(key)
        return
    KEY_MATCHES.inc(_KEY_LABELS[key] if 0 <= key < len(_KEY_LABELS) else str(key))


class StoreGauge(Collector):
    """A gauge read from the store at scrape time (one cheap count), from the newest source."""

    def __init__(self, name: str, documentation: str) -> None:
        self.name = name
        self.documentation = documentation
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
            log.warning("metrics.store_gauge_unavailable", name=self.name, error=type(exc).__name__)
            return
        gauge = GaugeMetricFamily(self.name, self.documentation)
        gauge.add_metric([], depth)
        yield gauge

    def describe(self) -> Iterator[Metric]:
        return iter(())  # not known before the first scrape; keeps registration side-effect free


INBOX_DEPTH = StoreGauge(
    "idlehook_inbox_depth", "Handler runs not yet finished (pending, running, failed)."
)
REGISTRY.register(INBOX_DEPTH)
UNSAVED_OUTCOMES = StoreGauge(
    "idlehook_unsaved_outcomes",
    "Sessions that ended (idle or terminated, not waiting on input, not deleted) whose latest "
    "outcome no route has saved: failed runs nobody was told about.",
)
REGISTRY.register(UNSAVED_OUTCOMES)
