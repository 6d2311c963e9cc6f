"""Run `idlehook` as an operator does: a process of its own, its output captured."""

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.tools.stack import Stack

# Colour and style codes, should a terminal be forced: the text is what is asserted on.
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def idlehook(
    config: Path, *args: str, columns: int | None = None
) -> subprocess.CompletedProcess[str]:
    """`columns`: the width a terminal of that size gives rich (COLUMNS); None: piped."""
    inherited = os.environ.items()  # noqa: TID251 (a child process's environment)
    env = {k: v for k, v in inherited if not k.startswith("IDLEHOOK_")}
    env.pop("COLUMNS", None)
    if columns is not None:
        env["COLUMNS"] = str(columns)
    done = subprocess.run(
        [sys.executable, "-m", "idlehook.cli", "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    done.stdout = _ANSI.sub("", done.stdout)
    return done


def config_file(path: Path, database_url: str, base_url: str, **more: str) -> Path:
    lines = [f'database_url = "{database_url}"', 'api_key = "k"', f'base_url = "{base_url}"']
    lines += [f'{k} = "{v}"' for k, v in more.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def stack_config(s: "Stack", tmp_path: Path, **more: str) -> Path:
    """A config file for CLI processes pointed at a running stack's store, emulator and results."""
    return config_file(
        tmp_path / "idlehook.toml",
        s.settings.database_url,
        s.emulator_url,
        results_dir=str(s.settings.results_dir),
        **more,
    )
