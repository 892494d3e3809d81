"""Prometheus metrics of the gateway and the core, served on a listener of their own.

Off by default: ``MCP_GATEWAY_METRICS_LISTEN`` (gateway) or ``--metrics-listen`` /
``MCP_CORE_METRICS_LISTEN`` (core) give ``host:port``. The names, labels and their values are the
conventions of ``docs/operations.md``. Nothing here runs per request when metrics are off: the
callers hold ``None`` instead of a metrics object and test it once.

The hot path is cheap when on. The two per-request metrics of the gateway
(``mcp_requests_total``, ``mcp_request_duration_seconds``) are plain integers in dicts keyed by
the label values (:class:`RequestStats`), updated with no lock (the event loop is one thread) and
turned into Prometheus families by a custom collector at scrape time (the scrape's thread copies
each dict in one C-level call, under the GIL). Measured: a ``labels(...)`` per request (hash the
values, take a lock, maybe create the child) plus the child's locked ``inc``/``observe`` cost
about 17 us, the same with cached children about 6 us, this about 1.5 us (``bench/ops_cost.py``).
The other metrics change per connection or per failure and use prometheus-client's own types,
their children cached in dicts too. Gauges that mirror a count the process keeps anyway (requests
in progress, open sessions) are read at scrape time (``set_function``).

The listener (:class:`MetricsServer`) is bound at start, before anything else listens, so a
port in use is a :class:`ConfigError` (one line, exit status 2); it serves ``GET /metrics``,
``GET /health`` and ``GET /ready`` from a daemon thread (the scrape never waits for the event
loop; ``/ready`` asks the process's readiness callback).
"""

from __future__ import annotations

import bisect
import json
import re
import socket
import threading
from collections.abc import Callable, Iterable, Iterator
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from mcp_gateway import __version__
from mcp_gateway._errors import ConfigError

__all__ = [
    "BUCKETS",
    "MCP_METHODS",
    "CoreMetrics",
    "GatewayMetrics",
    "MetricsServer",
    "mcp_method_of",
    "parse_listen",
    "rpc_code_of",
]

ACTIVE: GatewayMetrics | None = None
"""The gateway's metrics once ``create_app`` was given some: the public listener's connection
counters read it (uvicorn builds the listener's protocol objects itself)."""

BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Histogram bucket upper bounds, in seconds (``docs/operations.md``)."""

MCP_METHODS = frozenset(
    {
        "initialize",
        "ping",
        "tools/list",
        "tools/call",
        "resources/list",
        "resources/read",
        "resources/templates/list",
        "resources/subscribe",
        "resources/unsubscribe",
        "prompts/list",
        "prompts/get",
        "completion/complete",
        "logging/setLevel",
        "notifications/initialized",
        "notifications/cancelled",
        "notifications/progress",
        "notifications/roots/list_changed",
    }
)
"""The ``mcp_method`` label values taken as they are; any other method name is ``other``."""

# No ``*_created`` series beside every counter and histogram: they double the exposition and
# no query of docs/operations.md needs them.
disable_created_metrics()  # type: ignore[no-untyped-call]

_METHOD = re.compile(rb'"method"\s*:\s*"([^"\\]{1,64})"')
_SCAN_BYTES = 4096
"""How much of a request body is searched for its ``"method"`` (bytes)."""


def mcp_method_of(http_method: str, body: bytes) -> str:
    """The ``mcp_method`` label of a request (``docs/operations.md``).

    The method is the first ``"method": "..."`` in the body's first 4 KiB (a JSON-RPC request
    names it at its top level; the body is not parsed, so a large ``tools/call`` costs the same
    as a ping).

    Args:
        http_method: ``POST``, ``GET`` or ``DELETE`` (anything else is ``unknown``).
        body: The request body (POST).

    Returns:
        An MCP method name, ``other``, ``response`` (a POST without a method but with
        ``"result"`` or ``"error"``), ``unknown``, ``GET`` or ``DELETE``.
    """
    if http_method != "POST":
        return http_method if http_method in ("GET", "DELETE") else "unknown"
    # Fast path: compact JSON (what SDK clients send), no regex, no copy of the body.
    start = body.find(b'"method":"', 0, _SCAN_BYTES)
    if start >= 0:
        end = body.find(b'"', start + 10, start + 80)
        if end > 0:
            name = body[start + 10 : end].decode("ascii", "replace")
            if name in MCP_METHODS:
                return name
    head = body[:_SCAN_BYTES]
    found = _METHOD.search(head)
    if found is None:
        return "response" if (b'"result"' in head or b'"error"' in head) else "unknown"
    name = found.group(1).decode("ascii", "replace")
    return name if name in MCP_METHODS else "other"


_CODE = re.compile(rb'"code"\s*:\s*(-?\d{1,12})')
_CLASSES = {
    -32700: "parse_error",
    -32600: "invalid_request",
    -32601: "method_not_found",
    -32602: "invalid_params",
    -32603: "internal_error",
}


def rpc_code_class(code: int) -> str:
    """The ``rpc_code`` label of a JSON-RPC error code."""
    known = _CLASSES.get(code)
    if known is not None:
        return known
    return "server_error" if -32099 <= code <= -32000 else "other"


def rpc_code_of(content_type: str | None, body: bytes) -> str:
    """The ``rpc_code`` label of an answer (``docs/operations.md``).

    Only the first 512 bytes of a JSON body are looked at: whichever of ``"result"`` and
    ``"error"`` comes first decides, and an error's class is that of its ``code``.

    Args:
        content_type: The answer's ``Content-Type``.
        body: The answer's body, or its first chunk.

    Returns:
        ``stream`` for an SSE answer, ``none`` without a JSON body, else ``ok`` or the error's
        class.
    """
    if content_type is None:
        return "none"
    if content_type.startswith("text/event-stream"):
        return "stream"
    if not content_type.startswith("application/json") or not body:
        return "none"
    result, error = body.find(b'"result"', 0, 512), body.find(b'"error"', 0, 512)
    if error < 0 or 0 <= result < error:
        return "ok" if result >= 0 else "none"
    found = _CODE.search(body, error, 512)
    return rpc_code_class(int(found.group(1))) if found else "other"


def parse_listen(value: str, name: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` for IPv6) as a bind address.

    Args:
        value: The setting's value.
        name: The setting's name, for the error.

    Raises:
        ConfigError: Not ``host:port``, or the port is not 1-65535.
    """
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{name}={value!r} is not host:port (for example 127.0.0.1:9464)")
    return host.removeprefix("[").removesuffix("]"), int(port)


