"""Operations (issue 18, docs/operations.md): metrics, traces, request logs, readiness and drain.

Real processes throughout: the gateway (``python -m mcp_gateway serve``) before the session's
runtime, and the core (``python -m mcp_gateway core``), each scraped on its metrics listener,
probed on ``/ready`` and ``/health``, and stopped with SIGTERM. The trace test runs a real OTLP/HTTP
receiver (protobuf ``ExportTraceServiceRequest`` decoded with ``opentelemetry-proto``) and
checks the spans the gateway and the core export.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import httpx
import pytest
from aiohttp import web
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from prometheus_client.parser import text_string_to_metric_families

from conftest import INITIALIZE, RUNTIME_FLAGS, SECRET, Gateway, Runtime, Runtimes, _socket_dir, gateway_env
from mcp_gateway._metrics import mcp_method_of, rpc_code_of
from mcp_gateway._proto.mcp.core.v1 import core_pb2 as pb
from mcp_gateway._proto.mcp.core.v1 import core_pb2_grpc as pb_grpc
from mcp_gateway.testing import (
    free_port,
    start_core,
    start_edge_runtime,
    start_gateway,
    start_runtime,
    stop,
)

CHANNEL_OPTIONS = [("grpc.default_authority", "localhost"), ("grpc.enable_http_proxy", 0)]
CALL = {
    "jsonrpc": "2.0",
    "id": 3,
    "method": "tools/call",
    "params": {"name": "echo", "arguments": {"text": "hi"}},
}


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of ``GET /metrics`` on ``port``: (name, sorted labels) -> value."""
    r = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5.0)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def request_lines(log: Path) -> list[dict[str, Any]]:
    """The log's lines, each parsed as JSON (every line must be), that are request lines."""
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    return [line for line in lines if line.get("msg") == "request"]


@contextlib.contextmanager
def gateway(
    mode: str, workdir: Path, catalog: Path, runtimes: Runtimes, **extra: str
) -> Iterator[tuple[Gateway, subprocess.Popen[bytes], Path]]:
    env = gateway_env(mode, catalog, runtimes.get() if mode != "python" else None)
    env.update(extra)
    port = free_port()
    log = workdir / f"gateway-ops-{mode}-{port}.log"
    process = start_gateway(env, port, log=log)
    try:
        yield Gateway(mode, f"http://127.0.0.1:{port}", SECRET, [process]), process, log
    finally:
        stop(process)


# -- labels (pure functions) -------------------------------------------------------------------


def test_mcp_method_label() -> None:
    assert mcp_method_of("POST", json.dumps(CALL).encode()) == "tools/call"
    assert mcp_method_of("POST", b'{"jsonrpc":"2.0","id":1,"method":"x/unknown"}') == "other"
    assert mcp_method_of("POST", b'{"jsonrpc":"2.0","id":1,"result":{}}') == "response"
    assert mcp_method_of("POST", b"{not json") == "unknown"
    assert mcp_method_of("GET", b"") == "GET"
    assert mcp_method_of("DELETE", b"") == "DELETE"


def test_rpc_code_label() -> None:
    assert rpc_code_of("application/json", b'{"jsonrpc":"2.0","id":1,"result":{"x":"error"}}') == "ok"
    body = b'{"jsonrpc":"2.0","id":1,"error":{"code":-32601,"message":"no"}}'
    assert rpc_code_of("application/json", body) == "method_not_found"
    assert rpc_code_of("application/json", b'{"jsonrpc":"2.0","id":null,"error":{"code":-32001}}') == (
        "server_error"
    )
    assert rpc_code_of("application/json", b'{"jsonrpc":"2.0","id":1,"error":{"code":7}}') == "other"
    assert rpc_code_of("text/event-stream", b"") == "stream"
    assert rpc_code_of(None, b"") == "none"


# -- gateway metrics and request logs ----------------------------------------------------------


