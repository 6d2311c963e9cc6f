"""Hostile input over real HTTP: whatever arrives at the webhook path, the answer is a 4xx (or a
2xx for a genuinely signed event), never a 5xx, and nothing unsigned is ever stored as work.

The pure verify/parse fuzzing lives in tests/receiver/test_fuzz.py; this drives the whole
service (`wiring.service`) through a real socket, as an attacker would.
"""

import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from standardwebhooks import Webhook

from idlehook import wiring
from idlehook.settings import Settings
from tests.reliability.support import (
    OTHER_SECRET,
    PATH,
    SECRET,
    TOKEN,
    StoreView,
    event,
    sign_bytes,
    signed,
)
from tests.support.servers import serve

UNKNOWN_SECRET = "whsec_" + "QUJD" * 11  # valid base64, not configured


@dataclass
class Edge:
    url: str
    http: httpx.Client
    store: StoreView

    def post(self, body: bytes, headers: dict[str, str]) -> int:
        return self.http.post(PATH, content=body, headers=headers).status_code


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    tmp = tmp_path_factory.mktemp("hostile")
    url = f"sqlite:///{tmp / 'idlehook.db'}"
    cfg = Settings(
        database_url=url,
        results_dir=tmp / "results",
        api_key="k",
        base_url="http://127.0.0.1:9",
        # Two keys: a rotation in progress.
        webhook_signing_keys=[SECRET, OTHER_SECRET],
        api_token=TOKEN,
    )
    svc = wiring.service(cfg, run_worker=False)
    store = StoreView(url)
    try:
        with serve(svc.app) as base, httpx.Client(base_url=base, timeout=30) as http:
            yield Edge(base, http, store)
    finally:
        store.close()
        svc.engine.dispose()


# Outer whitespace is stripped: h11 refuses to even send it, so it cannot reach the server.
header_values = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=200).map(
    str.strip
) | st.sampled_from(["", "v1,", "v1,AAAA", "v1," + "A" * 44, "1" * 30, "-1", "v2,x v1,y"])


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    body=st.binary(max_size=400)
    | st.text(max_size=200).map(lambda t: t.encode())
    | st.builds(lambda sid: json.dumps(event("wevt_h", sid)).encode(), st.text(max_size=30)),
    headers=st.dictionaries(
        st.sampled_from(["webhook-id", "webhook-timestamp", "webhook-signature", "content-type"]),
        header_values,
    ),
)
def test_random_headers_and_bodies_are_refused_with_a_4xx(
    edge: Edge, body: bytes, headers: dict[str, str]
) -> None:
    status = edge.post(body, headers)
    assert 400 <= status < 500, status
    assert not edge.store.deliveries()


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(text=st.text(max_size=120), msg_id=st.text(min_size=1, max_size=60))
def test_unicode_anywhere_is_refused_not_crashed(edge: Edge, text: str, msg_id: str) -> None:
    body = json.dumps({"type": "event", "id": text, "data": {"type": text, "id": text}}).encode()
    # httpx sends header values as ASCII/latin-1; anything else cannot even leave the client.
    safe_id = msg_id.encode("latin-1", "replace").decode("latin-1")
    _, headers = signed(body, secret=UNKNOWN_SECRET, msg_id="x")
    headers["webhook-id"] = safe_id
    try:
        status = edge.post(body, headers)
    except (UnicodeEncodeError, httpx.LocalProtocolError):
        return
    assert 400 <= status < 500
    assert not edge.store.deliveries()


def test_signed_but_hostile_bodies_are_400_and_not_stored(edge: Edge) -> None:
    bombs = {
        "deep_list": b"[" * 100_000 + b"]" * 100_000,
        "deep_object": b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
        "deep_in_data": (
            b'{"type":"event","id":"wevt_d","created_at":"2026-11-25T00:00:00Z","data":'
            + b"[" * 60_000
            + b"]" * 60_000
            + b"}"
        ),
        "not_utf8": b'{"type":"event","id":"\xff\xfe"}',
        "nan": b'{"type":"event","id":NaN}',
        "huge_number": b'{"type":"event","id":1' + b"0" * 5000 + b"}",
        "empty": b"",
    }
    for name, body in bombs.items():
        _, headers = signed(body, msg_id=f"msg_{name}")
        status = edge.post(body, headers)
        assert status in (400, 413), (name, status)
    assert not edge.store.deliveries()


