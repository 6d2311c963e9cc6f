"""Opaque page cursors: an offset bound to the listing's order, so a cursor reused with the
other order is a 400 as on the real API. The last page says `next_page: null`."""

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from emulator.errors import BadRequest


@dataclass(frozen=True)
class Page:
    data: list[Any]
    next_page: str | None
    prev_page: str | None

    def body(self, *, bidirectional: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {"data": self.data, "next_page": self.next_page}
        if bidirectional:
            out["prev_page"] = self.prev_page
        return out


def encode_cursor(offset: int, order: str) -> str:
    raw = json.dumps({"o": offset, "d": order}, separators=(",", ":")).encode()
    return "page_" + base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, order: str) -> int:
    try:
        if not cursor.startswith("page_"):
            raise ValueError(cursor)
        tail = cursor[len("page_") :]
        raw = json.loads(base64.urlsafe_b64decode(tail + "=" * (-len(tail) % 4)))
        offset, bound_order = int(raw["o"]), str(raw["d"])
    except (ValueError, KeyError, TypeError):
        raise BadRequest("page: invalid cursor") from None
    if bound_order != order:
        raise BadRequest("page: cursor was issued for a different order")
    if offset < 0:
        raise BadRequest("page: invalid cursor")
    return offset


def paginate(items: Sequence[Any], *, limit: int, page: str | None, order: str) -> Page:
    """`items` already sorted in `order`."""
    start = decode_cursor(page, order) if page else 0
    end = start + limit
    data = list(items[start:end])
    next_page = encode_cursor(end, order) if end < len(items) else None
    prev_page = encode_cursor(max(0, start - limit), order) if start > 0 else None
    return Page(data, next_page, prev_page)
