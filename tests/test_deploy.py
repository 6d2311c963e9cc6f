"""deploy/ stays in step with the code: every YAML file parses, and every `idlehook ...` command
line in it (Dockerfile CMD/ENTRYPOINT, compose and Kubernetes `command:`/`args:`, systemd
`Exec*=`) names a subcommand and flags the real parser accepts."""

import contextlib
import io
import json
import shlex
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from idlehook.cli import build_parser

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
SYSTEMD_KEYS = ("ExecStart", "ExecStartPre", "ExecStartPost", "ExecReload", "ExecStop")
SYSTEMD_PREFIXES = "-@:+!"  # systemd's special executable prefixes


def yaml_files() -> list[Path]:
    return sorted([*DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml")])


def _is_idlehook(argv: list[str]) -> bool:
    return bool(argv) and Path(argv[0]).name == "idlehook"


def _yaml_commands(node: Any) -> Iterator[list[str]]:
    if isinstance(node, dict):
        command = node.get("command")
        if command is not None:
            argv = shlex.split(command) if isinstance(command, str) else [str(a) for a in command]
            args = node.get("args") or []
            argv += shlex.split(args) if isinstance(args, str) else [str(a) for a in args]
            yield argv
        for value in node.values():
            yield from _yaml_commands(value)
    elif isinstance(node, list):
        for item in node:
            yield from _yaml_commands(item)


def _dockerfile_commands(text: str) -> Iterator[list[str]]:
    for line in text.replace("\\\n", " ").splitlines():
        keyword, _, rest = line.strip().partition(" ")
        if keyword.upper() not in {"CMD", "ENTRYPOINT", "RUN"}:
            continue
        rest = rest.strip()
        argv = json.loads(rest) if rest.startswith("[") else shlex.split(rest)
        yield [str(a) for a in argv]


def _systemd_commands(text: str) -> Iterator[list[str]]:
    for line in text.splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and key in SYSTEMD_KEYS:
            yield shlex.split(value.strip().lstrip(SYSTEMD_PREFIXES))


def deploy_commands() -> list[tuple[str, list[str]]]:
    """(where, argv) for every idlehook invocation in deploy/."""
    found: list[tuple[str, list[str]]] = []
    for path in sorted(p for p in DEPLOY.rglob("*") if p.is_file()):
        text = path.read_text(encoding="utf-8")
        if path.suffix in {".yaml", ".yml"}:
            commands = [c for doc in yaml.safe_load_all(text) for c in _yaml_commands(doc)]
        elif path.name.startswith("Dockerfile"):
            commands = list(_dockerfile_commands(text))
        elif path.suffix in {".service", ".timer", ".socket"}:
            commands = list(_systemd_commands(text))
        else:
            continue
        where = str(path.relative_to(DEPLOY))
        found.extend((where, argv) for argv in commands if _is_idlehook(argv))
    return found


def parse_error(argv: list[str]) -> str | None:
    """What the CLI says about `argv` (without the program name), or None if it parses."""
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
        try:
            args = build_parser().parse_args(argv)
        except SystemExit as exc:
            return stderr.getvalue().strip() or f"exit {exc.code}"
    if getattr(args, "func", None) is None:
        return "no subcommand"
    return None


@pytest.mark.parametrize("path", yaml_files(), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_yaml_parses(path: Path) -> None:
    documents = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]
    assert documents, f"{path} is empty"
    for document in documents:
        assert isinstance(document, dict)


def test_every_deploy_command_line_parses() -> None:
    commands = deploy_commands()
    places = {where for where, _ in commands}
    # The extractor found each kind of file: a silent miss would pass everything.
    assert "Dockerfile" in places
    assert "compose.yaml" in places
    assert any(p.startswith("k8s/") for p in places)
    assert any(p.startswith("systemd/") for p in places)
    failures = [
        f"{where}: {shlex.join(argv)}: {error}"
        for where, argv in commands
        if (error := parse_error(argv[1:])) is not None
    ]
    assert not failures, "\n".join(failures)


def test_the_checker_catches_a_wrong_command() -> None:
    assert parse_error(["serve", "--no-such-flag"]) is not None
    assert parse_error(["no-such-command"]) is not None
    assert parse_error([]) == "no subcommand"
    assert parse_error(["serve", "--no-worker"]) is None
    found = list(_systemd_commands("ExecStart=-/usr/bin/idlehook reap --json\n"))
    assert found == [["/usr/bin/idlehook", "reap", "--json"]]
    assert list(_dockerfile_commands('CMD ["idlehook", "worker"]')) == [["idlehook", "worker"]]
    k8s = {"spec": {"containers": [{"command": ["idlehook"], "args": ["reap", "--dry-run"]}]}}
    assert list(_yaml_commands(k8s)) == [["idlehook", "reap", "--dry-run"]]


def test_the_image_copies_every_package_the_wheel_ships() -> None:
    # A package added to the wheel but not copied into the image fails only when it is imported.
    pyproject = tomllib.loads((DEPLOY.parent / "pyproject.toml").read_text())
    packages = pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]
    copied = {
        line.split()[1]
        for line in (DEPLOY / "Dockerfile").read_text().splitlines()
        if line.startswith("COPY ") and len(line.split()) == 3
    }
    assert set(packages) <= copied
