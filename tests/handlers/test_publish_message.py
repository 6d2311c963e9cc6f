"""The `publish_*` plugins' message (handlers/builtin/publish_message.py), their tables, and
that their broker clients stay out of every process that does not publish."""

import ast
import json
import tomllib
from datetime import UTC, datetime
from pathlib import Path

import pytest

import handlers.builtin
from handlers.api import Notification, PluginConfigError, SessionResult
from handlers.builtin.publish_amqp import AmqpPublisher
from handlers.builtin.publish_message import SCHEMA, SCHEMA_FILE, build_message, json_schema
from handlers.builtin.publish_nats import NatsPublisher
from handlers.builtin.publish_redis import RedisPublisher
from handlers.builtin.publisher import mask_url_secrets
from handlers.registry import build
from tests.integrations.schema import validate

BUILTIN = Path(handlers.builtin.__file__).parent
NOW = datetime(2026, 12, 3, 10, 0, tzinfo=UTC)
EVENT = Notification(
    delivery_id=7,
    event_id="wevt_01",
    event_type="session.status_idled",
    resource_id="sesn_01",
    session_id="sesn_01",
    source="webhook",
    received_at=NOW,
    event_created_at=NOW,
)
RESULT = SessionResult(
    session_id="sesn_01",
    status="idle",
    stop_reason="end_turn",
    outcome="end_turn",
    final_message="Done.",
    metadata={"job": "42"},
    usage={"input_tokens": 10, "output_tokens": 20, "active_seconds": 3.5},
    billing_model="running",
    cost_usd=0.01,
    runtime_usd=0.002,
    token_usd=0.008,
    active_seconds=3.5,
    event_count=6,
)


def test_the_shipped_schema_file_is_the_models_schema() -> None:
    # A model change must rewrite it (publish_message.write_json_schema) for consumers.
    assert json.loads(SCHEMA_FILE.read_text()) == json_schema()


def test_a_message_names_its_schema_and_fits_it() -> None:
    message = build_message(
        RESULT, EVENT, handler="publish_redis", archive_dir=Path("/data/r/sesn_01"), now=NOW
    )
    validate(message)
    assert message["schema"] == SCHEMA == "idlehook.session_result/1"
    assert message["message_id"] == "wevt_01:publish_redis"
    assert message["cost"] == {
        "billing_model": "running",
        "total_usd": 0.01,
        "runtime_usd": 0.002,
        "token_usd": 0.008,
        "active_seconds": 3.5,
    }
    assert message["archive"]["transcript"] == "/data/r/sesn_01/events.jsonl"
    assert message["event"]["created_at"] == "2026-12-03T10:00:00Z"
    unarchived = build_message(RESULT, EVENT, handler="publish_nats", archive_dir=None, now=NOW)
    validate(unarchived)
    assert unarchived["archive"] is None


def test_the_schema_rejects_what_a_consumer_could_not_rely_on() -> None:
    message = build_message(RESULT, EVENT, handler="publish_amqp", archive_dir=None, now=NOW)
    with pytest.raises(AssertionError):
        validate({**message, "schema": "idlehook.session_result/2"})
    without = dict(message)
    del without["session_id"]
    with pytest.raises(AssertionError):
        validate(without)
    validate({**message, "added_in_a_later_release": 1})  # adding a key is compatible


def test_tables_are_checked_at_startup_and_never_echo_the_url() -> None:
    with pytest.raises(PluginConfigError, match="url"):
        build(RedisPublisher, "publish_redis", {"stream": "s"})
    with pytest.raises(PluginConfigError, match="create_stream") as caught:
        build(NatsPublisher, "publish_nats", {"url": "nats://u:pw@h", "create_stream": True})
    assert "pw" not in str(caught.value)
    with pytest.raises(PluginConfigError, match="exchange_type"):
        build(AmqpPublisher, "publish_amqp", {"url": "amqp://h", "exchange_type": "fan"})
    plugin = build(AmqpPublisher, "publish_amqp", {"url": "amqp://u:s3cret@h/"})
    assert "s3cret" not in repr(plugin.config)  # type: ignore[attr-defined]


def test_a_clients_error_has_the_urls_password_masked() -> None:
    url = "amqp://user:s3cret@broker:5672/"
    text = mask_url_secrets(f"cannot reach {url}; auth s3cret refused", url)
    assert "s3cret" not in text
    assert "<url>" in text


def test_broker_clients_are_imported_only_by_a_plugin_that_connects() -> None:
    """At module level the plugins import no client (only for type checking): loading the
    entry points, which every worker does, never pays for them."""
    clients = {"redis", "nats", "aio_pika", "aiormq"}
    for module in ("publisher", "publish_message", "publish_redis", "publish_nats", "publish_amqp"):
        tree = ast.parse((BUILTIN / f"{module}.py").read_text())
        top = [n for n in tree.body if not _type_checking_only(n)]
        imported = {name.split(".")[0] for node in top for name in _imported(node)}
        assert not imported & clients, module


def _type_checking_only(node: ast.stmt) -> bool:
    return isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING"


def _imported(node: ast.AST) -> list[str]:
    """Modules `node` imports when its module loads (not inside functions, which run later)."""
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
        return []
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if isinstance(node, ast.ImportFrom) and node.module:
        return [node.module]
    return [name for child in ast.iter_child_nodes(node) for name in _imported(child)]


def test_the_readmes_tables_fit_the_plugins() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    section = readme.split("### Publishing results to a message bus", 1)[1]
    tables = tomllib.loads(section.split("```toml\n", 1)[1].split("```", 1)[0])["plugins"]
    plugins = {"publish_redis": RedisPublisher, "publish_nats": NatsPublisher}
    plugins["publish_amqp"] = AmqpPublisher
    assert set(tables) == set(plugins)
    for name, table in tables.items():
        build(plugins[name], name, table)
