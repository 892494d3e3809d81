"""The SDK server of the baseline: a low-level ``mcp.server.Server`` whose handlers serve the catalog.

Lists are filtered by the caller's AuthContext and virtual server; ``tools/call``,
``prompts/get`` and ``resources/read`` are routed to their upstream (:mod:`.upstream`), with the
upstream's progress and logging notifications forwarded onto the caller's stream and a result
over the message limit refused (:func:`check_result_size`). A caller of MCP 2026-07-28 whose
upstream speaks that version too is served in it (multi-round-trip requests, SEP-2322): the
upstream's ``input_required`` result is relayed unchanged and the caller's retry, routed by the
same name, reaches the same upstream with its ``inputResponses`` and ``requestState``; a
caller of that era is never asked anything mid-call (an upstream of 2025-11-25 only that asks is
refused, -32601), and a caller of 2025-11-25 never gets an ``input_required`` result (its calls
go through the upstream's session of that era). The caller reaches the handlers
through two keys of the ASGI scope that the front layer sets (:data:`AUTH_KEY`,
:data:`SCOPE_KEY`).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, cast

import anyio
import mcp_types as types
import pydantic_core
from mcp.server.lowlevel.server import NotificationOptions, Server
from mcp.server.models import InitializationOptions
from mcp.shared.exceptions import MCPError
from mcp.shared.message import ServerMessageMetadata
from mcp_types.methods import serialize_server_result
from pydantic import BaseModel

from mcp_gateway import __version__
from mcp_gateway._auth import AuthContext
from mcp_gateway._baseline.catalog import Entry, Kind
from mcp_gateway._baseline.listen import ListenStream, read_filter
from mcp_gateway._baseline.live import LiveCatalog
from mcp_gateway._baseline.upstream import Upstream, log_sink, request_sink
from mcp_gateway._era import LIST_TTL_MS, SESSIONLESS_PROTOCOL_VERSIONS
from mcp_gateway._jsonrpc import INTERNAL_ERROR, INVALID_PARAMS, RESOURCE_NOT_FOUND, shown

__all__ = ["AUTH_KEY", "SCOPE_KEY", "SERVER_NAME", "build_server", "check_result_size"]

AUTH_KEY = "mcp_gateway.auth"
"""ASGI scope key of the caller's :class:`~mcp_gateway.AuthContext`."""
SCOPE_KEY = "mcp_gateway.server_id"
"""ASGI scope key of the virtual server id (``None`` for ``/mcp``)."""
SERVER_NAME = "mcp-gateway-python-baseline"
"""The ``serverInfo.name`` the baseline reports (the runtime reports ``mcp-runtime``)."""

logger = logging.getLogger("mcp_gateway._baseline")


async def _subscribe_upstream(uri: str, client: Any) -> None:
    """Subscribe the upstream of ``client`` (an SDK client) to ``uri``."""
    await client.subscribe_resource(uri)


def check_result_size(result: Any, limit: int, method: str, version: str | None) -> None:
    """Refuse an upstream result over the message limit, as the runtime does.

    The runtime measures the upstream's raw result; the baseline measures the result as it
    would send it (the SDK's wire form of ``method`` for the negotiated ``version``). Cheap
    first: the model's full dump, which only the wire form's sieve can shrink; the wire form is
    built only when that dump is over the limit.

    Args:
        result: The SDK model (or plain JSON object) an upstream returned.
        limit: The message size limit, in bytes.
        method: The MCP method that produced it (``tools/call``, ...).
        version: The negotiated protocol version, ``None`` when unknown (then the full dump is
            measured).

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


class _Guard:
    """A lock and how many tasks hold or wait for it (the lock is forgotten at none)."""

    def __init__(self) -> None:
        self.lock = anyio.Lock()
        self.users = 0


class _Server(Server[Any]):
    """The low-level server, declaring ``listChanged`` for tools, prompts and resources.

    The SDK derives the other capabilities from the handlers; ``listChanged`` it takes only
    from ``NotificationOptions`` at ``create_initialization_options``, which the session
    manager calls without any.
    """

    def create_initialization_options(
        self,
        notification_options: NotificationOptions | None = None,
        experimental_capabilities: dict[str, dict[str, Any]] | None = None,
        extensions: dict[str, dict[str, Any]] | None = None,
    ) -> InitializationOptions:
        """The SDK's, with every ``listChanged`` declared unless told otherwise."""
        changes = notification_options or NotificationOptions(
            prompts_changed=True, resources_changed=True, tools_changed=True
        )
        return super().create_initialization_options(changes, experimental_capabilities, extensions)


