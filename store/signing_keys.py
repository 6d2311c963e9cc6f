"""Webhook signing keys kept in the store: added and retired while the receivers run.

`idlehook keys` writes here; every receiver reads `verifying()` every few seconds
(receiver/keyring.py), so a new key is accepted everywhere without a restart, and a retired one
keeps verifying through its grace period, then stops. What is listed (`KeyInfo`) carries a
fingerprint, never the secret; the secret leaves this module only towards verification
(`VerifyingKey`, whose repr hides it), and is erased once its key can verify nothing.
"""

import base64
import binascii
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from store.models import SigningKeyRecord

SECRET_PREFIX = "whsec_"  # noqa: S105 (a prefix, not a secret)
# Anthropic's keys are 32 bytes; a much shorter one is a paste cut short, not a key.
MIN_KEY_BYTES = 16
FINGERPRINT_LENGTH = 8  # hex digits of sha256(key bytes): 32 bits, plenty for a handful of keys
_BASE64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")
_HEX = re.compile(r"[0-9a-f]+")

KeyState = Literal["live", "retiring", "expired"]
AddOutcome = Literal["added", "present", "restored"]


class BadKeyFormat(ValueError):
    """Not `whsec_` + base64 of a key; the message never repeats the value."""


class UnknownKey(LookupError):
    """No stored key has that id or fingerprint."""


class KeyExpired(ValueError):
    """The key is past its grace period: it verifies nothing, and its secret is gone."""


def decode_secret(value: str) -> bytes:
    """The key bytes of `whsec_` + base64, as the Console shows it (padding optional, as the
    SDK allows). Stricter than the receiver's parser: the prefix is required."""
    text = value.strip()
    if not text.startswith(SECRET_PREFIX):
        raise BadKeyFormat(f"a signing key starts with {SECRET_PREFIX!r} followed by base64")
    raw = text[len(SECRET_PREFIX) :].rstrip("=")
    padded = raw + "=" * (-len(raw) % 4)
    if not raw or not _BASE64.fullmatch(padded):
        raise BadKeyFormat(f"a signing key is {SECRET_PREFIX!r} followed by base64")
    try:
        key = base64.b64decode(padded, validate=True)
    except (binascii.Error, ValueError):
        raise BadKeyFormat(f"a signing key is {SECRET_PREFIX!r} followed by base64") from None
    if len(key) < MIN_KEY_BYTES:
        raise BadKeyFormat(
            f"a signing key holds at least {MIN_KEY_BYTES} bytes (this one {len(key)}): "
            "was it copied whole?"
        )
    return key


def digest(key: bytes) -> str:
    return hashlib.sha256(key).hexdigest()


def fingerprint(key: bytes) -> str:
    """What identifies a key in listings, logs and metrics: safe to show, useless to forge."""
    return digest(key)[:FINGERPRINT_LENGTH]


def _normalised(key: bytes) -> str:
    return SECRET_PREFIX + base64.b64encode(key).decode()


@dataclass(frozen=True)
class KeyInfo:
    """A stored key as `idlehook keys list` shows it: no secret."""

    id: int
    fingerprint: str
    added_at: datetime
    retired_at: datetime | None
    expires_at: datetime | None  # retired keys verify until then

    def state(self, now: datetime) -> KeyState:
        if self.expires_at is None:
            return "live"
        return "retiring" if self.expires_at > now else "expired"

    def to_json(self, now: datetime) -> dict[str, Any]:
        def iso(value: datetime | None) -> str | None:
            return value.isoformat() if value is not None else None

        return {
            "id": self.id,
            "fingerprint": self.fingerprint,
            "source": "store",
            "state": self.state(now),
            "added_at": iso(self.added_at),
            "retired_at": iso(self.retired_at),
            "verifies_until": iso(self.expires_at),
        }


@dataclass(frozen=True)
class VerifyingKey:
    """A stored key a receiver should verify with now."""

    id: int
    fingerprint: str
    expires_at: datetime | None  # None: live; else retiring, verifying until then
    secret: bytes = field(repr=False)


_keys = SigningKeyRecord.__table__  # type: ignore[attr-defined]


def _info(row: Any) -> KeyInfo:
    return KeyInfo(
        row.id, row.digest[:FINGERPRINT_LENGTH], row.added_at, row.retired_at, row.expires_at
    )


def _by_digest(conn: Connection, key_digest: str) -> Any:
    return conn.execute(sa.select(_keys).where(_keys.c.digest == key_digest)).first()


