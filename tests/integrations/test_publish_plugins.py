"""Each `publish_*` plugin through the real worker (idlehook.testing's harness) against the
emulator and the real broker: one message, acknowledged, then the result recorded saved; a
repeat of the same message id is not stored twice (Redis, NATS); a broker that refuses
connections fails the run, with nothing saved and no secret in its error."""

import asyncio
from datetime import UTC, datetime
from typing import Any

import structlog

from handlers.api import HandlerContext, Notification
from handlers.builtin.publish_amqp import AmqpPublisher
from handlers.builtin.publish_nats import NatsPublisher
from handlers.builtin.publish_redis import RedisPublisher
from handlers.builtin.publisher import Publisher
from handlers.reads import DeliveryReads
from handlers.registry import build
from idlehook import testing
from tests.integrations.brokers import Broker
from tests.integrations.proxy import tcp_proxy
from tests.integrations.schema import validate

PLUGINS: dict[str, type[Publisher[Any, Any]]] = {
    "publish_redis": RedisPublisher,
    "publish_nats": NatsPublisher,
    "publish_amqp": AmqpPublisher,
}


async def test_publishes_one_message_then_records_saved(broker: Broker) -> None:
    async with testing.harness(PLUGINS[broker.plugin], config=broker.table()) as h:
        run = await h.run(script="long:2")
    assert run.succeeded, run.error
    assert run.saved
    assert run.calls == ()  # the routing step's reads are all it needs

    read = await asyncio.to_thread(broker.read)
    (message,) = read.messages
    validate(message)
    assert message["schema"] == "idlehook.session_result/1"
    assert message["session_id"] == run.session_id
    assert message["status"] == "idle"
    assert message["stop_reason"] == "end_turn"
    assert "Part 2." in message["final_message"]
    assert message["event"]["type"] == run.event_type
    assert message["message_id"] == f"{message['event']['id']}:{broker.plugin}"
    assert message["cost"]["billing_model"] == "running"
    assert message["archive"] is None  # no archive run before it


async def test_a_repeat_of_one_message_id_is_one_message(broker: Broker) -> None:
    """A retry after the broker took the message but its acknowledgement was lost sends the
    same id again: Redis (the script) and JetStream (Nats-Msg-Id) keep one; AMQP has no such
    thing, and its consumer drops the repeat by message_id."""
    async with testing.harness(PLUGINS[broker.plugin], config=broker.table()) as h:
        run = await h.run()
        assert run.succeeded, run.error
        event = Notification(
            delivery_id=1,
            event_id="wevt_repeat_" + broker.tag,
            event_type=run.event_type,
            resource_id=run.session_id,
            session_id=run.session_id,
            source="webhook",
            received_at=datetime.now(UTC),
        )
        plugin = build(PLUGINS[broker.plugin], broker.plugin, broker.table())
        reads = DeliveryReads()
        for _ in range(2):
            ctx = HandlerContext(
                event=event,
                client=h.client,
                log=structlog.get_logger(),
                now=lambda: datetime.now(UTC),
                config=h.config,
                handler=broker.plugin,
                reads=reads,
            )
            await plugin.handle(ctx)
        await plugin.aclose()  # type: ignore[attr-defined]

    read = await asyncio.to_thread(broker.read)
    ids = [m["message_id"] for m in read.messages]
    assert sorted(ids) == sorted({ids[0], f"{event.event_id}:{broker.plugin}"})
    if broker.plugin == "publish_amqp":
        assert "repeat dropped" in read.stderr
    else:
        assert await broker.stored() == 2  # the harness's run and one of the repeats


async def test_a_broker_refusing_connections_fails_the_run_and_saves_nothing(
    broker: Broker,
) -> None:
    with tcp_proxy("127.0.0.1", broker.port, open=False) as proxy:
        async with testing.harness(PLUGINS[broker.plugin], config=broker.table(proxy.port)) as h:
            run = await h.run()
    assert run.state == "dead"
    assert not run.saved
    assert run.error is not None
    assert broker.plugin in run.error
    assert "guest:guest" not in run.error
    assert ":guest@" not in run.error
    assert await broker.stored() == 0
