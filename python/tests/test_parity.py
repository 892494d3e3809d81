"""Parity: one table of raw HTTP requests, malformed ones included, answered alike in every mode.

Each row gives the status, the JSON-RPC error code (``None`` when the answer is not an error)
and the body shape (``json``: one JSON-RPC object, ``empty``, ``sse``) that
``docs/http-boundary.md`` prescribes; every mode must produce exactly that.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from conftest import ACCEPT, MAX_MESSAGE_BYTES, PROTOCOL, Gateway


@dataclass(frozen=True)
class Case:
    name: str
    body: bytes | None
    status: int
    code: int | None
    shape: str
    method: str = "POST"
    session: str = "valid"  # valid | none | unknown
    headers: tuple[tuple[str, str], ...] = ()
    path: str = "/mcp"


def rpc(method: str, params: dict[str, Any] | None = None, rid: Any = 1) -> bytes:
    body: dict[str, Any] = {"jsonrpc": "2.0", "id": rid, "method": method}
    if params is not None:
        body["params"] = params
    return json.dumps(body).encode()


PROGRESS = rpc(
    "tools/call",
    {"name": "progress", "arguments": {"steps": 2, "interval_ms": 5}, "_meta": {"progressToken": 1}},
)

INIT = rpc(
    "initialize",
    {"protocolVersion": PROTOCOL, "capabilities": {}, "clientInfo": {"name": "p", "version": "1"}},
)

CASES = [
    Case("invalid json", b"{not json", 400, -32700, "json"),
    Case("non-utf8 bytes", b"\xff\xfe\xfd", 400, -32700, "json"),
    Case("empty body", b"", 400, -32700, "json"),
    Case("batch array", b'[{"jsonrpc":"2.0","id":1,"method":"ping"}]', 400, -32600, "json"),
    Case("empty batch", b"[]", 400, -32600, "json"),
    Case("json scalar", b"42", 400, -32600, "json"),
    Case("not json-rpc", b'{"hello":"world"}', 400, -32600, "json"),
    Case("wrong jsonrpc version", b'{"jsonrpc":"1.0","id":1,"method":"ping"}', 400, -32600, "json"),
    Case("object id", b'{"jsonrpc":"2.0","id":{},"method":"ping"}', 400, -32600, "json"),
    Case("null id", b'{"jsonrpc":"2.0","id":null,"method":"ping"}', 400, -32600, "json"),
    Case(
        "method with result",
        b'{"jsonrpc":"2.0","id":5,"method":"ping","result":{}}',
        400,
        -32600,
        "json",
    ),
    Case("unknown method", rpc("no/such/method"), 200, -32601, "json"),
    Case("server/discover", rpc("server/discover"), 200, -32601, "json"),
    Case("ping", rpc("ping"), 200, None, "json"),
    Case("tools/list", rpc("tools/list"), 200, None, "json"),
    Case("unknown tool", rpc("tools/call", {"name": "nope", "arguments": {}}), 200, -32602, "json"),
    Case("tool without name", rpc("tools/call", {"arguments": {}}), 200, -32602, "json"),
    Case("non-object arguments", rpc("tools/call", {"name": "echo", "arguments": "x"}), 200, -32602, "json"),
    Case(
        "non-object _meta",
        rpc("tools/call", {"name": "echo", "arguments": {"text": "x"}, "_meta": "x"}),
        200,
        -32602,
        "json",
    ),
    Case("unknown prompt", rpc("prompts/get", {"name": "nope"}), 200, -32602, "json"),
    Case("unknown resource", rpc("resources/read", {"uri": "nowhere://x"}), 200, -32002, "json"),
    Case("echo", rpc("tools/call", {"name": "echo", "arguments": {"text": "x"}}), 200, None, "json"),
    Case(
        "progress",
        rpc(
            "tools/call",
            {"name": "progress", "arguments": {"steps": 2, "interval_ms": 5}, "_meta": {"progressToken": 1}},
        ),
        200,
        None,
        "sse",
    ),
    Case(
        "progress without sse accept",
        rpc(
            "tools/call",
            {"name": "progress", "arguments": {"steps": 2, "interval_ms": 5}, "_meta": {"progressToken": 1}},
        ),
        200,
        None,
        "json",
        headers=(("accept", "application/json"),),
    ),
    # Accept is read as RFC 9110 reads it (``_accept.py``, ``McpHeaders::accepts_sse``): media
    # types without regard to case, a weight of 0 rules a type out, wildcards count for a POST.
    Case(
        "progress with sse accept in capitals",
        PROGRESS,
        200,
        None,
        "sse",
        headers=(("accept", "Application/JSON, TEXT/EVENT-STREAM"),),
    ),
    Case("progress with sse by wildcard", PROGRESS, 200, None, "sse", headers=(("accept", "text/*"),)),
    Case(
        "progress with sse weighed 0",
        PROGRESS,
        200,
        None,
        "json",
        headers=(("accept", "application/json, text/event-stream;q=0"),),
    ),
    Case(
        "progress with sse ruled out by its type",
        PROGRESS,
        200,
        None,
        "json",
        headers=(("accept", "text/*;q=0, */*"),),
    ),
    Case("notification", b'{"jsonrpc":"2.0","method":"notifications/initialized"}', 202, None, "empty"),
    Case("client response", b'{"jsonrpc":"2.0","id":5,"result":{}}', 202, None, "empty"),
    Case(
        "bad protocol version",
        rpc("ping"),
        400,
        -32000,
        "json",
        headers=(("mcp-protocol-version", "1999-01-01"),),
    ),
    Case("missing session id", rpc("tools/list"), 400, -32000, "json", session="none"),
    Case(
        "missing session on notification",
        b'{"jsonrpc":"2.0","method":"notifications/initialized"}',
        400,
        -32000,
        "json",
        session="none",
    ),
    Case("unknown session id", rpc("tools/list"), 404, -32001, "json", session="unknown"),
    Case("unknown virtual server", rpc("ping"), 404, -32001, "json", path="/servers/nope/mcp"),
    Case(
        "body over the limit",
        rpc("tools/call", {"name": "echo", "arguments": {"text": "x" * MAX_MESSAGE_BYTES}}),
        413,
        -32600,
        "json",
    ),
    Case("initialize", INIT, 200, None, "json", session="none"),
    Case(
        "GET without sse accept",
        None,
        405,
        None,
        "empty",
        method="GET",
        headers=(("accept", "application/json"),),
    ),
    Case(
        "GET with sse only by wildcard",
        None,
        405,
        None,
        "empty",
        method="GET",
        headers=(("accept", "*/*"),),
    ),
    Case(
        "GET with sse weighed 0",
        None,
        405,
        None,
        "empty",
        method="GET",
        headers=(("accept", "text/event-stream; Q=0"),),
    ),
    Case(
        "GET unknown session in capitals",
        None,
        404,
        -32001,
        "json",
        method="GET",
        session="unknown",
        headers=(("accept", "Text/Event-Stream"),),
    ),
    Case(
        "GET unknown session",
        None,
        404,
        -32001,
        "json",
        method="GET",
        session="unknown",
        headers=(("accept", "text/event-stream"),),
    ),
    Case("DELETE without session", None, 400, -32000, "json", method="DELETE", session="none"),
    Case("DELETE unknown session", None, 404, -32001, "json", method="DELETE", session="unknown"),
]


def shape_of(response: httpx.Response) -> str:
    if not response.content:
        return "empty"
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        return "sse"
    return "json"


@pytest.fixture
async def session(gw: Gateway, http: httpx.AsyncClient) -> str:
    return await gw.initialize(http, gw.token())


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
async def test_parity(gw: Gateway, http: httpx.AsyncClient, session: str, case: Case) -> None:
    token = gw.token()
    headers = {"authorization": f"Bearer {token}", "accept": ACCEPT, "content-type": "application/json"}
    if case.session == "valid":
        headers["mcp-session-id"] = session
        headers["mcp-protocol-version"] = PROTOCOL
    elif case.session == "unknown":
        headers["mcp-session-id"] = "0123456789abcdef0123456789abcdef"
    headers.update(dict(case.headers))
    r = await http.request(case.method, f"{gw.base}{case.path}", content=case.body, headers=headers)
    assert (r.status_code, shape_of(r)) == (case.status, case.shape), r.text[:500]
    if case.shape == "json":
        body = r.json()
        assert body["jsonrpc"] == "2.0"
        code = body["error"]["code"] if "error" in body else None
        assert code == case.code, body
        if code is not None:
            assert isinstance(body["error"]["message"], str)
            assert set(body) == {"jsonrpc", "id", "error"}
        else:
            assert set(body) == {"jsonrpc", "id", "result"}
    if case.name == "initialize":
        assert r.headers["mcp-session-id"]
        assert r.headers["content-type"].startswith("application/json")
    if case.status == 405:
        assert r.headers["allow"] == "POST, DELETE"
    if case.shape == "sse":
        events = [json.loads(x[6:]) for x in r.text.splitlines() if x.startswith("data: ")]
        assert "result" in events[-1]
        assert all("method" in e for e in events[:-1])


LONG_NAME = "x" * 200


@pytest.mark.parametrize(
    ("method", "params", "message"),
    [
        ("tools/call", {"name": LONG_NAME, "arguments": {}}, "Unknown tool: "),
        ("prompts/get", {"name": LONG_NAME}, "Unknown prompt: "),
        ("resources/read", {"uri": LONG_NAME}, "Resource not found: "),
        (LONG_NAME, None, "Method not found: "),
    ],
    ids=["tool", "prompt", "resource", "method"],
)
async def test_a_long_unknown_name_is_echoed_cut_to_128_bytes(
    gw: Gateway, http: httpx.AsyncClient, session: str, method: str, params: Any, message: str
) -> None:
    """Every mode echoes a caller's unknown name as the runtime does: its first 128 bytes, then ``...``."""
    headers = gw.headers(gw.token(), session)
    r = await http.post(gw.url, content=rpc(method, params, rid=9), headers=headers)
    assert r.status_code == 200, r.text[:500]
    assert r.json()["error"]["message"] == message + "x" * 128 + "..."
