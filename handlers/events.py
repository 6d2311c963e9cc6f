"""The webhook `data.type` vocabulary idlehook understands, across both session families.

The one list: the router, the routing step, the reconciler, the default routes, the demo and the
plugin harness all take their types from here.

Anthropic documents the `session.status_*` family; the SDK also carries a second, undocumented
family (`session.idled`, `session.running`, ...). Both mean the same to us. Anything not listed
here is still acknowledged and routed by type only.
"""

from types import MappingProxyType

# The documented type each status change is notified as; the reconciler's synthetic deliveries
# and the plugin harness use these names.
STATUS_IDLED = "session.status_idled"
STATUS_RUN_STARTED = "session.status_run_started"
STATUS_TERMINATED = "session.status_terminated"
# `session.requires_action` is the second family's "needs input" idle: the session went idle
# with stop reason `requires_action` (the same transition the documented family reports as a
# `session.status_idled`). Everywhere in idlehook it is an idle notification: it reports a rest,
# covers an idle transition for the reconciler, and is routed (to `answer`) like any idle.
REQUIRES_ACTION = "session.requires_action"

IDLE_TYPES = frozenset({STATUS_IDLED, "session.idled", REQUIRES_ACTION})
RUNNING_TYPES = frozenset({STATUS_RUN_STARTED, "session.running"})
TERMINATED_TYPES = frozenset({STATUS_TERMINATED})
DELETED_TYPES = frozenset({"session.deleted"})
# A session resting (idle or terminated), and every type that reports a status change.
REST_TYPES = IDLE_TYPES | TERMINATED_TYPES
STATUS_TYPES = REST_TYPES | RUNNING_TYPES

# Status -> every webhook type that reports it, and the one idlehook writes when it delivers
# a transition itself.
TYPES_OF_STATUS = MappingProxyType(
    {"idle": IDLE_TYPES, "running": RUNNING_TYPES, "terminated": TERMINATED_TYPES}
)
NOTIFIED_AS = MappingProxyType(
    {"idle": STATUS_IDLED, "running": STATUS_RUN_STARTED, "terminated": STATUS_TERMINATED}
)

# The status a notification implies before anything is fetched (thin payloads say no more).
_IMPLIED_STATUS = {
    **{t: status for status, types in TYPES_OF_STATUS.items() for t in types},
    "session.status_rescheduled": "rescheduling",
}

KNOWN_TYPES = frozenset(
    {
        *_IMPLIED_STATUS,
        *DELETED_TYPES,
        "session.created",
        "session.pending",
        "session.archived",
        "session.updated",
        "session.budget_reached",
        "session.outcome_evaluation_ended",
        "session.thread_created",
        "session.thread_idled",
        "session.thread_terminated",
        "agent.created",
        "agent.updated",
        "agent.archived",
        "agent.deleted",
        "environment.created",
        "environment.updated",
        "environment.archived",
        "environment.deleted",
        "deployment.created",
        "deployment.updated",
        "deployment.paused",
        "deployment.unpaused",
        "deployment.archived",
        "deployment.deleted",
        "deployment_run.started",
        "deployment_run.succeeded",
        "deployment_run.failed",
        "vault.created",
        "vault.archived",
        "vault.deleted",
        "vault_credential.created",
        "vault_credential.archived",
        "vault_credential.deleted",
        "vault_credential.refresh_failed",
        "memory_store.created",
        "memory_store.archived",
        "memory_store.deleted",
        "external_key.failed",
        "external_key.recovered",
        "external_storage.failed",
        "external_storage.recovered",
        "user_profile.program_status_updated",
        "user_profile.enforcement_action_opened",
        "user_profile.enforcement_action_resolved",
    }
)


def implied_status(event_type: str) -> str | None:
    return _IMPLIED_STATUS.get(event_type)


def is_known(event_type: str) -> bool:
    return event_type in KNOWN_TYPES


def is_idle(event_type: str) -> bool:
    return event_type in IDLE_TYPES


def is_session_event(event_type: str) -> bool:
    return event_type.startswith("session.")
