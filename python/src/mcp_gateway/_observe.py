"""What the gateway records of each MCP request: metrics, its span, its log line.

:class:`Observer` is built once by ``create_app`` when at least one of the three is on (metrics
listener set, tracing on, the ``mcp_gateway.access`` logger enabled for ``info``); without any,
the endpoint holds ``None`` and serves exactly as before (the off path has no extra call, await
or allocation). With one on, a request costs: one :class:`Observed` (slots), a ``send`` wrapper
(one extra await per ASGI message), the ``mcp_method`` scan of the body's first 4 KiB, and then
only the parts switched on: two dict lookups and two cached children for metrics, one span for
tracing, one ``logger.info`` for the log.

Recorded when the request ends (an SSE stream: when it closes):

- ``mcp_method``: :func:`mcp_method_of` of the body (``unknown`` when refused before it was
  read);
- ``http_status``: the status sent; ``499`` when the client went away before any answer (the
  nginx convention for "client closed request");
- ``rpc_code``: :func:`rpc_code_of` of the answer's first body chunk (``stream`` for SSE);
- ``duration``: from the request's arrival at the endpoint to its answer's head, in seconds.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from starlette.types import Message, Send

from mcp_gateway._metrics import GatewayMetrics, mcp_method_of, rpc_code_of
from mcp_gateway._telemetry import Tracing, trace_id_of, traceparent_of

if TYPE_CHECKING:
    from opentelemetry.trace import Span

__all__ = ["ACCESS_LOGGER", "Observed", "Observer"]

ACCESS_LOGGER = logging.getLogger("mcp_gateway.access")
"""The per-request line (``msg="request"``, ``docs/operations.md``), at ``info``."""

_INFO = logging.INFO
_OK_CODES = frozenset({"ok", "stream", "none"})


class Observed:
    """One request's record, filled in by the endpoint and the ``send`` wrapper."""

    __slots__ = (
        "_send",
        "content_type",
        "head_at",
        "mcp_method",
        "observer",
        "request_id",
        "rpc_code",
        "session_id",
        "span",
        "start",
        "status",
        "streaming",
        "traceparent",
    )

    def __init__(self, observer: Observer) -> None:
        self.observer = observer
        self.start = time.perf_counter()
        self.head_at = 0.0
        self.mcp_method = "unknown"
        self.session_id: str | None = None
        self.request_id = ""
        self.status = 0
        self.rpc_code: str | None = None
        self.content_type: str | None = None
        self.streaming = False
        self.span: Span | None = None
        self.traceparent = ""
        self._send: Send | None = None

    def begin(self, traceparent: str, http_method: str, path: str) -> str:
        """Start the span (tracing on); returns the ``traceparent`` to send to the runtime.

        With tracing on that is the gateway's span; off, the one received, unchanged.
        """
        tracing = self.observer.tracing
        if tracing is None:
            self.traceparent = traceparent
            return traceparent
        self.span = span = tracing.start_server_span(
            http_method,
            traceparent,
            {"http.request.method": http_method, "url.path": path},
        )
        self.traceparent = traceparent_of(span)
        return self.traceparent

    def read(self, http_method: str, body: bytes, session_id: str | None, request_id: str) -> None:
        """The request's MCP method (from its body), session and request id."""
        self.mcp_method = mcp_method_of(http_method, body)
        self.session_id = session_id
        self.request_id = request_id

    def wrap(self, send: Send) -> Send:
        """``send`` that notes the status, the content type and the first body chunk."""
        self._send = send
        return self._observed_send

    async def _observed_send(self, message: Message) -> None:
        if self.rpc_code is None:
            kind = message["type"]
            if kind == "http.response.start":
                self.head_at = time.perf_counter()
                self.status = message["status"]
                for name, value in message.get("headers", ()):
                    if name == b"content-type":
                        self.content_type = value.decode("latin-1")
                        break
                if self.content_type is not None and self.content_type.startswith("text/event-stream"):
                    self.streaming = True
                    self.rpc_code = "stream"
                    metrics = self.observer.metrics
                    if metrics is not None:
                        metrics.streams.inc()
            elif kind == "http.response.body":
                self.rpc_code = rpc_code_of(self.content_type, message.get("body", b""))
        assert self._send is not None
        await self._send(message)

    def finish(self) -> None:
        """Record the request: metrics, the span's end, the log line."""
        observer = self.observer
        status = self.status or 499
        rpc_code = self.rpc_code or "none"
        duration = (self.head_at or time.perf_counter()) - self.start
        metrics = observer.metrics
        if metrics is not None:
            if self.streaming:
                metrics.streams.dec()
            metrics.request(self.mcp_method, status, rpc_code, duration)
        span = self.span
        span_id = ""
        if span is not None:
            span.update_name(self.mcp_method)
            attributes: dict[str, Any] = {
                "http.response.status_code": status,
                "mcp.method.name": self.mcp_method,
                "mcp.request.id": self.request_id,
            }
            if rpc_code not in _OK_CODES:
                attributes["mcp.rpc_code"] = rpc_code
            if self.session_id:
                attributes["mcp.session.id"] = self.session_id
            if status >= 500:
                from opentelemetry.trace import Status, StatusCode

                attributes["error.type"] = str(status)
                span.set_status(Status(StatusCode.ERROR))
            span.set_attributes(attributes)
            span.end()
            span_id = self.traceparent[36:52]
        if ACCESS_LOGGER.isEnabledFor(_INFO):
            ok = status < 400 and rpc_code in _OK_CODES
            ACCESS_LOGGER.info(
                "request",
                extra={
                    "request_id": self.request_id,
                    "trace_id": trace_id_of(self.traceparent),
                    "span_id": span_id,
                    "session_id": self.session_id,
                    "mode": observer.mode,
                    "mcp_method": self.mcp_method,
                    "http_status": status,
                    "rpc_code": rpc_code,
                    "outcome": "ok" if ok else "error",
                    "duration_ms": round(duration * 1000, 3),
                },
            )


class Observer:
    """The gateway's recorders of requests: any of metrics, tracing, the access log.

    Args:
        mode: The gateway's mode (label and span attribute).
        metrics: The metrics, or ``None``.
        tracing: The tracer, or ``None``.
    """

    def __init__(self, mode: str, metrics: GatewayMetrics | None, tracing: Tracing | None) -> None:
        self.mode = mode
        self.metrics = metrics
        self.tracing = tracing

    @staticmethod
    def wanted(metrics: GatewayMetrics | None, tracing: Tracing | None) -> bool:
        """Whether anything would be recorded (else the endpoint runs without an observer)."""
        return metrics is not None or tracing is not None or ACCESS_LOGGER.isEnabledFor(_INFO)

    def boundary_error(self, grpc_status: str) -> None:
        """Count a failed call to the runtime."""
        if self.metrics is not None:
            self.metrics.boundary_error(grpc_status)
