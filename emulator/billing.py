"""The billing ledger. It records facts per session (created, deleted, running intervals, in
emulated seconds; the list cost of the tokens spent; what a cut-short turn would still have
cost) and prices them under a billing model on request:

- `running` (the default): only running time is billed, as the pricing page says ($0.08 per
  session-hour while `running`; `usage.active_seconds` is the metered quantity);
- `exists`: a container is held from creation until deletion (the tutorial's view, kept to
  compare against).

Deleting a finished session early therefore saves money only under `exists`; under `running`
what saves money is cutting short a turn that would have kept running (an interrupt, a delete
or an archive while running). The ledger records that counterfactual: the emulated seconds the
turn was still scheduled to run and the list cost of the steps it had left.
"""

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from emulator.clock import rfc3339
from emulator.config import BillingModel

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass
class SessionMeter:
    session_id: str
    created: float
    deleted: float | None = None
    running_since: float | None = None
    running_total: float = 0.0
    # List cost of the tokens spent, unrounded (usage.list_cost is this in whole cents).
    token_usd: float = 0.0
    # What cut-short turns would still have cost had nothing stopped them.
    avoided_running_seconds: float = 0.0
    avoided_token_usd: float = 0.0
    would_have_run_until: float | None = None  # the latest cut turn's scheduled end

    def exists_seconds(self, now: float) -> float:
        end = self.deleted if self.deleted is not None else now
        return max(0.0, end - self.created)

    def running_seconds(self, now: float) -> float:
        extra = now - self.running_since if self.running_since is not None else 0.0
        return self.running_total + max(0.0, extra)

    def seconds(self, model: BillingModel, now: float) -> float:
        return self.exists_seconds(now) if model == "exists" else self.running_seconds(now)

    def avoided_seconds(self, model: BillingModel) -> float:
        # Under `exists` the container is held until the delete whatever the turn does, so
        # cutting a turn short saves no container time.
        return self.avoided_running_seconds if model == "running" else 0.0


@dataclass
class Ledger:
    meters: dict[str, SessionMeter] = field(default_factory=dict)

    def created(self, session_id: str, at: float) -> None:
        self.meters[session_id] = SessionMeter(session_id, created=at)

    def started(self, session_id: str, at: float) -> None:
        meter = self.meters.get(session_id)
        if meter is not None and meter.running_since is None and meter.deleted is None:
            meter.running_since = at

    def stopped(self, session_id: str, at: float) -> None:
        meter = self.meters.get(session_id)
        if meter is not None and meter.running_since is not None:
            meter.running_total += max(0.0, at - meter.running_since)
            meter.running_since = None

    def deleted(self, session_id: str, at: float) -> None:
        self.stopped(session_id, at)
        meter = self.meters.get(session_id)
        if meter is not None and meter.deleted is None:
            meter.deleted = at

    def running_seconds(self, session_id: str, now: float) -> float:
        """The session's billed runtime so far: what `usage.active_seconds` reports."""
        meter = self.meters.get(session_id)
        return meter.running_seconds(now) if meter is not None else 0.0

    def spent(self, session_id: str, usd: float) -> None:
        meter = self.meters.get(session_id)
        if meter is not None:
            meter.token_usd += usd

    def cut_short(self, session_id: str, at: float, until: float, token_usd: float) -> None:
        """A running turn scheduled to run until `until` was stopped at `at`; its remaining
        steps would have spent `token_usd` at list price."""
        meter = self.meters.get(session_id)
        if meter is None:
            return
        until = max(at, until)
        meter.avoided_running_seconds += until - at
        meter.avoided_token_usd += max(0.0, token_usd)
        meter.would_have_run_until = until


def _usd(seconds: float, rate_per_hour: float) -> float:
    return round(seconds / 3600 * rate_per_hour, 9)


def _sum(values: Iterable[float]) -> float:
    return sum(values, 0.0)


def report(
    ledger: Ledger,
    model: BillingModel,
    rate_per_hour: float,
    now: float,
    *,
    wall_origin: datetime = _EPOCH,
) -> dict[str, Any]:
    """The ledger priced under `model`. `wall_origin` is the emulated wall clock at emulated
    second 0, for the instants reported as RFC 3339 (`would_have_run_until`, `emulated_now`)."""

    def wall(seconds: float) -> str:
        return rfc3339(wall_origin + timedelta(seconds=seconds))

    meters = list(ledger.meters.values())
    rows = []
    for meter in meters:
        seconds = meter.seconds(model, now)
        avoided = meter.avoided_seconds(model)
        until = meter.would_have_run_until
        rows.append(
            {
                "session_id": meter.session_id,
                "container_seconds": round(seconds, 6),
                "cost_usd": _usd(seconds, rate_per_hour),
                "exists_seconds": round(meter.exists_seconds(now), 6),
                "running_seconds": round(meter.running_seconds(now), 6),
                "deleted": meter.deleted is not None,
                "token_usd": round(meter.token_usd, 9),
                "avoided_running_seconds": round(meter.avoided_running_seconds, 6),
                "avoided_runtime_usd": _usd(avoided, rate_per_hour),
                "avoided_token_usd": round(meter.avoided_token_usd, 9),
                "would_have_run_until": wall(until) if until is not None else None,
            }
        )
    total = _sum(m.seconds(model, now) for m in meters)
    avoided_total = _sum(m.avoided_seconds(model) for m in meters)
    return {
        "model": model,
        "rate_usd_per_container_hour": rate_per_hour,
        "time_base": "emulated seconds (real seconds x speed)",
        "emulated_now": wall(now),
        "sessions": rows,
        "total_container_seconds": round(total, 6),
        "total_cost_usd": _usd(total, rate_per_hour),
        "total_token_usd": round(_sum(m.token_usd for m in meters), 9),
        "total_avoided_running_seconds": round(_sum(m.avoided_running_seconds for m in meters), 6),
        "total_avoided_runtime_usd": _usd(avoided_total, rate_per_hour),
        "total_avoided_token_usd": round(_sum(m.avoided_token_usd for m in meters), 9),
    }
