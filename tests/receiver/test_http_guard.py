"""The HTTP layer's limits (receiver/http_guard.py) over real sockets, on the server
configuration `idlehook serve` runs (`receiver.server.uvicorn_config`), with short timeouts.

The hostile-client figures (slowloris, a 64 MB header, 1,100 silent connections against
`idlehook serve` itself) are in tests/reliability/test_hostile.py.
"""

import asyncio
import gc
import os
import resource
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from idlehook import logs
from idlehook.cli import main
from idlehook.settings import Settings
from receiver import server
from receiver.http_guard import CLOSED, GuardedHttpToolsProtocol, HttpLimits
from tests.support.servers import serve_config, wait_for

REPO = Path(__file__).resolve().parents[2]
LIMITS = HttpLimits(
    header_timeout=0.5, body_timeout=0.5, max_header_bytes=4096, max_connections=4, keep_alive=5
)


@dataclass
class Echo:
    """An ASGI app answering 200 with the body's length; `/block` waits for `release`."""

    release: threading.Event = field(default_factory=threading.Event)
    disconnects: int = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (message := await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["path"] == "/block":
            while not self.release.is_set():
                await asyncio.sleep(0.01)
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                self.disconnects += 1
                return
            size += len(message.get("body", b""))
            if not message.get("more_body"):
                break
        answer = str(size).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", str(len(answer)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": answer})


@dataclass
class Edge:
    app: Echo
    url: str

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.url.removeprefix("http://").split(":")
        return host, int(port)

    def connect(self) -> socket.socket:
        sock = socket.create_connection(self.address, timeout=5)
        sock.settimeout(5)
        return sock


@pytest.fixture
def edge() -> Iterator[Edge]:
    app = Echo()
    config = server.uvicorn_config(app, LIMITS, host="127.0.0.1", port=0)
    try:
        with serve_config(config) as url:
            yield Edge(app, url)
    finally:
        app.release.set()


def head(path: str = "/", *, size: int | None = None, extra: str = "", close: bool = True) -> bytes:
    """A GET head, padded with an `x-pad` header to exactly `size` bytes if given."""
    lines = f"GET {path} HTTP/1.1\r\nhost: t\r\n{extra}"
    if close:
        lines += "connection: close\r\n"
    raw = lines.encode() + b"\r\n"
    if size is None:
        return raw
    pad = size - len(raw) - len(b"x-pad: \r\n")
    assert pad >= 0
    return lines.encode() + b"x-pad: " + b"p" * pad + b"\r\n\r\n"


def until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes (a reset counts as a close)."""
    chunks: list[bytes] = []
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def one_response(sock: socket.socket) -> bytes:
    """One response with a content-length, on a connection that stays open."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    top, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1])
        for line in top.split(b"\r\n")
        if line.startswith(b"content-length")
    )
    while len(body) < length:
        body += sock.recv(65536)
    return top.split(b"\r\n")[0] + b" " + body


def closed_count(reason: str) -> int:
    return CLOSED.values.get((reason,), 0)


def test_a_kept_alive_connection_serves_many_requests_and_pipelines(edge: Edge) -> None:
    with httpx.Client(base_url=edge.url) as http:
        for i in range(50):
            response = http.post("/", content=b"x" * i)
            assert response.status_code == 200
            assert response.text == str(i)
    with edge.connect() as sock:
        sock.sendall(head(close=False) + head())
        answer = until_closed(sock)
    assert answer.count(b"HTTP/1.1 200") == 2


