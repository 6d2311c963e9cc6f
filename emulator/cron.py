"""5-field POSIX cron: parse, match, and the next fire times in a timezone. Pure.

Supports `*`, numbers, `a-b`, lists, and `/step` on either; day-of-week 0-7 (0 and 7 are
Sunday). Like the real API it rejects seconds/year fields, `L W # ?` and `@daily` shortcuts.
Day-of-month and day-of-week combine as in POSIX: if both are restricted, either may match.
"""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

_FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day", 1, 31), ("month", 1, 12), ("dow", 0, 7))


class CronError(ValueError):
    pass


@dataclass(frozen=True)
class Cron:
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    dows: frozenset[int]
    day_any: bool
    dow_any: bool

    def matches(self, local: datetime) -> bool:
        if local.minute not in self.minutes or local.hour not in self.hours:
            return False
        return local.month in self.months and self._day_matches(local)

    def _day_matches(self, local: datetime) -> bool:
        dom = local.day in self.days
        dow = (local.isoweekday() % 7) in self.dows
        if self.day_any or self.dow_any:
            return dom and dow
        return dom or dow


def _parse_field(text: str, name: str, low: int, high: int) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        base, _, step_text = part.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) == 0:
                raise CronError(f"{name}: bad step {part!r}")
            step = int(step_text)
        if base == "*":
            start, end = low, high
        elif "-" in base:
            a, _, b = base.partition("-")
            if not (a.isdigit() and b.isdigit()):
                raise CronError(f"{name}: bad range {part!r}")
            start, end = int(a), int(b)
        elif base.isdigit():
            start = int(base)
            end = high if step_text else start
        else:
            raise CronError(f"{name}: unsupported value {part!r}")
        if not (low <= start <= high and low <= end <= high and start <= end):
            raise CronError(f"{name}: {part!r} out of range {low}-{high}")
        values.update(range(start, end + 1, step))
    return frozenset(values)


def parse(expression: str) -> Cron:
    fields = expression.split()
    if len(fields) != 5:
        raise CronError("expected 5 fields: minute hour day-of-month month day-of-week")
    parsed = [_parse_field(f, n, lo, hi) for f, (n, lo, hi) in zip(fields, _FIELDS, strict=True)]
    dows = frozenset(d % 7 for d in parsed[4])
    return Cron(
        parsed[0],
        parsed[1],
        parsed[2],
        parsed[3],
        dows,
        day_any=fields[2] == "*",
        dow_any=fields[4] == "*",
    )


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise CronError(f"unknown timezone: {name!r}") from None


def next_after(cron: Cron, tz: ZoneInfo, after: datetime) -> datetime | None:
    """The first whole minute strictly after `after` that matches, as aware UTC; None if none
    within about four years (e.g. 30 February)."""
    local = (after.astimezone(tz) + timedelta(minutes=1)).replace(second=0, microsecond=0)
    limit = local + timedelta(days=366 * 4 + 1)
    while local < limit:
        if local.month not in cron.months or not cron._day_matches(local):
            local = (local + timedelta(days=1)).replace(hour=0, minute=0)
            continue
        if local.hour not in cron.hours:
            local = (local + timedelta(hours=1)).replace(minute=0)
            continue
        if local.minute in cron.minutes:
            return local.astimezone(UTC)
        local += timedelta(minutes=1)
    return None


def upcoming(cron: Cron, tz: ZoneInfo, after: datetime, count: int = 5) -> list[datetime]:
    out: list[datetime] = []
    current = after
    while len(out) < count:
        nxt = next_after(cron, tz, current)
        if nxt is None:
            break
        out.append(nxt)
        current = nxt
    return out
