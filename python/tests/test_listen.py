"""``subscriptions/listen`` (MCP 2026-07-28) through the gateway's proxied modes and the edge modes.

The official SDK client in 2026-07-28 mode opens a listen stream (``Client.listen``): the
acknowledgement says what is honoured (only what the caller may see), resource updates and tool
list changes arrive on it, and it outlives the gateway's deadline of a unary call (2 s here): the
gateway streams it through to the runtime and back like a streamed ``tools/call``. A bad filter
is -32602. Upstreams: a public fixture and one of team alpha (prefix ``alpha_``) serving the
conformance resources, both with a tool list that changes (``add_tool``). The Python baseline
(``python`` mode) serves listen itself, with the same answers.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import httpx2
import pytest
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.subscriptions import ResourceUpdated, ServerEvent, ToolsListChanged

from conftest import SECRET, Gateway, Runtime, gateway_env
from mcp_gateway.testing import (
    EDGE_MODES,
    free_port,
    stack,
    start_fixture,
    start_gateway,
    start_runtime,
    stop,
)

SOCKET_MODES = ["http", "http-httpx", "grpc"]
MODES = ["python", *SOCKET_MODES, *EDGE_MODES]
V2026 = "2026-07-28"
WATCHED = "test://watched-resource"
DEADLINE_S = 2
"""The gateway's deadline of a unary runtime call here, in seconds: a listen stream outlives it."""


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    workdir = tmp_path_factory.mktemp("listen")
    alpha, alpha_url = start_fixture("--conformance", "--dynamic-tools", log=workdir / "alpha.log")
    public, public_url = start_fixture("--dynamic-tools", log=workdir / "public.log")
    path = workdir / "catalog.toml"
    path.write_text(
        f'[[upstreams]]\nid = "public"\nurl = "{public_url}"\n\n'
        f'[[upstreams]]\nid = "alpha"\nurl = "{alpha_url}"\nprefix = "alpha_"\n'
        'visibility = "team"\nteam = "alpha"\n'
    )
    try:
        yield path
    finally:
        stop(alpha)
        stop(public)


@pytest.fixture(scope="module")
def runtime(catalog: Path) -> Iterator[Runtime]:
    sockets = catalog.parent
    http_uds, grpc_uds = str(sockets / "http.sock"), str(sockets / "grpc.sock")
    rt = Runtime(None, http_uds, grpc_uds, catalog, sockets / "runtime.log")
    rt.process = start_runtime(catalog, rt.http_uds, rt.grpc_uds, log=rt.log)
    try:
        yield rt
    finally:
        stop(rt.process)


@pytest.fixture(params=MODES)
def gw(request: pytest.FixtureRequest, catalog: Path, runtime: Runtime) -> Iterator[Gateway]:
    mode: str = request.param
    port = free_port()
    if mode in EDGE_MODES:
        with stack(mode, port, SECRET, catalog=catalog):
            yield Gateway(mode, f"http://127.0.0.1:{port}", SECRET, [])
        return
    env = {**gateway_env(mode, catalog, runtime), "MCP_GATEWAY_REQUEST_TIMEOUT_S": str(DEADLINE_S)}
    process = start_gateway(env, port, log=catalog.parent / f"gateway-{mode}.log")
    try:
        yield Gateway(mode, f"http://127.0.0.1:{port}", SECRET, [process])
    finally:
        stop(process)


def _raw_listen(
    gw: Gateway, request_id: int, notifications: object, accept: str = "application/json, text/event-stream"
) -> httpx.Response:
    """POST a ``subscriptions/listen`` of bob's (no team) with ``notifications`` as its filter.

    Only for a listen answered without a stream (an error): the answer is read whole.
    """
    meta = {
        "io.modelcontextprotocol/protocolVersion": V2026,
        "io.modelcontextprotocol/clientCapabilities": {},
    }
    headers = {
        "authorization": f"Bearer {gw.token('bob@example.com', teams=[])}",
        "accept": accept,
        "mcp-protocol-version": V2026,
        "mcp-method": "subscriptions/listen",
    }
    body = {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": "subscriptions/listen",
        "params": {"_meta": meta, "notifications": notifications},
    }
    return httpx.post(gw.url, json=body, headers=headers, timeout=10.0)


def _client(gw: Gateway, token: str) -> tuple[httpx2.AsyncClient, Any]:
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=httpx2.Timeout(30.0))
    return http, Client(streamable_http_client(gw.url, http_client=http), mode=V2026, cache=None)


async def _until(events: Any, kind: type[ServerEvent]) -> ServerEvent:
    """The next event of ``kind`` (others may come first), within 10 s."""
    with anyio.fail_after(10):
        async for event in events:
            if isinstance(event, kind):
                return event
    raise AssertionError(f"the stream ended before a {kind.__name__}")


