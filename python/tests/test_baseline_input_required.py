"""MCP 2026-07-28 multi-round-trip requests (SEP-2322) through the Python baseline.

Two upstreams built with the official Python SDK (``sdk_mrtr_server.py``) behind one baseline
gateway: ``m_`` speaks both eras, ``l_`` only 2025-11-25 (it refuses any other version with
HTTP 400). A 2026-07-28 client gets ``m_confirm``'s ``input_required`` result unchanged,
fulfils it and retries with ``inputResponses`` and the echoed ``requestState``, which reach the
same upstream; a tampered ``requestState`` is the upstream's to refuse. A 2025-11-25 client
calling the same tool at the same time is asked mid-call as before and never sees
``input_required``. A tool of the 2025-only upstream works for a 2026 client, and when it asks
that client something mid-call, the ask is refused to the upstream with a JSON-RPC error
(-32601), which the upstream's SDK makes the call's error answer to the client. Last, an
upstream of 2026-07-28 whose results lack ``resultType`` (the fixture's conformance tools).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import httpx2
import mcp_types as types
import pytest
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from conftest import SECRET, Gateway, gateway_env
from mcp_gateway.testing import free_port, start_fixture, start_gateway, stop
from test_server_everything import _wait_port

SERVER = Path(__file__).with_name("sdk_mrtr_server.py")
V2026 = "2026-07-28"


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """The baseline gateway (mode python) over the two SDK upstreams, each on a free port."""
    workdir = tmp_path_factory.mktemp("mrtr")
    processes: list[subprocess.Popen[bytes]] = []
    try:
        catalog = ""
        for prefix, mode in (("m_", "both"), ("l_", "legacy")):
            port = free_port()
            with (workdir / f"upstream-{mode}.log").open("ab") as out:
                process = subprocess.Popen(
                    [sys.executable, str(SERVER), mode, str(port)], stdout=out, stderr=out
                )
            processes.append(process)
            _wait_port(port, process)
            catalog += (
                f'[[upstreams]]\nid = "{mode}"\ntransport = "streamable-http"\n'
                f'url = "http://127.0.0.1:{port}/mcp"\nprefix = "{prefix}"\n'
            )
        path = workdir / "catalog.toml"
        path.write_text(catalog)
        port = free_port()
        processes.append(
            start_gateway(gateway_env("python", path, None), port, log=workdir / "gateway-python.log")
        )
        yield Gateway("python", f"http://127.0.0.1:{port}", SECRET)
    finally:
        for process in reversed(processes):
            stop(process)


def _client(gw: Gateway, mode: str, **kw: Any) -> tuple[httpx2.AsyncClient, Client]:
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {gw.token()}"}, timeout=httpx2.Timeout(30.0))
    return http, Client(streamable_http_client(gw.url, http_client=http), mode=mode, cache=None, **kw)


def _accept(requests: dict[str, Any], content: dict[str, Any]) -> dict[str, Any]:
    return {key: types.ElicitResult(action="accept", content=content) for key in requests}


async def test_input_required_is_relayed_and_the_retry_reaches_the_upstream(baseline: Gateway) -> None:
    http, client = _client(
        baseline,
        V2026,
        elicitation_callback=_never_asked,
        sampling_callback=_never_asked,
        list_roots_callback=_never_asked,
    )
    async with http, client:
        assert client.protocol_version == V2026
        first = await client.session.call_tool("m_confirm", {"text": "deploy"}, allow_input_required=True)
        assert isinstance(first, types.InputRequiredResult), first
        assert first.request_state, first
        (_key, request), *others = first.input_requests.items()
        assert not others
        assert isinstance(request, types.ElicitRequest)
        assert request.params.message == "Proceed with deploy?"
        done = await client.session.call_tool(
            "m_confirm",
            {"text": "deploy"},
            input_responses=_accept(first.input_requests, {"ok": True}),
            request_state=first.request_state,
            allow_input_required=True,
        )
        assert isinstance(done, types.CallToolResult), done
        assert not done.is_error, done
        assert done.content[0].text == "deploy: yes"

        # Two requests in one round, a sampling and the roots, answered together.
        plan = await client.session.call_tool("m_plan", {"goal": "ship"}, allow_input_required=True)
        assert isinstance(plan, types.InputRequiredResult), plan
        kinds = {type(r) for r in plan.input_requests.values()}
        assert kinds == {types.CreateMessageRequest, types.ListRootsRequest}, plan
        answers: dict[str, Any] = {}
        for key, asked in plan.input_requests.items():
            if isinstance(asked, types.CreateMessageRequest):
                answers[key] = types.CreateMessageResult(
                    role="assistant", content=types.TextContent(type="text", text="fast"), model="m"
                )
            else:
                answers[key] = types.ListRootsResult(roots=[types.Root(uri="file:///srv")])
        shipped = await client.session.call_tool(
            "m_plan",
            {"goal": "ship"},
            input_responses=answers,
            request_state=plan.request_state,
            allow_input_required=True,
        )
        assert isinstance(shipped, types.CallToolResult), shipped
        assert shipped.content[0].text == "ship: fast in file:///srv", shipped

        # The SDK client's own driver (call_tool fulfils the requests through its callback).
        http2, driven = _client(baseline, V2026, elicitation_callback=_yes)
        async with http2, driven:
            result = await driven.call_tool("m_confirm", {"text": "again"})
            assert result.content[0].text == "again: yes"

        # prompts/get: the same relay and retry (requestState opaque to the gateway).
        prompt = await client.session.get_prompt("m_approval", {"topic": "merge"}, allow_input_required=True)
        assert isinstance(prompt, types.InputRequiredResult), prompt
        assert set(prompt.input_requests) == {"who"}
        answered = await client.session.get_prompt(
            "m_approval",
            {"topic": "merge"},
            input_responses=_accept(prompt.input_requests, {"name": "ada"}),
            request_state=prompt.request_state,
            allow_input_required=True,
        )
        assert isinstance(answered, types.GetPromptResult), answered
        text = answered.messages[0].content
        assert isinstance(text, types.TextContent)
        assert text.text == "ada approves merge (state prompt:merge)"

        # resources/read of a template's resource: the same again.
        read = await client.session.read_resource("mrtr://vault/gold", allow_input_required=True)
        assert isinstance(read, types.InputRequiredResult), read
        assert set(read.input_requests) == {"pass"}
        opened = await client.session.read_resource(
            "mrtr://vault/gold",
            input_responses={"pass": types.ElicitResult(action="accept", content={"phrase": "sesame"})},
            request_state=read.request_state,
            allow_input_required=True,
        )
        assert isinstance(opened, types.ReadResourceResult), opened
        contents = opened.contents[0]
        assert isinstance(contents, types.TextResourceContents)
        assert contents.text == "gold opened with sesame"


async def test_the_raw_wire_is_relayed_unchanged(baseline: Gateway, http: httpx.AsyncClient) -> None:
    """``resultType``, ``inputRequests`` and ``requestState`` as the upstream wrote them."""
    headers = {
        "authorization": f"Bearer {baseline.token()}",
        "accept": "application/json, text/event-stream",
        "mcp-protocol-version": V2026,
        "mcp-method": "tools/call",
        "mcp-name": "m_confirm",
    }
    meta = {
        "io.modelcontextprotocol/protocolVersion": V2026,
        "io.modelcontextprotocol/clientCapabilities": {"elicitation": {"form": {}}},
    }
    call: dict[str, Any] = {
        "jsonrpc": "2.0",
        "id": 7,
        "method": "tools/call",
        "params": {"name": "m_confirm", "arguments": {"text": "raw"}, "_meta": meta},
    }
    r = await http.post(baseline.url, json=call, headers=headers)
    assert r.status_code == 200, r.text
    assert "mcp-session-id" not in r.headers
    result = r.json()["result"]
    assert result["resultType"] == "input_required", result
    [(key, request)] = result["inputRequests"].items()
    assert request["method"] == "elicitation/create"
    assert request["params"]["requestedSchema"]["properties"]["ok"]["type"] == "boolean"
    state = result["requestState"]
    call["params"]["inputResponses"] = {key: {"action": "accept", "content": {"ok": False}}}
    call["params"]["requestState"] = state
    r = await http.post(baseline.url, json=call, headers=headers)
    assert r.status_code == 200, r.text
    done = r.json()["result"]
    assert done["resultType"] == "complete", done
    assert done["content"][0]["text"] == "raw: no"

    # The capabilities the upstream sees are this client's: one that declared no elicitation
    # is not asked for one, the upstream refuses the call.
    call["params"] = {
        "name": "m_confirm",
        "arguments": {"text": "raw"},
        "_meta": {**meta, "io.modelcontextprotocol/clientCapabilities": {}},
    }
    r = await http.post(baseline.url, json=call, headers=headers)
    answer = r.json()
    assert answer["error"]["code"] == types.MISSING_REQUIRED_CLIENT_CAPABILITY, answer
    assert "elicitation" in answer["error"]["message"], answer


async def test_a_tampered_request_state_is_refused_by_the_upstream(baseline: Gateway) -> None:
    http, client = _client(baseline, V2026, elicitation_callback=_never_asked)
    async with http, client:
        first = await client.session.call_tool("m_confirm", {"text": "x"}, allow_input_required=True)
        assert isinstance(first, types.InputRequiredResult)
        assert first.request_state is not None
        for state in (first.request_state[:-4] + "AAAA", "not a state of that upstream"):
            with pytest.raises(MCPError) as refused:
                await client.session.call_tool(
                    "m_confirm",
                    {"text": "x"},
                    input_responses=_accept(first.input_requests, {"ok": True}),
                    request_state=state,
                    allow_input_required=True,
                )
            # The upstream SDK's own refusal, relayed as it came.
            assert refused.value.code == types.INVALID_PARAMS, refused.value.error
            assert refused.value.error.message == "Invalid or expired requestState"


async def test_a_2025_client_at_the_same_time_is_asked_mid_call(baseline: Gateway) -> None:
    asked: list[str] = []

    async def answer(context: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
        asked.append(params.message)
        return types.ElicitResult(action="accept", content={"ok": True})

    results: dict[str, Any] = {}

    async def legacy() -> None:
        http, client = _client(baseline, "legacy", elicitation_callback=answer)
        async with http, client:
            assert client.protocol_version == "2025-11-25"
            for i in range(3):
                results[f"legacy{i}"] = await client.call_tool("m_confirm", {"text": f"old{i}"})

    async def modern() -> None:
        http, client = _client(baseline, V2026, elicitation_callback=_yes)
        async with http, client:
            for i in range(3):
                results[f"modern{i}"] = await client.call_tool("m_confirm", {"text": f"new{i}"})

    async with anyio.create_task_group() as tg:
        tg.start_soon(legacy)
        tg.start_soon(modern)
    for i in range(3):
        assert results[f"legacy{i}"].content[0].text == f"old{i}: yes"
        assert results[f"modern{i}"].content[0].text == f"new{i}: yes"
    assert asked == [f"Proceed with old{i}?" for i in range(3)]


async def test_a_2025_only_upstream_serves_a_2026_client(baseline: Gateway) -> None:
    http, client = _client(baseline, V2026, elicitation_callback=_yes)
    async with http, client:
        added = await client.call_tool("l_add", {"a": 2, "b": 3})
        assert not added.is_error
        assert added.content[0].text == "5"
        # Its tool asks an elicitation mid-call, which a 2026 client cannot be asked: refused to
        # the upstream with a JSON-RPC error, which its SDK makes the call's error answer.
        with pytest.raises(MCPError) as refused:
            await client.session.call_tool("l_confirm", {"text": "x"}, allow_input_required=True)
        assert refused.value.code == types.METHOD_NOT_FOUND, refused.value.error
        assert refused.value.error.message == (
            "the client of this call speaks MCP 2026-07-28, "
            "which takes no elicitation/create request during a call"
        )
        count = await client.call_tool("l_calls", {})
        assert count.content[0].text == "0"
    # The same tool still works for a 2025 client (the refusal was that call's only).
    http, legacy = _client(baseline, "legacy", elicitation_callback=_yes)
    async with http, legacy:
        result = await legacy.call_tool("l_confirm", {"text": "y"})
        assert result.content[0].text == "y: yes"


async def test_a_result_without_result_type_is_complete(tmp_path: Path) -> None:
    """An upstream that answers ``server/discover`` with 2026-07-28 but leaves ``resultType`` out.

    The fixture's conformance tools did when this was written: the SDK client refuses such a
    result, the baseline takes it as ``"complete"`` (as the runtime does).
    """
    fixture, url = start_fixture("--conformance", log=tmp_path / "fixture.log")
    processes = [fixture]
    try:
        catalog = tmp_path / "catalog.toml"
        catalog.write_text(f'[[upstreams]]\nid = "fixture"\nurl = "{url}"\n')
        port = free_port()
        processes.append(
            start_gateway(gateway_env("python", catalog, None), port, log=tmp_path / "gateway.log")
        )
        gw = Gateway("python", f"http://127.0.0.1:{port}", SECRET)
        http, client = _client(gw, V2026)
        async with http, client:
            for _ in range(2):
                result = await client.call_tool("test_simple_text", {})
                assert result.result_type == "complete"
                assert result.content[0].text == "This is a simple text response for testing."
            prompt = await client.get_prompt("test_simple_prompt")
            assert prompt.messages
    finally:
        for process in reversed(processes):
            stop(process)


async def _yes(context: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
    return types.ElicitResult(action="accept", content={"ok": True})


async def _never_asked(context: Any, params: Any = None) -> Any:
    raise AssertionError("a 2026-07-28 client is never asked mid-call")
