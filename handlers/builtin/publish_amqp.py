"""`publish_amqp`: one message per handled transition, published to RabbitMQ (AMQP 0-9-1).

    [plugins.publish_amqp]
    url = "amqp://guest:guest@127.0.0.1:5672/"   # amqps://... for TLS
    exchange = "idlehook"                          # "": the default exchange
    routing_key = "idlehook.results"               # with the default exchange: the queue name

Persistent messages on a channel in confirm mode: a run succeeds only once the broker confirmed
the message (for a durable queue, once it is written to disk), and `mandatory`: a message no
queue is bound to take comes back and fails the run, rather than being dropped. Each message
carries `message_id` = `<event id>:<handler>` (handlers/builtin/publish_message.py), the same on
every retry: AMQP has no de-duplication of its own, so a retry whose earlier confirm was lost
can deliver a second copy; consumers drop repeats by `message_id`
(examples/consumers/amqp_consumer.py). `type` is the schema, `content_type` application/json.
The exchange is declared (durable, `exchange_type`) unless `declare_exchange = false`.
"""

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from handlers.builtin.publish_message import SCHEMA
from handlers.builtin.publisher import Publisher, PublisherConfig

if TYPE_CHECKING:
    from aio_pika.abc import AbstractConnection, AbstractExchange


class AmqpPublisherConfig(PublisherConfig):
    exchange: str = ""
    exchange_type: Literal["direct", "topic", "fanout", "headers"] = "topic"
    declare_exchange: bool = True
    routing_key: str = Field(default="idlehook.results", min_length=1)
    mandatory: bool = True


class AmqpPublisher(Publisher[AmqpPublisherConfig, "tuple[AbstractConnection, AbstractExchange]"]):
    name = "publish_amqp"
    Config = AmqpPublisherConfig

    async def _connect(self) -> "tuple[AbstractConnection, AbstractExchange]":
        import aio_pika

        # Not connect_robust: a broken connection fails the run, idlehook retries on a new one.
        connection = await aio_pika.connect(
            self.config.url.get_secret_value(), timeout=self.config.timeout_seconds
        )
        try:
            channel = await connection.channel(publisher_confirms=True)
            name = self.config.exchange
            if not name:
                exchange = channel.default_exchange
            elif self.config.declare_exchange:
                exchange = await channel.declare_exchange(
                    name, type=self.config.exchange_type, durable=True
                )
            else:
                exchange = await channel.get_exchange(name, ensure=True)
        except BaseException:
            await connection.close()
            raise
        return connection, exchange

    async def _send(
        self,
        conn: "tuple[AbstractConnection, AbstractExchange]",
        message_id: str,
        body: bytes,
    ) -> dict[str, Any]:
        from aio_pika import DeliveryMode, Message

        _, exchange = conn
        await exchange.publish(
            Message(
                body,
                content_type="application/json",
                content_encoding="utf-8",
                delivery_mode=DeliveryMode.PERSISTENT,
                message_id=message_id,
                type=SCHEMA,
                app_id="idlehook",
                timestamp=datetime.now(UTC),
            ),
            routing_key=self.config.routing_key,
            mandatory=self.config.mandatory,
            timeout=self.config.timeout_seconds,
        )
        return {"exchange": self.config.exchange, "routing_key": self.config.routing_key}

    async def _close(self, conn: "tuple[AbstractConnection, AbstractExchange]") -> None:
        await conn[0].close()
