"""Did Anthropic send this? A multi-key Standard Webhooks check on the raw body, `now` injected.

standardwebhooks' own `Webhook.verify` reads the wall clock and lets a bare ValueError escape on
`webhook-signature: garbage`, so none of it is used here: the HMAC is its HMAC-SHA256 over
`id.timestamp.body` (through hashlib's one-shot `hmac.digest`, a few times cheaper than an
`hmac.HMAC` object per request); header parsing, the timestamp window and the constant-time
comparison are ours, and every failure is a BadSignature with a reason.
"""

import base64
import binascii
import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import NamedTuple

from receiver.errors import BadSignature

SECRET_PREFIX = "whsec_"  # noqa: S105 (a prefix, not a secret)
# A signature header is a handful of `v1,<base64>` entries; anything longer is not Anthropic.
MAX_SIGNATURE_HEADER = 4096
MAX_WEBHOOK_ID = 200
MAX_TIMESTAMP_DIGITS = 12


@dataclass(frozen=True)
class SigningKey:
    # Which key matched, recorded on the delivery: an environment key's position in the
    # configured list; a stored key (store/signing_keys.py) is recorded as minus its id.
    index: int
    secret: bytes = field(repr=False)
    # The key's `key_index` metric label, made once here rather than per delivery: the
    # environment key's position, or the stored key's fingerprint.
    label: str = ""

    def __post_init__(self) -> None:
        if not self.label:
            object.__setattr__(self, "label", str(self.index))

    @classmethod
    def parse(cls, index: int, value: str) -> "SigningKey":
        """`whsec_` + base64, as Anthropic shows it; missing padding tolerated (as upstream)."""
        raw = value.strip()
        if raw.startswith(SECRET_PREFIX):
            raw = raw[len(SECRET_PREFIX) :]
        raw = raw.rstrip("=")
        try:
            secret = base64.b64decode(raw + "=" * (-len(raw) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(f"signing key #{index} is not whsec_ + base64") from None
        if not secret:
            raise ValueError(f"signing key #{index} is empty")
        return cls(index=index, secret=secret)


class Verified(NamedTuple):  # one per delivery on the hot path: a tuple is cheap to make
    webhook_id: str
    timestamp: int  # the signed `webhook-timestamp`, Unix seconds
    key_index: int
    key_label: str  # the matched key's metric label


def verify(
    body: bytes,
    headers: Mapping[str, str],
    keys: Sequence[SigningKey],
    now: datetime,
    tolerance: timedelta = timedelta(minutes=5),
) -> Verified:
    """Return who signed `body`, or raise BadSignature. `headers` has lower-case names."""
    msg_id = headers.get("webhook-id", "")
    stamp = headers.get("webhook-timestamp", "")
    signature = headers.get("webhook-signature", "")
    if not (msg_id and stamp and signature):
        raise BadSignature("missing_signature_headers")
    if len(msg_id) > MAX_WEBHOOK_ID or not msg_id.isprintable():
        raise BadSignature("malformed_webhook_id")
    if len(stamp) > MAX_TIMESTAMP_DIGITS or not (stamp.isascii() and stamp.isdigit()):
        raise BadSignature("malformed_timestamp")
    # Compared as numbers: a far-off stamp must not overflow datetime before it is refused.
    sent = int(stamp)
    at = now.timestamp()
    window = tolerance.total_seconds()
    if sent < at - window:
        raise BadSignature("stale_timestamp")
    if sent > at + window:
        raise BadSignature("future_timestamp")
    candidates = _v1_signatures(signature)
    if not keys:
        raise BadSignature("no_signing_keys")
    signed = f"{msg_id}.{stamp}.".encode() + body
    for key in keys:
        expected = hmac.digest(key.secret, signed, "sha256")
        # Check every candidate, matched or not, so timing says nothing about which one was close.
        matched = False
        for candidate in candidates:
            matched |= hmac.compare_digest(expected, candidate)
        if matched:
            return Verified(msg_id, sent, key.index, key.label)
    raise BadSignature("no_matching_signature")


def _v1_signatures(header: str) -> list[bytes]:
    if len(header) > MAX_SIGNATURE_HEADER:
        raise BadSignature("malformed_signature")
    found: list[bytes] = []
    for entry in header.split():
        version, comma, encoded = entry.partition(",")
        if not comma:
            raise BadSignature("malformed_signature")
        if version != "v1":
            continue  # other schemes may be listed beside v1; they are not ours to check
        try:
            # What b64decode(validate=True) does, without its Python wrapper.
            found.append(binascii.a2b_base64(encoded, strict_mode=True))
        except (binascii.Error, ValueError):
            continue
    if not found:
        raise BadSignature("malformed_signature")
    return found