async def test_a_listen_stream_through_the_gateway(gw: Gateway) -> None:
    mode = gw.mode
    alice_http, alice = _client(gw, gw.token("alice@example.com", teams=["alpha"]))
    bob_http, bob = _client(gw, gw.token("bob@example.com", teams=[]))
    async with alice_http, alice, bob_http, bob:
        assert alice.protocol_version == V2026, mode
        async with (
            alice.listen(tools_list_changed=True, resource_subscriptions=[WATCHED, "test://nope"]) as mine,
            bob.listen(tools_list_changed=True, resource_subscriptions=[WATCHED]) as his,
        ):
            # Honoured: what each caller may see (bob cannot see the team's resources).
            assert mine.honored.tools_list_changed is True, mode
            assert mine.honored.resource_subscriptions == [WATCHED], mode
            assert his.honored.tools_list_changed is True, mode
            assert not his.honored.resource_subscriptions, mode
            updated = await _until(mine, ResourceUpdated)
            assert isinstance(updated, ResourceUpdated), mode
            assert updated.uri == WATCHED, mode
            # Past the gateway's deadline of a unary call, the stream is still open.
            await anyio.sleep(DEADLINE_S + 1)
            added = await alice.call_tool("alpha_add_tool", {"name": f"fresh_{mode.replace('-', '_')}"})
            assert not added.is_error, (mode, added)
            await _until(mine, ToolsListChanged)
            added = await bob.call_tool("add_tool", {"name": f"public_{mode.replace('-', '_')}"})
            assert not added.is_error, (mode, added)
            await _until(his, ToolsListChanged)
            names = {t.name for t in (await alice.list_tools()).tools}
            assert f"alpha_fresh_{mode.replace('-', '_')}" in names, mode


def test_a_bad_filter_is_invalid_params(gw: Gateway) -> None:
    bad: list[object] = [{"toolsListChanged": "yes"}, {"resourceSubscriptions": [1]}, []]
    for notifications in bad:
        r = _raw_listen(gw, 1, notifications)
        # The SDK under the baseline gives -32602 the HTTP status 400 in MCP 2026-07-28 (its
        # `ERROR_CODE_HTTP_STATUS`); the runtime keeps 200 for errors of a method's own.
        assert r.status_code == (400 if gw.mode == "python" else 200), (gw.mode, r.text)
        assert r.json()["error"]["code"] == -32602, (gw.mode, r.text)


def test_a_listen_that_accepts_only_json_is_not_acceptable(gw: Gateway) -> None:
    """A listen whose ``Accept`` rules out SSE is 406 with -32600, answered at once.

    Its answer is a stream that stays open: as JSON it would never come (the baseline's SDK
    waited without end, holding a stream slot and the upstream subscriptions). A bad filter is
    still -32602 first, as the runtime checks it before ``Accept``.
    """
    notifications = {"toolsListChanged": True, "resourceSubscriptions": [WATCHED]}
    # Each answered within the client's timeout, none left holding a stream. Accept is read as
    # RFC 9110 reads it: a weight of 0 rules SSE out, a wildcard's too.
    for accept in ("application/json", "application/json, text/event-stream;q=0", "text/*;q=0, */*"):
        r = _raw_listen(gw, 7, notifications, accept=accept)
        assert r.status_code == 406, (gw.mode, r.text)
        error = r.json()
        assert error["id"] == 7, (gw.mode, r.text)
        assert error["error"]["code"] == -32600, (gw.mode, r.text)
        assert "text/event-stream" in error["error"]["message"], (gw.mode, r.text)
    r = _raw_listen(gw, 7, {"toolsListChanged": "yes"}, accept="application/json")
    assert r.json()["error"]["code"] == -32602, (gw.mode, r.text)


async def test_streams_end_when_the_token_expires(gw: Gateway) -> None:
    """A listen stream and a session's GET stream end when the caller's token expires.

    They were authorised when they opened; without an end they would go on hearing of changes
    (``docs/http-boundary.md``, Resumability and listen). The listen stream's last message is
    its result (the SDK ends its loop gracefully); the GET stream just ends.
    """
    mode = gw.mode
    token = gw.token("alice@example.com", teams=["alpha"], ttl_s=4)
    http, client = _client(gw, token)
    async with http, client, client.listen(resource_subscriptions=[WATCHED]) as mine:
        assert mine.honored.resource_subscriptions == [WATCHED], mode
        with anyio.fail_after(30):
            async for _ in mine:
                pass
    token = gw.token("alice@example.com", teams=["alpha"], ttl_s=5)
    headers = gw.headers(token)
    init = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "t", "version": "1"},
        },
    }
    async with httpx2.AsyncClient(timeout=httpx2.Timeout(30.0)) as raw:
        r = await raw.post(gw.url, json=init, headers=headers)
        assert r.status_code == 200, (mode, r.text)
        session = r.headers["mcp-session-id"]
        get = {**gw.headers(token, session), "accept": "text/event-stream"}
        with anyio.fail_after(30):
            async with raw.stream("GET", gw.url, headers=get) as stream:
                assert stream.status_code == 200, mode
                async for _ in stream.aiter_bytes():
                    pass
