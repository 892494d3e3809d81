"""The ASGI application: the public MCP endpoint, authentication, and the relay to the runtime.

Routes: ``POST``/``GET``/``DELETE`` on ``/mcp`` and ``/servers/{server_id}/mcp``, and
``GET /health``. Every MCP request has its ``Host`` and ``Origin`` checked against the
allow-lists first (421/403), then is authenticated (401), before anything reaches the runtime
(with ``MCP_GATEWAY_AUTH_DISABLED=1`` every caller is anonymous and public-only); the request
the runtime sees is built from a whitelist of MCP headers, so no header the client sends
(``x-contextforge-*`` included) can reach it; a whitelisted header whose value is not visible
ASCII is answered 400 (``-32000``) in every mode, as the runtime answers it. The runtime's
status, headers and body are relayed unchanged; a client disconnect cancels the runtime call,
and a stream the runtime breaks off ends with a JSON-RPC error event for the request. At most
``max_concurrent_requests`` requests are in progress at once (more: 503, ``Retry-After``).

With ``MCP_CORE_PLUGINS_FILE`` set, the core's plugins run on the calls relayed
(``_plugins``: ``tools/call`` before it is sent and on its answer, ``resources/read`` and
``prompts/get`` on their answers); without it no request or answer is read beyond what the
relay needs.

``GET /health`` passes the same ``Host``/``Origin`` check; it tells anyone the status, and only
an admin token the mode, the runtime's versions and the open session count. It is liveness: 200
while the process serves, ``"status": "degraded"`` in the body when the runtime is not serving.
``GET /ready`` is readiness (``docs/operations.md``, Health): 200 ``{"status": "ready"}`` once the
runtime handshake passed and while the runtime answers its health check, else 503
``{"status": "not_ready", "reason": ...}`` (``starting``, ``runtime_unavailable``, ``draining``
from the first SIGTERM on, see :class:`Readiness`).

Metrics, the request's span and its log line (``_observe``) are recorded only when switched on;
off, the endpoint runs with no observer at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import anyio
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from mcp_gateway import __version__
from mcp_gateway._auth import AuthContext, anonymous_context, authenticate
from mcp_gateway._backend import Backend, McpRequest, McpResponse
from mcp_gateway._byte_budget import ByteBudget, BytesRefused
from mcp_gateway._era import HEADER_MISMATCH, standard_header_fault
from mcp_gateway._errors import (
    AuthError,
    GatewayError,
    RuntimeBusyError,
    RuntimeTimeoutError,
    RuntimeUnavailableError,
)
from mcp_gateway._host_origin import check_host_origin
from mcp_gateway._jsonrpc import (
    BAD_REQUEST,
    INTERNAL_ERROR,
    INVALID_REQUEST,
    REQUEST_TIMEOUT,
    RUNTIME_UNAVAILABLE,
    SERVER_BUSY,
    UNAUTHORIZED,
    error_body,
    request_id_of,
)
from mcp_gateway._observe import Observed, Observer
from mcp_gateway._settings import Mode, Settings
from mcp_gateway._sse import encode_event

if TYPE_CHECKING:
    from anyio.abc import TaskGroup

    from mcp_gateway._aiohttp_backend import AiohttpUdsBackend
    from mcp_gateway._http_backend import HttpUdsBackend
    from mcp_gateway._metrics import GatewayMetrics
    from mcp_gateway._plugins import ProxiedPlugins
    from mcp_gateway._telemetry import Tracing

__all__ = ["InFlight", "Readiness", "create_app", "make_backend"]

logger = logging.getLogger("mcp_gateway")

_JSON = ("content-type", "application/json")

FORWARDED_HEADERS = (
    "mcp-session-id",
    "mcp-protocol-version",
    "accept",
    "last-event-id",
    "content-type",
    "mcp-method",
    "mcp-name",
)
"""The client's headers the runtime gets (each checked to be visible ASCII first)."""

_SINGLE_HEADERS = frozenset(
    ("mcp-session-id", "mcp-protocol-version", "last-event-id", "mcp-method", "mcp-name")
)
"""Of :data:`FORWARDED_HEADERS`, those a request may carry once (400, -32020 otherwise)."""


