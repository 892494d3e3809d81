"""The Python baseline's sessions: idle expiry and the per-subject limits, through the gateway.

A gateway of its own in mode ``python`` with small limits from the runtime's variables
(``MCP_RUNTIME_SESSION_IDLE_TTL_S=1``, at most 4 sessions, 2 open GET streams and 2 upstream
calls in flight per subject). Each test uses subjects of its own, so the tests do not share counts.

- a session unused for the TTL is ended and then answers 404; one with an open GET stream is
  not (it is in use);
- the subject's 5th ``initialize`` is 429 (``-32000``, ``Retry-After: 60``) while another
  subject still initializes; a DELETE frees a slot;
- the subject's 3rd open GET stream and 3rd upstream call in flight are 429 (``Retry-After: 1``)
  while another subject's are served; a slot frees when a stream closes or a call ends.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from conftest import INITIALIZE, Gateway, gateway_env
from mcp_gateway.testing import free_port, start_gateway, stop

TTL_S = 1
MAX_SESSIONS = 4
MAX_STREAMS = 2
MAX_CALLS = 2


@pytest.fixture(scope="module")
def baseline(workdir: Path, catalog: Path) -> Iterator[Gateway]:
    """A baseline gateway with a 1 s idle TTL and small per-subject limits."""
    env = gateway_env("python", catalog, None)
    env.update(
        {
            "MCP_RUNTIME_SESSION_IDLE_TTL_S": str(TTL_S),
            "MCP_RUNTIME_MAX_SESSIONS_PER_SUBJECT": str(MAX_SESSIONS),
            "MCP_RUNTIME_MAX_STREAMS_PER_SUBJECT": str(MAX_STREAMS),
            "MCP_RUNTIME_MAX_CALLS_PER_SUBJECT": str(MAX_CALLS),
        }
    )
    port = free_port()
    process = start_gateway(env, port, log=workdir / f"gateway-baseline-sessions-{port}.log")
    try:
        yield Gateway("python", f"http://127.0.0.1:{port}", processes=[process])
    finally:
        stop(process)


def ping(i: int = 1) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": i, "method": "ping"}


def sleep_call(i: int, ms: int) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": i,
        "method": "tools/call",
        "params": {"name": "sleep", "arguments": {"ms": ms}},
    }


def assert_limited(r: httpx.Response, retry_after: str, words: str) -> None:
    assert r.status_code == 429, r.text
    assert r.headers["retry-after"] == retry_after
    error = r.json()["error"]
    assert error["code"] == -32000, r.text
    assert words in error["message"], r.text


async def until(check: Any, what: str, timeout_s: float = 20.0) -> None:
    """Poll ``check`` (an async callable returning bool) until true; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not await check():
        assert time.monotonic() < deadline, f"never: {what}"
        await anyio.sleep(0.1)


@contextlib.asynccontextmanager
async def get_stream(
    gw: Gateway, http: httpx.AsyncClient, token: str, session: str
) -> AsyncIterator[httpx.Response]:
    """An open GET stream of ``session`` (the response head read, the body left open)."""
    headers = gw.headers(token, session, accept="text/event-stream")
    async with http.stream("GET", gw.url, headers=headers) as r:
        yield r


async def test_an_idle_session_is_ended_and_then_not_found(
    baseline: Gateway, http: httpx.AsyncClient
) -> None:
    gw = baseline
    token = gw.token("idle@example.com")
    idle = await gw.initialize(http, token)
    streaming = await gw.initialize(http, token)
    r = await http.post(gw.url, json=ping(), headers=gw.headers(token, idle))
    assert r.status_code == 200, r.text
    async with get_stream(gw, http, token, streaming) as stream:
        assert stream.status_code == 200

        async def gone() -> bool:
            r = await http.post(gw.url, json=ping(2), headers=gw.headers(token, idle))
            if r.status_code == 200:
                # Each ping is a use: wait past the TTL without one before asking again.
                await anyio.sleep(3 * TTL_S)
                return False
            assert r.status_code == 404, r.text
            assert r.json()["error"] == {"code": -32001, "message": "Session not found"}
            return True

        await until(gone, "the idle session ended", timeout_s=30)
        # The session with an open GET stream is in use: still there.
        r = await http.post(gw.url, json=ping(3), headers=gw.headers(token, streaming))
        assert r.status_code == 200, r.text
    # A DELETE of the ended session is 404 too; a new session works.
    r = await http.delete(gw.url, headers=gw.headers(token, idle))
    assert r.status_code == 404, r.text
    fresh = await gw.initialize(http, token)
    r = await http.post(gw.url, json=ping(4), headers=gw.headers(token, fresh))
    assert r.status_code == 200, r.text


