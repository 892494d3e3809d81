"""``serve --workers N``: the pre-bound listener keeps ``TCP_NODELAY`` on accepted sockets.

uvicorn binds the listener of a multi-worker server with ``proto`` 0, and asyncio then leaves
Nagle's algorithm on for every accepted connection (uvicorn issue #3149): each keep-alive
request after the first waited about 40 ms for a delayed ACK. Sessions shared across two
workers in the socket modes are exercised by the benchmark's smoke test (``gateway-2-workers``
rows must have no error in the HTTP/JSON and gRPC modes).
"""

from __future__ import annotations

import asyncio
import socket

import uvicorn

from mcp_gateway.__main__ import _tcp_listener


async def _accepted_nodelay(listener: socket.socket) -> int:
    """TCP_NODELAY of the first connection asyncio accepts on ``listener``."""
    loop = asyncio.get_running_loop()
    seen: asyncio.Future[int] = loop.create_future()

    class Probe(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            sock = transport.get_extra_info("socket")
            seen.set_result(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            transport.close()

    server = await loop.create_server(Probe, sock=listener)
    try:
        port = listener.getsockname()[1]
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        value = await asyncio.wait_for(seen, 5)
        writer.close()
        return value
    finally:
        server.close()
        await server.wait_closed()


def test_uvicorn_listener_rewrapped_keeps_tcp_nodelay() -> None:
    config = uvicorn.Config("mcp_gateway.__main__:app_from_env", host="127.0.0.1", port=0, workers=2)
    listener = _tcp_listener(config.bind_socket())
    assert listener.proto == socket.IPPROTO_TCP
    assert asyncio.run(_accepted_nodelay(listener)) != 0


def test_unix_listener_is_left_alone() -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        assert _tcp_listener(sock) is sock
    finally:
        sock.close()
