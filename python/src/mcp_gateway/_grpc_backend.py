"""gRPC over a Unix socket: the typed boundary of ``proto/mcp/runtime/v1/runtime.proto``.

One ``grpc.aio`` channel per process, created in the app lifespan (inside the running loop) and
closed on shutdown. POSTs go to ``Invoke`` unless their body carries a ``progressToken``, however
spelled (``McpRequest.wants_progress``), or is a ``subscriptions/listen`` of MCP 2026-07-28
(``McpRequest.listens``: a stream that stays open) (both: ``InvokeStream`` without a deadline,
relayed event by event), or is a
call during which the upstream may ask the client something (``McpRequest.may_ask_client``:
``InvokeStream`` under the unary deadline, relayed event by event once the runtime answers SSE,
else read whole, so that an upstream's sampling, elicitation or roots request reaches the client
during the call) and its session may be asked: a session this process saw initialized without
declaring ``sampling``, ``elicitation`` or ``roots`` is never asked by the runtime
(``docs/http-boundary.md``, "Server-to-client requests"), so its calls stay unary. GETs go
to ``InvokeStream``; DELETEs to ``CloseSession``. MCP-level outcomes arrive inside OK responses
and are relayed exactly; non-OK gRPC status codes are contract and transport faults,
classified in one place, :func:`fault_of`.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

import anyio.lowlevel
import grpc
import grpc.aio

from mcp_gateway._auth import AuthContext
from mcp_gateway._backend import McpRequest, McpResponse, RuntimeHealth, StateStoreHealth
from mcp_gateway._era import SESSIONLESS_PROTOCOL_VERSIONS
from mcp_gateway._errors import GatewayError, RuntimeTimeoutError, RuntimeUnavailableError
from mcp_gateway._socket_backend import (
    DEFAULT_MAX_MESSAGE_BYTES,
    RESPONSE_SLACK_BYTES,
    SocketBackend,
    refused,
)
from mcp_gateway._sse import encode_event

try:
    from mcp_gateway._proto.mcp.runtime.v1 import runtime_pb2 as pb
    from mcp_gateway._proto.mcp.runtime.v1 import runtime_pb2_grpc as pb_grpc
except ImportError as e:  # pragma: no cover - only without the build step
    raise ImportError(
        "the gRPC stubs are not generated; run `make python-proto` (grpcio-tools, from proto/)"
    ) from e

__all__ = [
    "CHANNEL_OPTIONS",
    "Fault",
    "GrpcUdsBackend",
    "auth_to_proto",
    "channel_options",
    "fault_of",
    "runtime_error",
]

logger = logging.getLogger(__name__)


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
        ("grpc.max_send_message_length", max_message_bytes + RESPONSE_SLACK_BYTES),
        ("grpc.max_receive_message_length", max_message_bytes + RESPONSE_SLACK_BYTES),
        # Reconnect quickly once the runtime is back (the default backoff grows to 120 s).
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.min_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 1000),
    )


CHANNEL_OPTIONS: tuple[tuple[str, Any], ...] = channel_options()
"""The channel options for the runtime's default limit (65 MiB messages)."""

_T = TypeVar("_T")


async def _unary(call: Awaitable[_T]) -> _T:
    """Await a unary call; a cancellation leaves as the cancel scope's own.

    When the task awaiting a unary call is cancelled (the client went away), grpc.aio cancels
    the RPC and raises a ``CancelledError`` of its own, not the one it was sent. anyio does not
    recognise that one as its cancel scope's, so it would escape the scope and reach uvicorn as
    an application error (logged as ERROR with a traceback). One checkpoint lets the scope
    deliver its own cancellation; a cancellation that is not a scope's is re-raised as is.
    """
    try:
        return await call
    except asyncio.CancelledError:
        await anyio.lowlevel.checkpoint()
        raise


_METHODS = {"POST": pb.HTTP_METHOD_POST, "GET": pb.HTTP_METHOD_GET, "DELETE": pb.HTTP_METHOD_DELETE}


def auth_to_proto(auth: AuthContext) -> pb.AuthContext:
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


def _envelope(request: McpRequest) -> pb.RequestEnvelope:
    headers = {
        "mcp-session-id": request.session_id,
        "mcp-protocol-version": request.protocol_version,
        "accept": request.accept,
        "last-event-id": request.last_event_id,
        "content-type": request.content_type,
    }
    return pb.RequestEnvelope(
        method=_METHODS[request.method],
        headers=pb.McpHeaders(
            session_id=request.session_id or "",
            protocol_version=request.protocol_version or "",
            accept=request.accept or "",
            last_event_id=request.last_event_id or "",
            content_type=request.content_type or "",
            # A header sent with an empty value is not an absent one (contract 1.1).
            empty_headers=[name for name, value in headers.items() if value == ""],
            # The client's Mcp-Param-* headers, for the runtime to check (contract 1.4).
            params=[pb.Header(name=name, value=value) for name, value in request.mcp_params],
            params_forwarded=True,
        ),
        server_id=request.server_id or "",
        request_id=request.request_id,
        auth=auth_to_proto(request.auth),
        body=request.body,
    )


