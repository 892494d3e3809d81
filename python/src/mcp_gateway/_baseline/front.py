"""The front layer of the baseline: the runtime's checks first, then the SDK, answers reshaped.

:class:`PythonBaseline` is the backend of mode ``python``. At start it loads the catalog,
discovers every upstream (:mod:`.upstream`) and starts the SDK's ``StreamableHTTPSessionManager``
around the SDK server (:mod:`.server`). Per request it applies the runtime's checks in the
runtime's order (virtual server, protocol version, size, framing, session lookup by subject and
scope), because the SDK's transport answers some malformed requests differently (other codes,
406/415 on headers the runtime does not check, SSE for every answer); then it drives the session
manager in process (:mod:`.asgi`) and reshapes its answer: a stream whose first event is the
response becomes an ``application/json`` body, as the runtime answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import signal
import ssl
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import httpx2
from anyio.abc import TaskGroup
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.shared.exceptions import MCPError
from mcp_types import UNSUPPORTED_PROTOCOL_VERSION
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from mcp_gateway import __version__
from mcp_gateway._accept import accepts, lists
from mcp_gateway._auth import anonymous_context
from mcp_gateway._backend import McpRequest, McpResponse, RuntimeHealth
from mcp_gateway._baseline.asgi import AsgiCall, sse_events
from mcp_gateway._baseline.catalog import UpstreamConfig, load_catalog
from mcp_gateway._baseline.listen import read_filter
from mcp_gateway._baseline.live import LiveCatalog
from mcp_gateway._baseline.server import AUTH_KEY, SCOPE_KEY, build_server
from mcp_gateway._baseline.sessions import LimitReached, Session, Sessions
from mcp_gateway._baseline.upstream import (
    ENVELOPE_SLACK_BYTES,
    SizeCappedTransport,
    Upstream,
)
from mcp_gateway._era import HEADER_MISMATCH, SESSIONLESS_PROTOCOL_VERSIONS, meta_version_fault
from mcp_gateway._jsonrpc import (
    BAD_REQUEST,
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    NOT_FOUND,
    TOO_DEEP,
    FramingError,
    error_body,
    parse_message,
    request_id_of,
    shown,
)
from mcp_gateway._sse import SseEvent, encode_event

__all__ = ["PROTOCOL_VERSIONS", "PythonBaseline"]

logger = logging.getLogger("mcp_gateway._baseline")

PROTOCOL_VERSIONS = ("2025-11-25", "2025-06-18", "2025-03-26")
"""MCP protocol versions spoken, newest first (the runtime's list)."""

_KNOWN_METHODS = frozenset(
    {
        "ping",
        "logging/setLevel",
        "tools/list",
        "tools/call",
        "prompts/list",
        "prompts/get",
        "resources/list",
        "resources/templates/list",
        "resources/read",
        "completion/complete",
        "resources/subscribe",
        "resources/unsubscribe",
    }
)
_PARAMS_UNREAD = frozenset(
    {
        "ping",
        "logging/setLevel",
        "tools/list",
        "prompts/list",
        "resources/list",
        "resources/templates/list",
    }
)
"""Methods whose ``params`` the runtime does not read (it lists everything in one page)."""

_UPSTREAM_CALLS = frozenset({"tools/call", "prompts/get", "resources/read"})
"""Methods that call an upstream: the calls a subject's quota counts (the runtime's ``forward``)."""

MAX_PARAMS_DEPTH = 128
"""Deepest ``params`` of a call the baseline reads (serde_json's limit, which the runtime's
``call_params`` hits: ``-32602``); the SDK's parser stops at about 250 levels."""

_JSON = ("content-type", "application/json")
_SSE_HEADERS = [("content-type", "text/event-stream"), ("cache-control", "no-cache")]


def _unsupported(version: str, request_id: Any) -> McpResponse:
    """The runtime's answer to a version it does not speak that sorts after the session era's newest.

    As ``era.rs`` ``is_newer_unknown`` (any such string, not only a date): 400, ``-32022`` with
    ``data`` ``{"requested", "supported"}``. ``supported`` names what the baseline's
    ``server/discover`` names (the SDK's: the sessionless versions only, where the runtime
    names the session era's too); the conformance suite checks that they agree.
    """
    data = {"requested": shown(version), "supported": list(MODERN_PROTOCOL_VERSIONS)}
    message = f"Unsupported protocol version: {shown(version)}"
    error = {"code": UNSUPPORTED_PROTOCOL_VERSION, "message": message}
    body = json.dumps({"jsonrpc": "2.0", "id": request_id, "error": {**error, "data": data}}).encode()
    return McpResponse(status=400, headers=[_JSON], body=body)


def _listen_filter_is_valid(request: McpRequest) -> bool:
    """Whether ``request`` is a ``subscriptions/listen`` (header and body) whose filter is valid.

    A filter :func:`read_filter` refuses is left to the SDK, which answers ``-32602``.
    """
    if request.mcp_method != "subscriptions/listen" or not request.endless:
        return False
    try:
        message = json.loads(request.body)
        read_filter(message.get("params") if isinstance(message, dict) else None)
    except (ValueError, RecursionError, MCPError):
        return False
    return True


def _error(status: int, code: int, message: str, request_id: Any = None) -> McpResponse:
    return McpResponse(status=status, headers=[_JSON], body=error_body(code, message, request_id))


def _refused(e: LimitReached, request_id: Any = None) -> McpResponse:
    """The runtime's answer to a subject at a limit: 429, ``-32000``, ``Retry-After``."""
    response = _error(e.status, e.code, e.message, request_id)
    response.headers.append(("retry-after", str(e.retry_after_s)))
    return response


class _Held:
    """An answer stream that holds its grants until it ends.

    The grants (an open GET stream, an upstream call in flight) are given back when the stream is
    exhausted, fails, or is closed (``McpResponse.aclose``, also when it never started). Closing
    an async generator that never started runs none of its code, so ``unstarted`` is what
    closing does then (abandon the SDK request behind the stream).

    Args:
        inner: The stream of body chunks.
        grants: Released once, when the stream ends.
        unstarted: Awaited by :meth:`aclose` when no chunk was ever asked for.
    """

    def __init__(
        self,
        inner: AsyncIterator[bytes],
        grants: contextlib.ExitStack | None = None,
        unstarted: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._inner = inner
        self._grants = grants or contextlib.ExitStack()
        self._unstarted = unstarted
        self._started = False

    def __aiter__(self) -> _Held:
        return self

    async def __anext__(self) -> bytes:
        self._started = True
        try:
            return await self._inner.__anext__()
        except BaseException:
            self._grants.close()
            raise

    async def aclose(self) -> None:
        """Close the inner stream (abandoning it if it never started) and release the grants."""
        try:
            if not self._started and self._unstarted is not None:
                self._started = True
                with anyio.CancelScope(shield=True):
                    await self._unstarted()
            aclose = getattr(self._inner, "aclose", None)
            if aclose is not None:
                await aclose()
        finally:
            self._grants.close()


def _depth(value: Any, limit: int) -> int:
    """How deep ``value`` nests (a scalar is 0), counted without recursing up to ``limit + 1``."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        level += 1
        deepest = max(deepest, level)
        if deepest > limit:
            return deepest
        stack.extend((child, level) for child in children)
    return deepest


def _params_problem(params: Any, body: bytes) -> str | None:
    """Why ``params`` cannot be read as a method's params, or ``None`` when they can.

    Readable: absent, ``null``, or an object at most :data:`MAX_PARAMS_DEPTH` deep. The SDK
    refuses a whole message whose params are not.
    """
    if params is None:
        return None
    if params is TOO_DEEP:
        return f"nested deeper than {MAX_PARAMS_DEPTH} levels"
    if not isinstance(params, dict):
        return "params must be an object"
    # Cheap first: a body with few brackets cannot nest deep.
    if (
        body.count(b"[") + body.count(b"{") > MAX_PARAMS_DEPTH
        and _depth(params, MAX_PARAMS_DEPTH) > MAX_PARAMS_DEPTH
    ):
        return f"nested deeper than {MAX_PARAMS_DEPTH} levels"
    return None


def _is_response(data: str) -> bool:
    try:
        value = json.loads(data)
    except ValueError:
        return False
    return isinstance(value, dict) and "method" not in value and ("result" in value or "error" in value)


class PythonBaseline:
    """The MCP runtime in-process (mode ``python``).

    Args:
        catalog_path: The catalog file (``MCP_RUNTIME_CATALOG``).
        max_message_bytes: The runtime's message limit (``--max-message-bytes``), in bytes: the
            largest request body (larger: 413) and the largest upstream result (larger:
            ``-32603`` naming the limit; no upstream message is read past it plus 1 MiB).
        upstream_timeout_s: How long one upstream call may take, in seconds, as the runtime's
            ``--upstream-timeout-ms``.
        sessions: The session table with the runtime's idle TTL and per-subject limits
            (default: the runtime's defaults, see :mod:`.sessions`).
    """

    def __init__(
        self,
        catalog_path: Path,
        *,
        max_message_bytes: int,
        upstream_timeout_s: float = 60.0,
        sessions: Sessions | None = None,
    ) -> None:
        self._catalog_path = catalog_path
        self._max_message_bytes = max_message_bytes
        self._upstream_timeout_s = upstream_timeout_s
        self._live: LiveCatalog | None = None
        self._sessions = Sessions() if sessions is None else sessions
        self._stack: contextlib.AsyncExitStack | None = None
        self._task_group: TaskGroup | None = None
        self._manager: StreamableHTTPSessionManager | None = None
        self._session_ended: list[Callable[[str], Awaitable[None]]] = []

    async def start(self) -> None:
        """Load the catalog, discover every upstream, start the SDK session manager.

        Raises:
            CatalogError: Bad catalog, a required upstream unreachable, a name collision, a
                virtual server naming an unknown tool.
        """
        config = load_catalog(self._catalog_path)
        stack = contextlib.AsyncExitStack()
        await stack.__aenter__()
        try:
            # No JSON response from an upstream is read past the message limit plus slack (the
            # SDK caps SSE events, see Upstream), as the runtime's upstream client does.
            def http_client(headers: dict[str, str], tls: ssl.SSLContext | None = None) -> httpx2.AsyncClient:
                transport = SizeCappedTransport(
                    httpx2.AsyncHTTPTransport(
                        limits=httpx2.Limits(max_connections=1024, max_keepalive_connections=128),
                        verify=True if tls is None else tls,
                    ),
                    self._max_message_bytes + ENVELOPE_SLACK_BYTES,
                )
                return httpx2.AsyncClient(
                    headers=headers, timeout=httpx2.Timeout(30.0, read=None), transport=transport
                )

            http = await stack.enter_async_context(http_client({}))
            task_group = await stack.enter_async_context(anyio.create_task_group())
            stack.callback(task_group.cancel_scope.cancel)

            async def open_upstream(
                upstream_config: UpstreamConfig, held: contextlib.AsyncExitStack
            ) -> Upstream:
                client = http
                headers, tls = upstream_config.http_headers(), upstream_config.tls_context()
                if (headers or tls is not None) and upstream_config.transport == "streamable-http":
                    client = await held.enter_async_context(http_client(headers, tls))
                return Upstream(
                    upstream_config, client, task_group, self._upstream_timeout_s, self._max_message_bytes
                )

            live = LiveCatalog(self._catalog_path, open_upstream, task_group)
            await live.start(config)
            # Its upstreams are stopped before the task group and the shared HTTP client go.
            stack.push_async_callback(live.aclose)
            self._live = live
            catalog = live.catalog
            manager = StreamableHTTPSessionManager(
                app=build_server(live, self._max_message_bytes, session_ended=self._session_ended),
                json_response=False,
                stateless=False,
                security_settings=None,
                session_idle_timeout=None,
                max_request_body_size=self._max_message_bytes + 1024,
                max_sessions=None,
            )
            await stack.enter_async_context(manager.run())
            # The reaper runs in the lifespan's task group: cancelled with it in aclose().
            task_group.start_soon(self._reap_forever)
            self._reload_on_sighup(stack, task_group)
        except BaseException:
            await stack.aclose()
            raise
        self._manager = manager
        self._task_group = task_group
        self._stack = stack
        logger.info(
            "python baseline: %d tools, %d prompts, %d resources, %d templates, %d virtual servers",
            len(catalog.tools),
            len(catalog.prompts),
            len(catalog.resources),
            len(catalog.templates),
            len(catalog.servers),
        )

    def _reload_on_sighup(self, stack: contextlib.AsyncExitStack, task_group: TaskGroup) -> None:
        """Reload the catalog on each ``SIGHUP`` (:meth:`LiveCatalog.reload`), one reload at a time.

        Signals that arrive during a reload make one more. Only where asyncio's signal handling
        works (the main thread of a Unix process); elsewhere the catalog stays fixed (logged).
        """
        send, receive = anyio.create_memory_object_stream[None](1)

        def on_sighup() -> None:
            with contextlib.suppress(anyio.WouldBlock):
                send.send_nowait(None)

        try:
            loop = asyncio.get_running_loop()
            loop.add_signal_handler(signal.SIGHUP, on_sighup)
        except (RuntimeError, ValueError, NotImplementedError, AttributeError) as e:
            logger.info("python baseline: no catalog reload on SIGHUP here: %s", e)
            send.close()
            receive.close()
            return
        stack.callback(loop.remove_signal_handler, signal.SIGHUP)
        stack.callback(send.close)

        async def reload_forever() -> None:
            async with receive:
                async for _ in receive:
                    logger.info("SIGHUP: reloading the catalog %s", self._catalog_path)
                    await self.reload()

        task_group.start_soon(reload_forever)

    async def reload(self) -> None:
        """Read the catalog file again and serve it (:meth:`LiveCatalog.reload`; ``SIGHUP`` calls it).

        Logs one line: ``catalog reloaded`` with what changed, or ``catalog reload refused; the
        old catalog is kept`` with the reason. Never raises for a bad catalog.
        """
        if self._live is not None:
            await self._live.reload()

    async def aclose(self) -> None:
        """Stop the session manager, the upstream sessions and the HTTP client."""
        if self._live is not None:
            for upstream in self._live.upstreams.values():
                upstream.close()
        if self._stack is not None:
            stack, self._stack = self._stack, None
            await stack.aclose()

    @property
    def open_sessions(self) -> int:
        """Sessions held now (``mcp_sessions_open``)."""
        return len(self._sessions)

    async def health(self) -> RuntimeHealth:
        """Always reachable: the runtime is this process."""
        return RuntimeHealth(
            reachable=True,
            status="serving",
            runtime_version=__version__,
            contract_version=None,
            features=("python-baseline",),
            open_sessions=len(self._sessions),
        )

    # --- idle sessions ------------------------------------------------------------------------

    async def _reap_forever(self) -> None:
        """Every :attr:`Sessions.reap_period_s`, end the sessions idle past the TTL."""
        while True:
            await anyio.sleep(self._sessions.reap_period_s)
            reaped = self._sessions.reap_idle()
            for session_id in reaped:
                await self._end_sdk_session(session_id)
            if reaped:
                logger.info("idle sessions ended: %d", len(reaped))

    async def _end_sdk_session(self, session_id: str) -> None:
        """DELETE the SDK's session (its transport and server task), within 5 s."""
        request = McpRequest(
            method="DELETE",
            server_id=None,
            auth=anonymous_context(),
            request_id="reaper",
            session_id=session_id,
        )
        call = self._call(request)
        with anyio.move_on_after(5):
            await call.start()
            await call.read_all()
        call.release()
        await self._ended(session_id)

    async def _ended(self, session_id: str) -> None:
        """Tell the server's hooks (its resource subscriptions) that ``session_id`` ended."""
        for hook in self._session_ended:
            await hook(session_id)

    # --- the front layer: the runtime's checks, then the SDK --------------------------------

    def _find(self, request: McpRequest) -> Session | McpResponse:
        """The caller's session, or the runtime's answer when there is none (400, 404)."""
        if request.session_id is None:
            return _error(400, BAD_REQUEST, "Bad Request: Mcp-Session-Id header is required")
        session = self._sessions.get(request.session_id, request.auth.email, request.server_id)
        if session is None:
            return _error(404, NOT_FOUND, "Session not found")
        return session

    def _lookup(self, request: McpRequest) -> McpResponse | None:
        found = self._find(request)
        return found if isinstance(found, McpResponse) else None

    def _call(self, request: McpRequest, *, session: bool = True, method: str | None = None) -> AsgiCall:
        assert self._task_group is not None
        assert self._manager is not None
        headers = [
            (b"host", b"localhost:4444"),
            (b"content-type", b"application/json"),
            (b"accept", b"application/json, text/event-stream"),
        ]
        if session and request.session_id is not None:
            headers.append((b"mcp-session-id", request.session_id.encode("latin-1")))
        if request.protocol_version is not None:
            headers.append((b"mcp-protocol-version", request.protocol_version.encode("latin-1")))
        for name, value in ((b"mcp-method", request.mcp_method), (b"mcp-name", request.mcp_name)):
            if value is not None:
                headers.append((name, value.encode("latin-1")))
        # SEP-2243's Mcp-Param-* headers, which the SDK checks against the tool's annotations.
        headers.extend((n.encode("latin-1"), v.encode("latin-1")) for n, v in request.mcp_params)
        scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": method or request.method,
            "scheme": "http",
            "path": "/mcp",
            "raw_path": b"/mcp",
            "root_path": "",
            "query_string": b"",
            "headers": headers,
            "client": ("127.0.0.1", 0),
            "server": ("127.0.0.1", 4444),
            "state": {},
            AUTH_KEY: request.auth,
            SCOPE_KEY: request.server_id,
        }
        return AsgiCall(self._task_group, self._manager.handle_request, scope, request.body)

    async def handle(self, request: McpRequest) -> McpResponse:
        """Answer one MCP request the way the runtime does (see the module docstring).

        Never raises for a request: every refusal is an answer (status, JSON-RPC error body),
        with the runtime's status and code.
        """
        scope = request.server_id
        if scope is not None and (self._live is None or scope not in self._live.catalog.servers):
            return _error(404, NOT_FOUND, f"Server not found: {shown(scope)}")
        version = request.protocol_version
        if version in SESSIONLESS_PROTOCOL_VERSIONS:
            return await self._sessionless(request)
        if version is not None and version not in PROTOCOL_VERSIONS and version > PROTOCOL_VERSIONS[0]:
            return _unsupported(version, request_id_of(request.body) if request.method == "POST" else None)
        if version is not None and version not in PROTOCOL_VERSIONS:
            return _error(
                400,
                BAD_REQUEST,
                f"Bad Request: Unsupported protocol version: {version} "
                f"(supported versions: {', '.join(PROTOCOL_VERSIONS)})",
            )
        if request.method == "DELETE":
            return await self._delete(request)
        if request.method == "GET":
            return await self._get(request)
        if (fault := meta_version_fault(version, request.body)) is not None:
            return _error(400, HEADER_MISMATCH, fault, request_id_of(request.body))
        return await self._post(request)

    async def _sessionless(self, request: McpRequest) -> McpResponse:
        """A request of MCP 2026-07-28: no session, handed to the SDK.

        The SDK's session manager serves a version other than the handshake era's on its
        single-exchange path (``server/discover``, the lists with ``ttlMs``/``cacheScope``,
        calls through this server's handlers, the ``_meta``, header and version checks with
        ``-32020``/``-32022``); a GET or DELETE of that revision is 405, as the runtime answers.
        """
        if request.method != "POST":
            message = "Method Not Allowed: protocol version 2026-07-28 has no GET stream or session"
            return _error(405, BAD_REQUEST, message)
        if len(request.body) > self._max_message_bytes:
            return _error(
                413,
                INVALID_REQUEST,
                f"Request body of {len(request.body)} bytes exceeds the limit of "
                f"{self._max_message_bytes} bytes",
            )
        accepts_sse = accepts(request.accept)
        request_id = request_id_of(request.body)
        if not accepts_sse and _listen_filter_is_valid(request):
            # The SDK would answer such a listen as JSON, which never comes: the caller waits
            # without end, holding a stream and the upstream subscriptions. The runtime checks
            # the filter first (-32602 from the SDK below), then Accept.
            message = "Not Acceptable: subscriptions/listen answers text/event-stream"
            return _error(406, INVALID_REQUEST, message, request_id)
        with contextlib.ExitStack() as grants:
            # A listen stream is one of its subject's open streams while it lasts, a call one
            # of its calls in flight (the SDK refuses a body whose method differs from the
            # header, -32020).
            try:
                if request.mcp_method == "subscriptions/listen":
                    grants.enter_context(self._sessions.listen(request.auth.email))
                elif request.mcp_method in _UPSTREAM_CALLS:
                    grants.enter_context(self._sessions.sessionless_call(request.auth.email))
            except LimitReached as e:
                return _refused(e, request_id)
            call = self._call(request, session=False)
            response = await self._answer(request, accepts_sse, call=call, request_id=request_id)
            if response.stream is not None:
                response.stream = _Held(response.stream, grants.pop_all())
            return response
        raise AssertionError("unreachable")

    async def _delete(self, request: McpRequest) -> McpResponse:
        if (refused := self._lookup(request)) is not None:
            return refused
        assert request.session_id is not None
        self._sessions.remove(request.session_id)
        call = self._call(request)
        await call.start()
        await call.read_all()
        call.release()
        await self._ended(request.session_id)
        return McpResponse(status=200)

    async def _get(self, request: McpRequest) -> McpResponse:
        if not lists(request.accept):
            return McpResponse(status=405, headers=[("allow", "POST, DELETE")])
        session = self._find(request)
        if isinstance(session, McpResponse):
            return session
        with contextlib.ExitStack() as grants:
            try:
                grants.enter_context(self._sessions.stream(session))
            except LimitReached as e:
                return _refused(e)
            call = self._call(request)
            start = await call.start()
            if start is None:
                await call.aclose()
                return _error(500, INTERNAL_ERROR, "Internal error")
            status = int(start["status"])
            if status != 200:
                body = await call.read_all()
                call.release()
                return McpResponse(status=status, headers=[_JSON] if body else [], body=body)
            events = sse_events(call)
            if self._live is not None:
                # The session hears of catalog changes it can see while its stream is open.
                live, session_id = self._live, request.session_id
                assert session_id is not None
                live.streams[session_id] = (request.auth, request.server_id)
                grants.callback(live.streams.pop, session_id, None)
            stream = _Held(
                self._relay(None, events, call, request),
                grants.pop_all(),
                unstarted=lambda: self._abandon_events(events, request, call, None),
            )
            return McpResponse(status=200, headers=list(_SSE_HEADERS), stream=stream)
        raise AssertionError("unreachable")

    async def _post(self, request: McpRequest) -> McpResponse:
        if len(request.body) > self._max_message_bytes:
            return _error(
                413,
                INVALID_REQUEST,
                f"Request body of {len(request.body)} bytes exceeds the limit of "
                f"{self._max_message_bytes} bytes",
            )
        try:
            message = parse_message(request.body)
        except FramingError as e:
            return _error(400, e.code, str(e))
        # A client's response (to a server-to-client request relayed during a call) goes to
        # the SDK like a notification: it resolves the request waiting for it.
        if message.kind in ("response", "notification"):
            if (refused := self._lookup(request)) is not None:
                return refused
            call = self._call(request)
            await call.start()
            call.release()
            return McpResponse(status=202)
        if message.method == "initialize":
            return await self._initialize(request, message.id)
        if message.method == "server/discover":
            return _error(200, METHOD_NOT_FOUND, "Method not found: server/discover", message.id)
        session = self._find(request)
        if isinstance(session, McpResponse):
            return session
        if message.method not in _KNOWN_METHODS:
            return _error(200, METHOD_NOT_FOUND, f"Method not found: {shown(message.method)}", message.id)
        accepts_sse = accepts(request.accept)
        request_id = message.id
        problem = _params_problem(message.params, request.body)
        if problem is not None or isinstance(request_id, float):
            # The SDK refuses the whole message (400, -32602 or -32700, or 202 for a float id);
            # the runtime reads params only where it needs them.
            if problem is not None and message.method not in _PARAMS_UNREAD:
                return _error(200, INVALID_PARAMS, f"Invalid params: {problem}", request_id)
            if isinstance(request_id, float):
                request_id = int(request_id)  # an integer written as 1.0 or 1e2
            envelope: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": message.method}
            if problem is None and message.params is not None:
                envelope["params"] = message.params
            request = dataclasses.replace(request, body=json.dumps(envelope).encode())
        with contextlib.ExitStack() as grants:
            if message.method in _UPSTREAM_CALLS:
                try:
                    grants.enter_context(self._sessions.call(session))
                except LimitReached as e:
                    return _refused(e, message.id)
            response = await self._answer(request, accepts_sse, request_id=request_id)
            if response.stream is not None:
                # The call is in flight until its stream ends.
                response.stream = _Held(response.stream, grants.pop_all())
            return response
        raise AssertionError("unreachable")

    async def _initialize(self, request: McpRequest, request_id: Any) -> McpResponse:
        try:
            with self._sessions.opening(request.auth.email) as slot:
                call = self._call(request, session=False)
                response = await self._answer(request, accepts_sse=False, call=call, keep_session_id=True)
                session_id = response.header("mcp-session-id")
                if response.status == 200 and session_id:
                    slot.commit(session_id, request.server_id)
                    logger.info("session %s created for %s", session_id, request.auth.email or "anonymous")
                return response
        except LimitReached as e:
            logger.info("429 initialize: %s", e)
            return _refused(e, request_id)

    async def _answer(
        self,
        request: McpRequest,
        accepts_sse: bool,
        call: AsgiCall | None = None,
        keep_session_id: bool = False,
        request_id: Any = None,
    ) -> McpResponse:
        call = call or self._call(request)
        try:
            return await self._reshape(request, call, accepts_sse, keep_session_id, request_id)
        except BaseException:
            # The client went away before the head: stop the SDK's work, as the runtime does.
            with anyio.CancelScope(shield=True):
                await self._abandon(request, call, request_id)
            raise

    async def _abandon(self, request: McpRequest, call: AsgiCall, request_id: Any) -> None:
        """Cancel an unfinished request: end its response and tell the SDK session to cancel it."""
        await call.aclose()
        if request_id is None or request.session_id is None:
            return
        note = json.dumps(
            {
                "jsonrpc": "2.0",
                "method": "notifications/cancelled",
                "params": {"requestId": request_id, "reason": "client disconnected"},
            }
        ).encode()
        cancel = McpRequest(
            method="POST",
            server_id=request.server_id,
            auth=request.auth,
            request_id=request.request_id,
            body=note,
            session_id=request.session_id,
            protocol_version=request.protocol_version,
        )
        self._call(cancel).release()

    async def _reshape(
        self, request: McpRequest, call: AsgiCall, accepts_sse: bool, keep_session_id: bool, request_id: Any
    ) -> McpResponse:
        start = await call.start()
        if start is None:
            await call.aclose()
            return _error(500, INTERNAL_ERROR, "Internal error")
        status = int(start["status"])
        sdk_headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in start["headers"]}
        session_id = sdk_headers.get("mcp-session-id")
        session_header = [("mcp-session-id", session_id)] if keep_session_id and session_id else []
        if not sdk_headers.get("content-type", "").startswith("text/event-stream"):
            body = await call.read_all()
            call.release()
            return McpResponse(status=status, headers=([_JSON] if body else []) + session_header, body=body)
        events = sse_events(call)
        first: SseEvent | None = None
        async for event in events:
            if _is_response(event.data) or accepts_sse:
                first = event
                break
        if first is None:
            await events.aclose()
            await call.aclose()
            return _error(500, INTERNAL_ERROR, "Request cancelled")
        if _is_response(first.data):
            await events.aclose()
            call.release()
            return McpResponse(status=200, headers=[_JSON, *session_header], body=first.data.encode())
        return McpResponse(
            status=200,
            headers=list(_SSE_HEADERS),
            stream=_Held(
                self._relay(first, events, call, request, request_id),
                unstarted=lambda: self._abandon_events(events, request, call, request_id),
            ),
        )

    async def _abandon_events(
        self, events: AsyncGenerator[SseEvent, None], request: McpRequest, call: AsgiCall, request_id: Any
    ) -> None:
        """What :meth:`_relay` does for a stream it did not finish, for one that never started."""
        await events.aclose()
        await self._abandon(request, call, request_id)

    async def _relay(
        self,
        first: SseEvent | None,
        events: AsyncGenerator[SseEvent, None],
        call: AsgiCall,
        request: McpRequest,
        request_id: Any = None,
    ) -> AsyncIterator[bytes]:
        complete = False
        try:
            if first is not None:
                yield encode_event(first.data, "message")
            async for event in events:
                yield encode_event(event.data, "message")
                if _is_response(event.data):
                    break
            complete = True
        finally:
            with anyio.CancelScope(shield=True):
                await events.aclose()
                if complete:
                    call.release()
                else:
                    await self._abandon(request, call, request_id)
