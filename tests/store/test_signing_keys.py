"""Signing keys kept in the store (store/signing_keys.py), on SQLite and PostgreSQL."""

import base64
import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from store import signing_keys
from store.engine import make_engine

T0 = datetime(2026, 12, 10, 12, 0, tzinfo=UTC)
RAW_OLD = b"O" * 32
RAW_NEW = b"N" * 32
OLD = "whsec_" + base64.b64encode(RAW_OLD).decode()
NEW = "whsec_" + base64.b64encode(RAW_NEW).decode()


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = make_engine(db_url, pool_size=2)
    yield engine
    engine.dispose()


def secrets_in_table(engine: Engine) -> list[str | None]:
    with engine.connect() as conn:
        return list(conn.execute(sa.text("SELECT secret FROM signing_keys ORDER BY id")).scalars())


def test_a_key_is_added_once_and_listed_by_fingerprint_never_by_secret(engine: Engine) -> None:
    info, outcome = signing_keys.add(engine, OLD, T0)
    assert outcome == "added"
    assert info.fingerprint == hashlib.sha256(RAW_OLD).hexdigest()[:8]
    # Missing padding and surrounding whitespace are the same key.
    again, outcome = signing_keys.add(engine, "  " + OLD.rstrip("=") + "\n", T0 + timedelta(1))
    assert (again, outcome) == (info, "present")
    [listed] = signing_keys.listing(engine)
    assert listed == info
    assert listed.state(T0) == "live"
    assert RAW_OLD.decode() not in repr(listed)
    assert OLD not in str(listed.to_json(T0))
    [verifying] = signing_keys.verifying(engine, T0)
    assert (verifying.id, verifying.secret, verifying.expires_at) == (info.id, RAW_OLD, None)
    assert "OOOO" not in repr(verifying)


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "whsec_",
        base64.b64encode(RAW_OLD).decode(),  # the prefix is required here
        "whsec_not base64!",
        "whsec_" + base64.b64encode(b"short").decode(),
        "whsec_" + base64.b64encode(RAW_OLD).decode() + "==x",
    ],
)
def test_anything_but_whsec_and_base64_is_refused_without_repeating_it(
    engine: Engine, bad: str
) -> None:
    with pytest.raises(signing_keys.BadKeyFormat) as info:
        signing_keys.add(engine, bad, T0)
    if len(bad) > len("whsec_"):
        assert bad not in str(info.value)
    assert signing_keys.listing(engine) == []


def test_live_keys_come_newest_first_then_those_in_their_grace(engine: Engine) -> None:
    old, _ = signing_keys.add(engine, OLD, T0)
    new, _ = signing_keys.add(engine, NEW, T0 + timedelta(minutes=1))
    third, _ = signing_keys.add(engine, "whsec_" + base64.b64encode(b"3" * 32).decode(), T0)
    signing_keys.retire(engine, str(old.id), timedelta(hours=1), T0)
    order = [k.id for k in signing_keys.verifying(engine, T0 + timedelta(minutes=5))]
    assert order == [third.id, new.id, old.id]


def test_a_retired_key_verifies_through_its_grace_and_not_after(engine: Engine) -> None:
    old, _ = signing_keys.add(engine, OLD, T0)
    signing_keys.add(engine, NEW, T0)
    retired = signing_keys.retire(engine, old.fingerprint, timedelta(hours=24), T0)
    assert (retired.retired_at, retired.expires_at) == (T0, T0 + timedelta(hours=24))
    assert retired.state(T0 + timedelta(hours=23)) == "retiring"
    inside = {k.id for k in signing_keys.verifying(engine, T0 + timedelta(hours=23, minutes=59))}
    assert old.id in inside
    after = T0 + timedelta(hours=24)
    assert old.id not in {k.id for k in signing_keys.verifying(engine, after)}
    assert retired.state(after) == "expired"
    # Once it can verify nothing, its secret is erased; the row stays as history.
    assert signing_keys.forget_expired(engine, after) == 1
    assert secrets_in_table(engine)[0] is None
    assert [k.id for k in signing_keys.listing(engine)] == [old.id, old.id + 1]
    with pytest.raises(signing_keys.KeyExpired):
        signing_keys.retire(engine, str(old.id), timedelta(0), after)


def test_retiring_again_moves_the_end_and_re_adding_restores(engine: Engine) -> None:
    old, _ = signing_keys.add(engine, OLD, T0)
    signing_keys.retire(engine, str(old.id), timedelta(days=7), T0)
    sooner = signing_keys.retire(engine, str(old.id), timedelta(0), T0 + timedelta(hours=1))
    assert sooner.retired_at == T0  # when it was first retired
    assert sooner.expires_at == T0 + timedelta(hours=1)
    signing_keys.forget_expired(engine, T0 + timedelta(hours=2))
    restored, outcome = signing_keys.add(engine, OLD, T0 + timedelta(hours=3))
    assert outcome == "restored"
    assert (restored.id, restored.retired_at, restored.expires_at) == (old.id, None, None)
    assert secrets_in_table(engine) == [OLD]


def test_keys_are_found_by_id_or_fingerprint_only(engine: Engine) -> None:
    old, _ = signing_keys.add(engine, OLD, T0)
    infos = signing_keys.listing(engine)
    assert signing_keys.resolve(infos, str(old.id)) == old
    assert signing_keys.resolve(infos, old.fingerprint.upper()) == old
    full = hashlib.sha256(RAW_OLD).hexdigest()
    assert signing_keys.resolve(infos, full) == old
    for ref in ("999", old.fingerprint[:6], "zzzzzzzz", OLD):
        with pytest.raises(signing_keys.UnknownKey) as info:
            signing_keys.resolve(infos, ref)
        assert base64.b64encode(RAW_OLD).decode()[:12] not in str(info.value)
