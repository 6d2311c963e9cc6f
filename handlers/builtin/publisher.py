"""What the `publish_*` plugins share: the send of one message per run, and one connection per
plugin instance.

A run builds the message (handlers/builtin/publish_message.py), sends it, and returns only once
the broker acknowledged it; only then, with `record_saved = true`, does it tell idlehook the
result is saved. Any failure raises: the worker retries the run with backoff and finally
dead-letters it (`idlehook replay` brings it back), and the message id, the same on every
attempt, lets the broker (or the consumer) drop a copy an earlier attempt may have delivered.

The connection is made at the first run, not at startup (a broker down must not stop the
worker), reused by every run after, and dropped after any failure so the next attempt connects
anew. It belongs to the event loop that made it: a run on another loop makes its own.
The client libraries are imported only when a connection is made, so `idlehook` commands that
never publish never import them.
"""

import asyncio
import contextlib
from typing import Any, Generic, TypeVar
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from handlers.api import HandlerContext
from handlers.builtin.publish_message import archive_dir, build_message, encode


class PublisherConfig(BaseModel):
    """The keys every `[plugins.publish_*]` table has."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # May hold a password: never logged, and masked out of a run's error.
    url: SecretStr
    # Per connect and per acknowledged send; past it the run fails and is retried.
    timeout_seconds: float = Field(default=10.0, gt=0)
    # Whether an acknowledged message counts as the session's result saved (the reaper may then
    # delete the session). The message holds the result and where `archive` put the transcript,
    # not the transcript itself: route `archive` too when the transcript must outlive it.
    record_saved: bool = True


class PublishFailed(Exception):
    """The broker did not acknowledge the message (the run is retried)."""


C = TypeVar("C", bound=PublisherConfig)
Conn = TypeVar("Conn")


class Publisher(Generic[C, Conn]):
    """A `publish_*` plugin: subclasses name the broker and implement connect/send/close."""

    name: str
    reads_only = True  # never wakes the session (handlers/builtin/delete.py relies on it)

    def __init__(self, config: C) -> None:
        self.config = config
        self._conn: Conn | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock: asyncio.Lock | None = None

    async def _connect(self) -> Conn:
        raise NotImplementedError

    async def _send(self, conn: Conn, message_id: str, body: bytes) -> dict[str, Any]:
        """Send and wait for the broker's acknowledgement; returns what to log of it."""
        raise NotImplementedError

    async def _close(self, conn: Conn) -> None:
        raise NotImplementedError

    async def handle(self, ctx: HandlerContext) -> None:
        result = await ctx.result()
        message = build_message(
            result, ctx.event, handler=ctx.handler, archive_dir=archive_dir(ctx), now=ctx.now()
        )
        message_id = str(message["message_id"])
        try:
            conn = await self._connection()
            receipt = await asyncio.wait_for(
                self._send(conn, message_id, encode(message)), self.config.timeout_seconds
            )
        except Exception as exc:
            await self._drop()
            raise PublishFailed(self._explain(exc)) from None
        if self.config.record_saved:
            await ctx.record_saved(result)
        ctx.log.info(f"{self.name}.published", message_id=message_id, **receipt)

    async def aclose(self) -> None:
        """Close the connection: the worker calls it once as it stops (handlers/worker.py)."""
        await self._drop()

    async def _connection(self) -> Conn:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            # Made on a loop that is gone (or another): unusable here, and not ours to close.
            self._loop, self._conn, self._lock = loop, None, asyncio.Lock()
        assert self._lock is not None
        async with self._lock:
            if self._conn is None:
                self._conn = await asyncio.wait_for(self._connect(), self.config.timeout_seconds)
            return self._conn

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None or self._loop is not asyncio.get_running_loop():
            return
        # It is being thrown away after a failure: closing it may well fail too.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._close(conn), self.config.timeout_seconds)

    def _explain(self, exc: BaseException) -> str:
        text = f"{self.name}: {type(exc).__name__}: {exc}"
        if isinstance(exc, TimeoutError):
            text = f"{self.name}: no acknowledgement within {self.config.timeout_seconds:g} s"
        return mask_url_secrets(text, self.config.url.get_secret_value())


def mask_url_secrets(text: str, url: str) -> str:
    """`text` with the URL's password (and the URL itself) masked: client errors may quote it."""
    parts = urlsplit(url)
    out = text.replace(url, "<url>")
    if parts.password:
        out = out.replace(parts.password, "***")
    return out