def test_forged_replayed_and_truncated_deliveries_are_refused(edge: Edge) -> None:
    genuine = event("wevt_forgery_probe", "sesn_f")
    body, headers = signed(genuine)
    cases: dict[str, tuple[bytes, dict[str, str]]] = {
        "wrong_secret": signed(genuine, secret=UNKNOWN_SECRET),
        "replayed_old": signed(genuine, at=datetime.now(UTC) - timedelta(hours=1)),
        "from_the_future": signed(genuine, at=datetime.now(UTC) + timedelta(hours=1)),
        "truncated_body": (body[:-7], headers),
        "body_swapped": (json.dumps(event("wevt_other", "sesn_f")).encode(), headers),
        "id_swapped": (body, {**headers, "webhook-id": "wevt_other"}),
        "no_signature": (body, {k: v for k, v in headers.items() if k != "webhook-signature"}),
        "huge_signature": (body, {**headers, "webhook-signature": "v1," + "A" * 6000}),
    }
    for name, (b, h) in cases.items():
        status = edge.post(b, h)
        assert status in (400, 401, 413, 431), (name, status)
    assert not edge.store.deliveries()


def test_oversized_headers_and_bodies_never_reach_the_store(edge: Edge) -> None:
    body, headers = signed(event("wevt_big", "sesn_b"))
    try:
        status = edge.post(body, {**headers, "x-padding": "p" * 200_000})
        assert status < 500
    except httpx.RemoteProtocolError:
        pass  # the server closed the connection on the header flood: also a refusal
    big = json.dumps({**event("wevt_big2", "sesn_b"), "pad": "x" * 400_000}).encode()
    b, h = signed(big)
    assert edge.post(b, h) == 413
    assert not edge.store.deliveries()


def test_a_client_that_hangs_up_mid_body_stores_nothing(edge: Edge) -> None:
    body, headers = signed(event("wevt_cut", "sesn_c"))
    host, port = edge.url.removeprefix("http://").split(":")
    lines = [f"POST {PATH} HTTP/1.1", f"host: {host}", f"content-length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    raw = ("\r\n".join(lines) + "\r\n\r\n").encode() + body[: len(body) // 2]
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(raw)
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(5)
        try:
            answer = sock.recv(1024)
        except TimeoutError:
            answer = b""
    assert not answer.startswith(b"HTTP/1.1 2")
    assert not answer.startswith(b"HTTP/1.1 5")
    assert not edge.store.deliveries()


def test_either_secret_in_rotation_is_accepted_and_a_replay_is_only_a_duplicate(
    edge: Edge, tmp_path: Path
) -> None:
    first = event("wevt_rotation_new", "sesn_r")
    second = event("wevt_rotation_old", "sesn_r")
    assert edge.post(*signed(first, secret=SECRET)) == 204
    assert edge.post(*signed(second, secret=OTHER_SECRET)) == 204
    # The same genuine delivery replayed within the tolerance: acknowledged, not new work.
    assert edge.post(*signed(first, secret=SECRET)) == 204
    rows = {d.event_id: d for d in edge.store.deliveries()}
    assert set(rows) == {"wevt_rotation_new", "wevt_rotation_old"}
    assert rows["wevt_rotation_new"].duplicates == 1
    assert rows["wevt_rotation_new"].secret_index == 0
    assert rows["wevt_rotation_old"].secret_index == 1
    assert len(edge.store.runs()) == 2
    with edge.store.engine.begin() as conn:  # leave the module's store empty again
        conn.exec_driver_sql("DELETE FROM handler_runs")
        conn.exec_driver_sql("DELETE FROM deliveries")


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Bearer",
        "Bearer wrong",
        f"Basic {TOKEN}",
        f"Bearer {TOKEN}x",
        f"Bearer {TOKEN[:-1]}",
        "Bearer \u00e9\u00e9",
        f"bearer  {TOKEN}0",
    ],
)
@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/sessions"), ("GET", "/sessions"), ("GET", "/approvals")],
)
def test_management_endpoints_reject_missing_or_wrong_tokens(
    edge: Edge, authorization: str | None, method: str, path: str
) -> None:
    headers = {} if authorization is None else {"authorization": authorization}
    try:
        response = edge.http.request(
            method, path, headers=headers, json={"agent": "a", "environment": "e"}
        )
    except UnicodeEncodeError:
        return
    if response.status_code == 404:
        pytest.skip(f"{path} not mounted in this build")
    assert response.status_code in (401, 403), (authorization, response.status_code)


def test_the_test_signer_matches_the_standardwebhooks_library() -> None:
    at = datetime(2026, 11, 25, tzinfo=UTC)
    assert sign_bytes(SECRET, "m", at, b"{}") == Webhook(SECRET).sign("m", at, "{}")
