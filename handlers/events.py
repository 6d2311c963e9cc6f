"""The webhook `data.type` vocabulary idlehook understands, across both session families.

Anthropic documents the `session.status_*` family; the SDK also carries a second, undocumented
family (`session.idled`, `session.running`, ...). Both mean the same to us. Anything not listed
here is still acknowledged and routed by type only.
"""

IDLE_TYPES = frozenset({"session.status_idled", "session.idled", "session.requires_action"})
RUNNING_TYPES = frozenset({"session.status_run_started", "session.running"})
TERMINATED_TYPES = frozenset({"session.status_terminated"})
DELETED_TYPES = frozenset({"session.deleted"})

# The status a notification implies before anything is fetched (thin payloads say no more).
_IMPLIED_STATUS = {
    **dict.fromkeys(IDLE_TYPES, "idle"),
    **dict.fromkeys(RUNNING_TYPES, "running"),
    **dict.fromkeys(TERMINATED_TYPES, "terminated"),
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
