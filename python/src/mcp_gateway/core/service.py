"""The Core SPI's semantics in one place, and its HTTP/JSON form.

:class:`Core` bundles the policy, the plugins and the call records. Both transports call it:
the gRPC servicers (:mod:`mcp_gateway.core.grpc_server`) after decoding protobuf, the HTTP/JSON
server (:mod:`mcp_gateway.core.http_server`) through :meth:`Core.route`, which takes one
request's method, path, query and body and returns the answer: every route of
``docs/core-spi.md`` (the HTTP/JSON twin of ``proto/mcp/core/v1/core.proto``) is decoded,
validated and encoded here, so any HTTP server library can serve it.

JSON shapes (field names are the proto's lowerCamelCase JSON names; hook points the lower-case
strings ``pre_invoke``, ``post_invoke``, ``post_fetch``; a hook ``payload`` is a JSON object, not
base64; the AuthContext is the ``x-contextforge-auth-context`` JSON of docs/http-boundary.md).
Errors of the transport itself (invalid JSON, a missing or mistyped field, an unknown point) are
answered 400 ``{"error": "..."}``; an unknown route 404, a known route with another method 405.
"""

from __future__ import annotations

import collections
import json
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from mcp_gateway._auth import AuthContext
from mcp_gateway.core.plugins import HookDecision, HookPoint, Plugins
from mcp_gateway.core.policy import Policy, Resolved, Revocation, WatchEvent, token_sha256

__all__ = [
    "KEEPALIVE_S",
    "BadRequest",
    "CallRecord",
    "Core",
    "Records",
    "Reply",
    "Stream",
    "auth_from_json",
    "event_to_json",
    "resolved_to_json",
]

logger = logging.getLogger(__name__)

KEEPALIVE_S = 15.0
"""Seconds between the empty keep-alive lines of an idle ``GET /v1/watch-policy`` stream."""

_JSON = "application/json"


class BadRequest(ValueError):
    """A request the transport cannot decode (HTTP 400, gRPC ``INVALID_ARGUMENT``)."""


@dataclass(frozen=True, slots=True)
class Reply:
    """A whole HTTP answer: status, content type and body (empty for 204)."""

    status: int
    body: bytes = b""
    content_type: str = _JSON


@dataclass(frozen=True, slots=True)
class Stream:
    """A streamed HTTP answer: NDJSON lines from ``lines`` (an empty line is a keep-alive)."""

    lines: AsyncIterator[bytes]
    content_type: str = "application/x-ndjson"


@dataclass(frozen=True, slots=True)
class CallRecord:
    """One finished call the runtime reported (``CallRecord`` of the proto; units in the names)."""

    subject_email: str
    server_id: str
    method: str
    name: str
    http_status: int
    jsonrpc_code: int
    duration_us: int
    request_id: str
    started_at_unix_us: int


@dataclass(slots=True)
class Records:
    """The core's metrics from RecordCalls: totals, counts per method and status, the latest calls.

    Attributes:
        batches: Batches received.
        records: Records received.
        dropped: Records the runtime reported dropped (the sum of every batch's ``dropped``).
        by_outcome: Records per ``(method, http_status, jsonrpc_code)``.
        latest: The last 256 records, oldest first.
    """

    batches: int = 0
    records: int = 0
    dropped: int = 0
    by_outcome: collections.Counter[tuple[str, int, int]] = field(default_factory=collections.Counter)
    latest: collections.deque[CallRecord] = field(default_factory=lambda: collections.deque(maxlen=256))

    def add(self, records: list[CallRecord], dropped: int) -> None:
        """Account one batch."""
        self.batches += 1
        self.records += len(records)
        self.dropped += dropped
        for r in records:
            self.by_outcome[(r.method, r.http_status, r.jsonrpc_code)] += 1
        self.latest.extend(records)


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def _error(status: int, message: str) -> Reply:
    return Reply(status, _dumps({"error": message}))


def _object(body: bytes) -> dict[str, Any]:
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise BadRequest(f"body is not valid JSON: {e}") from e
    if not isinstance(value, dict):
        raise BadRequest("body must be a JSON object")
    return value


