"""The same end-to-end suite in every mode, through the official mcp SDK client."""

from __future__ import annotations

import json
import re

import httpx
import mcp_types as types
import pytest
from mcp.shared.exceptions import MCPError

from conftest import INITIALIZE, Gateway

PUBLIC_TOOLS = {"echo", "payload", "sleep", "inflight", "progress", "fail"}


def names(items: list[types.Tool] | list[types.Prompt]) -> set[str]:
    return {item.name for item in items}


async def test_health_reports_mode(gw: Gateway, http: httpx.AsyncClient) -> None:
    admin = gw.token("admin@example.com", is_admin=True, teams=None)
    r = await http.get(f"{gw.base}/health", headers={"authorization": f"Bearer {admin}"})
    assert r.status_code == 200, r.text
    health = r.json()
    assert isinstance(health["runtime"]["open_sessions"], int)
    mode, _, client = gw.mode.partition("-")
    assert health["mode"] == mode
    if mode == "http":
        assert health["http_client"] == (client or "aiohttp")
    assert health["status"] == "ok"
    assert health["runtime"]["reachable"] is True
    if gw.mode != "python":
        assert health["runtime"]["contract_version"].startswith("1.")
        assert health["runtime"]["runtime_version"]
        # The runtime's state store, from `/health` or (contract 1.2) `HealthCheck`.
        assert health["runtime"]["state_store"] == {"kind": "memory", "reachable": True}


async def test_health_tells_only_the_status_to_anyone_but_an_admin(
    gw: Gateway, http: httpx.AsyncClient
) -> None:
    """Open session counts, versions and the mode are for an admin token only."""
    for token in (None, "not-a-token", gw.token(), gw.token(teams=None)):
        headers = {"authorization": f"Bearer {token}"} if token else {}
        r = await http.get(f"{gw.base}/health", headers=headers)
        assert r.status_code == 200, r.text
        assert r.json() == {"status": "ok"}, (token, r.text)


async def test_initialize_and_tools(gw: Gateway) -> None:
    async with gw.client(gw.token()) as client:
        assert client.protocol_version in ("2025-11-25", "2025-06-18", "2025-03-26")
        assert client.server_capabilities.tools is not None
        tools = await client.list_tools()
        assert names(tools.tools) >= PUBLIC_TOOLS
        echo = await client.call_tool("echo", {"text": "hello"})
        assert echo.is_error is not True
        assert echo.content[0].text == "hello"  # type: ignore[union-attr]


async def test_one_mib_payload(gw: Gateway) -> None:
    async with gw.client(gw.token()) as client:
        result = await client.call_tool("payload", {"size_bytes": 1024 * 1024})
        assert len(result.content[0].text) == 1024 * 1024  # type: ignore[union-attr]


async def test_progress_notifications_arrive_before_result(gw: Gateway) -> None:
    seen: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total, message))

    logs: list[types.LoggingMessageNotificationParams] = []

    async def on_log(params: types.LoggingMessageNotificationParams) -> None:
        logs.append(params)

    async with gw.client(gw.token(), logging_callback=on_log) as client:
        result = await client.call_tool(
            "progress", {"steps": 4, "interval_ms": 20}, progress_callback=on_progress
        )
        count_at_result = len(seen)
    assert result.is_error is not True
    assert count_at_result == 4, seen
    assert [p for p, _, _ in seen] == [1.0, 2.0, 3.0, 4.0]
    assert len(logs) == 1


async def test_progress_stream_order_raw(gw: Gateway, http: httpx.AsyncClient) -> None:
    """On the wire: an SSE stream whose events are the progress and logging notifications, then the result."""
    token = gw.token()
    session = await gw.initialize(http, token)
    body = {
        "jsonrpc": "2.0",
        "id": 7,
        "method": "tools/call",
        "params": {
            "name": "progress",
            "arguments": {"steps": 3, "interval_ms": 20},
            "_meta": {"progressToken": "p1"},
        },
    }
    async with http.stream("POST", gw.url, json=body, headers=gw.headers(token, session)) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        raw = (await r.aread()).decode()
    events = [json.loads(line[6:]) for line in raw.splitlines() if line.startswith("data: ")]
    methods = [e.get("method", "result") for e in events]
    assert methods[-1] == "result", methods
    assert methods.count("notifications/progress") == 3, methods
    assert "notifications/message" in methods
    assert all(
        e["params"]["progressToken"] == "p1" for e in events if e.get("method") == "notifications/progress"
    )
    assert events[-1]["id"] == 7
    assert events[-1]["result"]["content"][0]["text"] == "done 3 steps"