class _Registry:
    """A registry of the process's own metrics, with ``mcp_build_info``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        info = Gauge(
            "mcp_build_info", "The process's version (always 1).", ["version"], registry=self.registry
        )
        info.labels(__version__).set(1)

    def exposition(self) -> bytes:
        """The Prometheus text format of every metric, as a scrape gets it."""
        return generate_latest(self.registry)


class RequestStats(Collector):
    """``mcp_requests_total`` and ``mcp_request_duration_seconds`` as plain counts (see the module).

    Args:
        mode: The ``mode`` label of every sample.
    """

    def __init__(self, mode: str) -> None:
        self._mode = mode
        self._requests: dict[tuple[str, int, str], int] = {}
        self._durations: dict[str, list[float]] = {}
        """Per ``mcp_method``: one count per bucket (not cumulative; the last is +Inf), then the sum."""

    def observe(self, mcp_method: str, http_status: int, rpc_code: str, duration_s: float) -> None:
        """Count one request and its duration (seconds). Event-loop thread only."""
        key = (mcp_method, http_status, rpc_code)
        requests = self._requests
        requests[key] = requests.get(key, 0) + 1
        row = self._durations.get(mcp_method)
        if row is None:
            row = self._durations[mcp_method] = [0.0] * (len(BUCKETS) + 2)
        row[bisect.bisect_left(BUCKETS, duration_s)] += 1
        row[-1] += duration_s

    def collect(self) -> Iterator[Metric]:
        """The two families, built from copies of the counts (scrape thread)."""
        counter = CounterMetricFamily(
            "mcp_requests",
            "MCP requests answered, counted when the request ends.",
            labels=["mode", "mcp_method", "http_status", "rpc_code"],
        )
        for (method, status, code), count in list(self._requests.items()):
            counter.add_metric([self._mode, method, str(status), code], count)
        yield counter
        histogram = HistogramMetricFamily(
            "mcp_request_duration_seconds",
            "From a request's head to its answer's head, in seconds.",
            labels=["mode", "mcp_method"],
        )
        bounds = [*(repr(float(b)) for b in BUCKETS), "+Inf"]
        for method, live in list(self._durations.items()):
            row = list(live)
            cumulative, buckets = 0.0, list[tuple[str, float]]()
            for bound, in_bucket in zip(bounds, row[:-1], strict=True):
                cumulative += in_bucket
                buckets.append((bound, cumulative))
            histogram.add_metric([self._mode, method], buckets, row[-1])
        yield histogram


class GatewayMetrics(_Registry):
    """The gateway's metrics (``docs/operations.md``, gateway section).

    Args:
        mode: The gateway's mode (``grpc``, ``http``, ``python``): the ``mode`` label.
    """

    def __init__(self, mode: str) -> None:
        super().__init__()
        r = self.registry
        self.mode = mode
        self._stats = RequestStats(mode)
        r.register(self._stats)
        self.request = self._stats.observe
        """Count one answered request and observe its duration (seconds): :meth:`RequestStats.observe`."""
        self._in_flight = Gauge(
            "mcp_requests_in_flight", "Requests whose answer is not complete.", ["mode"], registry=r
        )
        self._streams = Gauge("mcp_streams_open", "SSE answers being sent.", ["mode"], registry=r)
        self._sessions = Gauge("mcp_sessions_open", "MCP sessions this process holds.", registry=r)
        self._boundary = Counter(
            "mcp_boundary_errors",
            "Calls to the runtime that failed, by gRPC status.",
            ["mode", "grpc_status"],
            registry=r,
        )
        self._admitted = Counter(
            "mcp_connections_admitted", "Connections accepted on the public listener.", registry=r
        )
        self._refused = Counter(
            "mcp_connections_refused",
            "Connections closed by the listener's limits.",
            ["reason"],
            registry=r,
        )
        self.streams = self._streams.labels(mode)
        self.connections_admitted = self._admitted
        self._refused_children: dict[str, Any] = {}
        self._boundary_children: dict[str, Any] = {}

    def watch_in_flight(self, read: Callable[[], float]) -> None:
        """Read ``mcp_requests_in_flight`` from ``read`` at each scrape (no per-request cost)."""
        self._in_flight.labels(self.mode).set_function(read)

    def watch_sessions(self, read: Callable[[], float]) -> None:
        """Read ``mcp_sessions_open`` from ``read`` at each scrape."""
        self._sessions.set_function(read)

    def boundary_error(self, grpc_status: str) -> None:
        """Count one failed call to the runtime (a canonical gRPC status name)."""
        child = self._boundary_children.get(grpc_status)
        if child is None:
            child = self._boundary_children[grpc_status] = self._boundary.labels(self.mode, grpc_status)
        child.inc()

    def connection_refused(self, reason: str) -> None:
        """Count one connection the listener closed (``max_connections``, ``evicted``, ...)."""
        child = self._refused_children.get(reason)
        if child is None:
            child = self._refused_children[reason] = self._refused.labels(reason)
        child.inc()


class CoreMetrics(_Registry):
    """The core's metrics (``docs/operations.md``, core section)."""

    def __init__(self) -> None:
        super().__init__()
        r = self.registry
        self._requests = Counter(
            "mcp_core_requests",
            "Core SPI calls served.",
            ["mode", "operation", "outcome"],
            registry=r,
        )
        self._duration = Histogram(
            "mcp_core_request_duration_seconds",
            "Core SPI calls' latency, in seconds (a watch stream: until it ends).",
            ["mode", "operation"],
            buckets=BUCKETS,
            registry=r,
        )
        self._revocations = Counter("mcp_policy_revocations", "Revocations made.", ["kind"], registry=r)
        self._watchers = Gauge("mcp_core_watchers_open", "Open WatchPolicy streams.", registry=r)
        self._children: dict[tuple[str, str, str], Any] = {}
        self._duration_children: dict[tuple[str, str], Any] = {}

    def watch_watchers(self, read: Callable[[], float]) -> None:
        """Read ``mcp_core_watchers_open`` from ``read`` at each scrape."""
        self._watchers.set_function(read)

    def call(self, mode: str, operation: str, ok: bool, duration_s: float) -> None:
        """Count one Core SPI call and observe its duration (seconds)."""
        key = (mode, operation, "ok" if ok else "error")
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self._requests.labels(*key)
        child.inc()
        histogram = self._duration_children.get(key[:2])
        if histogram is None:
            histogram = self._duration_children[key[:2]] = self._duration.labels(mode, operation)
        histogram.observe(duration_s)

    def revocation(self, kind: str) -> None:
        """Count one revocation (``token``, ``subject`` or ``all``)."""
        self._revocations.labels(kind).inc()


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Server6(_Server):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """No access log line per scrape."""


