"""SDK clients on the paced transport, as `wiring.api_client` builds them, for any URL and key."""

from typing import Any

from anthropic import AsyncAnthropic
from prometheus_client import REGISTRY
from sqlalchemy.engine import Engine

from sessions.paced_transport import paced_http_client
from sessions.pacing import Pacer

# Far above what a test sends: the budget is shared and counted, never waited on.
GENEROUS = {"create": 60_000.0, "read": 60_000.0}


def paced_client(
    url: str, pacer: Pacer | Engine, *, api_key: str = "sk-test", max_retries: int = 0, **kw: Any
) -> AsyncAnthropic:
    """`pacer` may be an engine: a generous Pacer on it is made."""
    if not isinstance(pacer, Pacer):
        pacer = Pacer(pacer, GENEROUS)
    return AsyncAnthropic(
        api_key=api_key,
        base_url=url,
        max_retries=max_retries,
        http_client=paced_http_client(pacer),
        **kw,
    )


def paced_calls(rate_class: str) -> float:
    """Requests of `rate_class` the paced transports of this process have sent so far."""
    value = REGISTRY.get_sample_value("idlehook_api_paced_calls_total", {"rate_class": rate_class})
    return value or 0.0
