"""The Core SPI's HTTP/JSON transport: HTTP/1.1 on a Unix socket, on asyncio and httptools.

A minimal server: one :class:`asyncio.Protocol` per connection, httptools (the C parser uvicorn
uses) for the request head and body, and :meth:`mcp_gateway.core.service.Core.route` for the
answer. It was the fastest of the servers measured for ``POST /v1/resolve-caller``
(``docs/core-spi.md``, "What is measured"; ``bench/core_http.py``).

Per connection: HTTP/1.1 keep-alive and pipelining (answers in request order; a client that
does not read its answers is not read from until it does), a request body of at most
:data:`MAX_BODY_BYTES` (more: 413 and the connection closed), a request that does not parse: 400
and the connection closed; a fault of the core itself (a bug): 500, logged.
``GET /v1/watch-policy`` answers with a chunked ``application/x-ndjson`` stream that holds the
connection until the client closes it or the server stops; an empty line is sent after
``keepalive_s`` seconds without an event (default
:data:`~mcp_gateway.core.service.KEEPALIVE_S`, 15 s; ``MCP_CORE_WATCH_KEEPALIVE_S``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from http import HTTPStatus
from urllib.parse import parse_qsl

import httptools

from mcp_gateway.core.observe import HTTP_OPERATIONS, CoreObserver, field_in_body
from mcp_gateway.core.service import KEEPALIVE_S, Core, Reply, Stream

__all__ = ["MAX_BODY_BYTES", "HttpServer"]

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 65 * 1024 * 1024
"""Largest request body, in bytes: a hook payload of the runtime's 64 MiB limit plus 1 MiB."""