Readiness = Callable[[], "tuple[bool, str]"]
"""A process's readiness: ``(ready, reason)``, ``reason`` empty when ready."""


class MetricsServer:
    """The metrics listener: ``/metrics``, ``/health``, ``/ready``, in a daemon thread.

    Args:
        metrics: What ``/metrics`` exposes.
        listen: The setting's value, ``host:port``.
        name: The setting's name (``MCP_GATEWAY_METRICS_LISTEN``, ``--metrics-listen``), for
            errors.
        readiness: Called (in the listener's thread) for ``/ready``.

    Raises:
        ConfigError: ``listen`` is malformed, or binding it failed (port in use, no such
            address): one line naming ``name`` and the address.
    """

    def __init__(self, metrics: _Registry, listen: str, name: str, readiness: Readiness) -> None:
        host, port = parse_listen(listen, name)
        self._metrics = metrics
        self._readiness = readiness
        server_class = _Server6 if ":" in host else _Server
        try:
            self._server = make_server(host, port, self._app, server_class, _QuietHandler)
        except (OSError, OverflowError) as e:
            reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
            raise ConfigError(f"{name}={listen}: cannot listen there: {reason}") from e
        self.address = f"{host}:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics", daemon=True)

    def start(self) -> None:
        """Serve in the background."""
        self._thread.start()

    def close(self) -> None:
        """Stop serving and close the socket."""
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()

    def _app(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if environ.get("REQUEST_METHOD") != "GET":
            start_response("405 Method Not Allowed", [("Allow", "GET")])
            return [b""]
        if path == "/metrics":
            body = self._metrics.exposition()
            start_response("200 OK", [("Content-Type", CONTENT_TYPE_LATEST)])
            return [body]
        if path == "/health":
            return self._json(start_response, 200, {"status": "ok"})
        if path == "/ready":
            ready, reason = self._readiness()
            if ready:
                return self._json(start_response, 200, {"status": "ready"})
            return self._json(start_response, 503, {"status": "not_ready", "reason": reason})
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found: /metrics, /health, /ready\n"]

    @staticmethod
    def _json(start_response: Callable[..., Any], status: int, body: dict[str, str]) -> Iterable[bytes]:
        phrase = {200: "OK", 503: "Service Unavailable"}[status]
        start_response(f"{status} {phrase}", [("Content-Type", "application/json")])
        return [json.dumps(body).encode()]
