"""The local journal in /metrics: how much waits in it, how old, and what was moved out.

Read at scrape time from the journal and drainer this process runs (no I/O: both keep their
figures in memory). Nothing is exported while no journal is attached.
"""

import threading
import time
from collections.abc import Iterator

from prometheus_client import REGISTRY
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from store.journal import Journal
from store.journal_drain import JournalDrainer


class JournalCollector(Collector):
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._attached: list[tuple[Journal, JournalDrainer]] = []

    def attach(self, journal: Journal, drainer: JournalDrainer) -> None:
        with self._lock:
            self._attached.append((journal, drainer))

    def detach(self, journal: Journal) -> None:
        with self._lock:
            self._attached = [a for a in self._attached if a[0] is not journal]

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            attached = self._attached[-1] if self._attached else None
        if attached is None:
            return
        journal, drainer = attached
        stats = journal.stats()
        oldest = stats.oldest_seconds(time.time())
        yield _gauge(
            "idlehook_journal_depth",
            "Verified deliveries acknowledged from the local journal, not yet in the store.",
            stats.depth,
        )
        yield _gauge(
            "idlehook_journal_oldest_seconds",
            "Age of the oldest delivery waiting in the local journal (0 when empty).",
            oldest or 0.0,
        )
        yield _gauge("idlehook_journal_bytes", "Bytes in the local journal's files.", stats.bytes)
        yield _gauge(
            "idlehook_journal_writable",
            "1 if the local journal would take a delivery now (the store's fallback), else 0.",
            0 if journal.unwritable() else 1,
        )
        counts = drainer.counts
        drained = CounterMetricFamily(
            "idlehook_journal_drained",
            "Journaled records moved into the store, by outcome (stored, duplicate, rejected: "
            "refused by the store and set aside in the journal's rejected/).",
            labels=["outcome"],
        )
        drained.add_metric(["stored"], counts.stored)
        drained.add_metric(["duplicate"], counts.duplicates)
        drained.add_metric(["rejected"], counts.rejected)
        yield drained
        yield CounterMetricFamily(
            "idlehook_journal_skipped_bytes",
            "Journal bytes that were no valid record (torn tails after a crash), skipped.",
            value=counts.skipped_bytes,
        )

    def describe(self) -> Iterator[Metric]:
        return iter(())  # nothing before a journal is attached


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    gauge = GaugeMetricFamily(name, documentation)
    gauge.add_metric([], value)
    return gauge


JOURNAL = JournalCollector()
REGISTRY.register(JOURNAL)
