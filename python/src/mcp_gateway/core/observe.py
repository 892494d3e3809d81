"""What the core records of each Core SPI call: metrics, its span, its log line.

Built by :func:`mcp_gateway.core.server.serve` when any of the three is on (``--metrics-listen``,
the standard ``OTEL_*`` variables, the ``mcp_gateway.core.access`` logger at ``info``); without
any the transports run with ``None`` and record nothing. The gRPC transport is observed by a
server interceptor (:class:`GrpcObserver`, installed only then), the HTTP/JSON one around its
route call.

A call's ``operation`` is the RPC's name in ``core.proto`` (``ResolveCaller``, ``WatchPolicy``,
``InvokeHook``, ``RecordCalls``), over HTTP/JSON the same for the ``/v1/...`` routes and
``Revoke`` / ``Stats`` for the admin routes. Its parent span is the W3C ``traceparent`` of the
gRPC metadata or the HTTP header, else the ``traceparent`` field of a ``ResolveCaller`` request
(the runtime sends both, ``docs/operations.md``). A call is ``error`` when it raised (a gRPC
abort included) or answered 5xx; a watch stream is recorded when it ends.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import grpc
import grpc.aio

from mcp_gateway._metrics import CoreMetrics
from mcp_gateway._telemetry import Tracing, trace_id_of, traceparent_of

__all__ = ["ACCESS_LOGGER", "HTTP_OPERATIONS", "Call", "CoreObserver", "GrpcObserver", "field_in_body"]

ACCESS_LOGGER = logging.getLogger("mcp_gateway.core.access")
"""The per-call line (``msg="request"``), at ``info``."""

HTTP_OPERATIONS = {
    "/v1/resolve-caller": "ResolveCaller",
    "/v1/invoke-hook": "InvokeHook",
    "/v1/record-calls": "RecordCalls",
    "/v1/watch-policy": "WatchPolicy",
    "/admin/revoke": "Revoke",
    "/admin/stats": "Stats",
}
"""The HTTP/JSON routes observed, by the ``operation`` they are; others (health) are not."""

_FIELDS = {
    name: re.compile(rb'"' + name.encode() + rb'"\s*:\s*"([^"\\]{0,128})"')
    for name in ("traceparent", "requestId")
}


def field_in_body(body: bytes, name: str) -> str:
    """A string field (``traceparent``, ``requestId``) of a request body's first 4 KiB, ``""`` if none.

    Read without parsing the body (the route parses it once, after).
    """
    found = _FIELDS[name].search(body[:4096])
    return found.group(1).decode("ascii", "replace") if found else ""


class Call:
    """One call being observed: set ``ok`` to ``False`` for a failure that did not raise."""

    __slots__ = ("ok", "status")

    def __init__(self) -> None:
        self.ok = True
        self.status = ""


class CoreObserver:
    """The core's recorders: any of metrics, tracing, the access log.

    Args:
        metrics: The metrics, or ``None``.
        tracing: The tracer, or ``None``.
    """

    def __init__(self, metrics: CoreMetrics | None, tracing: Tracing | None) -> None:
        self.metrics = metrics
        self.tracing = tracing

    @staticmethod
    def wanted(metrics: CoreMetrics | None, tracing: Tracing | None) -> bool:
        """Whether anything would be recorded."""
        return metrics is not None or tracing is not None or ACCESS_LOGGER.isEnabledFor(logging.INFO)

    @contextlib.contextmanager
    def call(self, mode: str, operation: str, traceparent: str, request_id: str = "") -> Iterator[Call]:
        """Observe one call: its span, then its metrics and log line when it ends.

        Args:
            mode: ``grpc`` or ``http``.
            operation: See the module docstring.
            traceparent: The caller's W3C ``traceparent`` (``""``: none).
            request_id: The request id the runtime sent, for the log line.
        """
        start = time.perf_counter()
        call = Call()
        span = None
        if self.tracing is not None:
            span = self.tracing.start_server_span(
                f"mcp.core.v1.Core/{operation}",
                traceparent,
                {"rpc.system": "grpc" if mode == "grpc" else "http", "rpc.method": operation},
            )
            traceparent = traceparent_of(span)
        try:
            yield call
        except BaseException as e:
            call.ok = False
            call.status = call.status or type(e).__name__
            raise
        finally:
            duration = time.perf_counter() - start
            if self.metrics is not None:
                self.metrics.call(mode, operation, call.ok, duration)
            if span is not None:
                if not call.ok:
                    from opentelemetry.trace import Status, StatusCode

                    span.set_status(Status(StatusCode.ERROR))
                    span.set_attribute("error.type", call.status or "error")
                span.end()
            if ACCESS_LOGGER.isEnabledFor(logging.INFO):
                ACCESS_LOGGER.info(
                    "request",
                    extra={
                        "request_id": request_id,
                        "trace_id": trace_id_of(traceparent),
                        "span_id": traceparent[36:52] if span is not None else "",
                        "mode": mode,
                        "operation": operation,
                        "outcome": "ok" if call.ok else "error",
                        "duration_ms": round(duration * 1000, 3),
                    },
                )


def _metadata_traceparent(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == "traceparent":
            return value if isinstance(value, str) else value.decode("ascii", "replace")
    return ""


class GrpcObserver(grpc.aio.ServerInterceptor):
    """A grpc.aio server interceptor observing every Core SPI call (health checks excepted).

    Args:
        observer: The recorders.
    """

    def __init__(self, observer: CoreObserver) -> None:
        self._observer = observer

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        """Wrap the unary and server-streaming handlers of the Core SPI's services."""
        handler = await continuation(handler_call_details)
        method: str = handler_call_details.method or ""
        if handler is None or not method.startswith("/mcp.core."):
            return handler
        operation = method.rsplit("/", 1)[-1]
        observer = self._observer
        if handler.unary_unary is not None:
            inner: Any = handler.unary_unary  # grpc.aio: a coroutine function (the stubs say sync)

            async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                traceparent = _metadata_traceparent(context) or getattr(request, "traceparent", "")
                with observer.call("grpc", operation, traceparent, getattr(request, "request_id", "")):
                    return await inner(request, context)

            return grpc.unary_unary_rpc_method_handler(
                unary,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            inner_stream: Any = handler.unary_stream  # grpc.aio: an async generator function

            async def stream(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
                with observer.call("grpc", operation, _metadata_traceparent(context)):
                    async for item in inner_stream(request, context):
                        yield item

            return grpc.unary_stream_rpc_method_handler(
                stream,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler
