"""HTTP/JSON over a Unix socket with httpx (``docs/http-boundary.md``; ``MCP_RUST_HTTP_CLIENT=httpx``).

One ``httpx.AsyncClient`` per process over the socket, the way the ContextForge gateway does it
(the default client is aiohttp, ``_aiohttp_backend``, which follows the same rules below).
The request is forwarded with a whitelist of MCP headers plus the two internal ones; the
response is relayed as is: a JSON body is read whole, an SSE body is streamed chunk by chunk
with no read timeout on streaming calls. A JSON body is read up to the runtime's message limit
plus 1 MiB (the runtime never sends more when its limit is the gateway's
``MCP_RUNTIME_MAX_MESSAGE_BYTES``); past it the client gets the runtime's error for a result
over the limit, as the gRPC channel's receive limit gives in gRPC mode. httpx's exceptions are
mapped in one place, :func:`runtime_error`.

Keep-alive: the runtime closes a keep-alive connection that stays silent for its
``--header-read-timeout-ms`` (30 s by default). The pool drops idle connections after
``MCP_GATEWAY_RUNTIME_KEEPALIVE_S`` (5 s by default), well before that, so a request is not
sent on a connection the runtime is closing. Should it happen anyway (a runtime configured
with a shorter timeout, a runtime draining), the request is sent once more on a new connection,
but only when it cannot have been processed (:func:`closed_before_response`): it went out on a
reused keep-alive connection and the runtime closed that connection without a byte of a
response. Both forms of the race are seen (``tests/test_keepalive.py``): the runtime closed
first and the request's write failed, or the request reached the socket just as the runtime
closed it unread (then the read is reset). A server closing an idle connection has not read the
request; a runtime that read it and died before answering leaves no process to retry against
(the retry is refused: 502).
A fresh connection closed without an answer (the runtime refusing a connection past its
``--max-connections``) is not retried.

The pool is shared by every caller, so no one subject may be able to exhaust it (issue 13: 1,024
sessions of one token, each with a GET stream, once held all 1,024 connections, and everyone
else's ``initialize`` waited 90 s for a connection and got 504). Three numbers keep it so:

- The pool has as many connections as the gateway admits requests at once
  (``MCP_GATEWAY_MAX_CONCURRENT_REQUESTS``, 1,024 by default, :data:`DEFAULT_MAX_CONNECTIONS`):
  each request in progress holds at most one connection, and a request past that limit is
  answered 503 by the app before it reaches the pool, so an admitted request does not wait for
  a connection held by others.
- The runtime caps what one subject holds for long (``--max-streams-per-subject`` 64 open GET
  streams, ``--max-calls-per-subject`` 256 upstream calls in flight; past them 429 with
  ``Retry-After``, answered at once; its other requests are answered at once too): one subject
  at its caps holds at most 64 + 256 = 320 connections for long, less than a third of the
  pool; the other 704 stay for everyone else. Keep the runtime's two caps summed well below
  ``MCP_GATEWAY_MAX_CONCURRENT_REQUESTS`` when changing either.
- Should a request still find every connection taken (a pool made smaller than the admitted
  requests), it waits at most :data:`POOL_TIMEOUT_S` and is answered 503 with
  ``Retry-After: 1`` (:class:`~mcp_gateway.RuntimeBusyError`), not 504 after the request
  timeout.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncGenerator
from typing import Any

import anyio
import httpx

from mcp_gateway._backend import McpRequest, McpResponse, RuntimeHealth
from mcp_gateway._errors import GatewayError, RuntimeBusyError, RuntimeTimeoutError, RuntimeUnavailableError
from mcp_gateway._http_wire import (
    DEFAULT_KEEPALIVE_S,
    DEFAULT_MAX_CONNECTIONS,
    POOL_TIMEOUT_S,
    STREAM_JSON_FROM_BYTES,
    declared_length,
    health_of,
    relayed_headers,
    runtime_headers,
    runtime_path,
)
from mcp_gateway._socket_backend import DEFAULT_MAX_MESSAGE_BYTES, SocketBackend

__all__ = ["HttpUdsBackend", "closed_before_response", "runtime_error"]

logger = logging.getLogger(__name__)


def _limits(keepalive_s: float, max_connections: int) -> httpx.Limits:
    # Open SSE streams each hold a connection, so the pool must be as large as the requests the
    # gateway admits; idle keep-alive connections are what make the unary path cheap.
    return httpx.Limits(
        max_connections=max_connections,
        max_keepalive_connections=min(128, max_connections),
        keepalive_expiry=keepalive_s,
    )


def closed_before_response(error: httpx.HTTPError) -> bool:
    """Whether ``error`` says the runtime closed the connection before a byte of a response.

    httpcore reports a connection closed before any response as a ``RemoteProtocolError``
    that differs from a malformed response only in its words ("Server disconnected without
    sending a response."); ``test_units`` pins them against a real socket. A reset connection
    (``ReadError``) is the other form of the same close.
    """
    if isinstance(error, httpx.ReadError):
        return True
    return isinstance(error, httpx.RemoteProtocolError) and str(error).startswith(
        "Server disconnected without sending a response"
    )


class _Attempt:
    """What httpcore's ``trace`` extension tells about one attempt at sending a request."""

    def __init__(self) -> None:
        self.new_connection = False
        self.awaiting_head = False

    async def __call__(self, event: str, info: dict[str, Any]) -> None:
        if event.startswith("connection.connect_"):
            self.new_connection = True
        elif event == "http11.receive_response_headers.started":
            self.awaiting_head = True
        elif event == "http11.receive_response_headers.complete":
            self.awaiting_head = False

    def unsent(self, error: httpx.HTTPError) -> bool:
        """Whether the request cannot have been processed: see the module docstring."""
        return not self.new_connection and self.awaiting_head and closed_before_response(error)


def runtime_error(error: httpx.HTTPError | OSError) -> GatewayError:
    """The gateway error for an httpx or socket exception of a call to the runtime.

    Args:
        error: What the call raised: ``TimeoutError`` (the gateway's own deadline), an httpx
            timeout, any other httpx error or ``OSError`` (socket missing, connection refused or
            dropped, a stream broken).

    Returns:
        :class:`RuntimeBusyError` when no pooled connection freed within the pool timeout,
        :class:`RuntimeTimeoutError` for the other timeouts, else
        :class:`RuntimeUnavailableError`.
    """
    if isinstance(error, httpx.PoolTimeout):
        return RuntimeBusyError("every connection to the MCP runtime is in use")
    if isinstance(error, TimeoutError | httpx.TimeoutException):
        return RuntimeTimeoutError("MCP runtime timed out")
    return RuntimeUnavailableError(f"MCP runtime unavailable: {type(error).__name__}: {error}")


class HttpUdsBackend(SocketBackend):
    """Reaches the runtime's HTTP/JSON adapter on ``uds_path`` (``GET /health`` is the probe).

    Args:
        uds_path: Path of the runtime's HTTP socket (``MCP_RUST_UDS``).
        request_timeout_s: Deadline of a non-streaming call, in seconds.
        max_message_bytes: The runtime's message limit, in bytes; JSON bodies are read up to it
            plus 1 MiB.
        keepalive_s: How long an idle pooled connection is kept, in seconds (keep it well below
            the runtime's ``--header-read-timeout-ms``).
        max_connections: Connections to the runtime at once; the gateway's
            ``MCP_GATEWAY_MAX_CONCURRENT_REQUESTS`` (see the module docstring).
    """

    def __init__(
        self,
        uds_path: str,
        request_timeout_s: float,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        keepalive_s: float = DEFAULT_KEEPALIVE_S,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
    ) -> None:
        super().__init__(f"HTTP/JSON socket {uds_path}", request_timeout_s, max_message_bytes)
        self._uds_path = uds_path
        self._keepalive_s = keepalive_s
        self._max_connections = max_connections
        self._client: httpx.AsyncClient | None = None

    async def _open(self) -> None:
        # httpx ignores the client's ``limits=`` when a transport is given: set them here.
        limits = _limits(self._keepalive_s, self._max_connections)
        transport = httpx.AsyncHTTPTransport(uds=self._uds_path, limits=limits, retries=0)
        self._client = httpx.AsyncClient(
            transport=transport,
            base_url="http://runtime",
            timeout=httpx.Timeout(self._timeout_s, pool=min(POOL_TIMEOUT_S, self._timeout_s)),
        )

    async def aclose(self) -> None:
        """Close the client and its connections."""
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def _require_client(self) -> httpx.AsyncClient:
        if self._client is None:
            raise RuntimeError("HttpUdsBackend.start() was not called")
        return self._client

    async def health(self) -> RuntimeHealth:
        """``GET /health`` on the socket, within 5 s (or the request timeout when shorter)."""
        client = self._require_client()
        try:
            with anyio.fail_after(min(self._timeout_s, 5.0)):
                response = await client.get("/health")
            return health_of(response.json())
        except (httpx.HTTPError, TimeoutError, ValueError) as e:
            return RuntimeHealth(reachable=False, status="unavailable", detail=f"{type(e).__name__}: {e}")

    def _build(self, request: McpRequest, attempt: _Attempt) -> httpx.Request:
        headers = runtime_headers(request)
        path = runtime_path(request)
        # Streaming calls (a standalone GET stream, a POST asking for progress) have no read
        # timeout: a GET may stay silent for hours, and the runtime's upstream timeout bounds a
        # tool call. Other calls keep the request timeout on every read.
        pool_s = min(POOL_TIMEOUT_S, self._timeout_s)
        timeout = httpx.Timeout(self._timeout_s, read=None, pool=pool_s) if request.streaming else None
        client = self._require_client()
        extensions = {"trace": attempt}
        if timeout is None:
            return client.build_request(
                request.method, path, headers=headers, content=request.body, extensions=extensions
            )
        return client.build_request(
            request.method,
            path,
            headers=headers,
            content=request.body,
            timeout=timeout,
            extensions=extensions,
        )

    async def _send(self, request: McpRequest) -> httpx.Response:
        """Send the request; once more on a new connection if it cannot have been processed."""
        client = self._require_client()
        attempt = _Attempt()
        try:
            return await client.send(self._build(request, attempt), stream=True)
        except httpx.HTTPError as e:
            if not attempt.unsent(e):
                raise
            logger.info(
                "runtime closed a reused connection before answering: sending again (%s: %s)",
                type(e).__name__,
                e,
            )
        return await client.send(self._build(request, _Attempt()), stream=True)

    async def _forward(self, request: McpRequest) -> McpResponse:
        """Forward the request; read a JSON body whole, stream an SSE body.

        Raises:
            RuntimeUnavailableError: Connection refused, socket missing, connection dropped.
            RuntimeTimeoutError: No response head (or JSON body) within the request timeout.
            RuntimeBusyError: No pooled connection freed within :data:`POOL_TIMEOUT_S`.
        """
        response: httpx.Response | None = None
        try:
            with anyio.fail_after(None if request.streaming else self._timeout_s):
                response = await self._send(request)
                headers = relayed_headers(response.headers.raw)
                content_type = response.headers.get("content-type", "")
                length = declared_length(response.headers.get("content-length"))
                if (
                    not content_type.startswith("text/event-stream")
                    and length is not None
                    and STREAM_JSON_FROM_BYTES < length <= self.max_response_bytes
                ):
                    # A large JSON body passes through chunk by chunk: the gateway never holds
                    # it whole (the runtime counts it until it is written).
                    return McpResponse(
                        status=response.status_code, headers=headers, stream=_Relay(response), length=length
                    )
                if not content_type.startswith("text/event-stream"):
                    body = await _read_capped(response, self.max_response_bytes)
                    await response.aclose()
                    if body is None:
                        return self.result_too_large_response(request, "a JSON body")
                    return McpResponse(status=response.status_code, headers=headers, body=body)
        except (httpx.TransportError, OSError) as e:
            # TimeoutError (the deadline above) is an OSError; httpx's timeouts are
            # TransportErrors: runtime_error tells them apart.
            if response is not None:
                await response.aclose()
            raise runtime_error(e) from e
        return McpResponse(status=response.status_code, headers=headers, stream=_Relay(response))


async def _read_capped(response: httpx.Response, cap: int) -> bytes | None:
    """The whole body, or ``None`` (read no further) once it is over ``cap`` bytes."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > cap:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


class _Relay:
    """The raw SSE bytes of ``response`` as they arrive (:func:`_relay`).

    Closing it closes the response and gives its pooled connection back, also when no chunk
    was read yet (closing an async generator that never started runs none of its code: a
    stream abandoned before its first chunk would keep its connection out of the pool).
    """

    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self._chunks = _relay(response)

    def __aiter__(self) -> _Relay:
        return self

    async def __anext__(self) -> bytes:
        return await self._chunks.__anext__()

    async def aclose(self) -> None:
        """Stop relaying and close the response (idempotent)."""
        try:
            await self._chunks.aclose()
        finally:
            with contextlib.suppress(Exception), anyio.CancelScope(shield=True):
                await self._response.aclose()


async def _relay(response: httpx.Response) -> AsyncGenerator[bytes, None]:
    """Yield the raw SSE bytes as they arrive; close the runtime stream however it ends."""
    try:
        async for chunk in response.aiter_raw():
            if chunk:
                yield chunk
    except httpx.HTTPError as e:
        raise runtime_error(e) from e
    finally:
        with contextlib.suppress(Exception), anyio.CancelScope(shield=True):
            await response.aclose()
