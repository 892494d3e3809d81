r"""The core's plugins applied by the gateway in the proxied modes (``MCP_CORE_PLUGINS_FILE``).

In the edge modes the runtime asks the Python core to run its hooks (``InvokeHook``,
``docs/core-spi.md``); in the proxied modes (``python``, ``http``, ``grpc``) the gateway sees
every request and answer itself, so it runs the same hooks in process, with the core's own
:class:`~mcp_gateway.core.plugins.Plugins` (one implementation of each decision) read from the
same file. Applied here, above :class:`~mcp_gateway._backend.Backend`, so the three modes share
one code path:

- ``pre_invoke``, a ``tools/call`` whose tool name has a hook (the name as the client sent it:
  a prefixed name of the federated catalog stays prefixed), before the request goes to the
  backend; payload: the call's ``arguments`` (``{}`` when absent or ``null``). Deny: the
  JSON-RPC error for the request's id, HTTP 200, and the backend (so the runtime and the
  upstream) is never called. Proceed with a payload: the call goes on with its ``arguments``
  replaced (the request re-encoded from its envelope, ``jsonrpc``, ``id``, ``method`` and
  ``params``, whose other members are kept).
- ``post_invoke`` on the answer of a ``tools/call``, ``post_fetch`` on the answer of a
  ``resources/read`` (name: the URI) or a ``prompts/get`` (name: the prompt name); payload: the
  JSON-RPC ``result``. Proceed with a payload: the answer becomes ``{"jsonrpc": "2.0", "id": ..,
  "result": <payload>}``; deny: the JSON-RPC error for the request's id, in place of the
  result. An error answer, or one that is not HTTP 200, is relayed unchanged. A JSON answer is
  read whole (also one the HTTP/JSON backend would have relayed as it arrives) and sent with
  its new length; in an SSE answer every notification (progress, log messages) is relayed as it
  arrives, unchanged, and only the final event, the JSON-RPC response, is rewritten.

A hook that cannot decide (a plugin raising, a result nested too deep to decode) fails the
request closed, as the edge modes do for a core they cannot ask: 503, ``-32000``,
``Retry-After: 1`` (in an SSE answer, whose status was sent, that error as the final event).

Zero cost without plugins: with no file, or a file that registers no hook, nothing here is
built and the app's request path is the one without plugins. With plugins, only a POST whose
body may name a hooked method is decoded (a bytes check first: the method spelled plainly, or
any ``\`` escape), with the runtime's framing (:func:`~mcp_gateway._jsonrpc.parse_message`): a
body the runtime refuses is forwarded unjudged and refused there. A call whose ``arguments`` is
neither an object nor ``null`` gets no pre_invoke hook: the runtime and the baseline refuse it
(``-32602``) before anything goes upstream.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from mcp_gateway._auth import AuthContext
from mcp_gateway._backend import McpRequest, McpResponse
from mcp_gateway._jsonrpc import POLICY_UNAVAILABLE, FramingError, error_body, parse_message
from mcp_gateway._sse import SseEvent, SseParser, encode_event
from mcp_gateway.core.plugins import HookDecision, HookPoint, Plugins

__all__ = ["PendingHook", "Prepared", "ProxiedPlugins", "load_plugins"]

logger = logging.getLogger(__name__)

_JSON = ("content-type", "application/json")

_NAME_KEYS = {"tools/call": "name", "resources/read": "uri", "prompts/get": "name"}
"""The hooked methods and the params member that names what they call."""

_POST_POINTS = {
    "tools/call": HookPoint.POST_INVOKE,
    "resources/read": HookPoint.POST_FETCH,
    "prompts/get": HookPoint.POST_FETCH,
}

UNAVAILABLE_MESSAGE = "Service unavailable: a plugin could not decide"
"""The JSON-RPC error message of a request failed closed because a hook could not decide."""


class _Undecided(Exception):
    """A hook could not decide (the plugin raised, or the payload could not be decoded)."""


def load_plugins(path: Path | None) -> ProxiedPlugins | None:
    """The plugins of ``path`` for the proxied modes; ``None`` when none registers a hook.

    Raises:
        ConfigError: The file is unreadable or not the core's plugin configuration.
    """
    plugins = Plugins.from_file(path)
    return ProxiedPlugins(plugins) if plugins.hooks else None


@dataclass(frozen=True, slots=True)
class PendingHook:
    """A post hook to run on the answer of a relayed call.

    Attributes:
        point: ``post_invoke`` or ``post_fetch``.
        name: The tool name, resource URI or prompt name as the client sent it.
        method: ``tools/call``, ``resources/read`` or ``prompts/get``.
        request_id: The JSON-RPC id of the call.
        caller: The caller.
    """

    point: HookPoint
    name: str
    method: str
    request_id: Any
    caller: AuthContext


@dataclass(frozen=True, slots=True)
class Prepared:
    """What the pre hook made of a request.

    Attributes:
        request: The request to send (its body rewritten when the arguments were replaced).
        answer: The gateway's own answer (a denial, or a hook that could not decide): the
            request is not sent.
        post: The post hook to run on the answer, ``None`` for none.
    """

    request: McpRequest
    answer: McpResponse | None = None
    post: PendingHook | None = None


def _dumps(value: Any) -> bytes:
    r"""Compact JSON, UTF-8 (``\u`` escapes only for what UTF-8 cannot carry: lone surrogates)."""
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
    except UnicodeEncodeError:
        return json.dumps(value, separators=(",", ":")).encode()


def _undecided_response(request_id: Any) -> McpResponse:
    return McpResponse(
        status=503,
        headers=[_JSON, ("retry-after", "1")],
        body=error_body(POLICY_UNAVAILABLE, UNAVAILABLE_MESSAGE, request_id),
    )


class ProxiedPlugins:
    """The core's plugins, run by the gateway on the requests and answers it relays.

    Args:
        plugins: The plugins (their ``hooks`` say which points and names have a hook).
    """

    def __init__(self, plugins: Plugins) -> None:
        self._plugins = plugins
        names: dict[HookPoint, set[str]] = {point: set() for point in HookPoint}
        for hook in plugins.hooks:
            names[hook.point].add(hook.name)
        self._names = {point: frozenset(found) for point, found in names.items()}
        methods: set[bytes] = set()
        if self._names[HookPoint.PRE_INVOKE] or self._names[HookPoint.POST_INVOKE]:
            methods.add(b'"tools/call"')
        if self._names[HookPoint.POST_FETCH]:
            methods.update((b'"resources/read"', b'"prompts/get"'))
        self._methods = tuple(methods)

    def describe(self) -> str:
        """The registered hooks, for the start-up log (``pre_invoke sleep (deny-list), ...``)."""
        return ", ".join(f"{h.point.value} {h.name} ({h.plugin})" for h in self._plugins.hooks)

    def registered(self, point: HookPoint, name: str) -> bool:
        """Whether a hook is registered for ``point`` and ``name`` (or for ``*``)."""
        names = self._names[point]
        return name in names or "*" in names

    def _may_call_hooked_method(self, body: bytes) -> bool:
        """A bytes check before decoding: the method spelled plainly, or any escape at all."""
        return b"\\" in body or any(method in body for method in self._methods)

    def _invoke(
        self, point: HookPoint, name: str, caller: AuthContext, payload: dict[str, Any]
    ) -> HookDecision:
        try:
            return self._plugins.invoke(point, name, caller, payload)
        except Exception as e:  # a plugin's fault must not serve the request without it
            logger.exception("%s hook for %r failed: request refused", point.value, name[:128])
            raise _Undecided(str(e)) from e

    def prepare(self, request: McpRequest) -> Prepared | None:
        """Run the pre hook of ``request``, if any, and say which post hook its answer gets.

        Returns:
            ``None`` when no hook applies (relay the request as it is), else what to send and
            what to run on the answer, or the answer itself.
        """
        if request.method != "POST" or not self._may_call_hooked_method(request.body):
            return None
        try:
            message = parse_message(request.body)
        except FramingError:
            return None
        key = _NAME_KEYS.get(message.method)
        params = message.params
        if message.kind != "request" or key is None or not isinstance(params, dict):
            return None
        name = params.get(key)
        if not isinstance(name, str):
            return None
        method = message.method
        if method == "tools/call" and self.registered(HookPoint.PRE_INVOKE, name):
            arguments = params.get("arguments")
            if arguments is None or isinstance(arguments, dict):
                try:
                    decision = self._invoke(HookPoint.PRE_INVOKE, name, request.auth, arguments or {})
                except _Undecided:
                    return Prepared(request, answer=_undecided_response(message.id))
                if decision.deny_code is not None:
                    logger.info(
                        "tools/call %r of %s refused by a plugin: %s",
                        name[:128],
                        request.auth.email or "anonymous",
                        decision.deny_message,
                    )
                    body = error_body(decision.deny_code, decision.deny_message, message.id)
                    return Prepared(request, answer=McpResponse(status=200, headers=[_JSON], body=body))
                if decision.payload is not None:
                    envelope = {
                        "jsonrpc": "2.0",
                        "id": message.id,
                        "method": method,
                        "params": {**params, "arguments": decision.payload},
                    }
                    request = replace(request, body=_dumps(envelope))
        post = None
        point = _POST_POINTS[method]
        if self.registered(point, name):
            post = PendingHook(point, name, method, message.id, request.auth)
        return Prepared(request, post=post)

    def _rewrite(self, hook: PendingHook, body: bytes) -> tuple[int, bytes] | None:
        """Run the post hook on the JSON-RPC response ``body``.

        Returns:
            ``None`` to relay ``body`` unchanged (not a result, or the hook kept it), else the
            HTTP status (200; 503 when the hook could not decide) and the new response body.
        """
        try:
            message = json.loads(body)
        except ValueError:
            return None
        except RecursionError:
            # Valid JSON too deep to decode here: not relayed unjudged.
            logger.warning("%s: a result too deeply nested to decode: refused", hook.method)
            return 503, error_body(POLICY_UNAVAILABLE, UNAVAILABLE_MESSAGE, hook.request_id)
        if not isinstance(message, dict) or "method" in message:
            return None
        result = message.get("result")
        if not isinstance(result, dict):
            return None
        request_id = message.get("id", hook.request_id)
        try:
            decision = self._invoke(hook.point, hook.name, hook.caller, result)
        except _Undecided:
            return 503, error_body(POLICY_UNAVAILABLE, UNAVAILABLE_MESSAGE, request_id)
        if decision.deny_code is not None:
            return 200, error_body(decision.deny_code, decision.deny_message, request_id)
        if decision.payload is None:
            return None
        return 200, _dumps({"jsonrpc": "2.0", "id": request_id, "result": decision.payload})

    async def finish(self, hook: PendingHook, response: McpResponse) -> McpResponse:
        """Run the post hook on ``response``: a JSON answer now, an SSE answer's final event as it passes.

        Returns:
            The answer to relay (``response`` itself, changed, or a new one; ``response`` is
            closed when it is replaced).

        Raises:
            GatewayError: The backend broke off a JSON answer being read.
        """
        if response.status != 200:
            return response
        content_type = response.header("content-type") or ""
        if content_type.startswith("text/event-stream"):
            if response.stream is not None:
                response.stream = _RewrittenEvents(self, hook, response.stream)
            elif response.body:
                response.body = b"".join(
                    self.rewrite_event(hook, event) for event in SseParser().feed(response.body + b"\n\n")
                )
            return response
        if not content_type.startswith("application/json"):
            return response
        body = response.body
        if response.stream is not None:
            # A large answer the backend relays as it arrives: needed whole here.
            body = b"".join([chunk async for chunk in response.stream])
            await response.aclose()
            response = McpResponse(status=response.status, headers=response.headers, body=body)
        rewritten = self._rewrite(hook, body)
        if rewritten is None:
            return response
        status, new_body = rewritten
        headers = response.headers if status == 200 else [_JSON, ("retry-after", "1")]
        return McpResponse(status=status, headers=headers, body=new_body)

    def rewrite_event(self, hook: PendingHook, event: SseEvent) -> bytes:
        """One SSE event as relayed: the final response rewritten, anything else as it was."""
        data = event.data
        if '"result"' in data:
            rewritten = self._rewrite(hook, data.encode())
            if rewritten is not None:
                data = rewritten[1].decode()
        return encode_event(data, event.event, event.id)


class _RewrittenEvents:
    """An SSE answer's chunks, re-framed event by event, with its final response rewritten.

    Events are framed as the runtime frames them (:func:`~mcp_gateway._sse.encode_event`:
    ``id:``, ``event:``, ``data:`` lines), so the runtime's own streams pass byte for byte;
    comment lines and ``retry:`` fields, which the runtime does not send, are dropped. Closing
    it closes the backend's stream, also when no chunk was read yet.
    """

    def __init__(self, plugins: ProxiedPlugins, hook: PendingHook, inner: AsyncIterator[bytes]) -> None:
        self._plugins = plugins
        self._hook = hook
        self._inner = inner
        self._parser = SseParser()

    def __aiter__(self) -> _RewrittenEvents:
        return self

    async def __anext__(self) -> bytes:
        while True:
            chunk = await self._inner.__anext__()
            events = self._parser.feed(chunk)
            out = b"".join(self._plugins.rewrite_event(self._hook, event) for event in events)
            if out:
                return out

    async def aclose(self) -> None:
        """Close the backend's stream (idempotent)."""
        aclose = getattr(self._inner, "aclose", None)
        if aclose is not None:
            await aclose()
