"""Server-to-client requests (sampling, elicitation, roots) relayed during a call, with the SDK client.

The conformance fixture's ``test_sampling`` asks its client ``sampling/createMessage`` and
answers with the reply's text; ``test_elicitation`` asks ``elicitation/create``,
``test_list_roots`` ``roots/list``. Through the
chain, the request must reach the client that made the call (on that call's stream) and its
answer must go back to the upstream. A client that did not declare the capability gets the
tool's error, never another client's answer. A client that is asked and never answers does not
hold the call: it ends when the client leaves, or at the runtime's upstream timeout with its
error, and the runtime counts no request in flight afterwards (the proxied modes, whose runtime
the test starts with a short timeout and a metrics listener).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import mcp_types as types
import pytest
from mcp.client.session import ClientRequestContext

from conftest import INITIALIZE, SECRET, Gateway, Runtime, _socket_dir, gateway_env
from mcp_gateway.testing import (
    EDGE_MODES,
    free_port,
    stack,
    start_fixture,
    start_gateway,
    start_runtime,
    stop,
)

MODES = ["python", "http", "grpc", *EDGE_MODES]


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    workdir = tmp_path_factory.mktemp("server-requests")
    process, url = start_fixture("--conformance", log=workdir / "fixture.log")
    path = workdir / "catalog.toml"
    path.write_text(f'[[upstreams]]\nid = "public"\nurl = "{url}"\n')
    try:
        yield path
    finally:
        stop(process)


@pytest.fixture(params=MODES)
def gw(request: pytest.FixtureRequest, catalog: Path) -> Iterator[Gateway]:
    port = free_port()
    with stack(request.param, port, SECRET, catalog=catalog):
        yield Gateway(request.param, f"http://127.0.0.1:{port}", SECRET, [])


def text(result: types.CallToolResult) -> str:
    (content,) = result.content
    assert isinstance(content, types.TextContent), content
    return content.text


async def test_sampling_reaches_the_calling_client_and_its_answer_the_upstream(gw: Gateway) -> None:
    asked: list[str] = []

    async def sampling(context: ClientRequestContext, params: types.CreateMessageRequestParams) -> Any:
        (message,) = params.messages
        assert isinstance(message.content, types.TextContent)
        asked.append(message.content.text)
        return types.CreateMessageResult(
            role="assistant", content=types.TextContent(type="text", text="forty-two"), model="test"
        )

    async with gw.client(gw.token(), sampling_callback=sampling) as client:
        result = await client.call_tool("test_sampling", {"prompt": "the answer?"})
    assert not result.is_error, (gw.mode, result)
    assert text(result) == "LLM response: forty-two", gw.mode
    assert asked == ["the answer?"], gw.mode


async def test_elicitation_reaches_the_calling_client(gw: Gateway) -> None:
    async def elicitation(context: ClientRequestContext, params: types.ElicitRequestParams) -> Any:
        return types.ElicitResult(action="accept", content={"username": "alice", "email": "a@example.com"})

    async with gw.client(gw.token(), elicitation_callback=elicitation) as client:
        result = await client.call_tool("test_elicitation", {"message": "who are you?"})
    assert not result.is_error, (gw.mode, result)
    assert "accept" in text(result), (gw.mode, text(result))


async def test_roots_list_reaches_the_calling_client(gw: Gateway) -> None:
    uris = ["file:///srv/project-a", "file:///srv/project-b"]

    async def roots(context: ClientRequestContext) -> Any:
        return types.ListRootsResult(roots=[types.Root.model_validate({"uri": uri}) for uri in uris])

    async with gw.client(gw.token(), list_roots_callback=roots) as client:
        result = await client.call_tool("test_list_roots", {})
    assert not result.is_error, (gw.mode, result)
    assert text(result) == "Roots: " + "\n".join(uris), gw.mode


async def test_a_client_without_the_capability_is_not_asked(gw: Gateway) -> None:
    async with gw.client(gw.token()) as client:
        result = await client.call_tool("test_sampling", {"prompt": "the answer?"})
    assert result.is_error, (gw.mode, result)


# The runtime of the never-answering client's test answers a call the upstream has not
# answered within 3 s with -32001; the leaving client's runtime keeps the default 60 s, longer
# than SETTLE_S, so that its call ends because the client left, not at that timeout.
UPSTREAM_TIMEOUT_MS = 3000
LONG_UPSTREAM_TIMEOUT_MS = 60_000
# Generous, for a loaded machine: how long the runtime may take to count the call ended.
SETTLE_S = 20.0
SAMPLING_CALL = {
    "jsonrpc": "2.0",
    "id": "never-answered",
    "method": "tools/call",
    "params": {"name": "test_sampling", "arguments": {"prompt": "nobody answers"}},
}
PROXIED_MODES = ["http", "grpc"]


@dataclass
class Limited:
    """A gateway in a proxied mode and the ``/metrics`` URL of its runtime."""

    gw: Gateway
    metrics: str


@contextlib.contextmanager
def limited_stack(mode: str, catalog: Path, workdir: Path, upstream_timeout_ms: int) -> Iterator[Limited]:
    """Its own runtime (``--upstream-timeout-ms``, a metrics listener) and gateway in ``mode``."""
    sockets = _socket_dir()
    metrics_port = free_port()
    rt = Runtime(
        None, str(sockets / "http.sock"), str(sockets / "grpc.sock"), catalog, workdir / "runtime.log"
    )
    extra = (
        "--upstream-timeout-ms",
        str(upstream_timeout_ms),
        "--metrics-listen",
        f"127.0.0.1:{metrics_port}",
    )
    rt.process = start_runtime(catalog, rt.http_uds, rt.grpc_uds, extra=extra, log=rt.log)
    try:
        port = free_port()
        gateway = start_gateway(gateway_env(mode, catalog, rt), port, log=workdir / "gateway.log")
        try:
            gw = Gateway(mode, f"http://127.0.0.1:{port}", SECRET)
            yield Limited(gw, f"http://127.0.0.1:{metrics_port}/metrics")
        finally:
            stop(gateway)
    finally:
        stop(rt.process)


async def _in_flight(http: httpx.AsyncClient, limited: Limited) -> float:
    """The runtime's ``mcp_requests_in_flight`` for the gateway's transport."""
    r = await http.get(limited.metrics)
    assert r.status_code == 200, r.text
    prefix = f'mcp_requests_in_flight{{mode="{limited.gw.mode}"}} '
    values = [float(line.removeprefix(prefix)) for line in r.text.splitlines() if line.startswith(prefix)]
    return values[0] if values else 0.0


async def _settled(http: httpx.AsyncClient, limited: Limited) -> float:
    """``mcp_requests_in_flight`` once it is 0, or after :data:`SETTLE_S` seconds."""
    with anyio.move_on_after(SETTLE_S):
        while await _in_flight(http, limited) > 0:
            await anyio.sleep(0.05)
    return await _in_flight(http, limited)


async def _session_asking(http: httpx.AsyncClient, gw: Gateway, token: str) -> str:
    """A raw session whose client declared ``sampling``; returns its id."""
    params = INITIALIZE["params"]
    assert isinstance(params, dict)
    body = {**INITIALIZE, "params": {**params, "capabilities": {"sampling": {}}}}
    r = await http.post(gw.url, json=body, headers=gw.headers(token))
    assert r.status_code == 200, r.text
    session = r.headers["mcp-session-id"]
    note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    r = await http.post(gw.url, json=note, headers=gw.headers(token, session))
    assert r.status_code == 202, r.text
    return session


async def _until_asked(lines: AsyncIterator[str]) -> dict[str, Any]:
    """Read SSE lines up to the upstream's ``sampling/createMessage``; returns it."""
    async for line in lines:
        if not line.startswith("data:"):
            continue
        message = json.loads(line.removeprefix("data:"))
        assert "id" not in message or "method" in message, f"the call ended before it asked: {message}"
        if message.get("method") == "sampling/createMessage":
            assert isinstance(message, dict)
            return message
    raise AssertionError("the stream ended before the upstream asked")


