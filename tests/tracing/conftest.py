"""Tracing on for one test: `tracing.configure` with an in-memory exporter, undone after it.

OpenTelemetry takes one global provider per process, for good; a test process runs many tests,
so this puts its globals back as OpenTelemetry's own test utilities do
(opentelemetry.test.globals_test.reset_trace_globals), and takes the httpx instrumentation off.
"""

from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.util._once import Once

from idlehook import tracing
from idlehook.settings import Settings, TracingSettings

ON = TracingSettings(enabled=True, service_name="idlehook-test")


def reset_globals() -> None:
    tracing.shutdown()
    HTTPXClientInstrumentor().uninstrument()
    trace._TRACER_PROVIDER_SET_ONCE = Once()  # type: ignore[attr-defined]
    trace._TRACER_PROVIDER = None  # type: ignore[attr-defined]


@pytest.fixture
def exported() -> Iterator[InMemorySpanExporter]:
    """Spans this process makes while the test runs, through the configure path serve uses."""
    exporter = InMemorySpanExporter()
    assert tracing.configure(Settings(tracing=ON), role="stack", exporter=exporter)
    try:
        yield exporter
    finally:
        reset_globals()
