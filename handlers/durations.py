"""Durations as operators write them: "90s", "15m", "2h", "1d", or a sum such as "1h30m"."""

import re
from datetime import timedelta

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_PART = re.compile(r"(\d+)([smhdw])")
_WHOLE = re.compile(r"(?:\d+[smhdw])+")


class DurationError(ValueError):
    """A duration string that does not parse; the message says what is accepted."""


def parse_duration(text: str) -> timedelta:
    """Parse "0s", "90s", "15m", "2h", "1d", "1w" or a concatenation ("1h30m").

    A unit is required: a bare "5" is ambiguous (seconds? minutes?) and is refused.
    """
    cleaned = text.strip().lower()
    if not _WHOLE.fullmatch(cleaned):
        raise DurationError(
            f"bad duration {text!r}: use a number and a unit s, m, h, d or w "
            '(e.g. "90s", "15m", "2h", "1d", "1h30m")'
        )
    seconds = sum(int(n) * _UNITS[unit] for n, unit in _PART.findall(cleaned))
    return timedelta(seconds=seconds)


def format_duration(value: timedelta) -> str:
    """The inverse for display: the largest units first, e.g. 5400 s -> "1h30m"."""
    remaining = int(value.total_seconds())
    if remaining <= 0:
        return "0s"
    parts: list[str] = []
    for unit in ("d", "h", "m", "s"):
        count, remaining = divmod(remaining, _UNITS[unit])
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)