@pytest.mark.parametrize("mode", ["python", "http", "grpc"])
async def test_gateway_metrics_and_request_logs(
    mode: str, workdir: Path, catalog: Path, runtimes: Runtimes, http: httpx.AsyncClient
) -> None:
    metrics_port = free_port()
    with gateway(
        mode,
        workdir,
        catalog,
        runtimes,
        MCP_GATEWAY_METRICS_LISTEN=f"127.0.0.1:{metrics_port}",
        MCP_GATEWAY_LOG_FORMAT="json",
    ) as (gw, _process, log):
        token = gw.token()
        before = scrape(metrics_port)
        session = await gw.initialize(http, token)
        r = await http.post(gw.url, json=CALL, headers=gw.headers(token, session))
        assert r.status_code == 200
        unknown = {"jsonrpc": "2.0", "id": 4, "method": "no/such", "params": {}}
        r = await http.post(gw.url, json=unknown, headers=gw.headers(token, session))
        r = await http.post(gw.url, json=CALL, headers=gw.headers(None))
        assert r.status_code == 401
        after = scrape(metrics_port)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    ok = {"mode": mode, "http_status": "200", "rpc_code": "ok"}
    assert delta("mcp_requests_total", mcp_method="initialize", **ok) == 1
    assert (
        delta(
            "mcp_requests_total",
            mode=mode,
            mcp_method="notifications/initialized",
            http_status="202",
            rpc_code="none",
        )
        == 1
    )
    calls = sum(
        delta("mcp_requests_total", mode=mode, mcp_method="tools/call", http_status="200", rpc_code=code)
        for code in ("ok", "stream")
    )
    assert calls == 1
    assert (
        delta(
            "mcp_requests_total",
            mode=mode,
            mcp_method="other",
            http_status="200",
            rpc_code="method_not_found",
        )
        == 1
    )
    # Refused before the body was read: the method is unknown; -32001 is a server error.
    assert (
        delta(
            "mcp_requests_total", mode=mode, mcp_method="unknown", http_status="401", rpc_code="server_error"
        )
        == 1
    )
    assert delta("mcp_request_duration_seconds_count", mode=mode, mcp_method="tools/call") == 1
    assert value(after, "mcp_requests_in_flight", mode=mode) == 0
    assert delta("mcp_connections_admitted_total") >= 1
    assert any(name == "mcp_build_info" for name, _ in after)
    assert value(after, "mcp_boundary_errors_total", mode=mode, grpc_status="UNAVAILABLE") == 0

    lines = request_lines(log)
    call_lines = [line for line in lines if line["mcp_method"] == "tools/call"]
    assert len(call_lines) == 1
    good = call_lines[0]
    assert good["session_id"] == session
    assert len(good["request_id"]) == 32
    assert good["outcome"] == "ok"
    assert good["mode"] == mode
    assert isinstance(good["duration_ms"], float | int)
    unauthorized = [line for line in lines if line["http_status"] == 401]
    assert unauthorized
    assert unauthorized[0]["outcome"] == "error"
    text = log.read_text()
    assert token not in text
    assert "authorization" not in text.lower()
    assert "x-contextforge-auth-context" not in text


async def test_gateway_boundary_errors_and_readiness_without_runtime(
    workdir: Path, catalog: Path, http: httpx.AsyncClient
) -> None:
    """No runtime behind the socket: alive (``/health`` 200) but not ready, and failures counted."""
    metrics_port = free_port()
    env = gateway_env("python", catalog, None)
    env.update(
        MCP_RUST_GRPC_UDS=str(_socket_dir() / "nobody.sock"),
        MCP_GATEWAY_METRICS_LISTEN=f"127.0.0.1:{metrics_port}",
    )
    port = free_port()
    process = start_gateway(env, port, log=workdir / f"gateway-ops-noruntime-{port}.log")
    try:
        gw = Gateway("grpc", f"http://127.0.0.1:{port}", SECRET, [process])
        health = await http.get(f"{gw.base}/health")
        assert health.status_code == 200
        assert health.json()["status"] == "degraded"
        ready = await http.get(f"{gw.base}/ready")
        assert ready.status_code == 503
        assert ready.json() == {"status": "not_ready", "reason": "runtime_unavailable"}
        assert (await http.get(f"http://127.0.0.1:{metrics_port}/ready")).json()[
            "reason"
        ] == "runtime_unavailable"
        r = await http.post(gw.url, json=INITIALIZE, headers=gw.headers(gw.token()))
        assert r.status_code == 502
        samples = scrape(metrics_port)
        assert value(samples, "mcp_boundary_errors_total", mode="grpc", grpc_status="UNAVAILABLE") == 1
        assert (
            value(
                samples,
                "mcp_requests_total",
                mode="grpc",
                mcp_method="initialize",
                http_status="502",
                rpc_code="server_error",
            )
            == 1
        )
    finally:
        stop(process)


