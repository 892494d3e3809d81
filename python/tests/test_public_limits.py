"""The public port's limits against an unauthenticated client, on real gateway processes.

- A request head over ``MCP_GATEWAY_MAX_HEADER_BYTES`` (a 1 MiB header line) is answered 431
  with a JSON-RPC error, the connection closed, and the gateway keeps serving (also at the
  default limit, on the session's gateway).
- A connection that does not complete a request head within ``MCP_GATEWAY_HEADER_TIMEOUT_S``
  is closed: silent, trickling one byte at a time, or idle after a response; a request body
  that stalls as long is answered 408.
- Past ``MCP_GATEWAY_MAX_CONNECTIONS`` idle connections do not lock a legitimate client out:
  the longest-waiting one is closed; when every connection is busy with a request a new one is
  answered 503.
- Past ``MCP_GATEWAY_MAX_CONCURRENT_REQUESTS`` a request is answered 503 with ``Retry-After``.

The bounds on elapsed time only prove that something happened before a much longer timeout.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest

from conftest import Gateway, gateway_env
from mcp_gateway.testing import free_port, start_gateway, stop

HEAD_TIMEOUT_S = 1.0
# Far above the configured head timeout: a connection still open after this was not closed.
BOUND_S = 10.0


@contextlib.contextmanager
def _gateway(workdir: Path, catalog: Path, name: str, **limits: str) -> Iterator[Gateway]:
    env = gateway_env("python", catalog, None)
    env.update(limits)
    port = free_port()
    process = start_gateway(env, port, log=workdir / f"gateway-limits-{name}.log")
    try:
        yield Gateway("python", f"http://127.0.0.1:{port}", processes=[process])
    finally:
        stop(process)


@pytest.fixture(scope="module")
def small(workdir: Path, catalog: Path) -> Iterator[Gateway]:
    """A gateway with 16 KiB heads and a 1 s head timeout."""
    with _gateway(
        workdir,
        catalog,
        "small",
        MCP_GATEWAY_MAX_HEADER_BYTES=str(16 * 1024),
        MCP_GATEWAY_HEADER_TIMEOUT_S=str(HEAD_TIMEOUT_S),
    ) as gw:
        yield gw


@pytest.fixture(scope="module")
def capped(workdir: Path, catalog: Path) -> Iterator[Gateway]:
    """A gateway with three connections (and the default 10 s head timeout)."""
    with _gateway(workdir, catalog, "capped", MCP_GATEWAY_MAX_CONNECTIONS="3") as gw:
        yield gw


def _connect(gw: Gateway) -> socket.socket:
    port = int(gw.base.rsplit(":", 1)[1])
    return socket.create_connection(("127.0.0.1", port), timeout=BOUND_S)


def _read_all(sock: socket.socket) -> bytes:
    """Everything until the gateway closes the connection (raises on a timeout)."""
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def _closed(sock: socket.socket) -> bool:
    """Whether the gateway closed ``sock`` (EOF or reset) within the bound."""
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def _status(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def _body(response: bytes) -> dict[str, object]:
    value = json.loads(response.split(b"\r\n\r\n", 1)[1])
    assert isinstance(value, dict)
    return value


def _send_huge_head(gw: Gateway, size: int) -> bytes:
    """Send a head with one ``size``-byte header line (from a thread); return the answer."""
    sock = _connect(gw)
    head = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * size + b"\r\n\r\n"

    def send() -> None:
        with contextlib.suppress(OSError):
            sock.sendall(head)

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    try:
        return _read_all(sock)
    finally:
        sock.close()
        sender.join(BOUND_S)


def _healthy(gw: Gateway) -> None:
    assert httpx.get(f"{gw.base}/health", timeout=BOUND_S).status_code == 200


def test_a_one_mib_header_line_is_431_and_the_gateway_keeps_serving(small: Gateway) -> None:
    response = _send_huge_head(small, 1 << 20)
    assert _status(response) == 431, response[:300]
    body = _body(response)
    assert body["error"] == {
        "code": -32600,
        "message": f"Request head exceeds the limit of {16 * 1024} bytes",
    }
    _healthy(small)
    # A head just under the limit is served.
    r = httpx.get(f"{small.base}/health", headers={"x-pad": "a" * (12 * 1024)}, timeout=BOUND_S)
    assert r.status_code == 200


def test_the_default_head_limit_is_64_kib(gateways: dict[str, Gateway]) -> None:
    gw = gateways["python"]
    response = _send_huge_head(gw, 1 << 20)
    assert _status(response) == 431, response[:300]
    assert _body(response)["error"] == {
        "code": -32600,
        "message": "Request head exceeds the limit of 65536 bytes",
    }
    r = httpx.get(f"{gw.base}/health", headers={"x-pad": "a" * (60 * 1024)}, timeout=BOUND_S)
    assert r.status_code == 200


def test_a_partial_head_is_closed_after_the_head_timeout(small: Gateway) -> None:
    silent, partial, trickling = _connect(small), _connect(small), _connect(small)
    try:
        started = time.monotonic()
        partial.sendall(b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        # One byte every 0.2 s: bytes arriving do not extend the deadline.
        trickling.settimeout(0.2)
        for byte in b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 100:
            try:
                trickling.sendall(bytes([byte]))
            except OSError:
                break
            try:
                if trickling.recv(1) == b"":
                    break
            except TimeoutError:
                continue
            except ConnectionResetError:
                break
        else:
            raise AssertionError("a trickled head was still read after 20 s")
        trickling.settimeout(BOUND_S)
        for sock in (silent, partial):
            assert _closed(sock)
        assert time.monotonic() - started < BOUND_S
    finally:
        for sock in (silent, partial, trickling):
            sock.close()
    _healthy(small)


def test_a_stalled_body_is_408_after_the_head_timeout(small: Gateway) -> None:
    with _connect(small) as sock:
        sock.sendall(
            b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer "
            + small.token().encode()
            + b"\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
            + b'{"jsonrpc":"2.0",'
        )
        response = _read_all(sock)
    assert _status(response) == 408, response[:300]
    assert _body(response)["error"] == {"code": -32001, "message": "Request body stalled for 1 s"}


def test_an_idle_keep_alive_connection_is_closed_after_the_head_timeout(small: Gateway) -> None:
    with _connect(small) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        first = b""
        while b"\r\n\r\n" not in first:
            first += sock.recv(65536)
        head, body = first.split(b"\r\n\r\n", 1)
        length = int(
            next(line for line in head.lower().split(b"\r\n") if line.startswith(b"content-length:"))[15:]
        )
        while len(body) < length:
            body += sock.recv(65536)
        assert _status(first) == 200
        # One byte of a next request: uvicorn's own keep-alive timer stops, the head timer not.
        sock.sendall(b"G")
        assert _closed(sock)


async def test_idle_connections_past_the_cap_do_not_lock_out_a_client(capped: Gateway) -> None:
    # Three admitted, then a fourth and the client's: each closes the longest-waiting idle one.
    idle = [_connect(capped) for _ in range(4)]
    try:
        async with httpx.AsyncClient(timeout=BOUND_S) as http:
            r = await http.get(f"{capped.base}/health")
            assert r.status_code == 200
            token = capped.token()
            session = await capped.initialize(http, token)
            assert session
        # Closed by the cap, not by the 10 s head timeout.
        for sock in idle[:2]:
            sock.settimeout(5.0)
            assert _closed(sock)
    finally:
        for sock in idle:
            sock.close()


def _sleep_call(i: int, ms: int) -> dict[str, object]:
    return {
        "jsonrpc": "2.0",
        "id": i,
        "method": "tools/call",
        "params": {"name": "sleep", "arguments": {"ms": ms}},
    }


async def _sleep(http: httpx.AsyncClient, gw: Gateway, token: str, session: str, i: int) -> None:
    r = await http.post(gw.url, json=_sleep_call(i, 3000), headers=gw.headers(token, session))
    assert r.status_code == 200, r.text


async def test_a_connection_past_the_cap_is_503_when_all_are_busy(capped: Gateway) -> None:
    token = capped.token()
    async with httpx.AsyncClient(timeout=BOUND_S) as http:
        session = await capped.initialize(http, token)
    limits = httpx.Limits(max_connections=3, max_keepalive_connections=0)
    async with (
        httpx.AsyncClient(timeout=BOUND_S, limits=limits) as busy,
        anyio.create_task_group() as tg,
    ):
        for i in range(3):
            tg.start_soon(_sleep, busy, capped, token, session, i)
        await anyio.sleep(1.0)
        with _connect(capped) as sock:
            response = _read_all(sock)
        assert _status(response) == 503, response[:300]
        assert b"retry-after: 1" in response.lower()
        assert _body(response)["error"] == {
            "code": -32000,
            "message": "Server busy: too many open connections",
        }
    _healthy(capped)


async def test_requests_past_the_concurrency_limit_get_503(workdir: Path, catalog: Path) -> None:
    with _gateway(workdir, catalog, "busy", MCP_GATEWAY_MAX_CONCURRENT_REQUESTS="2") as gw:
        token = gw.token()
        async with httpx.AsyncClient(timeout=BOUND_S) as http:
            session = await gw.initialize(http, token)
            async with anyio.create_task_group() as tg:
                for i in range(2):
                    tg.start_soon(_sleep, http, gw, token, session, i)
                await anyio.sleep(1.0)
                r = await http.post(
                    gw.url,
                    json={"jsonrpc": "2.0", "id": 9, "method": "ping"},
                    headers=gw.headers(token, session),
                )
                assert r.status_code == 503, r.text
                assert r.headers["retry-after"] == "1"
                assert r.json()["error"] == {
                    "code": -32000,
                    "message": "Server busy: too many requests in progress",
                }
            # The sleeps are done: served again.
            r = await http.post(
                gw.url,
                json={"jsonrpc": "2.0", "id": 10, "method": "ping"},
                headers=gw.headers(token, session),
            )
            assert r.status_code == 200, r.text


def test_each_worker_applies_the_limits(workdir: Path, catalog: Path) -> None:
    """``serve --workers 2``: the limits reach the worker processes (``PublicConfig`` pickles)."""
    env = {**os.environ, **gateway_env("python", catalog, None), "MCP_GATEWAY_MAX_HEADER_BYTES": "4096"}
    port = free_port()
    with (workdir / "gateway-limits-workers.log").open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "mcp_gateway", "serve", "--port", str(port), "--workers", "2"],
            env=env,
            stdout=log,
            stderr=log,
        )
    try:
        gw = Gateway("python", f"http://127.0.0.1:{port}", processes=[process])
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, "the gateway exited"
            try:
                if httpx.get(f"{gw.base}/health", timeout=1.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the gateway did not serve within 60 s"
            time.sleep(0.1)
        for _ in range(4):  # the kernel spreads connections over the workers
            response = _send_huge_head(gw, 8192)
            assert _status(response) == 431, response[:300]
            assert _body(response)["error"] == {
                "code": -32600,
                "message": "Request head exceeds the limit of 4096 bytes",
            }
    finally:
        stop(process)
