"""MCP 2026-07-28 beside 2025-11-25 on one endpoint, in every mode.

The official SDK client in 2026-07-28 mode (no session: ``server/discover``, lists with
``ttlMs``/``cacheScope``, calls) and in legacy mode (the ``initialize`` session) at the same
time through the same gateway or edge endpoint; the fixture upstream speaks only 2025-11-25,
reached through the runtime's own session. Then the standard headers: a request whose
``Mcp-Method`` or ``Mcp-Name`` is missing or does not match the body is HTTP 400 with -32020
(checked by the gateway in gRPC mode, by the runtime over HTTP/JSON and in the edge modes, by
the SDK in the Python baseline), a version nobody speaks -32022.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from typing import Any

import anyio
import httpx
import httpx2
import pytest
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client

from conftest import SECRET, Gateway
from mcp_gateway.testing import EDGE_MODES, free_port, stack

MODES = ["python", "http", "http-httpx", "grpc", *EDGE_MODES]
V2026 = "2026-07-28"


@pytest.fixture(params=MODES)
def gw(request: pytest.FixtureRequest, gateways: dict[str, Gateway]) -> Iterator[Gateway]:
    mode: str = request.param
    if mode not in EDGE_MODES:
        yield gateways[mode]
        return
    port = free_port()
    with stack(mode, port, SECRET):
        yield Gateway(mode, f"http://127.0.0.1:{port}", SECRET, [])


def _client(gw: Gateway, token: str, mode: str) -> Any:
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=httpx2.Timeout(30.0))
    return http, Client(streamable_http_client(gw.url, http_client=http), mode=mode, cache=None)


async def test_a_2026_client_and_a_2025_client_at_the_same_time(gw: Gateway) -> None:
    token = gw.token("alice@example.com", teams=["alpha"])
    results: dict[str, Any] = {}

    async def modern() -> None:
        http, client = _client(gw, token, V2026)
        async with http, client:
            assert client.protocol_version == V2026, gw.mode
            tools = await client.list_tools()
            names = {t.name for t in tools.tools}
            assert {"echo", "alpha_echo"} <= names, gw.mode
            assert "beta_echo" not in names, gw.mode
            results["modern"] = await client.call_tool("alpha_echo", {"text": "new"})
            results["modern_slow"] = await client.call_tool("sleep", {"ms": 300})

    async def legacy() -> None:
        http, client = _client(gw, token, "legacy")
        async with http, client:
            assert client.protocol_version == "2025-11-25", gw.mode
            results["legacy_slow"] = await client.call_tool("sleep", {"ms": 300})
            results["legacy"] = await client.call_tool("echo", {"text": "old"})

    async with anyio.create_task_group() as tg:
        tg.start_soon(modern)
        tg.start_soon(legacy)
    assert results["modern"].content[0].text == "new", gw.mode
    assert results["legacy"].content[0].text == "old", gw.mode
    assert not results["modern_slow"].is_error
    assert not results["legacy_slow"].is_error


def _meta(version: str = V2026) -> dict[str, Any]:
    return {
        "io.modelcontextprotocol/protocolVersion": version,
        "io.modelcontextprotocol/clientCapabilities": {},
    }


async def test_discover_lists_and_header_checks(gw: Gateway) -> None:
    token = gw.token("bob@example.com", teams=[])
    base = {"authorization": f"Bearer {token}", "accept": "application/json, text/event-stream"}

    def post(body: dict[str, Any], **headers: str) -> httpx.Response:
        return httpx.post(gw.url, json=body, headers={**base, **headers}, timeout=30.0)

    def post_raw(body: str, **headers: str) -> httpx.Response:
        headers = {**base, "content-type": "application/json", **headers}
        return httpx.post(gw.url, content=body, headers=headers, timeout=30.0)

    def get(**headers: str) -> httpx.Response:
        return httpx.get(gw.url, headers={**base, **headers}, timeout=30.0)

    discover = {"jsonrpc": "2.0", "id": 1, "method": "server/discover", "params": {"_meta": _meta()}}
    r = post(discover, **{"mcp-protocol-version": V2026, "mcp-method": "server/discover"})
    assert r.status_code == 200, (gw.mode, r.text)
    assert "mcp-session-id" not in r.headers
    result = r.json()["result"]
    assert result["supportedVersions"][0] == V2026, gw.mode
    assert isinstance(result["capabilities"]["tools"], dict), gw.mode

    listing = {"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {"_meta": _meta()}}
    r = post(listing, **{"mcp-protocol-version": V2026, "mcp-method": "tools/list"})
    listed = r.json()["result"]
    assert listed["cacheScope"] == "private", gw.mode
    assert isinstance(listed["ttlMs"], int), gw.mode
    assert not any(t["name"].startswith("alpha_") for t in listed["tools"]), gw.mode

    call = {
        "jsonrpc": "2.0",
        "id": 3,
        "method": "tools/call",
        "params": {"name": "echo", "arguments": {"text": "x"}, "_meta": _meta()},
    }
    good = {"mcp-protocol-version": V2026, "mcp-method": "tools/call", "mcp-name": "echo"}
    r = post(call, **good)
    assert r.status_code == 200, (gw.mode, r.text)
    # The whitespace around a field value is not part of it (RFC 9110, 5.5); httpx refuses to
    # send such a value, the standard library's client does not.
    url = httpx.URL(gw.url)
    conn = http.client.HTTPConnection(url.host, url.port, timeout=30.0)
    try:
        conn.request(
            "POST", url.raw_path.decode(), json.dumps(call), {**base, **good, "mcp-name": "  echo\t"}
        )
        answer = conn.getresponse()
        assert answer.status == 200, (gw.mode, answer.read())
        answer.read()
        # A header a request carries once, sent twice: refused, whichever value a proxy reads.
        for name, second in (("mcp-method", "tools/list"), ("mcp-protocol-version", "2025-11-25")):
            conn.putrequest("POST", url.raw_path.decode(), skip_accept_encoding=True)
            payload = json.dumps(call).encode()
            for key, value in {**base, **good, "content-type": "application/json"}.items():
                conn.putheader(key, value)
            conn.putheader(name, second)
            conn.putheader("content-length", str(len(payload)))
            conn.endheaders(payload)
            answer = conn.getresponse()
            body = json.loads(answer.read())
            assert (answer.status, body["error"]["code"]) == (400, -32020), (gw.mode, name, body)
    finally:
        conn.close()
    for bad in (
        {"mcp-method": "tools/list"},
        {"mcp-name": "sleep"},
        {"mcp-name": "=?base64?not base64?="},
    ):
        r = post(call, **{**good, **bad})
        assert r.status_code == 400, (gw.mode, bad, r.text)
        assert r.json()["error"]["code"] == -32020, (gw.mode, bad)
        assert r.json()["id"] == 3, (gw.mode, bad)
    for missing in ("mcp-method", "mcp-name"):
        headers = {k: v for k, v in good.items() if k != missing}
        r = post(call, **headers)
        assert (r.status_code, r.json()["error"]["code"]) == (400, -32020), (gw.mode, missing)
    # `_meta` names 2026-07-28 while the version header is missing or names the session era:
    # -32020 before anything else (not a session-era request lacking its session).
    for version in ({}, {"mcp-protocol-version": "2025-11-25"}):
        r = post(call, **{"mcp-method": "tools/call", "mcp-name": "echo", **version})
        assert (r.status_code, r.json()["error"]["code"]) == (400, -32020), (gw.mode, version, r.text)
        assert "protocolVersion" in r.json()["error"]["message"], (gw.mode, version, r.text)
        assert r.json()["id"] == 3, (gw.mode, version)
        # However the client's encoder spells the key: PHP's json_encode escapes its slash.
        for escaped in ("modelcontextprotocol\\/", "\\u006dodelcontextprotocol/"):
            body = json.dumps(call, separators=(",", ":")).replace("modelcontextprotocol/", escaped)
            r = post_raw(body, **{"mcp-method": "tools/call", "mcp-name": "echo", **version})
            assert (r.status_code, r.json()["error"]["code"]) == (400, -32020), (gw.mode, escaped, r.text)
    future = {**listing, "params": {"_meta": _meta("2099-01-01")}}
    r = post(future, **{"mcp-protocol-version": "2099-01-01", "mcp-method": "tools/list"})
    assert (r.status_code, r.json()["error"]["code"]) == (400, -32022), (gw.mode, r.text)
    assert V2026 in r.json()["error"]["data"]["supported"], gw.mode
    # Any unknown version sorting after the session era's newest is such a version, not one of
    # 2026-07-28 (GET included, which that revision has not).
    for bogus in ("bogus", "2025-13-99"):
        r = post(listing, **{"mcp-protocol-version": bogus, "mcp-method": "tools/list"})
        assert (r.status_code, r.json()["error"]["code"]) == (400, -32022), (gw.mode, bogus, r.text)
        assert r.json()["id"] == 2, (gw.mode, bogus, r.text)
        assert r.json()["error"]["data"]["requested"] == bogus, (gw.mode, r.text)
        r = get(**{"mcp-protocol-version": bogus})
        assert (r.status_code, r.json()["error"]["code"]) == (400, -32022), (gw.mode, bogus, r.text)
    # A notification of a session naming 2026-07-28 in its `_meta` is taken as the session's
    # (the `_meta` rule is for requests).
    init = {
        "jsonrpc": "2.0",
        "id": 9,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "t", "version": "1"},
        },
    }
    r = post(init)
    session = r.headers["mcp-session-id"]
    note = {"jsonrpc": "2.0", "method": "notifications/initialized", "params": {"_meta": _meta()}}
    r = post(note, **{"mcp-session-id": session, "mcp-protocol-version": "2025-11-25"})
    assert r.status_code == 202, (gw.mode, r.text)