async def test_gateway_ready_flips_during_drain(
    workdir: Path, catalog: Path, runtimes: Runtimes, http: httpx.AsyncClient
) -> None:
    """SIGTERM: ``/ready`` says draining at once while requests are still served, then it exits 0."""
    metrics_port = free_port()
    with gateway(
        "grpc",
        workdir,
        catalog,
        runtimes,
        MCP_GATEWAY_DRAIN_S="30",
        MCP_GATEWAY_METRICS_LISTEN=f"127.0.0.1:{metrics_port}",
    ) as (gw, process, _log):
        token = gw.token()
        session = await gw.initialize(http, token)
        assert (await http.get(f"{gw.base}/ready")).json() == {"status": "ready"}
        process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        while (r := await http.get(f"{gw.base}/ready")).status_code == 200:
            assert time.monotonic() < deadline, "still ready after SIGTERM"
            await asyncio.sleep(0.05)
        assert r.status_code == 503
        assert r.json() == {"status": "not_ready", "reason": "draining"}
        assert (await http.get(f"http://127.0.0.1:{metrics_port}/ready")).status_code == 503
        # Still serving while draining: alive, and MCP requests answered.
        assert (await http.get(f"{gw.base}/health")).status_code == 200
        r = await http.post(gw.url, json=CALL, headers=gw.headers(token, session))
        assert r.status_code == 200
        # A second signal ends the drain at once (uvicorn re-raises the signal once shut down).
        process.send_signal(signal.SIGTERM)
        assert process.wait(15) in (0, -signal.SIGTERM)


@pytest.mark.parametrize("mode", ["python", "http", "grpc"])
async def test_gateway_shutdown_ends_open_streams_and_bounds_calls(
    mode: str, workdir: Path, catalog: Path, runtimes: Runtimes, http: httpx.AsyncClient
) -> None:
    """SIGTERM with a GET stream, a listen stream and a long call open: the gateway exits.

    The GET and listen streams end at once (they would never end by themselves; uvicorn would
    wait for them without end): the listen stream's last event is its result with the
    subscription id, as the runtime's drain ends it. The call gets the shutdown grace period,
    then is cancelled. The bound on the exit is a hang check, not a timing.
    """
    with gateway(mode, workdir, catalog, runtimes, MCP_GATEWAY_SHUTDOWN_GRACE_S="1") as (gw, process, _):
        token = gw.token()
        session = await gw.initialize(http, token)
        get_events: list[str] = []
        listen_events: list[dict[str, Any]] = []
        opened = [asyncio.Event(), asyncio.Event()]

        async def read_get() -> None:
            headers = {**gw.headers(token, session), "accept": "text/event-stream"}
            async with http.stream("GET", gw.url, headers=headers, timeout=None) as r:
                assert r.status_code == 200, await r.aread()
                opened[0].set()
                async for line in r.aiter_lines():
                    get_events.append(line)

        async def read_listen() -> None:
            meta = {
                "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientCapabilities": {},
            }
            body = {
                "jsonrpc": "2.0",
                "id": "l-1",
                "method": "subscriptions/listen",
                "params": {"_meta": meta, "notifications": {"toolsListChanged": True}},
            }
            headers = {
                "authorization": f"Bearer {token}",
                "accept": "application/json, text/event-stream",
                "mcp-protocol-version": "2026-07-28",
                "mcp-method": "subscriptions/listen",
            }
            async with http.stream("POST", gw.url, json=body, headers=headers, timeout=None) as r:
                assert r.status_code == 200, await r.aread()
                async for line in r.aiter_lines():
                    if line.startswith("data:"):
                        listen_events.append(json.loads(line[5:]))
                        opened[1].set()

        async def long_call() -> None:
            slow = {"jsonrpc": "2.0", "id": 9, "method": "tools/call"}
            slow["params"] = {"name": "sleep", "arguments": {"ms": 600_000}}
            with contextlib.suppress(httpx.HTTPError):
                await http.post(gw.url, json=slow, headers=gw.headers(token, session), timeout=None)

        readers = [asyncio.create_task(read_get()), asyncio.create_task(read_listen())]
        call = asyncio.create_task(long_call())
        try:
            await asyncio.wait_for(asyncio.gather(*(event.wait() for event in opened)), 30)
            process.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(process.wait, 60) in (0, -signal.SIGTERM)
            await asyncio.wait_for(asyncio.gather(*readers, call), 30)
        finally:
            for task in (*readers, call):
                task.cancel()
        assert listen_events[0]["method"] == "notifications/subscriptions/acknowledged", listen_events
        assert listen_events[-1] == {
            "jsonrpc": "2.0",
            "id": "l-1",
            "result": {"resultType": "complete", "_meta": {"io.modelcontextprotocol/subscriptionId": "l-1"}},
        }, listen_events


