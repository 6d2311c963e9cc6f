"""`POST /sessions` and `GET /sessions` on a real server, launching into the emulator."""

import httpx
import pytest
from pydantic import SecretStr
from starlette.applications import Starlette

from console.sessions_api import sessions_routes
from tests.sessions.test_launch_helpers import launcher_for, world
from tests.support.servers import serve

TOKEN = "t0ken-for-tests"
AUTH = {"authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def api(sqlite_url: str):
    with world() as w, launcher_for(w, sqlite_url, owner="api") as launcher:
        app = Starlette(routes=sessions_routes(launcher, SecretStr(TOKEN), wait_seconds=30))
        with serve(app) as url:
            yield w, url


def body(w, **extra):
    return {"agent": w.agent_id, "environment": w.limited_env, "message": "from a hook", **extra}


@pytest.mark.parametrize(
    "headers",
    [{}, {"authorization": "Bearer wrong"}, {"authorization": TOKEN}, {"x-api-key": TOKEN}],
)
def test_a_launch_needs_the_token(api, headers) -> None:
    w, url = api
    response = httpx.post(f"{url}/sessions", json=body(w), headers=headers)
    assert response.status_code == 401
    assert httpx.get(f"{url}/sessions", headers=headers).status_code == 401
    assert w.session_creates() == 0


def test_a_launch_answers_201_with_the_session(api) -> None:
    w, url = api
    response = httpx.post(
        f"{url}/sessions", json=body(w, route="hooks", idempotency_key="evt-1"), headers=AUTH
    )
    assert response.status_code == 201
    created = response.json()
    assert created["session_id"].startswith("sesn_")
    assert created["state"] == "created"
    assert created["warnings"] == []
    assert w.open_streams() == 0
    # The integration retries its hook: same key, same session.
    again = httpx.post(
        f"{url}/sessions", json=body(w, route="hooks", idempotency_key="evt-1"), headers=AUTH
    )
    assert again.status_code == 201
    assert again.json()["session_id"] == created["session_id"]
    assert w.session_creates() == 1

    listed = httpx.get(f"{url}/sessions", headers=AUTH).json()["data"]
    assert [s["id"] for s in listed] == [created["session_id"]]
    assert listed[0]["route"] == "hooks"


def test_queue_answers_202(api) -> None:
    w, url = api
    response = httpx.post(f"{url}/sessions", json=body(w, queue=True), headers=AUTH)
    assert response.status_code == 202
    assert response.json()["state"] == "queued"
    assert w.session_creates() == 0


def test_unrestricted_environment_is_reported_in_warnings(api) -> None:
    w, url = api
    response = httpx.post(f"{url}/sessions", json=body(w, environment=w.open_env), headers=AUTH)
    assert response.status_code == 201
    assert "unrestricted networking" in response.json()["warnings"][0]
    strict = httpx.post(
        f"{url}/sessions", json=body(w, environment=w.open_env, strict=True), headers=AUTH
    )
    assert strict.status_code == 400
    assert "refusing to launch" in strict.json()["message"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"metadata": {"k" * 70: "v"}}, "is 70 characters; at most 64"),
        ({"deadline": "later"}, "bad duration 'later'"),
        ({"agent": "not an agent"}, "bad agent"),
        ({"agent": "agent_gone"}, "unknown agent agent_gone"),
        ({"files": ["/etc/passwd"]}, "not a file id"),
        ({"queue": "yes"}, "queue: must be true or false"),
        ({"surprise": 1}, "surprise: unknown field"),
        ({"message": None}, "message"),
    ],
)
def test_bad_input_is_a_400_with_a_clear_message(api, change, message) -> None:
    w, url = api
    response = httpx.post(f"{url}/sessions", json=body(w, **change), headers=AUTH)
    assert response.status_code == 400
    assert message in response.json()["message"]
    assert w.session_creates() == 0


@pytest.mark.parametrize("raw", [b"not json", b"[1, 2]", b""])
def test_a_body_that_is_not_an_object_is_a_400(api, raw) -> None:
    _, url = api
    response = httpx.post(f"{url}/sessions", content=raw, headers=AUTH)
    assert response.status_code == 400