def add(engine: Engine, secret: str, now: datetime) -> tuple[KeyInfo, AddOutcome]:
    """Store a key (BadKeyFormat if it is not one). Adding a key already live changes nothing;
    adding a retired one makes it live again (whoever adds a key wants it to verify)."""
    key = decode_secret(secret)
    key_digest = digest(key)
    live = {"secret": _normalised(key), "retired_at": None, "expires_at": None}
    try:
        with engine.begin() as conn:
            existing = _by_digest(conn, key_digest)
            if existing is not None and existing.expires_at is None:
                return _info(existing), "present"
            if existing is not None:
                conn.execute(_keys.update().where(_keys.c.id == existing.id).values(**live))
                outcome: AddOutcome = "restored"
            else:
                conn.execute(_keys.insert().values(digest=key_digest, added_at=now, **live))
                outcome = "added"
            return _info(_by_digest(conn, key_digest)), outcome
    except IntegrityError:
        # Another `keys add` of the same key won the race: it is stored all the same.
        with engine.connect() as conn:
            return _info(_by_digest(conn, key_digest)), "present"


def resolve(infos: Sequence[KeyInfo], ref: str) -> KeyInfo:
    """A key by its id (`3`) or its fingerprint (8 hex digits as listed, or more of the digest)."""
    text = ref.strip().lower()
    if len(text) >= FINGERPRINT_LENGTH and _HEX.fullmatch(text):
        found = [i for i in infos if i.fingerprint == text[:FINGERPRINT_LENGTH]]
        if len(found) == 1:
            return found[0]
    if text.isdigit():
        for info in infos:
            if info.id == int(text):
                return info
    # Echoed only when short: a secret pasted here by mistake must not reach a terminal log.
    shown = text if len(text) <= 2 * FINGERPRINT_LENGTH else text[:6] + "..."
    raise UnknownKey(f"no stored signing key has the id or fingerprint {shown!r}")


def retire(engine: Engine, ref: str, grace: timedelta, now: datetime) -> KeyInfo:
    """Stop verifying with a key once `grace` has passed (0: at once). Retiring a key already
    retiring sets its end anew, sooner or later; a key past its grace stays gone."""
    if grace < timedelta(0):
        raise ValueError("the grace period cannot be negative")
    with engine.begin() as conn:
        rows = conn.execute(sa.select(_keys).order_by(_keys.c.id)).all()
        target = resolve([_info(r) for r in rows], ref)
        if target.state(now) == "expired":
            raise KeyExpired(
                f"key {target.id} ({target.fingerprint}) no longer verifies; "
                "`idlehook keys add` it again to restore it"
            )
        conn.execute(
            _keys.update()
            .where(_keys.c.id == target.id)
            .values(retired_at=target.retired_at or now, expires_at=now + grace)
        )
        row = conn.execute(sa.select(_keys).where(_keys.c.id == target.id)).one()
        return _info(row)


def listing(engine: Engine) -> list[KeyInfo]:
    """Every stored key, oldest first, without secrets."""
    columns = [_keys.c.id, _keys.c.digest, _keys.c.added_at, _keys.c.retired_at, _keys.c.expires_at]
    with engine.connect() as conn:
        return [_info(r) for r in conn.execute(sa.select(*columns).order_by(_keys.c.id))]


def verifying(engine: Engine, now: datetime) -> list[VerifyingKey]:
    """The keys a receiver should verify with at `now`: live ones newest first (after a
    rotation the newest signs nearly everything, and keys are tried in order), then those
    still in their grace period."""
    query = (
        sa.select(_keys.c.id, _keys.c.digest, _keys.c.expires_at, _keys.c.secret)
        .where(_keys.c.secret.is_not(None))
        .where(sa.or_(_keys.c.expires_at.is_(None), _keys.c.expires_at > now))
        .order_by(_keys.c.expires_at.is_not(None), _keys.c.id.desc())
    )
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    out: list[VerifyingKey] = []
    for row in rows:
        try:
            secret = decode_secret(row.secret)
        except BadKeyFormat:
            continue  # only `add` writes here, and it validates; a row edited by hand is skipped
        out.append(VerifyingKey(row.id, row.digest[:FINGERPRINT_LENGTH], row.expires_at, secret))
    return out


def forget_expired(engine: Engine, now: datetime) -> int:
    """Erase the secrets of keys past their grace (the rows stay, as history): a key that can
    verify nothing has no reason to sit in the database. Run by `idlehook keys`, not receivers."""
    with engine.begin() as conn:
        result = conn.execute(
            _keys.update()
            .where(_keys.c.secret.is_not(None))
            .where(_keys.c.expires_at <= now)
            .values(secret=None)
        )
        return int(result.rowcount or 0)
