"""The archive on S3 (`[archive] url = "s3://bucket/prefix"`), end to end: moto's S3 server on
loopback, the whole service (`wiring.service`, as `idlehook serve` builds it) and more workers,
each with its own engine and client, on the same SQLite store, all archiving to one bucket:
the service's worker alone, then a second alone, then the second and a third at once. The later
sessions have every webhook sent twice.

Read back with an independent client (boto3): each session's folder holds its transcript once
(events.jsonl equal to the emulator's transcript), its results and a marker that matches the
objects, and nothing else (no temporary objects); `idlehook show` reads it back from S3.
"""

import asyncio
import base64
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3  # type: ignore[import-untyped]
import pytest
from moto.server import ThreadedMotoServer
from sqlmodel import Session, col, select

from handlers.builtin.archive_store import MARKER, open_store
from handlers.config import ArchiveSettings, RouteRule, WorkerSettings
from idlehook import wiring
from sessions.session_report import build
from store.models import Delivery, HandlerRun, RunState
from tests.support.servers import wait_for
from tests.support.stack import Running, emulator_and_service

ROOT = Path(__file__).resolve().parents[2]
SECRET = "whsec_" + base64.b64encode(b"S" * 32).decode()
TOKEN = "e2e-archive-s3-token"
BUCKET = "idlehook-archive"
PREFIX = "cluster/results"
RESTS = ["session.status_idled", "session.status_terminated"]
AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """moto's S3 on a free loopback port, the bucket made: its endpoint URL. Credentials come
    from the environment, as s3fs and boto3 read them in production."""
    for name, value in AWS.items():
        monkeypatch.setenv(name, value)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=BUCKET)
    try:
        yield endpoint
    finally:
        server.stop()


class SecondWorker:
    """Another worker on the same store: its own engine, API client and event loop (thread)."""

    def __init__(self, running: Running) -> None:
        self.engine = wiring.open_engine(running.settings)
        self.worker = wiring.worker(
            running.settings, self.engine, wiring.api_client(running.settings, self.engine)
        )
        self.thread = threading.Thread(target=lambda: asyncio.run(self.worker.run()), daemon=True)

    def __enter__(self) -> "SecondWorker":
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.worker.stop()
        self.thread.join(timeout=30)
        self.engine.dispose()


class Stack(Running):
    def launch(self, script: str, n: int) -> list[str]:
        agent, env = self.agent_and_environment("archive-s3")
        return [
            self.start_session(agent, env, f"job {i}", {"emulator_script": script})
            for i in range(n)
        ]

    def archive_runs(self) -> dict[str, list[str]]:
        with Session(self.svc.engine) as db:
            rows = db.exec(
                select(Delivery.session_id, HandlerRun.state)
                .join(Delivery, col(Delivery.id) == col(HandlerRun.delivery_id))
                .where(HandlerRun.handler == "archive")
            ).all()
        out: dict[str, list[str]] = {}
        for sid, state in rows:
            out.setdefault(str(sid), []).append(str(state))
        return out

    def settled(self, ids: list[str]) -> bool:
        runs = self.archive_runs()
        return all(RunState.SUCCEEDED in runs.get(sid, []) for sid in ids) and not any(
            s in (RunState.PENDING, RunState.RUNNING, RunState.FAILED)
            for states in runs.values()
            for s in states
        )

    def duplicates(self) -> int:
        with Session(self.svc.engine) as db:
            return sum(d.duplicates for d in db.exec(select(Delivery)).all())

    def transcript(self, sid: str) -> list[dict[str, Any]]:
        return [e.to_dict(mode="json") for e in self.client().beta.sessions.events.list(sid)]


def objects(endpoint: str) -> dict[str, bytes]:
    """Every object in the bucket, read with boto3 (not the code under test)."""
    client = boto3.client("s3", endpoint_url=endpoint)
    keys: list[str] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
        keys.extend(o["Key"] for o in page.get("Contents", []))
    return {k: client.get_object(Bucket=BUCKET, Key=k)["Body"].read() for k in keys}


