"""Real idlehook processes for the reliability tests: start, wait ready, kill -9, always reap.

Every process is started with a deadline and killed in `finally` by `Processes.close()`, so a
failing test never leaves one behind. Configuration goes through the environment exactly as in
production (`IDLEHOOK_*`, `ANTHROPIC_*`).
"""

import base64
import hashlib
import hmac
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anthropic
import httpx
from sqlalchemy import func
from sqlmodel import Session, col, select

from store.engine import make_engine
from store.models import Delivery, HandlerRun, RunState
from tests.support.servers import wait_for

REPO = Path(__file__).resolve().parents[2]
SECRET = "whsec_" + base64.b64encode(b"R" * 32).decode()
OTHER_SECRET = "whsec_" + base64.b64encode(b"S" * 32).decode()
TOKEN = "reliability-management-token"
PATH = "/webhooks/anthropic"
JOURNAL_ROUTES = [
    {
        "name": "journal",
        "event_types": ["session.status_idled", "session.status_terminated"],
        "handlers": ["journal"],
    }
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def plugin_path(root: Path) -> Path:
    """A directory that, on PYTHONPATH, registers the `journal` handler as an entry point.

    importlib.metadata finds any `*.dist-info` on sys.path, so no installation is needed."""
    info = root / "idlehook_reliability_plugins-0.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: idlehook-reliability-plugins\nVersion: 0\n"
    )
    (info / "entry_points.txt").write_text(
        "[idlehook.handlers]\njournal = tests.reliability.plugins:JournalHandler\n"
    )
    return root


def base_env(
    tmp: Path,
    database_url: str,
    *,
    base_url: str = "http://127.0.0.1:9",
    journal: Path | None = None,
    routes: Sequence[Mapping[str, Any]] | None = None,
    lease_seconds: float = 3.0,
    **extra: str,
) -> dict[str, str]:
    # The child gets the test runner's environment minus any idlehook/SDK configuration.
    inherited = os.environ.items()  # noqa: TID251
    env = {k: v for k, v in inherited if not k.startswith(("IDLEHOOK_", "ANTHROPIC_"))}
    env.update(
        {
            "PYTHONPATH": os.pathsep.join([str(plugin_path(tmp / "plugins")), str(REPO)]),
            "IDLEHOOK_CONFIG": str(tmp / "no-config.toml"),
            "IDLEHOOK_DATABASE_URL": database_url,
            "IDLEHOOK_DATA_DIR": str(tmp / "data"),
            "IDLEHOOK_RESULTS_DIR": str(tmp / "results"),
            "IDLEHOOK_JSON_LOGS": "true",
            "IDLEHOOK_API_TOKEN": TOKEN,
            "IDLEHOOK_OWNER": "reliability",
            "ANTHROPIC_BASE_URL": base_url,
            "ANTHROPIC_API_KEY": "sk-reliability-test-key",
            "ANTHROPIC_WEBHOOK_SIGNING_KEY": SECRET,
            "IDLEHOOK_WORKER__LEASE_SECONDS": str(lease_seconds),
            "IDLEHOOK_WORKER__POLL_SECONDS": "0.1",
            "IDLEHOOK_WORKER__BACKOFF_BASE_SECONDS": "0.2",
            "IDLEHOOK_WORKER__BACKOFF_MAX_SECONDS": "2",
            "IDLEHOOK_READ_RPM": "100000",
            "IDLEHOOK_CREATE_RPM": "100000",
            "IDLEHOOK_WATCHDOG_SECONDS": "3600",
            "IDLEHOOK_RECONCILE__INTERVAL_SECONDS": "3600",
        }
    )
    if journal is not None:
        env["RELIABILITY_JOURNAL"] = str(journal)
    if routes is not None:
        env["IDLEHOOK_ROUTES"] = json.dumps(list(routes))
    env.update(extra)
    return env


@dataclass
class Proc:
    name: str
    popen: "subprocess.Popen[bytes]"
    log: Path
    url: str | None = None

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def kill9(self) -> None:
        if self.alive():
            os.kill(self.popen.pid, signal.SIGKILL)
        self.popen.wait(timeout=10)

    def tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