def _param_headers(headers: Headers) -> tuple[tuple[str, str], ...] | McpResponse:
    """The client's ``Mcp-Param-*`` headers (MCP 2026-07-28, SEP-2243).

    Returns:
        (lower-case name, value without the whitespace around it) pairs, in order; or the 400
        answer (-32020) for one sent twice or not visible ASCII, as the runtime answers it.
    """
    params: dict[str, str] = {}
    for raw_name, raw_value in headers.raw:
        name = raw_name.decode("latin-1").lower()
        if not name.startswith("mcp-param-"):
            continue
        value = raw_value.decode("latin-1").strip(" \t")
        if name in params:
            message = f"duplicate {name} header"
        elif not _VISIBLE_ASCII.fullmatch(value):
            message = f"header {name} is not visible ASCII"
        else:
            params[name] = value
            continue
        return McpResponse(status=400, headers=[_JSON], body=error_body(HEADER_MISMATCH, message, None))
    return tuple(params.items())


_AUTH_DISABLED_WARNING = (
    "authentication is DISABLED (MCP_GATEWAY_AUTH_DISABLED=1): every caller is anonymous and "
    "sees public entries only; for local testing, never for a shared deployment"
)


def make_backend(settings: Settings) -> Backend:
    """Create the backend of ``settings.mode`` (not started yet).

    Returns:
        ``GrpcUdsBackend``, ``AiohttpUdsBackend`` (HTTP/JSON, the default client),
        ``HttpUdsBackend`` (HTTP/JSON with httpx) or ``PythonBaseline``, with the settings'
        request timeout and message limit.

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
        http_backend: type[AiohttpUdsBackend | HttpUdsBackend]
        if settings.http_client == "httpx":
            from mcp_gateway._http_backend import HttpUdsBackend as http_backend
        else:
            from mcp_gateway._aiohttp_backend import AiohttpUdsBackend as http_backend

        assert settings.http_uds is not None
        return http_backend(
            settings.http_uds,
            settings.request_timeout_s,
            settings.runtime_max_message_bytes,
            keepalive_s=settings.runtime_keepalive_s,
            max_connections=settings.max_concurrent_requests,
        )
    from mcp_gateway._baseline import PythonBaseline, Sessions

    assert settings.catalog is not None
    return PythonBaseline(
        settings.catalog,
        max_message_bytes=settings.runtime_max_message_bytes,
        upstream_timeout_s=settings.upstream_timeout_s,
        sessions=Sessions(
            idle_ttl_s=settings.session_idle_ttl_s,
            max_sessions=settings.max_sessions_per_subject,
            max_streams=settings.max_streams_per_subject,
            max_calls=settings.max_calls_per_subject,
        ),
    )


def _is_admin(authorization: str | None, secret: str) -> bool:
    """Whether ``authorization`` carries a valid bearer token of an admin."""
    if not authorization:
        return False
    try:
        return authenticate(authorization, secret).is_admin
    except AuthError:
        return False


def _error_response(
    status: int, code: int, message: str, extra: list[tuple[str, str]] | None = None
) -> McpResponse:
    return McpResponse(status=status, headers=[_JSON, *(extra or [])], body=error_body(code, message))


def _failure(e: GatewayError) -> tuple[int, int, str]:
    """The gateway's answer to a backend failure: HTTP status, JSON-RPC code, message."""
    if isinstance(e, RuntimeUnavailableError):
        return 502, RUNTIME_UNAVAILABLE, "MCP runtime unavailable"
    if isinstance(e, RuntimeTimeoutError):
        return 504, REQUEST_TIMEOUT, "MCP runtime timed out"
    if isinstance(e, RuntimeBusyError):
        return 503, SERVER_BUSY, "Server busy: no connection to the MCP runtime is free"
    return 500, INTERNAL_ERROR, "Internal error"


_VISIBLE_ASCII = re.compile(r"[\t\x20-\x7e]*")
"""A header value (decoded as latin-1) the runtime's HTTP adapter reads: tab or 0x20-0x7E (the
rule of ``http::HeaderValue::to_str``)."""


def _description(text: str) -> str:
    r"""``text`` as an RFC 6750 ``error_description``: only %x20-21 / %x23-5B / %x5D-7E.

    RFC 6750 (section 3) excludes ``"`` and ``\`` from the value altogether (not even as a
    quoted-pair): double quotes become single quotes, anything else outside the set a space.
    """
    text = text.replace('"', "'")
    return "".join(c if " " <= c <= "~" and c != "\\" else " " for c in text)