@pytest.mark.parametrize(
    ("variable", "value_of", "message"),
    [
        ("MCP_GATEWAY_METRICS_LISTEN", "in-use", "cannot listen there"),
        ("MCP_GATEWAY_METRICS_LISTEN", "nonsense", "is not host:port"),
        ("MCP_GATEWAY_LOG_FORMAT", "xml", "is not one of text, json"),
        ("MCP_GATEWAY_DRAIN_S", "-1", "between 0 and 3600"),
        ("MCP_GATEWAY_SHUTDOWN_GRACE_S", "7200", "at most 3600"),
        ("MCP_GATEWAY_SSE_KEEP_ALIVE_S", "-1", "0 (never) or between 0.1 and 3600"),
        ("MCP_GATEWAY_SSE_KEEP_ALIVE_S", "0.01", "0 (never) or between 0.1 and 3600"),
        ("MCP_GATEWAY_SSE_KEEP_ALIVE_S", "soon", "is not a number"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc", "only http/protobuf"),
    ],
)
def test_gateway_misconfiguration_is_one_line(
    variable: str, value_of: str, message: str, catalog: Path
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        env = {**os.environ, **gateway_env("python", catalog, None), "MCP_GATEWAY_PORT": str(free_port())}
        if value_of == "in-use":
            value_of = f"127.0.0.1:{taken.getsockname()[1]}"
        env[variable] = value_of
        if variable.startswith("OTEL_"):
            env["OTEL_EXPORTER_OTLP_ENDPOINT"] = "http://127.0.0.1:9"
        done = subprocess.run(
            [sys.executable, "-m", "mcp_gateway", "serve"],
            env=env,
            capture_output=True,
            timeout=60,
            check=False,
        )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.decode().strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("mcp-gateway: ")
    assert message in lines[0]
    if value_of.startswith("127.0.0.1:"):
        assert f"{variable}={value_of}" in lines[0]
        assert "in use" in lines[0]


# -- the core ----------------------------------------------------------------------------------


@contextlib.contextmanager
def core(workdir: Path, **extra: str) -> Iterator[tuple[subprocess.Popen[bytes], str, str, Path]]:
    sockets = _socket_dir() / secrets.token_hex(3)
    sockets.mkdir()
    http_uds, grpc_uds = str(sockets / "core-http.sock"), str(sockets / "core-grpc.sock")
    log = workdir / f"core-ops-{secrets.token_hex(3)}.log"
    process = start_core(
        http_uds=http_uds, grpc_uds=grpc_uds, env={"JWT_SECRET_KEY": SECRET, **extra}, log=log
    )
    try:
        yield process, http_uds, grpc_uds, log
    finally:
        stop(process)


def uds(path: str) -> httpx.Client:
    return httpx.Client(transport=httpx.HTTPTransport(uds=path), base_url="http://core", timeout=5.0)


async def test_core_metrics_logs_readiness_and_drain(workdir: Path, http: httpx.AsyncClient) -> None:
    metrics_port = free_port()
    token = Gateway("grpc", "").token()
    with core(
        workdir,
        MCP_CORE_METRICS_LISTEN=f"127.0.0.1:{metrics_port}",
        MCP_CORE_DRAIN_S="30",
        MCP_CORE_LOG_FORMAT="json",
    ) as (process, http_uds, grpc_uds, log):
        with uds(http_uds) as client:
            assert client.get("/ready").json() == {"status": "ready"}
            r = client.post(
                "/v1/resolve-caller", json={"authorization": f"Bearer {token}", "requestId": "r-1"}
            )
            assert r.status_code == 200
            assert "caller" in r.json()
            r = client.post("/admin/revoke", json={"subjectEmail": "bob@example.com"})
            assert r.status_code == 200
        async with grpc.aio.insecure_channel(f"unix:{grpc_uds}", options=CHANNEL_OPTIONS) as channel:
            stub = pb_grpc.AuthPolicyServiceStub(channel)
            answer = await stub.ResolveCaller(
                pb.ResolveCallerRequest(authorization=f"Bearer {token}", request_id="r-2"), timeout=5
            )
            assert answer.WhichOneof("outcome") == "caller"
            samples = scrape(metrics_port)
            for mode in ("http", "grpc"):
                assert (
                    value(
                        samples, "mcp_core_requests_total", mode=mode, operation="ResolveCaller", outcome="ok"
                    )
                    == 1
                )
                assert (
                    value(
                        samples,
                        "mcp_core_request_duration_seconds_count",
                        mode=mode,
                        operation="ResolveCaller",
                    )
                    == 1
                )
            assert value(samples, "mcp_policy_revocations_total", kind="subject") == 1
            assert value(samples, "mcp_core_watchers_open") == 0
            assert (await http.get(f"http://127.0.0.1:{metrics_port}/ready")).json() == {"status": "ready"}

            health = health_pb2_grpc.HealthStub(channel)
            serving = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
            assert serving.status == health_pb2.HealthCheckResponse.SERVING
            process.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 10
            with uds(http_uds) as client:
                while (r := client.get("/ready")).status_code == 200:
                    assert time.monotonic() < deadline, "still ready after SIGTERM"
                    await asyncio.sleep(0.05)
                assert r.json() == {"status": "not_ready", "reason": "draining"}
                assert client.get("/health").status_code == 200
                # Still serving calls while draining.
                r = client.post("/v1/resolve-caller", json={"authorization": f"Bearer {token}"})
                assert r.status_code == 200
            draining = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
            assert draining.status == health_pb2.HealthCheckResponse.NOT_SERVING
        process.send_signal(signal.SIGTERM)
        assert process.wait(15) == 0
    lines = request_lines(log)
    resolved = [line for line in lines if line["operation"] == "ResolveCaller"]
    assert {line["mode"] for line in resolved} == {"http", "grpc"}
    assert {line.get("request_id") for line in resolved} >= {"r-1", "r-2"}
    assert all(line["outcome"] == "ok" for line in resolved)
    text = log.read_text()
    assert token not in text
    assert "authorization" not in text.lower()


def test_core_metrics_port_in_use_is_one_line(workdir: Path) -> None:
    sockets = _socket_dir() / secrets.token_hex(3)
    sockets.mkdir()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "mcp_gateway",
                "core",
                "--http-uds",
                str(sockets / "h.sock"),
                "--metrics-listen",
                address,
            ],
            env={**os.environ, "JWT_SECRET_KEY": SECRET},
            capture_output=True,
            timeout=60,
            check=False,
        )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.decode().strip().splitlines()
    assert len(lines) == 1, lines
    assert f"--metrics-listen={address}: cannot listen there" in lines[0]
    assert not (sockets / "h.sock").exists()