async def test_a_subject_past_its_sessions_gets_429_and_others_do_not(
    baseline: Gateway, http: httpx.AsyncClient
) -> None:
    gw = baseline
    token = gw.token("many-sessions@example.com")
    sessions = [await gw.initialize(http, token) for _ in range(MAX_SESSIONS)]
    r = await http.post(gw.url, json=INITIALIZE, headers=gw.headers(token))
    assert_limited(r, "60", f"limit of {MAX_SESSIONS} open sessions")
    assert "mcp-session-id" not in r.headers
    assert r.json()["id"] == INITIALIZE["id"]
    other = gw.token("someone-else@example.com")
    await gw.initialize(http, other)
    # A DELETE frees a slot.
    r = await http.delete(gw.url, headers=gw.headers(token, sessions[0]))
    assert r.status_code == 200, r.text
    await gw.initialize(http, token)
    r = await http.post(gw.url, json=INITIALIZE, headers=gw.headers(token))
    assert_limited(r, "60", "open sessions")


async def test_a_subject_past_its_open_streams_gets_429_and_others_do_not(
    baseline: Gateway, http: httpx.AsyncClient
) -> None:
    gw = baseline
    token = gw.token("many-streams@example.com")
    sessions = [await gw.initialize(http, token) for _ in range(MAX_STREAMS + 1)]
    other = gw.token("streams-neighbour@example.com")
    neighbour = await gw.initialize(http, other)
    async with contextlib.AsyncExitStack() as held:
        for session in sessions[:MAX_STREAMS]:
            stream = await held.enter_async_context(get_stream(gw, http, token, session))
            assert stream.status_code == 200
        async with get_stream(gw, http, token, sessions[-1]) as refused:
            await refused.aread()
            assert_limited(
                refused, "1", f"Too many open streams: this subject already holds its limit of {MAX_STREAMS};"
            )
        async with get_stream(gw, http, other, neighbour) as served:
            assert served.status_code == 200
    # The streams are closed: a slot frees once the gateway has seen them go.

    async def served_again() -> bool:
        async with get_stream(gw, http, token, sessions[-1]) as r:
            if r.status_code == 429:
                return False
            assert r.status_code == 200
            return True

    await until(served_again, "a stream slot freed")