_SUBSCRIPTION_ID = "io.modelcontextprotocol/subscriptionId"
"""The ``_meta`` key of a listen stream's messages: the listen request's id (SEP-2575)."""


def _sse_boundary(tail: bytes) -> bool:
    """Whether relayed SSE bytes ending in ``tail`` end at an event boundary (a blank line)."""
    return tail == b"" or tail.endswith((b"\n\n", b"\r\r", b"\r\n\r\n"))


KEEP_ALIVE_COMMENT = b": keep-alive\n\n"
"""What a silent SSE answer gets: a comment line and the blank line that ends it, which SSE
clients ignore (WHATWG HTML, server-sent events); byte-for-byte the runtime's."""


class _KeepAlive:
    """The body of an SSE answer, with :data:`KEEP_ALIVE_COMMENT` after each ``period_s`` of silence.

    The relay writes each chunk with :meth:`send`; :meth:`run`, a task of its own, writes the
    comment when nothing was written for ``period_s`` seconds and what was written ends at an
    event boundary (a relayed chunk may end inside an event: then it waits one more period).
    After :meth:`close` it writes nothing, so the relay's last message ends the response.
    """

    def __init__(self, send: Send, period_s: float) -> None:
        self._send = send
        self._period_s = period_s
        self._lock = anyio.Lock()
        self._last = anyio.current_time()
        self._tail = b""
        self._closed = False

    async def send(self, chunk: bytes) -> None:
        """Write ``chunk`` (more of the body follows)."""
        async with self._lock:
            await self._send({"type": "http.response.body", "body": chunk, "more_body": True})
            self._tail = (self._tail + chunk[-4:])[-4:]
            self._last = anyio.current_time()

    async def run(self) -> None:
        """Write the comment after each silence of ``period_s``, until :meth:`close`."""
        while True:
            await anyio.sleep(max(0.0, self._last + self._period_s - anyio.current_time()))
            async with self._lock:
                if self._closed:
                    return
                if anyio.current_time() - self._last < self._period_s:
                    continue
                if _sse_boundary(self._tail):
                    comment = {"type": "http.response.body", "body": KEEP_ALIVE_COMMENT, "more_body": True}
                    await self._send(comment)
                self._last = anyio.current_time()

    async def close(self) -> None:
        """Write nothing more (waits for a comment being written)."""
        async with self._lock:
            self._closed = True


async def _send_response_start(send: Send, response: McpResponse, *, length: int | None) -> None:
    raw = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in response.headers]
    if length is not None:
        raw.append((b"content-length", str(length).encode()))
    await send({"type": "http.response.start", "status": response.status, "headers": raw})


async def _send_whole(send: Send, response: McpResponse) -> None:
    await _send_response_start(send, response, length=len(response.body))
    await send({"type": "http.response.body", "body": response.body, "more_body": False})


class _Exchange:
    """One relayed request's state shared with its disconnect watcher."""

    def __init__(self) -> None:
        self.finished = False
        self.client_left = False


async def _watch_disconnect(receive: Receive, scope: anyio.CancelScope, exchange: _Exchange) -> None:
    """Cancel ``scope`` when the client goes away before the answer was sent (body already read).

    uvicorn also reports a disconnect once the response is complete: that is not the client
    leaving.
    """
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            if not exchange.finished:
                exchange.client_left = True
                scope.cancel()
            return


class _BodyTooLarge(Exception):
    pass


class _ClientGone(Exception):
    pass


async def _read_body(receive: Receive, limit: int, stall_s: float) -> bytes:
    """The whole body; ``TimeoutError`` when no part of it arrives for ``stall_s`` seconds.

    Raises:
        _BodyTooLarge: Past ``limit`` bytes.
        _ClientGone: The client disconnected.
        TimeoutError: The body stalled (a client holding a connection and a request slot).
    """
    chunks: list[bytes] = []
    size = 0
    while True:
        with anyio.fail_after(stall_s):
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


def _content_length(headers: Headers) -> int:
    """The declared body length in bytes; 0 when absent (uvicorn refuses a malformed one)."""
    raw = headers.get("content-length", "")
    return int(raw) if raw.isdigit() else 0


