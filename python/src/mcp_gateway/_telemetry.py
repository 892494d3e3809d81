"""OpenTelemetry traces of the gateway and the core: one SERVER span per request, OTLP export.

Off by default; on only through the standard variables (``docs/operations.md``, Traces): the
exporter is on when ``OTEL_TRACES_EXPORTER`` includes ``otlp``, or when it is unset and
``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is set;
``OTEL_SDK_DISABLED=true`` or ``OTEL_TRACES_EXPORTER=none`` keep it off. Only OTLP/HTTP with
protobuf is exported (``OTEL_EXPORTER_OTLP_PROTOCOL`` / ``OTEL_EXPORTER_OTLP_TRACES_PROTOCOL``
unset or ``http/protobuf``; anything else is a :class:`ConfigError`). The exporter reads its
headers and timeout from the same variables itself (its endpoint is given:
:func:`traces_endpoint`); spans leave through the SDK's
batch processor (``OTEL_BSP_*``), never on the request's path.

When off, :func:`tracing_from_env` returns ``None``, the SDK is not even imported, and callers
pass the ``traceparent`` they received on unchanged: no span, no context object, no id.

When on, a span is started with an explicit parent read from the W3C ``traceparent`` received
and is never made "current" (no context variable is set or reset per request: nothing in the
process creates child spans); the ``traceparent`` sent on is formatted from the span's ids.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from mcp_gateway._errors import ConfigError

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span, Tracer

__all__ = [
    "Tracing",
    "parse_traceparent",
    "trace_id_of",
    "traceparent_of",
    "traces_endpoint",
    "tracing_from_env",
]

_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


def parse_traceparent(value: str) -> tuple[int, int, int] | None:
    """A version-00 W3C ``traceparent``'s trace id, parent span id and flags; ``None`` if invalid.

    All-zero ids are invalid (W3C trace context, section 3.2.2).
    """
    match = _TRACEPARENT.match(value.strip().lower()) if value else None
    if match is None:
        return None
    trace_id, span_id = int(match.group(1), 16), int(match.group(2), 16)
    if trace_id == 0 or span_id == 0:
        return None
    return trace_id, span_id, int(match.group(3), 16)


def trace_id_of(traceparent: str) -> str:
    """The 32-hex trace id of a valid ``traceparent``, ``""`` otherwise (for log lines)."""
    parsed = parse_traceparent(traceparent)
    return f"{parsed[0]:032x}" if parsed else ""


def traceparent_of(span: Span) -> str:
    """The W3C ``traceparent`` naming ``span`` as the parent (what the next hop is sent)."""
    ctx = span.get_span_context()
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


def traces_endpoint(env: Mapping[str, str]) -> str:
    """Where spans are sent: the OTLP exporter specification's rule, read from ``env``.

    ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` as it is, else ``OTEL_EXPORTER_OTLP_ENDPOINT`` plus
    ``/v1/traces``, else ``http://localhost:4318/v1/traces``. (Given to the exporter explicitly,
    so that ``env`` and not only ``os.environ`` decides.)
    """
    traces = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
    if traces:
        return traces
    base = env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip() or "http://localhost:4318"
    return base.rstrip("/") + "/v1/traces"


def _enabled(env: Mapping[str, str]) -> bool:
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = [e.strip().lower() for e in env.get("OTEL_TRACES_EXPORTER", "").split(",") if e.strip()]
    if exporters:
        return "otlp" in exporters
    return bool(env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


class Tracing:
    """The process's tracer and its OTLP/HTTP exporter.

    Args:
        service_name: ``service.name`` unless ``OTEL_SERVICE_NAME`` (or
            ``OTEL_RESOURCE_ATTRIBUTES``) says otherwise.
        env: The environment the exporter reads.
        resource: More resource attributes (sent once per export batch, not per span: the
            gateway's mode is one).
    """

    def __init__(
        self, service_name: str, env: Mapping[str, str], resource: Mapping[str, str] | None = None
    ) -> None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags

        from mcp_gateway import __version__

        attributes: dict[str, Any] = {"service.version": __version__, **(resource or {})}
        if not env.get("OTEL_SERVICE_NAME"):
            attributes["service.name"] = service_name
        self._provider: TracerProvider = TracerProvider(resource=Resource.create(attributes))
        self._provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=traces_endpoint(env))))
        self.tracer: Tracer = self._provider.get_tracer("mcp_gateway", __version__)
        self._server_kind = SpanKind.SERVER
        self._span_context = SpanContext
        self._non_recording = NonRecordingSpan
        self._flags = TraceFlags

    def start_server_span(self, name: str, traceparent: str, attributes: dict[str, Any]) -> Span:
        """Start a SERVER span, the child of ``traceparent`` when it is valid (else a new trace).

        The caller ends it (``span.end()``); it is not made the current span.
        """
        from opentelemetry.trace import set_span_in_context

        parent = parse_traceparent(traceparent)
        context = None
        if parent is not None:
            trace_id, span_id, flags = parent
            remote = self._span_context(trace_id, span_id, is_remote=True, trace_flags=self._flags(flags))
            context = set_span_in_context(self._non_recording(remote))
        return self.tracer.start_span(name, context=context, kind=self._server_kind, attributes=attributes)

    def shutdown(self) -> None:
        """Export what is queued and stop (at exit)."""
        self._provider.shutdown()


def tracing_from_env(
    service_name: str, env: Mapping[str, str], resource: Mapping[str, str] | None = None
) -> Tracing | None:
    """The process's tracing per the standard variables, ``None`` when off.

    Raises:
        ConfigError: Tracing is on with a protocol other than ``http/protobuf``.
    """
    if not _enabled(env):
        return None
    for name in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        protocol = env.get(name, "").strip()
        if protocol and protocol != "http/protobuf":
            raise ConfigError(f"{name}={protocol!r}: only http/protobuf is supported")
        if protocol:
            break
    return Tracing(service_name, env, resource)
