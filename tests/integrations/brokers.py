"""The three brokers the `publish_*` plugins send to, as the machine runs them (and CI, on the
same kind of machine): names unique to each test, set up and removed, and read back through
the example consumers (examples/consumers/), run as processes: an independent reader.

A broker that is not running fails the test, never skips it: these plugins are shipped, and a
silently skipped check is no check."""

import json
import socket
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONSUMERS = ROOT / "examples" / "consumers"
HOST = "127.0.0.1"


def require(port: int, what: str) -> None:
    try:
        socket.create_connection((HOST, port), timeout=2).close()
    except OSError as exc:
        pytest.fail(f"{what} is not running on {HOST}:{port} ({exc}); these tests need it")


@dataclass
class Read:
    messages: list[dict[str, Any]]
    stderr: str


@dataclass
class Broker:
    """One broker, with names of its own for one test."""

    plugin: str
    port: int
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:10])

    def table(self, port: int | None = None) -> dict[str, Any]:
        """The plugin's `[plugins.<name>]` table, through `port` (a proxy) or straight."""
        raise NotImplementedError

    async def prepare(self) -> None: ...

    async def cleanup(self) -> None: ...

    async def stored(self) -> int:
        """How many messages the broker holds (or, for a queue, has ready) right now."""
        raise NotImplementedError

    def consumer_args(self) -> list[str]:
        raise NotImplementedError

    def read(self, idle_seconds: float = 1.5) -> Read:
        """Everything the example consumer receives until nothing more comes for a while."""
        script, *args = self.consumer_args()
        done = subprocess.run(
            [sys.executable, str(CONSUMERS / script), *args, "--idle-seconds", str(idle_seconds)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return Read([json.loads(line) for line in done.stdout.splitlines()], done.stderr)


@dataclass
class Redis(Broker):
    plugin: str = "publish_redis"
    port: int = 6379

    @property
    def stream(self) -> str:
        return f"idlehook.test.{self.tag}"

    def table(self, port: int | None = None) -> dict[str, Any]:
        return {
            "url": f"redis://{HOST}:{port or self.port}/0",
            "stream": self.stream,
            "maxlen": 1000,
            "timeout_seconds": 3,
        }

    async def _client(self) -> Any:
        from redis.asyncio import Redis as Client

        return Client.from_url(f"redis://{HOST}:{self.port}/0")

    async def cleanup(self) -> None:
        client = await self._client()
        try:
            keys = [k async for k in client.scan_iter(match=f"{self.stream}*")]
            if keys:
                await client.delete(*keys)
        finally:
            await client.aclose()

    async def stored(self) -> int:
        client = await self._client()
        try:
            return int(await client.xlen(self.stream))
        finally:
            await client.aclose()

    def consumer_args(self) -> list[str]:
        return [
            "redis_consumer.py",
            "--url",
            f"redis://{HOST}:{self.port}/0",
            "--stream",
            self.stream,
            "--group",
            f"test-{self.tag}",
        ]


@dataclass
class Nats(Broker):
    plugin: str = "publish_nats"
    port: int = 4222

    @property
    def stream(self) -> str:
        return f"IDLEHOOK_TEST_{self.tag}"

    @property
    def subject(self) -> str:
        return f"idlehook.test.{self.tag}"

    def table(self, port: int | None = None) -> dict[str, Any]:
        return {
            "url": f"nats://{HOST}:{port or self.port}",
            "subject": self.subject,
            "stream": self.stream,
            "create_stream": True,
            "duplicate_window_seconds": 600,
            "timeout_seconds": 3,
        }

    async def _stream_info(self, delete: bool = False) -> int:
        import nats
        from nats.js.errors import NotFoundError

        client = await nats.connect(f"nats://{HOST}:{self.port}")
        try:
            js = client.jetstream()
            try:
                if delete:
                    await js.delete_stream(self.stream)
                    return 0
                return int((await js.stream_info(self.stream)).state.messages)
            except NotFoundError:
                return 0
        finally:
            await client.close()

    async def cleanup(self) -> None:
        await self._stream_info(delete=True)

    async def stored(self) -> int:
        return await self._stream_info()

    def consumer_args(self) -> list[str]:
        return [
            "nats_consumer.py",
            "--url",
            f"nats://{HOST}:{self.port}",
            "--stream",
            self.stream,
            "--subject",
            self.subject,
            "--durable",
            f"test_{self.tag}",
        ]


@dataclass
class Amqp(Broker):
    plugin: str = "publish_amqp"
    port: int = 5672

    @property
    def exchange(self) -> str:
        return f"idlehook.test.{self.tag}"

    @property
    def queue(self) -> str:
        return f"idlehook-test-{self.tag}"

    def url(self, port: int | None = None) -> str:
        return f"amqp://guest:guest@{HOST}:{port or self.port}/"

    def table(self, port: int | None = None) -> dict[str, Any]:
        return {
            "url": self.url(port),
            "exchange": self.exchange,
            "routing_key": f"results.{self.tag}",
            "timeout_seconds": 3,
        }

    async def _channel(self, work: Any) -> Any:
        import aio_pika

        connection = await aio_pika.connect(self.url())
        try:
            return await work(await connection.channel())
        finally:
            await connection.close()

    async def prepare(self) -> None:
        # The consumer's queue, bound before anything is published: `mandatory` publishes to
        # an exchange no queue is bound to come back as failures.
        async def declare(channel: Any) -> None:
            exchange = await channel.declare_exchange(self.exchange, "topic", durable=True)
            queue = await channel.declare_queue(self.queue, durable=True)
            await queue.bind(exchange, routing_key=f"results.{self.tag}")

        await self._channel(declare)

    async def cleanup(self) -> None:
        async def delete(channel: Any) -> None:
            await channel.queue_delete(self.queue)
            await channel.exchange_delete(self.exchange)

        await self._channel(delete)

    async def stored(self) -> int:
        async def count(channel: Any) -> int:
            queue = await channel.declare_queue(self.queue, durable=True)
            return int(queue.declaration_result.message_count or 0)

        return int(await self._channel(count))

    def consumer_args(self) -> list[str]:
        return [
            "amqp_consumer.py",
            "--url",
            self.url(),
            "--exchange",
            self.exchange,
            "--routing-key",
            f"results.{self.tag}",
            "--queue",
            self.queue,
        ]


BROKERS = {"redis": Redis, "nats": Nats, "amqp": Amqp}
NAMES = {"redis": "Redis", "nats": "NATS JetStream", "amqp": "RabbitMQ"}
