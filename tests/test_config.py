"""Configuration mistakes are one clear line and exit code 2, never a traceback."""

from pathlib import Path

import pytest

from idlehook.cli import main


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[worker]\nconcurency = 3\n", "worker.concurency: Extra inputs are not permitted"),
        ('owner = "x"\nbogus = 1\n', "bogus: Extra inputs are not permitted"),
        ("[worker\n", "Expected ']'"),
        ('[[routes]]\nevent_types = ["x"]\n', "routes.0.handlers: Field required"),
    ],
)
def test_bad_config_is_one_clear_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, expected: str
) -> None:
    path = tmp_path / "idlehook.toml"
    path.write_text(text)
    assert main(["--config", str(path), "status"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("idlehook: configuration error: ")
    assert expected in err
    assert "Traceback" not in err


def test_missing_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--config", str(tmp_path / "none.toml"), "status"]) == 2
    assert "config file not found" in capsys.readouterr().err
