"""HTTP/JSON over a Unix socket: the existing default boundary (``docs/http-boundary.md``).

One ``httpx.AsyncClient`` per process over the socket, the way the ContextForge gateway does it.
The request is forwarded with a whitelist of MCP headers plus the two internal ones; the
response is relayed as is: a JSON body is read whole, an SSE body is streamed chunk by chunk
with no read timeout on streaming calls. A JSON body is read up to the runtime's message limit
plus 1 MiB (the runtime never sends more when its limit is the gateway's
``MCP_RUNTIME_MAX_MESSAGE_BYTES``); past it the client gets the runtime's error for a result
over the limit, as the gRPC channel's receive limit gives in gRPC mode. httpx's exceptions are
mapped in one place, :func:`runtime_error`.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from urllib.parse import quote

import anyio
import httpx

from mcp_gateway._backend import McpRequest, McpResponse, RuntimeHealth
from mcp_gateway._errors import GatewayError, RuntimeTimeoutError, RuntimeUnavailableError
from mcp_gateway._socket_backend import DEFAULT_MAX_MESSAGE_BYTES, SocketBackend

__all__ = ["HOP_BY_HOP", "HttpUdsBackend", "runtime_error"]

# Headers that describe one hop, not the message: never relayed.
HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "content-length", "date", "server", "upgrade", "te"}
)

# Open SSE streams each hold a connection, so the pool must be large; idle keep-alive
# connections are what make the unary path cheap.
_LIMITS = httpx.Limits(max_connections=1024, max_keepalive_connections=128, keepalive_expiry=30.0)


def runtime_error(error: httpx.HTTPError | OSError) -> GatewayError:
    """The gateway error for an httpx or socket exception of a call to the runtime.

    Args:
        error: What the call raised: ``TimeoutError`` (the gateway's own deadline), an httpx
            timeout, any other httpx error or ``OSError`` (socket missing, connection refused or
            dropped, a stream broken).

    Returns:
        :class:`RuntimeTimeoutError` for the timeouts, else :class:`RuntimeUnavailableError`.
    """
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
    """

    def __init__(
        self, uds_path: str, request_timeout_s: float, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    ) -> None:
        super().__init__(f"HTTP/JSON socket {uds_path}", request_timeout_s, max_message_bytes)
        self._uds_path = uds_path
        self._client: httpx.AsyncClient | None = None

    async def _open(self) -> None:
        # httpx ignores the client's ``limits=`` when a transport is given: set them here.
        transport = httpx.AsyncHTTPTransport(uds=self._uds_path, limits=_LIMITS, retries=0)
        self._client = httpx.AsyncClient(
            transport=transport, base_url="http://runtime", timeout=httpx.Timeout(self._timeout_s)
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
            data = response.json()
        except (httpx.HTTPError, TimeoutError, ValueError) as e:
            return RuntimeHealth(reachable=False, status="unavailable", detail=f"{type(e).__name__}: {e}")
        return RuntimeHealth(
            reachable=True,
            status=str(data.get("status", "unknown")),
            runtime_version=data.get("runtime_version"),
            contract_version=data.get("contract_version"),
            features=tuple(data.get("features") or ()),
            open_sessions=data.get("open_sessions"),
        )

    def _build(self, request: McpRequest) -> httpx.Request:
        headers = {
            "x-contextforge-auth-context": request.auth.to_header_value(),
            "x-request-id": request.request_id,
        }
        for name, value in (
            ("mcp-session-id", request.session_id),
            ("mcp-protocol-version", request.protocol_version),
            ("accept", request.accept),
            ("last-event-id", request.last_event_id),
            ("content-type", request.content_type),
        ):
            if value is not None:
                headers[name] = value
        path = (
            f"/servers/{quote(request.server_id, safe='')}/mcp" if request.server_id is not None else "/mcp"
        )
        # Streaming calls (a standalone GET stream, a POST asking for progress) have no read
        # timeout: a GET may stay silent for hours, and the runtime's upstream timeout bounds a
        # tool call. Other calls keep the request timeout on every read.
        timeout = httpx.Timeout(self._timeout_s, read=None) if request.streaming else None
        client = self._require_client()
        if timeout is None:
            return client.build_request(request.method, path, headers=headers, content=request.body)
        return client.build_request(
            request.method, path, headers=headers, content=request.body, timeout=timeout
        )

    async def _forward(self, request: McpRequest) -> McpResponse:
        """Forward the request; read a JSON body whole, stream an SSE body.

        Raises:
            RuntimeUnavailableError: Connection refused, socket missing, connection dropped.
            RuntimeTimeoutError: No response head (or JSON body) within the request timeout.
        """
        client = self._require_client()
        http_request = self._build(request)
        response: httpx.Response | None = None
        try:
            with anyio.fail_after(None if request.streaming else self._timeout_s):
                response = await client.send(http_request, stream=True)
                headers = [
                    (k.decode("latin-1").lower(), v.decode("latin-1"))
                    for k, v in response.headers.raw
                    if k.decode("latin-1").lower() not in HOP_BY_HOP
                ]
                content_type = response.headers.get("content-type", "")
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
        return McpResponse(status=response.status_code, headers=headers, stream=_relay(response))


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


async def _relay(response: httpx.Response) -> AsyncIterator[bytes]:
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
