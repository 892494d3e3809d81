"""The Python baseline's upstream pool: one shared mcp SDK client session per upstream server.

Like the runtime, every gateway session shares one upstream session per upstream. Progress
notifications are correlated by the SDK itself (progress token = request id). Logging
notifications are correlated with a context variable: the SDK's streamable HTTP client runs
each POST, and the callbacks for the messages on its response stream, in the context of the
task that sent the request, so the callback finds the sink of the call that caused it.

MCP 2026-07-28 (SEP-2322): a streamable HTTP upstream that answers ``server/discover`` with
that version (:meth:`Upstream.probe_era`, learnt once) also gets a sessionless client of that
era, through which the server sends the ``tools/call``, ``prompts/get`` and ``resources/read``
of clients of that era: each request carries the calling client's capabilities
(:func:`keep_declared_capabilities`), and an ``input_required`` result comes back as the SDK's
``InputRequiredResult`` for the server to relay. Everything else, and every request to an
upstream of 2025-11-25 only, goes through the shared session.

Message size: like the runtime's upstream client, no single message from an upstream is read
past the message limit plus :data:`ENVELOPE_SLACK_BYTES` (an SSE event through the SDK's
``max_sse_event_size``, a JSON response body through :class:`SizeCappedTransport`); the call
then fails with ``-32603`` "Result exceeds the message size limit of N bytes", the runtime's
words. A result that was read but is itself over the limit is refused by the baseline's handlers
(:mod:`.server`).
"""

from __future__ import annotations

import contextvars
import enum
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any, Literal, TextIO, TypeVar

import anyio
import httpx2
import mcp_types as types
from anyio.abc import TaskGroup, TaskStatus
from mcp import Client
from mcp.client.session import ClientRequestContext, ClientSession, IncomingMessage, MessageHandlerFnT
from mcp.client.sse import sse_client
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import CONNECTION_CLOSED, UNSUPPORTED_PROTOCOL_VERSION
from mcp_types.version import LATEST_MODERN_VERSION
from pydantic import ValidationError

from mcp_gateway._baseline.catalog import UpstreamConfig
from mcp_gateway._jsonrpc import INTERNAL_ERROR, REQUEST_TIMEOUT, result_too_large

