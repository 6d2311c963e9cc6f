"""What every benchmark shares: processes, ports, databases, signed payloads, figures."""

import base64
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
from standardwebhooks import Webhook

from emulator.ids import new_id
from idlehook.settings import env_flag

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
RESULTS = ROOT / "bench" / "results"
SECRET = "whsec_" + base64.b64encode(b"B" * 32).decode()
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
PG_BASE = "postgresql+psycopg://postgres@127.0.0.1:5432/"
WEBHOOK_PATH = "/webhooks/anthropic"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_http(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            httpx.get(url, timeout=2)
            return
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not come up") from None
            time.sleep(0.1)


@contextlib.contextmanager
def process(args: Sequence[str]) -> Iterator[subprocess.Popen[bytes]]:
    """A child process in its own group, stopped (SIGINT, then SIGKILL) on exit."""
    proc = subprocess.Popen(
        list(args),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=None if env_flag("BENCH_DEBUG") else subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@contextlib.contextmanager
def emulator_process(*extra: str) -> Iterator[str]:
    port = free_port()
    args = [PYTHON, "-m", "idlehook.cli", "emulator", "--port", str(port), *extra]
    with process(args):
        url = f"http://127.0.0.1:{port}"
        wait_http(url + "/_emulator/config")
        yield url


@contextlib.contextmanager
def database(kind: str, workdir: Path) -> Iterator[str]:
    """A fresh, empty database URL: a SQLite file, or a new PostgreSQL database."""
    if kind == "sqlite":
        path = workdir / f"bench-{uuid.uuid4().hex[:8]}.db"
        yield f"sqlite:///{path}"
        for suffix in ("", "-wal", "-shm"):
            Path(str(path) + suffix).unlink(missing_ok=True)
        return
    name = f"idlehook_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield PG_BASE + name
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def signed_event(
    signer: Webhook, event_id: str, session_id: str, event_type: str = "session.status_idled"
) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(
        {
            "type": "event",
            "id": event_id,
            "created_at": datetime.now(UTC).isoformat(),
            "data": {
                "type": event_type,
                "id": session_id,
                "organization_id": "org_bench",
                "workspace_id": "wrkspc_bench",
            },
        },
        separators=(",", ":"),
    )
    stamp = datetime.now(UTC)
    headers = {
        "webhook-id": event_id,
        "webhook-timestamp": str(int(stamp.timestamp())),
        "webhook-signature": signer.sign(event_id, stamp, body),
        "content-type": "application/json",
        "user-agent": "Anthropic-Webhooks/bench",
    }
    return body.encode(), headers


def event_ids(ordered: bool = False) -> Callable[[int], str]:
    """The id of the i-th event a load generator sends. Shaped like Anthropic's (an opaque random
    tail, as the emulator makes them) unless `ordered`: ids that sort in sending order make the
    store's unique index append instead of insert at random, which flatters every receiver."""
    if not ordered:
        return lambda _: new_id("wevt_")
    prefix = uuid.uuid4().hex[:8]
    return lambda i: f"wevt_{prefix}{i:08d}"


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def save(name: str, figures: dict[str, Any]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    figures = {"benchmark": name, "at": datetime.now(UTC).isoformat(), **figures}
    (RESULTS / f"{name}.json").write_text(json.dumps(figures, indent=2, default=str) + "\n")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def children(pid: int) -> list[int]:
    """The direct children of `pid` (the receiver's inbox writer process, say)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            found += [int(child) for child in (task / "children").read_text().split()]
    return found


def open_sockets(pid: int) -> int:
    count = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            if os.readlink(fd).startswith("socket:"):
                count += 1
    return count