async def test_progress_token_spelled_with_an_escape_streams(gw: Gateway, http: httpx.AsyncClient) -> None:
    r"""``"progress\u0054oken"`` is the key ``progressToken``: the progress arrives as a stream.

    The first progress notification must arrive while the upstream call still runs (the
    fixture counts it in ``inflight``), not in one burst with the result.
    """
    token = gw.token()
    session = await gw.initialize(http, token)
    before = await gw.inflight(http, token, session)
    body = (
        b'{"jsonrpc":"2.0","id":8,"method":"tools/call","params":{"name":"progress",'
        b'"arguments":{"steps":40,"interval_ms":100},"_meta":{"progress\\u0054oken":"esc"}}}'
    )
    headers = gw.headers(token, session)
    async with http.stream("POST", gw.url, content=body, headers=headers) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        events: list[dict[str, object]] = []
        during = None
        async for line in r.aiter_lines():
            if not line.startswith("data: "):
                continue
            events.append(json.loads(line[6:]))
            if during is None and events[-1].get("method") == "notifications/progress":
                during = await gw.inflight(http, token, session)
    assert during is not None, "no progress notification"
    assert during > before, f"progress came in one burst: {during} running"
    methods = [e.get("method", "result") for e in events]
    assert methods.count("notifications/progress") == 40, methods
    assert methods[-1] == "result", methods


async def test_resources(gw: Gateway) -> None:
    async with gw.client(gw.token()) as client:
        resources = await client.list_resources()
        assert "fixture://readme" in {str(r.uri) for r in resources.resources}
        readme = await client.read_resource("fixture://readme")
        assert readme.contents[0].text == "MCP fixture server"  # type: ignore[union-attr]
        templates = await client.list_resource_templates()
        assert "fixture://items/{id}" in {t.uri_template for t in templates.resource_templates}
        item = await client.read_resource("fixture://items/42")
        assert item.contents[0].text == "item 42"  # type: ignore[union-attr]
        with pytest.raises(MCPError) as err:
            await client.read_resource("nowhere://x")
        assert err.value.code == -32002


async def test_prompts(gw: Gateway) -> None:
    async with gw.client(gw.token()) as client:
        prompts = await client.list_prompts()
        assert "greet" in names(prompts.prompts)
        greeting = await client.get_prompt("greet", {"name": "Bob"})
        assert greeting.messages[0].content.text == "Hello, Bob!"  # type: ignore[union-attr]


async def test_delete_then_reuse_is_404(gw: Gateway, http: httpx.AsyncClient) -> None:
    token = gw.token()
    session = await gw.initialize(http, token)
    r = await http.delete(gw.url, headers=gw.headers(token, session))
    assert r.status_code == 200
    assert r.content == b""
    ping = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
    r = await http.post(gw.url, json=ping, headers=gw.headers(token, session))
    assert r.status_code == 404
    assert r.json()["error"]["code"] == -32001
    r = await http.delete(gw.url, headers=gw.headers(token, session))
    assert r.status_code == 404


async def test_virtual_server_scope(gw: Gateway, http: httpx.AsyncClient) -> None:
    async with gw.client(gw.token(), path="/servers/echo-only/mcp") as client:
        assert names((await client.list_tools()).tools) == {"echo"}
        assert names((await client.list_prompts()).prompts) == {"greet"}
        assert {str(r.uri) for r in (await client.list_resources()).resources} == {"fixture://readme"}
        assert (await client.list_resource_templates()).resource_templates == []
        assert (await client.call_tool("echo", {"text": "x"})).content[0].text == "x"  # type: ignore[union-attr]
        with pytest.raises(MCPError) as err:
            await client.call_tool("payload", {"size_bytes": 1})
        assert err.value.code == -32602
    r = await http.post(
        f"{gw.base}/servers/nope/mcp",
        json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
        headers=gw.headers(gw.token()),
    )
    assert r.status_code == 404
    assert r.json()["error"]["code"] == -32001


async def test_session_is_bound_to_its_scope(gw: Gateway, http: httpx.AsyncClient) -> None:
    token = gw.token()
    session = await gw.initialize(http, token, path="/servers/echo-only/mcp")
    ping = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
    r = await http.post(gw.url, json=ping, headers=gw.headers(token, session))
    assert r.status_code == 404


@pytest.mark.parametrize(
    ("who", "claims", "expected"),
    [
        ("alice", {"teams": ["alpha"]}, PUBLIC_TOOLS | {f"alpha_{t}" for t in PUBLIC_TOOLS}),
        ("bob", {"teams": ["beta"]}, PUBLIC_TOOLS | {f"beta_{t}" for t in PUBLIC_TOOLS}),
        (
            "both",
            {"teams": ["alpha", "beta"]},
            PUBLIC_TOOLS | {f"{p}_{t}" for p in ("alpha", "beta") for t in PUBLIC_TOOLS},
        ),
        (
            "admin",
            {"teams": None, "is_admin": True},
            PUBLIC_TOOLS | {f"{p}_{t}" for p in ("alpha", "beta") for t in PUBLIC_TOOLS},
        ),
        (
            "admin-alpha",
            {"teams": ["alpha"], "is_admin": True},
            PUBLIC_TOOLS | {f"alpha_{t}" for t in PUBLIC_TOOLS},
        ),
        ("public", {"teams": []}, PUBLIC_TOOLS),
        ("no-teams-claim", {"teams": None}, PUBLIC_TOOLS),
    ],
)
async def test_visibility(gw: Gateway, who: str, claims: dict[str, object], expected: set[str]) -> None:
    token = gw.token(f"{who}@example.com", **claims)
    async with gw.client(token) as client:
        tools = names((await client.list_tools()).tools)
        assert tools == expected
        prompts = names((await client.list_prompts()).prompts)
        assert ("alpha_greet" in prompts) == ("alpha_echo" in expected)
        # A tool the caller cannot see is answered exactly like one that does not exist.
        hidden = "beta_echo" if "beta_echo" not in expected else "nonexistent_tool"
        with pytest.raises(MCPError) as err:
            await client.call_tool(hidden, {"text": "x"})
        with pytest.raises(MCPError) as err_missing:
            await client.call_tool("nonexistent_tool", {"text": "x"})
        assert err.value.code == err_missing.value.code == -32602