def build_server(
    live: LiveCatalog,
    max_message_bytes: int,
    session_ended: list[Callable[[str], Awaitable[None]]] | None = None,
) -> Server[Any]:
    """The SDK server that serves the current version of ``live`` through its upstreams.

    Each request reads the version current when it arrives (``live.catalog`` and
    ``live.upstreams``). The server keeps ``live.sessions``, the SDK's server session of each
    MCP session (from its ``notifications/initialized`` and its requests), through which the
    live catalog tells a session's standalone stream that a list changed.

    Args:
        live: The live catalog: the discovered entries, the virtual servers, the upstreams.
        max_message_bytes: The message size limit applied to upstream results, in bytes.
        session_ended: The server appends the hook its owner calls with the id of each MCP
            session that ended (DELETE, idle expiry): it drops that session's subscriptions
            and forgets its server session.

    Returns:
        A low-level server with handlers for the lists, ``tools/call``, ``prompts/get``,
        ``resources/read``, ``completion/complete``, ``resources/subscribe`` and
        ``unsubscribe`` (updates from the upstream reach the subscribed sessions' standalone
        streams), ``subscriptions/listen`` of MCP 2026-07-28 (:mod:`.listen`) and
        ``logging/setLevel``. An unknown or
        invisible name is answered ``-32602`` (tools, prompts) or ``-32002`` (resources), the
        name cut to 128 bytes.
    """
    limit = max_message_bytes

    def caller(ctx: Any) -> tuple[AuthContext, str | None]:
        scope = ctx.request.scope
        sid = session_id(ctx)
        if sid and sid not in live.sessions:
            # A client that sent no `notifications/initialized`: any request's server session
            # sends on the same standalone stream (the connection's).
            live.sessions[sid] = ctx.session
        return scope[AUTH_KEY], scope[SCOPE_KEY]

    def session_id(ctx: Any) -> str:
        return str(ctx.request.headers.get("mcp-session-id", "")) if ctx.request is not None else ""

    async def initialized(ctx: Any, params: Any) -> None:
        """A session's ``notifications/initialized``: keep its server session."""
        sid = session_id(ctx)
        if sid:
            live.sessions[sid] = ctx.session

    def listed(ctx: Any, result: dict[str, Any]) -> dict[str, Any]:
        # MCP 2026-07-28 lists say how long and by whom they may be cached (as the runtime:
        # `era.rs`); the handshake era's have no such fields.
        if ctx.protocol_version in SESSIONLESS_PROTOCOL_VERSIONS:
            result.update(ttlMs=LIST_TTL_MS, cacheScope="private", resultType="complete")
        return result

    # The list handlers return plain JSON objects (the runner accepts dicts, HandlerResult):
    # the catalog keeps the upstreams' JSON, no model round trip per listing.
    async def list_tools(ctx: Any, params: Any) -> Any:
        auth, scope = caller(ctx)
        return listed(ctx, {"tools": list(live.catalog.visible("tool", auth, scope))})

    async def list_prompts(ctx: Any, params: Any) -> Any:
        auth, scope = caller(ctx)
        return listed(ctx, {"prompts": list(live.catalog.visible("prompt", auth, scope))})

    async def list_resources(ctx: Any, params: Any) -> Any:
        auth, scope = caller(ctx)
        return listed(ctx, {"resources": list(live.catalog.visible("resource", auth, scope))})

    async def list_templates(ctx: Any, params: Any) -> Any:
        auth, scope = caller(ctx)
        return listed(ctx, {"resourceTemplates": list(live.catalog.visible_templates(auth, scope))})

    def route(ctx: Any, kind: Kind, name: str) -> tuple[Upstream, Entry]:
        """The upstream and entry ``name`` routes to in the current version.

        Read together, with no await in between: a version replaced later does not matter to
        this call (an upstream a reload removed fails it).
        """
        auth, scope = caller(ctx)
        entry = live.catalog.lookup(kind, name, auth, scope)
        upstream = None if entry is None else live.upstreams.get(entry.upstream)
        if entry is None or upstream is None:
            # Not visible is answered exactly like not existing.
            if kind == "resource":
                raise MCPError(code=RESOURCE_NOT_FOUND, message=f"Resource not found: {shown(name)}")
            raise MCPError(code=INVALID_PARAMS, message=f"Unknown {kind}: {shown(name)}")
        return upstream, entry

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

        async def ask(capability: str, request: Any, result_type: Any) -> Any:
            """Relays an upstream's request to this call's client, on this call's stream.

            Refused (-32601 to the upstream) when the client did not declare ``capability``
            at initialize, or speaks MCP 2026-07-28 (that era has no server-to-client request:
            an upstream of 2025-11-25 only cannot ask such a client anything); the client's
            error answer goes back as it came.
            """
            if ctx.protocol_version in SESSIONLESS_PROTOCOL_VERSIONS:
                return types.ErrorData(
                    code=types.METHOD_NOT_FOUND,
                    message=(
                        f"the client of this call speaks MCP {ctx.protocol_version}, "
                        f"which takes no {request.method} request during a call"
                    ),
                )
            caps = ctx.session.client_capabilities
            if caps is None or getattr(caps, capability, None) is None:
                return types.ErrorData(
                    code=types.METHOD_NOT_FOUND,
                    message=f"the client did not declare the {capability} capability",
                )
            try:
                return await ctx.session.send_request(
                    request=request,
                    result_type=result_type,
                    metadata=ServerMessageMetadata(related_request_id=ctx.request_id),
                )
            except MCPError as e:
                return e.error

        token = log_sink.set(on_log)
        asking = request_sink.set(ask)
        try:
            result = await fn(forward)
        finally:
            request_sink.reset(asking)
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

    async def modern_meta(ctx: Any, upstream: Upstream) -> types.RequestParamsMeta | None:
        """The ``_meta`` of the MCP 2026-07-28 request to send ``upstream``, or ``None``.

        ``None`` (the call goes through the upstream's 2025-11-25 session) unless both the
        caller and the upstream speak MCP 2026-07-28 (:meth:`Upstream.probe_era`). Otherwise:
        the caller's capabilities (what the upstream may ask it for in an ``input_required``
        result) and its log level opt-in, if any; the SDK client adds the version.
        """
        if ctx.protocol_version not in SESSIONLESS_PROTOCOL_VERSIONS or not await upstream.probe_era():
            return None
        caps = ctx.session.client_capabilities
        meta: dict[str, Any] = {
            types.CLIENT_CAPABILITIES_META_KEY: {}
            if caps is None
            else caps.model_dump(by_alias=True, mode="json", exclude_none=True)
        }
        given = (ctx.params or {}).get("_meta")
        if isinstance(given, dict) and isinstance(level := given.get(types.LOG_LEVEL_META_KEY), str):
            meta[types.LOG_LEVEL_META_KEY] = level
        # An open map of the reserved keys (the TypedDict's extra items, which mypy cannot see).
        return cast("types.RequestParamsMeta", meta)

    def multi_round(meta: types.RequestParamsMeta | None, params: Any) -> dict[str, Any]:
        """The SDK client's keyword arguments for a call of MCP 2026-07-28 (``meta`` set).

        The caller's retry (``inputResponses``, ``requestState``) goes as it came, and an
        ``input_required`` answer is taken to be relayed unchanged; none in the session era.
        """
        if meta is None:
            return {}
        return {
            "input_responses": params.input_responses,
            "request_state": params.request_state,
            "meta": meta,
            "allow_input_required": True,
        }

    async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> Any:
        upstream, entry = route(ctx, "tool", params.name)
        token = progress_token(ctx)
        meta = await modern_meta(ctx, upstream)

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
                    **multi_round(meta, params),
                ),
                modern=meta is not None,
            )

        return await forwarding(ctx, run)

    async def get_prompt(ctx: Any, params: types.GetPromptRequestParams) -> Any:
        upstream, entry = route(ctx, "prompt", params.name)
        meta = await modern_meta(ctx, upstream)
        return await forwarding(
            ctx,
            lambda _forward: upstream.call(
                lambda client: client.session.get_prompt(
                    entry.upstream_name, params.arguments, **multi_round(meta, params)
                ),
                modern=meta is not None,
            ),
        )

    async def read_resource(ctx: Any, params: types.ReadResourceRequestParams) -> Any:
        upstream, _ = route(ctx, "resource", str(params.uri))
        meta = await modern_meta(ctx, upstream)
        return await forwarding(
            ctx,
            lambda _forward: upstream.call(
                lambda client: client.session.read_resource(str(params.uri), **multi_round(meta, params)),
                modern=meta is not None,
            ),
        )

    async def complete(ctx: Any, params: types.CompleteRequestParams) -> Any:
        """Route ``completion/complete`` as the runtime does (``dispatch.rs``).

        To the upstream owning the referenced prompt (renamed to the upstream's name) or
        resource template; one the caller may not see is answered like an unknown one.
        """
        ref: types.PromptReference | types.ResourceTemplateReference = params.ref
        if isinstance(ref, types.PromptReference):
            upstream, entry = route(ctx, "prompt", ref.name)
            ref = types.PromptReference(type="ref/prompt", name=entry.upstream_name)
        else:
            upstream, _ = route(ctx, "resource", str(ref.uri))
        argument = {"name": params.argument.name, "value": params.argument.value}
        context = params.context.arguments if params.context is not None else None
        return await forwarding(
            ctx,
            lambda _forward: upstream.call(
                lambda client: client.session.complete(ref, argument, context_arguments=context)
            ),
        )

    # (upstream id, URI) -> the downstream sessions subscribed to it, by MCP session id (the
    # SDK hands each request its own ServerSession object over the session's connection: the
    # newest one is kept), and the listen streams by their key. A session whose send fails (it
    # ended, its stream is closed) is dropped. The upstream is told to subscribe on the first
    # subscriber and to unsubscribe when the last one leaves.
    subscribers: dict[tuple[str, str], dict[str, Any]] = {}
    # One subscribe or unsubscribe of a (upstream id, URI) at a time, the table above changed
    # under the same lock: two first subscribers would both subscribe upstream, and a subscribe
    # answered after the last subscriber's unsubscribe was sent would leave the upstream
    # unsubscribed while the baseline counted a subscriber (its updates lost).
    guards: dict[tuple[str, str], _Guard] = {}

    @contextlib.asynccontextmanager
    async def guarded(key: tuple[str, str]) -> AsyncIterator[None]:
        guard = guards.setdefault(key, _Guard())
        guard.users += 1
        try:
            async with guard.lock:
                yield
        finally:
            guard.users -= 1
            if guard.users == 0:
                del guards[key]

    async def on_updated(upstream: Upstream, uri: str) -> None:
        """Deliver an upstream's update of ``uri`` to its subscribers.

        Called from the upstream client's read loop, which must not wait for the upstream: a
        session that is gone is dropped (which may unsubscribe upstream) in a task of its own.
        """
        sessions = subscribers.get((upstream.config.id, uri), {})
        for sid, session in list(sessions.items()):
            try:
                await session.send_resource_updated(uri)
            except Exception:
                live.task_group.start_soon(drop, upstream, uri, sid)

    async def forget(upstream: Upstream, uri: str, sid: str) -> None:
        """Remove the subscription of ``sid`` (its guard held by the caller).

        The last one leaving unsubscribes upstream.
        """
        key = (upstream.config.id, uri)
        sessions = subscribers.get(key)
        if sessions is None or sessions.pop(sid, None) is None:
            return
        if sessions:
            return
        del subscribers[key]
        upstream.subscribed.discard(uri)
        try:
            await upstream.call(lambda client: client.unsubscribe_resource(uri))
        except Exception as e:
            logger.info("upstream %s: unsubscribing %r failed: %s", upstream.config.id, shown(uri), e)
        else:
            logger.info(
                "upstream %s: unsubscribed from %r (no subscriber left)", upstream.config.id, shown(uri)
            )

    async def drop(upstream: Upstream, uri: str, sid: str) -> None:
        """Remove the subscription of session ``sid``; the last one leaving unsubscribes upstream."""
        async with guarded((upstream.config.id, uri)):
            await forget(upstream, uri, sid)

    async def add_subscriber(
        upstream: Upstream, uri: str, sid: str, subscriber: Any, alive: Callable[[], bool] | None = None
    ) -> None:
        """Record ``subscriber`` of ``uri`` under ``sid``, subscribing ``upstream`` on the first.

        ``upstream`` is this instance (a reload may replace the one of its id). Shielded once
        begun: a caller that leaves meanwhile (the SDK cancels its handler) leaves a record
        that its own end drops, never an upstream subscription nobody counts. ``alive`` (a
        session's): whether its subscriber is still there once recorded; a session that ended
        meanwhile (its DELETE ran its end before the record was made) is forgotten at once.

        Raises:
            MCPError: The upstream's error when its subscribe fails (nothing recorded then).
        """
        await anyio.lowlevel.checkpoint()
        key = (upstream.config.id, uri)
        with anyio.CancelScope(shield=True):
            async with guarded(key):
                if uri not in upstream.subscribed:
                    await upstream.call(functools.partial(_subscribe_upstream, uri))
                    upstream.subscribed.add(uri)
                    logger.info("upstream %s: subscribed to %r", upstream.config.id, shown(uri))
                subscribers.setdefault(key, {})[sid] = subscriber
                if alive is not None and not alive():
                    await forget(upstream, uri, sid)

    async def resubscribe(upstream: Upstream) -> None:
        """Subscribe a new session of ``upstream`` to the URIs it had, each under its guard."""
        for uri in sorted(upstream.subscribed):
            async with guarded((upstream.config.id, uri)):
                if uri not in upstream.subscribed:
                    continue
                try:
                    await upstream.call(functools.partial(_subscribe_upstream, uri))
                except Exception as e:
                    logger.warning(
                        "upstream %s: subscribing %r again failed: %s", upstream.config.id, shown(uri), e
                    )

    def wire(upstream: Upstream) -> None:
        upstream.on_resource_updated = functools.partial(on_updated, upstream)
        upstream.resubscribe = functools.partial(resubscribe, upstream)

    for each in live.upstreams.values():
        wire(each)
    live.on_upstream = wire

    async def ended(sid: str) -> None:
        live.sessions.pop(sid, None)
        for upstream_id, uri in [key for key, sessions in subscribers.items() if sid in sessions]:
            upstream = live.upstreams.get(upstream_id)
            if upstream is None:
                # Its upstream left at a reload: nothing to unsubscribe there.
                subscribers[(upstream_id, uri)].pop(sid, None)
                if not subscribers[(upstream_id, uri)]:
                    del subscribers[(upstream_id, uri)]
                continue
            await drop(upstream, uri, sid)

    if session_ended is not None:
        session_ended.append(ended)

    async def subscribe(ctx: Any, params: types.SubscribeRequestParams) -> types.EmptyResult:
        """``resources/subscribe``, routed as ``resources/read`` routes the URI.

        As the runtime's ``dispatch.rs`` does: an unknown or invisible URI gets -32002; the
        upstream's error when its own subscribe fails (nothing recorded then).
        """
        uri = str(params.uri)
        upstream, _ = route(ctx, "resource", uri)
        sid = session_id(ctx)
        await add_subscriber(upstream, uri, sid, ctx.session, alive=lambda: sid in live.sessions)
        return types.EmptyResult()

    async def unsubscribe(ctx: Any, params: types.UnsubscribeRequestParams) -> types.EmptyResult:
        """``resources/unsubscribe``: routed and refused like ``resources/subscribe``."""
        uri = str(params.uri)
        await drop(route(ctx, "resource", uri)[0], uri, session_id(ctx))
        return types.EmptyResult()

    async def listen(ctx: Any, params: Any) -> Any:
        """``subscriptions/listen`` of MCP 2026-07-28 (:mod:`.listen`): the stream, until its client leaves.

        Each URI the caller may read is subscribed as ``resources/subscribe`` subscribes it (a
        URI it may not read, or whose upstream refuses, is left out of the acknowledgement);
        the stream then hears the live catalog's list changes as a session's GET stream does.
        Whatever ends it (the client gone: the SDK cancels this handler) drops its
        subscriptions, the last subscriber of a URI unsubscribing the upstream.

        Raises:
            MCPError: -32602 for a malformed filter (:func:`.listen.read_filter`).
        """
        wanted = read_filter(ctx.params)
        auth, scope = caller(ctx)
        stream = ListenStream(ctx.request_id, wanted)
        try:
            honoured: list[str] = []
            for uri in wanted.uris:
                try:
                    upstream, _ = route(ctx, "resource", uri)
                    await add_subscriber(upstream, uri, stream.key, stream)
                except Exception as e:
                    logger.debug("listen: %r left out of the acknowledgement: %s", shown(uri), e)
                    continue
                honoured.append(uri)
            live.sessions[stream.key] = stream
            live.streams[stream.key] = (auth, scope)
            await ctx.session.send_notification(
                stream.acknowledgement(honoured), related_request_id=ctx.request_id
            )
            async with stream.events:
                async for notification in stream.events:
                    await ctx.session.send_notification(notification, related_request_id=ctx.request_id)
        finally:
            with anyio.CancelScope(shield=True):
                stream.close()
                live.streams.pop(stream.key, None)
                await ended(stream.key)
        return stream.result()

    async def set_level(ctx: Any, params: Any) -> types.EmptyResult:
        return types.EmptyResult()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        server = _Server(
            SERVER_NAME,
            version=__version__,
            on_list_tools=list_tools,
            on_call_tool=call_tool,
            on_list_prompts=list_prompts,
            on_get_prompt=get_prompt,
            on_list_resources=list_resources,
            on_list_resource_templates=list_templates,
            on_read_resource=read_resource,
            on_set_logging_level=set_level,
            on_completion=complete,
            on_subscribe_resource=subscribe,
            on_unsubscribe_resource=unsubscribe,
            on_subscriptions_listen=listen,
        )
    server.add_notification_handler("notifications/initialized", types.NotificationParams, initialized)
    return server
