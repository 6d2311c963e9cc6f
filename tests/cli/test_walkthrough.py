"""README's "Try it against the emulator" runs as written: the block under that heading, pasted
into bash at the root of the clone (the emulator and `serve` as its background jobs), on free
ports instead of 8700 and 8080. So the walk-through a newcomer follows cannot rot."""

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
HEADING = "## Try it against the emulator"
# What the walk-through must show a newcomer, each run for real.
COMMANDS = ("emulator", "serve", "start", "sessions", "show", "reap")

pytestmark = pytest.mark.e2e


def walkthrough() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme.split(HEADING, 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```(?:bash|sh)\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1, f"one shell block under {HEADING!r}"
    return str(blocks[0])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_the_block_shows_every_step() -> None:
    block = walkthrough()
    for command in COMMANDS:
        assert re.search(rf"(^|\$\()idlehook {command}\b", block, flags=re.M), command
    assert "whsec_" in block
    assert "--webhook-secret" in block
    assert "reap --dry-run" in block


def test_the_walkthrough_runs_as_written(tmp_path: Path) -> None:
    assert (ROOT / ".venv/bin/activate").exists(), "run scripts/venv first (the block needs it)"
    assert shutil.which("curl"), "the walk-through uses curl"
    script = walkthrough().replace("8700", str(free_port())).replace("8080", str(free_port()))
    (tmp_path / "walkthrough.sh").write_text(script)
    # A clean shell: nothing of ours or Anthropic's set beforehand, no terminal width.
    inherited = os.environ.items()  # noqa: TID251 (a child process's environment)
    ours = ("ANTHROPIC_", "IDLEHOOK_", "VIRTUAL_ENV", "COLUMNS", "LINES")
    env = {k: v for k, v in inherited if not k.startswith(ours)}
    env["TMPDIR"] = str(tmp_path)  # where the block's `mktemp -d` puts idlehook-data/
    shell = subprocess.Popen(
        ["bash", "-euo", "pipefail", "-x", str(tmp_path / "walkthrough.sh")],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its background jobs share its process group: killed below
    )
    try:
        out, trace = shell.communicate(timeout=240)
    finally:
        _stop_group(shell.pid)
    logs = "".join(f"\n--- {p.name}\n{p.read_text()}" for p in tmp_path.glob("tmp.*/*.log"))
    assert shell.returncode == 0, f"{trace[-4000:]}\n--- stdout\n{out[-4000:]}{logs[-6000:]}"

    for command in COMMANDS:  # -x traced each one: none was skipped
        assert re.search(rf"^\++ idlehook {command}\b", trace, flags=re.M), command
    session = re.search(r"^(sesn_\w+)$", out, flags=re.M)
    assert session, out
    assert '"idempotency_key":"T-43"' in out  # POST /sessions
    assert '"state":"created"' in out
    assert "2 tracked sessions" in out
    assert out.count(session.group(1)) >= 4  # echoed, listed, shown, examined by the reaper
    assert "reap (dry run)" in out
    # The emulator's signed webhook reached serve, whose worker archived the result.
    data = next(tmp_path.glob("tmp.*/idlehook-data"))
    assert (data / "results" / session.group(1) / "result.json").exists(), logs[-6000:]


def _stop_group(pgid: int) -> None:
    """The emulator and serve (and serve's children), should the block not have stopped them."""
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)
