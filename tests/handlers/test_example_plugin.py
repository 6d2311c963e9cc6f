"""The README's example plugin package works: its entry point names the class, and the class,
run by the worker on a finished session, posts that session's result."""

import importlib.util
import sys
import tomllib
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from handlers.registry import Registry
from handlers.worker import Worker
from idlehook.settings import RouteRule
from store.runs import RunStore
from store.sessions import SessionStore
from tests.handlers.conftest import Sessions
from tests.handlers.helpers import add_delivery
from tests.handlers.support import run_until
from tests.support.servers import serve

EXAMPLE = Path(__file__).parents[2] / "examples" / "idlehook-slack"


def load_example() -> Any:
    spec = importlib.util.spec_from_file_location("idlehook_slack", EXAMPLE / "idlehook_slack.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["idlehook_slack"] = module
    spec.loader.exec_module(module)
    return module


def test_entry_point_names_the_handler_class() -> None:
    meta = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())
    target = meta["project"]["entry-points"]["idlehook.handlers"]["slack"]
    module_name, _, attr = target.partition(":")
    assert module_name == "idlehook_slack"
    assert getattr(load_example(), attr).name == "slack"


async def test_example_posts_the_result_of_a_finished_session(
    store: RunStore, engine, settings, client, sessions: Sessions
) -> None:
    posted: list[dict[str, Any]] = []

    async def slack(request: Request) -> JSONResponse:
        posted.append(await request.json())
        return JSONResponse({"ok": True})

    session_id = sessions.finished(script="long:2")
    handler = load_example().SlackHandler
    with serve(Starlette(routes=[Route("/hook", slack, methods=["POST"])])) as url:
        rule = RouteRule(
            event_types=["session.status_idled"], stop_reasons=["end_turn"], handlers=["slack"]
        )
        settings = settings.model_copy(update={"routes": [rule]})
        worker = Worker(store, Registry([handler(url + "/hook")]), client, settings)
        add_delivery(engine, "session.status_idled", session_id)
        await run_until(worker, lambda: store.unfinished() == 0)

    assert len(posted) == 1
    assert posted[0]["text"].startswith(f"{session_id} finished (end_turn): ")
    assert "Part 2." in posted[0]["text"]
    assert SessionStore(engine).get(session_id) is not None
