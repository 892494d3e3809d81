"""The seam between the public endpoint and the MCP runtime: ``Backend.handle``, three implementations.

Every MCP request crosses the seam through one method, :meth:`Backend.handle`: one MCP HTTP
request in (already authenticated, internal headers stripped, :class:`McpRequest`), the
response to relay out (:class:`McpResponse`). Around it, a backend has a lifecycle driven by the
app's lifespan (:meth:`Backend.start` once before the first request, :meth:`Backend.aclose`
once after the last) and a probe for ``GET /health`` (:meth:`Backend.health`). Which mode a
backend implements is the settings' business (``Settings.mode``), not the backend's.

The implementations are the HTTP/JSON client (``_http_backend``) and the gRPC client
(``_grpc_backend``), which share the version handshake and their own answers
(``_socket_backend``), and the in-process Python baseline (``_baseline``). Each translates its
own lower-level exceptions into :class:`~mcp_gateway.RuntimeUnavailableError` or
:class:`~mcp_gateway.RuntimeTimeoutError`, in one place per backend.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Protocol

from mcp_gateway._accept import accepts
from mcp_gateway._auth import AuthContext
from mcp_gateway._errors import ConfigError
from mcp_gateway._jsonrpc import may_spell_otherwise

__all__ = [
    "SUPPORTED_CONTRACT_MAJORS",
    "Backend",
    "ContractVersionError",
    "McpRequest",
    "McpResponse",
    "RuntimeHealth",
    "check_contract",
]

logger = logging.getLogger(__name__)

SUPPORTED_CONTRACT_MAJORS: frozenset[int] = frozenset({1})
"""Major versions of the runtime contract (``mcp.runtime.v1``, ``docs/contract.md``) spoken."""


@dataclass(frozen=True, slots=True)
class McpRequest:
    """One MCP streamable-HTTP request as the runtime sees it.

    Attributes:
        method: ``"POST"``, ``"GET"`` or ``"DELETE"``.
        server_id: Virtual server id of ``/servers/{id}/mcp``, ``None`` for ``/mcp``.
        auth: The caller, built by the gateway from the bearer token.
        request_id: Gateway-assigned id of this public request (logs, tracing).
        body: The raw body (one JSON-RPC message); ``b""`` for GET and DELETE.
        session_id: ``Mcp-Session-Id``, ``None`` when absent.
        protocol_version: ``MCP-Protocol-Version``, ``None`` when absent.
        accept: ``Accept`` verbatim, ``None`` when absent.
        last_event_id: ``Last-Event-ID``, ``None`` when absent.
        content_type: ``Content-Type`` verbatim, ``None`` when absent.
        mcp_method: ``Mcp-Method`` (MCP 2026-07-28), ``None`` when absent.
        mcp_name: ``Mcp-Name`` (MCP 2026-07-28), verbatim, ``None`` when absent.
        mcp_params: the ``Mcp-Param-<Name>`` headers (MCP 2026-07-28, SEP-2243: a tool's
            arguments marked ``x-mcp-header``), as (lower-case header name, value) pairs in the
            order received; the runtime checks them against the body (not over gRPC, whose
            envelope carries none).
    """

    method: str
    server_id: str | None
    auth: AuthContext
    request_id: str
    body: bytes = b""
    session_id: str | None = None
    protocol_version: str | None = None
    accept: str | None = None
    last_event_id: str | None = None
    content_type: str | None = None
    mcp_method: str | None = None
    mcp_name: str | None = None
    mcp_params: tuple[tuple[str, str], ...] = ()

    @property
    def wants_progress(self) -> bool:
        r"""Whether the body asks for progress notifications.

        A bytes check first (no parse): the key spelled plainly. JSON may spell it with
        ``\u`` escapes (``"progress\u0054oken"``), which the runtime decodes as the same key;
        only then, when the body holds a ``\u``, is it parsed to look at
        ``params._meta.progressToken``. Other escapes cannot spell a letter of the key.
        """
        if b'"progressToken"' in self.body:
            return True
        return b"\\u" in self.body and _has_progress_token(self.body)

    @property
    def may_ask_client(self) -> bool:
        r"""Whether the upstream may ask the client something while this request runs.

        A POSTed ``tools/call``, ``prompts/get`` or ``resources/read`` (the calls the runtime
        forwards upstream and relays server-to-client requests of: sampling, elicitation,
        roots; ``docs/http-boundary.md``, "Server-to-client requests") whose ``Accept`` allows
        SSE, read as the runtime reads it (``_accept.accepts``: absent, or weighing
        ``text/event-stream`` above 0): without SSE the runtime has no stream to ask on. A bytes
        check first (no parse): the method spelled plainly anywhere in the body (a false positive
        costs only a streamed call). Only a body holding a ``\/`` or ``\u`` escape, which can
        spell the method otherwise, is parsed to read ``method``.
        """
        if self.method != "POST":
            return False
        if not accepts(self.accept):
            return False
        if any(method in self.body for method in _ASKING_METHODS):
            return True
        return may_spell_otherwise(self.body) and _method_of(self.body) in _ASKING_NAMES

    @property
    def listens(self) -> bool:
        r"""Whether this is a POSTed ``subscriptions/listen`` (MCP 2026-07-28).

        Its answer is a stream that stays open until the client leaves or the runtime drains
        (``docs/http-boundary.md``, "subscriptions/listen"). A bytes check first (no parse):
        the method spelled plainly anywhere in the body (a false positive, such as a tool
        argument holding that text, costs only a call without the gateway's deadline: the
        runtime's upstream timeout still bounds it). Only a body holding a ``\/`` or ``\u``
        escape, which can spell the method otherwise, is parsed to read ``method``.
        """
        if self.method != "POST":
            return False
        if _LISTEN_METHOD in self.body:
            return True
        return may_spell_otherwise(self.body) and _method_of(self.body) == _LISTEN_NAME

    @property
    def endless(self) -> bool:
        """Whether the answer is a stream that does not end by itself: a GET stream, or a listen.

        Unlike :attr:`listens`, the body is parsed when it may be a listen (never a false
        positive: the gateway's shutdown ends these streams, and must not end a call).
        """
        return self.method == "GET" or (self.listens and _method_of(self.body) == _LISTEN_NAME)

    @property
    def streaming(self) -> bool:
        """Whether the answer may be a long stream: a GET, a POST asking for progress, or a listen.

        Streaming calls get no deadline in the socket modes (a GET or listen stream may stay
        silent for hours; the runtime's upstream timeout bounds a tool call); in gRPC mode they
        are the ``InvokeStream`` calls.
        """
        return self.method == "GET" or self.wants_progress or self.listens


_ASKING_NAMES = frozenset({"tools/call", "prompts/get", "resources/read"})
"""The methods during which the runtime relays an upstream's requests to the client."""
_ASKING_METHODS = tuple(f'"{name}"'.encode() for name in sorted(_ASKING_NAMES))
_LISTEN_NAME = "subscriptions/listen"
"""The method whose answer is a stream that stays open (MCP 2026-07-28)."""
_LISTEN_METHOD = f'"{_LISTEN_NAME}"'.encode()


def _method_of(body: bytes) -> object:
    """The ``method`` member of the JSON object ``body``; ``None`` when it has none or is not JSON."""
    try:
        message = json.loads(body)
    except (ValueError, RecursionError):
        return None
    return message.get("method") if isinstance(message, dict) else None


def _has_progress_token(body: bytes) -> bool:
    """Whether ``body`` parses to a message with ``params._meta.progressToken``."""
    try:
        message = json.loads(body)
    except (ValueError, RecursionError):
        return False
    params = message.get("params") if isinstance(message, dict) else None
    meta = params.get("_meta") if isinstance(params, dict) else None
    return isinstance(meta, dict) and "progressToken" in meta


@dataclass(slots=True)
class McpResponse:
    """The runtime's answer, relayed to the client unchanged.

    Either ``body`` holds the whole body, or ``stream`` yields it chunk by chunk (SSE), as the
    runtime produces it. ``aclose`` must be called once the response was relayed or abandoned;
    it stops the work behind an unfinished stream.

    Attributes:
        status: HTTP status code.
        headers: Lower-case header names and values, in order, without hop-by-hop headers.
        body: The whole body when ``stream`` is ``None``.
        stream: Body chunks, each already framed (for SSE, whole events).
        length: The length in bytes of a ``stream`` whose size is known (a large JSON body
            relayed as it arrives), sent as ``Content-Length`` so that a body cut short is seen
            as broken; ``None`` for SSE and when ``body`` is used.
    """

    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    stream: AsyncIterator[bytes] | None = None
    length: int | None = None

    def header(self, name: str) -> str | None:
        """The value of the first header called ``name`` (lower case), or ``None``."""
        for key, value in self.headers:
            if key == name:
                return value
        return None

    async def aclose(self) -> None:
        """Stop the stream, if any (idempotent)."""
        stream, self.stream = self.stream, None
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            await aclose()


@dataclass(frozen=True, slots=True)
class StateStoreHealth:
    """The runtime's state store, as its health probe reports it.

    Attributes:
        kind: ``"memory"`` (one process) or ``"redis"`` (replicas sharing Redis).
        reachable: Whether the store answers; while ``False`` the runtime answers requests
            that need it with 503.
    """

    kind: str
    reachable: bool


@dataclass(frozen=True, slots=True)
class RuntimeHealth:
    """What ``GET /health`` reports about the runtime.

    Attributes:
        reachable: The runtime answered the health probe.
        status: ``"serving"``, ``"not_serving"`` or ``"unavailable"``.
        runtime_version: The runtime's version, ``None`` when unreachable.
        contract_version: The contract version ``MAJOR.MINOR``, ``None`` when unreachable.
        features: Enabled runtime features.
        open_sessions: Open MCP sessions, ``None`` when unknown.
        state_store: The runtime's state store, ``None`` when unknown (unreachable, or a
            runtime of contract 1.0 or 1.1, whose ``HealthCheck`` does not report it).
        detail: Why the runtime is unavailable, ``None`` otherwise.
    """

    reachable: bool
    status: str
    runtime_version: str | None = None
    contract_version: str | None = None
    features: tuple[str, ...] = ()
    open_sessions: int | None = None
    state_store: StateStoreHealth | None = None
    detail: str | None = None


class Backend(Protocol):
    """A way to reach the MCP runtime: one request method, two lifecycle methods, one probe.

    Created (not started) by ``make_backend``; the app's lifespan calls :meth:`start` once,
    inside the event loop, before any request, and :meth:`aclose` once on shutdown from the same
    task. Tests and benchmarks may pass any object with these four methods to ``create_app``.
    """

    async def handle(self, request: McpRequest) -> McpResponse:
        """Forward one MCP request and return the response head (and body or stream).

        Args:
            request: The authenticated request, headers from the public request's whitelist.

        Returns:
            The runtime's answer (or the backend's own answer made as the runtime would, e.g.
            for a whole response over the message limit). The caller must ``aclose`` it.

        Raises:
            RuntimeUnavailableError: The runtime cannot be reached or dropped the request.
            RuntimeTimeoutError: No answer within the request timeout.
        """
        ...

    async def start(self) -> None:
        """Open channels and pools, run the version handshake.

        Raises:
            ConfigError: The backend cannot be set up (for the baseline: a bad catalog, an
                unreachable required upstream; for the socket modes: a runtime speaking a
                contract major this gateway does not, :class:`ContractVersionError`).
        """
        ...

    async def aclose(self) -> None:
        """Close channels and pools (cancelling calls still in flight)."""
        ...

    async def health(self) -> RuntimeHealth:
        """Probe the runtime (never raises; an unreachable runtime is reported as such)."""
        ...


class ContractVersionError(ConfigError):
    """The runtime speaks a contract major version this gateway does not (refused at start)."""


def check_contract(health: RuntimeHealth, where: str) -> bool:
    """The version handshake: accept a runtime only if it speaks a major of ours.

    Args:
        health: The runtime's answer to its health probe (``GET /health`` or ``HealthCheck``).
        where: What the runtime was reached at (``"HTTP/JSON socket /run/rt.sock"``), for the
            message.

    Returns:
        ``True`` when the runtime answered and speaks a supported major version; ``False`` when
        it did not answer (nothing could be checked yet; the caller checks again later).

    Raises:
        ContractVersionError: The runtime answered with no contract version, a malformed one, or
            a major version outside :data:`SUPPORTED_CONTRACT_MAJORS`.
    """
    if not health.reachable:
        return False
    spoken = ", ".join(f"{m}.x" for m in sorted(SUPPORTED_CONTRACT_MAJORS))
    version = health.contract_version
    major_text = (version or "").split(".", 1)[0]
    if not major_text.isdigit() or int(major_text) not in SUPPORTED_CONTRACT_MAJORS:
        reported = f"contract version {version!r}" if version else "no contract version"
        message = (
            f"refusing the MCP runtime on the {where}: it reports {reported} "
            f"(runtime {health.runtime_version or 'unknown'}), this gateway speaks contract {spoken} "
            f"(mcp.runtime.v1, docs/contract.md); run a runtime that serves v1 or a gateway that "
            f"speaks its version"
        )
        logger.error("%s", message)
        raise ContractVersionError(message)
    return True
