"""Large results through the gateway, in every mode, at the runtime's default message limit.

The runtime's adapters are tested alone in ``crates/mcp-runtime/tests/faults.rs``; here the whole
chain (fixture upstream, runtime, gateway, a raw HTTP client) in the Python baseline, HTTP/JSON
and gRPC modes, with the defaults of both processes: the runtime without ``--max-message-bytes``
and the gateway without ``MCP_RUNTIME_MAX_MESSAGE_BYTES`` (64 MiB each).

- A ``payload`` whose whole JSON-RPC response is just under 64 MiB arrives whole: status, length,
  SHA-256 of the text. The wall time and the gateway's peak RSS of that call are printed (``-s``).
- A 65 MiB result is answered at HTTP 200 with the runtime's JSON-RPC ``-32603`` naming the limit
  (``docs/http-boundary.md``), a 65 MiB request body with 413 naming it, and the same session
  then serves an ``echo``; the three modes run this one at the same time (each 64 MiB transfer
  costs seconds in debug builds, the fixture's serde_json first of all).
- On the session's 4 MiB stack (cheap): a result just over the limit (refused after it was read
  whole) gets the same error in every mode, with a progress token too (gRPC ``InvokeStream``).
- A gateway backend told a smaller limit than its runtime's refuses a larger whole response with
  the same error in both socket modes (gRPC: not a 413; HTTP: not an unbounded read).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from conftest import (
    ACCEPT,
    INITIALIZE,
    MAX_MESSAGE_BYTES,
    MODES,
    PROTOCOL,
    SOCKET_MODES,
    Gateway,
    Runtime,
    _socket_dir,
    gateway_env,
    socket_backend,
)
from mcp_gateway import AuthContext
from mcp_gateway._backend import McpRequest, McpResponse
from mcp_gateway.testing import free_port, start_gateway, start_runtime, stop

MIB = 1024 * 1024
LIMIT = 64 * MIB
"""The runtime's default message limit, which the gateway's default must match."""
FITS = LIMIT - 256
"""Text length of a payload whose whole response (89 bytes of envelope) is just under the limit."""
OVER = 65 * MIB
"""Just over the limit, and over the read cap (the limit plus 1 MiB) with its envelope."""
TIMEOUT = httpx.Timeout(30.0, read=180.0)


def rpc(i: int, method: str, params: dict[str, Any]) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": i, "method": method, "params": params}


def payload(i: int, size: int, progress: bool = False) -> dict[str, Any]:
    params: dict[str, Any] = {"name": "payload", "arguments": {"size_bytes": size}}
    if progress:
        params["_meta"] = {"progressToken": f"p{i}"}
    return rpc(i, "tools/call", params)


def error_of(status: int, content_type: str | None, body: bytes, i: int) -> tuple[int, str]:
    """The JSON-RPC error of a whole JSON answer at 200 to request ``i``: (code, message)."""
    assert status == 200, body[:300]
    assert (content_type or "").startswith("application/json"), content_type
    message = json.loads(body)
    assert message["id"] == i, message
    assert "result" not in message, str(message)[:300]
    return message["error"]["code"], message["error"]["message"]


async def echo_works(http: httpx.AsyncClient, gw: Gateway, token: str, session: str) -> None:
    call = rpc(99, "tools/call", {"name": "echo", "arguments": {"text": "hi"}})
    r = await http.post(gw.url, json=call, headers=gw.headers(token, session))
    assert r.status_code == 200, r.text
    assert r.json()["result"]["content"][0]["text"] == "hi", r.text


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise AssertionError(f"{field} not in /proc/{pid}/status")


def _reset_peak(pid: int) -> bool:
    """Reset the process's peak RSS (``VmHWM``) to its current RSS; ``False`` if not allowed."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


@dataclass
class DefaultStack:
    """A runtime and one gateway per mode, all with their default limits."""

    runtime: Runtime
    gateways: dict[str, Gateway]


