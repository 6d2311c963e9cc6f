"""A worker that stops closes its plugins: each plugin's optional `aclose()` is awaited once,
after the runs in flight finished, within `PLUGIN_CLOSE_SECONDS`; a failing or hanging one is
logged and the others still close. In-process, through idlehook.testing's harness, in the
`idlehook worker` and `idlehook serve` processes (the plugin loaded from an entry point), and
with the real `publish_redis`, whose Redis connection is gone once the worker stopped."""

import asyncio
import os
import signal
import uuid
from pathlib import Path
from typing import Any

import anthropic
import pytest
import structlog
from redis.asyncio import Redis
from sqlalchemy.engine import Engine

from handlers import worker as worker_module
from handlers.builtin.publish_redis import RedisPublisher
from handlers.config import RouteRule
from handlers.registry import Registry, build
from handlers.worker import Worker
from idlehook import testing
from idlehook.settings import Settings
from store.runs import RunStore
from tests.handlers.closing_plugin import ClosingPlugin
from tests.handlers.conftest import Sessions
from tests.handlers.helpers import add_delivery
from tests.handlers.support import Recorder
from tests.reliability.support import base_env, processes, wait_ready
from tests.support.servers import wait_for

IDLED = "session.status_idled"
REDIS_URL = "redis://127.0.0.1:6379/0"


def routed(settings: Settings, *handlers: str) -> Settings:
    rule = RouteRule(name="test", event_types=[IDLED], handlers=list(handlers))
    return settings.model_copy(update={"routes": [rule]})


class FailingClose(Recorder):
    async def aclose(self) -> None:
        raise RuntimeError("broker gone token=sk-ant-secret123456")


class HangingClose(Recorder):
    async def aclose(self) -> None:
        await asyncio.Event().wait()


async def test_stopping_closes_each_plugin_once_after_its_runs_finished(
    store: RunStore,
    engine: Engine,
    settings: Settings,
    client: anthropic.AsyncAnthropic,
    sessions: Sessions,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(worker_module, "PLUGIN_CLOSE_SECONDS", 0.2)
    closing = ClosingPlugin(hold_seconds=0.3)
    failing, hanging, plain = FailingClose("failing"), HangingClose("hanging"), Recorder("plain")
    registry = Registry([closing, failing, hanging, plain])
    worker = Worker(store, registry, client, routed(settings, "closing", "plain"))
    add_delivery(engine, IDLED, sessions.finished())
    task = asyncio.create_task(worker.run())
    with structlog.testing.capture_logs() as logs:
        await asyncio.wait_for(closing.started.wait(), 20)
        worker.stop()  # while `closing.handle` is still holding: it finishes, then the close
        await asyncio.wait_for(task, 20)

    assert closing.events == ["built", "handle", "handled", "closed"]
    assert task.exception() is None  # a failing close is no crash
    problems = {e["event"]: e for e in logs if e["event"].startswith("worker.plugin_close")}
    assert problems["worker.plugin_close_failed"]["handler"] == "failing"
    assert "sk-ant-secret" not in problems["worker.plugin_close_failed"]["error"]
    assert problems["worker.plugin_close_timeout"]["handler"] == "hanging"
    assert [e["event"] for e in logs][-1] == "worker.stopped"


async def test_the_harness_closes_its_plugin_once_as_it_exits() -> None:
    plugin = ClosingPlugin()
    async with testing.harness(plugin) as h:
        for _ in range(2):
            run = await h.run()
            assert run.succeeded, run.error
        assert "closed" not in plugin.events  # each `run` drains the worker; the plugin stays
    assert plugin.events == ["built", "handle", "handled", "handle", "handled", "closed"]


# -- processes: the plugin loaded from an entry point --------------------------------------------


def entry_point_dir(root: Path) -> Path:
    """A directory that, on PYTHONPATH, registers `closing` as an `idlehook.handlers` entry
    point (importlib.metadata reads any `*.dist-info` on sys.path)."""
    info = root / "idlehook_closing_plugin-0.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: idlehook-closing-plugin\nVersion: 0\n"
    )
    (info / "entry_points.txt").write_text(
        "[idlehook.handlers]\nclosing = tests.handlers.closing_plugin:ClosingPlugin\n"
    )
    return root


