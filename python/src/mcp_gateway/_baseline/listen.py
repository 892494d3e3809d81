"""``subscriptions/listen`` in the baseline (MCP 2026-07-28, SEP-2575): its filter and its stream.

The same behaviour as the runtime's ``listen.rs`` (``docs/http-boundary.md``): a client without
a session POSTs ``subscriptions/listen`` with ``params.notifications``, what it opts in to
(``toolsListChanged``, ``promptsListChanged``, ``resourcesListChanged``, booleans;
``resourceSubscriptions``, URIs), and the answer is an SSE stream that stays open:

1. ``notifications/subscriptions/acknowledged`` first, naming every flag asked for and each URI
   the caller may read whose upstream accepted the subscription (a URI left out is no error);
2. then only what it opted in to: a ``notifications/*/list_changed`` when the caller's view of
   that list changed (:mod:`.live`, as for a session's GET stream) and
   ``notifications/resources/updated`` for its URIs (the server's subscriptions, shared with
   the sessions' ``resources/subscribe``: one upstream subscription per (upstream, URI)), each
   tagged with ``_meta["io.modelcontextprotocol/subscriptionId"]``, the listen request's id;
3. it ends when the client goes away, and its resource subscriptions with it.

This module holds the two pieces that do not need the server's handlers: :func:`read_filter`
(the checks of ``params.notifications``, -32602) and :class:`ListenStream` (what the live
catalog and the resource subscriptions send to, a bounded queue the handler drains onto the
SDK's response stream). The handler is in :mod:`.server`; the per-subject stream limit (429) is
the front layer's (:meth:`.sessions.Sessions.listen`).
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass
from typing import Any

import anyio
import mcp_types as types
from mcp.shared.exceptions import MCPError
from mcp.shared.subscriptions import (
    SUBSCRIPTION_ID_META_KEY,
    PromptsListChanged,
    ResourcesListChanged,
    ResourceUpdated,
    ServerEvent,
    ToolsListChanged,
    event_to_notification,
)

from mcp_gateway._jsonrpc import INVALID_PARAMS

__all__ = [
    "MAX_RESOURCE_SUBSCRIPTIONS",
    "STREAM_CAPACITY",
    "Filter",
    "ListenStream",
    "read_filter",
]

logger = logging.getLogger("mcp_gateway._baseline")

MAX_RESOURCE_SUBSCRIPTIONS = 256
"""Most URIs one listen request may name in ``resourceSubscriptions`` (more: -32602), as the
runtime's ``MAX_RESOURCE_SUBSCRIPTIONS``."""

STREAM_CAPACITY = 16
"""Messages a listen stream holds for a client that is not reading; one more is dropped for that
stream, never waited for (the runtime's ``STREAM_CAPACITY``)."""

_KEYS = itertools.count(1)


@dataclass(frozen=True, slots=True)
class Filter:
    """A checked ``params.notifications``.

    Attributes:
        tools: ``toolsListChanged`` asked for.
        prompts: ``promptsListChanged`` asked for.
        resources: ``resourcesListChanged`` asked for.
        uris: ``resourceSubscriptions`` without repeats, in the order given.
    """

    tools: bool
    prompts: bool
    resources: bool
    uris: tuple[str, ...]