def test_a_head_of_exactly_the_cap_passes_one_byte_more_is_431(edge: Edge) -> None:
    for pieces in (1, 7):  # in one read, and across several
        raw = head(size=LIMITS.max_header_bytes)
        with edge.connect() as sock:
            step = -(-len(raw) // pieces)
            for i in range(0, len(raw), step):
                sock.sendall(raw[i : i + step])
                time.sleep(0.01)
            assert until_closed(sock).startswith(b"HTTP/1.1 200")
    # The body right behind a head of exactly the cap, in one write: the body is not "header".
    body = b"b" * 5000
    raw = head(size=LIMITS.max_header_bytes, extra=f"content-length: {len(body)}\r\n")
    with edge.connect() as sock:
        sock.sendall(raw.replace(b"GET ", b"PUT ", 1) + body)
        assert until_closed(sock).endswith(b"\r\n\r\n5000")
    before = closed_count("header_too_large")
    with edge.connect() as sock:
        sock.sendall(head(size=LIMITS.max_header_bytes + 1))
        answer = until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:60]
    assert b"connection: close" in answer
    assert closed_count("header_too_large") == before + 1


def test_a_huge_header_is_refused_at_the_cap_without_reading_it(edge: Edge) -> None:
    started = time.perf_counter()
    answer = b""
    with edge.connect() as sock:
        try:
            sock.sendall(b"GET / HTTP/1.1\r\nhost: t\r\nx-big: " + b"a" * (8 << 20))
            answer = until_closed(sock)
        except (BrokenPipeError, ConnectionResetError):
            pass  # closed while we were still writing: refused all the same
    assert time.perf_counter() - started < 2
    assert answer in (b"",) or answer.startswith(b"HTTP/1.1 431 ")


def test_a_slow_head_is_408_and_a_silent_connection_is_just_closed(edge: Edge) -> None:
    before = closed_count("header_timeout")
    with edge.connect() as sock:
        started = time.monotonic()
        sock.sendall(b"GET / HTTP/1.1\r\n")
        for _ in range(20):  # one header line every 0.1 s: never finishes in 0.5 s
            try:
                sock.sendall(b"x-drip: 1\r\n")
            except OSError:
                break
            time.sleep(0.1)
        answer = until_closed(sock)
        took = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:60]
    assert LIMITS.header_timeout <= took < LIMITS.header_timeout + 1.0
    with edge.connect() as sock:
        started = time.monotonic()
        assert until_closed(sock) == b""
        took = time.monotonic() - started
    assert LIMITS.header_timeout <= took < LIMITS.header_timeout + 1.0
    assert closed_count("header_timeout") == before + 2


def test_the_next_request_on_a_kept_alive_connection_gets_its_own_header_deadline(
    edge: Edge,
) -> None:
    with edge.connect() as sock:
        sock.sendall(head(close=False))
        assert one_response(sock).startswith(b"HTTP/1.1 200")
        time.sleep(LIMITS.header_timeout * 2)  # idle, under keep-alive: not a header timeout
        request = head(close=False)
        sock.sendall(request[:10])
        time.sleep(LIMITS.header_timeout / 2)
        sock.sendall(request[10:])
        assert one_response(sock).startswith(b"HTTP/1.1 200")
        sock.sendall(b"GET / HTTP/1.1\r\n")  # and a third that never finishes
        assert until_closed(sock).startswith(b"HTTP/1.1 408 ")


def test_a_body_late_past_its_deadline_is_408_and_the_app_sees_a_disconnect(edge: Edge) -> None:
    before = closed_count("body_timeout")
    with edge.connect() as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nhost: t\r\ncontent-length: 100\r\n\r\n" + b"x" * 10)
        answer = until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:60]
    assert closed_count("body_timeout") == before + 1
    wait_for(lambda: edge.app.disconnects == 1, timeout=5)
    # A body in pieces, all within the deadline, is read whole.
    with edge.connect() as sock:
        sock.sendall(
            b"POST / HTTP/1.1\r\nhost: t\r\ncontent-length: 30\r\nconnection: close\r\n\r\n"
        )
        for _ in range(3):
            time.sleep(0.1)
            sock.sendall(b"y" * 10)
        assert until_closed(sock).endswith(b"\r\n\r\n30")


