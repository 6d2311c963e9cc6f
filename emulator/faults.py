"""Fault injection decisions. Pure given the random source: what to do to this delivery or
this API call. The sender and the request wrapper carry them out."""

import random
from dataclasses import dataclass

from emulator.config import APIFaults, WebhookFaults
from emulator.errors import APIError, InternalError, RateLimited


@dataclass(frozen=True)
class DeliveryPlan:
    drop: bool
    copies: int  # sequential duplicate deliveries of the same event (1: no duplicate)
    burst: int  # concurrent copies per delivery
    delay_seconds: float  # emulated


def plan_delivery(faults: WebhookFaults, rng: random.Random) -> DeliveryPlan:
    drop = faults.drop_all or (faults.drop > 0 and rng.random() < faults.drop)
    copies = 2 if faults.duplicate > 0 and rng.random() < faults.duplicate else 1
    return DeliveryPlan(drop, copies, faults.burst, faults.delay_seconds)


def api_fault(faults: APIFaults, rng: random.Random) -> APIError | None:
    if faults.error_5xx > 0 and rng.random() < faults.error_5xx:
        return InternalError("Injected fault: internal server error")
    if faults.error_429 > 0 and rng.random() < faults.error_429:
        return RateLimited("Injected fault: rate limited", headers={"retry-after": "1"})
    return None


def shuffled(items: list[str], rng: random.Random) -> list[str]:
    out = list(items)
    rng.shuffle(out)
    return out