async def test_session_of_another_user_is_refused(gw: Gateway, http: httpx.AsyncClient) -> None:
    session = await gw.initialize(http, gw.token("alice@example.com"))
    mallory = gw.token("mallory@example.com", teams=["alpha"])
    ping = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    r = await http.post(gw.url, json=ping, headers=gw.headers(mallory, session))
    assert r.status_code == 404
    assert r.json()["error"]["code"] == -32001
    r = await http.delete(gw.url, headers=gw.headers(mallory, session))
    assert r.status_code == 404
    # The owner still has it.
    r = await http.post(gw.url, json=ping, headers=gw.headers(gw.token("alice@example.com"), session))
    assert r.status_code == 200


async def test_forged_internal_headers_are_ignored(gw: Gateway, http: httpx.AsyncClient) -> None:
    import base64

    forged = base64.urlsafe_b64encode(
        json.dumps({"email": "root@example.com", "is_admin": True}).encode()
    ).decode()
    token = gw.token("eve@example.com", teams=[])
    extra = {"x-contextforge-auth-context": forged, "x-contextforge-server-id": "echo-only"}
    r = await http.post(gw.url, json=INITIALIZE, headers=gw.headers(token, **extra))
    assert r.status_code == 200
    session = r.headers["mcp-session-id"]
    r = await http.post(
        gw.url,
        json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
        headers=gw.headers(token, session, **extra),
    )
    assert r.status_code == 200
    tools = {t["name"] for t in r.json()["result"]["tools"]}
    assert tools == PUBLIC_TOOLS


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer", "Bearer not.a.jwt", "Basic YWxpY2U6cHc=", "forged", "expired"],
)
async def test_unauthenticated_is_401(
    gw: Gateway, http: httpx.AsyncClient, authorization: str | None
) -> None:
    from mcp_gateway import mint_token

    if authorization == "forged":
        authorization = "Bearer " + mint_token("some-other-key-of-enough-length-000000", "alice@example.com")
    elif authorization == "expired":
        authorization = "Bearer " + gw.token(ttl_s=-60)
    headers = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
    if authorization:
        headers["authorization"] = authorization
    ping = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
    for method in ("POST", "GET", "DELETE"):
        r = await http.request(method, gw.url, json=ping if method == "POST" else None, headers=headers)
        assert r.status_code == 401, (method, r.text)
        assert r.headers["www-authenticate"].startswith("Bearer")
        assert r.json()["error"]["code"] == -32001


# RFC 6750, section 3: error-description values are %x20-21 / %x23-5B / %x5D-7E, quoted.
_CHALLENGE = re.compile(
    r'Bearer realm="mcp-gateway", error="invalid_token", error_description="[\x20\x21\x23-\x5b\x5d-\x7e]*"'
)


async def test_a_token_without_sub_gets_a_well_formed_challenge(gw: Gateway, http: httpx.AsyncClient) -> None:
    import jwt

    from conftest import SECRET

    token = jwt.encode({"teams": []}, SECRET, algorithm="HS256")
    r = await http.post(gw.url, json={"jsonrpc": "2.0", "id": 1, "method": "ping"}, headers=gw.headers(token))
    assert r.status_code == 401, r.text
    challenge = r.headers["www-authenticate"]
    assert _CHALLENGE.fullmatch(challenge), challenge
    assert "'sub'" in challenge, challenge


async def test_sdk_client_without_token_fails(gw: Gateway) -> None:
    with pytest.raises(Exception):  # noqa: B017, PT011 - the SDK surfaces the 401 its own way
        async with gw.client(None) as client:
            await client.list_tools()


async def test_get_stream_opens(gw: Gateway, http: httpx.AsyncClient) -> None:
    token = gw.token()
    session = await gw.initialize(http, token)
    # Media types compare without regard to case (RFC 9110, 8.3.1), as every mode reads them.
    for accept in ("text/event-stream", "Application/JSON, TEXT/EVENT-STREAM;q=0.5"):
        headers = gw.headers(token, session, accept=accept)
        async with http.stream("GET", gw.url, headers=headers) as r:
            assert r.status_code == 200, accept
            assert r.headers["content-type"].startswith("text/event-stream")
    r = await http.get(gw.url, headers=gw.headers(token, session, accept="application/json"))
    assert r.status_code == 405
    assert r.headers["allow"] == "POST, DELETE"
    await http.delete(gw.url, headers=gw.headers(token, session))