def _head(head: pb.ResponseHead) -> tuple[int, list[tuple[str, str]]]:
    return int(head.http_status), [(h.name.lower(), h.value) for h in head.headers]


class Fault(enum.Enum):
    """What a non-OK gRPC status of a call to the runtime means (see :func:`fault_of`)."""

    RECEIVE_LIMIT = enum.auto()
    """This channel refused a runtime message over its receive limit: answered with the
    runtime's error for a result over the limit."""
    REQUEST_TOO_LARGE = enum.auto()
    """The runtime refused the request as over its limit: answered 413, as over HTTP."""
    INVALID_REQUEST = enum.auto()
    """The runtime refused the envelope: answered 400, as over HTTP."""
    TIMEOUT = enum.auto()
    """The deadline passed: :class:`RuntimeTimeoutError`."""
    UNAVAILABLE = enum.auto()
    """Anything else (cannot connect, call broke): :class:`RuntimeUnavailableError`."""


def fault_of(error: grpc.aio.AioRpcError) -> Fault:
    """Classify a failed call to the runtime by its status code.

    Two cases need the status's details as well, because gRPC gives them no code of their own;
    ``test_units`` pins both wordings:

    - ``RESOURCE_EXHAUSTED`` is both the runtime refusing a request over its limit and this
      channel refusing a response over its receive limit (grpc's "Received message larger than
      max");
    - tonic enforces the ``grpc-timeout`` header on the server too, and reports its own expiry as
      ``CANCELLED`` "Timeout expired" (tonic's ``TimeoutExpired``), racing the client's
      ``DEADLINE_EXCEEDED``: both mean the deadline passed.

    Args:
        error: The failed call's error.

    Returns:
        What it means for the gateway.
    """
    code, details = error.code(), error.details() or ""
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        if "Received message larger than max" in details:
            return Fault.RECEIVE_LIMIT
        return Fault.REQUEST_TOO_LARGE
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return Fault.INVALID_REQUEST
    if code == grpc.StatusCode.DEADLINE_EXCEEDED or (
        code == grpc.StatusCode.CANCELLED and details == "Timeout expired"
    ):
        return Fault.TIMEOUT
    return Fault.UNAVAILABLE


def runtime_error(error: grpc.aio.AioRpcError) -> GatewayError:
    """The gateway error for a failed call that is not answered (:func:`fault_of`).

    Returns:
        :class:`RuntimeTimeoutError` for :attr:`Fault.TIMEOUT`, else
        :class:`RuntimeUnavailableError` (naming the status code and details).
    """
    failure: GatewayError
    if fault_of(error) is Fault.TIMEOUT:
        failure = RuntimeTimeoutError("MCP runtime timed out")
    else:
        failure = RuntimeUnavailableError(f"MCP runtime unavailable: {error.code().name}: {error.details()}")
    failure.grpc_status = error.code().name
    return failure


#: The client capabilities under which the runtime relays an upstream's requests to the client
#: (MCP 2025-11-25, client features): without any of them a session is never asked.
_ASKABLE_CAPABILITIES = ("sampling", "elicitation", "roots")


def declares_askable(initialize_body: bytes) -> bool | None:
    """Whether an ``initialize`` request declares a capability the runtime may ask under.

    Args:
        initialize_body: A POST body.

    Returns:
        ``None`` when the body is not an ``initialize`` request (or not JSON); else whether its
        ``params.capabilities`` names ``sampling``, ``elicitation`` or ``roots``.
    """
    if b"initialize" not in initialize_body:
        return None
    try:
        message = json.loads(initialize_body)
    except ValueError:
        return None
    if not isinstance(message, dict) or message.get("method") != "initialize":
        return None
    params = message.get("params")
    capabilities = params.get("capabilities") if isinstance(params, dict) else None
    if not isinstance(capabilities, dict):
        return False
    return any(name in capabilities for name in _ASKABLE_CAPABILITIES)


