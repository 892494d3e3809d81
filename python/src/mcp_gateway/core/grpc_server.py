"""The Core SPI's gRPC transport: ``mcp.core.v1`` on a grpc.aio server over a Unix socket.

Serves ``AuthPolicyService``, ``PluginService`` and ``ObservabilityService``
(``proto/mcp/core/v1/core.proto``) plus ``grpc.health.v1.Health`` (grpcio-health-checking: the
empty service name and each of the three report ``SERVING``, ``NOT_SERVING`` once the core
stops). Messages of up to :data:`MAX_MESSAGE_BYTES` both ways. Each RPC maps the proto onto
:class:`mcp_gateway.core.service.Core`, whose answers the HTTP/JSON transport shares.

Errors: a request the core cannot decode (``HOOK_POINT_UNSPECIFIED`` or an unknown point, no
``caller``, a hook payload that is not a UTF-8 JSON object, an unknown team scope) is
``INVALID_ARGUMENT``; a refused caller or a denied hook is an OK answer (``denial``, ``deny``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator

import grpc
import grpc.aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from mcp_gateway._auth import AuthContext
from mcp_gateway._errors import ConfigError
from mcp_gateway._grpc_backend import auth_to_proto
from mcp_gateway._proto.mcp.core.v1 import core_pb2 as pb
from mcp_gateway._proto.mcp.core.v1 import core_pb2_grpc as pb_grpc
from mcp_gateway._proto.mcp.runtime.v1 import runtime_pb2 as rpb
from mcp_gateway.core.observe import CoreObserver, GrpcObserver
from mcp_gateway.core.plugins import HookPoint
from mcp_gateway.core.policy import WatchEvent
from mcp_gateway.core.service import BadRequest, CallRecord, Core

__all__ = ["MAX_MESSAGE_BYTES", "SERVICES", "GrpcServer", "auth_from_proto", "event_to_proto"]

logger = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 65 * 1024 * 1024
"""Largest message either way, in bytes: the runtime's 64 MiB message limit plus 1 MiB."""

SERVICES = (
    "mcp.core.v1.AuthPolicyService",
    "mcp.core.v1.PluginService",
    "mcp.core.v1.ObservabilityService",
)
"""The services served, as ``grpc.health.v1`` names them."""

_POINTS = {
    pb.HOOK_POINT_PRE_INVOKE: HookPoint.PRE_INVOKE,
    pb.HOOK_POINT_POST_INVOKE: HookPoint.POST_INVOKE,
    pb.HOOK_POINT_POST_FETCH: HookPoint.POST_FETCH,
}
_POINT_NUMBERS = {point: number for number, point in _POINTS.items()}


def auth_from_proto(auth: rpb.AuthContext) -> AuthContext:
    """The AuthContext of ``mcp.runtime.v1.AuthContext`` (the inverse of ``auth_to_proto``).

    ``UNSPECIFIED`` reads as public only (least privilege), as the runtime reads it.

    Raises:
        BadRequest: An unknown team scope number.
    """
    teams: tuple[str, ...] | None
    if auth.team_scope == rpb.TEAM_SCOPE_UNRESTRICTED:
        teams = None
    elif auth.team_scope in (rpb.TEAM_SCOPE_PUBLIC_ONLY, rpb.TEAM_SCOPE_UNSPECIFIED):
        teams = ()
    elif auth.team_scope == rpb.TEAM_SCOPE_TEAMS:
        teams = tuple(auth.teams)
    else:
        raise BadRequest(f"unknown team scope {auth.team_scope}")
    return AuthContext(
        email=auth.subject_email,
        is_admin=auth.is_admin,
        teams=teams,
        scopes=tuple(auth.scopes),
        token_exp=auth.token_expires_at_unix_s,
        traceparent=auth.traceparent,
        trace_id=auth.trace_id,
    )


def event_to_proto(event: WatchEvent) -> pb.WatchPolicyResponse:
    """One WatchPolicy message of a :class:`~mcp_gateway.core.policy.WatchEvent`."""
    if event.snapshot is not None:
        hooks = [
            pb.HookRegistration(point=_POINT_NUMBERS[h.point], name=h.name, plugin=h.plugin)
            for h in event.snapshot.hooks
        ]
        snapshot = pb.PolicySnapshot(hooks=hooks, generation=event.snapshot.generation)
        return pb.WatchPolicyResponse(generation=event.generation, snapshot=snapshot)
    assert event.revocation is not None
    r = event.revocation
    if r.token_sha256:
        revocation = pb.Revocation(token_sha256=r.token_sha256)
    elif r.subject_email:
        revocation = pb.Revocation(subject_email=r.subject_email)
    else:
        revocation = pb.Revocation(all=True)
    return pb.WatchPolicyResponse(generation=event.generation, revocation=revocation)


