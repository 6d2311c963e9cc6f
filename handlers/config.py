"""The configuration sections the worker and the plugins read, and what they read of Settings.

`[[routes]]`, `[worker]`, `[archive]`, `[forward]`, `[tools]` and `[approvals]` are defined here,
below idlehook: `handlers` never imports `idlehook`, whose Settings (idlehook/settings.py)
composes these sections with its own. `HandlerSettings` is the slice of Settings the worker and
plugin_config.py take; Settings itself fits it.
"""

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, SecretStr, field_validator

from handlers.billing import Pricing
from handlers.durations import parse_duration
from handlers.events import IDLE_TYPES, REQUIRES_ACTION, TERMINATED_TYPES

# The stop reason of a session waiting on a custom tool result or a tool confirmation.
REQUIRES_ACTION_STOP = "requires_action"


class Section(BaseModel):
    """A config section: an unknown key is a typo, and a typo must not be silently ignored."""

    model_config = ConfigDict(extra="forbid")


class RouteRule(Section):
    """One routing rule: when every given condition matches, run `handlers` in order.

    Conditions left empty match anything. `event_types` matches the webhook `data.type`;
    the others are facts fetched from the session when the rule needs them.

    Rules are not first-match: the handlers of every matching rule run, in rule order, each
    handler once (first-seen position wins). An idle notification whose session is no longer
    idle when fetched matches nothing (stale). Rules asking about the session never match one
    that is gone (404), so late and `session.deleted` notifications route by type only.

    Written rules replace the default routes but one: the built-in `requires_action -> answer`
    rule is kept after them (`with_answer_route`) unless a written rule claims
    `requires_action` (in `stop_reasons`, or `event_types` naming `session.requires_action`).
    Without it a session calling a custom tool would wait forever and `[tools]` never load.
    """

    name: str = ""
    event_types: list[str] = Field(default_factory=list)
    stop_reasons: list[str] = Field(default_factory=list)
    # Matches any stop reason but these: how "every outcome, even one never seen" is written.
    except_stop_reasons: list[str] = Field(default_factory=list)
    statuses: list[str] = Field(default_factory=list)
    agent_ids: list[str] = Field(default_factory=list)
    deployment_ids: list[str] = Field(default_factory=list)
    metadata: dict[str, str] = Field(default_factory=dict)
    handlers: list[str]
    # Keep a session this rule handled this long idle before the reaper may delete it
    # (overrides `[reaper] idle_for`; the shortest of the matching rules wins).
    idle_for: str | None = None
    # Set only on the rules default_routes() makes: not a key a config file can write.
    _builtin: bool = PrivateAttr(default=False)

    @field_validator("idle_for")
    @classmethod
    def _idle_for(cls, value: str | None) -> str | None:
        return check_duration(value)

    def idle_for_seconds(self) -> float | None:
        return None if self.idle_for is None else parse_duration(self.idle_for).total_seconds()

    @property
    def builtin(self) -> bool:
        """True for a rule idlehook added (a default route), not one the configuration wrote."""
        return self._builtin

    def claims_requires_action(self) -> bool:
        """The rule says what to do with a session waiting on a tool call, so the built-in
        answering rule steps aside."""
        return REQUIRES_ACTION_STOP in self.stop_reasons or REQUIRES_ACTION in self.event_types


def default_routes() -> list[RouteRule]:
    """Every outcome is saved and reported: each idle stop reason the SDK knows (end_turn,
    retries_exhausted, budget_reached, refusal) and any it does not know yet, and termination.
    Only `requires_action` is answered instead, since the session is waiting, not done.

    Written `[[routes]]` replace the first two; the last (`answer_route()`) is kept after them
    unless one of them claims `requires_action` (`with_answer_route`)."""
    # `session.requires_action` is always a `requires_action` idle (handlers/events.py): only
    # the answering route lists it.
    idle = sorted(IDLE_TYPES - {REQUIRES_ACTION})
    return [
        _mark_builtin(
            RouteRule(
                name="finished",
                event_types=idle,
                except_stop_reasons=[REQUIRES_ACTION_STOP],
                handlers=["archive", "log"],
            )
        ),
        _mark_builtin(
            RouteRule(
                name="terminated",
                event_types=sorted(TERMINATED_TYPES),
                handlers=["archive", "log"],
            )
        ),
        answer_route(),
    ]


def answer_route() -> RouteRule:
    """The built-in rule answering a session that waits on a custom tool or an approval."""
    return _mark_builtin(
        RouteRule(
            name="requires_action",
            event_types=sorted(IDLE_TYPES),
            stop_reasons=[REQUIRES_ACTION_STOP],
            handlers=["answer"],
        )
    )


