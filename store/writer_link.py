"""The receiver's end of its inbox writer process (store/writer_process.py).

The webhook path hands each verified delivery to `submit` and awaits the future it returns.
Each pass of the event loop sends what it collected down the pipe as one frame; the writer,
each time it finishes a commit, commits everything that arrived meanwhile as the next batch.
A writer answers its rows in the order they were sent to it, and each future is resolved only
when its row is reported committed (or not, as StoreUnavailable: a 503, so Anthropic retries).
This side costs the loop a frame out per pass and a frame in per commit.

A writer that dies, or answers out of step, fails every row it had not answered (none of them
was acknowledged) and another is started for whatever is waiting. A writer belongs to the loop
that started it; used from another loop (the first one is gone), the link starts afresh.
"""

import asyncio
import collections
import contextlib
import marshal
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
    def __init__(self, writer: "_Writer", link: "WriterLink") -> None:
        self.decoder = frames.Decoder()
        self.writer = writer
        self.link = link

    def data_received(self, data: bytes) -> None:
        try:
            for message in self.decoder.feed(data):
                self.link._on_message(self.writer, message)
        except Exception:  # a garbled frame or a broken pairing: this writer cannot be trusted
            log.exception("inbox.writer_out_of_step", pid=self.writer.popen.pid)
            self.writer.abandon()

    def connection_lost(self, exc: Exception | None) -> None:
        self.link._on_lost(self.writer)


