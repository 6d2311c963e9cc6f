"""Prometheus metrics for the reaper and the reconciler, on the default registry.

Module-level on purpose: prometheus_client refuses a second registration of a name, and every
importer must share these series with /metrics.
"""

import re

from prometheus_client import Counter, Gauge

REAPER_ACTIONS = Counter(
    "idlehook_reaper_actions_total",
    "What the reaper did to sessions (dry runs excluded)",
    ["action", "reason"],
)
REAPER_SAVING = Gauge(
    "idlehook_reaper_saving_usd_per_hour",
    "Runtime cost the last reaper run's actions stopped, USD per hour, under the billing model "
    "named (running: interrupts of runaway runs; deleting an idle session saves nothing)",
    ["billing_model"],
)
RECONCILE_SYNTHETIC = Counter(
    "idlehook_reconcile_synthetic_deliveries_total",
    "Deliveries the reconciler wrote for status changes no webhook reported",
    ["event_type"],
)
WEBHOOK_SILENCE = Gauge(
    "idlehook_webhook_silence_seconds",
    "Seconds since the last real webhook was received (as of the last reconcile sweep)",
)
WEBHOOK_SILENCE_ALARM = Gauge(
    "idlehook_webhook_silence_alarm",
    "1 when sessions changed status but no webhook arrived for too long: the endpoint is "
    "probably disabled",
)
WEBHOOK_ENDPOINT_DISABLED = Gauge(
    "idlehook_webhook_endpoint_disabled",
    "1 when the organization webhooks API says the webhook endpoint is disabled (read each "
    "reconcile sweep with the admin key; re-enable it in the Console, nothing missed is resent)",
)
RECONCILE_API_CALLS = Counter(
    "idlehook_reconcile_api_calls_total",
    "API calls the reconciler made (list pages, retrieves, event reads, endpoint reads)",
)

# -- API calls (an httpx event hook on the SDK client: idlehook/wiring.api_client) -------------

API_CALLS = Counter(
    "idlehook_api_calls_total",
    "Managed Agents API responses by method, route template and status (each SDK retry counts)",
    ["method", "route", "status"],
)
API_PACED_CALLS = Counter(
    "idlehook_api_paced_calls_total",
    "Managed Agents API requests sent after waiting for a slot in the shared budget, by rate "
    "class (create, read); each SDK retry counts (sessions/paced_transport.py)",
    ["rate_class"],
)
API_RATE_LIMITED = Counter(
    "idlehook_api_rate_limited_total",
    "429 answers from the API by method and route template",
    ["method", "route"],
)


def route_template(path: str) -> str:
    """`/v1/sessions/sesn_01Ab/events` -> `/v1/sessions/{id}/events`: bounded label values.

    The API's own path words are lowercase snake_case (`v1` aside); anything else is an id,
    which tells them apart without a list of every endpoint. "Has a digit" is no test: an id's
    tail is random base62, and one in seventy emulator ids has no digit (`agent_kQzT...`).
    """
    parts = path.split("?", 1)[0].strip("/").split("/")
    shaped = [p if i == 0 or _PATH_WORD.fullmatch(p) else "{id}" for i, p in enumerate(parts)]
    return "/" + "/".join(shaped)


_PATH_WORD = re.compile(r"[a-z]+(?:_[a-z]+)*")


def record_api_response(method: str, path: str, status: int) -> None:
    route = route_template(path)
    API_CALLS.labels(method.upper(), route, str(status)).inc()
    if status == 429:
        API_RATE_LIMITED.labels(method.upper(), route).inc()
