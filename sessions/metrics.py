"""Prometheus metrics for the reaper and the reconciler, on the default registry.

Module-level on purpose: prometheus_client refuses a second registration of a name, and every
importer must share these series with /metrics.
"""

from prometheus_client import Counter, Gauge

REAPER_ACTIONS = Counter(
    "idlehook_reaper_actions_total",
    "What the reaper did to sessions (dry runs excluded)",
    ["action", "reason"],
)
REAPER_SAVING = Gauge(
    "idlehook_reaper_saving_usd_per_hour",
    "Estimated container cost the last reaper run's deletes stopped, USD per hour",
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