async def _discard_body(receive: Receive, limit: int, stall_s: float) -> None:
    """Read and drop a refused body: at most ``limit`` bytes, each part within ``stall_s``.

    A client that sends its whole body before reading then sees the answer, not a reset.
    """
    left = limit
    with contextlib.suppress(TimeoutError):
        while left > 0:
            with anyio.fail_after(stall_s):
                message = await receive()
            if message["type"] == "http.disconnect":
                return
            left -= len(message.get("body", b""))
            if not message.get("more_body", False):
                return


def _refusal(refused: BytesRefused) -> McpResponse:
    """The answer to a body the byte budget has no room for."""
    extra = [] if refused.retry_after_s is None else [("retry-after", str(refused.retry_after_s))]
    return _error_response(refused.status, refused.code, refused.message, extra)


class McpEndpoint:
    """The ASGI endpoint of ``/mcp`` and ``/servers/{server_id}/mcp``.

    Args:
        settings: The gateway settings (JWT key, body limit).
        backend: Where requests go; started by the app lifespan.
        plugins: The core's plugins to run on the relayed calls; ``None`` for none.
        observer: What records each request (``_observe``); ``None``: nothing is recorded.
    """

    def __init__(
        self,
        settings: Settings,
        backend: Backend,
        plugins: ProxiedPlugins | None = None,
        observer: Observer | None = None,
    ) -> None:
        self._settings = settings
        self._backend = backend
        self._plugins = plugins
        self._observer = observer
        self._budget = ByteBudget(settings.max_bytes_per_subject, settings.max_bytes_in_flight)
        self._endless: set[anyio.CancelScope] = set()
        self._stopping = False
        # The runtime ends its endless streams when the caller's token expires
        # (``Outcome::until_token_expiry``); the baseline's are ended here, the same way.
        self._end_at_token_expiry = settings.mode is Mode.PYTHON

    def end_streams(self) -> None:
        """End the streams that do not end by themselves (GET and listen streams), now and later.

        Called when the server shuts down (after the drain period, ``__main__``): without it
        the server would wait for their clients to leave. Each such stream ends at an event
        boundary; a listen stream's last event is its request's result, as the runtime's drain
        ends it (``{"resultType": "complete"}`` with the subscription id). Calls in progress
        are not touched (``MCP_GATEWAY_SHUTDOWN_GRACE_S`` bounds them).
        """
        self._stopping = True
        for scope in list(self._endless):
            scope.cancel()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Authenticate, build the runtime request, relay the answer (observed when on)."""
        if self._observer is None:
            await self._handle(scope, receive, send, None)
            return
        observed = Observed(self._observer)
        try:
            await self._handle(scope, receive, observed.wrap(send), observed)
        finally:
            observed.finish()

    async def _handle(self, scope: Scope, receive: Receive, send: Send, observed: Observed | None) -> None:
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
        traceparent = headers.get("traceparent", "")
        if observed is not None:
            observed.request_id = trace_id
            traceparent = observed.begin(traceparent, method, scope["path"])
        try:
            if self._settings.auth_disabled:
                auth = anonymous_context(traceparent=traceparent, trace_id=trace_id)
            else:
                auth = authenticate(
                    headers.get("authorization"),
                    self._settings.jwt_secret,
                    traceparent=traceparent,
                    trace_id=trace_id,
                )
        except AuthError as e:
            challenge = 'Bearer realm="mcp-gateway"'
            if headers.get("authorization"):
                challenge += f', error="invalid_token", error_description="{_description(str(e))}"'
            logger.info("401 %s %s: %s", method, scope["path"], e)
            await _send_whole(
                send,
                _error_response(401, UNAUTHORIZED, f"Unauthorized: {e}", [("www-authenticate", challenge)]),
            )
            return
        with contextlib.ExitStack() as held:
            await self._serve(scope, receive, send, auth, trace_id, held, observed)

    async def _serve(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        auth: AuthContext,
        trace_id: str,
        held: contextlib.ExitStack,
        observed: Observed | None = None,
    ) -> None:
        """Read the body, check the forwarded headers, build the runtime request, relay the answer.

        The body is held against the byte budget in ``held`` until the answer is sent.
        """
        method = scope["method"]
        headers = Headers(scope=scope)
        body = b""
        if method == "POST":
            limit = self._settings.max_body_bytes
            declared = _content_length(headers)
            try:
                if declared <= limit:
                    held.enter_context(self._budget.hold(auth.email, declared))
            except BytesRefused as refused:
                await _discard_body(receive, limit, self._settings.header_timeout_s)
                await _send_whole(send, _refusal(refused))
                return
            try:
                body = await _read_body(
                    receive, self._settings.max_body_bytes, self._settings.header_timeout_s
                )
            except TimeoutError:
                stall = self._settings.header_timeout_s
                message = f"Request body stalled for {stall:g} s"
                close = [("connection", "close")]
                await _send_whole(send, _error_response(408, REQUEST_TIMEOUT, message, close))
                return
            except _BodyTooLarge:
                limit = self._settings.max_body_bytes
                message = f"Request body exceeds the limit of {limit} bytes"
                await _send_whole(send, _error_response(413, INVALID_REQUEST, message))
                return
            except _ClientGone:
                return
            if len(body) > declared:
                # Sent without (or beyond) a Content-Length: counted once read.
                try:
                    held.enter_context(self._budget.hold(auth.email, len(body) - declared))
                except BytesRefused as refused:
                    await _send_whole(send, _refusal(refused))
                    return
        values: dict[str, str] = {}
        for name in FORWARDED_HEADERS:
            value = headers.get(name)
            if value is None:
                continue
            if name in _SINGLE_HEADERS and len(headers.getlist(name)) > 1:
                # A proxy that read another of its values would route or resume elsewhere.
                answer = error_body(HEADER_MISMATCH, f"duplicate {name} header", None)
                await _send_whole(send, McpResponse(status=400, headers=[_JSON], body=answer))
                return
            # A field value excludes the whitespace around it (RFC 9110, 5.5); the server
            # leaves it, and neither the SDK's comparison (baseline) nor httpx (which refuses
            # to send such a value) removes it.
            value = value.strip(" \t")
            if not _VISIBLE_ASCII.fullmatch(value):
                # As the runtime's HTTP adapter answers it; never read as absent.
                message = f"Bad Request: header {name} is not visible ASCII"
                await _send_whole(send, _error_response(400, BAD_REQUEST, message))
                return
            values[name] = value
        params = _param_headers(headers)
        if isinstance(params, McpResponse):
            await _send_whole(send, params)
            return
        if method == "POST" and not getattr(self._backend, "carries_standard_headers", True):
            # MCP 2026-07-28: a backend that cannot carry Mcp-Method / Mcp-Name (gRPC) gets
            # them checked here, before any work, as the runtime checks them over HTTP/JSON.
            fault = standard_header_fault(
                values.get("mcp-protocol-version"), values.get("mcp-method"), values.get("mcp-name"), body
            )
            if fault is not None:
                answer = error_body(HEADER_MISMATCH, fault, request_id_of(body))
                await _send_whole(send, McpResponse(status=400, headers=[_JSON], body=answer))
                return
        if observed is not None:
            observed.read(method, body, values.get("mcp-session-id"), trace_id)
        server_id = scope.get("path_params", {}).get("server_id")
        request = McpRequest(
            method=method,
            server_id=server_id,
            auth=auth,
            request_id=trace_id,
            body=body,
            session_id=values.get("mcp-session-id"),
            protocol_version=values.get("mcp-protocol-version"),
            accept=values.get("accept"),
            last_event_id=values.get("last-event-id"),
            content_type=values.get("content-type"),
            mcp_method=values.get("mcp-method"),
            mcp_name=values.get("mcp-name"),
            mcp_params=params,
        )
        await self._relay(request, receive, send)

    async def _relay(self, request: McpRequest, receive: Receive, send: Send) -> None:
        response: McpResponse | None = None
        exchange = _Exchange()
        async with anyio.create_task_group() as tg:
            tg.start_soon(_watch_disconnect, receive, tg.cancel_scope, exchange)
            try:
                if self._plugins is None:
                    response = await self._call(request)
                else:
                    response = await self._call_with_plugins(request, self._plugins)
                if response.stream is None:
                    await _send_whole(send, response)
                else:
                    await _send_response_start(send, response, length=response.length)
                    await self._relay_stream(request, response, response.stream, send, tg)
            finally:
                exchange.finished = True
                if response is not None:
                    with anyio.CancelScope(shield=True):
                        await response.aclose()
                tg.cancel_scope.cancel()
        if exchange.client_left:
            # A normal event (an SSE stream ends this way): not an error.
            logger.info("client disconnected: %s %s cancelled", request.method, request.request_id)

    async def _relay_stream(
        self,
        request: McpRequest,
        response: McpResponse,
        stream: AsyncIterator[bytes],
        send: Send,
        tg: TaskGroup,
    ) -> None:
        """Relay the chunks; a stream the backend breaks off ends with a JSON-RPC error event.

        The head was sent, so the status cannot change: as the runtime does for a stream that
        fails after its head (``docs/http-boundary.md``, Streaming), the request gets its answer
        as the last SSE event, the error the gateway would have answered without a stream (a
        runtime gone mid-stream: ``-32000`` "MCP runtime unavailable"). A GET stream and a
        notification have no request to answer; they just end.

        A stream that does not end by itself (GET, ``subscriptions/listen``) ends when the
        caller's token expires (``exp``), a listen stream with its result as at shutdown: in
        python mode here, in the proxied modes by the runtime.

        An SSE answer silent for ``MCP_GATEWAY_SSE_KEEP_ALIVE_S`` gets a ``: keep-alive``
        comment between its events (:class:`_KeepAlive`, run in ``tg``, the request's task
        group), in every mode: the runtime writes none on its sockets (only on the edge modes'
        public endpoint), so nothing else keeps a silent stream's client and proxies awake.
        """
        sse = (response.header("content-type") or "").startswith("text/event-stream")
        keep_alive = None
        if sse and self._settings.sse_keep_alive_s > 0:
            keep_alive = _KeepAlive(send, self._settings.sse_keep_alive_s)
            tg.start_soon(keep_alive.run)

        async def body(chunk: bytes) -> None:
            if keep_alive is not None:
                await keep_alive.send(chunk)
            else:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})

        tail = b""
        ending = anyio.CancelScope()
        if request.endless and self._end_at_token_expiry and request.auth.token_exp > 0:
            # Authorised when it opened: it must not go on after the token stops being valid.
            left_s = max(0.0, request.auth.token_exp - time.time())
            ending.deadline = anyio.current_time() + left_s
        if request.endless:
            self._endless.add(ending)
            if self._stopping:
                ending.cancel()
        try:
            with ending:
                async for chunk in stream:
                    tail = (tail + chunk[-4:])[-4:]
                    await body(chunk)
            if ending.cancelled_caught and request.method == "POST":
                # A listen stream the shutdown or the token's expiry ended: its result is its
                # last event.
                request_id = request_id_of(request.body)
                result = {"resultType": "complete", "_meta": {_SUBSCRIPTION_ID: request_id}}
                answer = json.dumps({"jsonrpc": "2.0", "id": request_id, "result": result})
                closing = b"" if _sse_boundary(tail) else b"\n\n"
                event = closing + encode_event(answer, "message")
                await body(event)
        except GatewayError as e:
            logger.warning("stream %s ended early: %s", request.request_id, e)
            if self._observer is not None:
                self._observer.boundary_error(e.grpc_status)
            request_id = request_id_of(request.body) if request.method == "POST" else None
            if request_id is not None and sse:
                _, code, message = _failure(e)
                event = encode_event(error_body(code, message, request_id).decode(), "message")
                closing = b"" if _sse_boundary(tail) else b"\n\n"
                await body(closing + event)
        finally:
            self._endless.discard(ending)
            if keep_alive is not None:
                with anyio.CancelScope(shield=True):
                    await keep_alive.close()
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _call(self, request: McpRequest) -> McpResponse:
        try:
            return await self._backend.handle(request)
        except GatewayError as e:
            if self._observer is not None:
                self._observer.boundary_error(e.grpc_status)
            return _failed(request, e)

    async def _call_with_plugins(self, request: McpRequest, plugins: ProxiedPlugins) -> McpResponse:
        """:meth:`_call` with the plugins' pre hook before it and their post hook on its answer."""
        prepared = plugins.prepare(request)
        if prepared is None:
            return await self._call(request)
        if prepared.answer is not None:
            return prepared.answer
        response = await self._call(prepared.request)
        if prepared.post is None:
            return response
        try:
            return await plugins.finish(prepared.post, response)
        except GatewayError as e:
            await response.aclose()
            if self._observer is not None:
                self._observer.boundary_error(e.grpc_status)
            return _failed(request, e)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await response.aclose()
            raise


