"""Settings: one object, read once per process, passed down.

Sources, highest first: keyword arguments (tests), environment (`IDLEHOOK_*`, plus the SDK's own
`ANTHROPIC_*` names), the TOML file (`--config`, default `./idlehook.toml`), then defaults. This
module is the only reader of the environment. The sections the worker and the plugins read
(`[[routes]]`, `[worker]`, `[archive]`, `[forward]`, `[tools]`, `[approvals]`) are defined in
handlers/config.py, since `handlers` never imports `idlehook`; the others are here.
"""

import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from handlers.billing import BillingModel, Pricing
from handlers.config import (
    ApprovalSettings,
    ArchiveSettings,
    ForwardSettings,
    RouteRule,
    Section,
    ToolsSettings,
    WorkerSettings,
    check_duration,
    default_routes,
    with_answer_route,
)
from handlers.durations import parse_duration

DEFAULT_CONFIG_PATH = Path("idlehook.toml")


class ReaperSettings(Section):
    """`[reaper]`: which sessions `idlehook reap` deletes, and how carefully."""

    # A session rests this long without activity before it is deleted ("0s" allowed). Idle time
    # is not billed (runtime accrues only while running), so keeping a finished session costs
    # nothing and keeps it open for follow-ups; `[[routes]] idle_for` and per-launch
    # `--idle-for` shorten or lengthen it.
    idle_for: str = "24h"
    # Interrupt a session running longer than this since its run started (None: off). Per
    # launch: `idlehook start --max-running`. The one saving that is real under `running`.
    max_running: str | None = None
    # Sessions idlehook did not launch are touched only when enabled, and only past this age.
    include_unowned: bool = False
    max_age: str | None = None
    # Sessions fired by these deployments count as ours.
    owned_deployments: list[str] = Field(default_factory=list)
    # Any matching pair keeps a session, e.g. {keep = "true"}.
    exclude_metadata: dict[str, str] = Field(default_factory=lambda: {"keep": "true"})
    # Save events.jsonl/result.json itself before deleting a session no route saved, rather
    # than keeping it forever: nothing is lost and nothing piles up by accident.
    archive_before_delete: bool = True
    # Deprecated: `runtime_usd_per_hour` at the top level. Still honoured when set.
    container_usd_per_hour: float | None = Field(default=None, ge=0)
    # How far back (by created_at) to list sessions.
    lookback: str = "30d"
    # After interrupting a running session past its deadline, wait this long for it to idle.
    interrupt_wait_seconds: float = Field(default=10.0, ge=0)
    # Inside the worker: run every this many seconds (None: only from cron / the CLI).
    interval_seconds: float | None = Field(default=None, gt=0)
    # Sessions judged and deleted at once; the shared rate gate paces their calls either way.
    concurrency: int = Field(default=8, ge=1, le=64)

    _durations = field_validator("idle_for", "max_age", "lookback", "max_running")(check_duration)


class ReconcileSettings(Section):
    """`[reconcile]`: find status changes no webhook told us about."""

    interval_seconds: float = Field(default=60.0, gt=0)
    # Not a horizon: tracked sessions, and any session found running, are reconciled whatever
    # their age. Resting sessions idlehook never heard of are filled in only if created at most
    # this long before the first sweep (a first start must not archive an organisation's past).
    lookback: str = "24h"
    # A transition younger than this may still have its webhook in flight.
    settle_seconds: float = Field(default=30.0, ge=0)
    # Sessions changed status (as the reconciler read them) and no webhook arrived for this
    # long after the change: the endpoint is likely disabled.
    silence_alarm_seconds: float = Field(default=300.0, gt=0)
    # API calls one sweep may make (read class, paced with everything else); a backlog waits
    # for the next sweeps. Nothing changing costs about 2 + scan_pages_per_sweep.
    max_calls_per_sweep: int = Field(default=100, ge=3)
    # Pages (100 sessions each) of resting sessions re-read per sweep, rotating: how a session
    # that woke and rested again between two sweeps, its webhooks lost, is found.
    scan_pages_per_sweep: int = Field(default=2, ge=1)
    # The webhook endpoint whose state is read each sweep (needs the admin key): by id, or by
    # the URL Anthropic posts to (e.g. "https://hooks.example.com/webhooks/anthropic").
    endpoint_url: str | None = None
    endpoint_id: str | None = None

    _durations = field_validator("lookback")(check_duration)


