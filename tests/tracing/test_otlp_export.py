"""Spans leave over OTLP/HTTP to a collector: the exporter `[tracing]` builds, and `idlehook
serve` as real processes, where the receiver and its worker process (each with a provider of
its own) put one webhook's spans in one trace through the store alone."""

from pathlib import Path

import pytest
from opentelemetry.sdk.resources import SERVICE_NAME

from idlehook import tracing
from idlehook.settings import TracingSettings
from tests.reliability.support import base_env, emulator, launcher, processes, wait_for
from tests.tracing.collector import Span, collector

PATH = "/webhooks/anthropic"


@pytest.mark.slow
def test_the_configured_endpoint_gets_the_spans_as_otlp_protobuf() -> None:
    with collector() as got:
        cfg = TracingSettings(enabled=True, endpoint=got.url, service_name="idlehook-otlp")
        provider = tracing.build_provider(cfg, role="test")
        with provider.get_tracer("idlehook").start_as_current_span(
            "webhook.receive", attributes={"idlehook.event_id": "wevt_otlp"}
        ):
            pass
        assert provider.force_flush(10_000)
        provider.shutdown()
        assert got.requests == [("/v1/traces", "application/x-protobuf")]
        [span] = got.spans
        assert span.name == "webhook.receive"
        assert span.attributes == {"idlehook.event_id": "wevt_otlp"}
        assert span.resource[SERVICE_NAME] == "idlehook-otlp"
        assert span.resource["idlehook.process"] == "test"


@pytest.mark.e2e
def test_serve_and_its_worker_process_export_one_trace_per_webhook(
    sqlite_url: str, tmp_path: Path
) -> None:
    with collector() as got, emulator() as (emu, api_url), processes(tmp_path) as procs:
        env = base_env(
            tmp_path,
            sqlite_url,
            base_url=api_url,
            IDLEHOOK_TRACING__ENABLED="true",
            # The standard variables: the endpoint unset in [tracing] comes from here.
            OTEL_EXPORTER_OTLP_ENDPOINT=got.url,
            OTEL_BSP_SCHEDULE_DELAY="100",
        )
        serve = procs.serve("serve", env, worker=True)
        assert serve.url is not None
        emu.apply_config({"webhook_urls": [serve.url + PATH]})
        launcher(api_url, "otlp")(1)

        def idle_traced() -> tuple[Span, Span, list[Span]] | None:
            for receive in got.named("webhook.receive"):
                if receive.attributes.get("idlehook.event_type") != "session.status_idled":
                    continue
                same = [s for s in got.spans if s.trace_id == receive.trace_id]
                routes = [s for s in same if s.name == "delivery.route"]
                runs = [s for s in same if s.name == "handler.run"]
                if routes and len(runs) >= 2:
                    return receive, routes[0], runs
            return None

        receive, route, runs = wait_for(idle_traced, timeout=60)
        # Two processes, one trace: the worker's routing is the receipt's child.
        assert receive.resource["idlehook.process"] == "receiver"
        assert route.resource["idlehook.process"] == "worker"
        assert receive.resource[SERVICE_NAME] == route.resource[SERVICE_NAME] == "idlehook"
        assert route.parent_id == receive.span_id
        assert {r.parent_id for r in runs} == {route.span_id}
        assert {r.attributes["idlehook.handler"] for r in runs} == {"archive", "log"}
        session = receive.attributes["idlehook.session_id"]
        for s in (route, *runs):
            assert s.attributes["idlehook.session_id"] == session
            assert s.attributes["idlehook.event_id"] == receive.attributes["idlehook.event_id"]
        assert {p for p, _ in got.requests} == {"/v1/traces"}
