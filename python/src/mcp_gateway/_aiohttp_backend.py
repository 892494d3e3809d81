"""HTTP/JSON over a Unix socket with aiohttp: the default HTTP/JSON client (``docs/http-boundary.md``).

The same boundary as ``_http_backend`` (httpx, ``MCP_RUST_HTTP_CLIENT=httpx``), with the same
rules: one client per process over the socket; the request built by
:func:`~mcp_gateway._http_wire.runtime_headers`; a JSON body read whole up to the runtime's
message limit plus 1 MiB (past it the runtime's error for a result over the limit), a JSON body
over :data:`~mcp_gateway._http_wire.STREAM_JSON_FROM_BYTES` and every SSE body relayed as they
arrive, with no read timeout on streaming calls; the pool as large as the requests the gateway
admits, a wait for a free connection bounded by :data:`~mcp_gateway._http_wire.POOL_TIMEOUT_S`
(then 503), idle connections dropped after ``MCP_GATEWAY_RUNTIME_KEEPALIVE_S``. aiohttp's
exceptions are mapped in one place, :func:`runtime_error`. Why the two numbers that size the pool
keep one subject from exhausting it is told in ``_http_backend``'s docstring.

Why aiohttp is the default: on the hop alone (``bench/pyhop.py``) it serves several times the
requests per second of httpx from the same Python process; ``docs/findings.md`` has the numbers.

The keep-alive race: a request sent on a reused connection that the runtime closed before a
byte of a response (the runtime closes idle keep-alive connections after its
``--header-read-timeout-ms``) cannot have been processed, and is sent once more on a new
connection. aiohttp does so itself for idempotent methods only; MCP requests are POSTs, so the
gateway does it (:class:`_Attempt` learns from aiohttp's tracing whether the connection was
reused). A fresh connection closed without an answer is not retried.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncGenerator
from types import SimpleNamespace

import aiohttp
import anyio

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

__all__ = ["AiohttpUdsBackend", "runtime_error"]

logger = logging.getLogger(__name__)

_READ_CHUNK_BYTES = 256 * 1024
"""Largest chunk read at once from a JSON body, in bytes."""


def runtime_error(error: aiohttp.ClientError | OSError) -> GatewayError:
    """The gateway error for an aiohttp or socket exception of a call to the runtime.

    Args:
        error: What the call raised: ``TimeoutError`` (the gateway's own deadline), aiohttp's
            connection timeout (which covers the wait for a pooled connection), any other
            aiohttp error or ``OSError`` (socket missing, connection refused or dropped, a body
            cut short).

    Returns:
        :class:`RuntimeBusyError` when no pooled connection freed within the pool timeout (a
        Unix socket connects at once, so a connection timeout is a wait for the pool),
        :class:`RuntimeTimeoutError` for the other timeouts, else
        :class:`RuntimeUnavailableError`.
    """
    if isinstance(error, aiohttp.ConnectionTimeoutError):
        return RuntimeBusyError("every connection to the MCP runtime is in use")
    if isinstance(error, TimeoutError):
        # aiohttp's ServerTimeoutError is a TimeoutError too.
        return RuntimeTimeoutError("MCP runtime timed out")
    return RuntimeUnavailableError(f"MCP runtime unavailable: {type(error).__name__}: {error}")


class _Attempt:
    """What aiohttp's tracing tells about one attempt at sending a request."""

    def __init__(self) -> None:
        self.reused = False

    def unsent(self, error: BaseException) -> bool:
        """Whether the request cannot have been processed: see the module docstring.

        ``session.request`` returns once the response head arrived, so an error it raises
        came before a byte of a response; only a reused connection closed or reset by the
        runtime qualifies.
        """
        return self.reused and isinstance(error, aiohttp.ServerDisconnectedError | aiohttp.ClientOSError)


async def _on_reuse(
    session: aiohttp.ClientSession, context: SimpleNamespace, params: aiohttp.TraceConnectionReuseconnParams
) -> None:
    attempt = context.trace_request_ctx
    if isinstance(attempt, _Attempt):
        attempt.reused = True


class AiohttpUdsBackend(SocketBackend):
    """Reaches the runtime's HTTP/JSON adapter on ``uds_path`` with aiohttp (``GET /health`` probes).

    Args:
        uds_path: Path of the runtime's HTTP socket (``MCP_RUST_UDS``).
        request_timeout_s: Deadline of a non-streaming call, in seconds.
        max_message_bytes: The runtime's message limit, in bytes; JSON bodies are read up to it
            plus 1 MiB.
        keepalive_s: How long an idle pooled connection is kept, in seconds (keep it well below
            the runtime's ``--header-read-timeout-ms``).
        max_connections: Connections to the runtime at once; the gateway's
            ``MCP_GATEWAY_MAX_CONCURRENT_REQUESTS``.
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
        self._session: aiohttp.ClientSession | None = None

    async def _open(self) -> None:
        connector = aiohttp.UnixConnector(
            path=self._uds_path,
            limit=self._max_connections,
            limit_per_host=0,
            keepalive_timeout=self._keepalive_s,
        )
        tracing = aiohttp.TraceConfig()
        tracing.on_connection_reuseconn.append(_on_reuse)
        self._session = aiohttp.ClientSession(
            base_url="http://runtime",
            connector=connector,
            # ``connect`` bounds the wait for a pooled connection; reads are bounded by the
            # gateway's own deadline (non-streaming calls) or not at all (streams).
            timeout=aiohttp.ClientTimeout(total=None, connect=min(POOL_TIMEOUT_S, self._timeout_s)),
            auto_decompress=False,
            # The runtime reads what the client sent: no Content-Type the client did not send.
            skip_auto_headers=("User-Agent", "Content-Type", "Accept-Encoding"),
            trace_configs=[tracing],
        )

    async def aclose(self) -> None:
        """Close the client and its connections."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _require_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("AiohttpUdsBackend.start() was not called")
        return self._session

    async def health(self) -> RuntimeHealth:
        """``GET /health`` on the socket, within 5 s (or the request timeout when shorter)."""
        session = self._require_session()
        try:
            with anyio.fail_after(min(self._timeout_s, 5.0)):
                async with session.get("/health") as response:
                    return health_of(await response.json(content_type=None))
        except (aiohttp.ClientError, OSError, ValueError) as e:
            return RuntimeHealth(reachable=False, status="unavailable", detail=f"{type(e).__name__}: {e}")

    async def _send(self, request: McpRequest) -> aiohttp.ClientResponse:
        """Send the request; once more on a new connection if it cannot have been processed."""
        session = self._require_session()
        headers = runtime_headers(request)
        path = runtime_path(request)
        body = request.body or None
        attempt = _Attempt()
        try:
            return await session.request(
                request.method, path, headers=headers, data=body, trace_request_ctx=attempt
            )
        except (aiohttp.ClientError, OSError) as e:
            if not attempt.unsent(e):
                raise
            logger.info(
                "runtime closed a reused connection before answering: sending again (%s: %s)",
                type(e).__name__,
                e,
            )
        return await session.request(request.method, path, headers=headers, data=body)

    async def _forward(self, request: McpRequest) -> McpResponse:
        """Forward the request; read a JSON body whole, stream an SSE body or a large JSON body.

        Raises:
            RuntimeUnavailableError: Connection refused, socket missing, connection dropped.
            RuntimeTimeoutError: No response head (or JSON body) within the request timeout.
            RuntimeBusyError: No pooled connection freed within :data:`POOL_TIMEOUT_S`.
        """
        response: aiohttp.ClientResponse | None = None
        try:
            with anyio.fail_after(None if request.streaming else self._timeout_s):
                response = await self._send(request)
                headers = relayed_headers(response.raw_headers)
                content_type = response.headers.get("content-type", "")
                if content_type.startswith("text/event-stream"):
                    return McpResponse(status=response.status, headers=headers, stream=_Relay(response))
                length = declared_length(response.headers.get("content-length"))
                if length is not None and STREAM_JSON_FROM_BYTES < length <= self.max_response_bytes:
                    # A large JSON body passes through chunk by chunk: the gateway never holds
                    # it whole (the runtime counts it until it is written).
                    return McpResponse(
                        status=response.status, headers=headers, stream=_Relay(response), length=length
                    )
                body = await _read_capped(response, self.max_response_bytes)
                response.release()
                if body is None:
                    return self.result_too_large_response(request, "a JSON body")
                return McpResponse(status=response.status, headers=headers, body=body)
        except (aiohttp.ClientError, OSError) as e:
            # TimeoutError (the deadline above) is an OSError.
            if response is not None:
                response.close()
            raise runtime_error(e) from e


async def _read_capped(response: aiohttp.ClientResponse, cap: int) -> bytes | None:
    """The whole body, or ``None`` (read no further, connection closed) once it is over ``cap`` bytes."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(_READ_CHUNK_BYTES):
        size += len(chunk)
        if size > cap:
            response.close()
            return None
        chunks.append(chunk)
    return b"".join(chunks)


class _Relay:
    """The raw body bytes of ``response`` as they arrive (:func:`_relay`).

    Closing it releases the response: its connection goes back to the pool when the body was
    read to the end, else it is closed (also when no chunk was read yet).
    """

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self._chunks = _relay(response)

    def __aiter__(self) -> _Relay:
        return self

    async def __anext__(self) -> bytes:
        return await self._chunks.__anext__()

    async def aclose(self) -> None:
        """Stop relaying and release the response (idempotent)."""
        try:
            await self._chunks.aclose()
        finally:
            self._response.release()


async def _relay(response: aiohttp.ClientResponse) -> AsyncGenerator[bytes, None]:
    """Yield the raw body bytes as they arrive; release the runtime stream however it ends."""
    try:
        async for chunk in response.content.iter_any():
            if chunk:
                yield chunk
    except (aiohttp.ClientError, OSError) as e:
        raise runtime_error(e) from e
    finally:
        with contextlib.suppress(Exception):
            response.release()