class _AuthPolicy(pb_grpc.AuthPolicyServiceServicer):
    def __init__(self, core: Core) -> None:
        self._core = core

    async def ResolveCaller(
        self, request: pb.ResolveCallerRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> pb.ResolveCallerResponse:
        resolved = self._core.policy.resolve(
            request.authorization, request_id=request.request_id, traceparent=request.traceparent
        )
        if resolved.caller is not None:
            return pb.ResolveCallerResponse(
                caller=auth_to_proto(resolved.caller),
                cache_max_age_ms=resolved.cache_max_age_ms,
                generation=resolved.generation,
            )
        assert resolved.denial is not None
        d = resolved.denial
        return pb.ResolveCallerResponse(
            denial=pb.Denial(http_status=d.http_status, www_authenticate=d.www_authenticate, reason=d.reason),
            generation=resolved.generation,
        )

    async def WatchPolicy(
        self, request: pb.WatchPolicyRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> AsyncIterator[pb.WatchPolicyResponse]:
        async for event in self._core.policy.watch(request.watcher or f"grpc watcher {context.peer()}"):
            yield event_to_proto(event)


class _Plugins(pb_grpc.PluginServiceServicer):
    def __init__(self, core: Core) -> None:
        self._core = core

    async def InvokeHook(
        self, request: pb.InvokeHookRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> pb.InvokeHookResponse:
        point = _POINTS.get(request.point)
        try:
            if point is None:
                raise BadRequest(f"hook point {request.point} is unspecified or unknown")
            if not request.HasField("caller"):
                raise BadRequest("caller is required")
            decision = self._core.invoke_hook(
                point, request.name, auth_from_proto(request.caller), bytes(request.payload)
            )
        except BadRequest as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        if decision.deny_code is not None:
            return pb.InvokeHookResponse(
                deny=pb.HookDenial(code=decision.deny_code, message=decision.deny_message)
            )
        payload = (
            b"" if decision.payload is None else json.dumps(decision.payload, separators=(",", ":")).encode()
        )
        return pb.InvokeHookResponse(proceed=pb.HookProceed(payload=payload))


class _Observability(pb_grpc.ObservabilityServiceServicer):
    def __init__(self, core: Core) -> None:
        self._core = core

    async def RecordCalls(
        self, request: pb.RecordCallsRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> pb.RecordCallsResponse:
        records = [
            CallRecord(
                subject_email=r.subject_email,
                server_id=r.server_id,
                method=r.method,
                name=r.name,
                http_status=r.http_status,
                jsonrpc_code=r.jsonrpc_code,
                duration_us=r.duration_us,
                request_id=r.request_id,
                started_at_unix_us=r.started_at_unix_us,
            )
            for r in request.records
        ]
        self._core.record_calls(records, request.dropped)
        return pb.RecordCallsResponse()


class GrpcServer:
    """The gRPC transport of one core.

    Args:
        core: The Core SPI.
    """

    def __init__(self, core: Core, observer: CoreObserver | None = None) -> None:
        self._core = core
        self._observer = observer
        self._server: grpc.aio.Server | None = None
        self._health = health.aio.HealthServicer()

    async def start(self, path: str) -> None:
        """Bind ``unix:path`` (the caller checked the path is free) and start serving.

        Raises:
            ConfigError: grpc could not bind the socket.
        """
        server = grpc.aio.server(
            interceptors=[GrpcObserver(self._observer)] if self._observer is not None else None,
            options=[
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ],
        )
        pb_grpc.add_AuthPolicyServiceServicer_to_server(_AuthPolicy(self._core), server)
        pb_grpc.add_PluginServiceServicer_to_server(_Plugins(self._core), server)
        pb_grpc.add_ObservabilityServiceServicer_to_server(_Observability(self._core), server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        if server.add_insecure_port(f"unix:{path}") == 0:
            raise ConfigError(f"cannot bind the gRPC socket {path}")
        for name in ("", *SERVICES):
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        await server.start()
        self._server = server

    async def not_serving(self) -> None:
        """Report ``NOT_SERVING`` for every service while still serving calls (the drain)."""
        for name in ("", *SERVICES):
            await self._health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)

    async def stop(self, grace_s: float = 1.0) -> None:
        """Report ``NOT_SERVING``, then stop; calls still running after ``grace_s`` are cancelled."""
        if self._server is None:
            return
        await self._health.enter_graceful_shutdown()
        await self._server.stop(grace_s)
