"""MCP 2026-07-28 beside 2025-11-25: the standard headers the gateway checks itself.

A request of MCP 2026-07-28 has no session; its ``Mcp-Method`` header repeats the body's
method and its ``Mcp-Name`` header the ``params.name`` of ``tools/call`` and ``prompts/get`` or
the ``params.uri`` of ``resources/read``; a missing or different value is HTTP 400 with
JSON-RPC ``-32020`` before any work is done. Over HTTP/JSON the gateway forwards both headers
and the runtime checks them (``crates/mcp-runtime-core/src/era.rs``); the gRPC envelope has no
field for them, so in gRPC mode the gateway checks them here, with the runtime's rules and
messages, before it builds the envelope (``docs/http-boundary.md``). Everything else of that
revision (``_meta``, versions, ``-32022``) the runtime checks in every mode.
"""

from __future__ import annotations

import base64
import binascii

from mcp_types import PROTOCOL_VERSION_META_KEY

from mcp_gateway._jsonrpc import FramingError, may_spell_otherwise, parse_message, shown

__all__ = [
    "HEADER_MISMATCH",
    "LIST_TTL_MS",
    "SESSIONLESS_PROTOCOL_VERSIONS",
    "meta_version_fault",
    "standard_header_fault",
]

SESSIONLESS_PROTOCOL_VERSIONS = frozenset({"2026-07-28"})
"""Protocol versions without sessions (every request carries its version in ``_meta``)."""

LIST_TTL_MS = 5_000
"""``ttlMs`` of a list result of MCP 2026-07-28 in the Python baseline, in milliseconds: the
runtime's (``era.rs``; its catalog changes at run time, and a 2026 client has no stream to hear
of it)."""

HEADER_MISMATCH = -32020
"""MCP 2026-07-28: a standard header missing or not matching the body (HTTP 400)."""

_NAME_KEY = {"tools/call": "name", "prompts/get": "name", "resources/read": "uri"}


def _decoded(raw: str) -> str | None:
    """A header value as sent: plain, or ``=?base64?<standard base64 of UTF-8>?=``."""
    if not (raw.startswith("=?base64?") and raw.endswith("?=")):
        return raw
    try:
        return base64.b64decode(raw[9:-2], validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None


def standard_header_fault(
    protocol_version: str | None, mcp_method: str | None, mcp_name: str | None, body: bytes
) -> str | None:
    """Why a POST's standard headers are refused, or ``None`` when they pass.

    Args:
        protocol_version: ``MCP-Protocol-Version``; only a sessionless version (2026-07-28) is
            checked, every other request passes unread.
        mcp_method: ``Mcp-Method``, ``None`` when absent.
        mcp_name: ``Mcp-Name``, ``None`` when absent (both read without surrounding whitespace).
        body: The raw body; one that is not a JSON-RPC request or notification passes (the
            runtime answers its framing).

    Returns:
        The message of the ``-32020`` answer (HTTP 400), the runtime's wording.
    """
    if protocol_version not in SESSIONLESS_PROTOCOL_VERSIONS:
        return None
    # RFC 9110 section 5.5: a field value's leading and trailing whitespace is not part of it.
    mcp_method = None if mcp_method is None else mcp_method.strip(" \t")
    mcp_name = None if mcp_name is None else mcp_name.strip(" \t")
    try:
        message = parse_message(body)
    except FramingError:
        return None
    if message.kind == "response":
        return None
    method = message.method
    if mcp_method is None:
        return "Header mismatch: missing required Mcp-Method header"
    if mcp_method != method:
        return (
            f"Header mismatch: Mcp-Method header `{shown(mcp_method)}` "
            f"does not match body method `{shown(method)}`"
        )
    key = _NAME_KEY.get(method)
    params = message.params
    expected = params.get(key) if key is not None and isinstance(params, dict) else None
    if not isinstance(expected, str):
        return None
    if mcp_name is None:
        return f"Header mismatch: missing required Mcp-Name header for `{method}`"
    decoded = _decoded(mcp_name)
    if decoded is None:
        return "Header mismatch: Mcp-Name header is not valid Base64"
    if decoded != expected:
        return (
            f"Header mismatch: Mcp-Name header `{shown(decoded)}` "
            f"does not match body value `{shown(expected)}`"
        )
    return None


def meta_version_fault(protocol_version: str | None, body: bytes) -> str | None:
    """Why a POST whose ``_meta`` names a protocol version is refused for its version header.

    The runtime's rule (``era.rs``): a request (not ``initialize``) whose
    ``params._meta`` names ``io.modelcontextprotocol/protocolVersion`` (a string) needs the
    ``MCP-Protocol-Version`` header, equal to it. For a request not already sent to the
    sessionless path by its header (the Python baseline reads the era from the header).

    Returns:
        The message of the ``-32020`` answer (HTTP 400), the runtime's wording; ``None`` when
        the body names no version or the header equals it.
    """
    if PROTOCOL_VERSION_META_KEY.encode() not in body and not may_spell_otherwise(body):
        return None
    try:
        message = parse_message(body)
    except FramingError:
        return None
    if message.kind != "request" or message.method == "initialize":
        return None
    params = message.params
    meta = params.get("_meta") if isinstance(params, dict) else None
    version = meta.get(PROTOCOL_VERSION_META_KEY) if isinstance(meta, dict) else None
    if not isinstance(version, str):
        return None
    if protocol_version is None:
        return "Header mismatch: request _meta protocolVersion requires the MCP-Protocol-Version header"
    if protocol_version != version:
        return (
            f"Header mismatch: MCP-Protocol-Version header ({shown(protocol_version)}) "
            f"does not match request _meta protocolVersion ({shown(version)})"
        )
    return None
