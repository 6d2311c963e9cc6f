"""Commands are quiet: what they did on stdout, no log lines on stderr unless asked (-v,
--log-level), no progress bar that never moves, and a database that cannot be reached is one
line naming it (its password masked), never a traceback. Real processes, the emulator, SQLite."""

import os
import pty
import select
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli.proc import idlehook
from tests.sessions.test_launch_helpers import World
from tests.support import cli

_logging_back_to_defaults = cli.logging_back_to_defaults
w = cli.w
config = cli.config_fixture("quiet")


def _start(w: World, config: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    args = ["start", "--agent", w.agent_id, "--environment", w.limited_env, "--message", "hello"]
    return idlehook(config, *flags, *args)


def test_start_prints_the_session_id_and_logs_nothing(w: World, config: Path) -> None:
    done = _start(w, config)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().startswith("sesn_")
    assert len(done.stdout.splitlines()) == 1
    assert done.stderr == ""


def test_verbose_and_log_level_bring_the_log_lines_back(w: World, config: Path) -> None:
    for flags in (["--verbose"], ["--log-level", "info"]):
        done = _start(w, config, *flags)
        assert done.returncode == 0, done.stderr
        assert '"event": "launch.created"' in done.stderr, flags
        assert done.stdout.strip().startswith("sesn_")  # stdout stays the command's output
    quiet = _start(w, config, "--quiet")
    assert quiet.returncode == 0
    assert quiet.stderr == ""


def test_status_sessions_and_keys_log_nothing(config: Path, w: World) -> None:
    for args in (["status"], ["status", "--json"], ["sessions"], ["keys", "list"]):
        done = idlehook(config, *args)
        assert done.returncode == 0, (args, done.stderr)
        assert done.stderr == "", args
        assert done.stdout, args


def test_db_migrate_names_the_database_and_its_revision(config: Path, sqlite_url: str) -> None:
    done = idlehook(config, "db", "migrate")
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"schema of {sqlite_url} is up to date (revision 0012)\n"
    assert done.stderr == ""


@pytest.mark.parametrize(
    "args", [["status"], ["sessions"], ["db", "migrate"], ["keys", "list"], ["status", "--json"]]
)
def test_an_unreachable_database_is_one_line_naming_it(tmp_path: Path, args: list[str]) -> None:
    # Nobody listens on 5999: the connection is refused at once.
    url = "postgresql+psycopg://postgres:s3cret-pw@127.0.0.1:5999/test"
    config = tmp_path / "idlehook.toml"
    config.write_text(f'database_url = "{url}"\n')
    done = idlehook(config, *args)
    assert done.returncode == 3
    assert done.stderr.splitlines() == [
        "error: cannot open database postgresql+psycopg://postgres:***@127.0.0.1:5999/test: "
        "connection refused"
    ]
    assert "s3cret-pw" not in done.stdout + done.stderr


def _on_a_terminal(config: Path, *args: str) -> tuple[int, str]:
    """Run `idlehook` with stdout and stderr on a pseudo-terminal; its exit code and output."""
    leader, follower = pty.openpty()
    inherited = os.environ.items()  # noqa: TID251 (a child process's environment)
    env = {k: v for k, v in inherited if not k.startswith("IDLEHOOK_")} | {"COLUMNS": "120"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "idlehook.cli", "--config", str(config), *args],
        stdin=subprocess.DEVNULL,
        stdout=follower,
        stderr=follower,
        env=env,
    )
    os.close(follower)
    chunks: list[bytes] = []
    while True:
        ready, _, _ = select.select([leader], [], [], 60)
        if not ready:
            proc.kill()
            break
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    return proc.wait(timeout=30), b"".join(chunks).decode(errors="replace")


def test_a_single_start_on_a_terminal_draws_no_progress_bar(w: World, config: Path) -> None:
    code, text = _on_a_terminal(
        config, "start", "--agent", w.agent_id, "--environment", w.limited_env, "--message", "hi"
    )
    assert code == 0, text
    assert "sesn_" in text
    assert "launching" not in text
    assert "━" not in text  # no bar drawn, not even for an instant
