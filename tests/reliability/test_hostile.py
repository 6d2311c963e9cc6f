"""Hostile input over real HTTP: whatever arrives at the webhook path, the answer is a 4xx (or a
2xx for a genuinely signed event), never a 5xx, and nothing unsigned is ever stored as work.

The pure verify/parse fuzzing lives in tests/receiver/test_fuzz.py; this drives the whole
service (`wiring.service`) through a real socket, as an attacker would, on the server
configuration `idlehook serve` runs (`receiver.server.uvicorn_config`). The last tests run
`idlehook serve` itself against clients that hold connections instead of finishing a request:
a slowloris, a 64 MB header, 1,100 silent connections.
"""

import contextlib
import json
import math
import resource
import selectors
import socket
import subprocess
import sys
import threading
import time
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
from receiver import server
from receiver.http_guard import HttpLimits
from tests.reliability.support import (
    OTHER_SECRET,
    PATH,
    REPO,
    SECRET,
    TOKEN,
    Proc,
    StoreView,
    base_env,
    event,
    free_port,
    processes,
    rss_kib,
    sign_bytes,
    signed,
    wait_ready,
)
from tests.support.servers import serve_config, wait_for

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
    # The server configuration `idlehook serve` runs, guards included.
    config = server.uvicorn_config(
        svc.app, HttpLimits.from_settings(cfg.http), host="127.0.0.1", port=0
    )
    try:
        with serve_config(config) as base, httpx.Client(base_url=base, timeout=30) as http:
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


def test_signed_but_hostile_bodies_are_kept_raw_and_never_routed(edge: Edge) -> None:
    """Signed means Anthropic's: a 4xx would count towards the endpoint being disabled, so even
    a bomb is answered 2xx and kept raw (unrecognised_deliveries), never a delivery or work."""
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
    cap = 256 * 1024  # max_body_bytes: over it, 413 before the signature is even read
    for name, body in bombs.items():
        _, headers = signed(body, msg_id=f"msg_{name}")
        answer = edge.http.post(PATH, content=body, headers=headers)
        if len(body) > cap:
            assert answer.status_code == 413, name
            continue
        assert answer.status_code == 204, (name, answer.status_code)
        assert answer.headers["idlehook-outcome"] == "unrecognised", name
    assert not edge.store.deliveries()
    assert not edge.store.runs()
    with edge.store.engine.connect() as conn:
        query = "SELECT message_id, length(body) FROM unrecognised_deliveries"
        kept = {str(m): int(n) for m, n in conn.exec_driver_sql(query)}
    assert kept == {f"msg_{n}": len(b) for n, b in bombs.items() if len(b) <= cap}


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


# -- Clients that hold the receiver: `idlehook serve` itself, as a process ---------------------
#
# Started with a soft open-file limit of 512 under a hard one of 1,024 (the common default), so
# serve must raise it and keep its connection cap under it (1,024 - 256 reserved = 768); timeouts
# short so each test stays short. Before receiver/http_guard.py (docs/reliability.md): dripping
# connections were never cut, 1,100 silent ones made /healthz and deliveries fail while held,
# and a 64 MB header froze the loop for 2.6-2.8 s (RSS +131 MB).

HEADER_TIMEOUT = 2.0
TICK = HttpLimits(header_timeout=HEADER_TIMEOUT, body_timeout=HEADER_TIMEOUT).tick
OPEN_FILES = (512, 1024)
CAP = OPEN_FILES[1] - server.RESERVED_FILES
DRIP = b"POST " + PATH.encode() + b" HTTP/1.1\r\nhost: hostile\r\nx-drip: " + b"d" * 4096


@dataclass
class Served:
    proc: Proc
    store: StoreView

    @property
    def address(self) -> tuple[str, int]:
        assert self.proc.url is not None
        host, port = self.proc.url.removeprefix("http://").split(":")
        return host, int(port)

    def connect(self) -> socket.socket:
        return socket.create_connection(self.address, timeout=5)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("hostile-serve")
    url = f"sqlite:///{tmp / 'idlehook.db'}"
    env = base_env(
        tmp,
        url,
        IDLEHOOK_HTTP__HEADER_TIMEOUT_SECONDS=str(HEADER_TIMEOUT),
        IDLEHOOK_HTTP__BODY_TIMEOUT_SECONDS=str(HEADER_TIMEOUT),
    )

    def open_files() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, OPEN_FILES)

    with processes(tmp) as procs:
        port = free_port()
        argv = ["serve", "--no-worker", "--host", "127.0.0.1", "--port", str(port)]
        log = tmp / "serve.log"
        with log.open("wb") as out:
            popen = subprocess.Popen(
                [sys.executable, "-m", "idlehook.cli", *argv],
                env=env,
                cwd=REPO,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=open_files,
            )
        proc = Proc("serve", popen, log, f"http://127.0.0.1:{port}")
        procs.procs.append(proc)  # killed by processes() whatever happens
        wait_ready(proc)
        store = StoreView(url)
        try:
            yield Served(proc, store)
        finally:
            store.close()


