"""Container-time ledger. It records facts (created, deleted, running intervals, in emulated
seconds) and prices them under a billing model on request:

- `exists`: a container is held from creation until deletion (the tutorial's view);
- `running`: only running time is billed (the pricing page: $0.08 per session-hour active).

Deleting a finished session early therefore saves money only under `exists`.
"""

from dataclasses import dataclass, field
from typing import Any

from emulator.config import BillingModel


@dataclass
class SessionMeter:
    session_id: str
    created: float
    deleted: float | None = None
    running_since: float | None = None
    running_total: float = 0.0

    def exists_seconds(self, now: float) -> float:
        end = self.deleted if self.deleted is not None else now
        return max(0.0, end - self.created)

    def running_seconds(self, now: float) -> float:
        extra = now - self.running_since if self.running_since is not None else 0.0
        return self.running_total + max(0.0, extra)

    def seconds(self, model: BillingModel, now: float) -> float:
        return self.exists_seconds(now) if model == "exists" else self.running_seconds(now)


@dataclass
class Ledger:
    meters: dict[str, SessionMeter] = field(default_factory=dict)

    def created(self, session_id: str, at: float) -> None:
        self.meters[session_id] = SessionMeter(session_id, created=at)

    def started(self, session_id: str, at: float) -> None:
        meter = self.meters.get(session_id)
        if meter is not None and meter.running_since is None:
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


def report(ledger: Ledger, model: BillingModel, rate_per_hour: float, now: float) -> dict[str, Any]:
    rows = []
    total = 0.0
    for meter in ledger.meters.values():
        seconds = meter.seconds(model, now)
        total += seconds
        rows.append(
            {
                "session_id": meter.session_id,
                "container_seconds": round(seconds, 6),
                "cost_usd": round(seconds / 3600 * rate_per_hour, 9),
                "exists_seconds": round(meter.exists_seconds(now), 6),
                "running_seconds": round(meter.running_seconds(now), 6),
                "deleted": meter.deleted is not None,
            }
        )
    return {
        "model": model,
        "rate_usd_per_container_hour": rate_per_hour,
        "time_base": "emulated seconds (real seconds x speed)",
        "sessions": rows,
        "total_container_seconds": round(total, 6),
        "total_cost_usd": round(total / 3600 * rate_per_hour, 9),
    }