def _field(obj: Mapping[str, Any], name: str, kind: type | tuple[type, ...], default: Any) -> Any:
    value = obj.get(name, default)
    if value is None:
        return default
    # bool is an int: an integer field takes no true/false.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise BadRequest(f"field {name!r} has the wrong type")
    return value


def _str_list(obj: Mapping[str, Any], name: str) -> tuple[str, ...] | None:
    value = obj.get(name)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BadRequest(f"field {name!r} must be a list of strings")
    return tuple(value)


def auth_from_json(obj: Any) -> AuthContext:
    """The AuthContext of its JSON form (``AuthContext.to_json``).

    Raises:
        BadRequest: Not an object, or a field of the wrong type.
    """
    if not isinstance(obj, dict):
        raise BadRequest("caller must be a JSON object")
    return AuthContext(
        email=_field(obj, "email", str, ""),
        is_admin=_field(obj, "is_admin", bool, False),
        teams=_str_list(obj, "teams"),
        scopes=_str_list(obj, "scopes") or (),
        token_exp=_field(obj, "token_exp", int, 0),
        traceparent=_field(obj, "traceparent", str, ""),
        trace_id=_field(obj, "trace_id", str, ""),
    )


def resolved_to_json(resolved: Resolved) -> dict[str, Any]:
    """The ``POST /v1/resolve-caller`` answer of a :class:`Resolved`."""
    if resolved.caller is not None:
        return {
            "caller": resolved.caller.to_json(),
            "cacheMaxAgeMs": resolved.cache_max_age_ms,
            "generation": resolved.generation,
        }
    assert resolved.denial is not None
    d = resolved.denial
    return {
        "denial": {"httpStatus": d.http_status, "wwwAuthenticate": d.www_authenticate, "reason": d.reason},
        "generation": resolved.generation,
    }


def event_to_json(event: WatchEvent) -> dict[str, Any]:
    """One ``GET /v1/watch-policy`` line of a :class:`WatchEvent`."""
    if event.snapshot is not None:
        hooks = [{"point": h.point.value, "name": h.name, "plugin": h.plugin} for h in event.snapshot.hooks]
        return {
            "generation": event.generation,
            "snapshot": {"hooks": hooks, "generation": event.snapshot.generation},
        }
    assert event.revocation is not None
    r = event.revocation
    target: dict[str, Any]
    if r.token_sha256:
        target = {"tokenSha256": r.token_sha256}
    elif r.subject_email:
        target = {"subjectEmail": r.subject_email}
    else:
        target = {"all": True}
    return {"generation": event.generation, "revocation": target}


def decision_to_json(decision: HookDecision) -> dict[str, Any]:
    """The ``POST /v1/invoke-hook`` answer of a :class:`HookDecision`."""
    if decision.deny_code is not None:
        return {"deny": {"code": decision.deny_code, "message": decision.deny_message}}
    if decision.payload is not None:
        return {"proceed": {"payload": decision.payload}}
    return {"proceed": {}}


def revocation_from_json(obj: dict[str, Any]) -> Revocation:
    """The target of ``POST /admin/revoke``.

    Exactly one of ``token`` (the credential, hashed here), ``tokenSha256``, ``subjectEmail``
    and ``all``.

    Raises:
        BadRequest: Not exactly one target, or one of the wrong type.
    """
    token = _field(obj, "token", str, "")
    if token.lower().startswith("bearer "):
        token = token[7:].strip()
    revocation = Revocation(
        token_sha256=token_sha256(token) if token else _field(obj, "tokenSha256", str, ""),
        subject_email=_field(obj, "subjectEmail", str, ""),
        all=_field(obj, "all", bool, False),
    )
    if token and obj.get("tokenSha256"):
        raise BadRequest("give one of token and tokenSha256")
    return revocation


