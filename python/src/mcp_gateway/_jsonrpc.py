"""JSON-RPC 2.0 framing and error bodies: the Python twin of the runtime's ``jsonrpc.rs``.

Two jobs, both the runtime's, error for error:

- the error codes and the error bodies the gateway makes itself (:func:`error_body`);
- framing of an incoming body (:func:`parse_message`), which the Python baseline applies before
  the SDK sees a request, so that a malformed body gets the runtime's code and status.

The codes follow ``docs/http-boundary.md``: JSON-RPC 2.0's own codes plus the two the MCP
TypeScript SDK's streamable HTTP transport uses, ``-32000`` and ``-32001``. Each of those two
numbers has several meanings on the wire; each meaning has its own name here (same number, no
wire change), so a reader of a call site sees what went wrong.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "BAD_REQUEST",
    "INTERNAL_ERROR",
    "INVALID_PARAMS",
    "INVALID_REQUEST",
    "LIMIT_REACHED",
    "METHOD_NOT_FOUND",
    "NOT_FOUND",
    "PARSE_ERROR",
    "POLICY_UNAVAILABLE",
    "REQUEST_TIMEOUT",
    "RESOURCE_NOT_FOUND",
    "RUNTIME_UNAVAILABLE",
    "SERVER_BUSY",
    "SHOWN_NAME_BYTES",
    "TOO_DEEP",
    "UNAUTHORIZED",
    "FramingError",
    "ParsedMessage",
    "error_body",
    "may_spell_otherwise",
    "parse_message",
    "request_id_of",
    "result_too_large",
    "shown",
]

PARSE_ERROR = -32700
"""JSON-RPC 2.0: the body is not UTF-8 or not JSON."""
INVALID_REQUEST = -32600
"""JSON-RPC 2.0: not one valid JSON-RPC message (batches included); also a body or a request
head over a limit (413, 431)."""
METHOD_NOT_FOUND = -32601
"""JSON-RPC 2.0: the method does not exist."""
INVALID_PARAMS = -32602
"""JSON-RPC 2.0: invalid parameters; also an unknown tool or prompt (MCP spec)."""
INTERNAL_ERROR = -32603
"""JSON-RPC 2.0: internal error; also an unreachable upstream and a result over the size limit."""
RESOURCE_NOT_FOUND = -32002
"""MCP: the resource does not exist or is not visible."""

BAD_REQUEST = -32000
"""``-32000`` as a refused request: missing ``Mcp-Session-Id``, unsupported protocol version, a
forwarded header that is not visible ASCII (400), ``Host`` or ``Origin`` not allowed (421, 403)."""
RUNTIME_UNAVAILABLE = -32000
"""``-32000`` as the gateway's answer when the runtime cannot be reached (502)."""
LIMIT_REACHED = -32000
"""``-32000`` as a subject at one of its per-subject limits (sessions, open GET streams,
requests in progress): 429 with ``Retry-After`` (the runtime's ``LIMIT_REACHED``)."""
SERVER_BUSY = -32000
"""``-32000`` as the gateway's answer past its limit of open connections or of requests in
progress (503, with ``Retry-After``)."""
POLICY_UNAVAILABLE = -32000
"""``-32000`` as the answer when a hook could not decide: a plugin failed in the gateway (proxied
modes) or the policy core could not be asked (edge modes); 503 with ``Retry-After: 1``, the
request is not served without the decision."""
NOT_FOUND = -32001
"""``-32001`` as not found: an unknown, ended or foreign session, an unknown virtual server (404)."""
UNAUTHORIZED = -32001
"""``-32001`` as the gateway's answer to a missing or bad bearer token (401)."""
REQUEST_TIMEOUT = -32001
"""``-32001`` as a timeout (the MCP SDKs' ``RequestTimeout``): an upstream call over the
upstream timeout (200), the runtime not answering within the request timeout (504), a request
body that stalls for the head timeout (408)."""

SHOWN_NAME_BYTES = 128
"""Longest caller-supplied name echoed in an error message, in UTF-8 bytes (the runtime's
``SHOWN_NAME_BYTES``): a 1 MiB name must not come back as a 1 MiB error."""


