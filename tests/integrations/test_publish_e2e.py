"""The whole service (`wiring.service`, as `idlehook serve` builds it) on loopback, publishing
finished sessions to each broker the machine runs, read back by the example consumer
(examples/consumers/), a process of its own:

- every webhook is sent twice, and each transition still makes exactly one message, after the
  transcript is archived (the message says where);
- the broker goes away mid-run (a proxy between the plugin and the broker shuts and cuts its
  connections): the runs fail, retry and are dead-lettered, and no result is recorded saved;
  it comes back, `replay` brings the dead letters back, and each is delivered exactly once.
"""

import asyncio
import base64
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from sqlmodel import Session, col, select

from handlers.config import RouteRule, WorkerSettings
from store.models import Delivery, HandlerRun, RunState, TrackedSession
from store.runs import RunStore
from tests.integrations.brokers import Broker
from tests.integrations.proxy import tcp_proxy
from tests.integrations.schema import validate
from tests.support.servers import wait_for
from tests.support.stack import Running, emulator_and_service

SECRET = "whsec_" + base64.b64encode(b"P" * 32).decode()
TOKEN = "e2e-publish-token"
RESTS = ["session.status_idled", "session.status_terminated"]


class Stack(Running):
    def launch(self, script: str, n: int) -> list[str]:
        agent, env = self.agent_and_environment("publish")
        return [
            self.start_session(agent, env, f"job {i}", {"emulator_script": script})
            for i in range(n)
        ]

    def states(self, handler: str) -> dict[str, list[str]]:
        """Each session's runs of `handler`, by state."""
        with Session(self.svc.engine) as db:
            rows = db.exec(
                select(Delivery.session_id, HandlerRun.state)
                .join(Delivery, col(Delivery.id) == col(HandlerRun.delivery_id))
                .where(HandlerRun.handler == handler)
            ).all()
        out: dict[str, list[str]] = {}
        for sid, state in rows:
            out.setdefault(str(sid), []).append(str(state))
        return out

    def settled(self, handler: str, ids: list[str], state: str) -> bool:
        runs = self.states(handler)
        return all(state in runs.get(sid, []) for sid in ids) and not any(
            s in (RunState.PENDING, RunState.RUNNING, RunState.FAILED)
            for states in runs.values()
            for s in states
        )

    def saved(self, ids: list[str]) -> dict[str, bool]:
        with Session(self.svc.engine) as db:
            rows = db.exec(select(TrackedSession).where(col(TrackedSession.id).in_(ids))).all()
        return {r.id: r.result_captured_at is not None for r in rows}

    def event_ids(self) -> set[str]:
        with Session(self.svc.engine) as db:
            return {d.event_id for d in db.exec(select(Delivery)).all()}

    def duplicates(self) -> int:
        with Session(self.svc.engine) as db:
            return sum(d.duplicates for d in db.exec(select(Delivery)).all())


@contextmanager
def stack(
    sqlite_url: str, tmp_path: Path, broker: Broker, handlers: list[str], port: int
) -> Iterator[Stack]:
    with emulator_and_service(
        sqlite_url,
        tmp_path,
        secret=SECRET,
        token=TOKEN,
        owner="publish",
        emulator_config={"faults": {"duplicate": 1.0}},
        routes=[RouteRule(name="publish", event_types=RESTS, handlers=handlers)],
        plugins={broker.plugin: broker.table(port)},
        worker=WorkerSettings(
            poll_seconds=0.1,
            backoff_base_seconds=0.1,
            backoff_max_seconds=0.3,
            max_attempts=3,
        ),
    ) as running:
        yield running.view(Stack)


def test_duplicated_webhooks_make_one_message_per_transition(
    broker: Broker, sqlite_url: str, tmp_path: Path
) -> None:
    with stack(sqlite_url, tmp_path, broker, ["archive", broker.plugin], broker.port) as s:
        done = s.launch("end_turn", 3)
        ended = s.launch("terminate", 1)
        ids = done + ended
        wait_for(lambda: s.settled(broker.plugin, ids, RunState.SUCCEEDED), timeout=60)
        wait_for(lambda: s.emulator.sender.pending() == 0, timeout=30)
        assert s.duplicates() >= len(ids)  # every webhook came twice
        assert all(s.saved(ids).values())
        event_ids = s.event_ids()
        results_dir = s.settings.results_dir

    read = broker.read()
    by_session = {m["session_id"]: m for m in read.messages}
    assert len(read.messages) == len(ids) == len(by_session)  # one each, none twice
    assert set(by_session) == set(ids)
    assert "repeat" not in read.stderr
    for sid, message in by_session.items():
        validate(message)
        assert message["event"]["id"] in event_ids
        assert message["message_id"] == f"{message['event']['id']}:{broker.plugin}"
        assert message["cost"]["billing_model"] == s.settings.billing_model
        archive = message["archive"]
        assert archive["directory"] == str(results_dir / sid)
        assert Path(archive["transcript"]).is_file()
        assert Path(archive["result"]).is_file()
        if sid in ended:
            assert (message["status"], message["outcome"]) == ("terminated", "terminated")
            assert message["event"]["type"] == "session.status_terminated"
        else:
            assert (message["status"], message["stop_reason"]) == ("idle", "end_turn")
            assert message["final_message"]


def test_a_broker_gone_mid_run_dead_letters_then_replay_delivers_once(
    broker: Broker, sqlite_url: str, tmp_path: Path
) -> None:
    with (
        tcp_proxy("127.0.0.1", broker.port) as proxy,
        stack(sqlite_url, tmp_path, broker, [broker.plugin], proxy.port) as s,
    ):
        # Up: the plugin connects through the proxy, and keeps that connection.
        first = s.launch("end_turn", 1)
        wait_for(lambda: s.settled(broker.plugin, first, RunState.SUCCEEDED), timeout=60)

        # Down: the kept connection is cut and new ones refused.
        proxy.shut()
        later = s.launch("end_turn", 2)
        wait_for(lambda: s.settled(broker.plugin, later, RunState.DEAD), timeout=60)
        runs = s.states(broker.plugin)
        assert all(runs[sid] == [RunState.DEAD] for sid in later)
        assert s.saved(later) == dict.fromkeys(later, False)
        assert asyncio.run(broker.stored()) == 1

        # Back: replay the dead letters; each is delivered once, and only then saved.
        proxy.open()
        replayed = RunStore(s.svc.engine).replay(datetime.now(UTC))
        assert len(replayed) == len(later)
        assert s.svc.worker is not None
        s.svc.worker.wake()
        wait_for(lambda: s.settled(broker.plugin, later, RunState.SUCCEEDED), timeout=60)
        assert all(s.saved(first + later).values())
        assert proxy.accepted >= 2  # it connected anew after the cut

    read = broker.read()
    sessions = sorted(m["session_id"] for m in read.messages)
    assert sessions == sorted(first + later)
    assert "repeat" not in read.stderr
    for message in read.messages:
        validate(message)
        assert message["archive"] is None  # no archive route here
