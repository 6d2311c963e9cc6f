"""The built-in plugins through the worker, against the emulator and a local forward receiver."""

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import anthropic
import httpx
import pytest
import structlog
from standardwebhooks.webhooks import Webhook
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from emulator.app import create_emulator
from emulator.clock import SpeedClock
from emulator.config import EmulatorConfig
from emulator.core import Emulator
from handlers.builtin.delete import DeleteHandler, moved_on
from handlers.config import ArchiveSettings, ForwardSettings, RouteRule
from handlers.registry import Registry
from handlers.worker import Worker
from idlehook import HandlerContext
from idlehook.settings import Settings
from store.runs import RunStore
from store.sessions import SessionStore
from tests.handlers import support
from tests.handlers.conftest import API_KEY, Sessions
from tests.handlers.helpers import add_delivery
from tests.handlers.support import Recorder, run_until
from tests.support.servers import serve

IDLE = "session.status_idled"
SECRET = "whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="


def builtins(settings: Settings) -> Registry:
    return Registry(support.builtins(settings))


def with_routes(settings: Settings, *handlers: str, **update: Any) -> Settings:
    rule = RouteRule(event_types=[IDLE], stop_reasons=["end_turn"], handlers=list(handlers))
    return settings.model_copy(update={"routes": [rule], **update})


async def test_archive_writes_transcript_and_result_idempotently(
    store: RunStore, engine, settings, client, sessions: Sessions
) -> None:
    session_id = sessions.finished(script="long:3")
    worker = Worker(store, builtins(settings), client, settings)  # the default routes
    add_delivery(engine, IDLE, session_id)
    await run_until(worker, lambda: store.unfinished() == 0)

    folder = settings.results_dir / session_id
    lines = (folder / "events.jsonl").read_text().splitlines()
    api_events = [
        e.to_dict(mode="json") for e in sessions.api.beta.sessions.events.list(session_id)
    ]
    assert [json.loads(line) for line in lines] == api_events  # every event, raw, in order
    assert [e["type"] for e in api_events][-1] == "session.status_idle"
    result = json.loads((folder / "result.json").read_text())
    assert result["session_id"] == session_id
    assert (result["status"], result["stop_reason"]) == ("idle", "end_turn")
    assert result["final_message"] == "Part 3."
    assert result["event_count"] == len(api_events)
    assert result["cost_usd"] is not None
    assert result["active_seconds"] is not None
    tracked = SessionStore(engine).get(session_id)
    assert tracked is not None
    assert tracked.result_captured_at is not None
    assert tracked.transcript_saved_at is not None
    assert tracked.cost_usd == result["cost_usd"]

    # The turn's own copy of the result: this session has rested once.
    assert json.loads((folder / "turns" / "0001-result.json").read_text()) == result

    def snapshot() -> dict[str, Any]:
        files = [p for p in folder.rglob("*") if p.is_file()]
        out: dict[str, Any] = {str(p.relative_to(folder)): p.read_bytes() for p in files}
        # The one thing that moves on its own: wall time since the session was created.
        for name in ("result.json", "turns/0001-result.json"):
            out[name] = {**json.loads(out[name]), "duration_seconds": None}
        return out

    first = snapshot()
    add_delivery(engine, "session.idled", session_id)  # the same news again, other family
    await run_until(worker, lambda: store.unfinished() == 0)
    assert snapshot() == first  # same content, and no temp files left behind


@pytest.mark.parametrize("list_files", [True, False], ids=["listed", "not_listed"])
async def test_result_lists_session_files_only_when_configured(
    store, engine, settings, client, sessions, list_files: bool
) -> None:
    session_id = sessions.finished(script="files:2")
    config = with_routes(settings, "archive", archive=ArchiveSettings(list_files=list_files))
    worker = Worker(store, builtins(config), client, config)
    add_delivery(engine, IDLE, session_id)
    await run_until(worker, lambda: store.unfinished() == 0)
    result = json.loads((settings.results_dir / session_id / "result.json").read_text())
    if list_files:
        assert sorted(f["filename"] for f in result["files"]) == ["output-1.txt", "output-2.txt"]
    else:
        # Not listed is said as null, never as an empty list that would claim "no files".
        assert "files" in result
        assert result["files"] is None