def closed_by_server(sock: socket.socket) -> bool:
    try:
        return sock.recv(65536) == b"" or closed_by_server(sock)
    except BlockingIOError:
        return False
    except OSError:
        return True


def deliver(http: httpx.Client, event_id: str) -> float:
    body, headers = signed(event(event_id, "sesn_hostile"))
    started = time.perf_counter()
    status = http.post(PATH, content=body, headers=headers).status_code
    took = time.perf_counter() - started
    assert status == 204, (event_id, status)
    return took


def p99(samples: list[float]) -> float:
    return sorted(samples)[max(0, math.ceil(len(samples) * 0.99) - 1)]


def test_serve_raises_the_open_file_limit_and_keeps_connections_under_it(served: Served) -> None:
    limits = Path(f"/proc/{served.proc.pid}/limits").read_text()
    line = next(row for row in limits.splitlines() if row.startswith("Max open files"))
    assert line.split()[3:5] == ["1024", "1024"], line  # soft raised to the hard limit
    lines = [json.loads(row) for row in served.proc.log.read_text().splitlines() if "{" in row]
    started = next(row for row in lines if row.get("event") == "serve.open_files")
    assert (started["soft_before"], started["soft"]) == OPEN_FILES
    assert started["max_connections"] == CAP
    assert any(row.get("event") == "serve.max_connections_lowered" for row in lines)


def test_slowloris_connections_are_cut_and_signed_deliveries_stay_fast(served: Served) -> None:
    """300 connections drip a header byte every 0.5 s, reconnecting when cut, for 6 s, while
    signed deliveries (a new connection each) are timed."""
    clients, seconds, drip_every = 300, 6.0, 0.5
    lifetimes: list[float] = []  # of the connections the server cut
    still_open: list[float] = []
    stop = threading.Event()
    failure: list[BaseException] = []

    def drip() -> None:
        selector = selectors.DefaultSelector()
        opened: dict[socket.socket, tuple[float, int]] = {}

        def open_one() -> None:
            sock = served.connect()
            sock.setblocking(False)
            opened[sock] = (time.monotonic(), 0)
            selector.register(sock, selectors.EVENT_READ)

        try:
            for _ in range(clients):
                open_one()
            next_drip = time.monotonic()
            while not stop.is_set():
                for key, _ in selector.select(timeout=0.02):
                    sock = key.fileobj
                    assert isinstance(sock, socket.socket)
                    if closed_by_server(sock):
                        lifetimes.append(time.monotonic() - opened.pop(sock)[0])
                        selector.unregister(sock)
                        sock.close()
                        open_one()
                if time.monotonic() >= next_drip:
                    next_drip += drip_every
                    for sock, (since, sent) in list(opened.items()):
                        with contextlib.suppress(OSError):  # cut meanwhile: seen by select
                            sock.send(DRIP[sent : sent + 1])
                            opened[sock] = (since, sent + 1)
        except BaseException as exc:  # surfaced in the test's thread
            failure.append(exc)
        finally:
            now = time.monotonic()
            still_open.extend(now - since for since, _ in opened.values())
            for sock in opened:
                sock.close()
            selector.close()

    dripper = threading.Thread(target=drip, daemon=True)
    dripper.start()
    acks: list[float] = []
    ids: list[str] = []
    deadline = time.monotonic() + seconds
    fresh = httpx.Limits(max_keepalive_connections=0)  # accept() under load, every time
    try:
        with httpx.Client(base_url=served.proc.url or "", timeout=10, limits=fresh) as http:
            time.sleep(0.5)  # the drippers are connected
            while time.monotonic() < deadline and len(acks) < 200:
                ids.append(f"wevt_slowloris_{len(ids)}")
                acks.append(deliver(http, ids[-1]))
                time.sleep(0.02)
    finally:
        stop.set()
        dripper.join(timeout=10)
    assert not failure, failure
    print(  # the figures docs/reliability.md quotes (pytest -s)
        f"slowloris: {len(lifetimes)} cut after {min(lifetimes, default=0):.2f}-"
        f"{max(lifetimes, default=0):.2f} s; {len(acks)} deliveries p50 "
        f"{sorted(acks)[len(acks) // 2] * 1000:.1f} ms p99 {p99(acks) * 1000:.1f} ms"
    )
    # Every connection the server cut lived about the header timeout, never much more, and
    # every dripper of the first wave was cut (more were while the test ran).
    assert len(lifetimes) >= clients, len(lifetimes)
    assert max(lifetimes) < HEADER_TIMEOUT + TICK + 1.0, max(lifetimes)
    assert min(lifetimes) >= HEADER_TIMEOUT - 0.05, min(lifetimes)
    assert max(still_open) < HEADER_TIMEOUT + TICK + 1.0
    assert len(acks) >= 100
    assert p99(acks) < 0.1, f"p99 {p99(acks) * 1000:.1f} ms over {len(acks)} deliveries"
    assert set(ids) <= served.store.event_ids()


