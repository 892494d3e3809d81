"""Pins the library wordings the Python baseline reads (``_baseline.upstream.sdk_failure``).

The mcp SDK client reports four of its own failures only in words (it turns the exceptions into
JSON-RPC error answers): a message over the size cap, its read timeout, an upstream that forgot
the session, a connection that ended under a call (no upstream at all). Each is produced here
for real, against the fixture upstream or the real httpx2
decoder, so that an SDK or httpx2 upgrade that rewords one fails here rather than changing what
a client sees.
"""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import anyio
import httpx2
import pytest
from mcp.shared.exceptions import MCPError
from mcp_types import CONNECTION_CLOSED

from mcp_gateway._baseline.catalog import UpstreamConfig
from mcp_gateway._baseline.upstream import ENVELOPE_SLACK_BYTES, SdkFailure, Upstream, sdk_failure
from mcp_gateway.testing import fixture_binary, start_fixture, stop


@pytest.fixture
async def http2() -> AsyncIterator[httpx2.AsyncClient]:
    async with httpx2.AsyncClient(timeout=httpx2.Timeout(30.0, read=None)) as client:
        yield client


async def test_the_sdk_read_timeout_becomes_the_runtime_timeout_error(
    fixture_url: str, http2: httpx2.AsyncClient
) -> None:
    async with anyio.create_task_group() as tg:
        upstream = Upstream(UpstreamConfig("fx", fixture_url), http2, tg, 0.2)
        with pytest.raises(MCPError) as raised:
            await upstream.call(
                lambda client: client.session.call_tool(
                    "sleep", {"ms": 30_000}, read_timeout_seconds=upstream.timeout_s
                )
            )
        upstream.close()
        tg.cancel_scope.cancel()  # as the baseline's shutdown does
    assert (raised.value.error.code, raised.value.error.message) == (-32001, "Request timed out after 200 ms")


def _fixture_on(port: int) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [str(fixture_binary()), "--listen", f"127.0.0.1:{port}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert process.stdout is not None
    line = process.stdout.readline().decode()
    assert line.startswith("MCP_FIXTURE_URL="), line
    return process


async def test_an_upstream_that_forgot_the_session_is_reconnected_and_the_call_sent_again(
    http2: httpx2.AsyncClient,
) -> None:
    first, url = start_fixture()
    port = urlsplit(url).port
    assert port is not None
    second: subprocess.Popen[bytes] | None = None
    try:
        async with anyio.create_task_group() as tg:
            upstream = Upstream(UpstreamConfig("fx", url), http2, tg, 10.0)
            assert (await upstream.list_all())["tool"]
            # A new server on the same address knows no session: it answers 404 to the old one
            # ("Session terminated", SESSION_GONE), and the call runs again on a new session.
            stop(first)
            second = _fixture_on(port)
            assert (await upstream.list_all())["tool"], "the same call opens a new session"
            # No upstream at all: the runtime's words, no upstream id.
            stop(second)
            with pytest.raises(MCPError) as raised:
                await upstream.list_all()
            assert (raised.value.error.code, raised.value.error.message) == (
                -32603,
                "Upstream server unavailable",
            )
            upstream.close()
            tg.cancel_scope.cancel()  # as the baseline's shutdown does
    finally:
        stop(first)
        stop(second)


def test_the_sdk_words_a_forgotten_session_and_a_closed_connection() -> None:
    assert sdk_failure(MCPError(code=-32600, message="Session terminated"), None) is SdkFailure.SESSION_GONE
    closed = MCPError(code=CONNECTION_CLOSED, message="Connection closed")
    assert sdk_failure(closed, None) is SdkFailure.CONNECTION_CLOSED


async def test_httpx2_words_an_sse_event_over_the_cap_as_the_json_cap_does() -> None:
    cap = 1000
    response = httpx2.Response(
        200,
        headers={"content-type": "text/event-stream"},
        content=b"data: " + b"x" * cap + b"\n\n",
        request=httpx2.Request("GET", "http://upstream/mcp"),
    )
    with pytest.raises(httpx2.SSEError) as raised:
        async for _ in httpx2.EventSource(response, max_event_size=cap):
            pass
    # The SDK's own wording around it (streamable_http's "SSE stream failed: ...").
    error = MCPError(code=CONNECTION_CLOSED, message=f"SSE stream failed: {raised.value}")
    assert sdk_failure(error, cap) is SdkFailure.TOO_LARGE
    assert sdk_failure(error, cap + ENVELOPE_SLACK_BYTES) is None
    assert sdk_failure(MCPError(code=-32001, message="Session not found"), cap) is None
