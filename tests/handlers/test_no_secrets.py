"""No secret of idlehook's reaches plugin code: everything reachable from the `HandlerContext` the
worker hands a plugin is walked, and none of the service's secrets is found.

What the walk follows: attributes (`__dict__` and slots), container items, the closure cells,
defaults and `__self__` of every callable held, partials. What it does not: module globals and
classes (a plugin can import any module anyway: it runs in idlehook's process, so this keeps
secrets out of its hands by design and by accident, not against a hostile plugin, which could
read the environment), the event loop, and the process's streams.

Two holders are sanctioned, and the walk records the paths to them instead of entering:
- `ctx.client`, the paced SDK client: it must hold the API key to make any call. Walked on its
  own, it holds nothing else secret (not the SDK's default webhook key from the environment).
- a SQLAlchemy `Engine`: the store's, reached through the client's pacer (calls are paced in a
  budget shared through the store) and through the worker's record of what a handler saved.
  It can connect, so it holds the database URL's password; it hands out nothing else.
"""

import asyncio
import contextlib
import functools
import io
import types
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from anthropic import AsyncAnthropic
from pydantic import BaseModel, ConfigDict, SecretStr

from handlers.builtin.forward import ForwardHandler
from handlers.config import RouteRule
from handlers.registry import Registry, build
from handlers.worker import Worker
from idlehook import HandlerContext, wiring
from idlehook.settings import Settings
from store.engine import make_engine
from store.runs import RunStore
from tests.handlers.conftest import Sessions
from tests.handlers.helpers import add_delivery
from tests.handlers.support import run_until

API_KEY = "sk-ant-api03-API-KEY-0001"
SIGNING_KEY = "whsec_U0lHTklORy1LRVktMDAwMg=="
API_TOKEN = "API-TOKEN-0003"
ADMIN_KEY = "sk-ant-admin01-ADMIN-KEY-0004"
DB_PASSWORD = "DB-PASSWORD-0005"
FORWARD_SECRET = "whsec_Rk9SV0FSRC0wMDA2"
OTHER_PLUGIN_SECRET = "OTHER-PLUGIN-0007"
OWN_SECRET = "OWN-SECRET-0008"

NOT_THE_API_KEY = {
    "signing key": SIGNING_KEY,
    "API token": API_TOKEN,
    "admin key": ADMIN_KEY,
    "database password": DB_PASSWORD,
    "forward's secret": FORWARD_SECRET,
    "another plugin's config": OTHER_PLUGIN_SECRET,
}
# Not entered: they cannot be told apart from the process itself.
_OPAQUE = (types.ModuleType, type, asyncio.AbstractEventLoop, io.IOBase, types.FrameType)


def walk(
    root: Any, boundary: tuple[type, ...] = (), stop: tuple[Any, ...] = ()
) -> Iterator[tuple[str, Any]]:
    """(path, object) for everything reachable from `root`; instances of `boundary` and the
    objects in `stop` are yielded but not entered."""
    seen: set[int] = set()
    todo: list[tuple[str, Any]] = [("ctx", root)]
    while todo:
        path, obj = todo.pop()
        if id(obj) in seen or obj is None or isinstance(obj, int | float | bool):
            continue
        seen.add(id(obj))
        yield path, obj
        if isinstance(obj, (*_OPAQUE, *boundary)) or any(obj is s for s in stop):
            continue
        if isinstance(obj, str | bytes):
            continue
        if isinstance(obj, SecretStr):
            todo.append((f"{path}.get_secret_value()", obj.get_secret_value()))
            continue
        if isinstance(obj, dict):
            for key, value in obj.items():
                todo.append((f"{path}[{key!r}]", value))
                todo.append((f"{path}.keys()", key))
            continue
        if isinstance(obj, list | tuple | set | frozenset):
            todo.extend((f"{path}[{i}]", item) for i, item in enumerate(obj))
            continue
        if isinstance(obj, types.FunctionType):
            for name, cell in zip(obj.__code__.co_freevars, obj.__closure__ or (), strict=False):
                with contextlib.suppress(ValueError):  # an empty cell
                    todo.append((f"{path}.<closure {name}>", cell.cell_contents))
            todo.append((f"{path}.__defaults__", obj.__defaults__))
            todo.append((f"{path}.__kwdefaults__", obj.__kwdefaults__))
            continue
        if isinstance(obj, types.MethodType):
            todo.append((f"{path}.__self__", obj.__self__))
            todo.append((f"{path}.__func__", obj.__func__))
            continue
        if isinstance(obj, functools.partial):
            todo += [(f"{path}.func", obj.func), (f"{path}.args", obj.args)]
            todo.append((f"{path}.keywords", obj.keywords))
            continue
        for name, value in _attributes(obj):
            todo.append((f"{path}.{name}", value))