class GrpcUdsBackend(SocketBackend):
    """Reaches the runtime's gRPC adapter on ``uds_path`` (``HealthCheck`` is the probe).

    Args:
        uds_path: Path of the runtime's gRPC socket (``MCP_RUST_GRPC_UDS``).
        request_timeout_s: The deadline of unary calls (``Invoke``, ``CloseSession``), in
            seconds; ``InvokeStream`` calls have none.
        max_message_bytes: The runtime's message limit, in bytes; sizes the channel (see
            :func:`channel_options`).

    The envelope has no field for ``Mcp-Method`` and ``Mcp-Name`` (MCP 2026-07-28):
    ``carries_standard_headers`` is ``False``, so the gateway checks them before it forwards
    (:mod:`mcp_gateway._era`).
    """

    carries_standard_headers = False

    #: Sessions remembered as never asked (see :meth:`_may_be_asked`); the oldest is forgotten
    #: beyond this many, and a forgotten session's calls are streamed again.
    NEVER_ASKED_CAPACITY = 65_536

    def __init__(
        self, uds_path: str, request_timeout_s: float, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    ) -> None:
        super().__init__(f"gRPC socket {uds_path}", request_timeout_s, max_message_bytes)
        self._target = f"unix:{uds_path}"
        self._channel: grpc.aio.Channel | None = None
        self._stub: pb_grpc.McpRuntimeAsyncStub | None = None
        self._never_asked: OrderedDict[str, None] = OrderedDict()

    def _may_be_asked(self, request: McpRequest) -> bool:
        """Whether the upstream may ask the client something during ``request``.

        :attr:`McpRequest.may_ask_client`, unless its session was initialized through this
        process without an askable capability (then the runtime never asks it), or it is a
        request of the sessionless era (MCP 2026-07-28, which replaces server-to-client
        requests with ``input_required`` results: the runtime asks such a request nothing). A
        session initialized elsewhere (another worker, before a restart) or forgotten counts as
        askable: streamed, which is always correct, only slower.
        """
        if not request.may_ask_client or request.protocol_version in SESSIONLESS_PROTOCOL_VERSIONS:
            return False
        return request.session_id is None or request.session_id not in self._never_asked

    def _remember(self, request: McpRequest, status: int, headers: list[tuple[str, str]]) -> None:
        """Note a session initialized by ``request`` without an askable capability."""
        # An initialize carries no session id: every other request returns before the body scan.
        if request.session_id is not None or status != 200 or request.method != "POST":
            return
        if declares_askable(request.body) is not False:
            return
        session = next((value for name, value in headers if name == "mcp-session-id"), None)
        if session:
            self._never_asked[session] = None
            if len(self._never_asked) > self.NEVER_ASKED_CAPACITY:
                self._never_asked.popitem(last=False)

    async def _open(self) -> None:
        # The channel connects lazily: the runtime may start later.
        self._channel = grpc.aio.insecure_channel(
            self._target, options=channel_options(self._max_message_bytes)
        )
        self._stub = pb_grpc.McpRuntimeStub(self._channel)

    async def aclose(self) -> None:
        """Close the channel, cancelling calls still in flight."""
        if self._channel is not None:
            await self._channel.close(grace=None)
            self._channel = None
            self._stub = None

    def _require_stub(self) -> pb_grpc.McpRuntimeAsyncStub:
        if self._stub is None:
            raise RuntimeError("GrpcUdsBackend.start() was not called")
        return self._stub

    async def health(self) -> RuntimeHealth:
        """``HealthCheck`` within 5 s (or the request timeout when shorter)."""
        stub = self._require_stub()
        try:
            reply = await _unary(stub.HealthCheck(pb.HealthCheckRequest(), timeout=min(self._timeout_s, 5.0)))
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
            state_store=(
                StateStoreHealth(kind=reply.state_store.kind, reachable=reply.state_store.reachable)
                if reply.HasField("state_store")
                else None
            ),
        )

    async def _forward(self, request: McpRequest) -> McpResponse:
        """Pick the RPC for the request and translate its answer.

        Raises:
            RuntimeUnavailableError: The channel cannot connect or the call broke.
            RuntimeTimeoutError: The deadline passed.
        """
        stub = self._require_stub()
        envelope = _envelope(request)
        # W3C trace context as gRPC metadata too (docs/operations.md, Traces): the same value as
        # AuthContext.traceparent.
        metadata = (("traceparent", request.auth.traceparent),) if request.auth.traceparent else None
        try:
            if request.method == "DELETE":
                closed = await _unary(
                    stub.CloseSession(
                        pb.CloseSessionRequest(envelope=envelope), timeout=self._timeout_s, metadata=metadata
                    )
                )
                status, headers = _head(closed.head)
                if request.session_id is not None:
                    self._never_asked.pop(request.session_id, None)
                return McpResponse(status=status, headers=headers, body=closed.body)
            asks = not request.streaming and self._may_be_asked(request)
            if not request.streaming and not asks:
                reply = await _unary(
                    stub.Invoke(
                        pb.InvokeRequest(envelope=envelope), timeout=self._timeout_s, metadata=metadata
                    )
                )
                status, headers = _head(reply.head)
                self._remember(request, status, headers)
                return McpResponse(status=status, headers=headers, body=reply.body)
            # Streaming calls have no deadline (as the httpx path has no read timeout on them):
            # a GET stream lives as long as the session, the runtime bounds a tool call. A call
            # the upstream may ask the client something during goes to InvokeStream too (the
            # request is relayed as one event of it; Invoke would answer only once the call
            # ended), under the deadline it would have had with Invoke.
            call = stub.InvokeStream(
                pb.InvokeStreamRequest(envelope=envelope),
                timeout=self._timeout_s if asks else None,
                metadata=metadata,
            )
            try:
                first = await call.read()
            except BaseException:
                call.cancel()
                raise
        except grpc.aio.AioRpcError as e:
            fault = fault_of(e)
            if fault is Fault.RECEIVE_LIMIT:
                return self.result_too_large_response(request, f"{e.details()}")
            # Contract faults the client caused are answered like the HTTP boundary would.
            if fault is Fault.REQUEST_TOO_LARGE:
                return refused(413, f"Message too large for the runtime: {e.details()}")
            if fault is Fault.INVALID_REQUEST:
                return refused(400, f"Invalid request: {e.details()}")
            raise runtime_error(e) from e
        # read() is typed EOF-or-message as `object`: the isinstance check is the EOF check too.
        if not isinstance(first, pb.InvokeStreamResponse) or first.WhichOneof("part") != "head":
            call.cancel()
            raise RuntimeUnavailableError(
                "MCP runtime broke the contract: InvokeStream did not start with a head"
            )
        status, headers = _head(first.head)
        sse = any(name == "content-type" and value.startswith("text/event-stream") for name, value in headers)
        if asks and not sse:
            # Nothing was asked: the answer goes back whole, as Invoke would have returned it.
            return await self._whole(call, request, status, headers)
        return McpResponse(status=status, headers=headers, stream=_relay(call, request, self))

    async def _whole(
        self,
        call: grpc.aio.UnaryStreamCall[pb.InvokeStreamRequest, pb.InvokeStreamResponse],
        request: McpRequest,
        status: int,
        headers: list[tuple[str, str]],
    ) -> McpResponse:
        """The body chunks of an ``InvokeStream`` call joined into one body.

        At most :attr:`max_response_bytes`; over it, the runtime's error for a result over the
        limit (:meth:`result_too_large_response`).

        Raises:
            RuntimeUnavailableError: The call broke.
            RuntimeTimeoutError: The deadline passed.
        """
        chunks: list[bytes] = []
        size = 0
        try:
            while True:
                message = await call.read()
                if not isinstance(message, pb.InvokeStreamResponse):  # grpc.aio.EOF
                    break
                if message.WhichOneof("part") != "body_chunk":
                    raise RuntimeUnavailableError(
                        "MCP runtime broke the contract: an event in a response that is not SSE"
                    )
                size += len(message.body_chunk)
                if size > self.max_response_bytes:
                    return self.result_too_large_response(request, "a JSON body")
                chunks.append(message.body_chunk)
        except grpc.aio.AioRpcError as e:
            if fault_of(e) is Fault.RECEIVE_LIMIT:
                return self.result_too_large_response(request, f"{e.details()}")
            raise runtime_error(e) from e
        finally:
            call.cancel()
        return McpResponse(status=status, headers=headers, body=b"".join(chunks))


async def _relay(
    call: grpc.aio.UnaryStreamCall[pb.InvokeStreamRequest, pb.InvokeStreamResponse],
    request: McpRequest,
    backend: SocketBackend,
) -> AsyncIterator[bytes]:
    """Yield each SSE event (framed) or body chunk as the runtime sends it; cancel the call on exit.

    A message over the channel's receive limit ends the stream with the runtime's error event
    for a result over the limit (:meth:`SocketBackend.result_too_large`).
    """
    try:
        while True:
            message = await call.read()
            if not isinstance(message, pb.InvokeStreamResponse):  # grpc.aio.EOF
                return
            part = message.WhichOneof("part")
            if part == "event":
                event = message.event
                yield encode_event(event.data, event.event, event.id)
            elif part == "body_chunk":
                yield message.body_chunk
    except grpc.aio.AioRpcError as e:
        if fault_of(e) is not Fault.RECEIVE_LIMIT:
            raise runtime_error(e) from e
        yield encode_event(backend.result_too_large(request, f"{e.details()}").decode(), "message")
    finally:
        with contextlib.suppress(Exception):
            call.cancel()