@pytest.fixture(scope="module")
def default_stack(workdir: Path, catalog: Path) -> Iterator[DefaultStack]:
    sockets = _socket_dir()
    log = workdir / "runtime-large.log"
    rt = Runtime(None, str(sockets / "http.sock"), str(sockets / "grpc.sock"), catalog, log)
    rt.process = start_runtime(catalog, rt.http_uds, rt.grpc_uds, log=log)

    def env(mode: str) -> dict[str, str]:
        env = gateway_env(mode, catalog, rt)
        env["MCP_RUNTIME_MAX_MESSAGE_BYTES"] = ""  # empty: the gateway's own default (64 MiB)
        env["MCP_GATEWAY_REQUEST_TIMEOUT_S"] = "120"
        return env

    ports = {mode: free_port() for mode in MODES}
    # The three gateways start at the same time (each spends seconds importing on a busy machine).
    with ThreadPoolExecutor(len(MODES)) as pool:
        starts = {
            mode: pool.submit(
                start_gateway, env(mode), ports[mode], log=workdir / f"gateway-large-{mode}.log"
            )
            for mode in MODES
        }
    processes = [start.result() for start in starts.values() if start.exception() is None]
    try:
        gateways = {
            mode: Gateway(mode, f"http://127.0.0.1:{ports[mode]}", processes=[start.result()])
            for mode, start in starts.items()
        }
        yield DefaultStack(rt, gateways)
    finally:
        for process in processes:
            stop(process)
        stop(rt.process)


@pytest.mark.parametrize("mode", MODES)
async def test_a_result_just_under_the_limit_arrives_whole(
    mode: str, default_stack: DefaultStack, workdir: Path
) -> None:
    gw = default_stack.gateways[mode]
    pid = gw.processes[0].pid
    token = gw.token()
    expected = hashlib.sha256(b"x" * FITS).hexdigest()
    async with httpx.AsyncClient(timeout=TIMEOUT) as http:
        session = await gw.initialize(http, token)
        rss_before = _status_kib(pid, "VmRSS")
        reset = _reset_peak(pid)
        started = time.monotonic()
        r = await http.post(gw.url, json=payload(1, FITS), headers=gw.headers(token, session))
        elapsed = time.monotonic() - started
        peak = _status_kib(pid, "VmHWM")
        assert r.status_code == 200, r.text[:300]
        assert r.headers["content-type"].startswith("application/json"), r.headers
        # Every byte arrived: the length the gateway announced, a whole response just under
        # the limit, and the text itself.
        assert int(r.headers["content-length"]) == len(r.content)
        assert LIMIT - 1024 < len(r.content) < LIMIT, len(r.content)
        body = r.json()
        assert body["id"] == 1, str(body)[:300]
        assert body["result"]["isError"] is False, str(body)[:300]
        text = body["result"]["content"][0]["text"]
        assert len(text) == FITS
        assert hashlib.sha256(text.encode()).hexdigest() == expected
        size = len(r.content)
        del r, body, text
        print(
            f"\n[{mode}] result of {size} bytes ({LIMIT - size} under the limit): {elapsed:.2f} s, "
            f"gateway peak RSS {peak / 1024:.0f} MiB"
            + (f" (RSS before the call {rss_before / 1024:.0f} MiB)" if reset else " (process lifetime)")
        )
        await echo_works(http, gw, token, session)


async def test_a_result_and_a_request_over_the_limit_get_a_clear_error_in_every_mode(
    default_stack: DefaultStack, workdir: Path
) -> None:
    done: list[str] = []

    async def one(mode: str) -> None:
        gw = default_stack.gateways[mode]
        token = gw.token()
        async with httpx.AsyncClient(timeout=TIMEOUT) as http:
            session = await gw.initialize(http, token)
            started = time.monotonic()
            r = await http.post(gw.url, json=payload(2, OVER), headers=gw.headers(token, session))
            elapsed = time.monotonic() - started
            assert error_of(r.status_code, r.headers.get("content-type"), r.content, 2) == (
                -32603,
                f"Result exceeds the message size limit of {LIMIT} bytes",
            ), mode
            print(f"\n[{mode}] result of 65 MiB: the error after {elapsed:.2f} s (three modes at once)")
            # A request body over the limit: refused by the gateway before anything is forwarded.
            big = json.dumps(rpc(3, "tools/call", {"name": "echo", "arguments": {"text": "x" * OVER}}))
            r = await http.post(gw.url, content=big.encode(), headers=gw.headers(token, session))
            assert r.status_code == 413, (mode, r.text[:300])
            assert r.json()["error"] == {
                "code": -32600,
                "message": f"Request body exceeds the limit of {LIMIT} bytes",
            }, mode
            await echo_works(http, gw, token, session)
            done.append(mode)

    async with anyio.create_task_group() as tg:
        for mode in MODES:
            tg.start_soon(one, mode)
    assert sorted(done) == sorted(MODES)