@dataclass
class Processes:
    """Starts idlehook commands; `close()` kills every one still running (SIGKILL)."""

    tmp: Path
    procs: list[Proc] = field(default_factory=list)

    def start(self, name: str, args: Sequence[str], env: Mapping[str, str]) -> Proc:
        log = self.tmp / f"{name}-{len(self.procs)}.log"
        out = log.open("wb")
        try:
            popen = subprocess.Popen(
                [sys.executable, "-m", "idlehook.cli", *args],
                env=dict(env),
                cwd=REPO,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            out.close()
        proc = Proc(name, popen, log)
        self.procs.append(proc)
        return proc

    def serve(
        self, name: str, env: Mapping[str, str], *, port: int | None = None, worker: bool = False
    ) -> Proc:
        port = port or free_port()
        args = ["serve", "--host", "127.0.0.1", "--port", str(port)]
        if not worker:
            args.append("--no-worker")
        proc = self.start(name, args, env)
        proc.url = f"http://127.0.0.1:{port}"
        wait_ready(proc)
        return proc

    def worker(self, name: str, env: Mapping[str, str], *args: str) -> Proc:
        return self.start(name, ["worker", *args], env)

    def close(self) -> None:
        for proc in self.procs:
            if proc.alive():
                with suppress(ProcessLookupError):
                    os.killpg(proc.popen.pid, signal.SIGKILL)
                proc.popen.wait(timeout=10)


@contextmanager
def processes(tmp: Path) -> Iterator[Processes]:
    procs = Processes(tmp)
    try:
        yield procs
    finally:
        procs.close()


def wait_ready(proc: Proc, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise AssertionError(f"{proc.name} exited {proc.popen.returncode}:\n{proc.tail()}")
        try:
            if httpx.get(f"{proc.url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"{proc.name} not ready within {timeout}s:\n{proc.tail()}")


# -- webhooks ------------------------------------------------------------------------------------


def event(event_id: str, session_id: str, kind: str = "session.status_idled") -> dict[str, Any]:
    return {
        "type": "event",
        "id": event_id,
        "created_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "data": {
            "type": kind,
            "id": session_id,
            "organization_id": "org_reliability",
            "workspace_id": "wrkspc_reliability",
        },
    }


def signed(
    payload: Mapping[str, Any] | bytes,
    *,
    secret: str = SECRET,
    msg_id: str | None = None,
    at: datetime | None = None,
) -> tuple[bytes, dict[str, str]]:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    if msg_id is None:
        msg_id = str(payload["id"]) if not isinstance(payload, bytes) else "msg_x"
    stamp = at or datetime.now(UTC)
    headers = {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(stamp.timestamp())),
        "webhook-signature": sign_bytes(secret, msg_id, stamp, body),
        "content-type": "application/json",
    }
    return body, headers


def sign_bytes(secret: str, msg_id: str, at: datetime, body: bytes) -> str:
    """Standard Webhooks `v1,` signature over raw bytes (the library wants text; bombs aren't)."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed_content = f"{msg_id}.{int(at.timestamp())}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed_content, hashlib.sha256).digest()).decode()


# -- reading back --------------------------------------------------------------------------------


def journal(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def done_lines(path: Path) -> list[dict[str, Any]]:
    return [line for line in journal(path) if line["phase"] == "done"]


@dataclass
class StoreView:
    """Read-only questions about the store, asked from the test process."""

    url: str

    def __post_init__(self) -> None:
        self.engine = make_engine(self.url, pool_size=1)

    def close(self) -> None:
        self.engine.dispose()

    def event_ids(self) -> set[str]:
        with Session(self.engine) as db:
            return set(db.exec(select(Delivery.event_id)).all())

    def deliveries(self) -> list[Delivery]:
        with Session(self.engine) as db:
            return list(db.exec(select(Delivery).order_by(col(Delivery.id))).all())

    def runs(self, handler: str | None = None) -> list[HandlerRun]:
        with Session(self.engine) as db:
            query = select(HandlerRun).order_by(col(HandlerRun.id))
            if handler is not None:
                query = query.where(HandlerRun.handler == handler)
            return list(db.exec(query).all())

    def unfinished(self) -> int:
        with Session(self.engine) as db:
            count = db.exec(
                select(func.count())
                .select_from(HandlerRun)
                .where(
                    col(HandlerRun.state).in_([RunState.PENDING, RunState.RUNNING, RunState.FAILED])
                )
            ).one()
        return int(count)

    def settled(self, deliveries: int) -> bool:
        return len(self.event_ids()) >= deliveries and self.unfinished() == 0


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


__all__ = ["wait_for"]


@contextmanager
def emulator(**config: Any) -> Iterator[tuple[Any, str]]:
    """The in-process emulator on loopback: (Emulator, base URL)."""
    from tests.support.stack import emulator as on_loopback

    with on_loopback(SECRET, **{"rate_limits": {"enabled": False}, **config}) as running:
        yield running


def launcher(api_url: str, name: str) -> Callable[[int], None]:
    """`launch(n)`: n sessions that finish at once, started through the real SDK."""
    client = anthropic.Anthropic(api_key="k", base_url=api_url, max_retries=2)
    agent = client.beta.agents.create(name=name, model="claude-opus-4-7")
    environment = client.beta.environments.create(
        name=name, config={"type": "cloud", "networking": {"type": "limited"}}
    )

    def launch(n: int) -> None:
        for _ in range(n):
            client.beta.sessions.create(
                agent=agent.id,
                environment_id=environment.id,
                metadata={"emulator_script": "end_turn"},
                initial_events=[
                    {"type": "user.message", "content": [{"type": "text", "text": "go"}]}
                ],
            )

    return launch
