"""The reconciler against the emulator and the real receiver on loopback, on SQLite and
PostgreSQL: missed webhooks are delivered once, late ones are recognised as duplicates."""

import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import httpx2  # the SDK's own HTTP package (a fork of httpx)
import pytest
from prometheus_client import REGISTRY
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from handlers.twins import late_duplicate
from receiver.app import create_app
from receiver.config import ReceiverConfig
from sessions.reconciler import Reconciler, synthetic_delivery
from store.delivered import transition_event_id
from store.engine import make_engine
from store.inbox import Inbox
from store.models import Delivery, HandlerRun
from tests.sessions.reaping import Api, emulator, new_session, poll
from tests.support.servers import serve, wait_for

SECRET = "whsec_" + base64.b64encode(b"R" * 32).decode()
PATH = "/webhooks/anthropic"


@dataclass
class World:
    api: Api
    engine: Engine
    inbox: Inbox
    receiver_url: str

    def deliveries(self, source: str | None = None) -> list[Delivery]:
        with Session(self.engine) as db:
            query = select(Delivery).order_by(col(Delivery.id))
            if source is not None:
                query = query.where(Delivery.source == source)
            return list(db.exec(query))

    def route_runs(self, delivery_id: int) -> list[HandlerRun]:
        with Session(self.engine) as db:
            query = select(HandlerRun).where(HandlerRun.delivery_id == delivery_id)
            return list(db.exec(query))

    def drop_webhooks(self, drop: bool) -> None:
        self.api.emu.apply_config({"faults": {"drop_all": drop}})

    def emitted(self, session_id: str, event_type: str) -> list[dict[str, Any]]:
        return [
            e
            for e in self.api.emu.sender.emitted
            if e["data"]["id"] == session_id and e["data"]["type"] == event_type
        ]

    def post_late(self, event: dict[str, Any]) -> None:
        """Deliver a webhook the emulator dropped, signed as Anthropic would, to the receiver."""
        body = json.dumps(event).encode()
        ts = int(time.time())
        key = base64.b64decode(SECRET.removeprefix("whsec_"))
        mac = hmac.new(key, f"{event['id']}.{ts}.".encode() + body, hashlib.sha256).digest()
        headers = {
            "webhook-id": event["id"],
            "webhook-timestamp": str(ts),
            "webhook-signature": "v1," + base64.b64encode(mac).decode(),
            "content-type": "application/json",
        }
        response = httpx.post(self.receiver_url + PATH, content=body, headers=headers)
        assert response.status_code < 300, response.text


@pytest.fixture
def world(db_url) -> Iterator[World]:
    engine = make_engine(db_url, pool_size=2)
    inbox = Inbox.connect(db_url)
    app = create_app(ReceiverConfig.from_secrets([SECRET]), inbox)
    try:
        with (
            serve(app) as receiver_url,
            emulator(
                webhook_urls=[receiver_url + PATH],
                webhook_secrets=[SECRET],
                webhook_backoff_min_seconds=0.0,
                webhook_backoff_max_seconds=0.1,
            ) as api,
        ):
            yield World(api, engine, inbox, receiver_url)
    finally:
        inbox.close()
        engine.dispose()


def reconciler(world: World, client, **kw) -> Reconciler:
    kw.setdefault("settle", timedelta(0))
    return Reconciler(client, world.engine, world.inbox, **kw)


def sample(name: str) -> float | None:
    return REGISTRY.get_sample_value(name)


async def test_missed_transitions_get_one_synthetic_delivery_each_and_late_webhooks_are_dupes(
    world,
):
    world.drop_webhooks(True)
    async with world.api.client() as client:
        a = await new_session(world.api, client)
        b = await new_session(world.api, client)
        rec = reconciler(world, client)

        first = await rec.sweep()
        assert sorted(first.synthesised) == sorted(
            transition_event_id(s.id, "idle", _idle_at(world, s.id)) for s in (a, b)
        )
        synthetic = world.deliveries("reconcile")
        assert {(d.session_id, d.event_type) for d in synthetic} == {
            (a.id, "session.status_idled"),
            (b.id, "session.status_idled"),
        }
        # Into the same inbox, queued for routing exactly as a received webhook would be.
        for d in synthetic:
            assert [(r.handler, r.lane, r.state) for r in world.route_runs(d.id)] == [
                ("_route", d.session_id, "pending")
            ]
            assert json.loads(d.body)["data"] == {"type": d.event_type, "id": d.session_id}

        # Sweeping again, with nothing new, writes nothing.
        again = await rec.sweep()
        assert again.synthesised == []
        assert len(world.deliveries("reconcile")) == 2

        # A second turn on `a`, its webhooks dropped too: one more transition, one more delivery.
        await client.beta.sessions.events.send(
            a.id, events=[{"type": "user.message", "content": [{"type": "text", "text": "more"}]}]
        )
        await poll(lambda: _idled_twice(world, a.id))
        third = await rec.sweep()
        assert third.synthesised == [transition_event_id(a.id, "idle", _idle_at(world, a.id))]
        assert len(world.deliveries("reconcile")) == 3

        # The endpoint comes back and the dropped webhooks arrive late, with real ids.
        world.drop_webhooks(False)
        late = world.emitted(a.id, "session.status_idled") + world.emitted(
            b.id, "session.status_idled"
        )
        assert len(late) == 3
        for event in late:
            world.post_late(event)
        for event in late:
            real = next(d for d in world.deliveries("webhook") if d.event_id == event["id"])
            assert await late_duplicate(
                client,
                world.engine,
                session_id=real.session_id,
                event_type=real.event_type,
                event_id=real.event_id,
                source=real.source,
            )
        # ...and the synthetic deliveries themselves are not duplicates of anything.
        for d in world.deliveries("reconcile"):
            assert not await late_duplicate(
                client,
                world.engine,
                session_id=d.session_id,
                event_type=d.event_type,
                event_id=d.event_id,
                source=d.source,
            )
        # Late webhooks do not make the reconciler think anything new happened.
        assert (await rec.sweep()).synthesised == []
        assert len(world.deliveries("reconcile")) == 3