async def test_delete_runs_after_archive_and_stops_the_session(
    store, engine, settings, client, sessions: Sessions
) -> None:
    session_id = sessions.finished()
    config = with_routes(settings, "archive", "log", "delete")
    worker = Worker(store, builtins(config), client, config)
    delivery = add_delivery(engine, IDLE, session_id)
    await run_until(worker, lambda: store.unfinished() == 0)
    runs = store.runs_for_delivery(delivery)
    assert [(r.handler, r.state) for r in runs] == [
        ("_route", "succeeded"),
        ("archive", "succeeded"),
        ("log", "succeeded"),
        ("delete", "succeeded"),
    ]
    assert runs[1].finished_at <= runs[3].finished_at
    assert (settings.results_dir / session_id / "events.jsonl").exists()

    with pytest.raises(anthropic.NotFoundError):
        sessions.api.beta.sessions.retrieve(session_id)
    tracked = SessionStore(engine).get(session_id)
    assert tracked is not None
    assert tracked.deleted_at is not None


async def test_delete_refuses_when_an_earlier_handler_is_dead(
    store, engine, settings, client, sessions: Sessions
) -> None:
    session_id = sessions.finished()
    broken = Recorder("broken", fail_times=99, permanent=True)
    registry = Registry([broken, DeleteHandler()])
    worker = Worker(store, registry, client, with_routes(settings, "broken", "delete"))
    delivery = add_delivery(engine, IDLE, session_id)
    await run_until(worker, lambda: store.unfinished() == 0)
    assert [r.state for r in store.runs_for_delivery(delivery)] == ["succeeded", "dead", "dead"]
    assert sessions.api.beta.sessions.retrieve(session_id).status == "idle"  # still there


def forward_receiver(received: list[dict[str, Any]], fail_first: int) -> Starlette:
    verifier = Webhook(SECRET)

    async def hook(request: Request) -> JSONResponse:
        body = (await request.body()).decode()
        try:
            payload = verifier.verify(body, dict(request.headers))
        except Exception:
            return JSONResponse({"error": "bad signature"}, status_code=401)
        received.append({"id": request.headers["webhook-id"], "payload": payload})
        if len(received) <= fail_first:
            return JSONResponse({"error": "try later"}, status_code=503)
        return JSONResponse({"ok": True})

    return Starlette(routes=[Route("/hook", hook, methods=["POST"])])


async def test_forward_posts_a_signed_result_and_retries_on_non_2xx(
    store, engine, settings, client, sessions: Sessions
) -> None:
    from tests.support.servers import serve

    session_id = sessions.finished()
    received: list[dict[str, Any]] = []
    with serve(forward_receiver(received, fail_first=1)) as url:
        config = with_routes(
            settings, "forward", forward=ForwardSettings(url=f"{url}/hook", secret=SECRET)
        )
        worker = Worker(store, builtins(config), client, config)
        delivery = add_delivery(engine, IDLE, session_id, event_id="wevt_fwd")
        await run_until(worker, lambda: store.unfinished() == 0)
    assert [(r.handler, r.state, r.attempts) for r in store.runs_for_delivery(delivery)][1] == (
        "forward",
        "succeeded",
        2,
    )
    assert [r["id"] for r in received] == ["wevt_fwd.forward"] * 2  # stable id: dedupable
    payload = received[-1]["payload"]
    assert payload["session_id"] == session_id
    assert payload["event_id"] == "wevt_fwd"
    assert payload["result"]["stop_reason"] == "end_turn"


async def test_forward_with_a_wrong_secret_is_rejected_and_unconfigured_is_dead(
    store, engine, settings, client, sessions: Sessions
) -> None:
    from tests.support.servers import serve

    session_id = sessions.finished()
    received: list[dict[str, Any]] = []
    with serve(forward_receiver(received, fail_first=0)) as url:
        wrong = "whsec_" + "QUJD" * 11
        config = with_routes(
            settings, "forward", forward=ForwardSettings(url=f"{url}/hook", secret=wrong)
        )
        worker = Worker(store, builtins(config), client, config)
        bad = add_delivery(engine, IDLE, session_id)
        await run_until(worker, lambda: store.unfinished() == 0)
    assert received == []
    run = store.runs_for_delivery(bad)[1]
    assert (run.state, run.attempts) == ("dead", settings.worker.max_attempts)
    assert "401" in (run.last_error or "")

    bare = with_routes(settings, "forward")
    unconfigured = Worker(store, builtins(bare), client, bare)
    missing = add_delivery(engine, IDLE, session_id)
    await run_until(unconfigured, lambda: store.unfinished() == 0)
    run = store.runs_for_delivery(missing)[1]
    assert (run.state, run.attempts) == ("dead", 1)


