"""Plugins import only from `idlehook`: its `__all__` is the plugin API, and nothing else."""

import idlehook
from handlers import api


def test_all_is_the_plugin_api() -> None:
    assert sorted(idlehook.__all__) == sorted([*api.__all__, "__version__"])
    for name in idlehook.__all__:
        assert getattr(idlehook, name) is not None
    assert idlehook.PermanentError is api.PermanentError
    assert isinstance(
        type("P", (), {"name": "p", "handle": lambda self, ctx: None})(), idlehook.Handler
    )


def test_testing_is_product_code() -> None:
    """`idlehook.testing` ships in the wheel: it may not lean on the test suite."""
    import ast
    from pathlib import Path

    import idlehook.testing

    tree = ast.parse(Path(idlehook.testing.__file__).read_text())
    imported = {
        node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
    } | {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    assert not [name for name in imported if name == "tests" or name.startswith("tests.")]
