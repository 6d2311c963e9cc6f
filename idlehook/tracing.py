"""OpenTelemetry tracing, opt-in (`[tracing] enabled`): each process installs its own provider.

Off (the default) nothing here runs and nothing of the OpenTelemetry SDK is imported: the code
paths hold only `opentelemetry-api` calls, whose tracer without a provider makes non-recording
spans, and the webhook path not even those (its tracer is None, `receiver/intake.py`).

On, `configure` installs a TracerProvider exporting in batches over OTLP/HTTP (protobuf) to
`[tracing] endpoint` or the standard `OTEL_EXPORTER_OTLP_*` variables, and instruments the
`httpx` package (the forward plugin's signed POST). The SDK's API calls go through its own
fork of httpx (`httpx2`), which that instrumentation cannot see: the SDK makes a span per API
call itself (`anthropic.sessions.retrieve`, ...), and `sessions/paced_transport.py` one per
HTTP request beneath it (its pacer wait included). Neither records a header or a body.

The spans of one webhook, across processes: `webhook.receive` > `webhook.commit` in the
receiver; the receipt's W3C `traceparent` is kept with the delivery (its kept headers), so a
worker's `delivery.route` continues that trace, and `handler.run` follows routing
(`handlers/spans.py`).
"""

from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import structlog
from opentelemetry import trace

from idlehook.errors import ConfigError

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

    from idlehook.settings import Settings, TracingSettings

log = structlog.get_logger(__name__)

DEFAULT_SERVICE_NAME = "idlehook"
TRACES_PATH = "/v1/traces"
# The name idlehook's own spans are made under (receiver, worker, paced transport alike).
SCOPE = "idlehook"

# The provider this process installed (None: tracing is off here).
_provider: "TracerProvider | None" = None


def configure(settings: "Settings", *, role: str, exporter: "SpanExporter | None" = None) -> bool:
    """Install this process's TracerProvider if `[tracing] enabled`; True if it did.

    `role` ("receiver", "worker", ...) is a resource attribute, so a trace shows which process
    made each span. `exporter` replaces the OTLP one (tests give an in-memory exporter).
    OpenTelemetry takes one global provider per process: a second call keeps the first.
    """
    global _provider
    if not settings.tracing.enabled:
        return False
    if _provider is not None:
        log.warning("tracing.already_configured")
        return True
    problem = missing_packages()
    if problem is not None:
        raise ConfigError(problem)
    provider = build_provider(settings.tracing, role=role, exporter=exporter)
    trace.set_tracer_provider(provider)
    _provider = provider
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    instrumentor = HTTPXClientInstrumentor()
    if not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument(tracer_provider=provider)
    # The collector's address only: no OTEL_EXPORTER_OTLP_HEADERS (its token), no userinfo.
    endpoint = settings.tracing.endpoint
    log.info(
        "tracing.configured",
        role=role,
        exporter=type(exporter).__name__ if exporter else "otlp",
        endpoint=_shown(endpoint) if endpoint else "from OTEL_EXPORTER_OTLP_*",
    )
    return True


# What `[tracing] enabled` imports beyond `opentelemetry-api` (the `tracing` extra).
NEEDED = (
    "opentelemetry.sdk.trace",
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "opentelemetry.instrumentation.httpx",
)


def missing_packages() -> str | None:
    """Why tracing cannot start here (one line), or None: the extra's modules import."""
    import importlib

    for module in NEEDED:
        try:
            importlib.import_module(module)
        except ImportError:
            return (
                f"[tracing] enabled needs {module.rsplit('.', 1)[0]}, not installed: "
                "pip install 'idlehook[tracing]'"
            )
    return None


def build_provider(
    cfg: "TracingSettings", *, role: str, exporter: "SpanExporter | None" = None
) -> "TracerProvider":
    """A provider (not installed) exporting `cfg`'s way in batches; the sampler is the SDK's
    (parent-based, always on, or `OTEL_TRACES_SAMPLER`)."""
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    attributes: dict[str, str] = {"idlehook.process": role}
    if cfg.service_name:
        attributes[SERVICE_NAME] = cfg.service_name
    resource = Resource.create(attributes)
    # Resource.create reads OTEL_SERVICE_NAME; without it the name is "unknown_service...".
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: DEFAULT_SERVICE_NAME}))
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(exporter or otlp_exporter(cfg)))
    return provider


def otlp_exporter(cfg: "TracingSettings") -> "SpanExporter":
    """OTLP over HTTP with protobuf bodies; with no endpoint configured the exporter reads
    the OTEL_EXPORTER_OTLP_* variables itself (endpoint, headers, timeout, compression)."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(endpoint=traces_url(cfg.endpoint) if cfg.endpoint else None)


def traces_url(endpoint: str) -> str:
    """`[tracing] endpoint` is a base URL, like OTEL_EXPORTER_OTLP_ENDPOINT: spans go to its
    `/v1/traces` unless that path is already given."""
    base = endpoint.rstrip("/")
    return base if base.endswith(TRACES_PATH) else base + TRACES_PATH


def _shown(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    return f"{parts.scheme}://{host}{f':{parts.port}' if parts.port else ''}{parts.path}"


def tracer(settings: "Settings") -> trace.Tracer | None:
    """The tracer the webhook path makes its spans with, or None when tracing is off: there a
    per-request check of None is all it costs."""
    return trace.get_tracer(SCOPE) if settings.tracing.enabled else None


def flush(timeout_millis: int = 30_000) -> bool:
    """Export every finished span now (True if all were); nothing to do when tracing is off."""
    return _provider.force_flush(timeout_millis) if _provider is not None else True


def shutdown() -> None:
    """Flush and stop this process's exporter (a process's last act; the SDK's atexit hook
    does it too, but a SIGTERMed worker may never get there)."""
    global _provider
    provider, _provider = _provider, None
    if provider is not None:
        provider.shutdown()
