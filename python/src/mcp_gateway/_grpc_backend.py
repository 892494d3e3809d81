"""gRPC over a Unix socket: the typed boundary of ``proto/mcp/runtime/v1/runtime.proto``.

One ``grpc.aio`` channel per process, created in the app lifespan (inside the running loop) and
closed on shutdown. POSTs go to ``Invoke`` unless their body carries a ``progressToken`` (then
``InvokeStream``, relayed event by event); GETs go to ``InvokeStream``; DELETEs to
``CloseSession``. MCP-level outcomes arrive inside OK responses and are relayed exactly; non-OK
gRPC status codes are transport faults and are translated here.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
import grpc.aio

from mcp_gateway._auth import AuthContext
from mcp_gateway._backend import ContractVersionError, McpRequest, McpResponse, RuntimeHealth, check_contract
from mcp_gateway._errors import RuntimeTimeoutError, RuntimeUnavailableError
from mcp_gateway._jsonrpc import INTERNAL_ERROR, error_body, request_id_of, result_too_large
from mcp_gateway._settings import Mode
from mcp_gateway._sse import encode_event

try:
    from mcp_gateway._proto.mcp.runtime.v1 import runtime_pb2 as pb
    from mcp_gateway._proto.mcp.runtime.v1 import runtime_pb2_grpc as pb_grpc
except ImportError as e:  # pragma: no cover - only without the build step
    raise ImportError(
        "the gRPC stubs are not generated; run `make python-proto` (grpcio-tools, from proto/)"
    ) from e

__all__ = ["CHANNEL_OPTIONS", "GrpcUdsBackend", "auth_to_proto", "channel_options"]

logger = logging.getLogger(__name__)

_MIB = 1024 * 1024

DEFAULT_MAX_MESSAGE_BYTES = 64 * _MIB
"""The runtime's default message limit (``--max-message-bytes``)."""


def channel_options(max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> tuple[tuple[str, Any], ...]:
    """Options of the one channel, in one place.

    Args:
        max_message_bytes: The runtime's message limit (``MCP_RUNTIME_MAX_MESSAGE_BYTES``, the
            runtime's own setting). Both directions allow it plus 1 MiB: the runtime's
            responses are at most the limit plus 64 KiB of envelope, and the gateway's
            requests carry a body of at most ``MCP_GATEWAY_MAX_BODY_BYTES`` (64 MiB) plus an
            envelope bounded by the header size.
    """
    return (
        # grpc sends the socket path as :authority over UDS; tonic rejects that.
        ("grpc.default_authority", "localhost"),
        ("grpc.enable_http_proxy", 0),
        # The runtime raises tonic's 4 MiB default to its limit; leave slack for the envelope.
        ("grpc.max_send_message_length", max_message_bytes + _MIB),
        ("grpc.max_receive_message_length", max_message_bytes + _MIB),
        # Reconnect quickly once the runtime is back (the default backoff grows to 120 s).
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.min_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 1000),
    )


CHANNEL_OPTIONS: tuple[tuple[str, Any], ...] = channel_options()
"""The channel options for the runtime's default limit (65 MiB messages)."""

_METHODS = {"POST": pb.HTTP_METHOD_POST, "GET": pb.HTTP_METHOD_GET, "DELETE": pb.HTTP_METHOD_DELETE}


def auth_to_proto(auth: AuthContext) -> Any:
    """Map the AuthContext to ``mcp.runtime.v1.AuthContext``.

    ``teams is None`` (no ``teams`` claim) becomes ``TEAM_SCOPE_UNRESTRICTED``, ``()`` becomes
    ``TEAM_SCOPE_PUBLIC_ONLY``, a list becomes ``TEAM_SCOPE_TEAMS`` with those teams: the same
    reading as the JSON form of the HTTP boundary.
    """
    teams: tuple[str, ...] = ()
    if auth.teams is None:
        scope = pb.TEAM_SCOPE_UNRESTRICTED
    elif not auth.teams:
        scope = pb.TEAM_SCOPE_PUBLIC_ONLY
    else:
        scope, teams = pb.TEAM_SCOPE_TEAMS, auth.teams
    return pb.AuthContext(
        subject_email=auth.email,
        is_admin=auth.is_admin,
        team_scope=scope,
        teams=list(teams),
        scopes=list(auth.scopes),
        token_expires_at_unix_s=auth.token_exp,
        traceparent=auth.traceparent,
        trace_id=auth.trace_id,
    )


