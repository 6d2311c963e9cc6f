"""The receiver with its local journal, over real HTTP and a real store (SQLite, PostgreSQL):
while the store cannot commit, verified deliveries are journaled and acknowledged (202); once it
is back they are moved in, once each; a journal that cannot take them either answers 503."""

import asyncio
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from console.web import web_routes
from receiver.app import create_app
from receiver.config import ReceiverConfig
from store.engine import make_engine
from store.inbox import Inbox
from store.journal import Journal, scan_directory
from tests.receiver.conftest import KEY_A, NOW, WEBHOOK, Receiver, event_body, signed_headers
from tests.receiver.outage import store_down
from tests.support.servers import serve, wait_for


@dataclass
class Journaled(Receiver):
    journal: Journal
    directory: Path

    async def post(self, client: httpx.AsyncClient, event_id: str, pad: int = 0) -> httpx.Response:
        body = event_body(event_id, resource_id=f"sesn_{event_id}")
        if pad:
            body = json.dumps({**json.loads(body), "pad": "p" * pad}).encode()
        return await client.post(WEBHOOK, content=body, headers=signed_headers(body, event_id))


@contextmanager
def journaled(db_url: str, directory: Path, max_bytes: int = 1 << 20) -> Iterator[Journaled]:
    config = ReceiverConfig.from_secrets([KEY_A])
    inbox = Inbox.connect(db_url)
    journal = Journal(directory, max_bytes=max_bytes)
    app = create_app(config, inbox, now=lambda: NOW, journal=journal, journal_drain_seconds=0.1)
    engine = make_engine(db_url, pool_size=1)
    try:
        with serve(app, timeout_keep_alive=120) as url:
            yield Journaled(url, inbox, engine, journal, directory)
    finally:
        engine.dispose()
        inbox.close()


@pytest.fixture
def receiver_with_journal(db_url: str, tmp_path: Path) -> Iterator[Journaled]:
    with journaled(db_url, tmp_path / "journal") as r:
        yield r


async def test_store_down_deliveries_are_journaled_acknowledged_then_stored_once(
    receiver_with_journal: Journaled,
) -> None:
    r = receiver_with_journal
    url = str(r.inbox.engine.url.render_as_string(hide_password=False))
    odd = b"not json at all"
    async with httpx.AsyncClient(base_url=r.url, timeout=60) as client:
        assert (await r.post(client, "wevt_before")).status_code == 204
        with store_down(url):
            # SQLite waits out its busy timeout first, so everything is asked at once.
            down = await asyncio.gather(
                *(r.post(client, f"wevt_down_{i}") for i in range(5)),
                client.post(WEBHOOK, content=odd, headers=signed_headers(odd, "msg_odd")),
            )
            assert [(x.status_code, x.headers["idlehook-outcome"]) for x in down] == [
                (202, "journaled")
            ] * 6
            # At once: on SQLite each waits out the lock's busy timeout.
            ready, metrics = await asyncio.gather(client.get("/readyz"), client.get("/metrics"))
            scraped = metrics.text
        assert ready.status_code == 200, ready.text  # still taking deliveries
        body = ready.json()
        assert (body["status"], body["store"]) == ("ready", "unavailable")
        assert body["journal"]["depth"] == 6
        assert body["journal"]["writable"] is True
        assert "idlehook_journal_depth 6.0" in scraped
        assert (
            'idlehook_webhook_deliveries_total{event_type="session.status_idled",outcome="journaled"}'
            in scraped
        )
        # Back up: the drainer moves them in; Anthropic's late retry of one is a duplicate.
        wait_for(lambda: r.journal.stats().depth == 0, timeout=30)
        retry = await r.post(client, "wevt_down_0")
        assert retry.headers["idlehook-outcome"] == "duplicate"
        ready = (await client.get("/readyz")).json()
        assert (ready["store"], ready["journal"]["depth"]) == ("ok", 0)
    stored = sorted(d.event_id for d in r.deliveries())
    assert stored == sorted(["wevt_before", *(f"wevt_down_{i}" for i in range(5))])
    assert len(r.runs()) == 6  # one routing run each: handlers run once
    assert r.count("unrecognised_deliveries") == 1
    assert scan_directory(r.directory).files == 0  # nothing left behind


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_a_full_journal_is_a_503_and_everything_acknowledged_is_kept(
    db_url: str, tmp_path: Path
) -> None:
    acked: list[str] = []
    statuses: list[int] = []
    with journaled(db_url, tmp_path / "journal", max_bytes=64 * 1024) as r:
        url = str(r.inbox.engine.url.render_as_string(hide_password=False))
        async with httpx.AsyncClient(base_url=r.url, timeout=60) as client:
            with store_down(url):
                # 8 KB deliveries: the 64 KiB journal takes seven.
                answers = await asyncio.gather(
                    *(r.post(client, f"wevt_full_{i}", pad=8000) for i in range(12))
                )
                for i, answer in enumerate(answers):
                    statuses.append(answer.status_code)
                    if answer.status_code == 202:
                        acked.append(f"wevt_full_{i}")
                refused = [a for a in answers if a.status_code == 503]
                ready = await client.get("/readyz")
            assert refused, statuses
            assert {a.json()["error"] for a in refused} == {"journal_full"}
            assert set(statuses) == {202, 503}
            assert ready.status_code == 503
            assert ready.json()["journal"]["reason"] == "journal_full"
            wait_for(lambda: r.journal.stats().depth == 0, timeout=30)
            assert sorted(d.event_id for d in r.deliveries()) == sorted(acked)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_the_page_has_a_journal_card_and_counts_unrecognised_bodies(
    db_url: str, tmp_path: Path
) -> None:
    token = "page-token"
    config = ReceiverConfig.from_secrets([KEY_A])
    inbox = Inbox.connect(db_url)
    journal = Journal(tmp_path / "journal")
    engine = make_engine(db_url, pool_size=1)
    app = create_app(
        config,
        inbox,
        now=lambda: NOW,
        routes=web_routes(engine, SecretStr(token), now=lambda: NOW),
        journal=journal,
        journal_drain_seconds=3600,  # one pass at start, then none: what waits stays
    )
    odd = b"[]"
    try:
        with serve(app, timeout_keep_alive=120) as url:
            r = Journaled(url, inbox, engine, journal, tmp_path / "journal")
            async with httpx.AsyncClient(base_url=url, timeout=60) as client:
                await client.post(WEBHOOK, content=odd, headers=signed_headers(odd, "msg_page"))
                with store_down(db_url):
                    answers = await asyncio.gather(
                        r.post(client, "wevt_p1"), r.post(client, "wevt_p2")
                    )
                assert [a.status_code for a in answers] == [202, 202]
                page = await client.get("/", headers={"authorization": f"Bearer {token}"})
        assert page.status_code == 200
        assert "journal (not yet stored)<b>2 · oldest" in page.text
        assert "unrecognised kept<b>1</b>" in page.text
    finally:
        journal.close()
        engine.dispose()
        inbox.close()
