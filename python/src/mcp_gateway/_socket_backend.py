"""What the two socket backends share: the version handshake, the response limit, their own answers.

:class:`SocketBackend` is the base of the HTTP/JSON (``_http_backend``) and gRPC
(``_grpc_backend``) backends. It runs the version handshake (:func:`check_contract`) at start
and, while the runtime has not answered it, before each request; it sizes what is read of one
runtime response (the runtime's message limit plus :data:`RESPONSE_SLACK_BYTES`); and it makes
the few answers a socket backend gives itself, worded as the runtime words them
(:meth:`SocketBackend.result_too_large`, :func:`refused`). A subclass opens its client
(:meth:`SocketBackend._open`), forwards (:meth:`SocketBackend._forward`), probes
(:meth:`SocketBackend.health`) and closes (:meth:`SocketBackend.aclose`), and maps its library's
errors in one function of its own.
"""

from __future__ import annotations

import abc
import logging

from mcp_gateway._backend import ContractVersionError, McpRequest, McpResponse, RuntimeHealth, check_contract
from mcp_gateway._errors import RuntimeUnavailableError
from mcp_gateway._jsonrpc import INTERNAL_ERROR, INVALID_REQUEST, error_body, request_id_of, result_too_large

__all__ = ["DEFAULT_MAX_MESSAGE_BYTES", "RESPONSE_SLACK_BYTES", "SocketBackend", "refused"]

logger = logging.getLogger(__name__)

_MIB = 1024 * 1024

DEFAULT_MAX_MESSAGE_BYTES = 64 * _MIB
"""The runtime's default message limit (``--max-message-bytes``), in bytes."""

RESPONSE_SLACK_BYTES = _MIB
"""Read past the message limit for one whole runtime response, in bytes: the runtime's envelope
around a result of the maximum size is at most 64 KiB."""

_JSON = ("content-type", "application/json")


def refused(status: int, message: str) -> McpResponse:
    """The answer to a request the runtime's transport refused before reading it.

    As the HTTP boundary answers it (``docs/http-boundary.md``): ``status`` with a JSON-RPC
    ``-32600`` error body and a ``null`` id.

    Args:
        status: 413 (request over the runtime's limit) or 400 (a request the contract rejects).
        message: The error message.
    """
    return McpResponse(status=status, headers=[_JSON], body=error_body(INVALID_REQUEST, message))


class SocketBackend(abc.ABC):
    """A backend that reaches the runtime over one of its Unix sockets.

    Args:
        where: What the runtime is reached at, for messages (``"gRPC socket /run/rt.sock"``).
        request_timeout_s: Deadline of a non-streaming call, in seconds.
        max_message_bytes: The runtime's message limit, in bytes; a whole runtime response is
            read up to it plus :data:`RESPONSE_SLACK_BYTES`.
    """

    def __init__(self, where: str, request_timeout_s: float, max_message_bytes: int) -> None:
        self._where = where
        self._timeout_s = request_timeout_s
        self._max_message_bytes = max_message_bytes
        self._contract_ok = False

    @property
    def max_response_bytes(self) -> int:
        """The largest whole runtime response read, in bytes: the limit plus 1 MiB."""
        return self._max_message_bytes + RESPONSE_SLACK_BYTES

    async def start(self) -> None:
        """Open the client and run the version handshake.

        A runtime that is not up yet is checked on first contact instead (the runtime may start
        later); until it passes, each request runs it again first.

        Raises:
            ContractVersionError: The runtime speaks a contract major this gateway does not.
        """
        await self._open()
        await self._check_contract(at_start=True)

    async def _check_contract(self, *, at_start: bool = False) -> None:
        """Run the handshake until it passed once; see :func:`check_contract`."""
        if self._contract_ok:
            return
        self._contract_ok = check_contract(await self.health(), self._where)
        if at_start and not self._contract_ok:
            logger.warning(
                "MCP runtime not reachable at start; its contract version is checked on first contact"
            )

    async def handle(self, request: McpRequest) -> McpResponse:
        """Forward the request, after the version handshake if it has not passed yet.

        Raises:
            RuntimeUnavailableError: The runtime cannot be reached, dropped the request, or
                speaks a contract major this gateway does not.
            RuntimeTimeoutError: No answer within the request timeout.
        """
        if not self._contract_ok:
            try:
                await self._check_contract()
            except ContractVersionError as e:
                raise RuntimeUnavailableError(str(e)) from e
        return await self._forward(request)

    def result_too_large(self, request: McpRequest, detail: str) -> bytes:
        """The runtime's error body for a result over the limit, for a response not read whole.

        The runtime never sends more than its limit plus 64 KiB; this happens only when the
        runtime was given a larger limit than the gateway's ``MCP_RUNTIME_MAX_MESSAGE_BYTES``.

        Args:
            request: The request being answered (its id is echoed).
            detail: What was refused, for the log.

        Returns:
            A JSON-RPC ``-32603`` error body "Result exceeds the message size limit of N bytes".
        """
        logger.warning("runtime response over %d bytes: %s", self.max_response_bytes, detail)
        return error_body(
            INTERNAL_ERROR, result_too_large(self._max_message_bytes), request_id_of(request.body)
        )

    def result_too_large_response(self, request: McpRequest, detail: str) -> McpResponse:
        """:meth:`result_too_large` as a whole ``200`` JSON response, as the runtime answers it."""
        return McpResponse(status=200, headers=[_JSON], body=self.result_too_large(request, detail))

    @abc.abstractmethod
    async def _open(self) -> None:
        """Create the client or channel (inside the event loop)."""

    @abc.abstractmethod
    async def _forward(self, request: McpRequest) -> McpResponse:
        """Send the request to the runtime; see :meth:`handle`."""

    @abc.abstractmethod
    async def health(self) -> RuntimeHealth:
        """Probe the runtime with a short deadline (never raises)."""

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Close the client or channel, cancelling calls still in flight."""