def _envelope(request: McpRequest) -> Any:
    return pb.RequestEnvelope(
        method=_METHODS[request.method],
        headers=pb.McpHeaders(
            session_id=request.session_id or "",
            protocol_version=request.protocol_version or "",
            accept=request.accept or "",
            last_event_id=request.last_event_id or "",
            content_type=request.content_type or "",
        ),
        server_id=request.server_id or "",
        request_id=request.request_id,
        auth=auth_to_proto(request.auth),
        body=request.body,
    )


def _head(head: Any) -> tuple[int, list[tuple[str, str]]]:
    return int(head.http_status), [(h.name.lower(), h.value) for h in head.headers]


def _fault(status: int, message: str) -> McpResponse:
    return McpResponse(
        status=status, headers=[("content-type", "application/json")], body=error_body(-32600, message)
    )


def _received_too_large(error: grpc.aio.AioRpcError) -> bool:
    """Whether this channel refused a response over its receive limit (grpc's own words).

    The runtime never sends more than its limit plus 64 KiB; this happens only when the runtime
    was given a larger limit than the gateway's ``MCP_RUNTIME_MAX_MESSAGE_BYTES``.
    """
    return error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "Received message larger than max" in (
        error.details() or ""
    )


def _result_too_large(request: McpRequest, limit: int, error: grpc.aio.AioRpcError) -> bytes:
    """The runtime's answer to a result over the limit, for a response this channel refused."""
    logger.warning("runtime response over the channel's limit: %s", error.details())
    return error_body(INTERNAL_ERROR, result_too_large(limit), request_id_of(request.body))


def _translate(error: grpc.aio.AioRpcError) -> Exception:
    code = error.code()
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return RuntimeTimeoutError("MCP runtime timed out")
    # tonic enforces the `grpc-timeout` header on the server too, and reports its own expiry as
    # CANCELLED "Timeout expired" (tonic's TimeoutExpired), racing the client's
    # DEADLINE_EXCEEDED: both mean the deadline passed.
    if code == grpc.StatusCode.CANCELLED and error.details() == "Timeout expired":
        return RuntimeTimeoutError("MCP runtime timed out")
    return RuntimeUnavailableError(f"MCP runtime unavailable: {code.name}: {error.details()}")


