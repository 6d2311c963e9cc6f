"""`[tracing] enabled` without the `tracing` extra: refused in one line, before anything starts.

The extra's exporter is made unimportable for the test (a None entry in `sys.modules` is how
Python marks a module that must not be imported), as on an install without it."""

import sys
from pathlib import Path

import pytest

from idlehook import cli, config_check, tracing
from idlehook.errors import ConfigError
from idlehook.settings import Settings, TracingSettings

EXPORTER = "opentelemetry.exporter.otlp.proto.http.trace_exporter"
HINT = "pip install 'idlehook[tracing]'"


@pytest.fixture
def without_exporter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, EXPORTER, None)


def test_the_config_check_names_the_missing_extra(without_exporter: None) -> None:
    report = config_check.check(Settings(tracing=TracingSettings(enabled=True)))
    [error] = report.errors
    assert error.startswith("[tracing] enabled needs opentelemetry.exporter.otlp.proto.http")
    assert error.endswith(HINT)
    # Off, nothing is asked of the install.
    assert config_check.check(Settings()).errors == ()


def test_configure_refuses_rather_than_start_half_traced(without_exporter: None) -> None:
    with pytest.raises(ConfigError, match=r"idlehook\[tracing\]"):
        tracing.configure(Settings(tracing=TracingSettings(enabled=True)), role="worker")
    assert tracing.flush()  # no provider was installed


def test_config_check_exits_2_with_one_line(
    without_exporter: None,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = tmp_path / "idlehook.toml"
    config.write_text(
        f'database_url = "sqlite:///{tmp_path / "db.sqlite"}"\n[tracing]\nenabled = true\n'
    )
    assert cli.main(["--config", str(config), "config", "check"]) == 2
    out, err = capsys.readouterr()
    assert HINT in out + err