__all__ = [
    "ENVELOPE_SLACK_BYTES",
    "MODERN_VERSION",
    "UPSTREAM_UNAVAILABLE",
    "ListKind",
    "LogSink",
    "ResponseTooLargeError",
    "SdkFailure",
    "SizeCappedTransport",
    "Upstream",
    "UpstreamUnavailableError",
    "keep_declared_capabilities",
    "log_sink",
    "request_sink",
    "sdk_failure",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")

ListKind = Literal["tools", "prompts", "resources"]
"""A list an upstream may say changed (``notifications/<kind>/list_changed``); ``resources``
covers the resources and the resource templates."""

_LIST_CHANGED: dict[type[Any], ListKind] = {
    types.ToolListChangedNotification: "tools",
    types.PromptListChangedNotification: "prompts",
    types.ResourceListChangedNotification: "resources",
}

LogSink = Callable[[types.LoggingMessageNotificationParams], Awaitable[None]]
"""Receives the logging notifications an upstream sends while serving the current call."""

log_sink: contextvars.ContextVar[LogSink | None] = contextvars.ContextVar(
    "mcp_gateway_log_sink", default=None
)


ClientRequestSink = Callable[[str, Any, Any], Awaitable[Any]]
"""Asks the downstream client of the current call: ``(capability, request, result_type)`` ->
the client's result, or the ``ErrorData`` to answer the upstream with."""

request_sink: contextvars.ContextVar[ClientRequestSink | None] = contextvars.ContextVar(
    "mcp_gateway_request_sink", default=None
)
"""Where a server-to-client request an upstream sends during a call goes: set by the server
around each upstream call (the downstream session that made it); ``None`` outside a call."""
"""Set around an upstream call to receive its logging notifications."""


class UpstreamUnavailableError(Exception):
    """The upstream cannot be reached or dropped the session (an ``INTERNAL_ERROR`` for the caller)."""


UPSTREAM_UNAVAILABLE = "Upstream server unavailable"
"""The message of the ``-32603`` error for an unreachable upstream (the runtime's words)."""

RESTART_BACKOFF_MIN_S = 0.1
"""The shortest wait between two starts of a stdio server, in seconds (the runtime's)."""
RESTART_BACKOFF_MAX_S = 30.0
"""The longest wait between two starts of a stdio server, in seconds (the runtime's)."""
RESTART_BACKOFF_RESET_S = 60.0
"""A stdio server that ran this long since its last start starts again at once, in seconds."""

GET_STREAM_GRACE_S = 3.0
"""How long a streamable HTTP upstream session may be without its standalone GET stream before
the baseline replaces the session, in seconds: the SDK tries the stream again after 1 s (or the
server's ``retry``), twice, then gives up without telling anyone (see :class:`_GetStreamWatch`)."""
GET_STREAM_BACKOFF_MAX_S = 5.0
"""Longest wait between two attempts to open a new session for a lost GET stream, in seconds (the
runtime's upstream listener backs off from 100 ms to 5 s, ``subscribe.rs``)."""

MODERN_VERSION = LATEST_MODERN_VERSION
"""The sessionless protocol version the baseline speaks to an upstream that speaks it (MCP
2026-07-28), for the requests of clients of that version that may get ``input_required``."""

ENVELOPE_SLACK_BYTES = 1024 * 1024
"""Room for the JSON-RPC envelope around a result of the maximum size (the runtime's slack)."""


def _cap_words(cap: int) -> str:
    """What both size caps put in their error (httpx2's SSE decoder words it so)."""
    return f"exceeded the {cap} byte limit"


class SdkFailure(enum.Enum):
    """A failure the SDK client reports only in words (see :func:`sdk_failure`)."""

    TOO_LARGE = enum.auto()
    """A message from the upstream was over the cap: an SSE event (httpx2's ``SSEError``) or a
    JSON body (:class:`ResponseTooLargeError`), both read no further."""
    TIMEOUT = enum.auto()
    """The SDK's own read timeout of the call passed (``REQUEST_TIMEOUT``)."""
    SESSION_GONE = enum.auto()
    """The upstream answered 404 on the shared session: it no longer knows it."""
    CONNECTION_CLOSED = enum.auto()
    """The SDK client's connection ended under the call (the upstream went away or refused a
    request's connection); whether the request reached the upstream is unknown."""


def sdk_failure(error: MCPError, cap: int | None) -> SdkFailure | None:
    """What an SDK client error means when it is the SDK's own rather than the upstream's answer.

    The SDK turns its transport's exceptions into JSON-RPC error answers (the exception's type
    is lost, only its text is kept), and uses ``-32001`` for its own timeout as upstreams may for
    their errors. So this, and only this, reads the SDK's words; ``test_sdk_words`` pins each against
    the SDK and httpx2 in use.

    Args:
        error: The error a call through the SDK client raised.
        cap: The size cap of one upstream message, in bytes (``None``: no cap).

    Returns:
        The failure, or ``None`` when the error is the upstream's own answer (relayed as is).
    """
    message = error.error.message
    if cap is not None and _cap_words(cap) in message:
        return SdkFailure.TOO_LARGE
    if error.code == REQUEST_TIMEOUT and "timed out" in message:
        return SdkFailure.TIMEOUT
    if message == "Session terminated":
        return SdkFailure.SESSION_GONE
    if error.code == CONNECTION_CLOSED and message == "Connection closed":
        return SdkFailure.CONNECTION_CLOSED
    return None


class ResponseTooLargeError(httpx2.StreamError):
    """A JSON response body from an upstream is over the cap (read no further).

    A ``StreamError``: the SDK's streamable HTTP client turns it into an error answer to the
    request being read (a ``-32700`` "Failed to parse JSON response: ..."), which
    :func:`sdk_failure` recognises by its words; :meth:`Upstream.call` then reports it as the
    runtime does.
    """

    def __init__(self, cap: int) -> None:
        super().__init__(f"Response body {_cap_words(cap)}.")


class _CappedStream(httpx2.AsyncByteStream):
    def __init__(self, inner: httpx2.AsyncByteStream, cap: int) -> None:
        self._inner = inner
        self._cap = cap

    async def __aiter__(self) -> AsyncIterator[bytes]:
        size = 0
        async for chunk in self._inner:
            size += len(chunk)
            if size > self._cap:
                raise ResponseTooLargeError(self._cap)
            yield chunk

    async def aclose(self) -> None:
        await self._inner.aclose()


class SizeCappedTransport(httpx2.AsyncBaseTransport):
    """Wraps a transport: ``application/json`` response bodies over ``cap`` bytes are cut off.

    SSE responses are left to the SDK's per-event cap (an SSE stream carries many messages).

    Args:
        inner: The transport that does the I/O.
        cap: Largest JSON response body, in bytes.
    """

    def __init__(self, inner: httpx2.AsyncBaseTransport, cap: int) -> None:
        self._inner = inner
        self._cap = cap

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        """Send ``request``; cap the body of a JSON response."""
        response = await self._inner.handle_async_request(request)
        if not response.headers.get("content-type", "").lower().startswith("application/json"):
            return response
        assert isinstance(response.stream, httpx2.AsyncByteStream)
        return httpx2.Response(
            status_code=response.status_code,
            headers=response.headers,
            stream=_CappedStream(response.stream, self._cap),
            extensions=response.extensions,
            request=request,
        )

    async def aclose(self) -> None:
        """Close the inner transport."""
        await self._inner.aclose()


class _GetStreamWatch(httpx2.AsyncBaseTransport):
    """Sends each request through ``client``; tells ``watcher`` when a standalone GET stream opens or ends.

    The SDK's streamable HTTP client keeps the upstream session's GET stream (the upstream's
    notifications: resource updates, list changes) open on its own and, when it cannot open it
    again (the upstream restarted and forgot the session: 404), stops trying without a word; the
    session's calls go on while nothing more is heard. This transport lets the upstream see
    that (:meth:`Upstream._get_stream_ended`). Requests other than GET pass through untouched.

    Args:
        client: The upstream's HTTP client (its transport, limits and TLS do the I/O; the
            client using this transport carries its headers).
        watcher: The upstream.
    """

    def __init__(self, client: httpx2.AsyncClient, watcher: Upstream) -> None:
        self._client = client
        self._watcher = watcher

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        """Send ``request``; watch it when it is a GET."""
        if request.method != "GET":
            return await self._client.send(request, stream=True)
        try:
            response = await self._client.send(request, stream=True)
        except (httpx2.HTTPError, OSError):
            self._watcher._get_stream_ended(offered=True)
            raise
        if response.status_code != 200:
            # 405: the upstream offers no GET stream (MCP streamable HTTP allows that).
            self._watcher._get_stream_ended(offered=response.status_code != 405)
            return response
        self._watcher._get_streams += 1
        return httpx2.Response(
            status_code=response.status_code,
            headers=response.headers,
            stream=_WatchedStream(response, self._watcher),
            extensions=response.extensions,
            request=request,
        )

    async def aclose(self) -> None:
        """Nothing: the upstream's HTTP client is closed by its owner."""


class _WatchedStream(httpx2.AsyncByteStream):
    """The body of a GET stream; its end (read to the end, broken or closed) is told once."""

    def __init__(self, response: httpx2.Response, watcher: Upstream) -> None:
        self._response = response
        self._watcher: Upstream | None = watcher

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._response.aiter_raw():
            yield chunk

    async def aclose(self) -> None:
        try:
            await self._response.aclose()
        finally:
            if self._watcher is not None:
                watcher, self._watcher = self._watcher, None
                watcher._get_streams -= 1
                watcher._get_stream_ended(offered=True)


class _StderrLog:
    """A pipe whose lines are logged as the upstream's (a stdio server's stderr).

    The write end goes to the child process; a daemon thread reads the other end until every
    holder of the write end (the server and its own children) has closed it.
    """

    def __init__(self, upstream: str) -> None:
        read_fd, write_fd = os.pipe()
        self.writer: TextIO = os.fdopen(write_fd, "w")
        reader = os.fdopen(read_fd, "r", encoding="utf-8", errors="replace")
        threading.Thread(target=self._pump, args=(upstream, reader), daemon=True).start()

    @staticmethod
    def _pump(upstream: str, reader: TextIO) -> None:
        with reader:
            for line in reader:
                logger.info("upstream %s stderr: %s", upstream, line.rstrip("\n"))

    def close_writer(self) -> None:
        """Close this process's copy of the write end (the child keeps its own)."""
        self.writer.close()


def _notifies(capabilities: types.ServerCapabilities | None) -> bool:
    """Whether a server with ``capabilities`` may send something on its GET stream the baseline uses."""
    if capabilities is None:
        return False
    resources = capabilities.resources
    return bool(
        (resources is not None and (resources.subscribe or resources.list_changed))
        or (capabilities.tools is not None and capabilities.tools.list_changed)
        or (capabilities.prompts is not None and capabilities.prompts.list_changed)
    )


class _Connection:
    """One SDK ``Client`` entered and exited by its own task (anyio requires one task for both).

    Its transport is the SDK's own for the upstream's ``transport``: ``streamable_http_client``
    (on ``http_client``, which carries the upstream's headers), ``sse_client`` (its own
    client, the same headers) or ``stdio_client`` (the server started as a child process,
    stopped when the connection ends: stdin closed, then SIGTERM, then SIGKILL).

    ``modern``: the client speaks MCP 2026-07-28 (:data:`MODERN_VERSION`) without a session,
    adopting ``discovered`` (the upstream's ``server/discover`` result; ``None``: a minimal one
    of the SDK's, for the probe itself); otherwise it opens a 2025-11-25 session.
    """

    def __init__(
        self,
        config: UpstreamConfig,
        http_client: httpx2.AsyncClient,
        max_sse_event_size: int | None,
        message_handler: MessageHandlerFnT | None = None,
        *,
        modern: bool = False,
        discovered: types.DiscoverResult | None = None,
    ) -> None:
        self.config = config
        self._message_handler = message_handler
        self._modern = modern
        self._discovered = discovered
        self.client: Client | None = None
        self._max_sse_event_size = max_sse_event_size
        self.broken = anyio.Event()
        self._http_client = http_client
        self._close = anyio.Event()

    def _transport(self, stderr: _StderrLog | None) -> Any:
        config = self.config
        if config.transport == "stdio":
            assert stderr is not None
            params = StdioServerParameters(
                command=config.command, args=list(config.args), env=config.process_env(), cwd=config.cwd
            )
            return stdio_client(params, errlog=stderr.writer)
        if config.transport == "sse":
            tls = config.tls_context()
            if tls is None:
                return sse_client(config.url, headers=config.http_headers())

            def with_ca(
                headers: dict[str, str] | None = None,
                timeout: httpx2.Timeout | None = None,
                auth: httpx2.Auth | None = None,
            ) -> httpx2.AsyncClient:
                # The SDK's own client factory (mcp.shared._httpx_utils) with the CA: its
                # timeouts (30 s, reads 300 s) when the transport gives none.
                return httpx2.AsyncClient(
                    headers=headers,
                    timeout=timeout or httpx2.Timeout(30.0, read=300.0),
                    auth=auth,
                    verify=tls,
                )

            return sse_client(config.url, headers=config.http_headers(), httpx_client_factory=with_ca)
        return streamable_http_client(
            config.url, http_client=self._http_client, max_sse_event_size=self._max_sse_event_size
        )

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        started = False
        stderr = _StderrLog(self.config.id) if self.config.transport == "stdio" else None
        try:
            transport = self._transport(stderr)
            async with self._client(transport) as client:
                if stderr is not None:
                    stderr.close_writer()
                if self._modern:
                    keep_declared_capabilities(client.session)
                self.client = client
                started = True
                task_status.started()
                await self._close.wait()
        except Exception as e:
            if not started:
                raise UpstreamUnavailableError(f"upstream {self.config.id} unavailable: {e}") from e
            logger.warning("upstream %s session ended: %s", self.config.id, e)
        finally:
            if stderr is not None:
                stderr.close_writer()
            self.client = None
            self.broken.set()

    def _client(self, transport: Any) -> Client:
        if self._modern:
            # MCP 2026-07-28: no session, every request a POST of its own carrying the version
            # and the calling client's capabilities (keep_declared_capabilities); the upstream
            # asks through input_required results, never mid-call.
            return Client(
                transport,
                mode=MODERN_VERSION,
                prior_discover=self._discovered,
                cache=None,
                logging_callback=_forward_log,
                raise_exceptions=False,
            )
        return Client(
            transport,
            mode="legacy",
            cache=None,
            logging_callback=_forward_log,
            message_handler=self._message_handler,
            # One upstream session serves every downstream one: it declares what any
            # client may answer; each request is checked against the calling client's
            # capabilities when it is relayed (server.py).
            sampling_callback=_sampling,
            elicitation_callback=_elicitation,
            list_roots_callback=_list_roots,
            raise_exceptions=False,
        )

    def close(self) -> None:
        self._close.set()


def keep_declared_capabilities(session: ClientSession) -> None:
    """Adapt ``session``, an SDK client session of MCP 2026-07-28, to serving many clients.

    - The SDK client stamps every request of that era with its own capabilities (those of its
      callbacks); the baseline's upstream client serves every downstream client, so a request
      instead declares the capabilities of the client it is made for, given in its ``_meta``
      (``io.modelcontextprotocol/clientCapabilities``): what the upstream may ask for in an
      ``input_required`` result. A request without them keeps the SDK's (none).
    - A result without ``resultType`` (required in that era; some servers that answer
      ``server/discover`` with it still leave it out) is taken as ``"complete"``, as the runtime
      takes it, instead of failing the SDK's validation.

    The SDK has no public hook for either: the session's request stamp (replaced by each
    ``adopt``, so this runs after it) and its dispatcher's ``send_raw_request`` are wrapped.
    Should the SDK change them, the connection fails and the upstream is served in 2025-11-25
    only; ``test_baseline_input_required`` (a client declaring no elicitation is refused by the
    upstream) and the conformance run of 2026-07-28 in mode python fail then.
    """
    stamp = session._stamp

    def declared_stamp(data: dict[str, Any], opts: Any) -> None:
        params = data.get("params")
        meta = params.get("_meta") if isinstance(params, dict) else None
        declared = meta.get(types.CLIENT_CAPABILITIES_META_KEY) if isinstance(meta, dict) else None
        stamp(data, opts)
        if declared is not None:
            data["params"]["_meta"][types.CLIENT_CAPABILITIES_META_KEY] = declared

    session._stamp = declared_stamp
    if getattr(session, "_lenient_results", False):
        return
    dispatcher = session._dispatcher
    send_raw_request = dispatcher.send_raw_request

    async def lenient(method: str, params: Any, opts: Any = None) -> dict[str, Any]:
        raw = await send_raw_request(method, params, opts)
        if isinstance(raw, dict) and "resultType" not in raw:
            raw["resultType"] = "complete"
        return raw

    dispatcher.send_raw_request = lenient  # type: ignore[method-assign]
    session._lenient_results = True  # type: ignore[attr-defined]


async def _relay(capability: str, request: Any, result_type: Any) -> Any:
    """A server-to-client request of an upstream, relayed to the client of the current call.

    Outside a call (no :data:`request_sink`) nobody can answer it: -32601 to the upstream, as
    the runtime answers (``server_requests.rs``); never sent to another client.
    """
    sink = request_sink.get()
    if sink is None:
        return types.ErrorData(
            code=types.METHOD_NOT_FOUND, message="no client to ask: the request is not part of a call"
        )
    return await sink(capability, request, result_type)


async def _sampling(context: ClientRequestContext, params: types.CreateMessageRequestParams) -> Any:
    result_type = types.CreateMessageResultWithTools if params.tools else types.CreateMessageResult
    return await _relay("sampling", types.CreateMessageRequest(params=params), result_type)


async def _elicitation(context: ClientRequestContext, params: types.ElicitRequestParams) -> Any:
    return await _relay("elicitation", types.ElicitRequest(params=params), types.ElicitResult)


async def _list_roots(context: ClientRequestContext) -> Any:
    return await _relay("roots", types.ListRootsRequest(), types.ListRootsResult)


async def _forward_log(params: types.LoggingMessageNotificationParams) -> None:
    sink = log_sink.get()
    if sink is not None:
        await sink(params)


async def _learn_tools(session: ClientSession, timeout_s: float) -> None:
    """Lists the upstream's tools once with a new sessionless client.

    The SDK sends a call's ``Mcp-Param-*`` headers (SEP-2243) only for a tool it has listed
    itself, and the upstream refuses a call to an annotated tool without them. A failure is
    logged, not raised (the call then goes without them, as before).
    """
    cursor: str | None = None
    try:
        with anyio.fail_after(timeout_s):
            while True:
                page = await session.list_tools(
                    params=None if cursor is None else types.PaginatedRequestParams(cursor=cursor)
                )
                cursor = page.next_cursor
                if not cursor:
                    return
    except Exception as e:  # any failure leaves the client as it was
        logger.info("listing tools for Mcp-Param headers failed: %s: %s", type(e).__name__, e)


class Upstream:
    """One upstream server: connects lazily, reconnects after a failure (see :meth:`call`).

    A stdio server is started at discovery and, once it has died, started again when a call
    needs it, the starts spaced by a back-off (:meth:`_space_starts`).

    Args:
        config: The catalog entry.
        http_client: The httpx2 client of the SDK's streamable HTTP transport (with the
            upstream's headers, if it has any).
        task_group: Where connection tasks run (the baseline's lifespan task group).
        timeout_s: How long one upstream call may take, in seconds.
        max_message_bytes: The message size limit; no SSE event is read past it plus
            :data:`ENVELOPE_SLACK_BYTES` (``http_client`` caps JSON bodies the same way, see
            :class:`SizeCappedTransport`). ``None``: no limit.
    """

    def __init__(
        self,
        config: UpstreamConfig,
        http_client: httpx2.AsyncClient,
        task_group: TaskGroup,
        timeout_s: float,
        max_message_bytes: int | None = None,
    ) -> None:
        self.config = config
        self._http_client = http_client
        if config.transport == "streamable-http":
            self._http_client = httpx2.AsyncClient(
                headers=http_client.headers,
                timeout=http_client.timeout,
                transport=_GetStreamWatch(http_client, self),
            )
        self._get_streams = 0
        self._restoring = False
        self._closed = False
        self._task_group = task_group
        self._timeout_s = timeout_s
        self._limit = max_message_bytes
        self._cap = None if max_message_bytes is None else max_message_bytes + ENVELOPE_SLACK_BYTES
        self._connection: _Connection | None = None
        self._scope: anyio.CancelScope | None = None
        self._lock = anyio.Lock()
        self._modern: _Connection | None = None
        self._modern_lock = anyio.Lock()
        self._discovered: types.DiscoverResult | None = None
        self.speaks_modern: bool | None = None
        """Whether the upstream speaks MCP 2026-07-28 (:meth:`probe_era`); ``None`` until known."""
        self._last_start: float | None = None
        self._backoff_s = RESTART_BACKOFF_MIN_S
        self.on_resource_updated: Callable[[str], Awaitable[None]] | None = None
        """Called with the URI of each ``notifications/resources/updated`` the upstream sends."""
        self.subscribed: set[str] = set()
        """The URIs subscribed upstream, subscribed again on each new upstream session."""
        self.resubscribe: Callable[[], Coroutine[Any, Any, None]] | None = None
        """Subscribes a new upstream session to :attr:`subscribed` (set by the server, which
        serialises it with its own subscribes per URI), in a task of its own."""
        self._notifying = False
        """Whether the last upstream session declared something it may send on its GET stream."""
        self.on_list_changed: Callable[[ListKind], None] | None = None
        """Called with the list of each ``notifications/*/list_changed`` the upstream sends.

        It must not wait for the upstream (the SDK calls the message handler from its read
        loop): the live catalog schedules the listing in a task of its own."""

    async def _on_message(self, message: IncomingMessage) -> None:
        """The SDK client's message handler.

        Resource updates go to :attr:`on_resource_updated`, ``list_changed`` notifications to
        :attr:`on_list_changed`; anything else (the SDK's transport errors) is ignored here.
        """
        if isinstance(message, types.ResourceUpdatedNotification) and self.on_resource_updated is not None:
            await self.on_resource_updated(str(message.params.uri))
        kind = _LIST_CHANGED.get(type(message))
        if kind is not None and self.on_list_changed is not None:
            self.on_list_changed(kind)

    async def _start(self, conn: _Connection) -> None:
        """Starts ``conn``'s task, within the connect timeout.

        Raises:
            UpstreamUnavailableError: it did not connect in time.
        """
        try:
            with anyio.fail_after(self._timeout_s):
                await self._task_group.start(conn.run)
        except TimeoutError as e:
            raise UpstreamUnavailableError(f"upstream {self.config.id} unavailable: connect timed out") from e

    async def _space_starts(self) -> None:
        """A stdio server is started again no sooner than the back-off after its last start.

        The back-off doubles from :data:`RESTART_BACKOFF_MIN_S` up to
        :data:`RESTART_BACKOFF_MAX_S` while starts follow each other, and is reset once a start
        is older than :data:`RESTART_BACKOFF_RESET_S`; a wait is at most the call timeout.
        """
        now = time.monotonic()
        if self._last_start is not None:
            if now - self._last_start > RESTART_BACKOFF_RESET_S:
                self._backoff_s = RESTART_BACKOFF_MIN_S
            wait = self._last_start + self._backoff_s - now
            self._backoff_s = min(self._backoff_s * 2, RESTART_BACKOFF_MAX_S)
            if wait > 0:
                logger.info("upstream %s: starting again in %.1f s", self.config.id, wait)
                await anyio.sleep(min(wait, self._timeout_s))
        self._last_start = time.monotonic()

    async def _client(self) -> tuple[_Connection, Client]:
        """The live connection, opened (and a broken one closed) when there is none.

        Raises:
            UpstreamUnavailableError: A new session could not be opened within the timeout.
        """
        async with self._lock:
            conn = self._connection
            if conn is None or conn.broken.is_set() or conn.client is None:
                if conn is not None:
                    # Its task may still wait for the close (a session the upstream forgot).
                    conn.close()
                    self._connection = None
                conn = _Connection(self.config, self._http_client, self._cap, self._on_message)
                if self.config.transport == "stdio":
                    await self._space_starts()
                await self._start(conn)
                self._connection = conn
                if conn.client is not None:
                    self._notifying = _notifies(conn.client.server_capabilities)
                if self.subscribed and self.resubscribe is not None:
                    # A new upstream session knows none of the old one's subscriptions: made
                    # again in a task of its own, the calls waiting here meanwhile going on.
                    self._task_group.start_soon(self.resubscribe)
            assert conn.client is not None
            return conn, conn.client

    def _get_stream_ended(self, *, offered: bool) -> None:
        """A standalone GET stream ended or could not open (``offered``: not a 405).

        Unless another opens within :data:`GET_STREAM_GRACE_S` (the SDK's own retry), the
        upstream session is replaced (:meth:`_restore_get_stream`).
        """
        if offered and not self._closed and not self._restoring:
            self._restoring = True
            self._task_group.start_soon(self._restore_get_stream)

    async def _restore_get_stream(self) -> None:
        """Open a new upstream session (subscribed again, :meth:`_client`) while no GET stream is open.

        Only for an upstream that may send something on it: one whose last session declared
        ``resources.subscribe`` or a ``listChanged``. Attempts are spaced by a back-off from
        :data:`GET_STREAM_GRACE_S` up to :data:`GET_STREAM_BACKOFF_MAX_S`, also while the
        upstream cannot be reached (no connection then); it stops once a GET stream is open, or
        the upstream is closed.
        """
        wait = GET_STREAM_GRACE_S
        try:
            while True:
                await anyio.sleep(wait)
                conn = self._connection
                if self._closed or self._get_streams > 0:
                    return
                if not self._notifying:
                    # Nothing to hear (or never connected): the next call connects.
                    return
                logger.info("upstream %s: its GET stream is gone; opening a new session", self.config.id)
                if conn is not None:
                    conn.broken.set()
                try:
                    await self._client()
                except UpstreamUnavailableError as e:
                    logger.info("upstream %s: %s", self.config.id, e)
                wait = min(GET_STREAM_BACKOFF_MAX_S, wait * 2)
        finally:
            self._restoring = False

    async def probe_era(self) -> bool:
        """Whether requests of MCP 2026-07-28 may be sent to this upstream, learnt once.

        Only a streamable HTTP upstream is asked (stdio would need a second server process, the
        legacy HTTP+SSE transport predates that era): one ``server/discover`` at
        :data:`MODERN_VERSION`, as the SDK client's own ``auto`` negotiation probes. A result
        naming that version makes the upstream modern (its sessionless client is kept, see
        :meth:`call`); an error answer (``-32601``, ``-32022``, an HTTP 400 of a server written
        before that era) or a result naming only handshake versions makes it one of 2025-11-25,
        remembered for this upstream's life. A failure to reach it decides nothing (``False``
        this time, asked again next time). A modern upstream that later answers ``-32022`` is
        asked again (:meth:`call`).
        """
        if self.speaks_modern is not None:
            return self.speaks_modern
        if self.config.transport != "streamable-http":
            self.speaks_modern = False
            return False
        async with self._modern_lock:
            if self.speaks_modern is not None:
                return self.speaks_modern
            if self._modern is not None:
                # Asked again (the upstream answered -32022): its old client goes.
                self._modern.close()
                self._modern = None
            conn = _Connection(
                self.config,
                self._http_client,
                self._cap,
                modern=True,
            )
            try:
                with anyio.fail_after(self._timeout_s):
                    await self._task_group.start(conn.run)
                    assert conn.client is not None
                    session = conn.client.session
                    raw = await session.send_discover(MODERN_VERSION)
                result = types.DiscoverResult.model_validate(raw)
            except MCPError as e:
                conn.close()
                if sdk_failure(e, self._cap) is not None:
                    logger.info("upstream %s: era unknown: %s", self.config.id, e.error.message)
                    return False
                logger.info("upstream %s speaks only the handshake era: %s", self.config.id, e.error.message)
                self.speaks_modern = False
                return False
            except ValidationError:
                conn.close()
                self.speaks_modern = False
                return False
            except Exception as e:
                conn.close()
                logger.info("upstream %s: era unknown: %s: %s", self.config.id, type(e).__name__, e)
                return False
            if MODERN_VERSION not in result.supported_versions:
                conn.close()
                self.speaks_modern = False
                return False
            session.adopt(result)
            keep_declared_capabilities(session)
            await _learn_tools(session, self._timeout_s)
            self._discovered = result
            self._modern = conn
            self.speaks_modern = True
            logger.info("upstream %s speaks %s", self.config.id, MODERN_VERSION)
            return True

    async def _modern_client(self) -> tuple[_Connection, Client]:
        """The live sessionless connection (:meth:`probe_era` said yes), opened again if broken."""
        async with self._modern_lock:
            conn = self._modern
            if conn is None or conn.broken.is_set() or conn.client is None:
                if conn is not None:
                    conn.close()
                    self._modern = None
                conn = _Connection(
                    self.config, self._http_client, self._cap, modern=True, discovered=self._discovered
                )
                await self._start(conn)
                if conn.client is not None:
                    await _learn_tools(conn.client.session, self._timeout_s)
                self._modern = conn
            assert conn.client is not None
            return conn, conn.client

    def _unavailable(self, detail: object) -> MCPError:
        """The caller's error for an unreachable upstream: the runtime's words, no upstream id.

        The detail (the upstream's id, what failed) goes to the log only.
        """
        logger.warning("upstream %s unavailable: %s", self.config.id, detail)
        return MCPError(code=INTERNAL_ERROR, message=UPSTREAM_UNAVAILABLE)

    async def call(self, fn: Callable[[Client], Awaitable[T]], *, modern: bool = False) -> T:
        """Run ``fn`` with the upstream's client, within the upstream timeout.

        Like the runtime's upstream client: when the upstream no longer knows the shared
        session (it restarted and answers 404, "Session terminated"), the request cannot have
        been processed, so a new upstream session is opened and ``fn`` runs once more. A
        failure that may have reached the upstream is never retried.

        Args:
            fn: The call, given the SDK client; it may run twice (see above).
            modern: Use the upstream's MCP 2026-07-28 client instead of its session (only
                once :meth:`probe_era` said the upstream speaks that version): no session, so
                nothing to reconnect; an upstream answering ``-32022`` (it no longer speaks
                that version) is probed again by the next call.

        Raises:
            MCPError: The upstream's own JSON-RPC error (passed through as is), a timeout
                (``-32001`` "Request timed out after N ms"), ``-32603`` "Upstream server
                unavailable" when the upstream cannot be reached, dropped the session twice or
                broke the connection (the upstream's id and the cause are logged, never sent),
                or ``-32603`` naming the limit when one of its messages is over the size limit.
        """
        retried = False
        while True:
            try:
                conn, client = await (self._modern_client() if modern else self._client())
            except UpstreamUnavailableError as e:
                logger.warning("%s", e)
                raise MCPError(code=INTERNAL_ERROR, message=UPSTREAM_UNAVAILABLE) from e
            try:
                return await fn(client)
            except MCPError as e:
                if modern and e.code == UNSUPPORTED_PROTOCOL_VERSION:
                    self.speaks_modern = None
                failure = sdk_failure(e, self._cap)
                if failure is SdkFailure.TOO_LARGE and self._limit is not None:
                    logger.info("upstream %s: %s", self.config.id, e.error.message)
                    raise MCPError(code=INTERNAL_ERROR, message=result_too_large(self._limit)) from e
                if failure is SdkFailure.TIMEOUT:
                    raise MCPError(
                        code=REQUEST_TIMEOUT,
                        message=f"Request timed out after {int(self._timeout_s * 1000)} ms",
                    ) from e
                await anyio.lowlevel.checkpoint()
                if failure is SdkFailure.SESSION_GONE:
                    conn.broken.set()
                    if not retried:
                        logger.info("upstream %s forgot the session; reconnecting", self.config.id)
                        retried = True
                        continue
                    raise self._unavailable(e.error.message) from e
                if failure is SdkFailure.CONNECTION_CLOSED or conn.broken.is_set():
                    # Not sent again: the request may have reached the upstream.
                    conn.broken.set()
                    raise self._unavailable(e.error.message) from e
                raise
            except (httpx2.HTTPError, OSError, anyio.BrokenResourceError, anyio.ClosedResourceError) as e:
                conn.broken.set()
                raise self._unavailable(f"{type(e).__name__}: {e}") from e

    @property
    def timeout_s(self) -> float:
        """The upstream call timeout, in seconds."""
        return self._timeout_s

    async def list_all(self) -> dict[str, list[dict[str, Any]]]:
        """Discover everything the upstream exposes (all pages), as JSON objects.

        Returns:
            ``{"tool": [...], "prompt": [...], "resource": [...], "template": [...]}``.

        Raises:
            MCPError: As :meth:`call`.
        """
        return await self.list_kinds(("tools", "prompts", "resources"))

    async def list_kinds(self, kinds: tuple[ListKind, ...]) -> dict[str, list[dict[str, Any]]]:
        """List ``kinds`` of the upstream (all pages) as JSON objects; ``resources`` also lists templates.

        A kind whose capability the upstream did not declare is listed as empty.

        Returns:
            The catalog kinds listed: ``tool`` (for ``tools``), ``prompt``, ``resource`` and
            ``template`` (both for ``resources``), each a list of JSON objects.

        Raises:
            MCPError: As :meth:`call`.
        """

        async def discover(client: Client) -> dict[str, list[dict[str, Any]]]:
            caps = client.server_capabilities
            found: dict[str, list[dict[str, Any]]] = {}

            def dump(items: list[Any]) -> list[dict[str, Any]]:
                return [i.model_dump(by_alias=True, mode="json", exclude_none=True) for i in items]

            if "tools" in kinds:
                found["tool"] = []
                cursor: str | None = None
                while caps.tools is not None:
                    tools = await client.list_tools(cursor=cursor)
                    found["tool"] += dump(tools.tools)
                    if not (cursor := tools.next_cursor):
                        break
            if "prompts" in kinds:
                found["prompt"] = []
                cursor = None
                while caps.prompts is not None:
                    prompts = await client.list_prompts(cursor=cursor)
                    found["prompt"] += dump(prompts.prompts)
                    if not (cursor := prompts.next_cursor):
                        break
            if "resources" in kinds:
                found["resource"], found["template"] = [], []
                cursor = None
                while caps.resources is not None:
                    resources = await client.list_resources(cursor=cursor)
                    found["resource"] += dump(resources.resources)
                    if not (cursor := resources.next_cursor):
                        break
                cursor = None
                while caps.resources is not None:
                    templates = await client.list_resource_templates(cursor=cursor)
                    found["template"] += dump(templates.resource_templates)
                    if not (cursor := templates.next_cursor):
                        break
            return found

        return await self.call(discover)

    def close(self) -> None:
        """Ask the connection tasks to end (the session's sends DELETE upstream on its way out)."""
        self._closed = True
        for conn in (self._connection, self._modern):
            if conn is not None:
                conn.close()

    async def aclose(self, timeout_s: float = 5.0) -> None:
        """Close the connections (:meth:`close`) and wait, at most ``timeout_s`` seconds, until they ended.

        For an upstream that leaves while the baseline runs (a catalog reload): its HTTP client
        can then be closed without cutting its goodbye short. Calls still running on it fail.
        """
        conns = [conn for conn in (self._connection, self._modern) if conn is not None]
        self.close()
        with anyio.move_on_after(timeout_s):
            for conn in conns:
                await conn.broken.wait()
