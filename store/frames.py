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
from typing import Any

from store.ingest import IngestResult, StoreUnavailable

_HEADER = struct.Struct("!I")


def encode(message: Any) -> bytes:
    payload = marshal.dumps(message)
    return _HEADER.pack(len(payload)) + payload


class Decoder:
    """Turns the bytes a pipe delivers, in whatever pieces, into messages."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Any]:
        """`push` then `take`."""
        self.push(data)
        return self.take()

    def push(self, data: bytes) -> None:
        self._buffer += data

    def take(self) -> list[Any]:
        """Every complete message received so far; a partial one stays for the next push."""
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
