"""Faults through the gateway: the runtime SIGKILLed under load, and bad input in every mode.

- 48 calls in flight (sleeps, echoes, pings) when the runtime is killed: every one ends
  promptly with the 502 JSON-RPC error, none hangs; the stale socket file left behind is
  replaced by the restarted runtime, and the gateway reconnects by itself.
- Bad bodies (deep nesting, a 1 MiB method name, duplicate keys, bytes that are not UTF-8,
  a response posted as a request, a tools/call without an id) get the runtime's answers
  through the gateway in each mode, run nothing upstream and mint no session.
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import anyio
import httpx
import pytest

from conftest import Gateway, Runtime


def _accepts(path: str) -> bool:
    """Whether a process listens on the Unix socket at ``path`` (a stale one refuses)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(path)
        except ConnectionRefusedError:
            return False
    return True


def sleep_call(i: int) -> dict[str, object]:
    """A sleep of 10 to 20 s: still running when the runtime is killed a second in."""
    ms = 10000 + 5000 * (i % 3)
    return {
        "jsonrpc": "2.0",
        "id": i,
        "method": "tools/call",
        "params": {"name": "sleep", "arguments": {"ms": ms}},
    }


async def test_runtime_killed_under_load(own_stack: tuple[Gateway, Runtime]) -> None:
    gw, rt = own_stack
    token = gw.token()
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(timeout=30.0, limits=limits) as http:
        session = await gw.initialize(http, token)
        ended: dict[int, tuple[float, httpx.Response]] = {}

        async def one(i: int) -> None:
            r = await http.post(gw.url, json=sleep_call(i), headers=gw.headers(token, session))
            ended[i] = (time.monotonic(), r)

        async with anyio.create_task_group() as tg:
            for i in range(48):
                tg.start_soon(one, i)
            await anyio.sleep(1.0)
            killed_at = time.monotonic()
            rt.kill()
        assert len(ended) == 48
        for i, (at, r) in sorted(ended.items()):
            assert r.status_code == 502, (i, r.text)
            assert r.json()["error"]["code"] == -32000, (i, r.text)
            assert at - killed_at < 3.0, f"call {i} ended {at - killed_at:.2f} s after the kill"
        # The killed runtime left its socket file: stale (nobody listens), replaced by the
        # restart (a fresh socket that accepts). Not an inode comparison: the file system may
        # give the new socket the old one's inode number.
        assert Path(rt.http_uds).is_socket()  # noqa: ASYNC240 (a stat, no I/O wait)
        assert not _accepts(rt.http_uds)
        rt.restart()
        assert _accepts(rt.http_uds)
        deadline = time.monotonic() + 10
        while True:
            r = await http.post(
                gw.url,
                json={"jsonrpc": "2.0", "id": 99, "method": "ping"},
                headers=gw.headers(token, session),
            )
            if r.status_code != 502 or time.monotonic() > deadline:
                break
            await anyio.sleep(0.1)
        assert r.status_code == 404, r.text  # the old session died with the runtime
        fresh = await gw.initialize(http, token)
        r = await http.post(
            gw.url,
            json={
                "jsonrpc": "2.0",
                "id": 100,
                "method": "tools/call",
                "params": {"name": "echo", "arguments": {"text": "back"}},
            },
            headers=gw.headers(token, fresh),
        )
        assert r.status_code == 200
        assert r.json()["result"]["content"][0]["text"] == "back"


