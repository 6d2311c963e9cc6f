"""The webhook path's lock-free counters expose exactly what prometheus_client's would."""

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.registry import Collector

from receiver import metrics

BUCKETS = (0.001, 0.0025, 0.01, 1.0, 10.0)
OBSERVED = [0.0005, 0.001, 0.002, 0.0025, 0.3, 1.0, 9.99, 10.0, 11.0, 250.0]


def _exposition(*collectors: Collector) -> list[str]:
    registry = CollectorRegistry()
    for collector in collectors:
        registry.register(collector)
    lines = generate_latest(registry).decode().splitlines()
    # prometheus_client's own metrics add a `_created` timestamp; that is not a value.
    return [line for line in lines if "_created" not in line]


def test_loop_histogram_matches_prometheus_client_bucket_for_bucket() -> None:
    ours = metrics.LoopHistogram("t_ours_seconds", "doc", BUCKETS, register=False)
    theirs = Histogram("t_ours_seconds", "doc", buckets=BUCKETS, registry=None)
    for value in OBSERVED:
        ours.observe(value)
        theirs.observe(value)
    assert _exposition(ours) == _exposition(theirs)


def test_loop_counter_matches_prometheus_client_label_for_label() -> None:
    ours = metrics.LoopCounter("t_events", "doc", ("kind", "outcome"), register=False)
    theirs = Counter("t_events", "doc", ["kind", "outcome"], registry=None)
    for labels in [("a", "stored"), ("a", "stored"), ("b", "duplicate"), ("a", "rejected")]:
        ours.inc(*labels)
        theirs.labels(*labels).inc()
    assert _exposition(ours) == _exposition(theirs)


def test_the_shared_counters_are_registered_and_count() -> None:
    before = metrics.DELIVERIES.values.get(("session.status_idled", "stored"), 0)
    metrics.delivered("session.status_idled", "stored")
    assert metrics.DELIVERIES.values[("session.status_idled", "stored")] == before + 1
    metrics.key_matched(70)  # past the precomputed labels
    assert metrics.KEY_MATCHES.values[("70",)] >= 1