def test_at_the_cap_the_oldest_idle_connection_makes_room_or_the_new_one_gets_503(
    edge: Edge,
) -> None:
    evicted = closed_count("evicted")
    silent = []
    for _ in range(LIMITS.max_connections):
        silent.append(edge.connect())
        time.sleep(0.02)
    try:
        assert httpx.get(edge.url + "/", timeout=5).status_code == 200  # got in
        assert until_closed(silent[0]) == b""  # the longest-open idle one made room
        assert closed_count("evicted") == evicted + 1
        for sock in silent[1:]:
            sock.setblocking(False)
            with pytest.raises(BlockingIOError):
                sock.recv(1)  # still open
    finally:
        for sock in silent:
            sock.close()
    # Every connection busy with a request in flight: nobody idle to close, so 503.
    busy = [edge.connect() for _ in range(LIMITS.max_connections)]
    try:
        for sock in busy:
            sock.sendall(head("/block"))
        refused = closed_count("refused")
        wait_for(lambda: _is_refused(edge), timeout=5)
        assert closed_count("refused") > refused
        edge.app.release.set()
        for sock in busy:
            assert until_closed(sock).startswith(b"HTTP/1.1 200")
    finally:
        for sock in busy:
            sock.close()


def _is_refused(edge: Edge) -> bool:
    with edge.connect() as sock:
        answer = until_closed(sock)
    return answer.startswith(b"HTTP/1.1 503 ")


def test_the_open_file_limit_is_raised_to_the_hard_limit(tmp_path: Path) -> None:
    def low() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 2048))

    code = "from receiver import server; print(*server.raise_open_file_limit())"
    env = {**os.environ, "PYTHONPATH": str(REPO)}  # noqa: TID251
    out = subprocess.run(
        [sys.executable, "-c", code],
        preexec_fn=low,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout.split()
    assert out == ["256", "2048"]


def test_max_connections_is_kept_under_the_open_file_limit() -> None:
    limits = HttpLimits(max_connections=1000)
    assert server.fit_to_open_files(limits, 1024).max_connections == 1024 - server.RESERVED_FILES
    assert server.fit_to_open_files(limits, 65536) is limits
    assert server.fit_to_open_files(limits, None) is limits
    assert server.fit_to_open_files(limits, 100).max_connections == server.MIN_CONNECTIONS


def test_serve_runs_the_guarded_configuration_from_http_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "idlehook.toml").write_text(
        f'database_url = "sqlite:///{tmp_path / "db.sqlite"}"\n'
        f'results_dir = "{tmp_path / "results"}"\n'
        "[http]\nheader_timeout_seconds = 3\nbody_timeout_seconds = 4\n"
        "max_header_bytes = 16384\nmax_connections = 100\nkeep_alive_seconds = 30\n"
    )
    seen: list[Any] = []

    def run(config: Any) -> bool:
        seen.append(config)
        return True

    monkeypatch.setattr(server, "run", run)
    # What a long-lived process does once, and a test process must not: cache log pipelines,
    # freeze the heap.
    monkeypatch.setattr(logs, "configure_logging", lambda **_: None)
    monkeypatch.setattr(gc, "freeze", lambda: None)
    monkeypatch.setenv("IDLEHOOK_HTTP__MAX_CONNECTIONS", "50")  # the environment wins
    # serve refuses to start without a signing key (every webhook would be a 401).
    monkeypatch.setenv("ANTHROPIC_WEBHOOK_SIGNING_KEY", "whsec_" + "QUFB" * 11)
    assert main(["--config", str(tmp_path / "idlehook.toml"), "serve", "--port", "0"]) == 0
    (config,) = seen
    assert issubclass(config.http, GuardedHttpToolsProtocol)
    assert config.http.limits == HttpLimits(
        header_timeout=3, body_timeout=4, max_header_bytes=16384, max_connections=50, keep_alive=30
    )
    assert config.timeout_keep_alive == 30
    assert config.ws == "none"


def test_http_settings_defaults() -> None:
    limits = HttpLimits.from_settings(Settings().http)
    assert limits == HttpLimits()
    assert (limits.header_timeout, limits.max_header_bytes) == (10, 65536)