async def test_webhook_first_means_no_synthetic_delivery(world):
    async with world.api.client() as client:
        session = await new_session(world.api, client)
        wait_for(
            lambda: any(
                d.event_type == "session.status_idled" and d.session_id == session.id
                for d in world.deliveries("webhook")
            )
        )
        report = await reconciler(world, client).sweep()
        assert report.examined >= 1
        # Its webhook is stored: nothing to check, so no call beyond the two listings.
        assert (report.changed, report.calls) == (0, 2)
        assert report.synthesised == []
        real = next(
            d for d in world.deliveries("webhook") if d.event_type == "session.status_idled"
        )
        assert not await late_duplicate(
            client,
            world.engine,
            session_id=session.id,
            event_type=real.event_type,
            event_id=real.event_id,
            source=real.source,
        )
    assert world.deliveries("reconcile") == []


class LateWebhook(httpx2.AsyncBaseTransport):
    """The network, on the sweep's second API call (after the list, so after the sweep read
    which deliveries it has seen): first the dropped webhook comes in."""

    def __init__(self, world: World, event: dict[str, Any]) -> None:
        self.world, self.event = world, event
        self.calls = 0
        self.inner = httpx2.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        self.calls += 1
        if self.calls == 2:
            await asyncio.to_thread(self.world.post_late, self.event)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_a_webhook_arriving_during_the_sweep_gets_no_synthetic_twin(world):
    world.drop_webhooks(True)
    async with world.api.client() as client:
        session = await new_session(world.api, client)
        [event] = await poll(lambda: _emitted(world, session.id))
        world.drop_webhooks(False)
    late = LateWebhook(world, event)
    async with world.api.client(http_client=httpx2.AsyncClient(transport=late)) as client:
        report = await reconciler(world, client).sweep()

    assert late.calls >= 2  # the webhook did come in mid-sweep
    assert event["id"] in {d.event_id for d in world.deliveries("webhook")}
    assert report.synthesised == []
    assert world.deliveries("reconcile") == []


async def test_a_synthetic_twin_stored_after_the_real_webhook_routes_nothing(world):
    # The webhook lands between the sweep's last look and its write: both are stored, the real
    # one first. Routing runs the handlers once, for the real one.
    world.drop_webhooks(True)
    async with world.api.client() as client:
        session = await new_session(world.api, client)
        [event] = await poll(lambda: _emitted(world, session.id))
        world.drop_webhooks(False)
        world.post_late(event)
        at = _idle_at(world, session.id)
        world.inbox.ingest_sync(synthetic_delivery(session.id, "idle", at, datetime.now(UTC)))
        [real] = [d for d in world.deliveries("webhook") if d.event_id == event["id"]]
        [synthetic] = world.deliveries("reconcile")
        assert real.id < synthetic.id

        duplicate = {
            d.source: await late_duplicate(
                client,
                world.engine,
                session_id=d.session_id,
                event_type=d.event_type,
                event_id=d.event_id,
                source=d.source,
            )
            for d in (real, synthetic)
        }
    assert duplicate == {"webhook": False, "reconcile": True}


async def test_a_young_transition_waits_for_its_webhook(world):
    world.drop_webhooks(True)
    async with world.api.client() as client:
        session = await new_session(world.api, client)
        patient = await reconciler(world, client, settle=timedelta(hours=1)).sweep()
        assert patient.synthesised == []
        # The cursor did not pass it: a sweep once it has settled still finds it.
        eager = await reconciler(world, client).sweep()
    assert eager.synthesised == [
        transition_event_id(session.id, "idle", _idle_at(world, session.id))
    ]


async def test_silence_alarm_when_sessions_change_but_no_webhook_comes(world):
    world.drop_webhooks(True)
    async with world.api.client() as client:
        await new_session(world.api, client)
        quiet = await reconciler(world, client, silence_alarm=timedelta(minutes=5)).sweep()
        assert len(quiet.synthesised) == 1
        assert not quiet.alarm  # it has only just been missed
        assert sample("idlehook_webhook_silence_alarm") == 0

        later = datetime.now(UTC) + timedelta(minutes=10)
        loud = await reconciler(
            world, client, silence_alarm=timedelta(minutes=5), now=lambda: later
        ).sweep()
        assert loud.alarm
        assert sample("idlehook_webhook_silence_alarm") == 1
        assert (sample("idlehook_webhook_silence_seconds") or 0) >= 600

        # A real webhook arrives again: the alarm clears.
        world.drop_webhooks(False)
        await new_session(world.api, client)
        wait_for(lambda: world.deliveries("webhook"))
        calm = await reconciler(world, client, silence_alarm=timedelta(minutes=5)).sweep()
    assert not calm.alarm
    assert sample("idlehook_webhook_silence_alarm") == 0


async def _emitted(world: World, session_id: str) -> list[dict[str, Any]]:
    return world.emitted(session_id, "session.status_idled")


def _idle_at(world: World, session_id: str) -> datetime:
    record = world.api.emu.store.sessions[session_id]
    last = [e for e in record.events if e["type"] == "session.status_idle"][-1]
    return datetime.fromisoformat(last["processed_at"].replace("Z", "+00:00"))


async def _idled_twice(world: World, session_id: str) -> bool:
    record = world.api.emu.store.sessions[session_id]
    idles = [e for e in record.events if e["type"] == "session.status_idle"]
    return len(idles) >= 2 and record.status == "idle"