# -- traces ------------------------------------------------------------------------------------


class OtlpReceiver:
    """A real OTLP/HTTP receiver: ``POST /v1/traces`` with a protobuf ``ExportTraceServiceRequest``."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.arrived = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        assert request.content_type == "application/x-protobuf"
        message = ExportTraceServiceRequest()
        message.ParseFromString(await request.read())
        for resource_spans in message.resource_spans:
            service = next(
                a.value.string_value for a in resource_spans.resource.attributes if a.key == "service.name"
            )
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    self.spans.append(
                        {
                            "service": service,
                            "name": span.name,
                            "kind": span.kind,
                            "trace_id": span.trace_id.hex(),
                            "span_id": span.span_id.hex(),
                            "parent_span_id": span.parent_span_id.hex(),
                            "attributes": {a.key: a.value for a in span.attributes},
                        }
                    )
        self.arrived.set()
        return web.Response(body=b"", content_type="application/x-protobuf")

    async def wait_for(self, check: Any, timeout_s: float = 20.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout_s
        while True:
            found = [s for s in self.spans if check(s)]
            if found:
                return found
            assert time.monotonic() < deadline, f"no such span among {self.spans}"
            self.arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.arrived.wait(), 0.5)


@pytest.fixture
async def otlp() -> AsyncIterator[tuple[OtlpReceiver, str]]:
    receiver = OtlpReceiver()
    app = web.Application()
    app.router.add_post("/v1/traces", receiver.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        yield receiver, f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def otel_env(endpoint: str) -> dict[str, str]:
    return {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_BSP_SCHEDULE_DELAY": "100"}


async def test_traces_follow_a_request_through_gateway_and_core(
    otlp: tuple[OtlpReceiver, str], workdir: Path, catalog: Path, runtimes: Runtimes, http: httpx.AsyncClient
) -> None:
    receiver, endpoint = otlp
    trace_id, client_span = secrets.token_hex(16), secrets.token_hex(8)
    traceparent = f"00-{trace_id}-{client_span}-01"

    # Client -> gateway (gRPC mode) -> runtime: the gateway's span is the client's child.
    with gateway("grpc", workdir, catalog, runtimes, **otel_env(endpoint)) as (gw, _process, _log):
        token = gw.token()
        session = await gw.initialize(http, token)
        r = await http.post(gw.url, json=CALL, headers=gw.headers(token, session, traceparent=traceparent))
        assert r.status_code == 200
        spans = await receiver.wait_for(lambda s: s["service"] == "mcp-gateway" and s["trace_id"] == trace_id)
    (span,) = spans
    assert span["name"] == "tools/call"
    assert span["parent_span_id"] == client_span
    assert span["kind"] == 2  # SPAN_KIND_SERVER
    assert span["attributes"]["mcp.session.id"].string_value == session
    assert span["attributes"]["http.response.status_code"].int_value == 200
    # A request without traceparent starts a trace of its own.
    assert all(s["trace_id"] == trace_id for s in receiver.spans if s["name"] == "tools/call")

    # Client -> runtime (edge) -> core: the core's ResolveCaller span is in the client's trace,
    # the child of the client's span or of a span the runtime exported in the same trace.
    sockets = _socket_dir() / secrets.token_hex(3)
    sockets.mkdir()
    core_env = {"JWT_SECRET_KEY": SECRET, "OTEL_SERVICE_NAME": "mcp-core", **otel_env(endpoint)}
    core_grpc = str(sockets / "core-grpc.sock")
    core_process = start_core(http_uds=None, grpc_uds=core_grpc, env=core_env, log=workdir / "core-trace.log")
    port = free_port()
    try:
        runtime = start_edge_runtime(
            catalog,
            str(sockets / "rt.sock"),
            port=port,
            core_uds=core_grpc,
            core_transport="grpc",
            log=workdir / "runtime-edge-trace.log",
        )
        try:
            edge = Gateway("edge", f"http://127.0.0.1:{port}", SECRET)
            other_span = secrets.token_hex(8)
            edge_traceparent = f"00-{trace_id}-{other_span}-01"
            r = await http.post(
                edge.url, json=INITIALIZE, headers=edge.headers(token, traceparent=edge_traceparent)
            )
            assert r.status_code == 200, r.text
            core_spans = await receiver.wait_for(
                lambda s: s["service"] == "mcp-core" and s["trace_id"] == trace_id
            )
        finally:
            stop(runtime)
    finally:
        stop(core_process)
    resolve = next(s for s in core_spans if s["name"] == "mcp.core.v1.Core/ResolveCaller")
    assert resolve["kind"] == 2
    runtime_spans = {
        s["span_id"] for s in receiver.spans if s["trace_id"] == trace_id and s["service"] == "mcp-runtime"
    }
    assert resolve["parent_span_id"] in {other_span, *runtime_spans}


@pytest.mark.parametrize("mode", ["http", "grpc"])
async def test_one_trace_runs_from_the_client_through_the_gateway_into_the_runtime(
    mode: str,
    otlp: tuple[OtlpReceiver, str],
    workdir: Path,
    catalog: Path,
    http: httpx.AsyncClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Client -> gateway -> runtime (over either socket) is one trace.

    Each span is the child of the hop before it: the gateway's SERVER span of the client's
    span, the runtime's of the gateway's.
    """
    receiver, endpoint = otlp
    trace_id, client_span = secrets.token_hex(16), secrets.token_hex(8)
    sockets = _socket_dir() / secrets.token_hex(3)
    sockets.mkdir()
    log = workdir / f"runtime-trace-{mode}.log"
    with monkeypatch.context() as env:
        for name, value in otel_env(endpoint).items():
            env.setenv(name, value)
        process = start_runtime(
            catalog, str(sockets / "h.sock"), str(sockets / "g.sock"), extra=RUNTIME_FLAGS, log=log
        )
    rt = Runtime(process, str(sockets / "h.sock"), str(sockets / "g.sock"), catalog, log)
    try:
        env_vars = {**gateway_env(mode, catalog, rt), **otel_env(endpoint)}
        port = free_port()
        gateway_process = start_gateway(env_vars, port, log=workdir / f"gateway-trace-{mode}-{port}.log")
        try:
            gw = Gateway(mode, f"http://127.0.0.1:{port}", SECRET, [gateway_process])
            token = gw.token()
            session = await gw.initialize(http, token)
            traceparent = f"00-{trace_id}-{client_span}-01"
            r = await http.post(
                gw.url, json=CALL, headers=gw.headers(token, session, traceparent=traceparent)
            )
            assert r.status_code == 200, r.text

            def in_trace(service: str) -> Any:
                return lambda s: (
                    s["service"] == service and s["trace_id"] == trace_id and s["name"] == "tools/call"
                )

            (outer,) = await receiver.wait_for(in_trace("mcp-gateway"))
            (inner,) = await receiver.wait_for(in_trace("mcp-runtime"))
        finally:
            stop(gateway_process)
    finally:
        stop(process)
    assert outer["parent_span_id"] == client_span
    assert inner["parent_span_id"] == outer["span_id"], (outer, inner)
    assert inner["kind"] == 2  # SPAN_KIND_SERVER


