"""The inbox's writer process: commits one receiver's webhook deliveries, a batch at a time.

Why a process and not a thread: the receiver's event loop and a writer thread share one GIL.
Every time the writer came back from SQLite (after each statement, after the commit) it had to
take the GIL from the busy loop, and the loop then waited to take it back; that hand-off, not
SQLite, held the receiver to ~55 % of a bare endpoint. In its own process the writer binds,
commits and reads back in parallel with the loop, which only frames a batch out and its
outcomes in (bench/README.md has the figures).

Wire (store/frames.py), on the two pipes named by `--read FD --write FD`:

    receiver -> writer   {"url": ..., "max_batch": n} once, then ("rows", now, [row, ...]) as
                         deliveries arrive (a frame per pass of the receiver's event loop)
    writer -> receiver   ("ready",) once, then ("done", outcomes, logs) per commit

The writer commits rows in the order they came, so `outcomes` (one per row: a delivery id, or
why nothing was committed) answer the oldest unanswered rows; `logs` are the structlog events
the commit raised, as (method, fields), for the receiver to emit through its own pipeline (this
process renders nothing itself, so it needs no logging setup). The writer
exits when its read pipe closes: the receiver stopped, or died. It ignores SIGINT and SIGTERM,
which reach a whole process group (a Ctrl-C, systemd's stop): the receiver drains what it has
accepted and then closes the pipe.
"""

import argparse
import contextlib
import os
import select
import signal
import sys
from collections.abc import MutableMapping
from functools import partial
from typing import Any, BinaryIO

import structlog
from sqlalchemy.engine import Engine

from store import frames
from store.engine import make_engine, sqlite_path
from store.ingest import Row, SqliteWriter, StoreUnavailable, Write, write_resilient, write_rows

log = structlog.get_logger(__name__)

_PLAIN = (str, int, float, bool, type(None))


class _Collect:
    """A structlog processor that keeps each event for the receiver instead of rendering it."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, _: Any, method: str, event_dict: MutableMapping[str, Any]) -> Any:
        fields = {k: v if isinstance(v, _PLAIN) else repr(v) for k, v in event_dict.items()}
        self.events.append((method, fields))
        raise structlog.DropEvent

    def take(self) -> list[tuple[str, dict[str, Any]]]:
        events, self.events = self.events, []
        return events


class Inbound:
    """The read pipe: blocks for the first message, then takes whatever else is waiting."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.decoder = frames.Decoder()
        self.closed = False
        # poll, not select: the fd number is the receiver's, and select refuses any >= 1024.
        self.poller = select.poll()
        self.poller.register(fd, select.POLLIN)

    def wait(self) -> list[Any]:
        """At least one message, and every complete one already in the pipe; [] once closed."""
        messages: list[Any] = []
        while not messages:
            if self.closed or not self._read():
                return []
            messages = self.decoder.take()
        while not self.closed and self.poller.poll(0):
            self._read()
            messages.extend(self.decoder.take())
        return messages

    def _read(self) -> bool:
        data = os.read(self.fd, _READ_SIZE)
        if not data:
            self.closed = True
            return False
        self.decoder.push(data)
        return True


_READ_SIZE = 1 << 20


def serve(read_fd: int, write: BinaryIO) -> None:
    """Commit what arrives on `read_fd`, answering on `write`, until `read_fd` closes.

    Each pass takes every row waiting in the pipe (what the receiver sent while the last commit
    ran) and commits it, up to `max_batch` rows a transaction: the group commit is sized here,
    by the writer's own pace, not by how soon the receiver's busy loop notices a commit ended.
    """
    inbound = Inbound(read_fd)
    first = inbound.wait()
    if not first or not isinstance(first[0], dict):
        return
    config = first[0]
    max_batch = int(config.get("max_batch", 256))
    collect = _Collect()
    structlog.configure(
        processors=[structlog.processors.format_exc_info, collect],
        cache_logger_on_first_use=True,
    )
    # Connections are made on first use, so a database that is down now only fails batches
    # (503s, retried by Anthropic) instead of the receiver's start.
    url = str(config["url"])
    path = sqlite_path(url)
    engine: Engine | None = None
    writer: Write
    if path is not None:
        writer = SqliteWriter(path)
    else:
        engine = make_engine(url, pool_size=1)
        writer = partial(write_rows, engine)
    early = first[1:]  # the receiver sends rows only after "ready"; kept, should any come
    try:
        _send(write, ("ready",))
        while messages := early or inbound.wait():
            early = []
            rows: list[Row] = []
            now = 0.0
            for _, at, part in messages:
                rows.extend(part)
                now = at
            for start in range(0, len(rows), max_batch):
                chunk = rows[start : start + max_batch]
                outcomes = _write(writer, chunk, now)
                _send(write, ("done", frames.outcomes_to_wire(outcomes), collect.take()))
    except BrokenPipeError:
        pass  # the receiver is gone; nobody is left to answer
    finally:
        if isinstance(writer, SqliteWriter):
            writer.close()
        if engine is not None:
            engine.dispose()


def _write(writer: Write, rows: list[Row], now: float) -> list[Any]:
    try:
        return write_resilient(writer, rows, now)
    except Exception as exc:  # the writer must outlive any one batch
        log.exception("inbox.batch_failed", size=len(rows))
        return [StoreUnavailable(type(exc).__name__)] * len(rows)


def _send(write: BinaryIO, message: object) -> None:
    write.write(frames.encode(message))
    write.flush()


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    parser = argparse.ArgumentParser(prog="python -m store.writer_process")
    parser.add_argument("--read", type=int, required=True)
    parser.add_argument("--write", type=int, required=True)
    args = parser.parse_args(argv)
    write = os.fdopen(args.write, "wb")
    try:
        serve(args.read, write)
    finally:
        os.close(args.read)
        with contextlib.suppress(BrokenPipeError):  # the receiver is gone first: nothing to say
            write.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
