"""Clients that hold the receiver instead of finishing a request, against `idlehook serve`.

    .venv/bin/python -m bench.hostile [slowloris] [header] [silent]     # default: all three

Each run starts `idlehook serve --no-worker` on a fresh SQLite database with the default
`[http]` settings (10 s header timeout) and measures, bounded in count and time:

- slowloris: 200 connections sending header bytes at 1 byte/s for 20 s, while 100 signed
  deliveries go in: how many the server cut and when; the deliveries' latency;
- header: one 64 MB, then one 128 MB header: how fast it is refused, /healthz latency while it
  is sent (the event loop's responsiveness), the receiver's RSS;
- silent: 1,100 connections that send nothing, the receiver under soft = hard = 1,024 open
  files, held 15 s: how many /healthz + signed delivery probes got through, how many are left.

Figures go to bench/results/hostile.json; docs/reliability.md quotes them.
"""

import os
import resource
import selectors
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from standardwebhooks import Webhook

from bench.common import (
    PYTHON,
    ROOT,
    SECRET,
    WEBHOOK_PATH,
    event_ids,
    free_port,
    percentile,
    rss_kib,
    save,
    signed_event,
)
from receiver.server import raise_open_file_limit


@dataclass
class Receiver:
    url: str
    pid: int

    @property
    def address(self) -> tuple[str, int]:
        return "127.0.0.1", int(self.url.rsplit(":", 1)[1])


@contextmanager
def receiver(workdir: Path, open_files: int | None = None) -> Iterator[Receiver]:
    port = free_port()
    inherited = os.environ.items()  # noqa: TID251
    env = {k: v for k, v in inherited if not k.startswith(("IDLEHOOK_", "ANTHROPIC_"))}
    env.update(
        IDLEHOOK_CONFIG=str(workdir / "none.toml"),
        IDLEHOOK_DATABASE_URL=f"sqlite:///{workdir / 'hostile.db'}",
        IDLEHOOK_DATA_DIR=str(workdir / "data"),
        IDLEHOOK_JSON_LOGS="true",
        ANTHROPIC_WEBHOOK_SIGNING_KEY=SECRET,
        ANTHROPIC_API_KEY="bench",
        ANTHROPIC_BASE_URL="http://127.0.0.1:9",
        PYTHONPATH=str(ROOT),
    )

    def limit() -> None:
        if open_files is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (open_files, open_files))

    args = [PYTHON, "-m", "idlehook.cli", "serve", "--no-worker", "--port", str(port)]
    with (workdir / "serve.log").open("wb") as log:
        proc = subprocess.Popen(
            args,
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=limit,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            with suppress(httpx.HTTPError):
                if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("idlehook serve did not come up")
            time.sleep(0.1)
        yield Receiver(url, proc.pid)
    finally:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, 9)
        proc.wait(timeout=10)


def deliver(http: httpx.Client, signer: Webhook, event_id: str) -> tuple[float, int | str]:
    body, headers = signed_event(signer, event_id, "sesn_hostile")
    started = time.perf_counter()
    try:
        status: int | str = http.post(WEBHOOK_PATH, content=body, headers=headers).status_code
    except httpx.HTTPError as exc:
        status = type(exc).__name__
    return time.perf_counter() - started, status


def slowloris(workdir: Path, clients: int = 200, seconds: float = 20.0) -> dict[str, Any]:
    head = b"POST " + WEBHOOK_PATH.encode() + b" HTTP/1.1\r\nhost: x\r\nx-drip: " + b"a" * 4096
    with receiver(workdir) as target:
        socks = [socket.create_connection(target.address, timeout=5) for _ in range(clients)]
        selector = selectors.DefaultSelector()
        opened = time.monotonic()
        for sock in socks:
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ)
        cut: dict[socket.socket, float] = {}
        stop = threading.Event()

        def drip() -> None:
            sent = 0
            next_drip = time.monotonic()
            while not stop.is_set() and time.monotonic() - opened < seconds:
                for key, _ in selector.select(timeout=0.05):
                    sock = key.fileobj
                    assert isinstance(sock, socket.socket)
                    cut[sock] = time.monotonic() - opened
                    selector.unregister(sock)
                if time.monotonic() >= next_drip:
                    next_drip += 1.0
                    for sock in socks:
                        if sock not in cut:
                            with suppress(OSError):
                                sock.send(head[sent : sent + 1])
                    sent += 1

        dripper = threading.Thread(target=drip)
        dripper.start()
        signer, ids = Webhook(SECRET), event_ids()
        acks: list[float] = []
        failed = 0
        with httpx.Client(base_url=target.url, timeout=10) as http:
            time.sleep(1)
            for i in range(100):
                took, status = deliver(http, signer, ids(i))
                acks.append(took)
                failed += status != 204
                time.sleep(0.05)
        dripper.join()
        for sock in socks:
            sock.close()
    times = sorted(cut.values())
    return {
        "clients": clients,
        "seconds": seconds,
        "cut": len(times),
        "cut_first_s": times[0] if times else None,
        "cut_last_s": times[-1] if times else None,
        "deliveries": len(acks),
        "deliveries_failed": failed,
        "ack_p50_ms": percentile(acks, 50) * 1000,
        "ack_p99_ms": percentile(acks, 99) * 1000,
    }