def with_answer_route(rules: Sequence[RouteRule]) -> list[RouteRule]:
    """Written rules, and after them the built-in answering rule unless one of them claims
    `requires_action` (see RouteRule). Idempotent."""
    written = list(rules)
    if any(rule.claims_requires_action() for rule in written):
        return written
    return [*written, answer_route()]


def _mark_builtin(rule: RouteRule) -> RouteRule:
    rule._builtin = True
    return rule


class WorkerSettings(Section):
    concurrency: int = Field(default=8, ge=1, le=256)
    lease_seconds: float = Field(default=60.0, gt=0)
    poll_seconds: float = Field(default=0.5, gt=0)
    max_attempts: int = Field(default=6, ge=1)
    backoff_base_seconds: float = Field(default=2.0, gt=0)
    backoff_max_seconds: float = Field(default=300.0, gt=0)
    # The delete plugin reuses its delivery's own read of the session (the routing step's, a
    # moment before) for its "ran again since?" check while that read is younger than this,
    # instead of reading the session again (two calls). The window in which a session woken
    # through the API by someone other than idlehook could still be deleted; 0: always re-read.
    reuse_reads_seconds: float = Field(default=10.0, ge=0)


class ArchiveSettings(Section):
    """`[archive]`: what the archive plugin writes (and forward sends) besides the transcript."""

    # List the files the session produced into result.json (one more API call per result).
    # Off: result.json says `"files": null` (not listed), never an empty list.
    list_files: bool = False
    # Where the archive goes: any fsspec URL (`s3://bucket/prefix`, `gs://...`,
    # `file:///abs/path`); None: `results_dir`, on this machine. Workers sharing one URL share
    # one archive (handlers/builtin/archive_store.py). No password in it: credentials come from
    # the backend's own environment (AWS_*), or `storage_options`.
    url: str | None = None
    # Passed to the fsspec filesystem (e.g. `endpoint_url`, `key`, `secret` for s3fs). Never
    # logged or shown: it may hold a key.
    storage_options: dict[str, Any] = Field(default_factory=dict, repr=False)


class ForwardSettings(Section):
    url: str | None = None
    secret: SecretStr | None = None
    timeout_seconds: float = 10.0


def check_duration(value: str | None) -> str | None:
    """A field validator: the value parses as a duration (handlers/durations.py)."""
    if value is not None:
        parse_duration(value)
    return value


class ToolsSettings(Section):
    """`[tools]`: Python functions answering `agent.custom_tool_use` (handlers/tools/)."""

    # "package.module:attribute": a `beta_tool`/`beta_async_tool`, a `CustomTool`, or a list of
    # them. The `idlehook.tools` entry-point group adds more.
    modules: list[str] = Field(default_factory=list)
    # Tools safe to run again when the worker running them died (others answer "interrupted").
    idempotent: list[str] = Field(default_factory=list)
    timeout_seconds: float = Field(default=300.0, gt=0)
    # A call to a tool nobody registered: answer it with an error ("error"), or leave it ("leave").
    unknown: str = Field(default="error", pattern="^(error|leave)$")


class ApprovalRule(Section):
    """One approval rule; the first whose conditions all match decides. Empty matches anything."""

    name: str = ""
    tools: list[str] = Field(default_factory=list)
    # A regex searched in the tool input serialised as JSON (sorted keys, no spaces).
    input_pattern: str | None = None
    agent_ids: list[str] = Field(default_factory=list)
    metadata: dict[str, str] = Field(default_factory=dict)
    action: str = Field(pattern="^(allow|deny|ask)$")
    message: str | None = None  # told to the agent on deny

    @field_validator("input_pattern")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a regular expression: {exc}") from None
        return value


class ApprovalSettings(Section):
    """`[approvals]`: who decides a tool use held for confirmation (`evaluated_permission: ask`)."""

    rules: list[ApprovalRule] = Field(default_factory=list)
    default: str = Field(default="ask", pattern="^(allow|deny|ask)$")
    # A person has this long; then the call is denied and the session handed to the reaper.
    timeout: str = "1h"
    expired_message: str = "No one approved this tool call in time."
    sweep_seconds: float = Field(default=30.0, gt=0)

    _durations = field_validator("timeout")(check_duration)


class HandlerSettings(Protocol):
    """What the worker and plugin_config.py read of idlehook's Settings (read-only)."""

    @property
    def results_dir(self) -> Path: ...
    @property
    def owner(self) -> str: ...
    @property
    def routes(self) -> Sequence[RouteRule]: ...
    @property
    def worker(self) -> WorkerSettings: ...
    @property
    def archive(self) -> ArchiveSettings: ...
    @property
    def forward(self) -> ForwardSettings: ...
    @property
    def tools(self) -> ToolsSettings: ...
    @property
    def approvals(self) -> ApprovalSettings: ...
    @property
    def plugins(self) -> dict[str, dict[str, Any]]: ...

    def pricing(self) -> Pricing: ...
