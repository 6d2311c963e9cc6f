"""The receiver's end of its inbox writer process (store/writer_process.py).

The webhook path hands each verified delivery to `submit` and awaits the future it returns.
Each pass of the event loop sends what it collected down the pipe as one frame; the writer,
each time it finishes a commit, commits everything that arrived meanwhile as the next batch.
Rows are answered in the order they were sent, and each future is resolved only when the writer
reports its row committed (or not, as StoreUnavailable: a 503, so Anthropic retries). This side
costs the loop a frame out per pass and a frame in per commit.

A writer that dies fails every row it had not answered (none of them was acknowledged) and
another is started for whatever is waiting.
"""

import asyncio
import collections
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog

from store import frames
from store.ingest import IngestResult, Row, StoreUnavailable

log = structlog.get_logger(__name__)

_Pending = tuple[Row, "asyncio.Future[IngestResult]"]
# A writer that dies sooner than this after starting is restarted only after a pause, growing
# up to the cap, so a crash loop cannot spin the receiver's CPU.
_HEALTHY_AFTER = 5.0
_RESTART_PAUSE_MAX = 5.0


class _Pipe(asyncio.Protocol):
    def __init__(self, on_message: Callable[[object], None], on_lost: Callable[[], None]) -> None:
        self.decoder = frames.Decoder()
        self.on_message = on_message
        self.on_lost = on_lost

    def data_received(self, data: bytes) -> None:
        for message in self.decoder.feed(data):
            self.on_message(message)

    def connection_lost(self, exc: Exception | None) -> None:
        self.on_lost()


@dataclass
class _Writer:
    """One writer process and the loop's two pipe transports to it."""

    popen: subprocess.Popen[bytes]
    to_writer: asyncio.WriteTransport
    ready: "asyncio.Future[None]"
    gone: "asyncio.Future[None]"
    started: float = field(default_factory=time.monotonic)
    closing: bool = False


