"""Start sessions without holding a stream open: one create call carrying the first message.

A launch is validated locally (agent reference, metadata limits, deadline) before anything is
written or sent, then goes through the durable queue in the store (`launches`), so a crash, a 429
or a timeout never loses or doubles it. Processing a launch: preflight the environment (cached),
pin the agent version (cached), and create the session with `initial_events`. The client's
transport (sessions/paced_transport.py) paces every call in the store-backed budget every worker
shares, and after a 429 holds the whole class back; the launch itself goes back on the queue at
the server's `retry-after`. The session is then tracked for the webhook path, the watchdog and
the reaper.
"""

import asyncio
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import anthropic
import structlog
from anthropic import AsyncAnthropic
from opentelemetry import trace
from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)
from sqlalchemy.engine import Engine

from handlers.durations import DurationError, parse_duration
from sessions import budget
from sessions.budget_raise import RaisedBudget, raise_budget
from sessions.followups import FollowUpResult, FollowUps
from sessions.launch_retry import decide_launch_retry, retry_delay
from sessions.metadata import IDEMPOTENCY_KEY, MetadataError, build_metadata, parse_pairs
from sessions.paced_transport import TRACER_SCOPE
from store.launches import LaunchStore, NewLaunch
from store.models import Launch, LaunchState, utcnow
from store.sessions import Launched, SessionStore, SessionUpdate

log = structlog.get_logger(__name__)

_AGENT_REF = re.compile(r"(?P<id>[A-Za-z0-9][A-Za-z0-9_\-]{0,199})(?::(?P<version>[0-9]{1,9}))?")
_FILE_ID = re.compile(r"file_[A-Za-z0-9_\-]+")
MAX_KEY_CHARS = 200  # the launches table's column; also far above any sane key
# How far back, before the first create call, a lost session may carry its created_at (clock
# skew between us and the API).
SKEW = timedelta(minutes=2)
DUPLICATE_SCAN_PAGES = 20


class LaunchError(Exception):
    """A launch that will not happen; the message is for the operator, as is."""


class InvalidLaunch(LaunchError):
    """Bad input, caught before any API call or store write."""


class LaunchRejected(LaunchError):
    """The API or a policy said no (unknown agent or environment, strict mode): nothing exists."""


def parse_agent(ref: str) -> tuple[str, int | None]:
    """`agent_123` or `agent_123:4` -> (id, version or None)."""
    match = _AGENT_REF.fullmatch(ref.strip())
    if match is None:
        raise InvalidLaunch(
            f"bad agent {ref!r}: use ID or ID:VERSION, e.g. agent_011CZ or agent_011CZ:3"
        )
    version = match.group("version")
    if version is not None and int(version) < 1:
        raise InvalidLaunch(f"bad agent {ref!r}: versions start at 1")
    return match.group("id"), int(version) if version is not None else None


