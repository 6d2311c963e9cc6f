"""`idlehook start --batch`: a line without a key gets one derived from its content and its
occurrence among identical lines, so running a file again launches nothing new, two identical
lines are two sessions, and a key given is kept."""

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sessions.batch import content_digest, read_batch, with_keys
from sessions.launcher import InvalidLaunch, LaunchRequest
from tests.sessions.reaping import Api, emulator

JOB = {"agent": "agent_01", "environment": "env_01", "message": "triage T-1"}


def write_lines(path: Path, lines: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def keys(requests: list[LaunchRequest]) -> list[str | None]:
    return [r.idempotency_key for r in requests]


# -- the derivation, pure ---------------------------------------------------------------------


def test_identical_lines_get_distinct_keys_and_the_same_ones_each_time(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "jobs.jsonl", [JOB, JOB, {**JOB, "message": "triage T-2"}])
    first = keys(read_batch(path, strict=False))
    assert first == keys(read_batch(path, strict=False))
    assert len(set(first)) == 3
    digest = content_digest(LaunchRequest.parse(JOB))
    assert first[:2] == [f"batch-{digest}-1", f"batch-{digest}-2"]
    assert len(digest) == 24


def test_inserting_other_lines_shifts_no_key(tmp_path: Path) -> None:
    other = {**JOB, "message": "something else"}
    before = keys(read_batch(write_lines(tmp_path / "a.jsonl", [JOB, JOB]), strict=False))
    after = keys(
        read_batch(write_lines(tmp_path / "b.jsonl", [other, JOB, other, JOB]), strict=False)
    )
    assert [after[1], after[3]] == before


def test_spelling_does_not_matter_content_does() -> None:
    spelled = LaunchRequest.parse(
        {"message": "triage T-1", "environment_id": "env_01", "agent": "agent_01",
         "metadata": [], "files": [], "strict": None}
    )  # fmt: skip
    assert content_digest(spelled) == content_digest(LaunchRequest.parse(JOB))
    for change in ({"message": "triage T-1 "}, {"metadata": {"a": "1"}}, {"deadline": "2h"}):
        assert content_digest(LaunchRequest.parse({**JOB, **change})) != content_digest(
            LaunchRequest.parse(JOB)
        )


def test_a_key_given_is_kept_and_counts_no_occurrence(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "jobs.jsonl", [{**JOB, "idempotency_key": "mine"}, JOB])
    got = keys(read_batch(path, strict=False))
    assert got[0] == "mine"
    assert got[1] == f"batch-{content_digest(LaunchRequest.parse(JOB))}-1"


def test_flags_fill_lines_in_but_do_not_change_their_keys(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "jobs.jsonl", [JOB, {**JOB, "budget": 3, "strict": False}])
    plain = read_batch(path, strict=False)
    flagged = read_batch(path, strict=True, budget=7.5)
    assert keys(plain) == keys(flagged)
    assert (flagged[0].strict, flagged[0].budget_usd) == (True, 7.5)
    assert (flagged[1].strict, flagged[1].budget_usd) == (False, 3)


def test_with_keys_leaves_requests_otherwise_unchanged() -> None:
    request = LaunchRequest.parse({**JOB, "metadata": {"t": "1"}, "deadline": "2h"})
    (keyed,) = with_keys([request])
    assert keyed.model_dump(exclude={"idempotency_key"}) == request.model_dump(
        exclude={"idempotency_key"}
    )


def test_a_bad_line_is_located(tmp_path: Path) -> None:
    path = tmp_path / "jobs.jsonl"
    path.write_text(json.dumps(JOB) + "\n\n{not json\n")
    with pytest.raises(InvalidLaunch, match=r"jobs.jsonl:3: not valid JSON"):
        read_batch(path, strict=False)
    path.write_text("\n")
    with pytest.raises(InvalidLaunch, match="no launches in it"):
        read_batch(path, strict=False)


# -- through the CLI process, against the emulator --------------------------------------------


@pytest.fixture
def api() -> Iterator[Api]:
    with emulator() as running:
        yield running


def idlehook(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    inherited = os.environ.items()  # noqa: TID251 (a child process's environment)
    env = {k: v for k, v in inherited if k not in ("COLUMNS", "LINES")}
    return subprocess.run(
        [sys.executable, "-m", "idlehook.cli", "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )


@pytest.mark.slow
def test_running_a_batch_file_twice_launches_each_line_once(
    tmp_path: Path, sqlite_url: str, api: Api
) -> None:
    config = tmp_path / "idlehook.toml"
    config.write_text(
        f'database_url = "{sqlite_url}"\n'
        f'results_dir = "{tmp_path / "results"}"\n'
        f'api_key = "sk-test"\nbase_url = "{api.url}"\n'
        "create_rpm = 6000\nread_rpm = 6000\n"
    )
    job = {"agent": api.agent_id, "environment": api.env_id, "message": "triage T-1"}
    lines = [job, job, {**job, "message": "triage T-2"}, {**job, "idempotency_key": "ticket-3"}]
    batch = write_lines(tmp_path / "jobs.jsonl", lines)

    first = idlehook(config, "start", "--batch", str(batch), "--drain", "--json")
    assert first.returncode == 0, first.stderr
    launched = json.loads(first.stdout)
    assert [r["state"] for r in launched] == ["created"] * 4
    assert all(r["new"] for r in launched)
    assert len({r["session_id"] for r in launched}) == 4  # the identical lines are two sessions
    assert launched[3]["idempotency_key"] == "ticket-3"
    assert api.emu.creates["sessions"] == 4

    again = idlehook(config, "start", "--batch", str(batch))
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == "queued 0 launches (4 already known)"
    drained = idlehook(config, "start", "--batch", str(batch), "--drain", "--json")
    assert drained.returncode == 0, drained.stderr
    assert [r["session_id"] for r in json.loads(drained.stdout)] == [
        r["session_id"] for r in launched
    ]
    assert api.emu.creates["sessions"] == 4
    assert len(api.emu.store.sessions) == 4

    # A line added to the file is the one new launch; the others keep their keys.
    write_lines(batch, [{**job, "message": "triage T-0"}, *lines])
    grown = idlehook(config, "start", "--batch", str(batch), "--drain", "--json")
    assert grown.returncode == 0, grown.stderr
    assert [r["new"] for r in json.loads(grown.stdout)] == [True, False, False, False, False]
    assert api.emu.creates["sessions"] == 5
