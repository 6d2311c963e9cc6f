"""`publish_nats`: one message per handled transition, published to NATS JetStream.

    [plugins.publish_nats]
    url = "nats://127.0.0.1:4222"        # nats://user:password@host:port, tls://... for TLS
    subject = "idlehook.results"
    stream = "IDLEHOOK_RESULTS"          # optional: the stream the subject must land in
    create_stream = false                # true: create `stream` on `subject` if it is missing

The publish waits for JetStream's acknowledgement (the stream stored it), and carries the header
`Nats-Msg-Id` = `<event id>:<handler>` (handlers/builtin/publish_message.py): JetStream drops a
second message with the same id within the stream's duplicate window, so a retry whose earlier
attempt was stored is acknowledged as a duplicate, not stored twice. Keep the window longer than
a run's retries last (a stream this plugin creates gets `duplicate_window_seconds`).
With `stream` set, the server refuses a subject that lands in another stream (or in none).
"""

from typing import TYPE_CHECKING, Any

from pydantic import Field, model_validator

from handlers.builtin.publish_message import SCHEMA
from handlers.builtin.publisher import Publisher, PublisherConfig

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.js import JetStreamContext


class NatsPublisherConfig(PublisherConfig):
    subject: str = Field(default="idlehook.results", min_length=1)
    stream: str | None = None
    create_stream: bool = False
    duplicate_window_seconds: float = Field(default=3600.0, gt=0)

    @model_validator(mode="after")
    def _stream_to_create(self) -> "NatsPublisherConfig":
        if self.create_stream and not self.stream:
            raise ValueError("create_stream needs `stream`, the name of the stream to create")
        return self


async def _quiet(*_: Any) -> None:
    # The client reports errors through callbacks too; the failed publish raises them already.
    return None


class NatsPublisher(Publisher[NatsPublisherConfig, "tuple[Client, JetStreamContext]"]):
    name = "publish_nats"
    Config = NatsPublisherConfig

    async def _connect(self) -> "tuple[Client, JetStreamContext]":
        import nats

        # No reconnecting underneath: a broken connection fails the run, which idlehook
        # retries on a new one.
        client = await nats.connect(
            self.config.url.get_secret_value(),
            connect_timeout=self.config.timeout_seconds,
            allow_reconnect=False,
            # The client's connect retries a refused server until it has tried it more than
            # this many times (0 is "forever"), pausing `reconnect_time_wait` between tries.
            max_reconnect_attempts=1,
            reconnect_time_wait=0.1,
            error_cb=_quiet,
            disconnected_cb=_quiet,
            closed_cb=_quiet,
        )
        try:
            js = client.jetstream(timeout=self.config.timeout_seconds)
            if self.config.create_stream:
                await self._ensure_stream(js)
        except BaseException:
            await client.close()
            raise
        return client, js

    async def _ensure_stream(self, js: "JetStreamContext") -> None:
        from nats.js.errors import NotFoundError

        assert self.config.stream is not None
        try:
            await js.stream_info(self.config.stream)
        except NotFoundError:
            await js.add_stream(
                name=self.config.stream,
                subjects=[self.config.subject],
                duplicate_window=self.config.duplicate_window_seconds,
            )

    async def _send(
        self, conn: "tuple[Client, JetStreamContext]", message_id: str, body: bytes
    ) -> dict[str, Any]:
        _, js = conn
        ack = await js.publish(
            self.config.subject,
            body,
            timeout=self.config.timeout_seconds,
            stream=self.config.stream,
            headers={"Nats-Msg-Id": message_id, "Idlehook-Schema": SCHEMA},
        )
        return {"stream": ack.stream, "seq": ack.seq, "duplicate": bool(ack.duplicate)}

    async def _close(self, conn: "tuple[Client, JetStreamContext]") -> None:
        await conn[0].close()
