"""Server-to-client requests (sampling, elicitation) relayed during a call, with the SDK client.

The conformance fixture's ``test_sampling`` asks its client ``sampling/createMessage`` and
answers with the reply's text; ``test_elicitation`` asks ``elicitation/create``. Through the
chain, the request must reach the client that made the call (on that call's stream) and its
answer must go back to the upstream. A client that did not declare the capability gets the
tool's error, never another client's answer.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mcp_types as types
import pytest
from mcp.client.session import ClientRequestContext

from conftest import SECRET, Gateway
from mcp_gateway.testing import EDGE_MODES, free_port, stack, start_fixture, stop

MODES = ["python", "http", "grpc", *EDGE_MODES]
# The proxied gRPC mode calls the runtime with unary Invoke unless the call asks for progress;
# Invoke answers only once the call has ended, so the runtime refuses the upstream's request at
# once and the tool answers its error (docs/http-boundary.md, "Server-to-client requests").
NOT_RELAYED = {"grpc"}


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
    if gw.mode in NOT_RELAYED:
        assert result.is_error, result
        assert "sampling failed" in text(result), result
        assert asked == []
        return
    assert not result.is_error, (gw.mode, result)
    assert text(result) == "LLM response: forty-two", gw.mode
    assert asked == ["the answer?"], gw.mode


async def test_elicitation_reaches_the_calling_client(gw: Gateway) -> None:
    async def elicitation(context: ClientRequestContext, params: types.ElicitRequestParams) -> Any:
        return types.ElicitResult(action="accept", content={"username": "alice", "email": "a@example.com"})

    async with gw.client(gw.token(), elicitation_callback=elicitation) as client:
        result = await client.call_tool("test_elicitation", {"message": "who are you?"})
    if gw.mode in NOT_RELAYED:
        assert result.is_error, result
        return
    assert not result.is_error, (gw.mode, result)
    assert "accept" in text(result), (gw.mode, text(result))


async def test_a_client_without_the_capability_is_not_asked(gw: Gateway) -> None:
    async with gw.client(gw.token()) as client:
        result = await client.call_tool("test_sampling", {"prompt": "the answer?"})
    assert result.is_error, (gw.mode, result)
