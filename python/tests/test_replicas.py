"""Three runtime replicas sharing one real Redis, each behind a gateway of its own, in both socket modes.

The shape of ``docs/deployment.md`` "Several replicas sharing Redis": three pods, each a gateway
and its runtime, every runtime started with the same ``--state-url`` (a ``redis-server`` started
here by :func:`mcp_gateway.testing.start_redis` on a Unix socket, killed and removed at the end).
A client goes through any gateway: a session made through one is used through the others, a
stream made through one is resumed through another with ``Last-Event-ID`` (the gRPC mode relays
it as ``McpHeaders.last_event_id``), a ``notifications/cancelled`` or DELETE sent through one
stops the call running behind another, and Redis stopped is a 503 with a JSON-RPC error through
every gateway until it is back.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from conftest import INITIALIZE, RUNTIME_FLAGS, SECRET, Gateway, Runtime, _socket_dir, gateway_env
from mcp_gateway.testing import RedisServer, free_port, start_gateway, start_redis, start_runtime, stop

# The socket modes of the brief: HTTP/JSON (the default client) and gRPC.
REPLICA_MODES = ["http", "grpc"]
# Generous bounds: they prove an answer came, not how fast (the benchmark measures speed).
BOUND_S = 10.0


@dataclass
class Replicas:
    """Three gateways, each with its runtime, on one Redis."""

    redis: RedisServer
    gateways: list[Gateway]
    runtimes: list[Runtime]


@pytest.fixture(scope="module", params=REPLICA_MODES)
def replicas(request: pytest.FixtureRequest, workdir: Path, catalog: Path) -> Iterator[Replicas]:
    mode: str = request.param
    started: list[Any] = []
    with start_redis() as redis:
        try:
            runtimes: list[Runtime] = []
            gateways: list[Gateway] = []
            for i in range(3):
                sockets = _socket_dir()
                log = workdir / f"runtime-replica-{mode}-{i}.log"
                rt = Runtime(None, str(sockets / "http.sock"), str(sockets / "grpc.sock"), catalog, log)
                flags = (*RUNTIME_FLAGS, "--state-url", redis.url, "--state-timeout-ms", "500")
                rt.process = start_runtime(catalog, rt.http_uds, rt.grpc_uds, extra=flags, log=log)
                started.append(rt.process)
                runtimes.append(rt)
                port = free_port()
                env = gateway_env(mode, catalog, rt)
                process = start_gateway(env, port, log=workdir / f"gateway-replica-{mode}-{i}.log")
                started.append(process)
                gateways.append(Gateway(mode, f"http://127.0.0.1:{port}", SECRET, [process]))
            yield Replicas(redis, gateways, runtimes)
        finally:
            for process in reversed(started):
                stop(process)


def _call(request_id: int, name: str, arguments: dict[str, Any], token: str | None = None) -> dict[str, Any]:
    params: dict[str, Any] = {"name": name, "arguments": arguments}
    if token is not None:
        params["_meta"] = {"progressToken": token}
    return {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params}


def _events(text: str) -> list[tuple[str, dict[str, Any]]]:
    """``(id, message)`` of each event of a whole SSE body."""
    events = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        event_id, data = "", []
        for line in block.split("\n"):
            if line.startswith("id:"):
                event_id = line.removeprefix("id:").strip()
            elif line.startswith("data:"):
                data.append(line.removeprefix("data:").lstrip())
        if data:
            events.append((event_id, json.loads("\n".join(data))))
    return events


def _seq(event_id: str) -> int:
    """The ``seq`` of an event id ``<stream>-<ms>-<seq>``."""
    return int(event_id.rsplit("-", 1)[1])


async def _resume(
    http: httpx.AsyncClient, gw: Gateway, token: str, session: str, last: str
) -> httpx.Response:
    """A GET of ``session`` with ``Last-Event-ID: last`` through ``gw``, read whole."""
    headers = gw.headers(token, session, **{"last-event-id": last})
    headers["accept"] = "text/event-stream"
    headers.pop("content-type")
    with anyio.fail_after(30):
        return await http.get(gw.url, headers=headers)


async def _until(what: str, cond: Any) -> None:
    """Polls the async ``cond`` every 50 ms until it holds; fails naming ``what`` after BOUND_S."""
    deadline = time.monotonic() + BOUND_S
    while not await cond():
        assert time.monotonic() < deadline, f"never: {what}"
        await anyio.sleep(0.05)


async def _runtime_store(http: httpx.AsyncClient, gw: Gateway) -> Any:
    """The runtime's state store as the gateway's ``/health`` reports it to an admin."""
    admin = gw.token("admin@example.com", is_admin=True, teams=None)
    r = await http.get(f"{gw.base}/health", headers={"authorization": f"Bearer {admin}"})
    return r.json()["runtime"].get("state_store")


async def test_a_session_made_through_one_gateway_is_used_through_the_others_and_delete_ends_it_on_all(
    replicas: Replicas, http: httpx.AsyncClient
) -> None:
    a, b, c = replicas.gateways
    for gw in replicas.gateways:
        await _until("the store reachable", lambda gw=gw: _store_reachable(http, gw))
    token = a.token()
    session = await a.initialize(http, token)
    for i, gw in enumerate(replicas.gateways):
        r = await http.post(
            gw.url, json=_call(i, "echo", {"text": f"hi {i}"}), headers=gw.headers(token, session)
        )
        assert r.status_code == 200, (gw.base, r.text)
        assert r.json()["result"]["content"][0]["text"] == f"hi {i}"
    # Another subject with this session id, through any gateway: as an unknown session.
    bob = a.token("bob@example.com")
    for gw in replicas.gateways:
        r = await http.post(gw.url, json=_call(9, "echo", {"text": "x"}), headers=gw.headers(bob, session))
        assert r.status_code == 404, r.text
    # DELETE through B ends it through every gateway, also where it is cached.
    r = await http.delete(b.url, headers=b.headers(token, session))
    assert r.status_code == 200, r.text
    for gw in (a, b, c):

        async def gone(gw: Gateway = gw) -> bool:
            r = await http.post(
                gw.url, json=_call(10, "echo", {"text": "x"}), headers=gw.headers(token, session)
            )
            return r.status_code == 404

        await _until("the deleted session answered 404", gone)


async def _store_reachable(http: httpx.AsyncClient, gw: Gateway) -> bool:
    store = await _runtime_store(http, gw)
    return bool(store == {"kind": "redis", "reachable": True})


async def test_a_stream_made_through_one_gateway_is_resumed_through_another(
    replicas: Replicas, http: httpx.AsyncClient
) -> None:
    a, b, c = replicas.gateways
    token = a.token()
    session = await a.initialize(http, token)
    r = await http.post(
        a.url,
        json=_call(3, "progress", {"steps": 3, "interval_ms": 10}, "p"),
        headers=a.headers(token, session),
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/event-stream")
    seen = _events(r.text)
    assert len(seen) >= 4, seen
    assert [_seq(i) for i, _ in seen] == list(range(1, len(seen) + 1))
    assert seen[-1][1]["id"] == 3
    # Resumed after the second event through B, then through C: the rest, once, in order.
    for gw in (b, c):
        resumed = await _resume(http, gw, token, session, seen[1][0])
        assert resumed.status_code == 200, resumed.text
        assert _events(resumed.text) == seen[2:]
    # Another subject's session with these ids, and a malformed id: 400 with nobody's events.
    bob = a.token("bob@example.com")
    bobs = await b.initialize(http, bob)
    for gw in replicas.gateways:
        for last in (seen[0][0], "nonsense", "0123456789abcdef-1-1"):
            refused = await _resume(http, gw, bob, bobs, last)
            assert refused.status_code == 400, (last, refused.text)
            assert "Last-Event-ID" in refused.json()["error"]["message"]
            assert "progress" not in refused.text
        # Her session as Bob: as an unknown session.
        assert (await _resume(http, gw, bob, session, seen[0][0])).status_code == 404


async def test_a_cancel_or_delete_sent_through_another_gateway_stops_the_call(
    replicas: Replicas, http: httpx.AsyncClient
) -> None:
    a, b, c = replicas.gateways
    token = a.token()
    session = await a.initialize(http, token)
    counter = await c.initialize(http, token)
    await _until("no call of another test running", lambda: _idle(http, c, token, counter))
    for request_id, stop_through, what in ((7, b, "notifications/cancelled"), (8, c, "DELETE")):
        answer: list[httpx.Response] = []

        async def call(request_id: int = request_id, answer: list[httpx.Response] = answer) -> None:
            body = _call(request_id, "sleep", {"ms": 60_000})
            answer.append(await http.post(a.url, json=body, headers=a.headers(token, session)))

        async with anyio.create_task_group() as tg:
            tg.start_soon(call)
            await _until("the call runs upstream", lambda: _running(http, b, token, counter))
            if what == "DELETE":
                sent = await http.delete(stop_through.url, headers=stop_through.headers(token, session))
            else:
                note = {
                    "jsonrpc": "2.0",
                    "method": "notifications/cancelled",
                    "params": {"requestId": request_id, "reason": "test"},
                }
                sent = await http.post(
                    stop_through.url, json=note, headers=stop_through.headers(token, session)
                )
            assert sent.status_code in (200, 202), (what, sent.text)
            with anyio.fail_after(BOUND_S):
                while not answer:
                    await anyio.sleep(0.02)
        assert answer[0].json()["error"]["message"] == "Request cancelled", (what, answer[0].text)
        await _until(f"{what}: the upstream call stopped", lambda: _idle(http, c, token, counter))


async def _running(http: httpx.AsyncClient, gw: Gateway, token: str, session: str) -> bool:
    return await gw.inflight(http, token, session) > 0


async def _idle(http: httpx.AsyncClient, gw: Gateway, token: str, session: str) -> bool:
    return await gw.inflight(http, token, session) == 0


async def test_redis_stopped_is_a_503_with_a_json_rpc_error_through_every_gateway_and_recovers(
    replicas: Replicas, http: httpx.AsyncClient
) -> None:
    a, b, c = replicas.gateways
    token = a.token()
    session = await a.initialize(http, token)
    replicas.redis.stop()
    try:
        for gw in replicas.gateways:
            store = await _runtime_store(http, gw)
            assert store is not None
            assert store["kind"] == "redis"

            async def unreachable(gw: Gateway = gw) -> bool:
                return await _runtime_store(http, gw) == {"kind": "redis", "reachable": False}

            await _until("the gateway's /health shows the store unreachable", unreachable)
            # A cached session is not served on trust while the store is down; initialize
            # needs the store too.
            for r in (
                await http.post(
                    gw.url, json=_call(1, "echo", {"text": "x"}), headers=gw.headers(token, session)
                ),
                await http.post(gw.url, json=INITIALIZE, headers=gw.headers(token)),
            ):
                assert r.status_code == 503, r.text
                assert r.headers.get("retry-after") == "1"
                error = r.json()["error"]
                assert isinstance(error["code"], int)
                assert "state store" in error["message"], error
    finally:
        replicas.redis.start()
    # Back (empty: it kept nothing): new sessions work through every gateway, and one made
    # through one is used through another.
    for gw in replicas.gateways:

        async def serves(gw: Gateway = gw) -> bool:
            r = await http.post(gw.url, json=INITIALIZE, headers=gw.headers(token))
            return r.status_code == 200

        await _until("initialize served again", serves)
        await _until("the store reachable", lambda gw=gw: _store_reachable(http, gw))
    fresh = await c.initialize(http, token)
    r = await http.post(a.url, json=_call(2, "echo", {"text": "back"}), headers=a.headers(token, fresh))
    assert r.status_code == 200, r.text
    # The old session was in the Redis that went away: gone everywhere.
    r = await http.post(b.url, json=_call(3, "echo", {"text": "x"}), headers=b.headers(token, session))
    assert r.status_code == 404, r.text


async def test_a_client_that_leaves_a_stream_through_one_gateway_resumes_it_through_another_to_the_answer(
    replicas: Replicas, http: httpx.AsyncClient
) -> None:
    a, b, _ = replicas.gateways
    token = a.token()
    session = await a.initialize(http, token)
    body = _call(12, "progress", {"steps": 20, "interval_ms": 50}, "leave")
    seen: list[str] = []
    # Its own client, closed after three events: the connection goes, the call runs on (with
    # Redis the runtime does not read a disconnection as a cancellation).
    async with (
        httpx.AsyncClient(timeout=httpx.Timeout(10.0)) as leaving,
        leaving.stream("POST", a.url, json=body, headers=a.headers(token, session)) as response,
    ):
        assert response.status_code == 200
        lines = response.aiter_lines()
        with anyio.fail_after(BOUND_S):
            async for line in lines:
                if line.startswith("id:"):
                    seen.append(line.removeprefix("id:").strip())
                    if len(seen) == 3:
                        break
    resumed = await _resume(http, b, token, session, seen[-1])
    assert resumed.status_code == 200, resumed.text
    events = _events(resumed.text)
    assert [_seq(i) for i, _ in events] == list(range(4, 4 + len(events)))
    steps = [m["params"]["progress"] for _, m in events if m.get("method") == "notifications/progress"]
    assert steps == list(range(4, 21))
    assert events[-1][1]["id"] == 12
    assert "result" in events[-1][1], events[-1][1]
