"""Secrets never reach the logs: the API key, the webhook signing key and the management token are
set to recognisable values, then the service handles a badly signed delivery, a login with the
token in the URL, a refused login, launches (one rejected) and the worker's plugin runs; a
second signing key is added, listed and retired with `idlehook keys` while it runs (a key kept
in the store, reloaded by the receiver, which the emulator then signs with), and a malformed
one is refused. Every byte written to stdout/stderr (JSON logs, uvicorn, the CLI's output,
anything) is searched for them."""

import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from idlehook import cli, logs
from store import signing_keys
from tests.support.servers import wait_for
from tests.web.stack import PATH, web_stack

API_KEY = "LOGTEST-api-key-7f3a9c51"
SIGNING_RAW = base64.b64encode(b"LOGTEST-signing-key-bytes-0042!!").decode()
SIGNING_KEY = "whsec_" + SIGNING_RAW
API_TOKEN = "LOGTEST-api-token-31c1e8"
STORED_RAW = base64.b64encode(b"LOGTEST-stored-key-bytes-0099!!!").decode()
STORED_KEY = "whsec_" + STORED_RAW
BAD_KEY = "whsec_LOGTEST-bad-key*" + STORED_RAW
SECRETS = [API_KEY, SIGNING_KEY, SIGNING_RAW, API_TOKEN, STORED_KEY, STORED_RAW, BAD_KEY]


@pytest.fixture
def json_logs() -> Iterator[None]:
    saved = logs.saved()
    # The level named: whatever ran before in this process may have left another one.
    logs.configure_logging(json=True, level="INFO", cache=False)
    try:
        yield
    finally:
        logs.restore(saved)


def test_secrets_never_appear_in_log_output(
    sqlite_url: str, tmp_path: Path, json_logs: None, capfd: pytest.CaptureFixture[str]
) -> None:
    overrides = {
        "api_key": API_KEY,
        "webhook_signing_keys": [SIGNING_KEY],
        "api_token": API_TOKEN,
    }
    config = tmp_path / "keys.toml"
    config.write_text(f'database_url = "{sqlite_url}"\n')
    with web_stack(sqlite_url, tmp_path, **overrides) as s:
        s.emulator.apply_config({"webhook_secrets": [SIGNING_KEY]})
        # A key kept in the store: added, listed, picked up by the receiver, then signing.
        keys = ["--config", str(config), "keys"]
        assert cli.main([*keys, "add", STORED_KEY]) == 0
        assert cli.main([*keys, "add", BAD_KEY]) == 2
        assert cli.main([*keys, "list"]) == 0
        assert cli.main([*keys, "list", "--json"]) == 0
        fingerprint = signing_keys.listing(s.svc.engine)[0].fingerprint
        wait_for(lambda: fingerprint in [k.label for k in s.svc.app.intake.keys.current])
        s.emulator.apply_config({"webhook_secrets": [STORED_KEY]})
        # A delivery signed with something else, and one with a mangled signature header.
        body = json.dumps({"type": "event", "id": "wevt_bad", "data": {"type": "x", "id": "y"}})
        for signature in ("v1,AAAA", f"v1,{SIGNING_RAW}", "garbage"):
            response = httpx.post(
                s.url + PATH,
                content=body,
                headers={
                    "webhook-id": "wevt_bad",
                    "webhook-timestamp": str(int(time.time())),
                    "webhook-signature": signature,
                    "content-type": "application/json",
                },
            )
            assert response.status_code in (400, 401)

        with httpx.Client(base_url=s.url, timeout=30, follow_redirects=True) as browser:
            assert browser.post("/login", data={"token": API_TOKEN + "x"}).status_code == 401
            assert browser.get("/", params={"token": API_TOKEN}).status_code == 200

        rejected = httpx.post(
            s.url + "/sessions",
            headers={"authorization": f"Bearer {API_TOKEN}"},
            json={"agent": "agent_missing", "environment": "env_missing", "message": "hi"},
            timeout=30,
        )
        assert rejected.status_code == 400
        s.launch("end_turn", 2)
        s.settle(archived=2)
        wait_for(lambda: s.succeeded("log") >= 2, timeout=30)
        assert cli.main([*keys, "retire", fingerprint, "--grace", "0s", "--force"]) == 0
        wait_for(lambda: fingerprint not in [k.label for k in s.svc.app.intake.keys.current])

    out, err = capfd.readouterr()
    captured = out + err
    lines = [line for line in captured.splitlines() if line.startswith("{")]
    events = [json.loads(line) for line in lines]
    names = {e.get("event") for e in events}
    # The capture did see the paths under test, in JSON.
    assert "http.request" in names
    assert any("request_id" in e for e in events if e.get("event") == "http.request")
    assert any("signature" in str(e).lower() for e in events), sorted(map(str, names))
    assert any(e.get("session_id") for e in events)
    assert "webhook_keys.changed" in names
    for secret in SECRETS:
        assert secret not in captured, f"{secret[:12]}... leaked into the logs"