class Core:
    """The Core SPI served by the core process: policy, plugins and records, shared by both transports.

    Args:
        policy: Token verification, revocations and the watchers.
        plugins: The configured plugins.
    """

    def __init__(self, policy: Policy, plugins: Plugins) -> None:
        self.policy = policy
        self.plugins = plugins
        self.records = Records()
        self.serving = False
        """Readiness: set once the sockets serve (``/ready``)."""
        self.draining = False
        """Set when shutdown begins: ``/ready`` is 503 ``draining`` from then on."""
        self.on_revoke: Callable[[str], None] | None = None
        """Told the kind (``token``, ``subject``, ``all``) of each revocation made (metrics)."""

    def invoke_hook(
        self, point: HookPoint, name: str, caller: AuthContext, payload: bytes | dict[str, Any]
    ) -> HookDecision:
        """Run the hooks of one point of one request (``PluginService.InvokeHook``).

        Args:
            point: The hook point.
            name: The tool name, resource URI or prompt name.
            caller: The caller.
            payload: The payload: UTF-8 JSON of an object (gRPC) or the decoded object (HTTP/JSON).

        Raises:
            BadRequest: The payload is not a JSON object.
        """
        if isinstance(payload, bytes):
            try:
                payload = json.loads(payload) if payload else {}
            except (ValueError, UnicodeDecodeError) as e:
                raise BadRequest(f"payload is not valid JSON: {e}") from e
        if not isinstance(payload, dict):
            raise BadRequest("payload must be a JSON object")
        return self.plugins.invoke(point, name, caller, payload)

    def health(self) -> dict[str, Any]:
        """The ``GET /health`` answer: ``{"status": "serving", "authentication": "enabled"}``.

        ``authentication`` is ``"disabled"`` when the core runs with ``MCP_GATEWAY_AUTH_DISABLED=1``
        (every caller resolves to the anonymous one), so a probe or an operator sees it.
        """
        return {
            "status": "serving",
            "authentication": "disabled" if self.policy.auth_disabled else "enabled",
        }

    def record_calls(self, records: list[CallRecord], dropped: int) -> None:
        """Account one batch of finished calls (``ObservabilityService.RecordCalls``)."""
        self.records.add(records, dropped)
        if dropped:
            logger.warning("the runtime dropped %d call records", dropped)

    def stats(self) -> dict[str, Any]:
        """The ``GET /admin/stats`` answer: generation, watchers, hooks, ResolveCaller and record totals.

        ``resolve`` counts the ResolveCaller calls that reached the core (``calls``) and those
        answered with a denial (``denied``), on both transports since the core started.
        """
        hooks = [{"point": h.point.value, "name": h.name, "plugin": h.plugin} for h in self.plugins.hooks]
        return {
            "generation": self.policy.generation,
            "watchers": self.policy.watchers,
            "hooks": hooks,
            "authDisabled": self.policy.auth_disabled,
            "resolve": {"calls": self.policy.resolve_calls, "denied": self.policy.resolve_denials},
            "records": {
                "batches": self.records.batches,
                "records": self.records.records,
                "dropped": self.records.dropped,
                "latest": [r.request_id for r in self.records.latest][-16:],
            },
        }

    # -- HTTP/JSON ---------------------------------------------------------------------------

    def route(self, method: str, path: str, query: Mapping[str, str], body: bytes) -> Reply | Stream:
        """Answer one HTTP/JSON request (the routes table of ``docs/core-spi.md``).

        Args:
            method: The HTTP method, upper case.
            path: The path without the query.
            query: The decoded query parameters (last value wins).
            body: The whole request body.

        Returns:
            A whole reply, or the NDJSON stream of ``GET /v1/watch-policy``. Never raises for
            bad input: that is a 400 reply.
        """
        handler = _ROUTES.get(path)
        if handler is None:
            return _error(404, f"no route {path[:128]}")
        want, fn = handler
        if method != want:
            return _error(405, f"{path} takes {want}")
        try:
            return fn(self, query, body)
        except BadRequest as e:
            return _error(400, str(e))

    def _resolve(self, _query: Mapping[str, str], body: bytes) -> Reply:
        req = _object(body)
        resolved = self.policy.resolve(
            _field(req, "authorization", str, ""),
            request_id=_field(req, "requestId", str, ""),
            traceparent=_field(req, "traceparent", str, ""),
        )
        # Read so that a mistyped field is a 400 on both transports alike.
        _field(req, "clientAddress", str, "")
        _field(req, "serverId", str, "")
        return Reply(200, _dumps(resolved_to_json(resolved)))

    def _invoke(self, _query: Mapping[str, str], body: bytes) -> Reply:
        req = _object(body)
        raw_point = _field(req, "point", str, "")
        try:
            point = HookPoint(raw_point)
        except ValueError as e:
            raise BadRequest(f"unknown hook point {raw_point[:32]!r}") from e
        if "caller" not in req:
            raise BadRequest("field 'caller' is required")
        payload = req.get("payload", {})
        if not isinstance(payload, dict):
            raise BadRequest("payload must be a JSON object")
        decision = self.invoke_hook(
            point, _field(req, "name", str, ""), auth_from_json(req["caller"]), payload
        )
        return Reply(200, _dumps(decision_to_json(decision)))

    def _record(self, _query: Mapping[str, str], body: bytes) -> Reply:
        req = _object(body)
        raw = _field(req, "records", list, [])
        records = []
        for item in raw:
            if not isinstance(item, dict):
                raise BadRequest("each record must be a JSON object")
            records.append(
                CallRecord(
                    subject_email=_field(item, "subjectEmail", str, ""),
                    server_id=_field(item, "serverId", str, ""),
                    method=_field(item, "method", str, ""),
                    name=_field(item, "name", str, ""),
                    http_status=_field(item, "httpStatus", int, 0),
                    jsonrpc_code=_field(item, "jsonrpcCode", int, 0),
                    duration_us=_field(item, "durationUs", int, 0),
                    request_id=_field(item, "requestId", str, ""),
                    started_at_unix_us=_field(item, "startedAtUnixUs", int, 0),
                )
            )
        self.record_calls(records, _field(req, "dropped", int, 0))
        return Reply(204, b"", "")

    def _watch(self, query: Mapping[str, str], _body: bytes) -> Stream:
        return Stream(self._watch_lines(query.get("watcher", "")))

    async def _watch_lines(self, watcher: str) -> AsyncIterator[bytes]:
        async for event in self.policy.watch(watcher or "http watcher"):
            yield _dumps(event_to_json(event)) + b"\n"

    def _health(self, _query: Mapping[str, str], _body: bytes) -> Reply:
        return Reply(200, _dumps(self.health()))

    def _ready(self, _query: Mapping[str, str], _body: bytes) -> Reply:
        if self.draining:
            return Reply(503, b'{"status":"not_ready","reason":"draining"}')
        if not self.serving:
            return Reply(503, b'{"status":"not_ready","reason":"starting"}')
        return Reply(200, b'{"status":"ready"}')

    def _revoke(self, _query: Mapping[str, str], body: bytes) -> Reply:
        try:
            revocation = revocation_from_json(_object(body))
            generation = self.policy.revoke(revocation)
        except ValueError as e:
            raise BadRequest(str(e)) from e
        if self.on_revoke is not None:
            kind = "token" if revocation.token_sha256 else "subject" if revocation.subject_email else "all"
            self.on_revoke(kind)
        return Reply(200, _dumps({"generation": generation}))

    def _stats(self, _query: Mapping[str, str], _body: bytes) -> Reply:
        return Reply(200, _dumps(self.stats()))


_Handler = Callable[[Core, Mapping[str, str], bytes], "Reply | Stream"]

_ROUTES: dict[str, tuple[str, _Handler]] = {
    "/v1/resolve-caller": ("POST", Core._resolve),
    "/v1/invoke-hook": ("POST", Core._invoke),
    "/v1/record-calls": ("POST", Core._record),
    "/v1/watch-policy": ("GET", Core._watch),
    "/health": ("GET", Core._health),
    "/ready": ("GET", Core._ready),
    "/admin/revoke": ("POST", Core._revoke),
    "/admin/stats": ("GET", Core._stats),
}
