"""What crosses the pipes between a receiver and its writer process, and how it is framed.

A frame is a 4-byte length and a `marshal` payload: plain tuples, lists, dicts, strings and
numbers only, which marshal writes and reads in C at a fraction of pickle's cost (pickling
NewDelivery's datetimes alone cost the event loop more than a microsecond a delivery). Both ends
are this program on the same interpreter, over pipes nobody else holds.

A delivery travels as its Row (store/ingest.py), a plain tuple. An outcome travels as an int,
the delivery id, negated for a duplicate; or as a str, the reason the batch holding it was not
committed.
"""

import marshal
import struct
from collections.abc import Sequence
from typing import Any, BinaryIO

from store.ingest import IngestResult, StoreUnavailable

_HEADER = struct.Struct("!I")


def encode(message: Any) -> bytes:
    payload = marshal.dumps(message)
    return _HEADER.pack(len(payload)) + payload


def read(stream: BinaryIO) -> Any:
    """The next message from a blocking stream; None once it is closed (cleanly or mid-frame)."""
    header = _read_exactly(stream, _HEADER.size)
    if header is None:
        return None
    (size,) = _HEADER.unpack(header)
    payload = _read_exactly(stream, size)
    if payload is None:
        return None
    return marshal.loads(payload)  # noqa: S302 (our own process at the other end)


def _read_exactly(stream: BinaryIO, size: int) -> bytes | None:
    chunks: list[bytes] = []
    left = size
    while left:
        chunk = stream.read(left)
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


class Decoder:
    """Turns the bytes a non-blocking pipe delivers, in whatever pieces, into messages."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Any]:
        self._buffer += data
        messages: list[Any] = []
        start = 0
        while len(self._buffer) - start >= _HEADER.size:
            (size,) = _HEADER.unpack_from(self._buffer, start)
            end = start + _HEADER.size + size
            if len(self._buffer) < end:
                break
            payload = self._buffer[start + _HEADER.size : end]
            messages.append(marshal.loads(payload))  # noqa: S302 (our own writer process)
            start = end
        if start:
            del self._buffer[:start]
        return messages


# -- deliveries and outcomes --------------------------------------------------------------


def outcomes_to_wire(outcomes: Sequence[IngestResult | StoreUnavailable]) -> list[int | str]:
    return [
        str(o) if isinstance(o, StoreUnavailable) else (o.delivery_id if o.new else -o.delivery_id)
        for o in outcomes
    ]


def outcome_from_wire(w: int | str) -> IngestResult | StoreUnavailable:
    if isinstance(w, str):
        return StoreUnavailable(w)
    return IngestResult(w > 0, abs(w))
