"""The runtime goes away: a prompt 502 (JSON-RPC -32000), then recovery without a gateway restart.

Each test gets its own runtime and gateway, so killing them does not disturb the other tests.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import anyio
import httpx
import pytest

from conftest import (
    SECRET,
    SOCKET_MODES,
    Gateway,
    Runtime,
    Runtimes,
    _socket_dir,
    gateway_env,
)
from mcp_gateway.testing import free_port, start_gateway, stop


def assert_unavailable(r: httpx.Response) -> None:
    assert r.status_code == 502, r.text
    body = r.json()
    assert body["error"]["code"] == -32000
    assert body["error"]["message"] == "MCP runtime unavailable"


async def test_runtime_killed_mid_call(own_stack: tuple[Gateway, Runtime], http: httpx.AsyncClient) -> None:
    gw, rt = own_stack
    token = gw.token()
    session = await gw.initialize(http, token)
    call = {
        "jsonrpc": "2.0",
        "id": 3,
        "method": "tools/call",
        "params": {"name": "sleep", "arguments": {"ms": 4000}},
    }
    result: dict[str, object] = {}

    async def slow_call() -> None:
        result["response"] = await http.post(gw.url, json=call, headers=gw.headers(token, session))
        result["at"] = time.monotonic()

    async with anyio.create_task_group() as tg:
        tg.start_soon(slow_call)
        await anyio.sleep(0.5)
        killed_at = time.monotonic()
        rt.kill()
    response = result["response"]
    assert isinstance(response, httpx.Response)
    assert_unavailable(response)
    assert float(result["at"]) - killed_at < 1.0  # type: ignore[arg-type]

    # While it is down: 502 at once, for every method.
    started = time.monotonic()
    r = await http.post(
        gw.url, json={"jsonrpc": "2.0", "id": 4, "method": "ping"}, headers=gw.headers(token, session)
    )
    assert_unavailable(r)
    assert time.monotonic() - started < 1.0
    admin = gw.token("admin@example.com", is_admin=True, teams=None)
    # Alive (liveness, 200) but degraded, and not ready (docs/operations.md, Health).
    health = await http.get(f"{gw.base}/health", headers={"authorization": f"Bearer {admin}"})
    assert health.status_code == 200
    assert health.json()["status"] == "degraded"
    assert health.json()["runtime"]["reachable"] is False
    ready = await http.get(f"{gw.base}/ready")
    assert ready.status_code == 503
    assert ready.json() == {"status": "not_ready", "reason": "runtime_unavailable"}

    # Back: the gateway reconnects by itself; the old session died with the runtime.
    rt.restart()
    deadline = time.monotonic() + 10
    while True:
        r = await http.post(
            gw.url, json={"jsonrpc": "2.0", "id": 5, "method": "ping"}, headers=gw.headers(token, session)
        )
        if r.status_code != 502 or time.monotonic() > deadline:
            break
        await anyio.sleep(0.1)
    assert r.status_code == 404, r.text
    new_session = await gw.initialize(http, token)
    r = await http.post(
        gw.url,
        json={
            "jsonrpc": "2.0",
            "id": 6,
            "method": "tools/call",
            "params": {"name": "echo", "arguments": {"text": "back"}},
        },
        headers=gw.headers(token, new_session),
    )
    assert r.status_code == 200
    assert r.json()["result"]["content"][0]["text"] == "back"
    assert (await http.get(f"{gw.base}/health")).status_code == 200
    assert (await http.get(f"{gw.base}/ready")).json() == {"status": "ready"}


async def test_runtime_not_running_at_start(workdir: Path, catalog: Path, http: httpx.AsyncClient) -> None:
    """A gateway whose runtime socket does not exist answers 502 promptly (no hang, no traceback)."""
    sockets = _socket_dir()
    for mode in SOCKET_MODES:
        env = {
            "JWT_SECRET_KEY": SECRET,
            "MCP_RUST_GRPC_UDS" if mode == "grpc" else "MCP_RUST_UDS": str(sockets / f"{mode}.sock"),
            "MCP_RUST_HTTP_CLIENT": "httpx" if mode == "http-httpx" else "aiohttp",
        }
        port = free_port()
        process = start_gateway(env, port, log=workdir / f"gateway-nort-{mode}.log")
        try:
            gw = Gateway(mode, f"http://127.0.0.1:{port}", SECRET, [process])
            started = time.monotonic()
            r = await http.post(
                gw.url, json={"jsonrpc": "2.0", "id": 1, "method": "ping"}, headers=gw.headers(gw.token())
            )
            assert_unavailable(r)
            assert time.monotonic() - started < 1.0
        finally:
            stop(process)


async def test_client_disconnect_cancels_the_call(
    gw: Gateway, http: httpx.AsyncClient, workdir: Path
) -> None:
    """A client that goes away mid-call: the upstream call is cancelled (the fixture counts sleeps).

    It is a normal event: logged at info, with no error and no traceback (in gRPC mode a unary
    call's cancellation used to escape as an application error).
    """
    log = workdir / f"gateway-{gw.mode}.log"
    token = gw.token()
    session = await gw.initialize(http, token)
    logged = log.stat().st_size
    # The fixture is shared: count relative to the sleeps other tests left running.
    before = await gw.inflight(http, token, session)
    call = {
        "jsonrpc": "2.0",
        "id": 9,
        "method": "tools/call",
        "params": {"name": "sleep", "arguments": {"ms": 30000}},
    }
    async with httpx.AsyncClient(timeout=httpx.Timeout(30.0, read=1.0)) as impatient:
        with pytest.raises(httpx.ReadTimeout):
            await impatient.post(gw.url, json=call, headers=gw.headers(token, session))
    deadline = time.monotonic() + 5
    while (count := await gw.inflight(http, token, session)) > before and time.monotonic() < deadline:
        await anyio.sleep(0.1)
    assert count <= before
    await anyio.sleep(0.5)
    with log.open("rb") as f:
        f.seek(logged)
        text = f.read().decode(errors="replace")
    assert "client disconnected: POST" in text, text
    for word in ("Traceback", "CancelledError", " ERROR "):
        assert word not in text, text


async def test_runtime_killed_during_a_stream_ends_it_with_an_error_event(
    own_stack: tuple[Gateway, Runtime], http: httpx.AsyncClient
) -> None:
    """The head was sent, so the request's answer is the stream's last event: the 502's error."""
    gw, rt = own_stack
    token = gw.token()
    session = await gw.initialize(http, token)
    call = {
        "jsonrpc": "2.0",
        "id": 31,
        "method": "tools/call",
        "params": {
            "name": "progress",
            "arguments": {"steps": 1000, "interval_ms": 50},
            "_meta": {"progressToken": "killed"},
        },
    }
    events: list[dict[str, object]] = []
    with anyio.fail_after(20):
        async with http.stream("POST", gw.url, json=call, headers=gw.headers(token, session)) as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            async for line in r.aiter_lines():
                if line.startswith("data:"):
                    events.append(json.loads(line[5:]))
                    if len(events) == 1:
                        rt.kill()
    assert events[0].get("method") == "notifications/progress", events[0]
    assert events[-1] == {
        "jsonrpc": "2.0",
        "id": 31,
        "error": {"code": -32000, "message": "MCP runtime unavailable"},
    }, events[-1]


@pytest.mark.parametrize("mode", SOCKET_MODES)
async def test_request_timeout_is_the_deadline(
    mode: str, workdir: Path, catalog: Path, runtimes: Runtimes, http: httpx.AsyncClient
) -> None:
    """``MCP_GATEWAY_REQUEST_TIMEOUT_S`` bounds a call: gRPC deadline / httpx timeout, then 504."""
    rt = runtimes.get()
    env = {**gateway_env(mode, catalog, rt), "MCP_GATEWAY_REQUEST_TIMEOUT_S": "1"}
    port = free_port()
    process = start_gateway(env, port, log=workdir / f"gateway-deadline-{mode}.log")
    try:
        gw = Gateway(mode, f"http://127.0.0.1:{port}", SECRET, [process])
        token = gw.token()
        session = await gw.initialize(http, token)
        call = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "tools/call",
            "params": {"name": "sleep", "arguments": {"ms": 10000}},
        }
        started = time.monotonic()
        r = await http.post(gw.url, json=call, headers=gw.headers(token, session))
        elapsed = time.monotonic() - started
        assert r.status_code == 504, r.text
        assert r.json()["error"]["code"] == -32001
        # Cut by the 1 s deadline, long before the 10 s sleep ends (a bound, not a timing).
        assert 0.9 < elapsed < 8
    finally:
        stop(process)