@pytest.fixture
def process_env(tmp_path: Path, sqlite_url: str) -> dict[str, str]:
    plugins = entry_point_dir(tmp_path / "plugins")
    routes = [{"name": "closing", "event_types": [IDLED], "handlers": ["closing"]}]
    env = base_env(tmp_path, sqlite_url, routes=routes)
    env["PYTHONPATH"] = os.pathsep.join([str(plugins), env["PYTHONPATH"]])
    env["CLOSING_PLUGIN_LOG"] = str(tmp_path / "closing.log")
    return env


def lines(path: Path) -> list[str]:
    return [line.split()[0] for line in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.parametrize("command", ["worker", "serve"])
def test_a_worker_process_closes_its_plugins_on_sigterm(
    tmp_path: Path, process_env: dict[str, str], command: str
) -> None:
    """`idlehook worker`, and serve's supervised worker process (serve stopped: SIGTERM to the
    child): the plugin is built, and closed once, by the worker process."""
    log = Path(process_env["CLOSING_PLUGIN_LOG"])
    with processes(tmp_path) as procs:
        if command == "worker":
            proc = procs.worker("worker", process_env)
        else:
            proc = procs.serve("serve", process_env, worker=True)
            wait_ready(proc)
        wait_for(lambda: "built" in lines(log), timeout=30)
        # The worker logs `worker.started` once it runs: a SIGTERM before then would stop it
        # before `run` (and so its close) began.
        wait_for(lambda: "worker.started" in proc.log.read_text(errors="replace"), timeout=30)
        os.kill(proc.pid, signal.SIGTERM)
        # uvicorn re-raises the SIGTERM it handled once serve has stopped (and its worker).
        assert proc.popen.wait(timeout=40) in (0, -signal.SIGTERM), proc.tail()
    pids = {
        kind: [line.split()[1] for line in log.read_text().splitlines() if line.startswith(kind)]
        for kind in ("built", "closed")
    }
    # Startup's config check builds a throwaway instance (never run, so holding nothing) in
    # each process that checks the config, serve's own included; the worker's runs and is
    # closed once, in the worker process (serve's child, for `serve`).
    assert pids["closed"] == [pids["built"][-1]], log.read_text()
    assert (pids["closed"][0] == str(proc.pid)) == (command == "worker"), log.read_text()


# -- the real publish_redis -----------------------------------------------------------------------


async def named_clients(name: str) -> int:
    admin = Redis.from_url(REDIS_URL)
    try:
        return sum(1 for c in await admin.client_list() if c.get("name") == name)
    finally:
        await admin.aclose()


async def test_publish_redis_connection_is_closed_when_the_worker_stops(
    store: RunStore,
    engine: Engine,
    settings: Settings,
    client: anthropic.AsyncAnthropic,
    sessions: Sessions,
) -> None:
    tag = uuid.uuid4().hex[:10]
    name, stream = f"idlehook-close-{tag}", f"idlehook.test.close.{tag}"
    # `client_name` in the URL: CLIENT LIST tells this worker's connection from any other's.
    table: dict[str, Any] = {"url": f"{REDIS_URL}?client_name={name}", "stream": stream}
    publisher = build(RedisPublisher, "publish_redis", table)
    worker = Worker(store, Registry([publisher]), client, routed(settings, "publish_redis"))
    session_id = sessions.finished()
    delivery = add_delivery(engine, IDLED, session_id)
    task = asyncio.create_task(worker.run())
    try:

        def published() -> bool:
            return any(
                r.handler == "publish_redis" and r.state == "succeeded"
                for r in store.runs_for_delivery(delivery)
            )

        await asyncio.to_thread(wait_for, published, 20)
        assert await named_clients(name) == 1  # the connection is kept between runs
    finally:
        worker.stop()
        await asyncio.wait_for(task, 20)
    try:
        assert await named_clients(name) == 0
    finally:
        admin = Redis.from_url(REDIS_URL)
        keys = [k async for k in admin.scan_iter(match=f"{stream}*")]
        if keys:
            await admin.delete(*keys)
        await admin.aclose()