def _failed(request: McpRequest, e: GatewayError) -> McpResponse:
    """The answer to a request the backend failed (logged)."""
    status, code, message = _failure(e)
    log = logger.error if status == 500 else logger.warning
    log("%d %s %s: %s", status, request.method, request.request_id, e)
    retry = [("retry-after", "1")] if status == 503 else []
    return _error_response(status, code, message, retry)


class ConcurrencyLimit:
    """ASGI middleware: at most ``limit`` HTTP requests in progress; more get 503 at once.

    A request is in progress from its head to the end of its response (an open SSE stream
    counts). Past the limit the answer is 503 with ``Retry-After: 1`` and a JSON-RPC
    ``-32000`` error, before the request is read: the gateway sheds load instead of queueing it
    behind the runtime pool until the request timeout. Open connections are the listener's
    business (``_listener``); uvicorn's ``limit_concurrency`` is not used because it counts
    idle connections too.

    Args:
        app: The wrapped ASGI app.
        limit: Requests in progress at once.
        in_flight: Where the count is kept (read by ``mcp_requests_in_flight`` at each scrape);
            a new one by default.
    """

    def __init__(self, app: ASGIApp, limit: int, in_flight: InFlight | None = None) -> None:
        self._app = app
        self._limit = limit
        self._count = in_flight if in_flight is not None else InFlight()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Count the request, or refuse it past the limit."""
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        count = self._count
        if count.value >= self._limit:
            logger.warning("503 %s %s: %d requests in progress", scope["method"], scope["path"], self._limit)
            busy = _error_response(503, SERVER_BUSY, "Server busy: too many requests in progress")
            busy.headers.append(("retry-after", "1"))
            await _send_whole(send, busy)
            return
        count.value += 1
        try:
            await self._app(scope, receive, send)
        finally:
            count.value -= 1


class InFlight:
    """The number of HTTP requests in progress (:class:`ConcurrencyLimit` keeps it)."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0