def header(workdir: Path, sizes_mb: tuple[int, ...] = (64, 128)) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    with receiver(workdir) as target:
        for size in sizes_mb:
            probes: list[float] = []
            rss: list[int] = []
            stop = threading.Event()

            def probe(
                out: list[float] = probes, mem: list[int] = rss, stop: threading.Event = stop
            ) -> None:
                with httpx.Client(base_url=target.url, timeout=60) as http:
                    while not stop.is_set():
                        started = time.perf_counter()
                        with suppress(httpx.HTTPError):
                            http.get("/healthz")
                        out.append(time.perf_counter() - started)
                        mem.append(rss_kib(target.pid))
                        time.sleep(0.01)

            prober = threading.Thread(target=probe)
            prober.start()
            time.sleep(0.3)
            before = max(rss)
            started = time.perf_counter()
            answer = b""
            chunk = b"a" * (1 << 20)
            try:
                with socket.create_connection(target.address, timeout=120) as sock:
                    sock.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-big: ")
                    for _ in range(size):
                        sock.sendall(chunk)
                    sock.sendall(b"\r\n\r\n")
                    answer = sock.recv(64)
            except OSError as exc:
                answer = type(exc).__name__.encode()
            took = time.perf_counter() - started
            time.sleep(0.5)
            stop.set()
            prober.join()
            figures[f"{size}mb"] = {
                "answered_in_s": took,
                "answer": answer[:20].decode(errors="replace"),
                "healthz_max_ms": max(probes) * 1000,
                "healthz_p99_ms": percentile(probes, 99) * 1000,
                "rss_kib_before": before,
                "rss_kib_peak": max(rss),
            }
    return figures


def silent(workdir: Path, clients: int = 1100, hold: float = 15.0) -> dict[str, Any]:
    with receiver(workdir, open_files=1024) as target:
        socks = []
        for _ in range(clients):
            try:
                socks.append(socket.create_connection(target.address, timeout=2))
            except OSError:
                break
        started = time.monotonic()
        signer, ids = Webhook(SECRET), event_ids()
        ok = failed = 0
        first_ok: float | None = None
        while time.monotonic() - started < hold:
            with httpx.Client(base_url=target.url, timeout=1) as http:
                try:
                    healthy = http.get("/healthz").status_code == 200
                except httpx.HTTPError:
                    healthy = False
                _, status = deliver(http, signer, ids(ok + failed))
            if healthy and status == 204:
                ok += 1
                first_ok = first_ok if first_ok is not None else time.monotonic() - started
            else:
                failed += 1
            time.sleep(0.2)
        still_open = 0
        for sock in socks:
            sock.setblocking(False)
            try:
                still_open += sock.recv(1) != b""
            except BlockingIOError:
                still_open += 1
            except OSError:
                pass
            sock.close()
    return {
        "clients": len(socks),
        "held_s": hold,
        "probes_ok": ok,
        "probes_failed": failed,
        "first_ok_s": first_ok,
        "still_open_at_end": still_open,
    }


RUNS: dict[str, Callable[[Path], dict[str, Any]]] = {
    "slowloris": slowloris,
    "header": header,
    "silent": silent,
}


def main() -> None:
    wanted = sys.argv[1:] or list(RUNS)
    raise_open_file_limit()  # this process holds the 1,100 silent client ends
    figures: dict[str, Any] = {}
    for name in wanted:
        with tempfile.TemporaryDirectory() as workdir:
            figures[name] = RUNS[name](Path(workdir))
        print(name, figures[name], flush=True)
    save("hostile", figures)


if __name__ == "__main__":
    main()
