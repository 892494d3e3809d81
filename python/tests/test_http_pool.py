"""The HTTP/JSON backends' pool of runtime connections: a request that finds no free connection.

Both clients (aiohttp, httpx) are checked. The pool is sized to the gateway's concurrency limit
(``_http_backend``'s docstring), so through the gateway an admitted request never waits for a
connection. Here the backend is driven directly, against the session's real runtime, with a pool
of one connection held by an open GET stream: the next request waits at most ``POOL_TIMEOUT_S``
and is refused with :class:`~mcp_gateway.RuntimeBusyError` (the app answers it 503 with
``Retry-After: 1``), not left waiting for the request timeout and answered 504.
"""

from __future__ import annotations

import json

import pytest

from conftest import INITIALIZE, Runtimes, socket_backend
from mcp_gateway import AuthContext, McpRequest, RuntimeBusyError

ALICE = AuthContext(email="pool@example.com", teams=())


def post(body: object, session: str | None = None) -> McpRequest:
    return McpRequest(
        method="POST",
        server_id=None,
        auth=ALICE,
        request_id="t",
        body=json.dumps(body).encode(),
        session_id=session,
        accept="application/json, text/event-stream",
        content_type="application/json",
    )


@pytest.mark.parametrize("mode", ["http", "http-httpx"])
async def test_a_request_that_finds_every_pooled_connection_taken_is_busy(
    mode: str, runtimes: Runtimes
) -> None:
    rt = runtimes.get()
    backend = socket_backend(mode, rt, 30.0, max_connections=1)
    await backend.start()
    try:
        opened = await backend.handle(post(INITIALIZE))
        assert opened.status == 200
        await opened.aclose()
        session = opened.header("mcp-session-id")
        assert session is not None
        stream = await backend.handle(
            McpRequest(
                method="GET",
                server_id=None,
                auth=ALICE,
                request_id="t",
                session_id=session,
                accept="text/event-stream",
            )
        )
        try:
            assert stream.status == 200
            assert stream.stream is not None  # open: it holds the only connection
            with pytest.raises(RuntimeBusyError):
                await backend.handle(post({"jsonrpc": "2.0", "id": 1, "method": "ping"}, session))
        finally:
            await stream.aclose()
        answer = await backend.handle(post({"jsonrpc": "2.0", "id": 2, "method": "ping"}, session))
        assert answer.status == 200, answer.body
        await answer.aclose()
    finally:
        await backend.aclose()
