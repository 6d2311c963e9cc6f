"""A configuration that would silently disable itself is refused at startup, in one line.

`idlehook serve`, `idlehook worker --drain` and `idlehook config check` run as processes of their
own with the configs users wrote (an event stream's type name, a handler typo, a tool module not
on the path); routes written without `answer` keep the built-in answering rule, end to end
against the emulator; and a tool call that does not fit its schema is answered with which
argument and the schema.
"""

import asyncio
import base64
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from handlers.config import RouteRule, ToolsSettings
from handlers.registry import installed_names
from handlers.tools.registry import custom_tool
from handlers.tools.runner import ToolOutcome, run_tool
from idlehook import config_check
from idlehook.settings import Settings
from tests.cli import mismatched_tools
from tests.tools import sample_tools
from tests.tools.stack import stack

ROOT = Path(__file__).resolve().parents[2]
SIGNING_KEY = "whsec_" + base64.b64encode(b"C" * 32).decode()
# What this environment installs (the built-ins: answer, archive, delete, forward, log, and
# whatever else is installed beside them).
INSTALLED = ", ".join(installed_names())

EVENT_STREAM_NAME = """
[[routes]]
name = "done"
event_types = ["session.status_idle"]
handlers = ["archive", "log"]
"""
HANDLER_TYPO = """
[[routes]]
name = "x"
event_types = ["session.status_idled"]
handlers = ["logg"]
"""
TOOL_OFF_PATH = """
[tools]
modules = ["nosuch.module:tool"]
"""
# Routes that save outcomes and say nothing of `answer`, and a custom tool.
ROUTES_AND_TOOLS = """
[[routes]]
name = "finished"
event_types = ["session.status_idled"]
except_stop_reasons = ["requires_action"]
handlers = ["archive", "log"]

[tools]
modules = ["tests.tools.sample_tools:lookup"]
"""