@pytest.mark.parametrize("progress", [False, True], ids=["json", "progress-token"])
async def test_a_result_just_over_a_small_limit_is_refused_in_every_mode(
    gw: Gateway, http: httpx.AsyncClient, progress: bool, workdir: Path
) -> None:
    token = gw.token()
    session = await gw.initialize(http, token)
    r = await http.post(
        gw.url, json=payload(4, MAX_MESSAGE_BYTES + 100, progress), headers=gw.headers(token, session)
    )
    code, message = error_of(r.status_code, r.headers.get("content-type"), r.content, 4)
    # The runtime measures the upstream's result, the baseline the result it would send: the
    # same bytes here (the text plus 55 bytes of content list and isError).
    size, limit = MAX_MESSAGE_BYTES + 155, MAX_MESSAGE_BYTES
    assert (code, message) == (
        -32603,
        f"Result of {size} bytes exceeds the message size limit of {limit} bytes",
    )
    await echo_works(http, gw, token, session)


@pytest.mark.parametrize("mode", SOCKET_MODES)
async def test_a_backend_told_a_smaller_limit_refuses_a_larger_whole_response(
    mode: str, default_stack: DefaultStack, workdir: Path
) -> None:
    rt = default_stack.runtime
    backend = socket_backend(mode, rt, 30.0, max_message_bytes=MAX_MESSAGE_BYTES)
    auth = AuthContext(email="alice@example.com", teams=())

    async def send(body: dict[str, Any], session: str | None) -> McpResponse:
        request = McpRequest(
            method="POST",
            server_id=None,
            auth=auth,
            request_id="large",
            body=json.dumps(body).encode(),
            session_id=session,
            protocol_version=PROTOCOL if session else None,
            accept=ACCEPT,
            content_type="application/json",
        )
        response = await backend.handle(request)
        assert response.stream is None, "a whole response was expected"
        return response

    await backend.start()
    try:
        session = (await send(INITIALIZE, None)).header("mcp-session-id")
        assert session
        assert (await send({"jsonrpc": "2.0", "method": "notifications/initialized"}, session)).status == 202
        # Within the runtime's 64 MiB, over this backend's 4 MiB plus 1 MiB of slack.
        r = await send(payload(5, 5 * MIB), session)
        assert error_of(r.status, r.header("content-type"), r.body, 5) == (
            -32603,
            f"Result exceeds the message size limit of {MAX_MESSAGE_BYTES} bytes",
        )
        r = await send(rpc(6, "tools/call", {"name": "echo", "arguments": {"text": "hi"}}), session)
        assert json.loads(r.body)["result"]["content"][0]["text"] == "hi"
    finally:
        await backend.aclose()


# --- the size caps on their own (no processes) ---------------------------------------------------


