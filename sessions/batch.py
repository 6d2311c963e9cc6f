"""An `idlehook start --batch` file: one launch per JSON line, each under an idempotency key.

A line without `idempotency_key` gets one derived from what it asks for: the canonical JSON of
its fields (sorted keys, aliases resolved, defaults left out) hashed, plus its occurrence among
the identical lines before it, `batch-<sha256[:24]>-<n>`. So running a file again queues
nothing new (a fresh random key per line doubled every session), two identical lines are still
two sessions, and inserting or removing other lines shifts no key. The key is derived from the
line as written, before `--strict` or `--budget` fill it in: the flags say how to run a file,
the lines what to launch, and a re-run with other flags must not launch it all again.
"""

import hashlib
import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sessions.launcher import InvalidLaunch, LaunchRequest

KEY_PREFIX = "batch-"


def content_digest(request: LaunchRequest) -> str:
    """The first 24 hex digits of the sha256 of the request's canonical JSON, key excluded."""
    fields = request.model_dump(mode="json", exclude_defaults=True, exclude={"idempotency_key"})
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:24]


def derived_key(digest: str, occurrence: int) -> str:
    return f"{KEY_PREFIX}{digest}-{occurrence}"


def with_keys(requests: Sequence[LaunchRequest]) -> list[LaunchRequest]:
    """Each request without a key gets its derived one; a key given is kept as is."""
    seen: Counter[str] = Counter()
    keyed = []
    for request in requests:
        if request.idempotency_key is not None:
            keyed.append(request)
            continue
        digest = content_digest(request)
        seen[digest] += 1
        key = derived_key(digest, seen[digest])
        keyed.append(request.model_copy(update={"idempotency_key": key}))
    return keyed


def _defaults(request: LaunchRequest, strict: bool, budget: float | None) -> LaunchRequest:
    update: dict[str, Any] = {}
    if strict and request.strict is None:
        update["strict"] = True
    # --budget is the default for lines that name none of their own (`"budget": null` is one).
    if budget is not None and "budget_usd" not in request.model_fields_set:
        update["budget_usd"] = budget
    return request.model_copy(update=update) if update else request


def read_batch(path: Path, strict: bool, budget: float | None = None) -> list[LaunchRequest]:
    """The file's launches, keyed, with the flags' defaults; raises InvalidLaunch naming the
    line at fault (nothing is queued unless every line is valid)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise InvalidLaunch(f"cannot read {path}: {exc.strerror}") from None
    requests = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except ValueError:
            raise InvalidLaunch(f"{path}:{number}: not valid JSON") from None
        try:
            requests.append(LaunchRequest.parse(data))
        except InvalidLaunch as exc:
            raise InvalidLaunch(f"{path}:{number}: {exc}") from None
    if not requests:
        raise InvalidLaunch(f"{path}: no launches in it")
    return [_defaults(request, strict, budget) for request in with_keys(requests)]
