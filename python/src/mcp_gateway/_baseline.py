"""The Python baseline: the MCP runtime's behaviour in-process, on the official mcp SDK.

Server side: a low-level ``mcp.server.Server`` whose handlers serve the catalog, behind the SDK's
``StreamableHTTPSessionManager``. Client side: the SDK's streamable HTTP client to the upstreams
(``_upstream``). Same catalog file, same visibility and session-ownership rules, same status
codes and JSON-RPC error codes as the runtime (``docs/http-boundary.md``).

The SDK's transport answers some malformed requests differently from the runtime (other codes,
406/415 on headers the runtime does not check, SSE for every answer), so a thin front layer
applies the runtime's checks in the runtime's order first (virtual server, protocol version,
size, framing, session lookup by subject and scope) and reshapes the SDK's answers: a stream
whose first event is the response becomes an ``application/json`` body, as the runtime answers.
Remaining differences are listed in ``python/README.md``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import warnings
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx2
import mcp_types as types
import pydantic_core
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream
from mcp.server.lowlevel.server import Server
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.shared.exceptions import MCPError
from mcp_types.methods import serialize_server_result
from pydantic import BaseModel
from starlette.types import ASGIApp, Message

from mcp_gateway import __version__
from mcp_gateway._auth import AuthContext
from mcp_gateway._backend import McpRequest, McpResponse, RuntimeHealth
from mcp_gateway._catalog import Catalog, Kind, load_catalog
from mcp_gateway._errors import CatalogError
from mcp_gateway._jsonrpc import (
    BAD_REQUEST,
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    NOT_FOUND,
    PARSE_ERROR,
    RESOURCE_NOT_FOUND,
    error_body,
)
from mcp_gateway._settings import Mode
from mcp_gateway._sse import SseEvent, SseParser, encode_event
from mcp_gateway._upstream import ENVELOPE_SLACK_BYTES, SizeCappedTransport, Upstream, log_sink

__all__ = ["PROTOCOL_VERSIONS", "PythonBaseline", "check_result_size", "parse_message"]

logger = logging.getLogger(__name__)

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
    }
)
_JSON = ("content-type", "application/json")
_SSE_HEADERS = [("content-type", "text/event-stream"), ("cache-control", "no-cache")]
_AUTH_KEY = "mcp_gateway.auth"
_SCOPE_KEY = "mcp_gateway.server_id"


# --- framing (the runtime's jsonrpc::parse, error for error) ---------------------------------


class FramingError(Exception):
    """A body that is not one JSON-RPC message; ``code`` is the JSON-RPC error code."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class ParsedMessage:
    """One parsed message: ``kind`` is ``request``, ``notification`` or ``response``."""

    kind: str
    id: Any = None
    method: str = ""
    params: Any = None


_ENVELOPE_FIELDS = frozenset({"jsonrpc", "id", "method", "params", "result", "error"})

# Longest caller-supplied name echoed in an error message, in bytes (as the runtime cuts it).
_SHOWN_NAME_BYTES = 128


class _Object(dict[str, Any]):
    """A decoded JSON object that remembers which keys appeared more than once."""

    duplicates: frozenset[str] = frozenset()


def _object(pairs: list[tuple[str, Any]]) -> _Object:
    obj = _Object(pairs)
    if len(obj) != len(pairs):
        keys = [k for k, _ in pairs]
        obj.duplicates = frozenset(k for k in obj if keys.count(k) > 1)
    return obj


def _shown(name: str) -> str:
    """``name`` cut to 128 UTF-8 bytes on a character boundary, ``...`` appended when cut."""
    raw = name.encode("utf-8", "surrogatepass")
    if len(raw) <= _SHOWN_NAME_BYTES:
        return name
    return raw[:_SHOWN_NAME_BYTES].decode("utf-8", "ignore") + "..."