def _attributes(obj: Any) -> Iterator[tuple[str, Any]]:
    yield from getattr(obj, "__dict__", {}).items()
    for cls in type(obj).__mro__:
        for slot in getattr(cls, "__slots__", ()):
            if slot in ("__dict__", "__weakref__"):
                continue
            try:
                value = getattr(obj, slot)
            except Exception:  # an unset slot, or one computed on first read that cannot be
                continue
            yield slot, value


def holding(found: Iterator[tuple[str, Any]], secret: str) -> list[str]:
    return [path for path, obj in found if isinstance(obj, str | bytes) and _has(obj, secret)]


def _has(value: str | bytes, secret: str) -> bool:
    return secret in value if isinstance(value, str) else secret.encode() in value


class SpyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    token: SecretStr


class Spy:
    """A third-party plugin: keeps the context it was handed and uses every part of it."""

    name = "spy"
    Config = SpyConfig

    def __init__(self, config: SpyConfig) -> None:
        self.config = config
        self.ctx: HandlerContext | None = None

    async def handle(self, ctx: HandlerContext) -> None:
        result = await ctx.result(files=True)
        await ctx.events()
        ctx.shared_read()
        await ctx.woken_since(ctx.now())
        await ctx.record_saved(result)
        ctx.log.info("spy.ran")
        self.ctx = ctx


class OtherConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    password: SecretStr


class Other:
    name = "other"
    Config = OtherConfig

    def __init__(self, config: OtherConfig) -> None:
        self.config = config

    async def handle(self, ctx: HandlerContext) -> None:
        return None


def secret_settings(db_url: str, emulator_url: str, tmp_path: Any) -> Settings:
    return Settings(
        api_key=API_KEY,
        base_url=emulator_url,
        webhook_signing_keys=[SIGNING_KEY],
        api_token=API_TOKEN,
        admin_api_key=ADMIN_KEY,
        database_url=db_url,
        results_dir=tmp_path / "results",
        forward={"url": "http://127.0.0.1:9/x", "secret": FORWARD_SECRET},
        plugins={"spy": {"token": OWN_SECRET}, "other": {"password": OTHER_PLUGIN_SECRET}},
        routes=[RouteRule(event_types=["session.status_idled"], handlers=["spy"])],
        worker={"poll_seconds": 0.05, "max_attempts": 1},
    )


async def test_nothing_secret_is_reachable_from_a_handler_context(
    postgres_url: str, emulator_url: str, sessions: Sessions, tmp_path: Any, monkeypatch: Any
) -> None:
    # The SDK reads a webhook key from here unless told otherwise; the client must not hold it.
    monkeypatch.setenv("ANTHROPIC_WEBHOOK_SIGNING_KEY", SIGNING_KEY)
    # Trust authentication on the test server ignores the password; the engine still holds it.
    url = sa.engine.make_url(postgres_url).set(password=DB_PASSWORD)
    db_url = url.render_as_string(hide_password=False)
    settings = secret_settings(db_url, emulator_url, tmp_path)
    engine = make_engine(db_url, pool_size=4)
    try:
        tables = settings.plugins
        spy = build(Spy, "spy", tables["spy"])
        assert isinstance(spy, Spy)
        others = [
            build(Other, "other", tables["other"]),
            ForwardHandler(ForwardHandler.Config.model_validate(dict(settings.forward))),
        ]
        async with wiring.api_client(settings, engine, max_retries=0) as client:
            store = RunStore(engine)
            worker = Worker(store, Registry([spy, *others]), client, settings)
            add_delivery(engine, "session.status_idled", sessions.finished())
            await run_until(worker, lambda: spy.ctx is not None and store.unfinished() == 0)
            ctx = spy.ctx
            assert ctx is not None

            reached = list(walk(ctx, boundary=(sa.engine.Engine,), stop=(ctx.client,)))
            assert len(reached) > 100  # the walk went deep: the reads, the logger, the closures
            assert not [p for p, o in reached if isinstance(o, Settings)]
            for what, secret in {**NOT_THE_API_KEY, "API key": API_KEY}.items():
                assert holding(iter(reached), secret) == [], what
            assert holding(iter(reached), OWN_SECRET) == []  # given to its constructor alone

            # The sanctioned holders: the client's one secret is the API key...
            assert isinstance(ctx.client, AsyncAnthropic)
            assert ctx.client.api_key == API_KEY
            in_client = list(walk(ctx.client, boundary=(sa.engine.Engine,)))
            for what, secret in NOT_THE_API_KEY.items():
                if what != "database password":
                    assert holding(iter(in_client), secret) == [], what
            # ...and the store's engine, the only place the database password is.
            engines = [p for p, o in reached if isinstance(o, sa.engine.Engine)]
            assert engines
            unbounded = list(walk(ctx, stop=(ctx.client,)))
            assert holding(iter(unbounded), DB_PASSWORD)
            assert all(".<closure" in p for p in engines)  # the worker's save record, not ctx's
    finally:
        engine.dispose()
