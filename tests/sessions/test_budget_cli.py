"""`idlehook start --budget`, `[launch] budget_usd`, `idlehook budget` and the budget column of
`idlehook sessions`, run in-process against the emulator."""

import json
from pathlib import Path

from idlehook.cli import main
from tests.sessions.test_launch_helpers import World
from tests.support import cli

_logging_back_to_defaults = cli.logging_back_to_defaults
w = cli.w
config = cli.config_fixture("budget-cli")

UPDATE = "POST /v1/sessions/{id}"


def run(config: Path, *args: str) -> int:
    return main(["--config", str(config), *args])


def start(w: World, config: Path, *extra: str) -> int:
    base = ["start", "--agent", w.agent_id, "--environment", w.limited_env, "--message", "go"]
    return run(config, *base, *extra)


def cap(w: World, session_id: str) -> str | None:
    budget = w.sync_client().beta.sessions.retrieve(session_id).budget
    return None if budget is None else budget.max_list_cost.amount


def test_start_with_a_budget_then_raise_it(w, config: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # rich fits the table to the terminal
    assert start(w, config, "--budget", "5", "--json") == 0
    launched = json.loads(capsys.readouterr().out)
    session_id = launched["session_id"]
    assert launched["budget_usd"] == 5.0
    assert cap(w, session_id) == "500"

    assert run(config, "sessions", "--json") == 0
    [listed] = json.loads(capsys.readouterr().out)
    assert listed["budget_usd"] == 5.0
    assert run(config, "sessions") == 0
    assert "/ $5.00" in capsys.readouterr().out

    assert run(config, "budget", session_id, "12.5") == 0
    out = capsys.readouterr().out
    assert f"{session_id}: budget raised from $5.00 to $12.50" in out
    assert cap(w, session_id) == "1250"
    assert run(config, "budget", session_id, "20", "--json") == 0
    raised = json.loads(capsys.readouterr().out)
    assert (raised["cap_usd"], raised["previous_cap_usd"]) == (20.0, 12.5)
    assert run(config, "sessions", "--json") == 0
    assert json.loads(capsys.readouterr().out)[0]["budget_usd"] == 20.0  # the tracked copy too
    assert w.emu.requests[UPDATE] == 2


def test_budget_refusals_exit_1_with_the_reason(w, config: Path, capsys) -> None:
    assert start(w, config, "--budget", "5") == 0
    capped = capsys.readouterr().out.strip()
    assert start(w, config) == 0
    uncapped = capsys.readouterr().out.strip()

    assert run(config, "budget", capped, "3") == 1
    assert "error: the new cap $3.00 is not above the current cap $5.00" in (
        capsys.readouterr().err
    )
    assert run(config, "budget", uncapped, "3") == 1
    assert "budgets can only be raised on sessions created with one" in capsys.readouterr().err
    assert run(config, "budget", "sesn_nope", "3") == 1
    assert "error: unknown session sesn_nope" in capsys.readouterr().err
    assert run(config, "budget", capped, "0") == 1
    assert "error: 0.0 is not a positive amount of US dollars" in capsys.readouterr().err
    assert w.emu.requests[UPDATE] == 0


def test_an_unbudgetable_agent_is_refused_without_a_create(w, config: Path, capsys) -> None:
    custom = w.sync_client().beta.agents.create(name="custom", model="custom-model")
    base = ["start", "--agent", custom.id, "--environment", w.limited_env, "--message", "go"]
    assert run(config, *base, "--budget", "5") == 1
    err = capsys.readouterr().err
    assert f"error: agent {custom.id} runs model custom-model, which has no public list" in err
    assert "[launch] priced_models" in err
    assert w.session_creates() == 0
    assert start(w, config, "--budget", "-2") == 1
    assert "error: budget: -2.0 is not a positive amount" in capsys.readouterr().err
    assert w.session_creates() == 0


def test_the_config_sets_a_default_the_flag_and_batch_lines_override(
    w, config: Path, tmp_path: Path, capsys
) -> None:
    config.write_text(config.read_text() + "\n[launch]\nbudget_usd = 2.5\n")
    assert start(w, config) == 0
    assert cap(w, capsys.readouterr().out.strip()) == "250"
    assert start(w, config, "--budget", "7") == 0
    assert cap(w, capsys.readouterr().out.strip()) == "700"

    batch = tmp_path / "jobs.jsonl"
    line = {"agent": w.agent_id, "environment": w.limited_env, "message": "m"}
    batch.write_text(json.dumps(line) + "\n" + json.dumps({**line, "budget_usd": 9}) + "\n")
    assert run(config, "start", "--batch", str(batch), "--budget", "4", "--drain", "--json") == 0
    results = json.loads(capsys.readouterr().out)
    assert [r["budget_usd"] for r in results] == [4.0, 9.0]
    assert [cap(w, r["session_id"]) for r in results] == ["400", "900"]
