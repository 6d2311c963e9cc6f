"""Rate limits per request class, on the emulated clock (a "minute" at speed 60 lasts one real
second). Two algorithms:

- `token_bucket` (default; what Anthropic documents): up to a minute's worth of requests may
  burst, and the bucket refills continuously;
- `sliding_window`: at most N requests in any trailing minute, stricter on bursts.
"""

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

RateClass = Literal["create", "read"]
Algorithm = Literal["token_bucket", "sliding_window"]
WINDOW_SECONDS = 60.0


@dataclass
class _Bucket:
    tokens: float
    updated: float
    hits: deque[float] = field(default_factory=deque)


class RateLimiter:
    def __init__(self, elapsed: Callable[[], float]) -> None:
        self._elapsed = elapsed
        self._buckets: dict[str, _Bucket] = {}

    def acquire(
        self, kind: RateClass, per_minute: int, algorithm: Algorithm = "token_bucket"
    ) -> float | None:
        """Take one request; None if granted, else emulated seconds until one is available."""
        now = self._elapsed()
        capacity = float(per_minute)
        bucket = self._buckets.setdefault(kind, _Bucket(capacity, now))
        if algorithm == "sliding_window":
            while bucket.hits and bucket.hits[0] <= now - WINDOW_SECONDS:
                bucket.hits.popleft()
            if len(bucket.hits) >= per_minute:
                return max(0.001, bucket.hits[0] + WINDOW_SECONDS - now)
            bucket.hits.append(now)
            return None
        rate = capacity / WINDOW_SECONDS
        bucket.tokens = min(capacity, bucket.tokens + (now - bucket.updated) * rate)
        bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return None
        return max(0.001, (1.0 - bucket.tokens) / rate)

    def reset(self) -> None:
        self._buckets.clear()