def _head(status: int, content_type: str, length: int | None, close: bool) -> bytes:
    lines = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}"]
    if content_type:
        lines.append(f"content-type: {content_type}")
    lines.append("transfer-encoding: chunked" if length is None else f"content-length: {length}")
    if close:
        lines.append("connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class _Connection(asyncio.Protocol):
    """One client connection: parse requests, answer each in order."""

    def __init__(
        self,
        core: Core,
        streams: set[asyncio.Task[None]],
        keepalive_s: float,
        observer: CoreObserver | None = None,
    ) -> None:
        self._core = core
        self._observer = observer
        self._traceparent = ""
        self._streams = streams
        self._keepalive_s = keepalive_s
        self._task: asyncio.Task[None] | None = None
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._url = b""
        self._body: list[bytes] = []
        self._size = 0
        self._streaming = False

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        if self._streaming:
            return  # a watch stream owns the connection; anything else sent on it is ignored
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(400, "upgrade is not supported")
        except httptools.HttpParserError as e:
            self._fail(400, f"malformed HTTP request: {e}")

    def pause_writing(self) -> None:
        # The client does not read its answers: stop reading its requests until it does.
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        if self._task is not None:
            self._task.cancel()  # the client went away: close its watcher now, not at the next event

    # httptools callbacks

    def on_message_begin(self) -> None:
        self._url = b""
        self._body = []
        self._size = 0
        self._traceparent = ""

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_body(self, body: bytes) -> None:
        self._size += len(body)
        if self._size > MAX_BODY_BYTES:
            self._fail(413, f"request body over {MAX_BODY_BYTES} bytes")
            raise httptools.HttpParserError("body too large")
        self._body.append(body)

    def on_message_complete(self) -> None:
        if self._transport is None or self._transport.is_closing():
            return
        parsed = httptools.parse_url(self._url)
        path = parsed.path.decode("latin-1")
        query = dict(parse_qsl(parsed.query.decode("latin-1"))) if parsed.query else {}
        method = self._parser.get_method().decode("latin-1")
        body = b"".join(self._body)
        operation = HTTP_OPERATIONS.get(path) if self._observer is not None else None
        if operation is None or self._observer is None:
            answer = self._answer(method, path, query, body)
        else:
            resolve = operation == "ResolveCaller"
            traceparent = self._traceparent or (field_in_body(body, "traceparent") if resolve else "")
            request_id = field_in_body(body, "requestId") if resolve else ""
            with self._observer.call("http", operation, traceparent, request_id) as call:
                answer = self._answer(method, path, query, body)
                if isinstance(answer, Reply) and answer.status >= 500:
                    call.ok, call.status = False, str(answer.status)
        keep_alive = self._parser.should_keep_alive()
        if isinstance(answer, Reply):
            self._transport.write(
                _head(answer.status, answer.content_type, len(answer.body), not keep_alive) + answer.body
            )
            if not keep_alive:
                self._transport.close()
            return
        self._streaming = True
        self._transport.write(_head(200, answer.content_type, None, True))
        task = self._task = asyncio.get_running_loop().create_task(self._stream(answer))
        self._streams.add(task)
        task.add_done_callback(self._streams.discard)

    # helpers

    def _answer(self, method: str, path: str, query: dict[str, str], body: bytes) -> Reply | Stream:
        try:
            return self._core.route(method, path, query, body)
        except Exception:  # a bug, not bad input (that is a 400 from route): log it, answer 500
            logger.exception("%s %s failed", method, path[:128])
            return Reply(500, b'{"error":"internal error"}')

    def _fail(self, status: int, message: str) -> None:
        if self._transport is not None and not self._transport.is_closing():
            body = json.dumps({"error": message}).encode()
            self._transport.write(_head(status, "application/json", len(body), True) + body)
            self._transport.close()

    async def _stream(self, stream: Stream) -> None:
        """Relay the NDJSON lines as chunks; a keep-alive line when idle; end with the connection."""
        lines = stream.lines
        transport = self._transport
        pending: asyncio.Future[bytes] | None = None
        try:
            while transport is not None and not transport.is_closing():
                # Never cancel the generator's step on a timeout: that would end the generator.
                if pending is None:
                    pending = asyncio.ensure_future(anext(lines))
                done, _ = await asyncio.wait({pending}, timeout=self._keepalive_s)
                if not done:
                    transport.write(b"1\r\n\n\r\n")
                    continue
                try:
                    line = pending.result()
                except StopAsyncIteration:
                    transport.write(b"0\r\n\r\n")
                    break
                pending = None
                transport.write(b"%x\r\n%s\r\n" % (len(line), line))
        finally:
            if pending is not None:
                pending.cancel()
            if transport is not None:
                transport.close()


class _ObservedConnection(_Connection):
    """A connection that also reads the ``traceparent`` header.

    Only when observed: httptools calls ``on_header`` for every header of every request once the
    method exists.
    """

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"traceparent":
            self._traceparent = value.decode("ascii", "replace")


class HttpServer:
    """The HTTP/JSON transport of one core: start on a listening socket, stop with its streams.

    Args:
        core: The Core SPI.
        keepalive_s: Seconds without an event after which a watch stream gets an empty line.
    """

    def __init__(
        self, core: Core, keepalive_s: float = KEEPALIVE_S, observer: CoreObserver | None = None
    ) -> None:
        self._core = core
        self._observer = observer
        self._keepalive_s = keepalive_s
        self._streams: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None

    async def start(self, sock: socket.socket) -> None:
        """Serve on ``sock``, a bound, listening Unix socket (its file is the caller's)."""
        loop = asyncio.get_running_loop()
        connection = _Connection if self._observer is None else _ObservedConnection
        self._server = await loop.create_unix_server(
            lambda: connection(self._core, self._streams, self._keepalive_s, self._observer), sock=sock
        )

    async def stop(self) -> None:
        """Stop accepting, end every open watch stream, close the listener."""
        if self._server is None:
            return
        self._server.close()
        for task in list(self._streams):
            task.cancel()
        if self._streams:
            await asyncio.gather(*self._streams, return_exceptions=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._server.wait_closed(), 1.0)
