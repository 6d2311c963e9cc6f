"""`idlehook replay`, `reroute` and `discard` as an operator runs them: each command (and the
worker that drains the queue) a process of its own, against the emulator and a forward target
on loopback, on SQLite and PostgreSQL."""

import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from emulator.app import create_emulator
from emulator.config import EmulatorConfig
from store.engine import make_engine
from store.runs import ROUTE_HANDLER, RunStore
from tests.cli.proc import idlehook
from tests.handlers.conftest import Sessions
from tests.handlers.helpers import add_delivery
from tests.support.servers import serve

SECRET = "whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
IDLED = "session.status_idled"
TERMINATED = "session.status_terminated"
LEASE = timedelta(seconds=30)


@dataclass
class Target:
    """Where `forward` posts: counts what arrived, per session."""

    url: str
    posts: list[str] = field(default_factory=list)


@pytest.fixture
def target() -> Iterator[Target]:
    posts: list[str] = []

    async def receive(request: Request) -> Response:
        posts.append(json.loads(await request.body())["session_id"])
        return Response(status_code=204)

    with serve(Starlette(routes=[Route("/hook", receive, methods=["POST"])])) as url:
        yield Target(f"{url}/hook", posts)


@pytest.fixture
def emulator_url() -> Iterator[str]:
    with serve(create_emulator(EmulatorConfig(speed=200.0, run_seconds=2.0))) as url:
        yield url


@pytest.fixture
def sessions(emulator_url: str) -> Iterator[Sessions]:
    s = Sessions(emulator_url)
    yield s
    s.api.close()


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = make_engine(db_url, pool_size=2)
    yield engine
    engine.dispose()


