"""What the two HTTP/JSON clients of the runtime share: the request as sent, the numbers that size them.

The HTTP/JSON boundary (``docs/http-boundary.md``) has two clients in the gateway, chosen by
``MCP_RUST_HTTP_CLIENT``: aiohttp (``_aiohttp_backend``, the default: the faster of the two) and
httpx (``_http_backend``: what the ContextForge gateway uses). Both send the same request (a
whitelist of MCP headers plus the two internal ones, :func:`runtime_headers`, to
:func:`runtime_path`), relay the answer without the hop-by-hop headers (:data:`HOP_BY_HOP`), and
size their pools and timeouts with the numbers here. This module imports no client library.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import quote

from mcp_gateway._backend import McpRequest, RuntimeHealth, StateStoreHealth

__all__ = [
    "DEFAULT_KEEPALIVE_S",
    "DEFAULT_MAX_CONNECTIONS",
    "HOP_BY_HOP",
    "POOL_TIMEOUT_S",
    "STREAM_JSON_FROM_BYTES",
    "declared_length",
    "health_of",
    "relayed_headers",
    "runtime_headers",
    "runtime_path",
]

HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "content-length", "date", "server", "upgrade", "te"}
)
"""Headers that describe one hop, not the message: never relayed to the client."""

DEFAULT_KEEPALIVE_S = 5.0
"""How long an idle pooled connection is kept, in seconds: well below the runtime's 30 s."""

DEFAULT_MAX_CONNECTIONS = 1024
"""Connections to the runtime at once: the gateway's default ``MCP_GATEWAY_MAX_CONCURRENT_REQUESTS``
(see ``_http_backend``'s docstring for why the two are equal)."""

STREAM_JSON_FROM_BYTES = 1024 * 1024
"""A JSON answer larger than this (by the runtime's ``Content-Length``, in bytes) is relayed to
the client as it arrives instead of being read whole first (issue 13: memory of large results)."""

POOL_TIMEOUT_S = 2.0
"""Longest wait for a free pooled connection, in seconds; then 503 with ``Retry-After: 1``."""


def runtime_headers(request: McpRequest) -> dict[str, str]:
    """The headers sent to the runtime: the AuthContext, the request id and the MCP headers present.

    Returns:
        Lower-case names: ``x-contextforge-auth-context``, ``x-request-id``, ``traceparent``
        (the AuthContext's, when set: ``docs/operations.md``, Traces), and those of
        ``mcp-session-id``, ``mcp-protocol-version``, ``accept``, ``last-event-id``,
        ``content-type``, ``mcp-method`` and ``mcp-name`` that the client sent (the runtime checks
        the last two against the body for MCP 2026-07-28), and its ``mcp-param-*`` headers
        (SEP-2243, checked by the runtime too).
    """
    headers = {
        "x-contextforge-auth-context": request.auth.to_header_value(),
        "x-request-id": request.request_id,
    }
    if request.auth.traceparent:
        headers["traceparent"] = request.auth.traceparent
    for name, value in (
        ("mcp-session-id", request.session_id),
        ("mcp-protocol-version", request.protocol_version),
        ("accept", request.accept),
        ("last-event-id", request.last_event_id),
        ("content-type", request.content_type),
        ("mcp-method", request.mcp_method),
        ("mcp-name", request.mcp_name),
    ):
        if value is not None:
            headers[name] = value
    headers.update(request.mcp_params)
    return headers


def runtime_path(request: McpRequest) -> str:
    """``/servers/{id}/mcp`` (the id percent-encoded) for a virtual server, else ``/mcp``."""
    if request.server_id is None:
        return "/mcp"
    return f"/servers/{quote(request.server_id, safe='')}/mcp"


def declared_length(content_length: str | None) -> int | None:
    """A ``Content-Length`` value in bytes; ``None`` when absent or not a plain number."""
    raw = content_length or ""
    return int(raw) if raw.isdigit() else None


def relayed_headers(raw: Iterable[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    """The runtime's response headers as relayed to the client: lower-case names, no hop-by-hop."""
    headers = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in raw]
    return [(k, v) for k, v in headers if k not in HOP_BY_HOP]


def health_of(data: Any) -> RuntimeHealth:
    """The runtime's ``GET /health`` JSON object as a reachable :class:`RuntimeHealth`.

    Raises:
        ValueError: ``data`` is not a JSON object.
    """
    if not isinstance(data, dict):
        raise ValueError(f"health answer is not a JSON object: {type(data).__name__}")
    return RuntimeHealth(
        reachable=True,
        status=str(data.get("status", "unknown")),
        runtime_version=data.get("runtime_version"),
        contract_version=data.get("contract_version"),
        features=tuple(data.get("features") or ()),
        open_sessions=data.get("open_sessions"),
        state_store=_state_store_of(data.get("state_store")),
    )


def _state_store_of(data: Any) -> StateStoreHealth | None:
    """The ``state_store`` object of ``GET /health``, ``None`` when absent or malformed."""
    if not isinstance(data, dict) or not isinstance(data.get("kind"), str):
        return None
    return StateStoreHealth(kind=data["kind"], reachable=data.get("reachable") is True)
