"""The ASGI application: the public MCP endpoint, authentication, and the relay to the runtime.

Routes: ``POST``/``GET``/``DELETE`` on ``/mcp`` and ``/servers/{server_id}/mcp``, and
``GET /health``. Every MCP request has its ``Host`` and ``Origin`` checked against the
allow-lists first (421/403), then is authenticated (401), before anything reaches the runtime
(with ``MCP_GATEWAY_AUTH_DISABLED=1`` every caller is anonymous and public-only); the request
the runtime sees is built from a whitelist of MCP headers, so no header the client sends
(``x-contextforge-*`` included) can reach it. The runtime's status, headers
and body are relayed unchanged; a client disconnect cancels the runtime call.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from mcp_gateway import __version__
from mcp_gateway._auth import anonymous_context, authenticate
from mcp_gateway._backend import Backend, McpRequest, McpResponse
from mcp_gateway._errors import AuthError, GatewayError, RuntimeTimeoutError, RuntimeUnavailableError
from mcp_gateway._host_origin import check_host_origin
from mcp_gateway._jsonrpc import (
    BAD_REQUEST,
    INTERNAL_ERROR,
    INVALID_REQUEST,
    REQUEST_TIMEOUT,
    RUNTIME_UNAVAILABLE,
    UNAUTHORIZED,
    error_body,
)
from mcp_gateway._settings import Mode, Settings

__all__ = ["create_app", "make_backend"]

logger = logging.getLogger("mcp_gateway")

_JSON = ("content-type", "application/json")

_AUTH_DISABLED_WARNING = (
    "authentication is DISABLED (MCP_GATEWAY_AUTH_DISABLED=1): every caller is anonymous and "
    "sees public entries only; for local testing, never for a shared deployment"
)


def make_backend(settings: Settings) -> Backend:
    """Create the backend of ``settings.mode`` (not started yet).

    Returns:
        ``GrpcUdsBackend``, ``HttpUdsBackend`` or ``PythonBaseline``, with the settings' request
        timeout and message limit.

    Raises:
        ImportError: gRPC mode without generated stubs (``make python-proto``).
    """
    if settings.mode is Mode.GRPC:
        from mcp_gateway._grpc_backend import GrpcUdsBackend

        assert settings.grpc_uds is not None
        return GrpcUdsBackend(
            settings.grpc_uds, settings.request_timeout_s, settings.runtime_max_message_bytes
        )
    if settings.mode is Mode.HTTP:
        from mcp_gateway._http_backend import HttpUdsBackend

        assert settings.http_uds is not None
        return HttpUdsBackend(
            settings.http_uds, settings.request_timeout_s, settings.runtime_max_message_bytes
        )
    from mcp_gateway._baseline import PythonBaseline

    assert settings.catalog is not None
    return PythonBaseline(
        settings.catalog,
        max_message_bytes=settings.runtime_max_message_bytes,
        upstream_timeout_s=settings.upstream_timeout_s,
    )


def _error_response(
    status: int, code: int, message: str, extra: list[tuple[str, str]] | None = None
) -> McpResponse:
    return McpResponse(status=status, headers=[_JSON, *(extra or [])], body=error_body(code, message))


async def _send_response_start(send: Send, response: McpResponse, *, length: int | None) -> None:
    raw = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in response.headers]
    if length is not None:
        raw.append((b"content-length", str(length).encode()))
    await send({"type": "http.response.start", "status": response.status, "headers": raw})


async def _send_whole(send: Send, response: McpResponse) -> None:
    await _send_response_start(send, response, length=len(response.body))
    await send({"type": "http.response.body", "body": response.body, "more_body": False})


async def _watch_disconnect(receive: Receive, scope: anyio.CancelScope) -> None:
    """Cancel ``scope`` when the client goes away (the body was already read)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            scope.cancel()
            return


class _BodyTooLarge(Exception):
    pass


class _ClientGone(Exception):
    pass


