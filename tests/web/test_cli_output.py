"""Terminal output: `start --batch --drain` creates the batch from the command with a progress
bar and ends on a table (or JSON); the bar is drawn only on a terminal."""

import io
import json
from pathlib import Path

from rich.console import Console

from idlehook.cli import main, progress
from tests.support import cli

_logging_back_to_defaults = cli.logging_back_to_defaults
w = cli.w
config = cli.config_fixture("cli-output")


def batch_file(tmp_path: Path, w, n: int, prefix: str) -> Path:
    path = tmp_path / f"{prefix}.jsonl"
    lines = [
        {
            "agent": w.agent_id,
            "environment": w.limited_env,
            "message": f"job {i}",
            "idempotency_key": f"{prefix}-{i}",
        }
        for i in range(n)
    ]
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    return path


def test_batch_drain_creates_every_launch_and_prints_a_table(
    w, config: Path, tmp_path: Path, capsys
) -> None:
    batch = batch_file(tmp_path, w, 3, "table")
    assert main(["--config", str(config), "start", "--batch", str(batch), "--drain"]) == 0
    out = capsys.readouterr().out
    assert "3 of 3 launches created" in out
    assert out.count("sesn_") == 3
    assert w.session_creates() == 3


def test_batch_drain_json_is_plain_json(w, config: Path, tmp_path: Path, capsys) -> None:
    batch = batch_file(tmp_path, w, 2, "json")
    args = ["--config", str(config), "start", "--batch", str(batch), "--drain", "--json"]
    assert main(args) == 0
    results = json.loads(capsys.readouterr().out)
    assert [r["state"] for r in results] == ["created", "created"]
    assert all(r["session_id"].startswith("sesn_") for r in results)


def test_drain_without_batch_is_refused(config: Path, capsys) -> None:
    assert main(["--config", str(config), "start", "--drain"]) == 1
    assert "--drain goes with --batch" in capsys.readouterr().err


def test_progress_bar_draws_only_on_a_terminal() -> None:
    terminal = io.StringIO()
    console = Console(file=terminal, force_terminal=True, width=100)
    with progress.bar(console, "reaping") as report:
        report(2, 5)
        report(5, 5)
    assert "reaping" in terminal.getvalue()

    piped = io.StringIO()
    with progress.bar(Console(file=piped, force_terminal=False), "reaping") as report:
        report(1, 1)
    assert piped.getvalue() == ""
    with progress.bar(console, "reaping", enabled=False) as report:
        report(1, 1)
