"""`publish_redis`: one message per handled transition, appended to a Redis stream.

    [plugins.publish_redis]
    url = "redis://127.0.0.1:6379/0"     # rediss://user:password@host:port/db for TLS + ACL
    stream = "idlehook.results"
    maxlen = 100000                      # XADD MAXLEN ~: roughly this many entries are kept

Each entry has the fields `message_id`, `schema` and `body` (the JSON message,
handlers/builtin/publish_message.py). Redis has no de-duplication of its own, so the append is a
script, atomic on the server: it adds the entry only if `<stream>:sent:<message_id>` is not set,
and sets it (for `dedup_seconds`) in the same step; a retry whose earlier attempt did reach
Redis appends nothing. The script touches two keys: on Redis Cluster, name the stream with a
hash tag (`{idlehook}.results`) so both land in one slot.

Acknowledged means Redis answered the script: on a server that keeps nothing on disk (or with
`appendfsync` off), a crash of Redis can still lose what it acknowledged.
"""

from typing import TYPE_CHECKING, Any

from pydantic import Field

from handlers.builtin.publish_message import SCHEMA
from handlers.builtin.publisher import Publisher, PublisherConfig

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.commands.core import AsyncScript

# KEYS: stream, dedup key. ARGV: message id, body, maxlen, dedup seconds, schema.
# Returns {1, entry id} when appended, {0, entry id} when an earlier attempt had.
_APPEND_ONCE = """
local seen = redis.call('GET', KEYS[2])
if seen then return {0, seen} end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], '*',
    'message_id', ARGV[1], 'schema', ARGV[5], 'body', ARGV[2])
redis.call('SET', KEYS[2], id, 'EX', ARGV[4])
return {1, id}
"""


class RedisPublisherConfig(PublisherConfig):
    stream: str = Field(default="idlehook.results", min_length=1)
    maxlen: int = Field(default=100_000, ge=1)
    # How long a message id is remembered against a repeat: longer than retries and replays of
    # one run may take.
    dedup_seconds: int = Field(default=7 * 24 * 3600, ge=1)


class RedisPublisher(Publisher[RedisPublisherConfig, "tuple[Redis, AsyncScript]"]):
    name = "publish_redis"
    Config = RedisPublisherConfig

    async def _connect(self) -> "tuple[Redis, AsyncScript]":
        from redis.asyncio import Redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        timeout = self.config.timeout_seconds
        client = Redis.from_url(
            self.config.url.get_secret_value(),
            socket_connect_timeout=timeout,
            socket_timeout=timeout,
            # idlehook retries the run, with backoff and a dead letter; no retries underneath.
            retry=Retry(NoBackoff(), 0),
        )
        await client.ping()
        return client, client.register_script(_APPEND_ONCE)

    async def _send(
        self, conn: "tuple[Redis, AsyncScript]", message_id: str, body: bytes
    ) -> dict[str, Any]:
        _, append = conn
        stream = self.config.stream
        appended, entry = await append(
            keys=[stream, f"{stream}:sent:{message_id}"],
            args=[message_id, body, self.config.maxlen, self.config.dedup_seconds, SCHEMA],
        )
        entry_id = entry.decode() if isinstance(entry, bytes) else str(entry)
        return {"stream": stream, "entry_id": entry_id, "duplicate": not appended}

    async def _close(self, conn: "tuple[Redis, AsyncScript]") -> None:
        await conn[0].aclose()
