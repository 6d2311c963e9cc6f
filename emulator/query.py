"""Query strings as the SDK sends them: `key[]` arrays repeated, `created_at[gte]` literal keys,
brackets percent-encoded (Starlette has already decoded them by the time we read)."""

from collections.abc import Iterable
from datetime import datetime

from emulator.errors import BadRequest

RANGE_OPS = ("gt", "gte", "lt", "lte")


class Query:
    def __init__(self, items: Iterable[tuple[str, str]]) -> None:
        self._lists: dict[str, list[str]] = {}
        for key, value in items:
            name = key[:-2] if key.endswith("[]") else key
            self._lists.setdefault(name, []).append(value)

    def get(self, name: str) -> str | None:
        values = self._lists.get(name)
        return values[-1] if values else None

    def get_list(self, name: str) -> list[str]:
        return list(self._lists.get(name, []))

    def get_int(self, name: str, default: int, *, minimum: int = 1, maximum: int = 1000) -> int:
        raw = self.get(name)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise BadRequest(f"{name}: expected an integer, got {raw!r}") from None
        if not minimum <= value <= maximum:
            raise BadRequest(f"{name}: must be between {minimum} and {maximum}")
        return value

    def get_bool(self, name: str, default: bool = False) -> bool:
        raw = self.get(name)
        if raw is None:
            return default
        if raw.lower() in ("true", "1"):
            return True
        if raw.lower() in ("false", "0"):
            return False
        raise BadRequest(f"{name}: expected true or false, got {raw!r}")

    def order(self, default: str) -> str:
        value = self.get("order") or default
        if value not in ("asc", "desc"):
            raise BadRequest("order: must be 'asc' or 'desc'")
        return value

    def time_range(self, name: str) -> dict[str, datetime]:
        """`name[gt]` etc. as aware datetimes, keyed by operator."""
        out: dict[str, datetime] = {}
        for op in RANGE_OPS:
            raw = self.get(f"{name}[{op}]")
            if raw is not None:
                out[op] = parse_time(f"{name}[{op}]", raw)
        return out


def parse_time(name: str, raw: str) -> datetime:
    try:
        value = datetime.fromisoformat(raw.replace("Z", "+00:00").replace(" ", "+"))
    except ValueError:
        raise BadRequest(f"{name}: not an RFC 3339 timestamp: {raw!r}") from None
    if value.tzinfo is None:
        raise BadRequest(f"{name}: timestamp needs a timezone offset")
    return value


def in_range(value: datetime, bounds: dict[str, datetime]) -> bool:
    checks = {
        "gt": lambda b: value > b,
        "gte": lambda b: value >= b,
        "lt": lambda b: value < b,
        "lte": lambda b: value <= b,
    }
    return all(checks[op](bound) for op, bound in bounds.items())