async def test_a_subject_past_its_requests_in_progress_gets_429_and_others_do_not(
    baseline: Gateway, http: httpx.AsyncClient
) -> None:
    gw = baseline
    token = gw.token("many-calls@example.com")
    session = await gw.initialize(http, token)
    other = gw.token("calls-neighbour@example.com")
    neighbour = await gw.initialize(http, other)
    answers: list[httpx.Response] = []
    before = await gw.inflight(http, other, neighbour)

    async def slow(i: int) -> None:
        answers.append(await http.post(gw.url, json=sleep_call(i, 8000), headers=gw.headers(token, session)))

    async with anyio.create_task_group() as tg:
        for i in range(MAX_CALLS):
            tg.start_soon(slow, 10 + i)

        async def running() -> bool:
            # Asked on the neighbour's session: the subject's own requests are what is counted.
            return await gw.inflight(http, other, neighbour) >= before + MAX_CALLS

        await until(running, "both sleeps running at the upstream")
        echo = {
            "jsonrpc": "2.0",
            "id": 5,
            "method": "tools/call",
            "params": {"name": "echo", "arguments": {"text": "x"}},
        }
        r = await http.post(gw.url, json=echo, headers=gw.headers(token, session))
        assert_limited(
            r, "1", f"Too many calls in flight: this subject already holds its limit of {MAX_CALLS};"
        )
        assert r.json()["id"] == 5
        # A call of MCP 2026-07-28 (no session) counts with them, as in the runtime.
        meta = {
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {},
        }
        modern = {**echo, "id": 15, "params": {**echo["params"], "_meta": meta}}
        headers = {
            **gw.headers(token),
            "mcp-protocol-version": "2026-07-28",
            "mcp-method": "tools/call",
            "mcp-name": "echo",
        }
        r = await http.post(gw.url, json=modern, headers=headers)
        assert_limited(
            r, "1", f"Too many calls in flight: this subject already holds its limit of {MAX_CALLS};"
        )
        assert r.json()["id"] == 15
        # What calls no upstream is not counted, as in the runtime.
        r = await http.post(gw.url, json=ping(8), headers=gw.headers(token, session))
        assert r.status_code == 200, r.text
        r = await http.post(gw.url, json=ping(6), headers=gw.headers(other, neighbour))
        assert r.status_code == 200, r.text
    assert [a.status_code for a in answers] == [200] * MAX_CALLS
    r = await http.post(gw.url, json=ping(7), headers=gw.headers(token, session))
    assert r.status_code == 200, r.text


async def test_calls_whose_clients_went_away_give_their_slots_back(
    baseline: Gateway, http: httpx.AsyncClient
) -> None:
    gw = baseline
    token = gw.token("gone-callers@example.com")
    session = await gw.initialize(http, token)
    other = gw.token("gone-callers-neighbour@example.com")
    neighbour = await gw.initialize(http, other)
    before = await gw.inflight(http, other, neighbour)

    async def slow(i: int) -> None:
        await http.post(gw.url, json=sleep_call(i, 30_000), headers=gw.headers(token, session))

    async with anyio.create_task_group() as tg:
        for i in range(MAX_CALLS):
            tg.start_soon(slow, 20 + i)

        async def running() -> bool:
            return await gw.inflight(http, other, neighbour) >= before + MAX_CALLS

        await until(running, "both sleeps running at the upstream")
        tg.cancel_scope.cancel()  # the clients go away
    echo = {
        "jsonrpc": "2.0",
        "id": 9,
        "method": "tools/call",
        "params": {"name": "echo", "arguments": {"text": "x"}},
    }

    async def served() -> bool:
        r = await http.post(gw.url, json=echo, headers=gw.headers(token, session))
        if r.status_code == 429:
            return False
        assert r.status_code == 200, r.text
        assert r.json()["result"]["content"][0]["text"] == "x"
        return True

    await until(served, "the call slots given back after the disconnects")


async def test_a_get_stream_closed_before_its_first_chunk_is_given_back(catalog: Path) -> None:
    """In process: closing an answer stream that was never read ends the SDK's GET stream too.

    The SDK allows one GET stream per session (a second is 409), so a new GET on the same
    session succeeds only if closing the unread one ended it; the subject's stream slot (one
    here) is free again as well.
    """
    from mcp_gateway import AuthContext, McpRequest
    from mcp_gateway._baseline import PythonBaseline, Sessions

    auth = AuthContext(email="unread@example.com", teams=())
    baseline = PythonBaseline(catalog, max_message_bytes=1 << 20, sessions=Sessions(max_streams=1))
    await baseline.start()
    try:
        opened = await baseline.handle(
            McpRequest(
                method="POST", server_id=None, auth=auth, request_id="t", body=json.dumps(INITIALIZE).encode()
            )
        )
        session = opened.header("mcp-session-id")
        assert opened.status == 200
        assert session is not None
        get = McpRequest(
            method="GET",
            server_id=None,
            auth=auth,
            request_id="t",
            session_id=session,
            accept="text/event-stream",
        )
        for _ in range(3):
            stream = await baseline.handle(get)
            assert stream.status == 200, stream.body
            assert stream.stream is not None
            await stream.aclose()  # never read
    finally:
        await baseline.aclose()