def test_two_workers_archive_each_session_once_to_s3(
    s3: str, sqlite_url: str, tmp_path: Path
) -> None:
    url = f"s3://{BUCKET}/{PREFIX}"
    archive = ArchiveSettings(url=url, storage_options={"endpoint_url": s3})
    with (
        emulator_and_service(
            sqlite_url,
            tmp_path,
            secret=SECRET,
            token=TOKEN,
            owner="archive-s3",
            routes=[RouteRule(name="save", event_types=RESTS, handlers=["archive"])],
            archive=archive,
            worker=WorkerSettings(poll_seconds=0.1, backoff_base_seconds=0.1),
        ) as running,
    ):
        s = running.view(Stack)
        # Each phase's sessions are archived by the workers running then: the service's alone,
        # then a second worker alone (so two workers certainly wrote to the bucket), then that
        # one and a third at once, with every webhook sent twice.
        alone = s.launch("end_turn", 2) + s.launch("terminate", 1)
        wait_for(lambda: s.settled(alone), timeout=90)
        assert s.svc.worker is not None
        s.svc.worker.stop()
        with SecondWorker(running):
            s.emulator.apply_config({"faults": {"duplicate": 1.0}})
            second = s.launch("end_turn", 2)
            wait_for(lambda: s.settled(second), timeout=90)
            with SecondWorker(running):
                both = s.launch("end_turn", 3) + s.launch("terminate", 1)
                twice = second + both
                ids = alone + twice
                wait_for(lambda: s.settled(ids), timeout=90)
                wait_for(lambda: s.emulator.sender.pending() == 0, timeout=30)
        assert s.duplicates() >= len(twice)  # the later phases' webhooks came twice
        transcripts = {sid: s.transcript(sid) for sid in ids}
        engine = s.svc.engine
        report = asyncio.run(
            build(
                engine,
                ids[0],
                results_dir=open_store(s.settings.results_dir, url, archive.storage_options),
                pricing=s.settings.pricing(),
                client=None,
            )
        )

    stored = objects(s3)
    folders: dict[str, dict[str, bytes]] = {}
    for key, body in stored.items():
        assert key.startswith(f"{PREFIX}/"), key
        sid, _, name = key.removeprefix(f"{PREFIX}/").partition("/")
        folders.setdefault(sid, {})[name] = body
    assert set(folders) == set(ids)  # nothing but the sessions' folders
    for sid, files in folders.items():
        marker = json.loads(files[MARKER])
        turns = sorted(n for n in files if n.startswith("turns/"))
        # Exactly the archive's files: no temporary objects, one transcript.
        assert sorted(files) == sorted([MARKER, "events.jsonl", "result.json", *turns]), sid
        assert turns == [f"turns/{n:04d}-result.json" for n in range(1, marker["turn"] + 1)]
        assert marker["session_id"] == sid
        assert marker["files"] == {name: len(files[name]) for name in marker["files"]}
        assert set(marker["files"]) == {"events.jsonl", "result.json", turns[-1]}
        events = [json.loads(line) for line in files["events.jsonl"].decode().splitlines()]
        assert events == transcripts[sid]  # the whole transcript, each event once, in order
        assert marker["events"] == len(events)
        result = json.loads(files["result.json"])
        assert result["session_id"] == sid
        assert result["event_count"] == len(events)

    # `idlehook show`'s report, read back from S3.
    assert report.archive is not None
    assert report.archive.path == f"{url}/{ids[0]}"
    assert report.archive.complete is True
    assert report.transcript is not None
    assert report.transcript.source == "archive"
    assert report.transcript.events == len(transcripts[ids[0]])

    # And the command itself, as an operator runs it, with the same configuration file.
    config = tmp_path / "idlehook.toml"
    config.write_text(
        f'database_url = "{sqlite_url}"\n'
        f'results_dir = "{tmp_path / "results"}"\n'
        f'[archive]\nurl = "{url}"\n[archive.storage_options]\nendpoint_url = "{s3}"\n'
    )
    inherited = os.environ.items()  # noqa: TID251 (a child process's environment)
    env = {k: v for k, v in inherited if not k.startswith(("IDLEHOOK_", "ANTHROPIC_"))}
    command = ["show", ids[-1], "--no-api", "--json"]
    shown = subprocess.run(
        [sys.executable, "-m", "idlehook.cli", "--config", str(config), *command],
        capture_output=True,
        text=True,
        timeout=60,
        env={**env, **AWS, "ANTHROPIC_API_KEY": "k"},
        cwd=ROOT,
    )
    assert shown.returncode == 0, shown.stderr
    body = json.loads(shown.stdout)
    assert body["archive"]["path"] == f"{url}/{ids[-1]}"
    assert body["archive"]["complete"] is True
    assert body["transcript"]["source"] == "archive"
    assert not (tmp_path / "results").exists()  # nothing went to the local directory
