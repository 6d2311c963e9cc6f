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