class HttpSettings(Section):
    """`[http]`: what a client may hold of the receiver before its request is read.

    uvicorn times nothing before a request is complete and caps no header size; these are
    enforced per connection by `receiver/http_guard.py`, set up by `idlehook serve`."""

    # From the connection's first byte (or a kept-alive connection's next request) to the end
    # of its headers; then it is answered 408 and closed (a silent connection is just closed).
    header_timeout_seconds: float = Field(default=10.0, gt=0)
    # From the end of the headers to the end of the body (every body here is small).
    body_timeout_seconds: float = Field(default=30.0, gt=0)
    # Request line plus headers; more is answered 431 and closed without reading the rest.
    max_header_bytes: int = Field(default=64 * 1024, ge=8 * 1024)
    # Open connections at once. At the cap a new one closes the longest-open idle one (no
    # request in flight); if none is idle it is answered 503. Lowered at start to stay under the
    # open-file limit (which `serve` raises to its hard limit).
    max_connections: int = Field(default=1000, ge=16)
    # An idle kept-alive connection is closed after this long (Anthropic reuses connections
    # between retries).
    keep_alive_seconds: int = Field(default=75, ge=1)


class JournalSettings(Section):
    """`[journal]`: where a receiver keeps verified deliveries its store could not commit.

    Anthropic drops a webhook after a few failed attempts and disables an endpoint after enough
    failures in a row, so while the database is down (or full, or read-only) a receiver
    appends each verified delivery to a local file, fsyncs it and acknowledges it; a drainer
    moves it into the store once the store is back (store/journal.py). Put it on storage that
    outlives the process and its container (deploy/ does).
    """

    # Off: a delivery the store cannot commit is a 503 (Anthropic retries it a few times).
    enabled: bool = True
    # The directory (one file set per receiver process; a receiver drains what dead ones left
    # in it). Default: `<data_dir>/journal`.
    path: Path | None = None
    # What one receiver process may hold in it; past this a delivery the store cannot take
    # either is a 503.
    max_bytes: int = Field(default=64 * 1024 * 1024, ge=64 * 1024)
    # How often the drainer looks for journaled deliveries (and journals left by dead
    # receivers) to move into the store.
    drain_seconds: float = Field(default=1.0, gt=0)


class LaunchSettings(Section):
    """`[launch]`: defaults for every session this instance starts."""

    # A spend ceiling (USD) the API enforces on each session; `idlehook start --budget` and a
    # request's `budget_usd` override it. None: uncapped.
    budget_usd: float | None = None
    # Glob patterns of models with a public list price: a budgeted launch of an agent that can
    # run any other model is refused before the create call (the API would refuse it anyway).
    priced_models: list[str] = Field(
        default_factory=lambda: ["claude-opus-*", "claude-sonnet-*", "claude-haiku-*", "claude-3*"]
    )

    @field_validator("budget_usd")
    @classmethod
    def _budget(cls, value: float | None) -> float | None:
        from sessions.budget import InvalidBudget, usd_to_cents

        if value is not None:
            try:
                usd_to_cents(value)
            except InvalidBudget as exc:
                raise ValueError(str(exc)) from None
        return value

    @field_validator("priced_models")
    @classmethod
    def _patterns(cls, value: list[str]) -> list[str]:
        if any(not pattern.strip() for pattern in value):
            raise ValueError("a pattern must not be empty")
        return value


