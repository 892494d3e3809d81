"""The public listener's connection limits: request head size and time, open connections.

uvicorn serves the public port with httptools (pinned: the parser the benchmark measures) and
bounds none of these by itself: httptools buffers a header line whole however long it is (the
buffer is grown by concatenation, so a 300 MiB line costs minutes of CPU and gigabytes), a
connection may take forever to send its request head, and every accepted connection is kept.
uvicorn's ``limit_concurrency`` does not help against idle connections: it counts them, so
connections holding partial heads would make every legitimate request a 503. Its
``h11_max_incomplete_event_size`` applies only to the h11 parser, and its keep-alive timeout is
cancelled by any byte.

:class:`LimitedHttpToolsProtocol` is uvicorn's httptools protocol with three limits
(:class:`ListenerLimits`), all decided on the connection before the app sees a request:

- **Head size**: bytes are fed to the parser only up to ``max_header_bytes`` while a request
  head is being read; a head still incomplete at the limit is answered 431 and the connection
  closed, so the parser never buffers more than the limit.
- **Head time**: a timer armed when the connection opens, and again when a response ends,
  closes the connection unless a complete request head arrived within ``header_timeout_s``. A
  byte does not reset it (a client trickling a head is closed on time); a request being
  answered (an SSE stream open for hours) is not subject to it.
- **Open connections**: past ``max_connections`` a new connection closes the connection that
  has waited longest for a request head (idle keep-alive or partial head, the cheapest to
  lose); when every connection is busy with a request, the new one is answered 503 and closed.
  Idle connections therefore never lock legitimate clients out.

The number of requests in progress is bounded by the app (``_app``), which answers 503 with a
JSON-RPC error. :class:`PublicConfig` carries the limits to the protocol; it pickles, so
``serve --workers N`` hands it to each worker process, where each limit applies per process.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from mcp_gateway import _metrics
from mcp_gateway._jsonrpc import INVALID_REQUEST, SERVER_BUSY, error_body

if TYPE_CHECKING:
    import socket

    from mcp_gateway._app import Readiness

__all__ = ["DrainingServer", "LimitedHttpToolsProtocol", "ListenerLimits", "PublicConfig"]

logger = logging.getLogger("mcp_gateway.listener")

LINGER_S = 1.0
"""How long a connection answered with 431 or 503 is kept half-closed, its input discarded,
so that the client reads the answer rather than a reset (the kernel resets a connection closed
with unread input)."""


@dataclass(frozen=True, slots=True)
class ListenerLimits:
    """The public listener's per-connection limits (``MCP_GATEWAY_*``, see ``Settings``).

    Attributes:
        max_header_bytes: Largest request head (request line and headers), in bytes.
        header_timeout_s: Time for a complete request head, from the connection's opening or
            the end of its previous response, in seconds.
        max_connections: Open connections at once (per worker process).
    """

    max_header_bytes: int = 64 * 1024
    header_timeout_s: float = 10.0
    max_connections: int = 2048


class PublicConfig(uvicorn.Config):
    """uvicorn's ``Config`` with the listener's limits, served by :class:`LimitedHttpToolsProtocol`.

    Args:
        app: The ASGI app or its import string.
        limits: The limits every connection gets.
        **kwargs: Any other ``uvicorn.Config`` argument (not ``http``).
    """

    def __init__(self, app: Any, *, limits: ListenerLimits, **kwargs: Any) -> None:
        super().__init__(app, http=LimitedHttpToolsProtocol, **kwargs)
        self.listener_limits = limits


def _raw_response(status: int, reason: str, body: bytes, extra: bytes = b"") -> bytes:
    """A whole HTTP/1.1 response that closes the connection, JSON body."""
    return (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n".encode()
        + extra
        + b"\r\n"
        + body
    )


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the head size, head time and connection limits.

    See the module docstring. The state added: ``_head_bytes`` counts the bytes fed to the
    parser while a request head is read (``None`` from a head's end until the next request
    begins), ``_waiting_since`` is when the connection started waiting for its next head
    (``None`` while a request is being answered), ``_head_timer`` closes it at the deadline.
    """

    def __init__(
        self,
        config: uvicorn.Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        limits = getattr(config, "listener_limits", None)
        self._limits = limits if isinstance(limits, ListenerLimits) else ListenerLimits()
        self._head_bytes: int | None = 0
        self._waiting_since: float | None = None
        self._head_timer: asyncio.TimerHandle | None = None
        self._discarding = False

    # --- connections ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Admit the connection (evicting the longest-waiting one past the cap), arm the head timer."""
        super().connection_made(transport)
        if len(self.connections) > self._limits.max_connections and not self._evict_one():
            logger.warning(
                "%d connections open, all busy with requests: refusing a new one (503)",
                len(self.connections) - 1,
            )
            # Never admitted: it does not count while it lingers.
            self.connections.discard(self)
            if _metrics.ACTIVE is not None:
                _metrics.ACTIVE.connection_refused("max_connections")
            body = error_body(SERVER_BUSY, "Server busy: too many open connections")
            self._answer_and_close(_raw_response(503, "Service Unavailable", body, b"retry-after: 1\r\n"))
            return
        if _metrics.ACTIVE is not None:
            _metrics.ACTIVE.connections_admitted.inc()
        self._await_head()

    def _evict_one(self) -> bool:
        """Close the connection that has waited longest for a request head; ``False`` if none."""
        oldest: LimitedHttpToolsProtocol | None = None
        for other in self.connections:
            if other is self or not isinstance(other, LimitedHttpToolsProtocol):
                continue
            since = other._waiting_since
            if since is not None and (oldest is None or since < (oldest._waiting_since or 0.0)):
                oldest = other
        if oldest is None:
            return False
        logger.debug("connection cap reached: closing a connection idle since %.3f", oldest._waiting_since)
        oldest._close()
        if _metrics.ACTIVE is not None:
            _metrics.ACTIVE.connection_refused("evicted")
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        """Stop the head timer; uvicorn's cleanup."""
        self._cancel_head_timer()
        self._waiting_since = None
        super().connection_lost(exc)

    def _close(self) -> None:
        self._cancel_head_timer()
        self._waiting_since = None
        self._head_bytes = None
        if not self.transport.is_closing():
            self.transport.close()

    def _answer_and_close(self, response: bytes) -> None:
        """Write ``response``, half-close, discard the input for up to :data:`LINGER_S`, close.

        The connection lingers as the first to evict (it waits for nothing).
        """
        self._cancel_head_timer()
        self._head_bytes = None
        self._discarding = True
        self._waiting_since = 0.0
        self.transport.write(response)
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER_S, self._close)

    # --- the request head -------------------------------------------------------------------

    def _await_head(self) -> None:
        """The connection now waits for a request head: start the clock."""
        self._cancel_head_timer()
        self._waiting_since = time.monotonic()
        self._head_timer = self.loop.call_later(self._limits.header_timeout_s, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        logger.debug("no complete request head within %.1f s: closing", self._limits.header_timeout_s)
        if _metrics.ACTIVE is not None:
            _metrics.ACTIVE.connection_refused("header_timeout")
        self._close()

    def data_received(self, data: bytes) -> None:
        """Feed the parser, at most ``max_header_bytes`` of a head; past it answer 431."""
        if self._discarding:
            return
        while data and not self.transport.is_closing():
            if self._head_bytes is None:
                super().data_received(data)
                return
            room = self._limits.max_header_bytes - self._head_bytes
            if room <= 0:
                self._refuse_head()
                return
            piece, data = data[:room], data[room:]
            self._head_bytes += len(piece)
            super().data_received(piece)

    def _refuse_head(self) -> None:
        limit = self._limits.max_header_bytes
        logger.info("request head over %d bytes: 431", limit)
        if _metrics.ACTIVE is not None:
            _metrics.ACTIVE.connection_refused("header_too_large")
        body = error_body(INVALID_REQUEST, f"Request head exceeds the limit of {limit} bytes")
        self._answer_and_close(_raw_response(431, "Request Header Fields Too Large", body))

    def on_headers_complete(self) -> None:
        """The head is whole: no head limit until the response ends."""
        self._cancel_head_timer()
        self._waiting_since = None
        self._head_bytes = None
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        """The request is whole: what follows on the connection is the next head."""
        super().on_message_complete()
        if self._head_bytes is None:
            self._head_bytes = 0

    def on_response_complete(self) -> None:
        """The response ended: the next head must come within the head timeout."""
        pipelined = bool(self.pipeline)
        super().on_response_complete()
        if not pipelined and not self._discarding and not self.transport.is_closing():
            self._await_head()


class DrainingServer(uvicorn.Server):
    """uvicorn's ``Server`` that drains on the first SIGTERM/SIGINT before closing the listener.

    The first signal marks ``readiness`` draining at once (``/ready`` answers 503 ``draining``
    while requests are still served), and uvicorn's own shutdown (listener closed, requests in
    progress finished) starts ``drain_s`` seconds later; with ``drain_s`` 0 it starts at once. A
    second signal during the drain shuts down at once.

    Args:
        config: The server's configuration.
        readiness: The app's readiness state.
        drain_s: The drain period, in seconds (``MCP_GATEWAY_DRAIN_S``).
    """

    def __init__(self, config: uvicorn.Config, readiness: Readiness, drain_s: float) -> None:
        super().__init__(config)
        self._readiness = readiness
        self._drain_s = drain_s

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """The server's shutdown, after ending the streams that would keep it waiting (GET, listen).

        uvicorn waits for every connection to finish its response (at most
        ``timeout_graceful_shutdown``, ``MCP_GATEWAY_SHUTDOWN_GRACE_S``); a GET or listen stream
        finishes only when its client leaves, so the app ends them first
        (:meth:`Readiness.shutting_down`).
        """
        self._readiness.shutting_down()
        await super().shutdown(sockets)

    def handle_exit(self, sig: int, frame: Any) -> None:
        """Start draining, or shut down when draining already (or no drain period)."""
        if self._readiness.draining or self._drain_s <= 0:
            self._readiness.draining = True
            super().handle_exit(sig, frame)
            return
        self._readiness.draining = True
        logger.info("draining: not ready; closing the listener in %g s", self._drain_s)
        timer = threading.Timer(self._drain_s, super().handle_exit, (sig, None))
        timer.daemon = True
        timer.start()