async def test_the_baseline_reads_no_json_upstream_response_past_the_cap() -> None:
    """A JSON answer over the cap is read no further.

    The SDK's read of it ends with an error that the pool reports as the runtime does; a JSON
    answer within the cap and an SSE answer of any size (the SDK caps events) pass through.
    """
    import httpx2
    import mcp_types as types
    from mcp.client.streamable_http import StreamableHTTPTransport
    from mcp.shared.exceptions import MCPError

    from mcp_gateway._baseline.catalog import UpstreamConfig
    from mcp_gateway._baseline.upstream import (
        ENVELOPE_SLACK_BYTES,
        SizeCappedTransport,
        Upstream,
        _Connection,
    )

    limit = 1000
    cap = limit + ENVELOPE_SLACK_BYTES
    text = "x" * (cap + 1)

    def answer(request: httpx2.Request) -> httpx2.Response:
        kind = request.url.path.strip("/")
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "result": {"text": text if kind != "small" else "ok"}})
        if kind == "sse":
            return httpx2.Response(
                200, headers={"content-type": "text/event-stream"}, text=f"data: {body}\n\n"
            )
        return httpx2.Response(200, headers={"content-type": "application/json"}, text=body)

    async with httpx2.AsyncClient(transport=SizeCappedTransport(httpx2.MockTransport(answer), cap)) as http:
        r = await http.get("http://upstream/sse")
        assert len(r.content) > cap
        r = await http.get("http://upstream/small")
        assert r.json()["result"] == {"text": "ok"}
        # The SDK's own handling of a JSON answer: the cap's error becomes the request's answer.
        send, receive = anyio.create_memory_object_stream[Any](1)
        async with http.stream("GET", "http://upstream/big") as response:
            await StreamableHTTPTransport("http://upstream/big")._handle_json_response(
                response, send, request_id=7
            )
        answered = (await receive.receive()).message
    assert isinstance(answered, types.JSONRPCError), answered
    assert answered.id == 7

    async with anyio.create_task_group() as tg:
        upstream = Upstream(UpstreamConfig("up", "http://upstream/mcp"), http, tg, 5.0, limit)
        connection = _Connection(upstream.config, http, cap)
        connection.client = object()  # type: ignore[assignment]
        upstream._connection = connection

        async def fails(_client: Any) -> None:
            raise MCPError(code=answered.error.code, message=answered.error.message)

        with pytest.raises(MCPError) as raised:
            await upstream.call(fails)
    assert (raised.value.error.code, raised.value.error.message) == (
        -32603,
        f"Result exceeds the message size limit of {limit} bytes",
    )


def test_the_baseline_measures_a_result_as_it_would_send_it() -> None:
    """A result is refused only when its wire form is over the limit.

    The model's dump carries 2026-era fields (caching hints, resultType) that the wire form of
    the protocol versions spoken drops.
    """
    import mcp_types as types
    from mcp.shared.exceptions import MCPError

    from mcp_gateway._baseline.server import check_result_size

    result = types.ReadResourceResult(contents=[types.TextResourceContents(uri="a://b", text="x" * 100)])
    wire = len(b'{"contents":[{"uri":"a://b","text":""}]}') + 100
    check_result_size(result, wire, "resources/read", PROTOCOL)
    with pytest.raises(MCPError) as raised:
        check_result_size(result, wire - 1, "resources/read", PROTOCOL)
    assert raised.value.error.message == (
        f"Result of {wire} bytes exceeds the message size limit of {wire - 1} bytes"
    )


async def test_a_streamed_grpc_message_over_the_channel_limit_ends_with_the_runtime_error_event() -> None:
    import grpc

    from mcp_gateway._grpc_backend import GrpcUdsBackend, _relay, pb

    class Call:
        def __init__(self) -> None:
            self.sent = [pb.InvokeStreamResponse(event=pb.SseEvent(data='{"jsonrpc":"2.0","method":"n"}'))]
            self.cancelled = False

        async def read(self) -> Any:
            if self.sent:
                return self.sent.pop(0)
            details = "CLIENT: Received message larger than max (6291456 vs. 5242880)"
            raise grpc.aio.AioRpcError(
                grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.aio.Metadata(), grpc.aio.Metadata(), details
            )

        def cancel(self) -> None:
            self.cancelled = True

    call = Call()
    request = McpRequest(
        "POST", None, AuthContext(email="a@b.c"), "t", json.dumps(payload(8, 1, True)).encode()
    )
    backend = GrpcUdsBackend("/nonexistent.sock", 30.0, 4 * MIB)  # never started: no channel
    chunks = [chunk async for chunk in _relay(call, request, backend)]
    assert call.cancelled
    assert len(chunks) == 2
    error = json.loads(chunks[1].decode().split("data: ", 1)[1])
    assert error == {
        "jsonrpc": "2.0",
        "id": 8,
        "error": {"code": -32603, "message": f"Result exceeds the message size limit of {4 * MIB} bytes"},
    }