@dataclass(eq=False)  # compared and hashed by identity: one per process
class _Writer:
    """One writer process, the loop's two pipe transports to it, and the rows it owes."""

    popen: subprocess.Popen[bytes]
    loop: asyncio.AbstractEventLoop
    ready: "asyncio.Future[None]"
    gone: "asyncio.Future[None]"
    to_writer: asyncio.WriteTransport | None = None
    from_writer: asyncio.ReadTransport | None = None
    # Sent to this writer and not yet answered, oldest first: it answers in that order.
    sent: collections.deque[_Pending] = field(default_factory=collections.deque)
    started: float = field(default_factory=time.monotonic)
    closing: bool = False

    def usable(self) -> bool:
        return not self.closing and self.ready.done() and not self.ready.exception()

    def abandon(self) -> None:
        """Stop trusting it: kill it; its pipe closes and `_on_lost` fails what it owed."""
        self.closing = True
        with contextlib.suppress(ProcessLookupError):
            self.popen.kill()

    def close_pipes(self) -> None:
        """Outside its loop: close the pipes themselves, the transports' loop may be gone."""
        for transport in (self.to_writer, self.from_writer):
            if transport is not None:
                with contextlib.suppress(Exception):
                    transport.get_extra_info("pipe").close()


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
        self._loop: asyncio.AbstractEventLoop | None = None
        self._writer: _Writer | None = None  # the one new rows go to
        self._owing: set[_Writer] = set()  # every writer not yet gone (it may still answer)
        self._starting: asyncio.Task[_Writer] | None = None
        self._pending: list[_Pending] = []
        self._flush_scheduled = False
        self._drained: asyncio.Future[None] | None = None  # for stop(): all answered
        self._pause = 0.0

    @property
    def pid(self) -> int | None:
        """The writer process's id while one runs (for operators and tests)."""
        return self._writer.popen.pid if self._writer is not None else None

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Have a writer ready (raises StoreUnavailable if none would start)."""
        self._adopt_loop()
        if self._writer is not None and self._writer.usable():
            return
        await asyncio.shield(self._start_writer())

    async def stop(self) -> None:
        """Answer everything submitted so far, then let the writer exit."""
        loop = self._adopt_loop()
        while self._unanswered():
            if self._drained is None or self._drained.done():
                self._drained = loop.create_future()
            self._kick()
            await asyncio.shield(self._drained)
        if self._starting is not None:
            with contextlib.suppress(StoreUnavailable):
                await asyncio.shield(self._starting)
        writer = self._writer
        if writer is None:
            return
        self._writer = None
        writer.closing = True
        if writer.to_writer is not None:
            writer.to_writer.close()  # EOF: the writer finishes and exits
        await writer.gone
        await asyncio.to_thread(_reap, writer.popen)
        self._kick()  # anything submitted while it was exiting goes to a new writer

    def close(self) -> None:
        """Outside any loop: make sure no writer process outlives its receiver."""
        writers = {*self._owing, *([self._writer] if self._writer else [])}
        self._writer = None
        self._owing.clear()
        for writer in writers:
            writer.closing = True
            writer.close_pipes()
        for writer in writers:
            _reap(writer.popen, timeout=2.0)

    # -- the webhook path ----------------------------------------------------------------------

    def submit(self, row: Row) -> "asyncio.Future[IngestResult]":
        loop = self._loop
        if loop is None or loop is not asyncio.get_running_loop():
            loop = self._adopt_loop()
        future: asyncio.Future[IngestResult] = loop.create_future()
        self._pending.append((row, future))
        if not self._flush_scheduled:
            self._kick()
        return future

    def _kick(self) -> None:
        if self._flush_scheduled or not self._pending or self._loop is None:
            return
        self._flush_scheduled = True
        # At the end of this loop pass, so every request parsed in it goes in one frame.
        self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        """Stream what is pending to the writer, which commits whatever is waiting for it each
        time it finishes a commit: the batching happens there, so a batch is never held back
        by this loop being slow to hear that the last one is done."""
        self._flush_scheduled = False
        if not self._pending:
            return
        writer = self._writer
        if writer is None or not writer.usable() or writer.to_writer is None:
            self._start_writer()  # flushes again once the writer is ready
            return
        pending, self._pending = self._pending, []
        try:
            frame = frames.encode(("rows", self.now().timestamp(), [row for row, _ in pending]))
        except Exception:  # a value the wire cannot carry, from a caller: fail it alone
            pending = self._refuse_unsendable(pending)
            if not pending:
                return
            frame = frames.encode(("rows", self.now().timestamp(), [row for row, _ in pending]))
        writer.sent.extend(pending)
        writer.to_writer.write(frame)

    def _refuse_unsendable(self, pending: list[_Pending]) -> list[_Pending]:
        sendable: list[_Pending] = []
        for row, future in pending:
            try:
                marshal.dumps(row)
            except Exception as exc:
                log.error("inbox.row_unsendable", error=repr(exc)[:200])
                _fail_future(future, StoreUnavailable("unsendable"))
            else:
                sendable.append((row, future))
        return sendable

    def _on_message(self, writer: _Writer, message: Any) -> None:
        if message[0] == "ready":
            if not writer.ready.done():
                writer.ready.set_result(None)
            return
        _, wire, events = message
        sent = writer.sent
        if len(wire) > len(sent):  # cannot happen; if it does, the pairing is lost
            raise RuntimeError(f"{len(wire)} answers for {len(sent)} rows")
        batch = [sent.popleft() for _ in wire]
        stored: list[str] = []
        duplicate: list[str] = []
        for (row, future), answer in zip(batch, wire, strict=True):
            outcome = frames.outcome_from_wire(answer)
            if isinstance(outcome, IngestResult):
                (stored if outcome.new else duplicate).append(row[0])
            if future.done():  # the caller went away (client disconnect, cancel)
                continue
            if isinstance(outcome, IngestResult):
                future.set_result(outcome)
            else:
                future.set_exception(outcome)
        # Every caller is answered; what follows only reports, and must not break the pairing.
        try:
            if (stored or duplicate) and self.on_batch is not None:
                self.on_batch(len(batch))
            _emit(events)
            if stored or duplicate:
                # One line per commit, naming every event in it: "did event X arrive?" is a grep.
                log.info("inbox.committed", stored=stored, duplicate=duplicate)
        except Exception:
            with contextlib.suppress(Exception):
                log.exception("inbox.report_failed")
        self._check_drained()

    def _on_lost(self, writer: _Writer) -> None:
        expected = writer.closing
        writer.closing = True
        self._owing.discard(writer)
        if not writer.gone.done():
            writer.gone.set_result(None)
        _reap_later(writer.popen)
        if not writer.ready.done():
            # Died while starting: `_start` sees this and fails what is waiting.
            writer.ready.set_exception(StoreUnavailable("writer_exited"))
        if not expected:
            lived = time.monotonic() - writer.started
            log.error("inbox.writer_exited", pid=writer.popen.pid, lived_seconds=round(lived, 1))
            self._pause = 0.0 if lived > _HEALTHY_AFTER else _next_pause(self._pause)
        # Whatever it had not answered may or may not be committed: a 503, and the sender's
        # retry finds it stored (a duplicate) or stores it now.
        owed, writer.sent = list(writer.sent), collections.deque()
        if self._writer is writer:
            self._writer = None
        self._fail(owed, StoreUnavailable("writer_exited"))
        self._kick()

    # -- the loop it runs on -------------------------------------------------------------------

    def _adopt_loop(self) -> asyncio.AbstractEventLoop:
        """The running loop, now this link's. What belonged to a previous loop is abandoned:
        one link serves one loop at a time (a receiver has one; tests make many in turn)."""
        loop = asyncio.get_running_loop()
        if self._loop is loop:
            return loop
        old_loop, self._loop = self._loop, loop
        self._flush_scheduled = False
        if old_loop is None:
            return loop
        writers = {*self._owing, *([self._writer] if self._writer else [])}
        owed = self._pending + [p for w in writers for p in w.sent]
        for writer in writers:
            writer.closing = True
            writer.close_pipes()
            with contextlib.suppress(ProcessLookupError):
                writer.popen.kill()
            _reap(writer.popen, timeout=2.0)
        self._owing.clear()
        self._writer = None
        self._starting = None
        self._pending = []
        self._drained = None
        if owed:
            log.warning("inbox.writer_loop_changed", abandoned=len(owed))
        gone = StoreUnavailable("writer_loop_changed")
        for _, future in owed:
            # Thread-safe, and a no-op once that loop is closed (nobody is left to answer).
            with contextlib.suppress(RuntimeError):
                old_loop.call_soon_threadsafe(_fail_future, future, gone)
        return loop

    def _unanswered(self) -> bool:
        return bool(self._pending) or any(w.sent for w in self._owing)

    # -- starting a writer ------------------------------------------------------------------

    def _start_writer(self) -> "asyncio.Task[_Writer]":
        if self._starting is None:
            assert self._loop is not None
            task = self._loop.create_task(self._start())
            # Whoever waits on it sees its error; a start nobody waits on must not warn.
            task.add_done_callback(lambda t: t.cancelled() or t.exception())
            self._starting = task
        return self._starting

    async def _start(self) -> _Writer:
        try:
            if self._pause:
                await asyncio.sleep(self._pause)
            writer = await self._spawn()
        except BaseException as exc:  # cancelled too: whoever waits must not wait forever
            self._pause = _next_pause(self._pause)
            failure = exc if isinstance(exc, StoreUnavailable) else StoreUnavailable("start")
            log.error("inbox.writer_unavailable", error=repr(exc)[:300])
            self._fail_pending(failure)
            if failure is exc or isinstance(exc, asyncio.CancelledError):
                raise
            raise failure from exc
        finally:
            if self._starting is asyncio.current_task():
                self._starting = None
        self._kick()
        return writer

    async def _spawn(self) -> _Writer:
        loop = asyncio.get_running_loop()
        parent_read, child_write = os.pipe()
        child_read, parent_write = os.pipe()
        try:
            popen = await asyncio.to_thread(_popen, child_read, child_write)
        except BaseException as exc:
            os.close(parent_read)
            os.close(parent_write)
            raise StoreUnavailable("writer_did_not_start") from exc
        finally:
            os.close(child_read)
            os.close(child_write)
        writer = _Writer(popen, loop, loop.create_future(), loop.create_future())
        writer.ready.add_done_callback(lambda f: f.cancelled() or f.exception())  # seen below
        self._owing.add(writer)
        try:
            # The URL may hold a password: it goes down the pipe, never on a command line.
            config = frames.encode({"url": self._url, "max_batch": self.max_batch})
            os.write(parent_write, config)
            writer.to_writer, _ = await loop.connect_write_pipe(
                asyncio.BaseProtocol, os.fdopen(parent_write, "wb", buffering=0)
            )
            parent_write = -1
            writer.from_writer, _ = await loop.connect_read_pipe(
                lambda: _Pipe(writer, self), os.fdopen(parent_read, "rb", buffering=0)
            )
            parent_read = -1
            self._writer = writer
            await asyncio.wait_for(asyncio.shield(writer.ready), self.start_timeout)
        except BaseException as exc:
            writer.closing = True
            if self._writer is writer:
                self._writer = None
            self._owing.discard(writer)
            for fd in (parent_read, parent_write):
                if fd != -1:
                    os.close(fd)
            writer.close_pipes()
            with contextlib.suppress(ProcessLookupError):
                popen.kill()
            if isinstance(exc, asyncio.CancelledError):
                raise
            raise StoreUnavailable("writer_did_not_start") from exc
        log.debug("inbox.writer_started", pid=popen.pid)
        return writer

    def _fail_pending(self, exc: StoreUnavailable) -> None:
        pending, self._pending = self._pending, []
        self._fail(pending, exc)

    def _fail(self, batch: list[_Pending], exc: StoreUnavailable) -> None:
        for _, future in batch:
            _fail_future(future, exc)
        self._check_drained()

    def _check_drained(self) -> None:
        drained = self._drained
        if drained is not None and not drained.done() and not self._unanswered():
            drained.set_result(None)


def _fail_future(future: "asyncio.Future[Any]", exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)


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