class NewTurn:
    """Stands in for a user.message arriving while the handlers before `delete` ran: sends one
    (a long turn, or a short one on a wall clock moved ahead) before delete's turn comes."""

    name = "new_turn"

    def __init__(self, emu: Emulator, finish: bool, shift: list[timedelta]) -> None:
        self.emu = emu
        self.finish = finish
        self.shift = shift

    async def handle(self, ctx: HandlerContext) -> None:
        if self.finish:
            self.shift[0] = timedelta(seconds=30)  # the new turn happens well after
        else:
            self.emu.apply_config({"run_seconds": 100_000.0})  # still running when delete runs
        message = {"type": "user.message", "content": [{"type": "text", "text": "more"}]}
        await ctx.client.beta.sessions.events.send(ctx.session_id, events=[message])  # type: ignore[list-item]
        if self.finish:
            while (await ctx.client.beta.sessions.retrieve(ctx.session_id)).status != "idle":
                await asyncio.sleep(0.02)


@pytest.mark.parametrize("finish", [False, True], ids=["running", "ran_again"])
async def test_delete_spares_a_session_that_moved_on_after_the_notification(
    store, engine, settings, finish: bool
) -> None:
    shift = [timedelta(0)]
    clock = SpeedClock(200.0, wall=lambda: datetime.now(UTC) + shift[0])
    emu = Emulator(EmulatorConfig(speed=200.0, run_seconds=2.0), clock=clock)
    with serve(create_emulator(emulator=emu)) as url:
        sessions = Sessions(url)
        session_id = sessions.finished()
        async with anthropic.AsyncAnthropic(api_key=API_KEY, base_url=url, max_retries=0) as client:
            registry = Registry([NewTurn(emu, finish, shift), DeleteHandler()])
            worker = Worker(store, registry, client, with_routes(settings, "new_turn", "delete"))
            delivery = add_delivery(engine, IDLE, session_id)
            await run_until(worker, lambda: store.unfinished() == 0)
        status = sessions.api.beta.sessions.retrieve(session_id).status
        sessions.api.close()
    assert [r.state for r in store.runs_for_delivery(delivery)] == ["succeeded"] * 3
    assert status == ("idle" if finish else "running")  # not deleted
    tracked = SessionStore(engine).get(session_id)
    assert tracked is not None
    assert tracked.deleted_at is None


@pytest.mark.parametrize(
    ("status", "change", "expected"),
    [
        ("running", None, "status_running"),
        ("rescheduling", None, "status_rescheduling"),
        ("idle", 0.0, None),
        ("idle", 0.5, None),  # within the envelope's skew
        ("idle", 5.0, "changed_since_notified"),
        ("terminated", -10.0, None),
        ("idle", None, None),
    ],
)
def test_moved_on(status: str, change: float | None, expected: str | None) -> None:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    last = None if change is None else at + timedelta(seconds=change)
    assert moved_on(status, last, received_at=at, event_created_at=at) == expected
    # Our clock behind Anthropic's: the envelope time still covers the notified transition.
    assert moved_on("idle", at + timedelta(seconds=3), at, at + timedelta(seconds=3)) is None


async def test_one_deliverys_handlers_share_one_read_of_the_transcript(
    store: RunStore, settings, emulator_url: str, sessions: Sessions
) -> None:
    """archive then log, for one delivery: the session and its transcript are read once, by the
    routing step, and shared by both handlers; files are not listed unless configured."""
    session_id = sessions.finished(script="long:3")
    asked: list[str] = []

    async def count(request: httpx.Request) -> None:
        asked.append(f"{request.method} {request.url.path}")

    http = anthropic.DefaultAsyncHttpxClient(event_hooks={"request": [count]})
    async with anthropic.AsyncAnthropic(
        api_key=API_KEY, base_url=emulator_url, max_retries=0, http_client=http
    ) as client:
        config = with_routes(settings, "archive", "log")
        worker = Worker(store, builtins(config), client, config)
        add_delivery(store.engine, IDLE, session_id)
        with structlog.testing.capture_logs() as logs:
            await run_until(worker, lambda: store.unfinished() == 0)
    # Routing reads the session and every event; archive and log read nothing more.
    assert asked == [f"GET /v1/sessions/{session_id}", f"GET /v1/sessions/{session_id}/events"]
    [line] = [e for e in logs if e["event"] == "session.result"]
    assert (line["session_id"], line["stop_reason"]) == (session_id, "end_turn")
    assert (settings.results_dir / session_id / "result.json").exists()