class LaunchRequest(BaseModel):
    """What to launch: the CLI flags, a `--batch` line and the `POST /sessions` body alike."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    agent: str = Field(description="ID or ID:VERSION; without a version the current one is pinned")
    environment: str = Field(
        min_length=1, validation_alias=AliasChoices("environment", "environment_id")
    )
    message: str = Field(min_length=1)
    title: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    route: str | None = None
    deadline: str | None = Field(default=None, description='a duration from now: "2h", "90m"')
    max_running: str | None = Field(
        default=None, description='interrupt a run going on longer than this: "2h"'
    )
    idle_for: str | None = Field(
        default=None, description='keep the session this long at rest before reaping: "7d"'
    )
    files: list[str] = Field(
        default_factory=list,
        validation_alias=AliasChoices("files", "file"),
        description="file_... ids to mount (the CLI uploads local paths first)",
    )
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=MAX_KEY_CHARS)
    strict: bool | None = None
    budget_usd: float | None = Field(
        default=None,
        validation_alias=AliasChoices("budget_usd", "budget"),
        description="a spend ceiling the API enforces; overrides [launch] budget_usd",
    )

    @field_validator("metadata", mode="before")
    @classmethod
    def _pairs(cls, value: Any) -> Any:
        # A batch line may spell metadata like the CLI: ["k=v", ...].
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return parse_pairs(value)
        return value

    @field_validator("files", mode="before")
    @classmethod
    def _one_file(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @classmethod
    def parse(cls, data: Any) -> "LaunchRequest":
        """Validate untrusted input; every problem becomes one readable InvalidLaunch."""
        if not isinstance(data, Mapping):
            raise InvalidLaunch("a launch request must be a JSON object")
        try:
            return cls.model_validate(dict(data))
        except MetadataError as exc:
            raise InvalidLaunch(str(exc)) from None
        except ValidationError as exc:
            raise InvalidLaunch(_explain(exc)) from None


def _explain(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"]) or "request"
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown field"
        parts.append(f"{where}: {message}")
    return "; ".join(parts)


@dataclass(frozen=True)
class PreparedLaunch:
    """A validated request with everything fixed at enqueue time: key, deadline, metadata."""

    idempotency_key: str
    agent_id: str
    agent_version: int | None
    environment_id: str
    message: str
    title: str | None
    route: str | None
    deadline: datetime | None
    metadata: dict[str, str]
    file_ids: tuple[str, ...]
    strict: bool
    # The spend ceiling in cents, fixed at enqueue time: a queued launch keeps it.
    budget_cents: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "idempotency_key": self.idempotency_key,
            "agent_id": self.agent_id,
            "agent_version": self.agent_version,
            "environment_id": self.environment_id,
            "message": self.message,
            "title": self.title,
            "route": self.route,
            "deadline": self.deadline.isoformat() if self.deadline else None,
            "metadata": dict(self.metadata),
            "file_ids": list(self.file_ids),
            "strict": self.strict,
            "budget_cents": self.budget_cents,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "PreparedLaunch":
        deadline = data.get("deadline")
        return cls(
            idempotency_key=data["idempotency_key"],
            agent_id=data["agent_id"],
            agent_version=data.get("agent_version"),
            environment_id=data["environment_id"],
            message=data["message"],
            title=data.get("title"),
            route=data.get("route"),
            deadline=datetime.fromisoformat(deadline) if deadline else None,
            metadata=dict(data.get("metadata") or {}),
            file_ids=tuple(data.get("file_ids") or ()),
            strict=bool(data.get("strict")),
            budget_cents=data.get("budget_cents"),
        )

    def create_params(self, version: int) -> dict[str, Any]:
        """The one create call: agent pinned, first message in `initial_events`."""
        params: dict[str, Any] = {
            "agent": {"type": "agent", "id": self.agent_id, "version": version},
            "environment_id": self.environment_id,
            "initial_events": [
                {"type": "user.message", "content": [{"type": "text", "text": self.message}]}
            ],
            "metadata": dict(self.metadata),
        }
        if self.title is not None:
            params["title"] = self.title
        if self.file_ids:
            params["resources"] = [{"type": "file", "file_id": f} for f in self.file_ids]
        if self.budget_cents is not None:
            params["budget"] = budget.budget_param(self.budget_cents)
        return params


def prepare(
    request: LaunchRequest,
    *,
    owner: str,
    strict_default: bool,
    now: datetime,
    budget_default: float | None = None,
) -> PreparedLaunch:
    """Everything that can be checked without the API; raises InvalidLaunch."""
    budget_cents = None
    usd = budget_default if request.budget_usd is None else request.budget_usd
    if usd is not None:
        try:
            budget_cents = budget.usd_to_cents(usd)
        except budget.InvalidBudget as exc:
            raise InvalidLaunch(f"budget: {exc}") from None
    agent_id, version = parse_agent(request.agent)
    deadline = None
    if request.deadline is not None:
        try:
            deadline = now + parse_duration(request.deadline)
        except DurationError as exc:
            raise InvalidLaunch(f"deadline: {exc}") from None
    # Kept as given (checked here) in the session's own metadata: the reaper reads them there.
    for name in ("max_running", "idle_for"):
        value = getattr(request, name)
        if value is not None:
            try:
                parse_duration(value)
            except DurationError as exc:
                raise InvalidLaunch(f"{name}: {exc}") from None
    for file_id in request.files:
        if not _FILE_ID.fullmatch(file_id):
            raise InvalidLaunch(
                f"files: {file_id!r} is not a file id (file_...); "
                "`idlehook start --file PATH` uploads a local file first"
            )
    key = request.idempotency_key or f"idh_{uuid.uuid4().hex}"
    try:
        metadata = build_metadata(
            request.metadata,
            owner=owner,
            idempotency_key=key,
            route=request.route,
            deadline=deadline,
            budget_cents=budget_cents,
            max_running=request.max_running,
            idle_for=request.idle_for,
        )
    except MetadataError as exc:
        raise InvalidLaunch(str(exc)) from None
    return PreparedLaunch(
        idempotency_key=key,
        agent_id=agent_id,
        agent_version=version,
        environment_id=request.environment.strip(),
        message=request.message,
        title=request.title,
        route=request.route,
        deadline=deadline,
        metadata=metadata,
        file_ids=tuple(request.files),
        strict=strict_default if request.strict is None else request.strict,
        budget_cents=budget_cents,
    )


@dataclass(frozen=True)
class LaunchResult:
    launch_id: int
    idempotency_key: str
    state: str
    session_id: str | None
    # False when the idempotency key was seen before: this call launched nothing new.
    new: bool
    warnings: list[str] = field(default_factory=list)
    error: str | None = None
    agent_id: str | None = None
    agent_version: int | None = None
    environment_id: str | None = None
    deadline: datetime | None = None
    budget_usd: float | None = None

    @classmethod
    def of(cls, row: Launch, new: bool) -> "LaunchResult":
        assert row.id is not None
        request = row.request or {}
        prepared = PreparedLaunch.from_json(request) if request else None
        return cls(
            launch_id=row.id,
            idempotency_key=row.idempotency_key,
            state=row.state,
            session_id=row.session_id,
            new=new,
            warnings=list(row.warnings or []),
            error=row.error,
            agent_id=prepared.agent_id if prepared else None,
            agent_version=row.agent_version or (prepared.agent_version if prepared else None),
            environment_id=prepared.environment_id if prepared else None,
            deadline=prepared.deadline if prepared else None,
            budget_usd=(
                prepared.budget_cents / 100
                if prepared and prepared.budget_cents is not None
                else None
            ),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "launch_id": self.launch_id,
            "idempotency_key": self.idempotency_key,
            "state": self.state,
            "session_id": self.session_id,
            "new": self.new,
            "warnings": list(self.warnings),
            "error": self.error,
            "agent_id": self.agent_id,
            "agent_version": self.agent_version,
            "environment_id": self.environment_id,
            "deadline": self.deadline.isoformat() if self.deadline else None,
            "budget_usd": self.budget_usd,
        }


class _TTLCache:
    """A small in-memory cache whose misses are fetched once, however many callers wait."""

    def __init__(self, ttl: timedelta, now: Callable[[], datetime]) -> None:
        self.ttl = ttl
        self._now = now
        self._values: dict[str, tuple[Any, datetime]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def fresh(self, key: str) -> tuple[bool, Any]:
        hit = self._values.get(key)
        if hit is not None and self._now() - hit[1] < self.ttl:
            return True, hit[0]
        return False, None

    def put(self, key: str, value: Any, at: datetime | None = None) -> None:
        self._values[key] = (value, at or self._now())

    def lock(self, key: str) -> asyncio.Lock:
        return self._locks.setdefault(key, asyncio.Lock())


class Launcher:
    """Validate, enqueue and create sessions; the one code path for CLI, API and workers."""

    def __init__(
        self,
        engine: Engine,
        client: AsyncAnthropic,
        *,
        owner: str,
        strict: bool = False,
        now: Callable[[], datetime] = utcnow,
        preflight_ttl: timedelta = timedelta(minutes=10),
        agent_ttl: timedelta = timedelta(minutes=1),
        lease: timedelta = timedelta(minutes=5),
        max_attempts: int = 12,
        call_timeout_s: float = 60.0,
        budget_usd: float | None = None,
        priced_models: Sequence[str] = budget.DEFAULT_PRICED_MODELS,
        agent_version_ttl: timedelta = timedelta(hours=1),
    ) -> None:
        self.store = LaunchStore(engine, now=now)
        # Retries go through the durable queue, never the SDK: it sends no idempotency key, so
        # its silent retry of a timed-out create could start a second session.
        self.client = client.with_options(max_retries=0, timeout=call_timeout_s)
        self.owner = owner
        self.strict = strict
        self.lease = lease
        self.max_attempts = max_attempts
        self._now = now
        self._environments = _TTLCache(preflight_ttl, now)
        self._agents = _TTLCache(agent_ttl, now)
        # `[launch] budget_usd`, and the models a budget can be enforced on.
        self.budget_usd = budget_usd
        self.priced_models = tuple(priced_models)
        # Agent versions never change: their models are read once an hour at most.
        self._agent_versions = _TTLCache(agent_version_ttl, now)

    # --- accepting launches ---------------------------------------------------------------------

    def prepare(self, request: LaunchRequest) -> PreparedLaunch:
        return prepare(
            request,
            owner=self.owner,
            strict_default=self.strict,
            now=self._now(),
            budget_default=self.budget_usd,
        )

    async def enqueue(self, request: LaunchRequest) -> LaunchResult:
        """Queue one launch and return at once (state `queued`, or the earlier launch's)."""
        return (await self.enqueue_many([request]))[0]

    async def enqueue_many(self, requests: Sequence[LaunchRequest]) -> list[LaunchResult]:
        """Queue many launches in one transaction; any invalid request rejects them all."""
        prepared = []
        for index, request in enumerate(requests, start=1):
            try:
                prepared.append(self.prepare(request))
            except InvalidLaunch as exc:
                if len(requests) == 1:
                    raise
                raise InvalidLaunch(f"request {index}: {exc}") from None
        rows = await asyncio.to_thread(
            self.store.add_many, [NewLaunch(p.idempotency_key, p.to_json()) for p in prepared]
        )
        results = [LaunchResult.of(row, new) for row, new in rows]
        for result in results:
            log.info(
                "launch.queued",
                launch_id=result.launch_id,
                idempotency_key=result.idempotency_key,
                new=result.new,
                state=result.state,
            )
        return results

    async def start(
        self, request: LaunchRequest, *, wait_seconds: float | None = 300.0
    ) -> LaunchResult:
        """Launch now: returns once the create call succeeded, never waiting for the run.

        The launch still goes through the queue (same key, same session); this caller drains
        its own row, or waits while a worker does. Raises LaunchError when it failed; after
        `wait_seconds` returns the still-queued launch (a drainer will finish it).
        """
        queued = await self.enqueue(request)
        loop = asyncio.get_running_loop()
        give_up = None if wait_seconds is None else loop.time() + wait_seconds
        owner = f"start-{uuid.uuid4().hex[:12]}"
        while True:
            row = await asyncio.to_thread(self.store.get, queued.launch_id)
            assert row is not None
            if row.state == LaunchState.CREATED:
                return LaunchResult.of(row, queued.new)
            if row.state == LaunchState.FAILED:
                raise LaunchRejected(row.error or "launch failed")
            claimed = await asyncio.to_thread(
                self.store.claim, owner, limit=1, lease=self.lease, only_id=queued.launch_id
            )
            if claimed:
                await self.process(claimed[0])
                continue
            pause = 0.2
            if row.state == LaunchState.QUEUED and row.lease_owner is None:
                pause = max(0.0, (row.next_attempt_at - self._now()).total_seconds())
            if give_up is not None:
                left = give_up - loop.time()
                if left <= 0:
                    return LaunchResult.of(row, queued.new)
                pause = min(pause, left)
            await asyncio.sleep(min(max(pause, 0.01), 5.0))

    # --- processing a claimed launch ------------------------------------------------------------

    async def process(self, launch: Launch) -> None:
        """Take one claimed launch one step: created, failed, or queued again for later.

        Every write is fenced on the lease token the claim put in `launch.lease_owner`.
        """
        assert launch.id is not None
        assert launch.lease_owner is not None, "process() takes a launch fresh from claim()"
        owner = launch.lease_owner
        prepared = PreparedLaunch.from_json(launch.request)
        sent = False
        first_attempt = launch.first_attempt_at
        bound = structlog.contextvars.bound_contextvars(
            launch_id=launch.id, idempotency_key=launch.idempotency_key
        )
        # `[tracing]`: the launch's span, the create call beneath it; the session id once known,
        # so the session's later traces (its webhooks, runs, API calls) join it by that tag.
        span = trace.get_tracer(TRACER_SCOPE).start_as_current_span(
            "session.launch",
            attributes={
                "idlehook.launch_id": launch.id,
                "idlehook.idempotency_key": launch.idempotency_key,
                "idlehook.attempt": launch.attempts,
            },
        )
        with bound, span as current:
            try:
                warnings = await self._preflight(prepared)
                version = prepared.agent_version or await self._resolve_agent(prepared.agent_id)
                if prepared.budget_cents is not None:
                    await self._check_budgetable(prepared.agent_id, version)
                if launch.outcome_unknown and launch.first_attempt_at is not None:
                    existing = await self._find_existing(prepared, launch.first_attempt_at)
                    if existing is not None:
                        log.info("launch.recovered", session_id=existing.id)
                        await self._complete(launch.id, owner, prepared, existing)
                        return
                # begin_create keeps an earlier first_attempt_at; this is ours if there was none.
                first_attempt = first_attempt or self._now()
                if not await asyncio.to_thread(
                    partial(
                        self.store.begin_create,
                        launch.id,
                        owner,
                        self.lease,
                        agent_version=version,
                        warnings=warnings,
                    )
                ):
                    log.warning("launch.lease_lost")
                    return
                sent = True
                session = await self.client.beta.sessions.create(**prepared.create_params(version))
            except LaunchRejected as exc:
                current.set_status(trace.StatusCode.ERROR, "rejected")
                log.warning("launch.rejected", error=str(exc))
                await self._fail(launch, owner, prepared, str(exc), first_attempt, unknown=False)
                return
            except Exception as exc:
                current.set_status(trace.StatusCode.ERROR, type(exc).__name__)
                refusal = budget.api_refusal(exc)
                if refusal is not None:
                    # A 400 is a clear "not created", and asking again changes nothing.
                    log.warning("launch.rejected", error=str(refusal), reason=refusal.reason)
                    await self._fail(
                        launch, owner, prepared, str(refusal), first_attempt, unknown=False
                    )
                    return
                await self._after_error(launch, owner, prepared, exc, sent, first_attempt)
                return
            log.info("launch.created", session_id=session.id, agent_version=version)
            current.set_attribute("idlehook.session_id", session.id)
            await self._complete(launch.id, owner, prepared, session)

    async def _after_error(
        self,
        launch: Launch,
        owner: str,
        prepared: PreparedLaunch,
        exc: Exception,
        sent: bool,
        first_attempt: datetime | None,
    ) -> None:
        assert launch.id is not None
        decision = decide_launch_retry(exc, sent=sent)
        attempts = launch.attempts + 1
        out_of_attempts = attempts >= self.max_attempts and not decision.store_error
        if not decision.retry or out_of_attempts:
            message = decision.message
            if decision.retry:
                message = f"gave up after {attempts} attempts: {message}"
            await self._fail(
                launch, owner, prepared, message, first_attempt, unknown=decision.outcome_unknown
            )
            return
        delay = retry_delay(max(1, attempts), decision.retry_after_s)
        log.info(
            "launch.retry",
            error=decision.message,
            delay_s=round(delay, 3),
            outcome_unknown=decision.outcome_unknown,
        )
        await asyncio.to_thread(
            self.store.retry,
            launch.id,
            owner,
            at=self._now() + timedelta(seconds=delay),
            error=decision.message,
            outcome_unknown=decision.outcome_unknown,
            count_attempt=not sent and not decision.store_error,
        )

    async def _fail(
        self,
        launch: Launch,
        owner: str,
        prepared: PreparedLaunch,
        message: str,
        first_attempt: datetime | None,
        *,
        unknown: bool,
    ) -> None:
        """Fail the launch, unless a create whose answer never came made the session after all."""
        assert launch.id is not None
        if (unknown or launch.outcome_unknown) and first_attempt is not None:
            try:
                existing = await self._find_existing(prepared, first_attempt)
            except Exception as exc:
                # Failing is still safe: the row keeps outcome_unknown, so a retry with the
                # same key looks again before creating.
                log.warning("launch.recovery_check_failed", error=type(exc).__name__)
                existing = None
            if existing is not None:
                log.info("launch.recovered", session_id=existing.id)
                await self._complete(launch.id, owner, prepared, existing)
                return
        log.warning("launch.failed", error=message)
        await asyncio.to_thread(
            partial(self.store.fail, launch.id, owner, message, outcome_unknown=unknown)
        )

    async def _complete(
        self, launch_id: int, owner: str, prepared: PreparedLaunch, session: Any
    ) -> None:
        launched = Launched(
            session_id=session.id,
            owner=self.owner,
            route=prepared.route,
            deadline=prepared.deadline,
            seen=SessionUpdate.from_api(session),
        )
        if not await asyncio.to_thread(self.store.complete, launch_id, owner, launched):
            log.warning("launch.lease_lost_after_create", session_id=session.id)

    # --- reads: preflight, agent version, lost-session search ------------------------------------

    async def _preflight(self, prepared: PreparedLaunch) -> list[str]:
        env_id = prepared.environment_id
        networking = await self._networking(env_id)
        if networking != "unrestricted":
            return []
        if prepared.strict:
            raise LaunchRejected(
                f"refusing to launch into environment {env_id}: its networking is unrestricted "
                "and strict mode is on (give the environment limited networking, or launch "
                "without --strict)"
            )
        warning = (
            f"environment {env_id} has unrestricted networking: the agent can reach any host "
            "(use limited networking, or --strict to refuse such launches)"
        )
        log.warning("launch.unrestricted_environment", environment_id=env_id)
        return [warning]

    async def _networking(self, env_id: str) -> str | None:
        cache = self._environments
        hit, value = cache.fresh(env_id)
        if hit:
            return value  # type: ignore[no-any-return]
        async with cache.lock(env_id):
            hit, value = cache.fresh(env_id)
            if hit:
                return value  # type: ignore[no-any-return]
            stored = await asyncio.to_thread(self.store.environment_check, env_id)
            if stored is not None and self._now() - stored.checked_at < cache.ttl:
                cache.put(env_id, stored.networking, stored.checked_at)
                return stored.networking
            try:
                env = await self.client.beta.environments.retrieve(env_id)
            except anthropic.NotFoundError:
                raise LaunchRejected(f"unknown environment {env_id}") from None
            if env.archived_at:
                raise LaunchRejected(f"environment {env_id} is archived")
            networking = None
            if env.config.type == "cloud":
                networking = env.config.networking.type
            await asyncio.to_thread(self.store.save_environment_check, env_id, networking)
            cache.put(env_id, networking)
            return networking

    async def _resolve_agent(self, agent_id: str) -> int:
        cache = self._agents
        hit, value = cache.fresh(agent_id)
        if hit:
            return int(value)
        async with cache.lock(agent_id):
            hit, value = cache.fresh(agent_id)
            if hit:
                return int(value)
            try:
                agent = await self.client.beta.agents.retrieve(agent_id)
            except anthropic.NotFoundError:
                raise LaunchRejected(f"unknown agent {agent_id}") from None
            if agent.archived_at:
                raise LaunchRejected(f"agent {agent_id} is archived")
            cache.put(agent_id, agent.version)
            # The latest version is a version like any other: a budget check needs no re-read.
            self._agent_versions.put(f"{agent_id}:{agent.version}", agent)
            return int(agent.version)

    async def _agent_at(self, agent_id: str, version: int) -> Any:
        """One agent version (its model, its callable agents), read once."""
        key = f"{agent_id}:{version}"
        cache = self._agent_versions
        hit, value = cache.fresh(key)
        if hit:
            return value
        async with cache.lock(key):
            hit, value = cache.fresh(key)
            if hit:
                return value
            try:
                agent = await self.client.beta.agents.retrieve(agent_id, version=version)
            except anthropic.NotFoundError:
                raise LaunchRejected(f"unknown agent {agent_id}") from None
            except anthropic.BadRequestError as exc:
                raise LaunchRejected(f"agent {agent_id}:{version}: {exc.message}") from None
            cache.put(key, agent)
            return agent

    async def _check_budgetable(self, agent_id: str, version: int) -> None:
        """Refuse, before any create call, a budget on an agent that can run a model without a
        public list price: the API would refuse it too (`model_not_budgetable`)."""
        uses: list[tuple[str, budget.ModelUse]] = []
        todo: list[tuple[str, int]] = [(agent_id, version)]
        seen: set[tuple[str, int]] = set()
        while todo and len(seen) < budget.MAX_AGENTS_READ:
            ref = todo.pop(0)
            if ref in seen:
                continue
            seen.add(ref)
            models, calls = budget.agent_models(await self._agent_at(*ref))
            owner = agent_id if ref == (agent_id, version) else f"agent {ref[0]}:{ref[1]}"
            uses.extend((owner, use) for use in models)
            todo.extend(calls)
        problem = budget.unbudgetable(agent_id, uses, self.priced_models)
        if problem is not None:
            raise LaunchRejected(problem)

    async def _find_existing(self, prepared: PreparedLaunch, first_attempt: datetime) -> Any:
        """A session an earlier, unanswered create made after all: found by our key."""
        page = await self.client.beta.sessions.list(
            agent_id=prepared.agent_id,
            created_at_gte=first_attempt - SKEW,
            include_archived=True,
            limit=100,
        )
        for _ in range(DUPLICATE_SCAN_PAGES):
            for session in page.data:
                if session.metadata.get(IDEMPOTENCY_KEY) == prepared.idempotency_key:
                    return session
            if not page.has_next_page():
                return None
            page = await page.get_next_page()
        return None

    # --- budgets -------------------------------------------------------------------------------

    async def raise_budget(self, session_id: str, usd: object) -> RaisedBudget:
        """Raise a session's spend ceiling to `usd` (a person's decision, after a
        `budget_reached` pause; the API resumes the session itself). Raises a
        `sessions.budget.BudgetError` naming the problem; a refusal makes no update call."""
        raised = await raise_budget(self.client, session_id, usd)
        try:
            await asyncio.to_thread(self._record_budget, raised)
        except Exception as exc:
            # The raise itself stands; the listing catches up at the session's next webhook.
            log.warning("budget.record_failed", session_id=session_id, error=type(exc).__name__)
        return raised

    def _record_budget(self, raised: RaisedBudget) -> None:
        # Listings read the cap from the tracked copy of the metadata: bring it up to date now
        # rather than at the next webhook. Sessions we do not track stay untracked.
        update = SessionUpdate(metadata=raised.metadata)
        SessionStore(self.store.engine).record(
            raised.session_id, update, self._now(), if_tracked=True
        )

    # --- follow-ups ----------------------------------------------------------------------------

    async def send(
        self,
        session_id: str,
        message: str,
        *,
        idempotency_key: str | None = None,
        deadline: str | None = None,
    ) -> FollowUpResult:
        """Send one more message to an existing session, idle or running (it queues), and
        re-arm its deadline: now plus the run's allowance, or `deadline` ("2h") when given.

        The same key for the same session sends once; without one, a fresh key is made. Raises
        a `sessions.followups.FollowUpError` naming the problem (see sessions/followups.py).
        """
        followups = FollowUps(self.store.engine, self.client, now=self._now)
        return await followups.send(
            session_id, message, idempotency_key=idempotency_key, deadline=deadline
        )

    # --- files ---------------------------------------------------------------------------------

    async def upload(self, path: Path) -> str:
        """Upload a local file for `files`; returns its file_... id."""
        if not await asyncio.to_thread(path.is_file):
            raise InvalidLaunch(f"file: {path} does not exist or is not a file")
        try:
            uploaded = await self.client.beta.files.upload(file=path)
        except anthropic.APIStatusError as exc:
            if exc.status_code in (404, 405):
                raise LaunchRejected(
                    "this API offers no file upload: pass an existing file_... id instead"
                ) from None
            raise LaunchRejected(f"uploading {path.name} failed ({exc.status_code})") from None
        except anthropic.APIConnectionError:
            raise LaunchRejected(f"uploading {path.name} failed: API unreachable") from None
        return uploaded.id
