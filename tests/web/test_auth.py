"""Who gets the page and the management API: bearer header, the page cookie (never the token
itself), the CSRF header on cookie writes, and 503 when no token is configured. Real HTTP on
loopback against the app `wiring.service` builds."""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from console import auth
from idlehook import wiring
from idlehook.settings import Settings
from tests.support.servers import serve

TOKEN = "auth-test-token-9f8e7d"


@contextmanager
def receiver(sqlite_url: str, tmp_path: Path, token: str | None = TOKEN) -> Iterator[str]:
    settings = Settings(
        database_url=sqlite_url,
        results_dir=tmp_path / "results",
        api_key="k",
        base_url="http://127.0.0.1:9",  # never called: no worker, no launches here
        api_token=token,
    )
    svc = wiring.service(settings, run_worker=False)
    try:
        with serve(svc.app) as url:
            yield url
    finally:
        svc.engine.dispose()


@pytest.fixture
def url(sqlite_url: str, tmp_path: Path) -> Iterator[str]:
    with receiver(sqlite_url, tmp_path) as base:
        yield base


def client(base: str) -> httpx.Client:
    return httpx.Client(base_url=base, follow_redirects=False, timeout=10)


def test_no_token_configured_means_503_never_open(sqlite_url: str, tmp_path: Path) -> None:
    with receiver(sqlite_url, tmp_path, token=None) as base, client(base) as http:
        for method, path in [("GET", "/"), ("GET", "/login"), ("POST", "/login")]:
            response = http.request(method, path, data={"token": ""})
            assert response.status_code == 503
            assert "IDLEHOOK_API_TOKEN" in response.text
        assert http.get("/", headers={"authorization": "Bearer x"}).status_code == 503
        assert http.get("/sessions", headers={"authorization": "Bearer x"}).status_code == 401


def test_anonymous_browser_is_sent_to_the_login_form(url: str) -> None:
    with client(url) as http:
        response = http.get("/")
        assert response.status_code == 303
        assert response.headers["location"] == "/login"
        form = http.get("/login")
        assert form.status_code == 200
        assert 'name="token"' in form.text
        assert "default-src 'none'" in form.headers["content-security-policy"]


def test_bearer_header_opens_the_page_and_a_wrong_one_does_not(url: str) -> None:
    with client(url) as http:
        ok = http.get("/", headers={"authorization": f"Bearer {TOKEN}"})
        assert ok.status_code == 200
        assert "Sessions" in ok.text
        assert 'id="chart"' in ok.text
        assert ok.headers["cache-control"] == "no-store"
        wrong = http.get("/", headers={"authorization": f"Bearer {TOKEN}x"})
        assert wrong.status_code == 401
        assert "Sessions" not in wrong.text


def test_login_form_sets_an_httponly_strict_cookie_holding_an_hmac(url: str) -> None:
    with client(url) as http:
        refused = http.post("/login", data={"token": "nope"})
        assert refused.status_code == 401
        assert "set-cookie" not in refused.headers

        response = http.post("/login", data={"token": TOKEN})
        assert response.status_code == 303
        assert response.headers["location"] == "/"
        cookie = response.headers["set-cookie"]
        assert cookie.startswith(f"{auth.COOKIE_NAME}=")
        assert "HttpOnly" in cookie
        assert "SameSite=strict" in cookie
        assert "Path=/" in cookie
        assert TOKEN not in cookie
        value = http.cookies[auth.COOKIE_NAME]
        assert value == auth.cookie_value(SecretStr(TOKEN))

        page = http.get("/")
        assert page.status_code == 200
        assert "Sessions" in page.text


def test_token_in_the_query_is_taken_once_and_redirected_away(url: str) -> None:
    with client(url) as http:
        assert http.get("/", params={"token": "wrong"}).status_code == 401
        response = http.get("/", params={"token": TOKEN})
        assert response.status_code == 303
        assert response.headers["location"] == "/"
        assert response.headers["referrer-policy"] == "no-referrer"
        assert http.get("/").status_code == 200


def test_a_forged_or_stale_cookie_is_refused(url: str) -> None:
    with client(url) as http:
        http.cookies.set(auth.COOKIE_NAME, TOKEN)  # the raw token is not the cookie
        assert http.get("/").status_code == 303
        stale = auth.cookie_value(SecretStr("the-previous-token"))
        http.cookies.set(auth.COOKIE_NAME, stale)
        assert http.get("/").status_code == 303


def test_cookie_writes_need_the_csrf_header_bearer_writes_do_not(url: str) -> None:
    with client(url) as http:
        http.cookies.set(auth.COOKIE_NAME, auth.cookie_value(SecretStr(TOKEN)))
        # GET with the cookie alone is fine (a page load).
        assert http.get("/sessions").status_code == 200
        # A write with the cookie alone could come from a foreign page's form: refused.
        assert http.post("/sessions", content=b"{}").status_code == 401
        # With the header (only same-origin script can add it) it reaches validation.
        with_header = http.post("/sessions", content=b"{}", headers={auth.CSRF_HEADER: "1"})
        assert with_header.status_code == 400
    with client(url) as http:
        bearer = http.post("/sessions", content=b"{}", headers={"authorization": f"Bearer {TOKEN}"})
        assert bearer.status_code == 400


def test_every_management_response_carries_a_request_id(url: str) -> None:
    with client(url) as http:
        made = http.get("/healthz")
        assert made.headers["x-request-id"].startswith("req_")
        kept = http.get("/healthz", headers={"x-request-id": "proxy-abc-12345"})
        assert kept.headers["x-request-id"] == "proxy-abc-12345"
        odd = http.get("/healthz", headers={"x-request-id": "bad id\twith spaces"})
        assert odd.headers["x-request-id"].startswith("req_")


def test_auth_helpers_refuse_everything_without_a_token() -> None:
    assert not auth.configured(None)
    assert not auth.configured(SecretStr(""))
    assert not auth.token_matches("", SecretStr("t"))
    assert not auth.token_matches("t", None)
    assert auth.token_matches(" t ", SecretStr("t"))
    assert auth.cookie_value(SecretStr("a")) != auth.cookie_value(SecretStr("b"))
