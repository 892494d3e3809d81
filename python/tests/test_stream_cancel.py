"""A client that leaves in the middle of an SSE stream: the upstream call is cancelled.

The public client starts a streaming ``progress`` call (1,000 notifications 50 ms apart, so it
runs for 50 s unless cancelled), reads the SSE stream until the first progress notification,
then closes its connection. The fixture counts its running ``sleep`` and ``progress`` calls
(tool ``inflight``); the count must come back down, in every mode. Speed is measured by the
benchmark: this test polls with a generous bound and prints the time it measured.
"""

from __future__ import annotations

import json
import time
from typing import Any

import anyio
import httpx

from conftest import Gateway

# A progress call that streams for 50 s unless it is cancelled.
LONG_PROGRESS = {
    "jsonrpc": "2.0",
    "id": 21,
    "method": "tools/call",
    "params": {
        "name": "progress",
        "arguments": {"steps": 1000, "interval_ms": 50},
        "_meta": {"progressToken": "leave-midway"},
    },
}
# Generous: the runtime's target is 100 ms; a loaded 2-core machine must not fail the test.
BOUND_S = 10.0


def _message(line: str) -> dict[str, Any] | None:
    """The JSON-RPC message of an SSE ``data:`` line, else ``None``."""
    if not line.startswith("data:"):
        return None
    try:
        value = json.loads(line.removeprefix("data:").strip())
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


async def test_a_client_that_leaves_an_sse_stream_midway_cancels_the_upstream_call(
    gw: Gateway, http: httpx.AsyncClient
) -> None:
    token = gw.token()
    session = await gw.initialize(http, token)

    # The fixture is shared: count relative to the calls other tests left running, once those
    # have ended (a call an earlier test cancelled may still be winding down; if it ended
    # between the two counts, this call would look uncounted).
    settle = time.monotonic()
    while (before := await gw.inflight(http, token, session)) > 0 and time.monotonic() - settle < BOUND_S:
        await anyio.sleep(0.05)
    # Its own client (explicit timeouts: httpx's default 5 s would cut a quiet stream), so that
    # closing it closes the connection the stream runs on.
    async with (
        httpx.AsyncClient(timeout=httpx.Timeout(10.0)) as leaving,
        leaving.stream("POST", gw.url, json=LONG_PROGRESS, headers=gw.headers(token, session)) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        # One iterator, held to the end: breaking out of a loop over a temporary
        # `aiter_lines()` leaves the generator to the garbage collector, whose `aclose` closes the
        # connection at some moment of its choosing, before this test means to leave.
        lines = response.aiter_lines()
        with anyio.fail_after(BOUND_S):
            async for line in lines:
                message = _message(line)
                if message is not None:
                    assert "id" not in message, f"the call ended before it was left: {message}"
                    if message.get("method") == "notifications/progress":
                        break
            else:
                raise AssertionError("the stream ended before a progress notification")
        during = await gw.inflight(http, token, session)
        assert during > before, f"the progress call is not counted: {during} running, {before} before"
    # Leaving the `async with` closed the response and the client, so the connection.
    left = time.monotonic()
    while (count := await gw.inflight(http, token, session)) > before and time.monotonic() - left < BOUND_S:
        await anyio.sleep(0.01)
    waited = time.monotonic() - left
    assert count <= before, f"the upstream progress call still runs {waited:.1f} s after the client left"
    print(f"{gw.mode}: upstream call ended {waited * 1000:.0f} ms after the client left the SSE stream")