class GrpcUdsBackend:
    """Reaches the runtime's gRPC adapter on ``uds_path``.

    Args:
        uds_path: Path of the runtime's gRPC socket (``MCP_RUST_GRPC_UDS``).
        request_timeout_s: The deadline of unary calls (``Invoke``, ``CloseSession``), in
            seconds; ``InvokeStream`` calls have none.
        max_message_bytes: The runtime's message limit; sizes the channel (see
            :func:`channel_options`).
    """

    def __init__(
        self, uds_path: str, request_timeout_s: float, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    ) -> None:
        self._target = f"unix:{uds_path}"
        self._timeout_s = request_timeout_s
        self._max_message_bytes = max_message_bytes
        self._channel: grpc.aio.Channel | None = None
        self._stub: Any = None
        self._contract_ok = False

    @property
    def mode(self) -> Mode:
        """Always :attr:`Mode.GRPC`."""
        return Mode.GRPC

    async def start(self) -> None:
        """Create the channel and run the version handshake (``HealthCheck``).

        A runtime that is not up yet is checked on first contact instead (the channel connects
        lazily: the runtime may start later); until it passes, each request runs it again first.

        Raises:
            ContractVersionError: The runtime speaks a contract major this gateway does not.
        """
        self._channel = grpc.aio.insecure_channel(
            self._target, options=channel_options(self._max_message_bytes)
        )
        self._stub = pb_grpc.McpRuntimeStub(self._channel)
        await self._check_contract(at_start=True)

    async def _check_contract(self, *, at_start: bool = False) -> None:
        """Run the handshake until it passed once; see :func:`check_contract`."""
        if self._contract_ok:
            return
        where = f"gRPC socket {self._target.removeprefix('unix:')}"
        self._contract_ok = check_contract(await self.health(), where)
        if at_start and not self._contract_ok:
            logger.warning(
                "MCP runtime not reachable at start; its contract version is checked on first contact"
            )

    async def aclose(self) -> None:
        """Close the channel, cancelling calls still in flight."""
        if self._channel is not None:
            await self._channel.close(grace=None)
            self._channel = None
            self._stub = None

    def _require_stub(self) -> Any:
        if self._stub is None:
            raise RuntimeError("GrpcUdsBackend.start() was not called")
        return self._stub

    async def health(self) -> RuntimeHealth:
        """``HealthCheck`` with a short deadline."""
        stub = self._require_stub()
        try:
            reply = await stub.HealthCheck(pb.HealthCheckRequest(), timeout=min(self._timeout_s, 5.0))
        except grpc.aio.AioRpcError as e:
            return RuntimeHealth(
                reachable=False, status="unavailable", detail=f"{e.code().name}: {e.details()}"
            )
        status = {pb.SERVING_STATUS_SERVING: "serving", pb.SERVING_STATUS_NOT_SERVING: "not_serving"}
        return RuntimeHealth(
            reachable=True,
            status=status.get(reply.status, "unknown"),
            runtime_version=reply.runtime_version,
            contract_version=reply.contract_version,
            features=tuple(reply.features),
            open_sessions=int(reply.open_sessions),
        )

    async def handle(self, request: McpRequest) -> McpResponse:
        """Pick the RPC for the request and translate its answer.

        Raises:
            RuntimeUnavailableError: The channel cannot connect or the call broke.
            RuntimeTimeoutError: The deadline passed.
        """
        stub = self._require_stub()
        if not self._contract_ok:
            try:
                await self._check_contract()
            except ContractVersionError as e:
                raise RuntimeUnavailableError(str(e)) from e
        envelope = _envelope(request)
        try:
            if request.method == "DELETE":
                closed = await stub.CloseSession(
                    pb.CloseSessionRequest(envelope=envelope), timeout=self._timeout_s
                )
                status, headers = _head(closed.head)
                return McpResponse(status=status, headers=headers, body=closed.body)
            if request.method == "POST" and not request.wants_progress:
                reply = await stub.Invoke(pb.InvokeRequest(envelope=envelope), timeout=self._timeout_s)
                status, headers = _head(reply.head)
                return McpResponse(status=status, headers=headers, body=reply.body)
            # Streaming calls have no deadline (as the httpx path has no read timeout on them):
            # a GET stream lives as long as the session, the runtime bounds a tool call.
            call = stub.InvokeStream(pb.InvokeStreamRequest(envelope=envelope))
            try:
                first = await call.read()
            except BaseException:
                call.cancel()
                raise
        except grpc.aio.AioRpcError as e:
            if _received_too_large(e):
                body = _result_too_large(request, self._max_message_bytes, e)
                return McpResponse(status=200, headers=[("content-type", "application/json")], body=body)
            # Contract faults the client caused are answered like the HTTP boundary would.
            if e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                return _fault(413, f"Message too large for the runtime: {e.details()}")
            if e.code() == grpc.StatusCode.INVALID_ARGUMENT:
                return _fault(400, f"Invalid request: {e.details()}")
            raise _translate(e) from e
        if first is grpc.aio.EOF or first.WhichOneof("part") != "head":
            call.cancel()
            raise RuntimeUnavailableError(
                "MCP runtime broke the contract: InvokeStream did not start with a head"
            )
        status, headers = _head(first.head)
        return McpResponse(
            status=status, headers=headers, stream=_relay(call, request, self._max_message_bytes)
        )


async def _relay(call: Any, request: McpRequest, limit: int) -> AsyncIterator[bytes]:
    """Yield each SSE event (framed) or body chunk as the runtime sends it; cancel the call on exit.

    A message over the channel's receive limit ends the stream with the runtime's error event
    for a result over the limit.
    """
    try:
        while True:
            message = await call.read()
            if message is grpc.aio.EOF:
                return
            part = message.WhichOneof("part")
            if part == "event":
                event = message.event
                yield encode_event(event.data, event.event, event.id)
            elif part == "body_chunk":
                yield message.body_chunk
    except grpc.aio.AioRpcError as e:
        if not _received_too_large(e):
            raise _translate(e) from e
        yield encode_event(_result_too_large(request, limit, e).decode(), "message")
    finally:
        with contextlib.suppress(Exception):
            call.cancel()