class WriterLink:
    def __init__(
        self,
        url: str,
        *,
        max_batch: int,
        now: Callable[[], datetime],
        on_batch: Callable[[int], None] | None = None,
        start_timeout: float = 60.0,
    ) -> None:
        self._url = url
        self.max_batch = max_batch
        self.now = now
        self.on_batch = on_batch
        self.start_timeout = start_timeout
        self._writer: _Writer | None = None
        self._starting: asyncio.Task[_Writer] | None = None
        self._pending: list[_Pending] = []
        # Sent and not yet answered, oldest first: the writer answers in the order it was sent.
        self._sent: collections.deque[_Pending] = collections.deque()
        self._flush_scheduled = False
        self._drained: asyncio.Future[None] | None = None  # set for stop(), when all answered
        self._pause = 0.0

    @property
    def pid(self) -> int | None:
        """The writer process's id while one runs (for operators and tests)."""
        return self._writer.popen.pid if self._writer is not None else None

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Have a writer ready (raises StoreUnavailable if none would start)."""
        writer = self._writer
        if writer is not None and not writer.closing and writer.ready.done():
            return
        await asyncio.shield(self._start_writer())

    async def stop(self) -> None:
        """Answer everything submitted so far, then let the writer exit."""
        while self._pending or self._sent:
            self._drained = asyncio.get_running_loop().create_future()
            self._kick()
            await self._drained
        if self._starting is not None:
            with contextlib.suppress(StoreUnavailable):
                await asyncio.shield(self._starting)
        writer = self._writer
        if writer is None:
            return
        writer.closing = True
        writer.to_writer.close()  # EOF: the writer finishes and exits
        await writer.gone
        await asyncio.to_thread(_reap, writer.popen)
        if self._writer is writer:
            self._writer = None
        self._kick()  # anything submitted while it was exiting goes to a new writer

    def close(self) -> None:
        """Outside any loop: make sure no writer process outlives its receiver."""
        writer, self._writer = self._writer, None
        if writer is None:
            return
        writer.closing = True
        with contextlib.suppress(Exception):
            # The pipe itself, not the transport: the loop that owns it may be gone already.
            writer.to_writer.get_extra_info("pipe").close()
        _reap(writer.popen, timeout=2.0)

    # -- the webhook path ----------------------------------------------------------------------

    def submit(self, row: Row) -> "asyncio.Future[IngestResult]":
        future: asyncio.Future[IngestResult] = asyncio.get_running_loop().create_future()
        self._pending.append((row, future))
        if not self._flush_scheduled:
            self._kick()
        return future

    def _kick(self) -> None:
        if self._flush_scheduled or not self._pending:
            return
        self._flush_scheduled = True
        # At the end of this loop pass, so every request parsed in it goes in one frame.
        asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        """Stream what is pending to the writer, which commits whatever is waiting for it each
        time it finishes a commit: the batching happens there, so a batch is never held back
        by this loop being slow to hear that the last one is done."""
        self._flush_scheduled = False
        if not self._pending:
            return
        writer = self._writer
        if writer is None or writer.closing or not writer.ready.done():
            self._start_writer()  # flushes again once the writer is ready
            return
        pending, self._pending = self._pending, []
        try:
            frame = frames.encode(("rows", self.now().timestamp(), [row for row, _ in pending]))
        except ValueError as exc:  # a value the wire cannot carry: a caller's, not the wire's
            log.error("inbox.batch_unsendable", size=len(pending), error=repr(exc)[:200])
            self._fail(pending, StoreUnavailable("unsendable"))
            return
        self._sent.extend(pending)
        writer.to_writer.write(frame)

    def _on_message(self, writer: _Writer, message: Any) -> None:
        if message[0] == "ready":
            if not writer.ready.done():
                writer.ready.set_result(None)
            return
        _, wire, events = message
        sent = self._sent
        if len(wire) > len(sent):  # cannot happen; if it does, the pairing is lost: start over
            log.error("inbox.writer_out_of_step", answered=len(wire), sent=len(sent))
            writer.popen.kill()  # its pipe closes, and _on_lost fails every unanswered row
            return
        batch = [sent.popleft() for _ in wire]
        for (_, future), outcome in zip(batch, wire, strict=True):
            if future.done():  # the caller went away (client disconnect, cancel)
                continue
            if type(outcome) is int:
                future.set_result(IngestResult(outcome > 0, abs(outcome)))
            else:
                future.set_exception(StoreUnavailable(outcome))
        if self.on_batch is not None:
            self.on_batch(len(batch))
        _emit(events)
        _log_commit(batch, wire)
        self._check_drained()

    def _on_lost(self, writer: _Writer) -> None:
        expected = writer.closing
        writer.closing = True
        if not writer.gone.done():
            writer.gone.set_result(None)
        _reap_later(writer.popen)
        if not writer.ready.done():
            # Died while starting: `_start` sees this and fails what is waiting.
            writer.ready.set_exception(StoreUnavailable("writer_exited"))
            return
        if self._writer is not writer:
            return
        self._writer = None
        if not expected:
            lived = time.monotonic() - writer.started
            log.error("inbox.writer_exited", pid=writer.popen.pid, lived_seconds=round(lived, 1))
            self._pause = 0.0 if lived > _HEALTHY_AFTER else _next_pause(self._pause)
        # Whatever it had not answered may or may not be committed: a 503, and the sender's
        # retry finds it stored (a duplicate) or stores it now.
        sent, self._sent = list(self._sent), collections.deque()
        self._fail(sent, StoreUnavailable("writer_exited"))
        self._kick()

    # -- starting a writer ------------------------------------------------------------------

    def _start_writer(self) -> "asyncio.Task[_Writer]":
        if self._starting is None:
            task = asyncio.get_running_loop().create_task(self._start())
            # Whoever waits on it sees its error; a start nobody waits on must not warn.
            task.add_done_callback(lambda t: t.cancelled() or t.exception())
            self._starting = task
        return self._starting

    async def _start(self) -> _Writer:
        try:
            if self._pause:
                await asyncio.sleep(self._pause)
            writer = await self._spawn()
        except StoreUnavailable as exc:
            self._pause = _next_pause(self._pause)
            log.error("inbox.writer_unavailable", error=str(exc))
            self._fail_pending(exc)
            raise
        finally:
            self._starting = None
        self._kick()
        return writer

    async def _spawn(self) -> _Writer:
        loop = asyncio.get_running_loop()
        parent_read, child_write = os.pipe()
        child_read, parent_write = os.pipe()
        try:
            popen = await asyncio.to_thread(_popen, child_read, child_write)
        except OSError as exc:
            os.close(parent_read)
            os.close(parent_write)
            raise StoreUnavailable("writer_did_not_start") from exc
        finally:
            os.close(child_read)
            os.close(child_write)
        # The URL may hold a password: it goes down the pipe, never on a command line.
        os.write(parent_write, frames.encode({"url": self._url, "max_batch": self.max_batch}))
        to_writer, _ = await loop.connect_write_pipe(
            asyncio.BaseProtocol, os.fdopen(parent_write, "wb", buffering=0)
        )
        ready: asyncio.Future[None] = loop.create_future()
        ready.add_done_callback(lambda f: f.cancelled() or f.exception())  # seen by _spawn
        gone: asyncio.Future[None] = loop.create_future()
        writer = _Writer(popen, to_writer, ready, gone)  # type: ignore[arg-type]
        await loop.connect_read_pipe(
            lambda: _Pipe(
                lambda message: self._on_message(writer, message), lambda: self._on_lost(writer)
            ),
            os.fdopen(parent_read, "rb", buffering=0),
        )
        self._writer = writer
        try:
            await asyncio.wait_for(asyncio.shield(ready), self.start_timeout)
        except (TimeoutError, StoreUnavailable):
            writer.closing = True
            if self._writer is writer:
                self._writer = None
            popen.kill()
            raise StoreUnavailable("writer_did_not_start") from None
        log.debug("inbox.writer_started", pid=popen.pid)
        return writer

    def _fail_pending(self, exc: StoreUnavailable) -> None:
        pending, self._pending = self._pending, []
        self._fail(pending, exc)

    def _fail(self, batch: list[_Pending], exc: StoreUnavailable) -> None:
        for _, future in batch:
            if not future.done():
                future.set_exception(exc)
        self._check_drained()

    def _check_drained(self) -> None:
        drained = self._drained
        if drained is not None and not self._pending and not self._sent and not drained.done():
            drained.set_result(None)


def _popen(read: int, write: int) -> "subprocess.Popen[bytes]":
    command = [sys.executable, "-m", "store.writer_process", "--read", str(read)]
    return subprocess.Popen(  # noqa: S603 (this interpreter, our module, two fd numbers)
        [*command, "--write", str(write)],
        pass_fds=(read, write),
        stdin=subprocess.DEVNULL,
        # Nothing should print, but if something does it must not reach our stdout (a
        # command's output): the writer's stdout is our stderr.
        stdout=_stderr_fd(),
    )


def _next_pause(pause: float) -> float:
    return min(_RESTART_PAUSE_MAX, pause * 2 or 0.1)


def _stderr_fd() -> int:
    try:
        return sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # replaced by something without a file
        return subprocess.DEVNULL


def _reap(popen: "subprocess.Popen[bytes]", timeout: float = 10.0) -> None:
    try:
        popen.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        popen.kill()
        popen.wait()


def _reap_later(popen: "subprocess.Popen[bytes]") -> None:
    # Its pipe closed, so it is exiting: collect it off the loop so it leaves no zombie.
    if popen.poll() is None:
        asyncio.get_running_loop().run_in_executor(None, _reap, popen)


def _emit(events: list[tuple[str, dict[str, Any]]]) -> None:
    """Log what the writer logged, through this process's pipeline (format, redaction)."""
    for method, fields in events:
        event = fields.pop("event", "inbox.writer_event")
        getattr(log, method if method in _METHODS else "info")(event, **fields)


_METHODS = frozenset({"debug", "info", "warning", "error", "critical", "exception"})


def _log_commit(batch: list[_Pending], outcomes: list[int | str]) -> None:
    stored: list[str] = []
    duplicate: list[str] = []
    for (row, _), outcome in zip(batch, outcomes, strict=True):
        if type(outcome) is int:
            (stored if outcome > 0 else duplicate).append(row[0])
    if stored or duplicate:
        # One line per commit, naming every event in it: "did event X arrive?" is one grep.
        log.info("inbox.committed", stored=stored, duplicate=duplicate)
