"""The README's example plugin package works, tested the way its author would: only through
`idlehook` and `idlehook.testing` (no worker, store or emulator internals)."""

import importlib.util
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from idlehook import PluginConfigError, testing

EXAMPLE = Path(__file__).parents[2] / "examples" / "idlehook-slack"
SLACK_PATH = "/services/T000/B000/secret-token"


def load_example() -> Any:
    spec = importlib.util.spec_from_file_location("idlehook_slack", EXAMPLE / "idlehook_slack.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["idlehook_slack"] = module
    spec.loader.exec_module(module)
    return module


def test_entry_point_names_the_handler_class() -> None:
    meta = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())
    target = meta["project"]["entry-points"]["idlehook.handlers"]["slack"]
    module_name, _, attr = target.partition(":")
    assert module_name == "idlehook_slack"
    assert getattr(load_example(), attr).name == "slack"


def test_example_reads_no_environment() -> None:
    source = (EXAMPLE / "idlehook_slack.py").read_text()
    assert "environ" not in source
    assert "getenv" not in source


async def test_example_posts_the_result_of_a_finished_session() -> None:
    slack_handler = load_example().SlackHandler
    async with (
        testing.sink() as slack,
        testing.harness(slack_handler, config={"webhook_url": slack.url + SLACK_PATH}) as h,
    ):
        run = await h.run(script="long:2")

    assert run.succeeded, run.error
    assert run.calls == ()  # the result came from the routing step's reads: no call of its own
    assert [r.path for r in slack.requests] == [SLACK_PATH]
    text = slack.requests[0].json()["text"]
    assert text.startswith(f"{run.session_id} finished (end_turn): ")
    assert "Part 2." in text
    assert not run.saved  # it only notifies: the reaper still waits for an archive


async def test_a_failing_slack_is_a_failed_run_that_does_not_show_the_url() -> None:
    slack_handler = load_example().SlackHandler
    async with (
        testing.sink(status=500) as slack,
        testing.harness(slack_handler, config={"webhook_url": slack.url + SLACK_PATH}) as h,
    ):
        run = await h.run()

    assert run.state == "dead"
    assert run.error == "RuntimeError: slack answered 500"
    assert len(slack.requests) == 1


async def test_a_missing_webhook_url_is_refused_naming_plugin_and_field() -> None:
    with pytest.raises(PluginConfigError, match=r"plugin 'slack'.*webhook_url: Field required"):
        async with testing.harness(load_example().SlackHandler, config={}):
            pass
