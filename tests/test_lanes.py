"""The lanes: `scripts/test --fast` keeps the store on SQLite and the pure tests, and leaves
out PostgreSQL, processes, the browser and what was measured slow."""

from pathlib import Path

from tests.conftest import _LANE_BY_PATH, _SLOW_MODULES, lanes_of

ROOT = Path(__file__).parents[1]


def test_store_tests_on_sqlite_and_pure_tests_are_in_the_fast_lane() -> None:
    assert lanes_of("tests/store/test_rows.py::test_x[sqlite]", ["db_url", "sqlite_url"]) == set()
    assert lanes_of("tests/receiver/test_verify.py::test_x", []) == set()


def test_postgres_is_known_by_the_fixture_whatever_the_path() -> None:
    assert lanes_of("tests/store/test_inbox.py::test_x", ["postgres_url"]) == {"postgres", "slow"}
    assert lanes_of("tests/store/test_rows.py::test_x[postgres]", ["postgres_url"]) == {"postgres"}


def test_paths_mark_whole_directories_modules_and_single_tests() -> None:
    assert lanes_of("tests/e2e/test_demo.py::test_x", []) == {"e2e"}
    assert lanes_of("tests/reliability/test_soak.py::test_x", []) == {"slow"}
    assert lanes_of("tests/web/test_budget_page.py::test_headless_chromium_shows_it", []) == {
        "browser",
        "slow",
    }


def test_every_path_named_exists() -> None:
    # A renamed module would silently fall into the fast lane.
    for name in [*_SLOW_MODULES, *_LANE_BY_PATH]:
        assert (ROOT / name.split("::", 1)[0]).exists(), name
