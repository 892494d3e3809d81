"""JSON-RPC error codes and bodies, the same numbers the runtime answers with.

The codes follow ``docs/http-boundary.md`` (and the runtime's ``jsonrpc.rs``): JSON-RPC 2.0's
own codes plus the MCP TypeScript SDK's ``-32000`` (bad request) and ``-32001`` (session not
found, unauthorised).
"""

from __future__ import annotations

import json
import math
from typing import Any

__all__ = [
    "BAD_REQUEST",
    "INTERNAL_ERROR",
    "INVALID_PARAMS",
    "INVALID_REQUEST",
    "METHOD_NOT_FOUND",
    "NOT_FOUND",
    "PARSE_ERROR",
    "RESOURCE_NOT_FOUND",
    "error_body",
    "request_id_of",
    "result_too_large",
]

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
BAD_REQUEST = -32000
NOT_FOUND = -32001
RESOURCE_NOT_FOUND = -32002


def error_body(code: int, message: str, request_id: Any = None) -> bytes:
    """Encode a JSON-RPC 2.0 error response.

    Args:
        code: The JSON-RPC error code, for example ``-32000``.
        message: Human-readable message.
        request_id: The id of the request being answered, ``None`` (JSON ``null``) when unknown.

    Returns:
        UTF-8 JSON bytes ``{"jsonrpc":"2.0","id":..,"error":{"code":..,"message":..}}``.
    """
    return json.dumps(
        {"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": message}},
        separators=(",", ":"),
    ).encode()


def request_id_of(body: bytes) -> Any:
    """The ``id`` of the JSON-RPC request in ``body``, ``None`` when there is none to echo.

    Only for answers the gateway makes itself about a request it already forwarded (the body
    passed the runtime's framing checks): anything unexpected gives ``None``.
    """
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        return None
    request_id = value.get("id") if isinstance(value, dict) else None
    if isinstance(request_id, bool) or not isinstance(request_id, str | int | float):
        return None
    return request_id if not isinstance(request_id, float) or math.isfinite(request_id) else None


def result_too_large(limit: int) -> str:
    """The runtime's message for a result over the message size limit (``UpstreamError::TooLarge``)."""
    return f"Result exceeds the message size limit of {limit} bytes"
