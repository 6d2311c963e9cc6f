"""Worker metrics in the default Prometheus registry (served by the receiver's /metrics)."""

from prometheus_client import Counter, Histogram

RUNS = Counter(
    "idlehook_handler_runs_total",
    "Handler run attempts by handler and outcome (succeeded, failed, dead, lease_lost).",
    ["handler", "outcome"],
)
DURATION = Histogram(
    "idlehook_handler_duration_seconds",
    "Time one handler attempt took.",
    ["handler"],
    buckets=(0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
RETRIES = Counter("idlehook_handler_retries_total", "Attempts scheduled for retry.", ["handler"])
DEAD_LETTERS = Counter("idlehook_handler_dead_letters_total", "Runs dead-lettered.", ["handler"])
CLAIMS = Counter("idlehook_handler_claims_total", "Runs claimed by this process.")
LEASES_LOST = Counter(
    "idlehook_handler_leases_lost_total", "Completions discarded because the lease was lost."
)
NOTIFICATIONS = Counter(
    "idlehook_notifications_routed_total",
    "Notifications routed, by type (unknown types counted as 'unknown') and decision.",
    ["event_type", "decision"],
)