def test_a_64_mb_header_is_refused_at_once_without_freezing_the_loop(served: Served) -> None:
    probes: list[float] = []
    rss: list[int] = []
    stop = threading.Event()

    def probe() -> None:
        with httpx.Client(base_url=served.proc.url or "", timeout=30) as http:
            while not stop.is_set():
                started = time.perf_counter()
                assert http.get("/healthz").status_code == 200
                probes.append(time.perf_counter() - started)
                rss.append(rss_kib(served.proc.pid))
                time.sleep(0.01)

    prober = threading.Thread(target=probe, daemon=True)
    prober.start()
    answer = b""
    try:
        time.sleep(0.3)
        baseline = max(rss)
        started = time.perf_counter()
        megabyte = b"h" * (1 << 20)
        with served.connect() as sock:
            try:
                sock.sendall(b"POST " + PATH.encode() + b" HTTP/1.1\r\nhost: x\r\nx-big: ")
                for _ in range(64):
                    sock.sendall(megabyte)
                answer = sock.recv(1024)
            except OSError:
                pass  # reset while still sending: the server stopped reading, as it should
        refused_in = time.perf_counter() - started
        time.sleep(0.3)
    finally:
        stop.set()
        prober.join(timeout=10)
    print(
        f"64 MB header: refused in {refused_in:.2f} s ({answer[:12]!r}); healthz max "
        f"{max(probes) * 1000:.0f} ms over {len(probes)}; RSS +{max(rss) - baseline} KiB"
    )
    assert answer == b"" or answer.startswith(b"HTTP/1.1 431 "), answer[:60]
    assert refused_in < 2.0, refused_in  # was 7 s to send and be answered 200
    # No freeze: /healthz kept answering (was up to 2.8 s); no 64 MB buffered (was +131 MB).
    assert len(probes) >= 20
    assert max(probes) < 0.2, f"healthz max {max(probes) * 1000:.0f} ms"
    assert max(rss) - baseline < 16 * 1024, (baseline, max(rss))


def test_silent_connections_past_the_cap_are_cut_and_never_lock_anyone_out(
    served: Served,
) -> None:
    """1,100 connections that send nothing, over the cap (768) under the 1,024 files: the
    longest-open idle ones make room for newcomers, the rest go at the header timeout."""
    _, ours = server.raise_open_file_limit()  # this process holds the 1,100 client ends
    if ours is not None and ours < 1400:
        pytest.skip(f"the test process may open {ours} files; it needs 1,400")
    first_opened = time.monotonic()
    held = [served.connect() for _ in range(1100)]
    last_opened = time.monotonic()
    try:
        for sock in held:
            sock.setblocking(False)
        waits: list[float] = []
        for i in range(20):  # a fresh connection each, as the silent ones are still held
            with httpx.Client(base_url=served.proc.url or "", timeout=5) as http:
                started = time.perf_counter()
                assert http.get("/healthz").status_code == 200
                waits.append(time.perf_counter() - started)
                waits.append(deliver(http, f"wevt_silent_{i}"))
        probed_in = time.monotonic() - last_opened
        open_after_probes = sum(not closed_by_server(sock) for sock in held)
        # Counted before the first connection could reach the header timeout: only the cap
        # closed any (on a loaded machine, opening 1,100 can take longer than the timeout).
        within_timeout = time.monotonic() - first_opened < HEADER_TIMEOUT
        print(
            f"silent 1,100: healthz + delivery p99 {p99(waits) * 1000:.1f} ms, "
            f"{open_after_probes} still held after {probed_in:.2f} s"
        )
        assert p99(waits) < 0.1, f"p99 {p99(waits) * 1000:.1f} ms"
        if within_timeout:  # the probes ran while the cap's worth was held
            assert open_after_probes >= CAP - 40, open_after_probes
        # Everyone silent is gone within the header timeout of the last one's arrival.
        wait_for(
            lambda: all(closed_by_server(sock) for sock in held),
            timeout=HEADER_TIMEOUT + TICK + 2.0,
        )
        all_gone = time.monotonic() - last_opened
        assert all_gone < HEADER_TIMEOUT + TICK + 2.0
    finally:
        for sock in held:
            sock.close()
    metrics = httpx.get(f"{served.proc.url}/metrics", timeout=5).text
    cut = {
        line.split('"')[1]: float(line.split()[-1])
        for line in metrics.splitlines()
        if line.startswith("idlehook_http_connections_closed_total{")
    }
    print(f"silent 1,100: all cut {all_gone:.2f} s after the last opened; {cut}")
    assert cut.get("evicted", 0) >= 1100 - CAP, cut
    assert cut.get("header_timeout", 0) >= CAP - 40, cut
