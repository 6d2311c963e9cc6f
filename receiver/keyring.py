"""KeyRing: the signing keys a receiver verifies with, refreshed from the store off the hot path.

The environment's keys (fixed for the process) plus the store's (`idlehook keys add|retire`,
store/signing_keys.py). A background task in the app's lifespan reloads the store's every few
seconds and swaps `current`, an immutable tuple, in one assignment: the webhook path reads that
attribute and never touches the database. A failed or hung reload keeps the last good set (minus
keys whose grace period has since ended) and is logged once, not once per tick.
"""

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import Any

import structlog
from prometheus_client import REGISTRY
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from receiver.config import DEFAULT_KEY_REFRESH_SECONDS
from receiver.verify import SigningKey
from store.signing_keys import VerifyingKey

log = structlog.get_logger(__name__)

# A reload still unanswered after this is treated as failed; the next tick waits for the same
# one rather than piling up threads behind a hung database.
LOAD_TIMEOUT_SECONDS = 10.0

Loader = Callable[[datetime], Sequence[VerifyingKey]]


class KeyRing:
    def __init__(
        self,
        env_keys: Sequence[SigningKey],
        load: Loader | None = None,
        *,
        now: Callable[[], datetime],
        every: float = DEFAULT_KEY_REFRESH_SECONDS,
        load_timeout: float = LOAD_TIMEOUT_SECONDS,
    ) -> None:
        self.env_keys = tuple(env_keys)
        self.load = load
        self.now = now
        self.every = every
        self.load_timeout = load_timeout
        # Read on every delivery: replaced whole, never changed in place.
        self.current: tuple[SigningKey, ...] = self.env_keys
        # The stored keys in `current`, with when each stops verifying (None: live).
        self._stored: tuple[tuple[SigningKey, datetime | None], ...] = ()
        self._env_secrets = frozenset(k.secret for k in self.env_keys)
        self._failing = False
        self._inflight: asyncio.Future[Sequence[VerifyingKey]] | None = None
        self.refreshed_at: float | None = None  # Unix time of the last good reload

    def states(self) -> list[tuple[str, str]]:
        """(label, state) of each key in `current`: `live`, or `retiring` inside its grace."""
        stored = {key.label: ("live" if end is None else "retiring") for key, end in self._stored}
        return [(key.label, stored.get(key.label, "live")) for key in self.current]

    async def refresh(self) -> bool:
        """Reload the stored keys; True when the store answered."""
        now = self.now()
        if self.load is None:
            return True
        if self._inflight is None:
            self._inflight = asyncio.ensure_future(asyncio.to_thread(self.load, now))
        try:
            # Shielded: a reload that times out goes on, and the next tick waits for it.
            loaded = await asyncio.wait_for(asyncio.shield(self._inflight), self.load_timeout)
        except Exception as exc:  # the store is down or slow: keep what we had
            if not isinstance(exc, TimeoutError):
                self._inflight = None
            self._prune(self.now())
            if not self._failing:
                self._failing = True
                log.warning(
                    "webhook_keys.refresh_failed",
                    error=f"{type(exc).__name__}: {str(exc)[:200]}",
                    kept=[key.label for key in self.current],
                )
            return False
        self._inflight = None
        if self._failing:
            self._failing = False
            log.info("webhook_keys.refresh_recovered")
        self._install(loaded)
        self._prune(self.now())  # a reload that answered late may hold keys expired meanwhile
        self.refreshed_at = time.time()
        return True

    async def run(self, stopping: asyncio.Event) -> None:
        """Refresh every `every` seconds until `stopping` is set."""
        while not stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), timeout=self.every)
            if not stopping.is_set():
                await self.refresh()

    def _install(self, loaded: Sequence[VerifyingKey]) -> None:
        stored = tuple(
            (SigningKey(index=-k.id, secret=k.secret, label=k.fingerprint), k.expires_at)
            for k in loaded
            # A stored copy of an environment key adds nothing: the environment's always holds.
            if k.secret not in self._env_secrets
        )
        self._swap(stored)

    def _prune(self, now: datetime) -> None:
        kept = tuple((key, end) for key, end in self._stored if end is None or end > now)
        if len(kept) != len(self._stored):
            self._swap(kept)

    def _swap(self, stored: tuple[tuple[SigningKey, datetime | None], ...]) -> None:
        # Tried in order: live stored keys (newest first: after a rotation the newest signs
        # nearly everything), then the environment's, then stored keys in their grace period.
        live = tuple(key for key, end in stored if end is None)
        retiring = tuple(key for key, end in stored if end is not None)
        before = dict(self.states())
        self._stored = stored
        self.current = (*live, *self.env_keys, *retiring)
        after = dict(self.states())
        if before != after:
            # Labels only (indexes and fingerprints): never a secret.
            log.info(
                "webhook_keys.changed",
                verifying=[f"{label}:{state}" for label, state in after.items()],
                added=sorted(after.keys() - before.keys()),
                removed=sorted(before.keys() - after.keys()),
            )


class KeyRingGauges(Collector):
    """This receiver's key set for Prometheus: `idlehook_webhook_signing_key_loaded{key_index,
    state}` is 1 for each key it verifies with now (so a rotation can wait until every receiver
    shows the new key), plus when it last reloaded them from the store."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rings: list[KeyRing] = []

    def attach(self, ring: KeyRing) -> None:
        with self._lock:
            self._rings.append(ring)

    def detach(self, ring: KeyRing) -> None:
        with self._lock:
            if ring in self._rings:
                self._rings.remove(ring)

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            ring = self._rings[-1] if self._rings else None
        if ring is None:
            return
        loaded = GaugeMetricFamily(
            "idlehook_webhook_signing_key_loaded",
            "Signing keys this receiver verifies with now, by key_index label (an environment "
            "key's index, a stored key's fingerprint) and state (live, retiring).",
            labels=("key_index", "state"),
        )
        for label, state in ring.states():
            loaded.add_metric([label, state], 1)
        yield loaded
        if ring.refreshed_at is not None:
            refreshed = GaugeMetricFamily(
                "idlehook_webhook_signing_keys_refreshed_timestamp_seconds",
                "When this receiver last reloaded its signing keys from the store (Unix time).",
            )
            refreshed.add_metric([], ring.refreshed_at)
            yield refreshed

    def describe(self) -> Iterator[Any]:
        return iter(())


GAUGES = KeyRingGauges()
REGISTRY.register(GAUGES)