class RetentionSettings(Section):
    """`[retention]`: how long finished history is kept (store/retention.py), each kind by its
    own age; "never" keeps it. Nothing unfinished is deleted, nor a delivery's event id within
    24 h (retried webhooks are de-duplicated by it), nor what a session's state is read from."""

    deliveries: str = "30d"  # raw bodies, once every run of them is gone
    runs: str = "30d"  # succeeded handler runs, counted from when they finished
    dead_runs: str = "90d"  # dead letters: replayable (`idlehook replay`) until then
    unrecognised: str = "30d"  # signed bodies of no known shape
    launches: str = "30d"  # created or failed (an idempotency key is remembered this long)
    follow_ups: str = "30d"  # sent ones (likewise their idempotency keys)
    tool_calls: str = "30d"  # results the API took
    approvals: str = "30d"  # decisions the API took
    audit: str = "365d"  # the reaper's actions
    sessions: str = "30d"  # tracked sessions deleted this long ago
    # The sweep inside `serve` (with its worker), every this many seconds; None: only
    # `idlehook db prune` (from cron, say).
    interval_seconds: float | None = Field(default=3600.0, gt=0)
    # Rows a transaction: SQLite's write lock (the inbox's) is held one batch at a time.
    batch_size: int = Field(default=5000, ge=100, le=50_000)

    @field_validator(
        "deliveries",
        "runs",
        "dead_runs",
        "unrecognised",
        "launches",
        "follow_ups",
        "tool_calls",
        "approvals",
        "audit",
        "sessions",
    )
    @classmethod
    def _age(cls, value: str) -> str:
        from store.retention import FLOOR

        if value.strip().lower() != "never" and parse_duration(value) < FLOOR:
            raise ValueError(f"{value!r} is under the 24h floor (retried webhooks need it)")
        return value