REFUSED = {
    "event stream name": (
        EVENT_STREAM_NAME,
        "[[routes]] \"done\": unknown event type 'session.status_idle' "
        "(did you mean session.status_idled?)",
    ),
    "handler typo": (
        HANDLER_TYPO,
        f"unknown handler 'logg' in [[routes]] \"x\" (installed: {INSTALLED}; did you mean log?)",
    ),
    "tool module off the path": (
        TOOL_OFF_PATH,
        "[tools] modules: 'nosuch.module:tool': cannot import nosuch.module: "
        "ModuleNotFoundError: No module named 'nosuch'",
    ),
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


COMMANDS = {
    "serve": lambda: ["serve", "--port", str(_free_port())],
    "worker --drain": lambda: ["worker", "--drain"],
    "config check": lambda: ["config", "check"],
}


def idlehook(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    inherited = os.environ.items()  # noqa: TID251 (a child process's environment)
    env = {k: v for k, v in inherited if not k.startswith(("IDLEHOOK_", "ANTHROPIC_"))}
    # `serve` refuses to start without one, before it reads the routes.
    env["ANTHROPIC_WEBHOOK_SIGNING_KEY"] = SIGNING_KEY
    env["ANTHROPIC_API_KEY"] = "k"
    env["ANTHROPIC_BASE_URL"] = "http://127.0.0.1:9"  # never reached: nothing is routed
    return subprocess.run(
        [sys.executable, "-m", "idlehook.cli", "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=90,  # a `serve` that was not refused would run until this kills the test
        env=env,
        cwd=ROOT,  # `tests.tools.sample_tools` importable, as from a project checkout
    )


def write_config(tmp_path: Path, sqlite_url: str, body: str) -> Path:
    path = tmp_path / "idlehook.toml"
    path.write_text(
        f'database_url = "{sqlite_url}"\nresults_dir = "{tmp_path / "results"}"\n{body}'
    )
    return path


def problem_lines(stderr: str) -> list[str]:
    """stderr without the server's structured log lines (`serve` logs its limits first)."""
    lines = []
    for line in stderr.splitlines():
        try:
            if "event" in json.loads(line):
                continue
        except (ValueError, TypeError):
            pass
        lines.append(line)
    return lines


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("case", list(REFUSED))
def test_a_config_that_would_disable_itself_is_refused_in_one_line(
    command: str, case: str, tmp_path: Path, sqlite_url: str
) -> None:
    body, expected = REFUSED[case]
    done = idlehook(write_config(tmp_path, sqlite_url, body), *COMMANDS[command]())

    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert problem_lines(done.stderr) == [f"idlehook: configuration error: {expected}"]


def test_written_routes_keep_the_built_in_answer_route(tmp_path: Path, sqlite_url: str) -> None:
    done = idlehook(
        write_config(tmp_path, sqlite_url, ROUTES_AND_TOOLS), "config", "check", "--json"
    )

    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert (report["ok"], report["errors"], report["warnings"]) == (True, [], [])
    assert [(r["name"], r["handlers"], r["builtin"]) for r in report["routes"]] == [
        ("finished", ["archive", "log"], False),
        ("requires_action", ["answer"], True),
    ]
    assert report["routes"][1]["conditions"] == {"stop_reasons": ["requires_action"]}
    assert report["tools"] == ["lookup"]

    table = idlehook(tmp_path / "idlehook.toml", "config", "check")
    assert table.returncode == 0, table.stderr
    rows = [line for line in table.stdout.splitlines() if "requires_action" in line]
    assert any("answer" in row and "built in" in row for row in rows), table.stdout
    assert "tools: lookup" in table.stdout
    assert table.stdout.rstrip().endswith("configuration ok")


def test_a_route_claiming_requires_action_without_answer_is_refused_while_tools_wait(
    tmp_path: Path, sqlite_url: str
) -> None:
    claimed = """
[[routes]]
name = "waiting"
stop_reasons = ["requires_action"]
handlers = ["log"]

[tools]
modules = ["tests.tools.sample_tools:lookup"]
"""
    done = idlehook(write_config(tmp_path, sqlite_url, claimed), "config", "check")
    assert done.returncode == 2
    [line] = problem_lines(done.stderr)
    assert line.startswith(
        'idlehook: configuration error: [[routes]] "waiting" claims requires_action but no '
        "route runs 'answer', so [tools] would never be used"
    )

    # Claimed with nothing configured to answer: intended (log the waits), and kept as written.
    no_tools = claimed.split("[tools]")[0]
    done = idlehook(write_config(tmp_path, sqlite_url, no_tools), "config", "check", "--json")
    assert done.returncode == 0, done.stderr
    assert [r["name"] for r in json.loads(done.stdout)["routes"]] == ["waiting"]


def test_an_event_type_close_to_no_known_one_is_a_warning(tmp_path: Path, sqlite_url: str) -> None:
    body = """
[[routes]]
name = "future"
event_types = ["session.thread_running"]
handlers = ["log"]
"""
    done = idlehook(write_config(tmp_path, sqlite_url, body), "config", "check")
    assert done.returncode == 0, done.stderr
    assert problem_lines(done.stderr) == [
        "warning: [[routes]] \"future\": event type 'session.thread_running' is not one idlehook "
        "or the SDK knows; the rule matches it only if the API sends it"
    ]


def test_the_defaults_and_every_known_type_check_clean() -> None:
    assert config_check.check(Settings()).errors == ()
    assert config_check.check(Settings()).warnings == ()
    every = RouteRule(event_types=sorted(config_check.known_event_types()), handlers=["log"])
    report = config_check.check(Settings(routes=[every]))
    assert (report.errors, report.warnings) == ((), ())
    # The SDK's webhook types are in the vocabulary, not only idlehook's own list.
    assert "vault_credential.refresh_failed" in config_check.known_event_types()


@pytest.fixture(autouse=True)
def _fresh_calls() -> Iterator[None]:
    sample_tools.CALLS.clear()
    mismatched_tools.CALLS.clear()
    yield
    sample_tools.CALLS.clear()
    mismatched_tools.CALLS.clear()


FINISHED_ONLY = [
    RouteRule(
        name="finished",
        event_types=["session.status_idled"],
        except_stop_reasons=["requires_action"],
        handlers=["log"],
    )
]


def test_written_routes_with_tools_still_answer_a_custom_tool_call(
    sqlite_url: str, tmp_path: Path
) -> None:
    with stack(sqlite_url, tmp_path, routes=FINISHED_ONLY) as s:
        assert [r.name for r in s.settings.routes] == ["finished", "requires_action"]
        sid = s.launch("custom_tools:1")
        s.wait_end_turn(sid)

        [result] = s.of_type(sid, "user.custom_tool_result")
        assert not result.is_error
        assert result.content[0].text == "found emulator #1"
        assert sample_tools.CALLS == [{"query": "emulator"}]


def test_a_call_that_does_not_fit_the_schema_is_told_which_argument_and_the_schema(
    sqlite_url: str, tmp_path: Path
) -> None:
    tools = ToolsSettings(modules=["tests.cli.mismatched_tools:lookup_ticket"])
    with stack(sqlite_url, tmp_path, tools=tools) as s:
        sid = s.launch("custom_tools:1")
        s.wait_end_turn(sid)

        [result] = s.of_type(sid, "user.custom_tool_result")
        assert result.is_error
        text = result.content[0].text
        assert "tool 'lookup': argument 'ticket_id': Missing required argument" in text
        assert "argument 'query': Unexpected keyword argument" in text
        schema = json.loads(text.split("; schema: ", 1)[1])
        assert schema["required"] == ["ticket_id"]
        assert mismatched_tools.CALLS == []


def test_a_hand_written_schema_names_the_missing_and_the_unexpected_argument() -> None:
    def lookup(ticket_id: int) -> str:
        return f"ticket {ticket_id}"

    schema = {"type": "object", "properties": {"ticket_id": {"type": "integer"}}}
    tool = custom_tool(lookup, input_schema={**schema, "required": ["ticket_id"]})

    async def calls() -> list[ToolOutcome]:
        return [await run_tool(tool, args, 5) for args in ({}, {"ticket_id": 1, "q": 2})]

    missing, unexpected = asyncio.run(calls())
    assert missing.is_error
    assert (
        "tool 'lookup': argument 'ticket_id': Field required; schema: {"
        in (missing.content[0]["text"])
    )
    assert "unexpected keyword argument 'q'" in unexpected.content[0]["text"]
    assert asyncio.run(run_tool(tool, {"ticket_id": 7}, 5)).content[0]["text"] == "ticket 7"
