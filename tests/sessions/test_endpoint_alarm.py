"""The webhook endpoint's state, read each reconcile sweep through the organization webhooks API
(the real SDK, strict response validation, against the emulator): Anthropic disabling it alarms
at once in /metrics, the log, the web page and `idlehook status`; re-enabling it clears all."""

import base64
import json
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest
import structlog
from prometheus_client import REGISTRY
from structlog.testing import capture_logs

from idlehook.cli import main
from idlehook.settings import ReconcileSettings
from sessions.endpoint import EndpointWatch
from sessions.reconciler import Reconciler
from store.engine import make_engine
from store.watch import endpoint_record
from tests.sessions.reaping import Api, emulator
from tests.support.servers import wait_for
from tests.support.stack import Running, emulator_and_service

SECRET = "whsec_" + base64.b64encode(b"E" * 32).decode()
TOKEN = "endpoint-alarm-token-0123456789"
ADMIN_KEY = "sk-ant-admin01-test"
# Nothing listens on port 9 (discard): every delivery there fails to connect.
DEAD_URL = "http://127.0.0.1:9/webhooks/anthropic"
# Anthropic disables after about 20 failed deliveries in a row; three here, no backoff.
FAILING_FAST = {
    "disable_after_failed_deliveries": 3,
    "webhook_backoff_min_seconds": 0.0,
    "webhook_backoff_max_seconds": 0.01,
}


@pytest.fixture(autouse=True)
def _logging_to_real_stderr() -> Iterator[None]:
    # main() configures logging: keep it off this test's captured (later closed) stderr.
    structlog.configure(
        logger_factory=structlog.PrintLoggerFactory(sys.__stderr__),
        cache_logger_on_first_use=False,
    )
    yield
    structlog.reset_defaults()


def admin_client(url: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        api_key=ADMIN_KEY, base_url=url, max_retries=0, _strict_response_validation=True
    )


def disabled_gauge() -> float | None:
    return REGISTRY.get_sample_value("idlehook_webhook_endpoint_disabled")


def page(s: Running) -> str:
    response = httpx.get(s.receiver_url + "/", headers={"authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200
    return response.text


def status(config: Path, capsys: pytest.CaptureFixture[str]) -> tuple[dict[str, Any], str]:
    assert main(["--config", str(config), "status", "--json"]) == 0
    as_json = json.loads(capsys.readouterr().out)
    assert main(["--config", str(config), "status"]) == 0
    return as_json, capsys.readouterr().out


def test_a_disabled_endpoint_alarms_in_metrics_the_page_and_status_until_re_enabled(
    db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with emulator_and_service(
        db_url,
        tmp_path,
        secret=SECRET,
        token=TOKEN,
        owner="endpoint",
        emulator_config=FAILING_FAST,
        admin_api_key=ADMIN_KEY,
        reconcile=ReconcileSettings(settle_seconds=0, interval_seconds=0.2, endpoint_url=DEAD_URL),
    ) as s:
        config = tmp_path / "idlehook.toml"
        config.write_text(f'database_url = "{db_url}"\n')
        admin = admin_client(s.emulator_url)
        created = admin.beta.organization.webhooks.create(
            url=DEAD_URL, enabled_events=["external_key.failed"], name="idlehook"
        )
        engine = s.svc.engine
        wait_for(lambda: (r := endpoint_record(engine)) is not None and r.state == "enabled", 10)
        assert disabled_gauge() == 0
        assert 'id="endpoint-disabled"' not in page(s)

        # Anthropic's sender fails to deliver an event there, again and again: it disables it.
        emitted = httpx.post(
            s.emulator_url + "/_emulator/webhooks/emit",
            json={"type": "external_key.failed", "id": "extkey_1"},
        )
        assert emitted.status_code < 300, emitted.text
        wait_for(lambda: admin.beta.organization.webhooks.retrieve(created.id).state == "disabled")
        assert admin.beta.organization.webhooks.retrieve(created.id).disabled_reason == (
            "sustained_failure"
        )

        record = wait_for(
            lambda: (r := endpoint_record(engine)) is not None and r.state == "disabled" and r, 10
        )
        assert record.reason == "sustained_failure"
        assert disabled_gauge() == 1
        metrics = httpx.get(s.receiver_url + "/metrics").text
        assert "idlehook_webhook_endpoint_disabled 1.0" in metrics
        html = page(s)
        assert 'id="endpoint-disabled"' in html
        assert "Webhook endpoint disabled" in html
        assert "sustained_failure" in html
        as_json, text = status(config, capsys)
        assert as_json["webhook_endpoint"]["state"] == "disabled"
        assert as_json["webhook_endpoint"]["reason"] == "sustained_failure"
        assert "DISABLED" in text
        assert "sustained_failure" in text

        # A person re-enables it (the Console's button): the alarm clears on the next sweep.
        admin.beta.organization.webhooks.update(created.id, state="enabled")
        wait_for(lambda: (r := endpoint_record(engine)) is not None and r.state == "enabled", 10)
        assert disabled_gauge() == 0
        assert 'id="endpoint-disabled"' not in page(s)
        as_json, text = status(config, capsys)
        assert as_json["webhook_endpoint"]["state"] == "enabled"
        assert "DISABLED" not in text


@pytest.fixture
def api() -> Iterator[Api]:
    with emulator(**FAILING_FAST) as served:
        yield served


async def test_the_sweep_reads_the_endpoint_by_id_logs_an_error_and_counts_the_call(
    db_url: str, api: Api
) -> None:
    engine = make_engine(db_url, pool_size=2)
    try:
        if True:
            async with (
                api.client() as client,
                anthropic.AsyncAnthropic(
                    api_key=ADMIN_KEY,
                    base_url=api.url,
                    max_retries=0,
                    _strict_response_validation=True,
                ) as admin,
            ):
                created = await admin.beta.organization.webhooks.create(
                    url=DEAD_URL, enabled_events=["external_key.failed"]
                )
                await admin.beta.organization.webhooks.update(created.id, state="disabled")
                by_id = EndpointWatch(admin, engine, endpoint_id=created.id)
                rec = Reconciler(client, engine, settle=timedelta(0), endpoint=by_id)
                with capture_logs() as logs:
                    report = await rec.sweep()
                # Two listings and the endpoint: nothing else changed.
                assert report.calls == 3
                assert api.requests("GET /v1/organizations/webhooks/{id}") == 1
                assert report.endpoint is not None
                assert (report.endpoint.state, report.endpoint.reason) == ("disabled", "")
                [alarm] = [e for e in logs if e["event"] == "reconcile.webhook_endpoint_disabled"]
                assert alarm["log_level"] == "error"
                assert alarm["endpoint_id"] == created.id
                assert ADMIN_KEY not in json.dumps(logs, default=str)

                # An endpoint the organization API does not list: a warning, not an alarm.
                elsewhere = EndpointWatch(admin, engine, url="https://hooks.example/other")
                rec = Reconciler(client, engine, settle=timedelta(0), endpoint=elsewhere)
                with capture_logs() as logs:
                    missing = await rec.sweep()
                assert missing.endpoint is not None
                assert missing.endpoint.state == "not_found"
                assert disabled_gauge() == 0
                assert any(e["event"] == "reconcile.webhook_endpoint_not_found" for e in logs)
    finally:
        engine.dispose()
