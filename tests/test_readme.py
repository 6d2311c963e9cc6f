"""The README's configuration examples are valid configuration, and its commands exist."""

import re
import shlex
from pathlib import Path

import pytest

from idlehook.cli import build_parser
from idlehook.settings import Settings

README = (Path(__file__).parents[1] / "README.md").read_text()


def blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def config_blocks() -> list[str]:
    return [b for b in blocks("toml") if "[project]" not in b]


@pytest.mark.parametrize("index", range(len(config_blocks())))
def test_toml_examples_load_as_settings(index: int, tmp_path: Path) -> None:
    path = tmp_path / "idlehook.toml"
    path.write_text(config_blocks()[index])
    settings = Settings.load(config=path)
    assert settings.routes  # and nothing in it was rejected


def test_commands_shown_parse() -> None:
    parser = build_parser()
    lines = [
        line.split("#")[0].strip()
        for block in blocks("sh")
        for line in block.replace("\\\n", " ").splitlines()
    ]
    commands = [line for line in lines if line.startswith("idlehook ")]
    assert len(commands) >= 5
    for line in commands:
        parser.parse_args(shlex.split(line)[1:])