class TracingSettings(Section):
    """`[tracing]`: OpenTelemetry spans (idlehook/tracing.py), off by default: a webhook's
    receipt and commit in the receiver, its routing and each handler run in a worker, and the
    API calls beneath, in one trace (the receipt's `traceparent` is kept with the delivery).
    The standard `OTEL_*` variables (`OTEL_EXPORTER_OTLP_ENDPOINT`, `..._HEADERS`,
    `OTEL_TRACES_SAMPLER`, `OTEL_SERVICE_NAME`, ...) apply where these leave a value unset."""

    enabled: bool = False
    # None: OTEL_SERVICE_NAME, else "idlehook".
    service_name: str | None = None
    # The collector's OTLP/HTTP base URL (e.g. "http://collector:4318"; `/v1/traces` is added
    # unless given). None: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT / OTEL_EXPORTER_OTLP_ENDPOINT, else
    # http://localhost:4318.
    endpoint: str | None = None
    # Only OTLP over HTTP with protobuf bodies ships (no gRPC stack in the install).
    protocol: Literal["http/protobuf"] = "http/protobuf"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="IDLEHOOK_",
        env_nested_delimiter="__",
        populate_by_name=True,
        extra="forbid",
    )

    # Where state lives. SQLite (WAL) by default; a postgresql:// URL scales out.
    database_url: str = "sqlite:///idlehook-data/idlehook.db"
    data_dir: Path = Path("idlehook-data")
    results_dir: Path = Path("idlehook-data/results")

    # The API client, under the SDK's own variable names.
    api_key: SecretStr = Field(
        default=SecretStr(""),
        validation_alias=AliasChoices("api_key", "ANTHROPIC_API_KEY", "IDLEHOOK_API_KEY"),
    )
    base_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("base_url", "ANTHROPIC_BASE_URL", "IDLEHOOK_BASE_URL"),
    )
    # Several keys are accepted at once during rotation: comma or whitespace separated.
    # NoDecode: the env value is `whsec_a,whsec_b`, not JSON; `_split_keys` splits it.
    webhook_signing_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        validation_alias=AliasChoices(
            "webhook_signing_keys", "ANTHROPIC_WEBHOOK_SIGNING_KEY", "IDLEHOOK_WEBHOOK_SIGNING_KEYS"
        ),
    )
    # Bearer token for the management endpoints (POST /sessions, approvals, the web page).
    api_token: SecretStr | None = None
    # An Admin API key (sk-ant-admin...): only to read the webhook endpoint's state through the
    # organization webhooks API (`[reconcile] endpoint_url`/`endpoint_id`). Unset: not read.
    admin_api_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "admin_api_key", "ANTHROPIC_ADMIN_KEY", "IDLEHOOK_ADMIN_API_KEY"
        ),
    )

    # Who this instance is: stamped on every session it launches as metadata `idlehook_owner`.
    owner: str = "idlehook"
    # Refuse to launch into an environment with unrestricted networking (`idlehook start
    # --strict` per launch); otherwise such launches go ahead with a warning.
    strict: bool = False
    # How the API bills: `running` (runtime only while a session runs, on usage.active_seconds,
    # plus tokens at list price: as documented) or `exists` (the tutorial's: from create to
    # delete). Every cost and saving idlehook reports is priced under this model and says so.
    billing_model: BillingModel = "running"
    runtime_usd_per_hour: float = Field(default=0.08, ge=0)
    # How often the in-process deadline watchdog polls sessions no webhook has spoken for.
    watchdog_seconds: float = Field(default=60.0, gt=0)

    host: str = "127.0.0.1"
    port: int = 8080
    max_body_bytes: int = Field(default=256 * 1024, ge=1024)
    timestamp_tolerance_seconds: int = 300
    json_logs: bool | None = None  # None: JSON when stdout is not a terminal

    routes: list[RouteRule] = Field(default_factory=default_routes)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    archive: ArchiveSettings = Field(default_factory=ArchiveSettings)
    forward: ForwardSettings = Field(default_factory=ForwardSettings)
    reaper: ReaperSettings = Field(default_factory=ReaperSettings)
    reconcile: ReconcileSettings = Field(default_factory=ReconcileSettings)
    tools: ToolsSettings = Field(default_factory=ToolsSettings)
    approvals: ApprovalSettings = Field(default_factory=ApprovalSettings)
    launch: LaunchSettings = Field(default_factory=LaunchSettings)
    journal: JournalSettings = Field(default_factory=JournalSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    retention: RetentionSettings = Field(default_factory=RetentionSettings)
    tracing: TracingSettings = Field(default_factory=TracingSettings)
    # `[plugins.<name>]`: each installed plugin's own table, validated by its `Config` model at
    # startup (handlers/registry.py) and given to it alone; the built-ins keep their sections.
    plugins: dict[str, dict[str, Any]] = Field(default_factory=dict)

    # The API's rate limits (requests per minute), shared by every worker through the store.
    create_rpm: int = Field(default=300, ge=1)
    read_rpm: int = Field(default=600, ge=1)

    @field_validator("routes")
    @classmethod
    def _keep_answer_route(cls, value: list[RouteRule]) -> list[RouteRule]:
        # Written routes must not silently drop `requires_action -> answer` (RouteRule).
        return with_answer_route(value)

    @field_validator("webhook_signing_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part for part in value.replace(",", " ").split() if part]
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_path = _toml_override or _config_path_from_env()
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if toml_path is not None and toml_path.exists():
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_path))
        return tuple(sources)

    @classmethod
    def load(cls, config: Path | None = None, **overrides: Any) -> "Settings":
        """Build the settings for this process, reading `config` (TOML) if given."""
        global _toml_override
        if config is not None and not config.exists():
            raise FileNotFoundError(f"config file not found: {config}")
        previous, _toml_override = _toml_override, config
        try:
            return cls(**overrides)
        finally:
            _toml_override = previous

    def pricing(self) -> Pricing:
        rate = self.reaper.container_usd_per_hour
        return Pricing(self.billing_model, self.runtime_usd_per_hour if rate is None else rate)

    def journal_dir(self) -> Path:
        return self.journal.path or self.data_dir / "journal"

    def signing_key_values(self) -> list[str]:
        return [key.get_secret_value() for key in self.webhook_signing_keys]


# Set only for the duration of Settings.load(config=...): keeps env above the file.
_toml_override: Path | None = None


def _config_path_from_env() -> Path | None:
    raw = os.environ.get("IDLEHOOK_CONFIG")
    if raw:
        return Path(raw)
    return DEFAULT_CONFIG_PATH


def env_flag(name: str) -> bool:
    """A boolean switch from the environment, for test and CI wiring only."""
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def env_value(name: str, default: str | None = None) -> str | None:
    return os.environ.get(name, default)