def _bad_bodies() -> list[tuple[str, bytes, int, int | None]]:
    """(name, body, status, JSON-RPC code or None for an empty 202)."""
    deep_id = b'{"jsonrpc":"2.0","method":"ping","id":' + b"[" * 10_000 + b"]" * 10_000 + b"}"
    return [
        ("10,000 nested arrays as the id", deep_id, 400, -32600),
        (
            "10,000 unclosed arrays",
            b'{"jsonrpc":"2.0","id":1,"method":"ping","params":' + b"[" * 10_000,
            400,
            -32700,
        ),
        ("duplicate id", b'{"jsonrpc":"2.0","id":1,"id":2,"method":"ping"}', 400, -32600),
        ("id out of range", b'{"jsonrpc":"2.0","id":-4.01E7582417,"method":"ping"}', 400, -32600),
        (
            "string id with an escaped lone surrogate",
            b'{"jsonrpc":"2.0","id":"a\\uD80b","method":"ping"}',
            400,
            -32600,
        ),
        (
            "non-UTF-8 in a string",
            b'{"jsonrpc":"2.0","id":1,"method":"ping","params":{"x":"\xff\xfe"}}',
            400,
            -32700,
        ),
        ("wrong jsonrpc version", b'{"jsonrpc":"1.0","id":1,"method":"ping"}', 400, -32600),
        ("batch", b'[{"jsonrpc":"2.0","id":1,"method":"ping"}]', 400, -32600),
        (
            "1 MiB method name",
            b'{"jsonrpc":"2.0","id":1,"method":"' + b"m" * (1 << 20) + b'"}',
            200,
            -32601,
        ),
        (
            "tools/call without an id",
            json.dumps(
                {
                    "jsonrpc": "2.0",
                    "method": "tools/call",
                    "params": {"name": "sleep", "arguments": {"ms": 30000}},
                }
            ).encode(),
            202,
            None,
        ),
        ("response posted as a request", b'{"jsonrpc":"2.0","id":5,"result":{}}', 202, None),
    ]


@pytest.mark.parametrize("case", _bad_bodies(), ids=lambda c: c[0])
async def test_bad_input_through_the_gateway(
    gw: Gateway, http: httpx.AsyncClient, case: tuple[str, bytes, int, int | None]
) -> None:
    name, body, status, code = case
    token = gw.token()
    session = await gw.initialize(http, token)

    before = await gw.inflight(http, token, session)
    headers = {**gw.headers(token, session), "content-type": "application/json"}
    r = await http.post(gw.url, content=body, headers=headers)
    assert r.status_code == status, (name, r.text[:300])
    assert "mcp-session-id" not in r.headers
    if code is None:
        assert r.content == b""
    else:
        assert r.json()["error"]["code"] == code, (name, r.text[:300])
        assert len(r.content) < 4096, f"{name}: {len(r.content)} byte error"
    # Nothing runs upstream (the fixture is shared: relative to the sleeps already running).
    await anyio.sleep(0.2)
    assert await gw.inflight(http, token, session) <= before
    r = await http.post(
        gw.url,
        json={"jsonrpc": "2.0", "id": 7, "method": "ping"},
        headers=gw.headers(token, session),
    )
    assert r.status_code == 200


FORWARDED = ("mcp-session-id", "mcp-protocol-version", "accept", "last-event-id", "content-type")


@pytest.mark.parametrize("value", [b"\xff", "2025-11-25é".encode()], ids=["latin1", "utf8"])
@pytest.mark.parametrize("name", FORWARDED)
async def test_a_forwarded_header_that_is_not_visible_ascii_is_400(
    gw: Gateway, http: httpx.AsyncClient, name: str, value: bytes
) -> None:
    """Every mode answers it as the runtime's HTTP adapter does: 400, -32000, never a 500."""
    token = gw.token()
    session = await gw.initialize(http, token)
    headers: dict[str, str | bytes] = {**gw.headers(token, session), name: value}
    r = await http.post(gw.url, json={"jsonrpc": "2.0", "id": 1, "method": "ping"}, headers=headers)
    assert r.status_code == 400, (name, r.text)
    assert r.json()["error"] == {
        "code": -32000,
        "message": f"Bad Request: header {name} is not visible ASCII",
    }
    # GET and DELETE as well.
    for method in ("GET", "DELETE"):
        r = await http.request(method, gw.url, headers=headers)
        assert r.status_code == 400, (method, name, r.text)
    r = await http.post(
        gw.url, json={"jsonrpc": "2.0", "id": 2, "method": "ping"}, headers=gw.headers(token, session)
    )
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("server", ["%ff", "%C3%A9t%C3%A9", "a%00b"])
async def test_an_odd_virtual_server_id_is_an_unknown_server_in_every_mode(
    gw: Gateway, http: httpx.AsyncClient, server: str
) -> None:
    """Percent-decoded by the public endpoint, re-encoded for the runtime: never a 500."""
    r = await http.post(
        f"{gw.base}/servers/{server}/mcp",
        json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
        headers=gw.headers(gw.token()),
    )
    assert r.status_code == 404, r.text
    assert r.json()["error"]["code"] == -32001
