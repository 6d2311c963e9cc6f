"""The session an API call is about, read from its path (a span attribute under `[tracing]`)."""

from sessions.paced_transport import session_in_path


def test_the_session_is_read_from_the_path() -> None:
    assert session_in_path("/v1/sessions/sesn_1/events") == "sesn_1"
    assert session_in_path("/v1/sessions/sesn_1") == "sesn_1"
    assert session_in_path("/gateway/v1/sessions/sesn_2/events?limit=5") == "sesn_2"
    assert session_in_path("/v1/sessions") is None
    assert session_in_path("/v1/sessions/") is None
    assert session_in_path("/v1/agents/agent_1") is None
    assert session_in_path("/healthz") is None
