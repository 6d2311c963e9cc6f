"""The log processor masks secrets by key and by shape, nested too, and leaves ordinary keys
(an idempotency key, a session id) readable."""

from handlers.redact import REDACTED, redact_secrets


def test_secret_keys_are_masked_wherever_they_sit() -> None:
    event = {
        "event": "archive.opened",
        "api_key": "abc",
        "storage_options": {"key": "AKIAEXAMPLE", "secret": "s3cr3t", "endpoint_url": "http://x"},
        "aws_access_key_id": "AKIAEXAMPLE",
        "credentials": {"private_key": "-----BEGIN"},
        "idempotency_key": "batch-7",
        "session_id": "sesn_1",
    }
    out = redact_secrets(None, "info", event)
    assert out["api_key"] == REDACTED
    assert out["storage_options"] == {
        "key": REDACTED,
        "secret": REDACTED,
        "endpoint_url": "http://x",
    }
    assert out["aws_access_key_id"] == REDACTED
    assert out["credentials"] == REDACTED
    assert out["idempotency_key"] == "batch-7"
    assert out["session_id"] == "sesn_1"


def test_secret_shaped_values_are_masked_inside_text() -> None:
    out = redact_secrets(None, "info", {"error": "bad key whsec_abcdefghijkl, Bearer t0k3n"})
    assert "whsec_abcdefghijkl" not in out["error"]
    assert "t0k3n" not in out["error"]
    assert out["error"].startswith("bad key ")
