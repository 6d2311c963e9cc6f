"""A plugin's own `[plugins.<name>]` table: validated by its `Config` at startup and given to its
constructor; the built-ins' tables come from their long-standing sections."""

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anthropic
import pytest
from pydantic import BaseModel, ConfigDict, SecretStr

from handlers.builtin.delete import DeleteHandler
from handlers.builtin.forward import ForwardHandler
from handlers.config import RouteRule
from handlers.registry import build
from idlehook import HandlerContext, Notification, PluginConfigError, wiring
from idlehook.settings import Settings
from store.engine import make_engine


class PagerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str
    token: SecretStr
    retries: int = 3


class Pager:
    name = "pager"
    Config = PagerConfig

    def __init__(self, config: PagerConfig) -> None:
        self.config = config

    async def handle(self, ctx: HandlerContext) -> None:
        return None


class Bare:
    name = "bare"

    async def handle(self, ctx: HandlerContext) -> None:
        return None


def test_a_table_is_validated_and_given_to_the_constructor() -> None:
    pager = build(Pager, "pager", {"url": "https://p.example", "token": "t0k", "retries": "5"})
    assert isinstance(pager, Pager)
    assert pager.config.retries == 5
    assert pager.config.token.get_secret_value() == "t0k"


@pytest.mark.parametrize(
    ("table", "problem"),
    [
        ({"url": "u"}, "token: Field required"),
        (
            {"url": "u", "token": "t", "retries": "VALUE-MANY"},
            "retries: Input should be a valid integer",
        ),
        (
            {"url": "u", "token": "t", "colour": "VALUE-RED"},
            "colour: Extra inputs are not permitted",
        ),
    ],
)
def test_a_bad_table_names_the_plugin_and_the_field_not_the_values(
    table: dict[str, Any], problem: str
) -> None:
    with pytest.raises(PluginConfigError) as caught:
        build(Pager, "pager", table)
    message = str(caught.value)
    assert message.startswith("plugin 'pager': [plugins.pager] ")
    assert problem in message
    assert "VALUE-" not in message


def test_a_table_for_a_plugin_without_config_is_an_error() -> None:
    assert isinstance(build(Bare, "bare", None), Bare)
    with pytest.raises(PluginConfigError, match=r"'bare' takes no configuration.*colour"):
        build(Bare, "bare", {"colour": "red"})


def test_the_entry_point_name_must_be_the_handler_name() -> None:
    with pytest.raises(PluginConfigError, match="loads a handler named 'bare'"):
        build(Bare, "other", None)


def test_plugin_tables_load_from_toml_and_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "idlehook.toml"
    path.write_text('[plugins.pager]\nurl = "https://p.example"\nretries = 2\n')
    monkeypatch.setenv("IDLEHOOK_PLUGINS__PAGER__TOKEN", "from-env")
    settings = Settings.load(config=path)
    pager = build(Pager, "pager", settings.plugins["pager"])
    assert isinstance(pager, Pager)
    assert (pager.config.url, pager.config.retries) == ("https://p.example", 2)
    assert pager.config.token.get_secret_value() == "from-env"


def _worker(settings: Settings, tmp_path: Path) -> Any:
    engine = make_engine(f"sqlite:///{tmp_path}/idlehook.db")
    client = anthropic.AsyncAnthropic(api_key="k", base_url="http://127.0.0.1:9")
    return wiring.worker(settings, engine, client)


def test_builtins_take_their_tables_from_their_own_sections(tmp_path: Path) -> None:
    settings = Settings(
        api_key="k",
        forward={"url": "https://f.example", "secret": "whsec_abc"},
        archive={"list_files": True},
        worker={"reuse_reads_seconds": 0},
        routes=[RouteRule(event_types=["session.status_idled"], handlers=["forward", "delete"])],
    )
    registry = _worker(settings, tmp_path).registry
    forward = registry.get("forward")
    assert isinstance(forward, ForwardHandler)
    assert forward.config.url == "https://f.example"
    assert forward.config.list_files is True
    delete = registry.get("delete")
    assert isinstance(delete, DeleteHandler)
    assert delete.config.reuse_reads_seconds == 0


def test_a_plugins_table_for_a_builtin_is_refused(tmp_path: Path) -> None:
    settings = Settings(api_key="k", plugins={"forward": {"url": "https://f.example"}})
    with pytest.raises(wiring.ConfigError, match=r"\[plugins.forward\]: built-in plugins"):
        _worker(settings, tmp_path)


def test_mark_session_still_works_and_warns() -> None:
    marks: list[dict[str, Any]] = []

    async def mark(session_id: str, **flags: Any) -> None:
        marks.append({"session_id": session_id, **flags})

    ctx = HandlerContext(
        event=_notification(),
        client=anthropic.AsyncAnthropic(api_key="k", base_url="http://127.0.0.1:9"),
        log=None,  # type: ignore[arg-type]
        now=lambda: None,  # type: ignore[arg-type, return-value]
        handler="old",
        mark=mark,
    )
    with pytest.warns(DeprecationWarning, match="record_saved"):
        asyncio.run(ctx.mark_session(deleted=True))
    asyncio.run(ctx.record_saved())
    assert marks == [
        {
            "session_id": "sesn_1",
            "result_captured": False,
            "transcript_saved": False,
            "deleted": True,
            "result": None,
        },
        {"session_id": "sesn_1", "result_captured": True, "transcript_saved": True, "result": None},
    ]


def _notification() -> Notification:
    return Notification(
        delivery_id=1,
        event_id="wevt_1",
        event_type="session.status_idled",
        resource_id="sesn_1",
        session_id="sesn_1",
        source="webhook",
        received_at=datetime.now(UTC),
    )