@pytest.mark.parametrize("core_transport", ["grpc", "http"])
async def test_the_edge_runtime_traces_and_counts_its_calls_to_the_core_and_the_upstream(
    core_transport: str,
    otlp: tuple[OtlpReceiver, str],
    workdir: Path,
    catalog: Path,
    http: httpx.AsyncClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Client -> edge runtime -> core (either transport) and upstream is one trace.

    The runtime's SERVER span is the child of the client's span; its ResolveCaller and upstream
    calls are CLIENT spans under it; the core's ResolveCaller SERVER span is the child of the
    runtime's CLIENT span (the ``traceparent`` the runtime sent). The runtime counts its calls
    to the core in ``mcp_core_requests_total`` and ``mcp_core_request_duration_seconds``.
    """
    receiver, endpoint = otlp
    trace_id, first_span, second_span = secrets.token_hex(16), secrets.token_hex(8), secrets.token_hex(8)
    sockets = _socket_dir() / secrets.token_hex(3)
    sockets.mkdir()
    core_env = {"JWT_SECRET_KEY": SECRET, **otel_env(endpoint)}
    core_uds = str(sockets / f"core-{core_transport}.sock")
    core_process = start_core(
        http_uds=core_uds if core_transport == "http" else None,
        grpc_uds=core_uds if core_transport == "grpc" else None,
        env=core_env,
        log=workdir / f"core-edge-trace-{core_transport}.log",
    )
    port, metrics_port = free_port(), free_port()
    try:
        with monkeypatch.context() as env:
            for name, value_ in otel_env(endpoint).items():
                env.setenv(name, value_)
            runtime = start_edge_runtime(
                catalog,
                str(sockets / "rt.sock"),
                port=port,
                core_uds=core_uds,
                core_transport=core_transport,
                extra=("--metrics-listen", f"127.0.0.1:{metrics_port}"),
                log=workdir / f"runtime-edge-trace-{core_transport}.log",
            )
        try:
            edge = Gateway("edge", f"http://127.0.0.1:{port}", SECRET)
            token = edge.token()
            r = await http.post(
                edge.url,
                json=INITIALIZE,
                headers=edge.headers(token, traceparent=f"00-{trace_id}-{first_span}-01"),
            )
            assert r.status_code == 200, r.text
            session = r.headers["mcp-session-id"]
            r = await http.post(
                edge.url,
                json=CALL,
                headers=edge.headers(token, session, traceparent=f"00-{trace_id}-{second_span}-01"),
            )
            assert r.status_code == 200, r.text
            samples = scrape(metrics_port)
            assert (
                value(
                    samples,
                    "mcp_core_requests_total",
                    mode=core_transport,
                    operation="ResolveCaller",
                    outcome="ok",
                )
                >= 1
            ), samples
            assert (
                value(
                    samples,
                    "mcp_core_request_duration_seconds_count",
                    mode=core_transport,
                    operation="ResolveCaller",
                )
                >= 1
            )
            # The first request asked the core, the second found its caller in the cache.
            assert value(samples, "mcp_policy_cache_misses_total") >= 1
            assert value(samples, "mcp_policy_cache_hits_total") >= 1
            if core_transport == "http":
                # A revocation made at the core reaches the runtime's cache on the watch stream.
                with uds(core_uds) as admin:
                    assert (
                        admin.post("/admin/revoke", json={"subjectEmail": "nobody@example.com"}).status_code
                        == 200
                    )
                deadline = time.monotonic() + 10
                while value(scrape(metrics_port), "mcp_policy_revocations_total", kind="subject") < 1:
                    assert time.monotonic() < deadline, "the revocation never reached the runtime"
                    await asyncio.sleep(0.05)

            def runtime_span(name: str, kind: int) -> Any:
                return lambda s: (
                    s["service"] == "mcp-runtime"
                    and s["trace_id"] == trace_id
                    and s["name"] == name
                    and s["kind"] == kind
                )

            resolve_out = await receiver.wait_for(runtime_span("mcp.core.v1.Core/ResolveCaller", 3))
            upstream_out = await receiver.wait_for(runtime_span("tools/call fixture", 3))
            servers = await receiver.wait_for(lambda s: s["service"] == "mcp-runtime" and s["kind"] == 2)
            resolve_in = await receiver.wait_for(
                lambda s: (
                    s["service"] == "mcp-core"
                    and s["trace_id"] == trace_id
                    and s["name"] == "mcp.core.v1.Core/ResolveCaller"
                )
            )
        finally:
            stop(runtime)
    finally:
        stop(core_process)
    by_parent = {s["parent_span_id"]: s for s in servers if s["trace_id"] == trace_id}
    # Each public request's SERVER span is the child of the client's span, named by its method.
    initialize, call = by_parent[first_span], by_parent[second_span]
    assert (initialize["name"], call["name"]) == ("initialize", "tools/call")
    # The caller was resolved inside the first request (the second found it in the cache).
    (resolve,) = resolve_out
    assert resolve["parent_span_id"] == initialize["span_id"]
    assert resolve["attributes"]["rpc.system"].string_value == core_transport
    # The core's span continues the runtime's CLIENT span.
    (served,) = resolve_in
    assert served["kind"] == 2
    assert served["parent_span_id"] == resolve["span_id"]
    # The upstream call is a CLIENT span under the tools/call request.
    (upstream,) = upstream_out
    assert upstream["parent_span_id"] == call["span_id"]
    assert upstream["attributes"]["mcp.upstream"].string_value == "fixture"


# -- logs ---------------------------------------------------------------------------------------


SHARED_LOG_KEYS = ("ts", "level", "logger", "msg", "request_id", "trace_id", "mode", "outcome", "duration_ms")
"""The keys every process's JSON request line has (docs/operations.md, "Logs")."""


async def test_request_lines_use_the_same_keys_in_every_process(
    workdir: Path, catalog: Path, http: httpx.AsyncClient
) -> None:
    """One JSON request line from each of the gateway, the runtime and the core, parsed.

    One runtime serves both ways: the gateway (HTTP/JSON mode) in front of its socket, and its
    public endpoint (edge mode) asking the core. The same facts have the same keys and formats
    in the three lines; the ids of one request agree across the processes.
    """
    sockets = _socket_dir() / secrets.token_hex(3)
    sockets.mkdir()
    core_uds = str(sockets / "core.sock")
    core_log = workdir / "core-log-keys.log"
    core_process = start_core(
        http_uds=core_uds,
        grpc_uds=None,
        env={"JWT_SECRET_KEY": SECRET, "MCP_CORE_LOG_FORMAT": "json"},
        log=core_log,
    )
    runtime_log = workdir / "runtime-log-keys.log"
    port = free_port()
    trace_id = secrets.token_hex(16)
    try:
        runtime = start_edge_runtime(
            catalog,
            str(sockets / "rt.sock"),
            port=port,
            core_uds=core_uds,
            core_transport="http",
            extra=(*RUNTIME_FLAGS, "--log-format", "json"),
            log=runtime_log,
        )
        try:
            rt = Runtime(runtime, str(sockets / "rt.sock"), "", catalog, runtime_log)
            gateway_port = free_port()
            gateway_log = workdir / f"gateway-log-keys-{gateway_port}.log"
            gateway_process = start_gateway(
                {**gateway_env("http", catalog, rt), "MCP_GATEWAY_LOG_FORMAT": "json"},
                gateway_port,
                log=gateway_log,
            )
            try:
                gw = Gateway("http", f"http://127.0.0.1:{gateway_port}", SECRET, [gateway_process])
                token = gw.token()
                session = await gw.initialize(http, token)
                r = await http.post(
                    gw.url,
                    json=CALL,
                    headers=gw.headers(
                        token, session, traceparent=f"00-{trace_id}-{secrets.token_hex(8)}-01"
                    ),
                )
                assert r.status_code == 200, r.text
            finally:
                stop(gateway_process)
            edge = Gateway("edge", f"http://127.0.0.1:{port}", SECRET)
            r = await http.post(
                edge.url,
                json=INITIALIZE,
                headers=edge.headers(token, traceparent=f"00-{trace_id}-{secrets.token_hex(8)}-01"),
            )
            assert r.status_code == 200, r.text
        finally:
            stop(runtime)
    finally:
        stop(core_process)

    (gw_line,) = [line for line in request_lines(gateway_log) if line.get("mcp_method") == "tools/call"]
    runtime_lines = request_lines(runtime_log)
    (rt_line,) = [
        line for line in runtime_lines if line["mode"] == "http" and line["mcp_method"] == "tools/call"
    ]
    (public_line,) = [line for line in runtime_lines if line["mode"] == "public"]
    core_lines = [line for line in request_lines(core_log) if line["operation"] == "ResolveCaller"]
    (core_line,) = [line for line in core_lines if line.get("request_id") == public_line["request_id"]]
    for line in (gw_line, rt_line, public_line, core_line):
        missing = [key for key in SHARED_LOG_KEYS if key not in line]
        assert not missing, (missing, line)
        assert line["msg"] == "request"
        assert line["level"] == "info"
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["ts"]), line
        assert isinstance(line["duration_ms"], (int, float))
        assert line["outcome"] == "ok"
        assert len(line["trace_id"]) == 32
    assert gw_line["logger"] == "mcp_gateway.access"
    assert rt_line["logger"] == "mcp_runtime::access"
    assert core_line["logger"] == "mcp_gateway.core.access"
    # One request, one id and one trace across the gateway and the runtime; the public request's
    # id and trace reach the core.
    assert (gw_line["request_id"], gw_line["trace_id"]) == (rt_line["request_id"], rt_line["trace_id"])
    assert gw_line["trace_id"] == trace_id
    assert (gw_line["session_id"], gw_line["mcp_method"], gw_line["http_status"], gw_line["rpc_code"]) == (
        rt_line["session_id"],
        rt_line["mcp_method"],
        rt_line["http_status"],
        rt_line["rpc_code"],
    )
    assert core_line["trace_id"] == public_line["trace_id"] == trace_id