def parse_message(body: bytes) -> ParsedMessage:
    """Classify a body as the runtime does.

    Raises:
        FramingError: ``-32700`` for non-UTF-8 or invalid JSON, ``-32600`` for a batch array or
            JSON that is not a JSON-RPC 2.0 request, notification or response.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise FramingError(PARSE_ERROR, f"Parse error: body is not UTF-8: {e}") from e
    stripped = text.lstrip()
    if not stripped:
        raise FramingError(PARSE_ERROR, "Parse error: empty body")
    try:
        value = json.loads(text, object_pairs_hook=_object)
    except ValueError as e:
        raise FramingError(PARSE_ERROR, f"Parse error: {e}") from e
    except RecursionError as e:
        # The runtime skips deep values without recursing; Python's decoder recurses, so
        # nesting deeper than its stack allows is a parse error here (400 either way).
        raise FramingError(PARSE_ERROR, "Parse error: nesting too deep") from e
    if isinstance(value, list):
        raise FramingError(INVALID_REQUEST, "Invalid Request: batch arrays are not supported")
    if not isinstance(value, dict):
        raise FramingError(INVALID_REQUEST, "Invalid Request: a message must be a JSON object")
    if isinstance(value, _Object) and value.duplicates & _ENVELOPE_FIELDS:
        dup = sorted(value.duplicates & _ENVELOPE_FIELDS)[0]
        raise FramingError(INVALID_REQUEST, f"Invalid Request: duplicate field `{dup}`")
    if value.get("jsonrpc") != "2.0":
        raise FramingError(INVALID_REQUEST, 'Invalid Request: jsonrpc must be "2.0"')
    # A present `"id": null` is invalid (MCP: the ID MUST NOT be null), as in the runtime.
    has_id = "id" in value
    msg_id = value.get("id")
    # A number out of a double's range (``1e400``) decodes to inf and cannot be echoed as
    # JSON: invalid, as in the runtime.
    if has_id and (
        isinstance(msg_id, bool)
        or not isinstance(msg_id, str | int | float)
        or (isinstance(msg_id, float) and not math.isfinite(msg_id))
    ):
        raise FramingError(INVALID_REQUEST, "Invalid Request: id must be a string or a number")
    method = value.get("method")
    if method is not None and not isinstance(method, str):
        raise FramingError(INVALID_REQUEST, "Invalid Request: method must be a string")
    if method is not None and ("result" in value or "error" in value):
        raise FramingError(
            INVALID_REQUEST,
            "Invalid Request: a message cannot carry both a method and a result or error",
        )
    if method is not None and has_id:
        return ParsedMessage("request", msg_id, method, value.get("params"))
    if method is not None:
        return ParsedMessage("notification", None, method, value.get("params"))
    if has_id and (("result" in value) != ("error" in value)):
        return ParsedMessage("response", msg_id)
    raise FramingError(INVALID_REQUEST, "Invalid Request: not a request, notification or response")


def check_result_size(result: Any, limit: int, method: str, version: str | None) -> None:
    """Refuse an upstream result over the message limit, as the runtime does.

    The runtime measures the upstream's raw result; the baseline measures the result as it
    would send it (the SDK's wire form of ``method`` for the negotiated ``version``). Cheap
    first: the model's full dump, which only the wire form's sieve can shrink; the wire form is
    built only when that dump is over the limit.

    Raises:
        MCPError: ``-32603`` "Result of N bytes exceeds the message size limit of L bytes".
    """
    size = len(pydantic_core.to_json(result, by_alias=True, exclude_none=True))
    if size > limit and version is not None:
        dumped = (
            result.model_dump(by_alias=True, mode="json", exclude_none=True)
            if isinstance(result, BaseModel)
            else dict(result)
        )
        with contextlib.suppress(ValueError, KeyError):
            size = len(pydantic_core.to_json(serialize_server_result(method, version, dumped)))
    if size > limit:
        raise MCPError(
            code=INTERNAL_ERROR,
            message=f"Result of {size} bytes exceeds the message size limit of {limit} bytes",
        )


def _error(status: int, code: int, message: str, request_id: Any = None) -> McpResponse:
    return McpResponse(status=status, headers=[_JSON], body=error_body(code, message, request_id))


def _is_response(data: str) -> bool:
    try:
        value = json.loads(data)
    except ValueError:
        return False
    return isinstance(value, dict) and "method" not in value and ("result" in value or "error" in value)


# --- running the SDK's ASGI app for one request ----------------------------------------------


class _AsgiCall:
    """Runs the SDK session manager for one synthesized request in the baseline's task group."""

    def __init__(self, task_group: TaskGroup, app: ASGIApp, scope: dict[str, Any], body: bytes) -> None:
        self._task_group = task_group
        send_stream, self._messages = anyio.create_memory_object_stream[Message](64)
        self._cancel = anyio.CancelScope()
        self.finished = anyio.Event()
        delivered = False

        async def receive() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            await anyio.sleep_forever()
            raise AssertionError("unreachable")

        async def run() -> None:
            with self._cancel:
                async with send_stream:
                    try:
                        await app(scope, receive, send_stream.send)
                    except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                        pass
                    except Exception:
                        logger.exception("baseline request failed")
            self.finished.set()

        task_group.start_soon(run)

    @property
    def messages(self) -> MemoryObjectReceiveStream[Message]:
        """The ASGI messages the SDK sends, in order."""
        return self._messages

    async def start(self) -> Message | None:
        """The ``http.response.start`` message, or ``None`` when the app ended without one."""
        async for message in self._messages:
            if message["type"] == "http.response.start":
                return message
        return None

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body chunks, until the last one."""
        async for message in self._messages:
            if message["type"] != "http.response.body":
                continue
            if message.get("body"):
                yield message["body"]
            if not message.get("more_body", False):
                return

    async def read_all(self) -> bytes:
        """The whole body."""
        return b"".join([chunk async for chunk in self.chunks()])

    async def aclose(self) -> None:
        """Abandon the request: cancel the SDK's work for it (the client went away)."""
        self._cancel.cancel()
        await self._messages.aclose()

    def release(self) -> None:
        """The answer is complete: let the SDK finish the response in the background.

        Never cancel a response the SDK is still writing: the session manager discards a
        session whose opening request did not complete.
        """

        async def drain() -> None:
            with anyio.move_on_after(30):
                async for _ in self._messages:
                    pass
            self._cancel.cancel()
            await self._messages.aclose()

        self._task_group.start_soon(drain)


async def _events(call: _AsgiCall) -> AsyncGenerator[SseEvent, None]:
    parser = SseParser()
    async for chunk in call.chunks():
        for event in parser.feed(chunk):
            yield event


# --- the baseline ------------------------------------------------------------------------------


class PythonBaseline:
    """The MCP runtime in-process (mode ``python``).

    Args:
        catalog_path: The catalog file (``MCP_RUNTIME_CATALOG``).
        max_message_bytes: The runtime's message limit (``--max-message-bytes``), in bytes: the
            largest request body (larger: 413) and the largest upstream result (larger:
            ``-32603`` naming the limit; no upstream message is read past it plus 1 MiB).
        upstream_timeout_s: How long one upstream call may take, in seconds, as the runtime's
            ``--upstream-timeout-ms``.
    """

    def __init__(
        self, catalog_path: Path, *, max_message_bytes: int, upstream_timeout_s: float = 60.0
    ) -> None:
        self._catalog_path = catalog_path
        self._max_message_bytes = max_message_bytes
        self._upstream_timeout_s = upstream_timeout_s
        self._catalog = Catalog()
        self._upstreams: dict[str, Upstream] = {}
        self._sessions: dict[str, tuple[str, str | None]] = {}
        self._stack: contextlib.AsyncExitStack | None = None
        self._task_group: TaskGroup | None = None
        self._manager: StreamableHTTPSessionManager | None = None

    @property
    def mode(self) -> Mode:
        """Always :attr:`Mode.PYTHON`."""
        return Mode.PYTHON

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
            transport = SizeCappedTransport(
                httpx2.AsyncHTTPTransport(
                    limits=httpx2.Limits(max_connections=1024, max_keepalive_connections=128)
                ),
                self._max_message_bytes + ENVELOPE_SLACK_BYTES,
            )
            http = await stack.enter_async_context(
                httpx2.AsyncClient(timeout=httpx2.Timeout(30.0, read=None), transport=transport)
            )
            task_group = await stack.enter_async_context(anyio.create_task_group())
            stack.callback(task_group.cancel_scope.cancel)
            catalog = Catalog()
            for upstream_config in config.upstreams:
                upstream = Upstream(
                    upstream_config, http, task_group, self._upstream_timeout_s, self._max_message_bytes
                )
                self._upstreams[upstream_config.id] = upstream
                try:
                    found = await upstream.list_all()
                except MCPError as e:
                    if upstream_config.required:
                        raise CatalogError(
                            f"required upstream unavailable at start: {e.error.message}"
                        ) from e
                    logger.warning("optional upstream %s unavailable at start: %s", upstream_config.id, e)
                    continue
                for kind in ("tool", "prompt", "resource", "template"):
                    catalog.add(upstream_config, kind, found[kind])
            catalog.add_servers(config.servers)
            self._catalog = catalog
            manager = StreamableHTTPSessionManager(
                app=self._build_server(),
                json_response=False,
                stateless=False,
                security_settings=None,
                session_idle_timeout=None,
                max_request_body_size=self._max_message_bytes + 1024,
                max_sessions=None,
            )
            await stack.enter_async_context(manager.run())
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

    async def aclose(self) -> None:
        """Stop the session manager, the upstream sessions and the HTTP client."""
        for upstream in self._upstreams.values():
            upstream.close()
        if self._stack is not None:
            stack, self._stack = self._stack, None
            await stack.aclose()

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

    # --- the SDK server ---------------------------------------------------------------------

    def _build_server(self) -> Server[Any]:
        catalog = self._catalog
        limit = self._max_message_bytes

        def caller(ctx: Any) -> tuple[AuthContext, str | None]:
            scope = ctx.request.scope
            return scope[_AUTH_KEY], scope[_SCOPE_KEY]

        # The list handlers return plain JSON objects (the runner accepts dicts, HandlerResult):
        # the catalog keeps the upstreams' JSON, no model round trip per listing.
        async def list_tools(ctx: Any, params: Any) -> Any:
            auth, scope = caller(ctx)
            return {"tools": list(catalog.visible("tool", auth, scope))}

        async def list_prompts(ctx: Any, params: Any) -> Any:
            auth, scope = caller(ctx)
            return {"prompts": list(catalog.visible("prompt", auth, scope))}

        async def list_resources(ctx: Any, params: Any) -> Any:
            auth, scope = caller(ctx)
            return {"resources": list(catalog.visible("resource", auth, scope))}

        async def list_templates(ctx: Any, params: Any) -> Any:
            auth, scope = caller(ctx)
            return {"resourceTemplates": list(catalog.visible_templates(auth, scope))}

        def route(ctx: Any, kind: Kind, name: str) -> Upstream:
            auth, scope = caller(ctx)
            entry = catalog.lookup(kind, name, auth, scope)
            if entry is None:
                # Not visible is answered exactly like not existing.
                if kind == "resource":
                    raise MCPError(code=RESOURCE_NOT_FOUND, message=f"Resource not found: {_shown(name)}")
                raise MCPError(code=INVALID_PARAMS, message=f"Unknown {kind}: {name}")
            return self._upstreams[entry.upstream]

        async def forwarding(ctx: Any, fn: Any) -> Any:
            """Run an upstream call, forwarding its notifications onto this request's stream.

            A result over the message limit is refused (:func:`check_result_size`).
            """
            inflight = 0
            idle = anyio.Event()
            idle.set()

            async def forward(notification: Any) -> None:
                nonlocal inflight, idle
                inflight += 1
                if idle.is_set():
                    idle = anyio.Event()
                try:
                    await ctx.session.send_notification(notification, related_request_id=ctx.request_id)
                finally:
                    inflight -= 1
                    if not inflight:
                        idle.set()

            async def on_log(params: types.LoggingMessageNotificationParams) -> None:
                await forward(types.LoggingMessageNotification(params=params))

            token = log_sink.set(on_log)
            try:
                result = await fn(forward)
            finally:
                log_sink.reset(token)
            # Callbacks of notifications that preceded the response were spawned before it
            # resolved: let them reach the stream first.
            await anyio.lowlevel.checkpoint()
            await idle.wait()
            check_result_size(result, limit, ctx.method, ctx.protocol_version)
            return result

        def progress_token(ctx: Any) -> Any:
            meta = (ctx.params or {}).get("_meta") or {}
            return meta.get("progressToken") if isinstance(meta, dict) else None

        async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> Any:
            auth, scope = caller(ctx)
            entry = catalog.lookup("tool", params.name, auth, scope)
            upstream = route(ctx, "tool", params.name)
            assert entry is not None
            token = progress_token(ctx)

            async def run(forward: Any) -> Any:
                async def on_progress(progress: float, total: float | None, message: str | None) -> None:
                    await forward(
                        types.ProgressNotification(
                            params=types.ProgressNotificationParams(
                                progress_token=token, progress=progress, total=total, message=message
                            )
                        )
                    )

                return await upstream.call(
                    lambda client: client.session.call_tool(
                        entry.upstream_name,
                        params.arguments,
                        read_timeout_seconds=upstream.timeout_s,
                        progress_callback=on_progress if token is not None else None,
                    )
                )

            return await forwarding(ctx, run)

        async def get_prompt(ctx: Any, params: types.GetPromptRequestParams) -> Any:
            auth, scope = caller(ctx)
            upstream = route(ctx, "prompt", params.name)
            entry = catalog.lookup("prompt", params.name, auth, scope)
            assert entry is not None
            return await forwarding(
                ctx,
                lambda _forward: upstream.call(
                    lambda client: client.session.get_prompt(entry.upstream_name, params.arguments)
                ),
            )

        async def read_resource(ctx: Any, params: types.ReadResourceRequestParams) -> Any:
            upstream = route(ctx, "resource", str(params.uri))
            return await forwarding(
                ctx,
                lambda _forward: upstream.call(lambda client: client.session.read_resource(str(params.uri))),
            )

        async def set_level(ctx: Any, params: Any) -> types.EmptyResult:
            return types.EmptyResult()

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return Server(
                "mcp-gateway-python-baseline",
                version=__version__,
                on_list_tools=list_tools,
                on_call_tool=call_tool,
                on_list_prompts=list_prompts,
                on_get_prompt=get_prompt,
                on_list_resources=list_resources,
                on_list_resource_templates=list_templates,
                on_read_resource=read_resource,
                on_set_logging_level=set_level,
            )

    # --- the front layer: the runtime's checks, then the SDK --------------------------------

    def _lookup(self, request: McpRequest) -> McpResponse | None:
        if request.session_id is None:
            return _error(400, BAD_REQUEST, "Bad Request: Mcp-Session-Id header is required")
        owner = self._sessions.get(request.session_id)
        if owner != (request.auth.email, request.server_id):
            return _error(404, NOT_FOUND, "Session not found")
        return None

    def _call(self, request: McpRequest, *, session: bool = True, method: str | None = None) -> _AsgiCall:
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
            _AUTH_KEY: request.auth,
            _SCOPE_KEY: request.server_id,
        }
        return _AsgiCall(self._task_group, self._manager.handle_request, scope, request.body)

    async def handle(self, request: McpRequest) -> McpResponse:
        """Answer one MCP request the way the runtime does (see the module docstring)."""
        scope = request.server_id
        if scope is not None and scope not in self._catalog.servers:
            return _error(404, NOT_FOUND, f"Server not found: {_shown(scope)}")
        version = request.protocol_version
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
        return await self._post(request)

    async def _delete(self, request: McpRequest) -> McpResponse:
        if (refused := self._lookup(request)) is not None:
            return refused
        assert request.session_id is not None
        self._sessions.pop(request.session_id, None)
        call = self._call(request)
        await call.start()
        await call.read_all()
        call.release()
        return McpResponse(status=200)

    async def _get(self, request: McpRequest) -> McpResponse:
        if "text/event-stream" not in (request.accept or ""):
            return McpResponse(status=405, headers=[("allow", "POST, DELETE")])
        if (refused := self._lookup(request)) is not None:
            return refused
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
        return McpResponse(
            status=200, headers=list(_SSE_HEADERS), stream=self._relay(None, _events(call), call, request)
        )

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
        if message.kind == "response":
            return self._lookup(request) or McpResponse(status=202)
        if message.kind == "notification":
            if (refused := self._lookup(request)) is not None:
                return refused
            call = self._call(request)
            await call.start()
            call.release()
            return McpResponse(status=202)
        if message.method == "initialize":
            return await self._initialize(request)
        if message.method == "server/discover":
            return _error(200, METHOD_NOT_FOUND, "Method not found: server/discover", message.id)
        if (refused := self._lookup(request)) is not None:
            return refused
        if message.method not in _KNOWN_METHODS:
            return _error(200, METHOD_NOT_FOUND, f"Method not found: {_shown(message.method)}", message.id)
        accepts_sse = (
            request.accept is None or "text/event-stream" in request.accept or "*/*" in request.accept
        )
        return await self._answer(request, accepts_sse, request_id=message.id)

    async def _initialize(self, request: McpRequest) -> McpResponse:
        call = self._call(request, session=False)
        response = await self._answer(request, accepts_sse=False, call=call, keep_session_id=True)
        session_id = response.header("mcp-session-id")
        if response.status == 200 and session_id:
            self._sessions[session_id] = (request.auth.email, request.server_id)
            logger.info("session %s created for %s", session_id, request.auth.email or "anonymous")
        return response

    async def _answer(
        self,
        request: McpRequest,
        accepts_sse: bool,
        call: _AsgiCall | None = None,
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

    async def _abandon(self, request: McpRequest, call: _AsgiCall, request_id: Any) -> None:
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
        self, request: McpRequest, call: _AsgiCall, accepts_sse: bool, keep_session_id: bool, request_id: Any
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
        events = _events(call)
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
            stream=self._relay(first, events, call, request, request_id),
        )

    async def _relay(
        self,
        first: SseEvent | None,
        events: AsyncGenerator[SseEvent, None],
        call: _AsgiCall,
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