@pytest.mark.parametrize("mode", PROXIED_MODES)
async def test_a_client_that_leaves_without_answering_ends_the_call(
    mode: str, catalog: Path, tmp_path: Path
) -> None:
    with limited_stack(mode, catalog, tmp_path, LONG_UPSTREAM_TIMEOUT_MS) as limited:
        await _leave_without_answering(limited)


async def _leave_without_answering(limited: Limited) -> None:
    gw = limited.gw
    token = gw.token()
    async with httpx.AsyncClient(timeout=httpx.Timeout(30.0)) as http:
        session = await _session_asking(http, gw, token)
        async with (
            httpx.AsyncClient(timeout=httpx.Timeout(30.0)) as leaving,
            leaving.stream(
                "POST", gw.url, json=SAMPLING_CALL, headers=gw.headers(token, session)
            ) as response,
        ):
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            asked = await _until_asked(response.aiter_lines())
            assert asked["id"] != SAMPLING_CALL["id"], asked
            assert await _in_flight(http, limited) >= 1
        # The connection is closed: the call ends without waiting for the upstream timeout.
        assert await _settled(http, limited) == 0, f"{gw.mode}: the left call is still in flight"
        # The session goes on: its next call is answered.
        echo = {
            "jsonrpc": "2.0",
            "id": 2,
            "method": "tools/call",
            "params": {"name": "echo", "arguments": {"text": "hi"}},
        }
        r = await http.post(gw.url, json=echo, headers=gw.headers(token, session))
        assert r.status_code == 200, r.text


@pytest.mark.parametrize("mode", PROXIED_MODES)
async def test_a_client_that_never_answers_gets_the_upstream_timeout(
    mode: str, catalog: Path, tmp_path: Path
) -> None:
    with limited_stack(mode, catalog, tmp_path, UPSTREAM_TIMEOUT_MS) as limited:
        await _never_answer(limited)


