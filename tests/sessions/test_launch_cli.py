"""`idlehook start`, `sessions` and `launches`, run in-process against the emulator."""

import json
from pathlib import Path

import pytest

from idlehook.cli import main
from tests.support import cli

_logging_back_to_defaults = cli.logging_back_to_defaults
w = cli.w
config = cli.config_fixture("cli-tests")


def run(config: Path, *args: str) -> int:
    return main(["--config", str(config), *args])


def test_start_prints_the_session_id(w, config: Path, capsys) -> None:
    code = run(
        config,
        "start",
        "--agent", w.agent_id,
        "--environment", w.limited_env,
        "--message", "Triage issue 42",
        "--metadata", "ticket=T-42",
        "--route", "triage",
        "--deadline", "2h",
        "--idempotency-key", "issue-42",
    )  # fmt: skip
    out = capsys.readouterr().out.strip()
    assert code == 0
    assert out.startswith("sesn_")
    assert w.session_creates() == 1
    assert w.open_streams() == 0
    # Same key again: same session, still one create.
    code = run(
        config, "start", "--agent", w.agent_id, "--environment", w.limited_env,
        "--message", "Triage issue 42", "--idempotency-key", "issue-42", "--json",
    )  # fmt: skip
    again = json.loads(capsys.readouterr().out)
    assert code == 0
    assert again["session_id"] == out
    assert again["new"] is False
    assert w.session_creates() == 1

    assert run(config, "sessions", "--json") == 0
    [listed] = json.loads(capsys.readouterr().out)
    assert listed["id"] == out
    assert listed["route"] == "triage"
    assert listed["status"] == "running"
    assert run(config, "sessions") == 0
    assert out in capsys.readouterr().out


def test_warnings_go_to_stderr_and_strict_refuses(w, config: Path, capsys) -> None:
    base = ["start", "--agent", w.agent_id, "--environment", w.open_env, "--message", "hi"]
    assert run(config, *base) == 0
    captured = capsys.readouterr()
    assert captured.out.strip().startswith("sesn_")
    assert "warning: environment" in captured.err
    assert "unrestricted networking" in captured.err

    assert run(config, *base, "--strict") == 1
    assert "error: refusing to launch" in capsys.readouterr().err
    assert w.session_creates() == 1


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--agent", "agent_1:latest"], "bad agent 'agent_1:latest'"),
        (["--deadline", "tomorrow"], "bad duration 'tomorrow'"),
        (["--metadata", "novalue"], "bad metadata 'novalue'"),
        (["--environment", "env_missing"], "unknown environment env_missing"),
    ],
)
def test_bad_flags_fail_clearly(w, config: Path, capsys, flags, message) -> None:
    base = {"--agent": w.agent_id, "--environment": w.limited_env, "--message": "hi"}
    args = ["start"]
    for name, value in base.items():
        if name not in flags:
            args += [name, value]
    assert run(config, *args, *flags) == 1
    assert message in capsys.readouterr().err
    assert w.session_creates() == 0


def test_missing_flags_are_named(w, config: Path, capsys) -> None:
    assert run(config, "start", "--agent", w.agent_id) == 1
    assert "missing --environment, --message" in capsys.readouterr().err


def test_file_ids_are_mounted_and_paths_need_an_upload_endpoint(
    w, config: Path, tmp_path: Path, capsys
) -> None:
    base = ["start", "--agent", w.agent_id, "--environment", w.limited_env, "--message", "hi"]
    assert run(config, *base, "--file", "file_abc123") == 0
    sid = capsys.readouterr().out.strip()
    session = w.sync_client().beta.sessions.retrieve(sid)
    assert [r.file_id for r in session.resources] == ["file_abc123"]

    local = tmp_path / "notes.txt"
    local.write_text("hello")
    assert run(config, *base, "--file", str(local)) == 1
    assert "pass an existing file_... id" in capsys.readouterr().err


def test_queue_and_batch_enqueue_without_creating(w, config: Path, tmp_path: Path, capsys) -> None:
    base = ["start", "--agent", w.agent_id, "--environment", w.limited_env, "--message", "hi"]
    assert run(config, *base, "--queue") == 0
    assert capsys.readouterr().out.startswith("queued launch ")

    batch = tmp_path / "jobs.jsonl"
    lines = [
        {"agent": w.agent_id, "environment": w.limited_env, "message": f"job {i}",
         "metadata": ["team=core"], "idempotency_key": f"job-{i}"}
        for i in range(3)
    ]  # fmt: skip
    batch.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    assert run(config, "start", "--batch", str(batch)) == 0
    assert "queued 3 launches (0 already known)" in capsys.readouterr().out
    assert run(config, "start", "--batch", str(batch)) == 0
    assert "queued 0 launches (3 already known)" in capsys.readouterr().out
    assert w.session_creates() == 0

    assert run(config, "launches", "--json") == 0
    listing = json.loads(capsys.readouterr().out)
    assert listing["counts"] == {"queued": 4}
    assert run(config, "launches") == 0
    assert "4 queued" in capsys.readouterr().out


def test_a_bad_batch_line_is_located(w, config: Path, tmp_path: Path, capsys) -> None:
    batch = tmp_path / "jobs.jsonl"
    good = {"agent": w.agent_id, "environment": w.limited_env, "message": "ok"}
    bad = {**good, "colour": "blue"}
    batch.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    assert run(config, "start", "--batch", str(batch)) == 1
    assert "jobs.jsonl:2: colour: unknown field" in capsys.readouterr().err
