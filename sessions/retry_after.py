"""How long the API asked us to wait: `retry-after-ms`, else `retry-after` (seconds)."""

from collections.abc import Mapping


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """The server's requested wait in seconds; None when absent or unparseable."""
    lowered = {k.lower(): v for k, v in headers.items()}
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        raw = lowered.get(name)
        if raw is None:
            continue
        try:
            return max(0.0, float(raw) * scale)
        except ValueError:
            continue  # an HTTP date: rare from this API; callers fall back to their own backoff
    return None