async def _never_answer(limited: Limited) -> None:
    gw = limited.gw
    token = gw.token()
    async with httpx.AsyncClient(timeout=httpx.Timeout(30.0)) as http:
        session = await _session_asking(http, gw, token)
        async with http.stream(
            "POST", gw.url, json=SAMPLING_CALL, headers=gw.headers(token, session)
        ) as response:
            assert response.status_code == 200
            lines = response.aiter_lines()
            asked = await _until_asked(lines)
            messages = [
                json.loads(line.removeprefix("data:")) async for line in lines if line.startswith("data:")
            ]
        # Not answered: the call ends with the runtime's upstream timeout, as its last event.
        assert messages, gw.mode
        last = messages[-1]
        assert last.get("id") == SAMPLING_CALL["id"], (gw.mode, messages)
        assert last["error"]["code"] == -32001, (gw.mode, last)
        assert await _settled(http, limited) == 0, f"{gw.mode}: the call is still in flight"
        # Its relayed request is gone: a late answer is accepted and goes nowhere.
        late = {
            "jsonrpc": "2.0",
            "id": asked["id"],
            "result": {"role": "assistant", "model": "m", "content": {"type": "text", "text": "late"}},
        }
        r = await http.post(gw.url, json=late, headers=gw.headers(token, session))
        assert r.status_code == 202, r.text


# MCP 2026-07-28 has no server-to-client requests: a tool that needs the client's input answers
# `resultType: "input_required"` (SEP-2322) and the client retries with `inputResponses` and the
# echoed `requestState`. The conformance fixture's `test_input_required_result_*` tools do that;
# the chain relays the result unchanged and routes the retry to the same upstream.
V2026 = "2026-07-28"


def _meta_2026(capabilities: dict[str, Any]) -> dict[str, Any]:
    return {
        "io.modelcontextprotocol/protocolVersion": V2026,
        "io.modelcontextprotocol/clientCapabilities": capabilities,
        "io.modelcontextprotocol/clientInfo": {"name": "test", "version": "1"},
    }


async def test_a_2026_client_is_asked_for_input_and_its_retry_completes_the_call(gw: Gateway) -> None:
    asked: list[str] = []

    async def elicitation(context: ClientRequestContext, params: types.ElicitRequestParams) -> Any:
        asked.append(params.message)
        return types.ElicitResult(action="accept", content={"name": "Alice"})

    async with gw.client(gw.token(), mode=V2026, elicitation_callback=elicitation) as client:
        assert client.protocol_version == V2026, gw.mode
        result = await client.call_tool("test_input_required_result_elicitation", {})
    assert not result.is_error, (gw.mode, result)
    assert result.content, (gw.mode, result)
    assert len(asked) == 1, (gw.mode, asked)


async def test_the_input_required_result_reaches_a_2026_client_unchanged(gw: Gateway) -> None:
    """The upstream's ``input_required`` answer reaches the client as the upstream sent it.

    Raw HTTP: the first answer has the ``inputRequests`` (and ``requestState``, if any); the retry
    carrying them and the client's answer gets the complete result.
    """
    headers = {
        "Authorization": f"Bearer {gw.token()}",
        "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": V2026,
        "Mcp-Method": "tools/call",
        "Mcp-Name": "test_input_required_result_elicitation",
    }
    params: dict[str, Any] = {
        "name": "test_input_required_result_elicitation",
        "arguments": {},
        "_meta": _meta_2026({"elicitation": {"form": {}}}),
    }
    async with httpx.AsyncClient(timeout=httpx.Timeout(30.0)) as http:
        first = await _answer(
            http,
            f"{gw.base}/mcp",
            headers,
            {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": params},
        )
        result = first["result"]
        assert result["resultType"] == "input_required", (gw.mode, first)
        assert result["inputRequests"]["user_name"]["method"] == "elicitation/create", (gw.mode, first)
        retry = dict(params, inputResponses={"user_name": {"action": "accept", "content": {"name": "Alice"}}})
        if "requestState" in result:
            retry["requestState"] = result["requestState"]
        second = await _answer(
            http,
            f"{gw.base}/mcp",
            headers,
            {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": retry},
        )
    assert second["result"].get("resultType", "complete") == "complete", (gw.mode, second)
    assert second["result"]["content"], (gw.mode, second)


async def test_a_2025_client_never_gets_an_input_required_result(gw: Gateway) -> None:
    async with gw.client(gw.token()) as client:
        with contextlib.suppress(Exception):
            result = await client.session.call_tool("test_input_required_result_elicitation", {})
            assert result.is_error, (gw.mode, result)


async def _answer(
    http: httpx.AsyncClient, url: str, headers: dict[str, str], body: dict[str, Any]
) -> dict[str, Any]:
    """The JSON-RPC response to ``body``, from a JSON or an SSE answer."""
    r = await http.post(url, json=body, headers=headers)
    assert r.status_code == 200, (r.status_code, r.text)
    if r.headers.get("content-type", "").startswith("text/event-stream"):
        for line in r.text.splitlines():
            if line.startswith("data:") and line[5:].strip():
                message: dict[str, Any] = json.loads(line[5:])
                if message.get("id") == body["id"]:
                    return message
        raise AssertionError(f"no response in {r.text!r}")
    answer: dict[str, Any] = r.json()
    return answer
