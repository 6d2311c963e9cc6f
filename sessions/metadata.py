"""Session metadata: the keys idlehook stamps, user pairs, and the API's limits, checked locally.

The API rejects bad metadata with a 400 naming no key; checking here first gives the operator the
offending key, and nothing is created or queued when it fails.
"""

from collections.abc import Iterable, Mapping
from datetime import datetime

from handlers.spend import BUDGET_KEY

MAX_PAIRS = 16
MAX_KEY_CHARS = 64
MAX_VALUE_CHARS = 512

RESERVED_PREFIX = "idlehook_"
OWNER_KEY = "idlehook_owner"
ROUTE_KEY = "idlehook_route"
DEADLINE_KEY = "idlehook_deadline"
IDEMPOTENCY_KEY = "idlehook_idempotency_key"
# Per-launch limits the reaper reads off the session itself, so they hold whoever reaps it.
MAX_RUNNING_KEY = "idlehook_max_running"
IDLE_FOR_KEY = "idlehook_idle_for"
# And BUDGET_KEY, the spend ceiling (handlers/spend.py: the `log` plugin reads it too).


class MetadataError(ValueError):
    """Metadata the API would refuse, or that would spoof idlehook's own keys."""


def parse_pairs(items: Iterable[str]) -> dict[str, str]:
    """`["k=v", ...]` from the command line; the value may itself contain "="."""
    pairs: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise MetadataError(f"bad metadata {item!r}: use KEY=VALUE")
        key = key.strip()
        if key in pairs:
            raise MetadataError(f"metadata key {key!r} given twice")
        pairs[key] = value
    return pairs


def format_deadline(deadline: datetime) -> str:
    """RFC 3339 with a Z suffix, to the second: what `idlehook_deadline` holds."""
    return deadline.strftime("%Y-%m-%dT%H:%M:%SZ")


def build_metadata(
    user: Mapping[str, str],
    *,
    owner: str,
    idempotency_key: str,
    route: str | None = None,
    deadline: datetime | None = None,
    max_running: str | None = None,
    idle_for: str | None = None,
    budget_cents: int | None = None,
) -> dict[str, str]:
    """User pairs plus idlehook's reserved keys, checked against the API's limits.

    The reserved keys count toward the 16 pairs, so the user's share shrinks as more are set.
    """
    for key in user:
        if key.startswith(RESERVED_PREFIX):
            raise MetadataError(
                f"metadata key {key!r} is reserved: keys starting with {RESERVED_PREFIX!r} "
                "are set by idlehook"
            )
    reserved: dict[str, str] = {OWNER_KEY: owner, IDEMPOTENCY_KEY: idempotency_key}
    if route:
        reserved[ROUTE_KEY] = route
    if deadline is not None:
        reserved[DEADLINE_KEY] = format_deadline(deadline)
    if max_running is not None:
        reserved[MAX_RUNNING_KEY] = max_running
    if idle_for is not None:
        reserved[IDLE_FOR_KEY] = idle_for
    if budget_cents is not None:
        reserved[BUDGET_KEY] = f"{budget_cents / 100:.2f}"
    merged = {**user, **reserved}
    check_limits(merged, reserved_count=len(reserved))
    return merged


def check_limits(metadata: Mapping[str, str], reserved_count: int = 0) -> None:
    if len(metadata) > MAX_PAIRS:
        user_count = len(metadata) - reserved_count
        raise MetadataError(
            f"too many metadata pairs: {len(metadata)} > {MAX_PAIRS} "
            f"({user_count} given + {reserved_count} set by idlehook; "
            f"at most {MAX_PAIRS - reserved_count} of your own fit)"
        )
    for key, value in metadata.items():
        if not key:
            raise MetadataError("metadata key must not be empty")
        if len(key) > MAX_KEY_CHARS:
            shown = key if len(key) <= 100 else key[:100] + "..."
            raise MetadataError(
                f"metadata key {shown!r} is {len(key)} characters; at most {MAX_KEY_CHARS}"
            )
        if not isinstance(value, str):
            raise MetadataError(f"metadata value for {key!r} must be a string")
        if len(value) > MAX_VALUE_CHARS:
            raise MetadataError(
                f"metadata value for {key!r} is {len(value)} characters; at most {MAX_VALUE_CHARS}"
            )
