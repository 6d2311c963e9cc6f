"""How a journal file holds its records: framed, so that a torn write is found and skipped.

A frame is MAGIC (4 bytes), the payload's length (u32, big-endian), a CRC-32 over the length
and the payload (u32), then the payload. A crash mid-append leaves a last frame whose length
runs past the end of the file or whose CRC does not match; a reader skips it. A bad frame
anywhere else (a write that failed and could not be cut off, a flipped bit) is skipped the same
way: the reader looks for the next MAGIC that starts a valid frame, so one bad frame costs only
itself. Pure: bytes in, frames out; the files are store/journal.py's.
"""

import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

MAGIC = b"\xa7IHJ"
_HEADER = struct.Struct("!4sII")
HEADER_SIZE = _HEADER.size
_LENGTH = struct.Struct("!I")
# Far above any record (a body is capped at max_body_bytes); a length beyond it is garbage.
MAX_PAYLOAD = 64 << 20


class Buffer(Protocol):
    """bytes, bytearray or an mmap: what the reader needs of the file's contents."""

    def __len__(self) -> int: ...
    def __getitem__(self, index: slice, /) -> bytes: ...
    def find(self, sub: bytes, start: int = ..., /) -> int: ...


@dataclass(frozen=True)
class Frame:
    start: int
    end: int  # where the next frame starts
    payload: bytes


@dataclass(frozen=True)
class Gap:
    """Bytes that are no valid frame (a torn tail, a corrupt record), skipped."""

    start: int
    end: int


def encode(payload: bytes) -> bytes:
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"a journal record holds at most {MAX_PAYLOAD} bytes")
    length = _LENGTH.pack(len(payload))
    crc = zlib.crc32(payload, zlib.crc32(length))
    return MAGIC + length + _LENGTH.pack(crc) + payload


def frame_at(buf: Buffer, start: int) -> Frame | None:
    """The valid frame starting exactly at `start`, or None."""
    header = buf[start : start + HEADER_SIZE]
    if len(header) < HEADER_SIZE:
        return None
    magic, length, crc = _HEADER.unpack(header)
    end = start + HEADER_SIZE + length
    if magic != MAGIC or length > MAX_PAYLOAD or end > len(buf):
        return None
    payload = buf[start + HEADER_SIZE : end]
    if zlib.crc32(payload, zlib.crc32(header[4:8])) != crc:
        return None
    return Frame(start, end, payload)


def scan(buf: Buffer, start: int = 0) -> Iterator[Frame | Gap]:
    """Every frame from `start` on, in order, with a Gap for each stretch that is none."""
    at = start
    size = len(buf)
    while at < size:
        frame = frame_at(buf, at)
        if frame is not None:
            yield frame
            at = frame.end
            continue
        # Resynchronise on the next MAGIC that starts a valid frame; the CRC rules out a MAGIC
        # that merely occurs inside some payload.
        following = buf.find(MAGIC, at + 1)
        while following != -1 and frame_at(buf, following) is None:
            following = buf.find(MAGIC, following + 1)
        end = size if following == -1 else following
        yield Gap(at, end)
        at = end
