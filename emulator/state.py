"""In-memory state: agents (with versions), environments, sessions and their events, files,
deployments and their runs, organization webhook endpoints. Plain containers; the services
decide what changes."""

import asyncio
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from emulator.errors import NotFound
from emulator.scripts import Step


@dataclass
class AgentRecord:
    id: str
    versions: list[dict[str, Any]]  # index i holds version i + 1
    archived_at: datetime | None = None

    @property
    def latest(self) -> dict[str, Any]:
        return self.versions[-1]


@dataclass
class SessionRecord:
    id: str
    body: dict[str, Any]  # the Session object minus the live fields below
    created_at: datetime
    created_emulated: float
    status: str = "idle"
    updated_at: datetime | None = None
    archived_at: datetime | None = None
    deleted: bool = False
    # Text of the first user message: a `#script:` token there picks the script.
    first_text: str | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    # Scripted-run state.
    remaining: list[Step] = field(default_factory=list)
    blocking: dict[str, str] = field(default_factory=dict)  # event id -> "tool" | "custom"
    resolved: list[dict[str, Any]] = field(default_factory=list)  # answers awaiting the resume
    queued_messages: list[dict[str, Any]] = field(default_factory=list)
    task: asyncio.Task[None] | None = None
    # The running turn's schedule (emulated seconds): the pause before each step, and when the
    # turn ends if nothing cuts it short (None while not running). Running time itself is on
    # the ledger, the one source of `usage.active_seconds`.
    step_seconds: float = 0.0
    turn_ends_at: float | None = None
    ended_emulated: float | None = None
    usage: dict[str, Any] = field(default_factory=dict)
    subscribers: list["asyncio.Queue[dict[str, Any] | None]"] = field(default_factory=list)
    delta_subscribers: set[int] = field(default_factory=set)  # id() of queues opted in
    # Paused on its budget: the turn's remaining steps wait in `remaining` for a budget change.
    budget_paused: bool = False
    # session.budget_reached fires once per budget value; a change of value re-arms it.
    budget_armed: bool = True
    budget_removed: bool = False  # a removed budget cannot be re-added


@dataclass
class DeploymentRecord:
    id: str
    body: dict[str, Any]
    next_fire: datetime | None = None  # emulated wall clock


@dataclass
class Store:
    agents: dict[str, AgentRecord] = field(default_factory=dict)
    environments: dict[str, dict[str, Any]] = field(default_factory=dict)
    sessions: dict[str, SessionRecord] = field(default_factory=dict)
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    deployments: dict[str, DeploymentRecord] = field(default_factory=dict)
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Organization webhook endpoints' API fields; their delivery state is the sender's.
    org_webhooks: dict[str, dict[str, Any]] = field(default_factory=dict)

    def agent(self, agent_id: str) -> AgentRecord:
        record = self.agents.get(agent_id)
        if record is None:
            raise NotFound(f"agent {agent_id} not found")
        return record

    def environment(self, env_id: str) -> dict[str, Any]:
        env = self.environments.get(env_id)
        if env is None:
            raise NotFound(f"environment {env_id} not found", error_code="environment_not_found")
        return env

    def session(self, session_id: str) -> SessionRecord:
        record = self.sessions.get(session_id)
        if record is None or record.deleted:
            raise NotFound(f"session {session_id} not found")
        return record

    def deployment(self, deployment_id: str) -> DeploymentRecord:
        record = self.deployments.get(deployment_id)
        if record is None:
            raise NotFound(f"deployment {deployment_id} not found")
        return record

    def run(self, run_id: str) -> dict[str, Any]:
        run = self.runs.get(run_id)
        if run is None:
            raise NotFound(f"deployment run {run_id} not found")
        return run
