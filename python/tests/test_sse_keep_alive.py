"""SSE keep-alive in every mode: a silent stream gets ``: keep-alive`` comments between its events.

A 2025-11-25 session's GET stream and a 2026-07-28 ``subscriptions/listen`` stream are silent
while nothing changes; a proxy or client with an idle timeout would drop them. After
``MCP_GATEWAY_SSE_KEEP_ALIVE_S`` (the gateway's modes) or ``--public-sse-keep-alive-ms`` (the
edge modes, the runtime's public endpoint) of silence each gets a comment line, written only
between whole events, and its events still arrive. In the proxied modes what arrives is the
gateway's: the runtime writes none on its sockets, so HTTP/JSON mode gets one comment per
silence, not one from each hop. 200 ms here; 15 s by default.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from conftest import RUNTIME_FLAGS, SECRET, Gateway, Runtime, gateway_env
from mcp_gateway.testing import (
    EDGE_MODES,
    free_port,
    stack,
    start_fixture,
    start_gateway,
    start_runtime,
    stop,
)

MODES = ["python", "http", "http-httpx", "grpc", *EDGE_MODES]
PERIOD_S = 0.2
COMMENT = b": keep-alive\n\n"
V2026 = "2026-07-28"


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    workdir = tmp_path_factory.mktemp("keepalive")
    fixture, url = start_fixture("--dynamic-tools", log=workdir / "fixture.log")
    path = workdir / "catalog.toml"
    path.write_text(f'[[upstreams]]\nid = "fx"\nurl = "{url}"\n')
    try:
        yield path
    finally:
        stop(fixture)


@pytest.fixture(scope="module")
def runtime(catalog: Path) -> Iterator[Runtime]:
    sockets = catalog.parent
    http_uds, grpc_uds = str(sockets / "http.sock"), str(sockets / "grpc.sock")
    rt = Runtime(None, http_uds, grpc_uds, catalog, sockets / "runtime.log")
    rt.process = start_runtime(catalog, rt.http_uds, rt.grpc_uds, extra=RUNTIME_FLAGS, log=rt.log)
    try:
        yield rt
    finally:
        stop(rt.process)


@pytest.fixture(params=MODES)
def gw(request: pytest.FixtureRequest, catalog: Path, runtime: Runtime) -> Iterator[Gateway]:
    mode: str = request.param
    port = free_port()
    if mode in EDGE_MODES:
        flags = ("--public-sse-keep-alive-ms", str(int(PERIOD_S * 1000)))
        with stack(mode, port, SECRET, catalog=catalog, runtime_extra=flags):
            yield Gateway(mode, f"http://127.0.0.1:{port}", SECRET, [])
        return
    env = {**gateway_env(mode, catalog, runtime), "MCP_GATEWAY_SSE_KEEP_ALIVE_S": str(PERIOD_S)}
    process = start_gateway(env, port, log=catalog.parent / f"gateway-{mode}.log")
    try:
        yield Gateway(mode, f"http://127.0.0.1:{port}", SECRET, [process])
    finally:
        stop(process)


async def _read_until(chunks: Any, read: bytearray, needle: bytes) -> None:
    """Read ``chunks`` into ``read`` until it holds ``needle`` past what it held and ends a block."""
    start = len(read)
    try:
        with anyio.fail_after(10):
            async for chunk in chunks:
                read += chunk
                if needle in read[start:] and read.endswith(b"\n\n"):
                    return
    except TimeoutError:
        raise AssertionError(f"no {needle!r} within 10 s; read: {bytes(read)!r}") from None
    raise AssertionError(f"the stream ended before {needle!r}; read: {bytes(read)!r}")


def _blocks(read: bytes) -> list[str]:
    """The blocks of ``read`` cut at blank lines; each must be a comment or a whole event.

    A comment written inside an event would leave a block that is neither (chunk boundaries as
    read do not matter). Returns the events' data.
    """
    data: list[str] = []
    for block in read.decode().replace("\r\n", "\n").rstrip("\n").split("\n\n"):
        if block.startswith(":"):
            continue
        for line in block.split("\n"):
            if line.startswith("data: "):
                json.loads(line.removeprefix("data: "))
                data.append(line.removeprefix("data: "))
            else:
                assert line.startswith(("id:", "event:", "retry:")), f"not a whole event: {block!r}"
    return data


async def _add_tool(http: httpx.AsyncClient, gw: Gateway, token: str, session: str) -> None:
    # A name of its own: the fixture and the runtime are shared by every mode's test.
    params = {"name": "add_tool", "arguments": {"name": f"t{uuid.uuid4().hex[:8]}"}}
    call = {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": params}
    r = await http.post(gw.url, json=call, headers=gw.headers(token, session))
    assert r.status_code == 200, r.text


async def test_a_silent_get_stream_gets_comments_between_its_events(gw: Gateway) -> None:
    token = gw.token("alice@example.com", teams=[])
    async with httpx.AsyncClient(timeout=httpx.Timeout(10.0, read=None)) as http:
        session = await gw.initialize(http, token)
        headers = {**gw.headers(token, session), "accept": "text/event-stream"}
        async with http.stream("GET", gw.url, headers=headers) as stream:
            assert stream.status_code == 200, gw.mode
            chunks = stream.aiter_raw()
            read = bytearray()
            await _read_until(chunks, read, COMMENT)
            await _add_tool(http, gw, token, session)
            await _read_until(chunks, read, b"notifications/tools/list_changed")
            await _read_until(chunks, read, COMMENT)
    methods = [json.loads(d).get("method") for d in _blocks(bytes(read))]
    assert "notifications/tools/list_changed" in methods, (gw.mode, methods)


async def test_a_silent_listen_stream_gets_comments_after_its_acknowledgement(gw: Gateway) -> None:
    token = gw.token("alice@example.com", teams=[])
    meta = {
        "io.modelcontextprotocol/protocolVersion": V2026,
        "io.modelcontextprotocol/clientCapabilities": {},
    }
    listen = {
        "jsonrpc": "2.0",
        "id": 3,
        "method": "subscriptions/listen",
        "params": {"_meta": meta, "notifications": {"toolsListChanged": True}},
    }
    headers = {**gw.headers(token), "mcp-protocol-version": V2026, "mcp-method": "subscriptions/listen"}
    async with (
        httpx.AsyncClient(timeout=httpx.Timeout(10.0, read=None)) as http,
        http.stream("POST", gw.url, json=listen, headers=headers) as stream,
    ):
        assert stream.status_code == 200, gw.mode
        chunks = stream.aiter_raw()
        read = bytearray()
        await _read_until(chunks, read, COMMENT)
        first = json.loads(_blocks(bytes(read))[0])
        assert first["method"] == "notifications/subscriptions/acknowledged", (gw.mode, first)
        session = await gw.initialize(http, token)
        await _add_tool(http, gw, token, session)
        await _read_until(chunks, read, b"notifications/tools/list_changed")
    _blocks(bytes(read))
