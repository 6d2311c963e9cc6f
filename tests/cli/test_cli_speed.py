"""`idlehook --help` and the light commands start fast: building the parser imports no heavy
library, and `status` never imports the SDK. Checked by what a fresh interpreter has imported,
not by timing (bench/cli_start.py times them)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from emulator.config import EmulatorConfig
from idlehook.cli import GROUPS
from idlehook.cli import emulator as emulator_command

HEAVY = ("anthropic", "sqlalchemy", "rich", "pydantic")


def _imported_after(code: str, env: dict[str, str] | None = None) -> dict[str, object]:
    """Run `code` in a fresh interpreter; what it left in RESULT, and the heavy modules loaded."""
    script = (
        "import json, sys\nRESULT = None\n" + code + "\nprint(json.dumps({'result': RESULT, "
        f"'heavy': [m for m in {HEAVY!r} if m in sys.modules]}}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=env
    )
    assert done.returncode == 0, done.stderr
    last = done.stdout.strip().splitlines()[-1]
    answer: dict[str, object] = json.loads(last)
    return answer


@pytest.mark.parametrize("module", GROUPS)
def test_each_command_module_imports_nothing_heavy_at_its_top(module: str) -> None:
    """Heavy imports belong inside the `run_*` functions; `register()` stays light."""
    answer = _imported_after(
        f"import {module}\nimport argparse\n"
        f"{module}.register(argparse.ArgumentParser().add_subparsers())"
    )
    assert answer["heavy"] == [], f"{module} imports {answer['heavy']} at its top"


def test_building_the_parser_imports_nothing_heavy() -> None:
    answer = _imported_after(
        "from idlehook.cli import build_parser\n"
        "parser = build_parser()\n"
        "RESULT = sorted(parser._subparsers._group_actions[0].choices)"
    )
    assert answer["heavy"] == []
    commands = answer["result"]
    assert isinstance(commands, list)
    assert {"serve", "status", "start", "sessions", "keys", "db"} <= set(commands)


def test_help_imports_nothing_heavy() -> None:
    for argv in (["--help"], ["status", "--help"], ["serve", "--help"], ["db", "migrate", "-h"]):
        answer = _imported_after(
            "import contextlib, io\nfrom idlehook.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
            "    try:\n"
            f"        main({argv!r})\n"
            "    except SystemExit as exc:\n"
            "        RESULT = [exc.code, 'usage: idlehook' in out.getvalue()]"
        )
        assert answer["result"] == [0, True], argv
        assert answer["heavy"] == [], argv


def test_status_runs_without_the_sdk(tmp_path: Path, sqlite_url: str) -> None:
    inherited = os.environ.items()  # noqa: TID251 (a child process's environment)
    env = {k: v for k, v in inherited if not k.startswith(("IDLEHOOK_", "ANTHROPIC_"))}
    env |= {
        "IDLEHOOK_DATABASE_URL": sqlite_url,
        "IDLEHOOK_CONFIG": str(tmp_path / "none.toml"),
        "IDLEHOOK_DATA_DIR": str(tmp_path / "data"),
    }
    answer = _imported_after(
        "import contextlib, io\nfrom idlehook.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
        "    code = main(['status', '--json'])\n"
        "RESULT = [code, json.loads(out.getvalue())['unfinished'], 'anthropic' in sys.modules]",
        env,
    )
    assert answer["result"] == [0, 0, False]


def test_the_emulator_defaults_in_help_are_the_emulators() -> None:
    fields = EmulatorConfig.model_fields
    for name, value in emulator_command.DEFAULTS.items():
        assert fields[name].default == value, name
