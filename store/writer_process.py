"""The inbox's writer process: commits one receiver's webhook deliveries, a batch at a time.

Why a process and not a thread: the receiver's event loop and a writer thread share one GIL.
Every time the writer came back from SQLite (after each statement, after the commit) it had to
take the GIL from the busy loop, and the loop then waited to take it back; that hand-off, not
SQLite, held the receiver to ~55 % of a bare endpoint. In its own process the writer binds,
commits and reads back in parallel with the loop, which only frames a batch out and its
outcomes in (bench/README.md has the figures).

Wire (store/frames.py), on the two pipes named by `--read FD --write FD`:

    receiver -> writer   {"url": ...} once, then ("batch", now, [delivery, ...])
    writer -> receiver   ("ready",) once, then ("done", outcomes, logs) for each batch, in order

`outcomes` line up with the batch (each a delivery id, or why nothing was committed); `logs`
are the structlog events the batch raised, as (method, fields), for the receiver to emit through
its own pipeline (this process renders nothing itself, so it needs no logging setup). The writer
exits when its read pipe closes: the receiver stopped, or died. It ignores SIGINT and SIGTERM,
which reach a whole process group (a Ctrl-C, systemd's stop): the receiver drains what it has
accepted and then closes the pipe.
"""

import argparse
import os
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


def serve(read: BinaryIO, write: BinaryIO) -> None:
    """Answer batches from `read` on `write` until `read` closes."""
    config = frames.read(read)
    if not isinstance(config, dict):
        return
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
    try:
        _send(write, ("ready",))
        while (message := frames.read(read)) is not None:
            _, now, rows = message
            outcomes = _write(writer, rows, now)
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
    with os.fdopen(args.read, "rb") as read, os.fdopen(args.write, "wb") as write:
        serve(read, write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
