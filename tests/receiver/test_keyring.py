"""KeyRing: the environment's keys plus the store's, swapped whole off the hot path; a failing
store keeps the last good set (logged once) and keys still drop out when their grace ends."""

import asyncio
import base64
import threading
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import httpx
from prometheus_client import REGISTRY
from structlog.testing import capture_logs

from receiver.keyring import GAUGES, KeyRing
from receiver.verify import SigningKey, verify
from store import signing_keys
from store.signing_keys import VerifyingKey
from tests.receiver.conftest import KEY_A, WEBHOOK, Receiver, event_body, signed_headers
from tests.support.servers import wait_for

T0 = datetime(2026, 12, 10, 12, 0, tzinfo=UTC)
ENV = SigningKey.parse(0, KEY_A)
NEW = VerifyingKey(2, "2222aaaa", None, b"N" * 32)
OLD = VerifyingKey(1, "1111aaaa", T0 + timedelta(minutes=10), b"O" * 32)


class Clock:
    def __init__(self) -> None:
        self.at = T0

    def __call__(self) -> datetime:
        return self.at


class FakeStore:
    """What `signing_keys.verifying` would answer, or an outage."""

    def __init__(self, keys: Sequence[VerifyingKey]) -> None:
        self.keys = list(keys)
        self.down: Exception | None = None
        self.hang = threading.Event()  # set: loads block until released
        self.release = threading.Event()
        self.calls = 0

    def __call__(self, now: datetime) -> list[VerifyingKey]:
        self.calls += 1
        if self.hang.is_set():
            self.release.wait(10)
        if self.down is not None:
            raise self.down
        return [k for k in self.keys if k.expires_at is None or k.expires_at > now]


def labels(ring: KeyRing) -> list[str]:
    return [key.label for key in ring.current]


async def test_store_keys_join_the_environments_in_order_and_are_labelled() -> None:
    ring = KeyRing([ENV], FakeStore([OLD, NEW]), now=Clock())
    assert labels(ring) == ["0"]  # before the first reload: the environment alone
    assert await ring.refresh()
    # Live stored keys first, the environment's, then keys in their grace.
    assert labels(ring) == ["2222aaaa", "0", "1111aaaa"]
    assert [key.index for key in ring.current] == [-2, 0, -1]
    assert ring.states() == [("2222aaaa", "live"), ("0", "live"), ("1111aaaa", "retiring")]
    assert "NNNN" not in repr(ring.current)


async def test_a_stored_key_verifies_and_reports_its_fingerprint() -> None:
    ring = KeyRing([], FakeStore([NEW]), now=Clock())
    await ring.refresh()
    secret = "whsec_" + base64.b64encode(NEW.secret).decode()
    body = b'{"a":1}'
    got = verify(body, signed_headers(body, "m", secret=secret, at=T0), ring.current, now=T0)
    assert (got.key_index, got.key_label) == (-2, "2222aaaa")


async def test_a_stored_copy_of_an_environment_key_is_not_tried_twice() -> None:
    copy = VerifyingKey(7, "77777777", None, ENV.secret)
    ring = KeyRing([ENV], FakeStore([copy]), now=Clock())
    await ring.refresh()
    assert labels(ring) == ["0"]


async def test_a_failed_reload_keeps_the_last_set_and_is_logged_once() -> None:
    store = FakeStore([NEW])
    clock = Clock()
    ring = KeyRing([ENV], store, now=clock)
    await ring.refresh()
    before = ring.current
    store.down = ConnectionError("store is down")
    with capture_logs() as logs:
        for _ in range(3):
            assert not await ring.refresh()
        assert ring.current is before
        store.down = None
        store.keys.append(OLD)
        assert await ring.refresh()
    events = [e["event"] for e in logs]
    assert events.count("webhook_keys.refresh_failed") == 1
    assert events.count("webhook_keys.refresh_recovered") == 1
    assert labels(ring) == ["2222aaaa", "0", "1111aaaa"]


async def test_a_grace_ends_on_time_even_while_the_store_is_down() -> None:
    store = FakeStore([NEW, OLD])
    clock = Clock()
    ring = KeyRing([ENV], store, now=clock)
    await ring.refresh()
    store.down = ConnectionError("down")
    clock.at = OLD.expires_at  # type: ignore[assignment]
    await ring.refresh()
    assert labels(ring) == ["2222aaaa", "0"]


async def test_a_hung_store_is_waited_for_once_not_piled_up() -> None:
    store = FakeStore([NEW])
    ring = KeyRing([ENV], store, now=Clock(), load_timeout=0.05)
    store.hang.set()
    try:
        assert not await ring.refresh()
        assert not await ring.refresh()
        assert store.calls == 1  # the second tick waited for the same reload
        assert labels(ring) == ["0"]
    finally:
        store.release.set()
    store.hang.clear()
    assert await ring.refresh()  # the hung reload's answer, once it came
    assert labels(ring) == ["2222aaaa", "0"]


async def test_the_background_refresh_picks_up_a_new_key_within_its_period() -> None:
    store = FakeStore([])
    ring = KeyRing([ENV], store, now=Clock(), every=0.02)
    stopping = asyncio.Event()
    task = asyncio.create_task(ring.run(stopping))
    try:
        store.keys.append(NEW)
        for _ in range(200):
            if "2222aaaa" in labels(ring):
                break
            await asyncio.sleep(0.01)
        assert labels(ring) == ["2222aaaa", "0"]
    finally:
        stopping.set()
        await asyncio.wait_for(task, 1)


async def test_the_gauges_show_the_newest_ring() -> None:
    ring = KeyRing([ENV], FakeStore([NEW, OLD]), now=Clock())
    await ring.refresh()
    GAUGES.attach(ring)
    try:
        sample = REGISTRY.get_sample_value
        name = "idlehook_webhook_signing_key_loaded"
        assert sample(name, {"key_index": "2222aaaa", "state": "live"}) == 1
        assert sample(name, {"key_index": "1111aaaa", "state": "retiring"}) == 1
        assert sample(name, {"key_index": "0", "state": "live"}) == 1
        assert sample("idlehook_webhook_signing_keys_refreshed_timestamp_seconds") is not None
    finally:
        GAUGES.detach(ring)


async def test_a_ring_without_a_store_is_the_environment_alone() -> None:
    ring = KeyRing([ENV], now=Clock())
    assert await ring.refresh()
    assert labels(ring) == ["0"]


def test_a_key_added_to_the_store_is_accepted_by_a_running_receiver(receiver: Receiver) -> None:
    """Over HTTP, on SQLite and PostgreSQL: refused before the key is added, accepted within a
    refresh after it, counted under its fingerprint, recorded as minus its id; no restart."""
    stored = "whsec_" + base64.b64encode(b"S" * 32).decode()
    body = event_body("wevt_stored_key")
    headers = signed_headers(body, "wevt_stored_key", secret=stored)
    url = receiver.url + WEBHOOK
    assert httpx.post(url, content=body, headers=headers).status_code == 401
    info, _ = signing_keys.add(receiver.engine, stored, T0)
    label = {"key_index": info.fingerprint}
    before = REGISTRY.get_sample_value("idlehook_webhook_signing_key_matches_total", label) or 0
    wait_for(lambda: httpx.post(url, content=body, headers=headers).status_code == 204, timeout=8)
    after = REGISTRY.get_sample_value("idlehook_webhook_signing_key_matches_total", label)
    assert after == before + 1
    [row] = receiver.rows("SELECT secret_index FROM deliveries")
    assert row["secret_index"] == -info.id