def read_filter(params: Any) -> Filter:
    """Read the raw ``params`` of a ``subscriptions/listen`` request (a JSON object or ``None``).

    Checked strictly, as the runtime does (the SDK's model would take ``"yes"`` for ``true``).

    Raises:
        MCPError: -32602 when ``params`` or ``notifications`` is not an object, a flag is
            neither a boolean nor null, ``resourceSubscriptions`` is not an array of strings,
            or it names more than :data:`MAX_RESOURCE_SUBSCRIPTIONS` URIs.
    """

    def invalid(what: str) -> MCPError:
        return MCPError(code=INVALID_PARAMS, message=f"subscriptions/listen: {what}")

    if not isinstance(params, dict):
        raise invalid("params must be an object")
    notifications = params.get("notifications")
    if not isinstance(notifications, dict):
        raise invalid("`notifications` must be an object")

    def flag(key: str) -> bool:
        value = notifications.get(key)
        if value is None or isinstance(value, bool):
            return bool(value)
        raise invalid(f"`notifications.{key}` must be a boolean")

    listed = notifications.get("resourceSubscriptions")
    uris: dict[str, None] = {}
    if listed is not None:
        if not isinstance(listed, list) or not all(isinstance(uri, str) for uri in listed):
            raise invalid("`notifications.resourceSubscriptions` must be an array of strings")
        if len(listed) > MAX_RESOURCE_SUBSCRIPTIONS:
            raise invalid(
                f"`notifications.resourceSubscriptions` names {len(listed)} URIs, "
                f"more than the limit of {MAX_RESOURCE_SUBSCRIPTIONS}"
            )
        uris = dict.fromkeys(listed)
    return Filter(
        tools=flag("toolsListChanged"),
        prompts=flag("promptsListChanged"),
        resources=flag("resourcesListChanged"),
        uris=tuple(uris),
    )


class ListenStream:
    """One open listen stream: where its events wait for the handler to send them.

    It stands where a session's SDK server session stands for the live catalog
    (:attr:`.live.LiveCatalog.sessions`, the ``send_*_list_changed`` methods) and for the
    resource subscriptions (``send_resource_updated``), so both reach it without knowing it is
    not a session. Each event the stream opted in to is queued, tagged with the subscription id;
    with :data:`STREAM_CAPACITY` waiting, a new one is dropped (a level trigger: the client
    refetches on the next).

    Args:
        request_id: The listen request's JSON-RPC id (the subscription id).
        wanted: What the request opted in to.
    """

    def __init__(self, request_id: types.RequestId, wanted: Filter) -> None:
        self.key = f"listen-{next(_KEYS)}"
        """Its key where sessions are kept by id (``listen-<n>``: no MCP session id looks so)."""
        self.meta: dict[str, Any] = {SUBSCRIPTION_ID_META_KEY: request_id}
        """The ``_meta`` every message of the stream carries."""
        self._wanted = wanted
        self._send, self.events = anyio.create_memory_object_stream[types.ServerNotification](STREAM_CAPACITY)

    def acknowledgement(self, uris: list[str]) -> types.SubscriptionsAcknowledgedNotification:
        """The first message: the flags asked for and ``uris``, those honoured."""
        honoured = types.SubscriptionFilter(
            tools_list_changed=True if self._wanted.tools else None,
            prompts_list_changed=True if self._wanted.prompts else None,
            resources_list_changed=True if self._wanted.resources else None,
            resource_subscriptions=uris or None,
        )
        return types.SubscriptionsAcknowledgedNotification(
            params=types.SubscriptionsAcknowledgedNotificationParams(notifications=honoured, _meta=self.meta)
        )

    def result(self) -> dict[str, Any]:
        """The listen request's result, should the stream end while its client reads."""
        return {"resultType": "complete", "_meta": self.meta}

    def close(self) -> None:
        """No more events: the handler sends what waits and ends."""
        self._send.close()

    def _put(self, event: ServerEvent) -> None:
        try:
            self._send.send_nowait(event_to_notification(event, self.meta))
        except anyio.WouldBlock:
            logger.debug("listen stream %s: client not reading; %s dropped", self.key, event)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            pass

    async def send_tool_list_changed(self) -> None:
        """The caller's tool list changed (the live catalog's call)."""
        if self._wanted.tools:
            self._put(ToolsListChanged())

    async def send_prompt_list_changed(self) -> None:
        """The caller's prompt list changed (the live catalog's call)."""
        if self._wanted.prompts:
            self._put(PromptsListChanged())

    async def send_resource_list_changed(self) -> None:
        """The caller's resource list changed (the live catalog's call)."""
        if self._wanted.resources:
            self._put(ResourcesListChanged())

    async def send_resource_updated(self, uri: str) -> None:
        """A resource the stream subscribed to changed (the subscriptions' call)."""
        self._put(ResourceUpdated(uri=uri))