class Readiness:
    """The gateway's readiness (``GET /ready``, the metrics listener's ``/ready``).

    Not ready while the app has not started (``starting``), once draining began (``draining``,
    set by the first SIGTERM/SIGINT, see ``__main__``), or when the runtime does not answer its
    health check as serving (``runtime_unavailable``; the check is the backend's own probe, the
    handshake included).

    Args:
        backend: The backend whose health is asked.
    """

    def __init__(self, backend: Backend) -> None:
        self._backend = backend
        self.started = False
        self.draining = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._on_shutdown: list[Callable[[], None]] = []

    def on_shutdown(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (on the event loop, must not raise) when the server shuts down."""
        self._on_shutdown.append(callback)

    def shutting_down(self) -> None:
        """The server begins its shutdown (after the drain period): run the callbacks."""
        self.draining = True
        for callback in self._on_shutdown:
            callback()

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """The loop the backend runs on (set at start-up): :meth:`check_threadsafe` uses it."""
        self._loop = loop
        self.started = True

    async def check(self) -> tuple[bool, str]:
        """``(ready, reason)``; ``reason`` is empty when ready."""
        if self.draining:
            return False, "draining"
        if not self.started:
            return False, "starting"
        health = await self._backend.health()
        if not (health.reachable and health.status == "serving"):
            return False, "runtime_unavailable"
        return True, ""

    def check_threadsafe(self, timeout_s: float = 2.0) -> tuple[bool, str]:
        """:meth:`check` from another thread (the metrics listener's)."""
        if self.draining:
            return False, "draining"
        loop = self._loop
        if loop is None or not self.started or loop.is_closed():
            return False, "starting"
        try:
            return asyncio.run_coroutine_threadsafe(self.check(), loop).result(timeout_s)
        except Exception:
            return False, "runtime_unavailable"


def create_app(
    settings: Settings | None = None,
    backend: Backend | None = None,
    *,
    metrics: GatewayMetrics | None = None,
    tracing: Tracing | None = None,
    readiness: Readiness | None = None,
) -> Starlette:
    """Build the gateway's ASGI app.

    Args:
        settings: Defaults to :meth:`Settings.from_env`. ``/health`` reports ``settings.mode``.
        backend: Defaults to the backend of ``settings.mode`` (see :func:`make_backend`); tests
            and benchmarks may inject any other implementation of :class:`Backend`.
        metrics: The metrics to keep (the listener serving them is the caller's); ``None``: none.
        tracing: The tracer of the requests' spans; ``None``: no span.
        readiness: The readiness state to keep (shared with ``__main__``'s drain and the
            metrics listener); a new one by default.

    Returns:
        A Starlette app whose lifespan starts and closes the backend.

    Raises:
        ConfigError: From :meth:`Settings.from_env`, or an invalid ``MCP_CORE_PLUGINS_FILE``.
    """
    settings = settings or Settings.from_env()
    backend = backend or make_backend(settings)
    plugins = None
    if settings.plugins_file is not None:
        # Imported only with a plugin file: without one the gateway loads nothing of the core.
        from mcp_gateway._plugins import load_plugins

        plugins = load_plugins(settings.plugins_file)
    observer = Observer(settings.mode.value, metrics, tracing) if Observer.wanted(metrics, tracing) else None
    endpoint = McpEndpoint(settings, backend, plugins, observer)
    ready_state = readiness if readiness is not None else Readiness(backend)
    ready_state.on_shutdown(endpoint.end_streams)
    in_flight = InFlight()
    if metrics is not None:
        from mcp_gateway import _metrics

        metrics.watch_in_flight(lambda: in_flight.value)
        if settings.mode is Mode.PYTHON:
            metrics.watch_sessions(lambda: getattr(backend, "open_sessions", 0))
        _metrics.ACTIVE = metrics

    async def health(request: Request) -> Response:
        rejected = check_host_origin(
            request.headers.get("host"),
            request.headers.get("origin"),
            settings.allowed_hosts,
            settings.allowed_origins,
        )
        if rejected is not None:
            logger.info("%d GET /health: %s", rejected[0], rejected[1])
            body = error_body(BAD_REQUEST, f"Forbidden: {rejected[1]}")
            return Response(body, status_code=rejected[0], media_type="application/json")
        runtime = await backend.health()
        ok = runtime.reachable and runtime.status == "serving"
        payload: dict[str, Any] = {"status": "ok" if ok else "degraded"}
        if ready_state.draining:
            payload["draining"] = True
        if settings.auth_disabled:
            payload.update({"auth": "disabled", "warning": _AUTH_DISABLED_WARNING})
        elif _is_admin(request.headers.get("authorization"), settings.jwt_secret):
            payload.update(
                {
                    "mode": settings.mode.value,
                    **({"http_client": settings.http_client} if settings.mode is Mode.HTTP else {}),
                    "gateway_version": __version__,
                    "runtime": {
                        "reachable": runtime.reachable,
                        "status": runtime.status,
                        "runtime_version": runtime.runtime_version,
                        "contract_version": runtime.contract_version,
                        "features": list(runtime.features),
                        "open_sessions": runtime.open_sessions,
                        **(
                            {
                                "state_store": {
                                    "kind": runtime.state_store.kind,
                                    "reachable": runtime.state_store.reachable,
                                }
                            }
                            if runtime.state_store
                            else {}
                        ),
                        **({"detail": runtime.detail} if runtime.detail else {}),
                    },
                }
            )
        return JSONResponse(payload, status_code=200)

    async def ready(request: Request) -> Response:
        rejected = check_host_origin(
            request.headers.get("host"),
            request.headers.get("origin"),
            settings.allowed_hosts,
            settings.allowed_origins,
        )
        if rejected is not None:
            body = error_body(BAD_REQUEST, f"Forbidden: {rejected[1]}")
            return Response(body, status_code=rejected[0], media_type="application/json")
        is_ready, reason = await ready_state.check()
        if is_ready:
            return JSONResponse({"status": "ready"})
        return JSONResponse({"status": "not_ready", "reason": reason}, status_code=503)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        await backend.start()
        ready_state.bind(asyncio.get_running_loop())
        if settings.auth_disabled:
            logger.warning(_AUTH_DISABLED_WARNING)
        if plugins is not None:
            logger.info("plugins of %s: %s", settings.plugins_file, plugins.describe())
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
            ready_state.draining = True
            # No shield scope here: the baseline exits task groups it entered in start().
            await backend.aclose()
            if tracing is not None:
                tracing.shutdown()

    routes = [
        Route("/health", health, methods=["GET"]),
        Route("/ready", ready, methods=["GET"]),
        Route("/mcp", endpoint),
        Route("/servers/{server_id}/mcp", endpoint),
    ]
    return Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=[
            Middleware(ConcurrencyLimit, limit=settings.max_concurrent_requests, in_flight=in_flight)
        ],
    )
