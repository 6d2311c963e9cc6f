"""A TCP proxy on loopback that a test can shut (connections refused, open ones cut) and open
again on the same port: a broker going down and coming back for one client, without touching
the broker the machine runs for everyone else."""

import asyncio
import contextlib
import threading
from collections.abc import Coroutine, Iterator
from typing import Any


class TcpProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0  # chosen at the first open, kept after
        self.accepted = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()

    def open(self) -> None:
        """Listen (again, on the same port): clients connect through to the target."""
        self._call(self._listen())

    def shut(self) -> None:
        """Stop listening (a connect is refused) and cut every connection through it."""
        self._call(self._shut())

    def close(self) -> None:
        self.shut()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()

    def _call(self, coro: Coroutine[Any, Any, None]) -> None:
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)

    async def _listen(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(
                self._pipe, "127.0.0.1", self.port, reuse_address=True
            )
            self.port = self._server.sockets[0].getsockname()[1]

    async def _shut(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in list(self._open):
            writer.transport.abort()  # a reset, as when the broker's host goes away
        self._open.clear()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._open.update((writer, up_writer))

        async def copy(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        await asyncio.gather(copy(reader, up_writer), copy(up_reader, writer))
        self._open.discard(writer)
        self._open.discard(up_writer)


@contextlib.contextmanager
def tcp_proxy(host: str, port: int, *, open: bool = True) -> Iterator[TcpProxy]:
    proxy = TcpProxy(host, port)
    try:
        proxy.open()
        if not open:
            proxy.shut()
        yield proxy
    finally:
        proxy.close()
