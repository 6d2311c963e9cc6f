"""The signature check alone: pure, clock injected, every failure a BadSignature with a reason."""

import base64
from datetime import UTC, datetime, timedelta

import pytest
from standardwebhooks import Webhook

from receiver.errors import BadSignature
from receiver.verify import SigningKey, verify
from tests.receiver.conftest import KEY_A, KEY_B, sign

VECTOR_KEY = "whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
VECTOR_SIG = "v1,Vlhkfbhjiks1Vp2w7y9M3ISBH1WuXOYdO8+KB6i4iSA="
T0 = datetime.fromtimestamp(1700000000, tz=UTC)
KEYS = [SigningKey.parse(0, KEY_A), SigningKey.parse(1, KEY_B)]


def headers(sig: str, msg_id: str = "msg_test", ts: int = 1700000000) -> dict[str, str]:
    return {"webhook-id": msg_id, "webhook-timestamp": str(ts), "webhook-signature": sig}


def test_published_test_vector() -> None:
    key = SigningKey.parse(0, VECTOR_KEY)
    got = verify(b'{"a":1}', headers(VECTOR_SIG), [key], now=T0)
    assert (got.webhook_id, got.key_index, got.timestamp) == ("msg_test", 0, 1700000000)


def test_matches_the_standardwebhooks_signer() -> None:
    body = '{"type":"event"}'
    sig = Webhook(KEY_B).sign("msg_x", T0, body)
    assert verify(body.encode(), headers(sig, "msg_x"), KEYS, now=T0).key_index == 1


def test_either_key_verifies_during_rotation_and_reports_which() -> None:
    body = b"{}"
    for index, secret in enumerate([KEY_A, KEY_B]):
        sig = sign(secret, "m", 1700000000, body)
        assert verify(body, headers(sig, "m"), KEYS, now=T0).key_index == index


def test_any_v1_entry_may_match_and_other_versions_are_skipped() -> None:
    good = sign(KEY_A, "m", 1700000000, b"{}")
    bogus = "v1," + base64.b64encode(b"x" * 32).decode()
    sig = f"v2,abc {bogus} {good}"
    assert verify(b"{}", headers(sig, "m"), KEYS, now=T0).key_index == 0


def test_key_without_padding_or_prefix_is_accepted() -> None:
    bare = VECTOR_KEY.removeprefix("whsec_").rstrip("=")
    key = SigningKey.parse(0, bare)
    assert verify(b'{"a":1}', headers(VECTOR_SIG), [key], now=T0).key_index == 0


def test_key_repr_hides_the_secret() -> None:
    assert "QUFB" not in repr(KEYS[0])
    assert "AAAA" not in repr(KEYS[0])


def test_bad_key_is_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="#3"):
        SigningKey.parse(3, "whsec_not base64!")


@pytest.mark.parametrize(
    ("hdrs", "now", "reason"),
    [
        ({}, T0, "missing_signature_headers"),
        (headers(VECTOR_SIG) | {"webhook-id": ""}, T0, "missing_signature_headers"),
        (headers("garbage"), T0, "malformed_signature"),
        (headers("v1"), T0, "malformed_signature"),
        (headers("v1,@@@not-base64@@@"), T0, "malformed_signature"),
        (headers("v2,abc"), T0, "malformed_signature"),
        (headers("v1," + "A" * 5000), T0, "malformed_signature"),
        (headers(VECTOR_SIG) | {"webhook-timestamp": "soon"}, T0, "malformed_timestamp"),
        (headers(VECTOR_SIG) | {"webhook-timestamp": "1e9"}, T0, "malformed_timestamp"),
        (headers(VECTOR_SIG) | {"webhook-timestamp": "9" * 40}, T0, "malformed_timestamp"),
        (headers(VECTOR_SIG) | {"webhook-id": "a\x00b"}, T0, "malformed_webhook_id"),
        (headers(VECTOR_SIG) | {"webhook-timestamp": "9" * 12}, T0, "future_timestamp"),
        (headers(VECTOR_SIG) | {"webhook-timestamp": "0"}, T0, "stale_timestamp"),
        (headers(VECTOR_SIG), T0 + timedelta(minutes=5, seconds=1), "stale_timestamp"),
        (headers(VECTOR_SIG), T0 - timedelta(minutes=5, seconds=1), "future_timestamp"),
        (headers(VECTOR_SIG), T0, "no_matching_signature"),  # signed with another key
    ],
)
def test_refusals(hdrs: dict[str, str], now: datetime, reason: str) -> None:
    with pytest.raises(BadSignature) as info:
        verify(b'{"a":1}', hdrs, KEYS, now=now)
    assert info.value.reason == reason


def test_tolerance_edges_are_inclusive() -> None:
    key = SigningKey.parse(0, VECTOR_KEY)
    for skew in (timedelta(minutes=5), -timedelta(minutes=5)):
        assert verify(b'{"a":1}', headers(VECTOR_SIG), [key], now=T0 + skew).key_index == 0


def test_body_is_signed_as_raw_bytes() -> None:
    body = b'{"a": 1}'  # re-serialised differently from what was signed
    key = SigningKey.parse(0, VECTOR_KEY)
    with pytest.raises(BadSignature):
        verify(body, headers(VECTOR_SIG), [key], now=T0)


def test_no_keys_configured_refuses_everything() -> None:
    with pytest.raises(BadSignature) as info:
        verify(b'{"a":1}', headers(VECTOR_SIG), [], now=T0)
    assert info.value.reason == "no_signing_keys"