def shown(name: str) -> str:
    """``name`` as an error message shows it: cut to :data:`SHOWN_NAME_BYTES` bytes.

    The cut falls on a character boundary (a character that does not fit whole is dropped)
    and ``...`` is appended when anything was cut, as the runtime's ``shown`` does.

    Args:
        name: A method, tool, prompt, resource or virtual server name from the caller.

    Returns:
        ``name`` itself when it is at most 128 UTF-8 bytes long, else its first whole
        characters within 128 bytes followed by ``...``.
    """
    raw = name.encode("utf-8", "surrogatepass")
    if len(raw) <= SHOWN_NAME_BYTES:
        return name
    return raw[:SHOWN_NAME_BYTES].decode("utf-8", "ignore") + "..."


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

    Returns:
        A string or a finite number, or ``None``.
    """
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        return None
    request_id = value.get("id") if isinstance(value, dict) else None
    return request_id if echoable_id(request_id) else None


def echoable_id(value: Any) -> bool:
    r"""Whether ``value``, a decoded JSON-RPC ``id``, can be echoed in a response.

    The rule of the runtime's ``jsonrpc::valid_id``.

    A string must be a Unicode string: a lone surrogate written as a JSON escape (``\uD80B``
    alone) is valid JSON grammar but no string, and strict parsers refuse a response that
    echoes it (found by the runtime's ``jsonrpc_parse`` fuzz target). A number out of a
    double's range (``1e400``) decodes to inf and cannot be echoed as JSON. Booleans, ``null``,
    arrays and objects are no ids (JSON-RPC 2.0; MCP: the ID MUST NOT be null).
    """
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return False
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, int) and not isinstance(value, bool)


def may_spell_otherwise(body: bytes) -> bool:
    r"""Whether raw JSON ``body`` holds a ``\/`` or ``\u`` escape, which can spell a key or a name.

    A bytes check that looks for a string spelled plainly is complete only without one (PHP's
    ``json_encode`` writes ``io.modelcontextprotocol\/protocolVersion`` by default); with one,
    the body must be parsed to know. The runtime's twin is ``era::may_name``.
    """
    return b"\\/" in body or b"\\u" in body


def result_too_large(limit: int) -> str:
    """The runtime's message for a result over the message size limit (``UpstreamError::TooLarge``).

    Args:
        limit: The message size limit, in bytes.
    """
    return f"Result exceeds the message size limit of {limit} bytes"


# --- framing (the runtime's jsonrpc::parse) ---------------------------------------------------


class FramingError(Exception):
    """A body that is not one JSON-RPC message (answered with HTTP 400).

    Attributes:
        code: :data:`PARSE_ERROR` or :data:`INVALID_REQUEST`.
    """

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class ParsedMessage:
    """One parsed message, envelope fields only.

    Attributes:
        kind: ``"request"`` (method and id), ``"notification"`` (method, no id) or
            ``"response"`` (id and exactly one of result and error).
        id: The id (a string or a finite number); ``None`` for a notification.
        method: The method name; ``""`` for a response.
        params: ``params`` as decoded JSON, ``None`` when absent or ``null``; :data:`TOO_DEEP`
            when nested deeper than Python's decoder goes.
    """

    kind: Literal["request", "notification", "response"]
    id: Any = None
    method: str = ""
    params: Any = None


_ENVELOPE_FIELDS = frozenset({"jsonrpc", "id", "method", "params", "result", "error"})


class TooDeep:
    """The type of :data:`TOO_DEEP`."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "TOO_DEEP"


TOO_DEEP = TooDeep()
"""A member of a message nested deeper than Python's JSON decoder goes (its recursion limit,
about 1,000 levels): valid JSON, not decoded (:func:`parse_message`)."""

_WS = r"[ \t\n\r]*"
_TOKEN = re.compile(
    _WS + r'(?:(")|(-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?)|(true|false|null)|([\[\]{},:]))'
)
_STRING = re.compile(r'"(?:[^"\\\x00-\x1f]|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4})*"')
_END = re.compile(_WS + r"\Z")


def _shallow_decode(text: str) -> Any:
    """Decode a valid JSON text whose nesting is too deep for ``json.loads``, without recursing.

    Only the top level is built: for an object, each member's value is decoded by ``json.loads``
    when it can be, else it is :data:`TOO_DEEP`; an array comes back as ``[]`` (a batch, refused
    by the caller either way). Grammar is checked token by token (a regex per token, a stack of
    open containers), so invalid JSON is still a parse error.

    Raises:
        ValueError: The text is not valid JSON (the message says where).
    """
    stack: list[str] = []
    members: list[tuple[str, Any]] = []
    expect = "value"  # value, value_or_end, key, key_or_end, colon, comma_or_end, done
    key = ""
    start = 0
    pos = 0
    while expect != "done":
        m = _TOKEN.match(text, pos)
        if m is None:
            raise ValueError(f"invalid JSON at character {pos}")
        first = m.start(m.lastindex or 0)
        if m.group(1):
            string = _STRING.match(text, first)
            if string is None:
                raise ValueError(f"invalid string at character {first}")
            token, pos = "string", string.end()
        else:
            token, pos = m.group(4) or "scalar", m.end()
        member = len(stack) == 1 and stack[0] == "{"
        completed = False
        if expect in ("value", "value_or_end"):
            if member:
                start = first
            if token in ("{", "["):
                stack.append(token)
                expect = "key_or_end" if token == "{" else "value_or_end"
            elif token in ("string", "scalar"):
                completed = True
            elif token == "]" and expect == "value_or_end":
                stack.pop()
                completed = True
            else:
                raise ValueError(f"unexpected {token!r} at character {first}")
        elif expect in ("key", "key_or_end"):
            if token == "string":
                if member:
                    key = json.loads(text[first:pos])
                expect = "colon"
            elif token == "}" and expect == "key_or_end":
                stack.pop()
                completed = True
            else:
                raise ValueError(f"expected a key at character {first}")
        elif expect == "colon":
            if token != ":":
                raise ValueError(f"expected ':' at character {first}")
            expect = "value"
        elif token == ",":
            expect = "key" if stack[-1] == "{" else "value"
        elif token == ("}" if stack[-1] == "{" else "]"):
            stack.pop()
            completed = True
        else:
            raise ValueError(f"expected ',' or a closing bracket at character {first}")
        if completed:
            if len(stack) == 1 and stack[0] == "{":
                try:
                    members.append((key, json.loads(text[start:pos], object_pairs_hook=_object)))
                except RecursionError:
                    members.append((key, TOO_DEEP))
            expect = "comma_or_end" if stack else "done"
    if _END.match(text, pos) is None:
        raise ValueError(f"extra data at character {pos}")
    return _object(members) if text.lstrip().startswith("{") else []


class _Object(dict[str, Any]):
    """A decoded JSON object that remembers which keys appeared more than once."""

    duplicates: frozenset[str] = frozenset()


def _object(pairs: list[tuple[str, Any]]) -> _Object:
    obj = _Object(pairs)
    if len(obj) != len(pairs):
        keys = [k for k, _ in pairs]
        obj.duplicates = frozenset(k for k in obj if keys.count(k) > 1)
    return obj


def parse_message(body: bytes) -> ParsedMessage:
    """Classify a request body as the runtime does.

    Args:
        body: The raw HTTP request body.

    Returns:
        The message's kind and envelope fields.

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
    except RecursionError:
        # The runtime skips deep values without recursing; Python's decoder recurses. Read the
        # envelope without recursing; a member too deep to decode is TOO_DEEP.
        try:
            value = _shallow_decode(text)
        except ValueError as e:
            raise FramingError(PARSE_ERROR, f"Parse error: {e}") from e
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
    if has_id and not echoable_id(msg_id):
        raise FramingError(INVALID_REQUEST, "Invalid Request: id must be a string or a number")
    method = value.get("method")
    if method is not None and isinstance(msg_id, float) and not msg_id.is_integer():
        # MCP: a request id is a string or an integer (JSON Schema: a number whose fractional
        # part is zero, so 1.0 and 1e2 are integers). The runtime accepts any number here.
        raise FramingError(INVALID_REQUEST, "Invalid Request: id must be a string or an integer")
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