async def _read_body(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


class McpEndpoint:
    """The ASGI endpoint of ``/mcp`` and ``/servers/{server_id}/mcp``.

    Args:
        settings: The gateway settings (JWT key, body limit).
        backend: Where requests go; started by the app lifespan.
    """

    def __init__(self, settings: Settings, backend: Backend) -> None:
        self._settings = settings
        self._backend = backend

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Authenticate, build the runtime request, relay the answer."""
        method = scope["method"]
        headers = Headers(scope=scope)
        if method not in ("GET", "POST", "DELETE"):
            await _send_whole(send, McpResponse(status=405, headers=[("allow", "GET, POST, DELETE")]))
            return
        rejected = check_host_origin(
            headers.get("host"),
            headers.get("origin"),
            self._settings.allowed_hosts,
            self._settings.allowed_origins,
        )
        if rejected is not None:
            logger.info("%d %s %s: %s", rejected[0], method, scope["path"], rejected[1])
            await _send_whole(send, _error_response(rejected[0], BAD_REQUEST, f"Forbidden: {rejected[1]}"))
            return
        trace_id = uuid.uuid4().hex
        try:
            if self._settings.auth_disabled:
                auth = anonymous_context(traceparent=headers.get("traceparent", ""), trace_id=trace_id)
            else:
                auth = authenticate(
                    headers.get("authorization"),
                    self._settings.jwt_secret,
                    traceparent=headers.get("traceparent", ""),
                    trace_id=trace_id,
                )
        except AuthError as e:
            challenge = 'Bearer realm="mcp-gateway"'
            if headers.get("authorization"):
                challenge += f', error="invalid_token", error_description="{e}"'.replace("\n", " ")
            logger.info("401 %s %s: %s", method, scope["path"], e)
            await _send_whole(
                send,
                _error_response(401, UNAUTHORIZED, f"Unauthorized: {e}", [("www-authenticate", challenge)]),
            )
            return
        body = b""
        if method == "POST":
            try:
                body = await _read_body(receive, self._settings.max_body_bytes)
            except _BodyTooLarge:
                limit = self._settings.max_body_bytes
                message = f"Request body exceeds the limit of {limit} bytes"
                await _send_whole(send, _error_response(413, INVALID_REQUEST, message))
                return
            except _ClientGone:
                return
        server_id = scope.get("path_params", {}).get("server_id")
        request = McpRequest(
            method=method,
            server_id=server_id,
            auth=auth,
            request_id=trace_id,
            body=body,
            session_id=headers.get("mcp-session-id"),
            protocol_version=headers.get("mcp-protocol-version"),
            accept=headers.get("accept"),
            last_event_id=headers.get("last-event-id"),
            content_type=headers.get("content-type"),
        )
        await self._relay(request, receive, send)

    async def _relay(self, request: McpRequest, receive: Receive, send: Send) -> None:
        response: McpResponse | None = None
        async with anyio.create_task_group() as tg:
            tg.start_soon(_watch_disconnect, receive, tg.cancel_scope)
            try:
                response = await self._call(request)
                if response.stream is None:
                    await _send_whole(send, response)
                else:
                    await _send_response_start(send, response, length=None)
                    try:
                        async for chunk in response.stream:
                            await send({"type": "http.response.body", "body": chunk, "more_body": True})
                    except GatewayError as e:
                        logger.warning("stream %s ended early: %s", request.request_id, e)
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
            finally:
                if response is not None:
                    with anyio.CancelScope(shield=True):
                        await response.aclose()
                tg.cancel_scope.cancel()

    async def _call(self, request: McpRequest) -> McpResponse:
        try:
            return await self._backend.handle(request)
        except RuntimeUnavailableError as e:
            logger.warning("502 %s %s: %s", request.method, request.request_id, e)
            return _error_response(502, RUNTIME_UNAVAILABLE, "MCP runtime unavailable")
        except RuntimeTimeoutError as e:
            logger.warning("504 %s %s: %s", request.method, request.request_id, e)
            return _error_response(504, REQUEST_TIMEOUT, "MCP runtime timed out")
        except GatewayError as e:
            logger.error("500 %s %s: %s", request.method, request.request_id, e)
            return _error_response(500, INTERNAL_ERROR, "Internal error")


def create_app(settings: Settings | None = None, backend: Backend | None = None) -> Starlette:
    """Build the gateway's ASGI app.

    Args:
        settings: Defaults to :meth:`Settings.from_env`. ``/health`` reports ``settings.mode``.
        backend: Defaults to the backend of ``settings.mode`` (see :func:`make_backend`); tests
            and benchmarks may inject any other implementation of :class:`Backend`.

    Returns:
        A Starlette app whose lifespan starts and closes the backend.

    Raises:
        ConfigError: From :meth:`Settings.from_env`.
    """
    settings = settings or Settings.from_env()
    backend = backend or make_backend(settings)
    endpoint = McpEndpoint(settings, backend)

    async def health(_request: Request) -> JSONResponse:
        runtime = await backend.health()
        payload: dict[str, Any] = {
            "status": "ok" if runtime.reachable and runtime.status == "serving" else "degraded",
            "mode": settings.mode.value,
            "gateway_version": __version__,
            **({"auth": "disabled", "warning": _AUTH_DISABLED_WARNING} if settings.auth_disabled else {}),
            "runtime": {
                "reachable": runtime.reachable,
                "status": runtime.status,
                "runtime_version": runtime.runtime_version,
                "contract_version": runtime.contract_version,
                "features": list(runtime.features),
                "open_sessions": runtime.open_sessions,
            },
        }
        if runtime.detail:
            payload["runtime"]["detail"] = runtime.detail
        return JSONResponse(payload, status_code=200 if payload["status"] == "ok" else 503)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        await backend.start()
        if settings.auth_disabled:
            logger.warning(_AUTH_DISABLED_WARNING)
        where = {Mode.GRPC: settings.grpc_uds, Mode.HTTP: settings.http_uds, Mode.PYTHON: settings.catalog}
        logger.info(
            "mcp-gateway %s: mode=%s (%s), listening on http://%s:%d/mcp",
            __version__,
            settings.mode.value,
            where[settings.mode],
            settings.host,
            settings.port,
        )
        try:
            yield
        finally:
            # No shield scope here: the baseline exits task groups it entered in start().
            await backend.aclose()

    routes = [
        Route("/health", health, methods=["GET"]),
        Route("/mcp", endpoint),
        Route("/servers/{server_id}/mcp", endpoint),
    ]
    return Starlette(routes=routes, lifespan=lifespan)