def refused_url() -> str:
    """A loopback port nothing listens on: every POST is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}/hook"


@dataclass
class Config:
    tmp: Path
    db_url: str
    emulator_url: str

    def write(self, routes: list[tuple[str, list[str]]], forward_url: str = "") -> Path:
        """A config file: the given routes (event type, handlers); a dead letter on the first
        failure, so one drain settles everything."""
        lines = [
            f'database_url = "{self.db_url}"',
            'api_key = "k"',
            f'base_url = "{self.emulator_url}"',
            f'results_dir = "{self.tmp / "results"}"',
            "[worker]",
            "max_attempts = 1",
            "poll_seconds = 0.05",
        ]
        if forward_url:
            lines += ["[forward]", f'url = "{forward_url}"', f'secret = "{SECRET}"']
        for event_type, handlers in routes:
            lines += ["[[routes]]", f"event_types = {json.dumps([event_type])}"]
            lines += [f"handlers = {json.dumps(handlers)}"]
        path = self.tmp / "idlehook.toml"
        path.write_text("\n".join(lines) + "\n")
        return path


@pytest.fixture
def config(tmp_path: Path, db_url: str, emulator_url: str) -> Config:
    return Config(tmp_path, db_url, emulator_url)


def ok(path: Path, *args: str) -> str:
    done = idlehook(path, *args)
    assert done.returncode == 0, done.stderr + done.stdout
    return done.stdout


def drain(path: Path) -> None:
    ok(path, "worker", "--drain")


def runs(store: RunStore, delivery: int) -> list[tuple[str, str]]:
    return [(r.handler, r.state) for r in store.runs_for_delivery(delivery)]


def test_replay_runs_what_the_fixed_config_names_once(
    config: Config, engine: Engine, sessions: Sessions, target: Target
) -> None:
    store = RunStore(engine)
    session_id = sessions.finished()
    delivery = add_delivery(engine, IDLED, session_id)
    broken = config.write([(IDLED, ["log", "forward"])], forward_url=refused_url())
    drain(broken)
    assert runs(store, delivery) == [
        (ROUTE_HANDLER, "succeeded"),
        ("log", "succeeded"),
        ("forward", "dead"),
    ]
    [dead] = store.dead_runs()

    fixed = config.write([(IDLED, ["log", "forward"])], forward_url=target.url)
    out = json.loads(ok(fixed, "replay", "--handler", "forward", "--json"))
    assert out["replayed"] == 1
    [row] = out["dead_letters"]
    assert (row["id"], row["outcome"]) == (dead.id, "replayed")
    # What a route for the type may run now (the answering route is always there).
    assert row["routes_now"] == ["log", "forward", "answer"]
    drain(fixed)
    # forward ran once more and reached the target; log, which had succeeded, did not run again.
    assert target.posts == [session_id]
    assert runs(store, delivery) == [
        (ROUTE_HANDLER, "succeeded"),
        ("log", "succeeded"),
        ("forward", "superseded"),
        (ROUTE_HANDLER, "succeeded"),
        ("forward", "succeeded"),
    ]
    status = json.loads(ok(fixed, "status", "--json"))
    assert status["dead_letters"] == []
    assert "replayed 0 dead letter(s)" in ok(fixed, "replay")


def test_a_typo_handler_dead_letter_runs_the_corrected_name(
    config: Config, engine: Engine, sessions: Sessions
) -> None:
    """`handlers = ["logg"]` (from before such a route was refused at startup) left a dead
    letter; with the route fixed to `log`, replay runs `log`, not `logg` again."""
    store = RunStore(engine)
    session_id = sessions.finished()
    delivery = add_delivery(engine, IDLED, session_id)
    now = datetime.now(UTC)
    [route] = store.claim("old-worker", now, LEASE)
    store.complete_route(route.id, "old-worker", now, 1.0, ["logg"], attempt=1, decision="matched")
    [typo] = store.claim("old-worker", now, LEASE)
    error = "PermanentError: no handler named 'logg' is installed or allowed"
    store.fail(typo.id, "old-worker", now, error, None, 1.0, attempt=1)

    fixed = config.write([(IDLED, ["log"])])
    out = ok(fixed, "replay", "--id", str(typo.id))
    assert f"replayed 1 dead letter(s): {typo.id}" in out
    drain(fixed)
    assert runs(store, delivery) == [
        (ROUTE_HANDLER, "succeeded"),
        ("logg", "superseded"),
        (ROUTE_HANDLER, "succeeded"),
        ("log", "succeeded"),
    ]
    assert store.get(typo.id).superseded_by == store.runs_for_delivery(delivery)[2].id


def test_replay_says_so_when_no_route_names_a_handler(
    config: Config, engine: Engine, sessions: Sessions
) -> None:
    store = RunStore(engine)
    delivery = add_delivery(engine, TERMINATED, sessions.finished())
    drain(config.write([(TERMINATED, ["forward"])]))  # no [forward] url: dead at once
    [dead] = store.dead_runs()
    elsewhere = config.write([(IDLED, ["log"])])
    done = idlehook(elsewhere, "replay", "--id", str(dead.id))
    assert done.returncode == 1
    assert f"not replayed: {dead.id}: no route in the current config names a handler" in (
        done.stdout
    )
    assert runs(store, delivery)[-1] == ("forward", "dead")  # untouched


def test_reroute_unmatched_after_a_route_is_added(
    config: Config, engine: Engine, sessions: Sessions, target: Target
) -> None:
    store = RunStore(engine)
    session_id = sessions.finished()
    delivery = add_delivery(engine, TERMINATED, session_id)
    before = config.write([(IDLED, ["log"])], forward_url=target.url)
    drain(before)
    assert runs(store, delivery) == [(ROUTE_HANDLER, "succeeded")]
    assert store.runs_for_delivery(delivery)[0].decision == "no_rule"

    # Nothing a current route wants yet: left alone, and said so.
    out = json.loads(ok(before, "reroute", "--unmatched", "--dry-run", "--json"))
    assert (out["deliveries"], out["unmatched_no_route_wants"]) == ([], 1)

    after = config.write([(IDLED, ["log"]), (TERMINATED, ["forward"])], forward_url=target.url)
    dry = ok(after, "reroute", "--unmatched", "--dry-run")
    assert "would reroute" in dry
    assert "no_rule" in dry
    assert str(delivery) in dry
    assert len(store.runs_for_delivery(delivery)) == 1  # a dry run changes nothing

    out = json.loads(ok(after, "reroute", "--unmatched", "--json"))
    assert [(d["delivery_id"], d["outcome"]) for d in out["deliveries"]] == [(delivery, "rerouted")]
    drain(after)
    assert target.posts == [session_id]
    assert runs(store, delivery)[1:] == [(ROUTE_HANDLER, "succeeded"), ("forward", "succeeded")]
    # Its latest routing matched: nothing unmatched is left.
    out = json.loads(ok(after, "reroute", "--unmatched", "--json"))
    assert out["deliveries"] == []


def test_reroute_never_runs_a_handler_that_succeeded_again(
    config: Config, engine: Engine, sessions: Sessions, target: Target
) -> None:
    store = RunStore(engine)
    session_id = sessions.finished()
    delivery = add_delivery(engine, IDLED, session_id)
    path = config.write([(IDLED, ["forward", "log"])], forward_url=target.url)
    drain(path)
    assert target.posts == [session_id]

    out = ok(path, "reroute", session_id)
    assert "rerouted 1 delivery" in out
    drain(path)
    out = json.loads(ok(path, "reroute", "--since", "1h", "--json"))
    assert [d["outcome"] for d in out["deliveries"]] == ["rerouted"]
    assert out["deliveries"][0]["runs"] == ["forward:succeeded", "log:succeeded"]
    drain(path)
    # Routed three times; each handler ran once (the target counts the forward's POSTs).
    assert target.posts == [session_id]
    handlers = [h for h, _ in runs(store, delivery)]
    assert handlers == [ROUTE_HANDLER, "forward", "log", ROUTE_HANDLER, ROUTE_HANDLER]
    assert {s for _, s in runs(store, delivery)} == {"succeeded"}
    assert [r.generation for r in store.runs_for_delivery(delivery)] == [0, 0, 0, 1, 2]

    # A range that holds nothing re-routes nothing.
    until = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    assert "rerouted 0 deliveries" in ok(path, "reroute", "--until", until)
    bad = idlehook(path, "reroute", "--since", "yesterday")
    assert bad.returncode == 2
    assert bad.stderr.startswith("error: bad time 'yesterday'")
    assert idlehook(path, "reroute").returncode == 2


def test_discard_keeps_the_reason_and_takes_it_off_status(
    config: Config, engine: Engine, sessions: Sessions, target: Target
) -> None:
    store = RunStore(engine)
    session_id = sessions.finished()
    delivery = add_delivery(engine, IDLED, session_id)
    broken = config.write([(IDLED, ["forward"])], forward_url=refused_url())
    drain(broken)
    [dead] = store.dead_runs()
    assert [d["id"] for d in json.loads(ok(broken, "status", "--json"))["dead_letters"]] == [
        dead.id
    ]

    assert idlehook(broken, "discard", "--id", str(dead.id)).returncode == 2  # no reason
    assert idlehook(broken, "discard", "--reason", "x").returncode == 2  # no selection
    out = json.loads(
        ok(broken, "discard", "--session", session_id, "--reason", "target retired", "--json")
    )
    assert [d["id"] for d in out["discarded"]] == [dead.id]
    run = store.get(dead.id)
    assert (run.state, run.resolution) == ("discarded", "target retired")
    assert (run.resolved_by or "").startswith("cli")
    assert run.resolved_at is not None
    assert json.loads(ok(broken, "status", "--json"))["dead_letters"] == []

    # Not replayable, not discarded twice, and a re-route does not bring it back.
    fixed = config.write([(IDLED, ["forward"])], forward_url=target.url)
    assert "replayed 0 dead letter(s)" in ok(fixed, "replay", "--id", str(dead.id))
    assert idlehook(fixed, "discard", "--id", str(dead.id), "--reason", "x").returncode == 1
    ok(fixed, "reroute", session_id)
    drain(fixed)
    assert target.posts == []
    assert runs(store, delivery) == [
        (ROUTE_HANDLER, "succeeded"),
        ("forward", "discarded"),
        (ROUTE_HANDLER, "succeeded"),
    ]
