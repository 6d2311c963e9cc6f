"""EmulatorConfig: everything tunable at start (CLI, create_emulator) and at runtime
(PUT /_emulator/config merges a partial document into the current one)."""

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

BillingModel = Literal["exists", "running"]
# `some`: a session's updated_at moves only when a client changes it (title, metadata,
# budget, agent tools), never on a status change. `always`: every status change moves it too.
UpdatedAtMoves = Literal["always", "some"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class WebhookFaults(_Model):
    drop: float = Field(default=0.0, ge=0.0, le=1.0)
    drop_all: bool = False
    duplicate: float = Field(default=0.0, ge=0.0, le=1.0)
    # Extra emulated seconds before the first attempt.
    delay_seconds: float = Field(default=0.0, ge=0.0)
    # Hold this many events and release them shuffled (0 or 1: no reordering).
    reorder_window: int = Field(default=0, ge=0, le=1000)
    # Emulated seconds after which a partly filled reorder window is released anyway.
    reorder_max_hold_seconds: float = Field(default=5.0, gt=0.0)
    # Send this many copies of each event concurrently (1: normal).
    burst: int = Field(default=1, ge=1, le=100)


class APIFaults(_Model):
    error_5xx: float = Field(default=0.0, ge=0.0, le=1.0)
    error_429: float = Field(default=0.0, ge=0.0, le=1.0)
    # Emulated seconds added to every list (page) response.
    slow_page_seconds: float = Field(default=0.0, ge=0.0)


class RateLimits(_Model):
    enabled: bool = True
    algorithm: Literal["token_bucket", "sliding_window"] = "token_bucket"
    create_per_minute: int = Field(default=300, ge=1)
    read_per_minute: int = Field(default=600, ge=1)


class EmulatorConfig(_Model):
    # None: any key is accepted, but one must be sent.
    api_key: str | None = None
    speed: float = Field(default=1.0, gt=0.0, le=100_000.0)
    organization_id: str = "org_emulator"
    workspace_id: str = "wrkspc_emulator"

    webhook_urls: list[str] = Field(default_factory=list)
    # Every event is signed with each secret: several at once during rotation.
    webhook_secrets: list[str] = Field(default_factory=list)
    # Also emit the undocumented second family (session.running, session.idled,
    # session.requires_action, session.pending). session.created/archived/deleted are in the
    # SDK's union once and are sent once, whatever this says.
    second_family: bool = False
    # Attempts per event per endpoint, the first included (the Skill: at most 3).
    webhook_max_attempts: int = Field(default=3, ge=1, le=10)
    webhook_backoff_min_seconds: float = Field(default=5.0, ge=0.0)
    webhook_backoff_max_seconds: float = Field(default=120.0, ge=0.0)
    webhook_timeout_seconds: float = Field(default=10.0, gt=0.0)
    # An endpoint is disabled (reason `sustained_failure`) once this many deliveries in a row
    # failed (any non-2xx, a timeout, a connection error; every attempt counts, a 2xx resets
    # the count: the docs' "roughly 20 consecutive failed deliveries"), and the failures have
    # lasted at least `disable_after_seconds` (emulated; 0: the count alone decides). A 3xx
    # disables at once (reason `redirect`), whatever these say.
    disable_after_failed_deliveries: int = Field(default=20, ge=1)
    disable_after_seconds: float = Field(default=0.0, ge=0.0)
    # The API also disables an endpoint at once (reason `invalid_address`) whose host resolves
    # to a non-public address. Off by default: the emulator's receivers are on loopback.
    disable_on_private_address: bool = False

    # The organization webhooks API lists organization endpoints only ("not webhook endpoints
    # that belong to a workspace", says the SDK). True: the workspace endpoints (webhook_urls)
    # are listed there too, with ids `whep_ws…`, read-only but for `state`: for a client that
    # watches its session-event endpoint through that API.
    org_webhooks_include_workspace: bool = False

    # The SDK calls Session.updated_at only "a timestamp"; `some` keeps clients from relying on
    # it moving with status (see UpdatedAtMoves).
    updated_at_moves: UpdatedAtMoves = "some"

    default_script: str = "end_turn"
    # Emulated seconds a scripted turn takes from running to idle.
    run_seconds: float = Field(default=2.0, ge=0.0)
    # Real seconds between `:` heartbeat comments on an idle event stream.
    sse_heartbeat_seconds: float = Field(default=15.0, gt=0.0)
    # Real seconds between scheduler ticks for deployment cron schedules.
    scheduler_tick_seconds: float = Field(default=0.05, gt=0.0)

    # `running`: runtime billed only while running, as the API bills it (usage.active_seconds).
    # `exists`: from create to delete, the tutorial's model, kept for comparison.
    billing_model: BillingModel = "running"
    container_hour_usd: float = Field(default=0.08, ge=0.0)

    rate_limits: RateLimits = Field(default_factory=RateLimits)
    faults: WebhookFaults = Field(default_factory=WebhookFaults)
    api_faults: APIFaults = Field(default_factory=APIFaults)

    @field_validator("webhook_secrets")
    @classmethod
    def _secrets_are_whsec(cls, value: list[str]) -> list[str]:
        for secret in value:
            if not secret.startswith("whsec_"):
                raise ValueError("webhook secrets start with whsec_")
        return value

    def merged(self, patch: dict[str, Any]) -> "EmulatorConfig":
        """A new config with `patch` applied; nested sections merge key by key."""
        return EmulatorConfig.model_validate(_deep_merge(self.model_dump(), patch))

    def public(self) -> dict[str, Any]:
        """The config for GET /_emulator/config. Webhook secrets are shown (tests need them);
        the api key is left out, so a GET-then-PUT round trip keeps it."""
        out = self.model_dump()
        out.pop("api_key")
        return out


def _deep_merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out
