"""Gateway settings, read once from the environment at start.

=================================  =========================  =====================================
variable                           default                    meaning
=================================  =========================  =====================================
``JWT_SECRET_KEY``                 (required)                 HS256 key of the bearer tokens
``MCP_GATEWAY_AUTH_DISABLED``      unset                      ``1``: no auth, anonymous public-only
                                                              callers (local tests only; warns)
``MCP_GATEWAY_ALLOWED_HOSTS``      loopback names             ``Host`` names accepted, comma list
``MCP_GATEWAY_ALLOWED_ORIGINS``    loopback origins           ``Origin`` values accepted, comma list
``MCP_RUST_GRPC_UDS``              unset                      gRPC socket; selects gRPC mode (wins)
``MCP_RUST_UDS``                   unset                      HTTP/JSON socket; selects HTTP mode
``MCP_RUNTIME_CATALOG``            unset                      catalog file (Python baseline mode)
``MCP_GATEWAY_HOST``               ``127.0.0.1``              listen address
``MCP_GATEWAY_PORT``               ``4444``                   listen port
``MCP_GATEWAY_REQUEST_TIMEOUT_S``  ``90``                     deadline of one non-streaming call (s)
``MCP_GATEWAY_MAX_BODY_BYTES``     ``67108864`` (64 MiB)      largest request body accepted (bytes)
``MCP_RUNTIME_MAX_MESSAGE_BYTES``  ``67108864`` (64 MiB)      the runtime's message limit (below)
``MCP_RUNTIME_UPSTREAM_TIMEOUT_MS``  ``60000``                baseline: the runtime's upstream timeout
=================================  =========================  =====================================

``JWT_SECRET_KEY`` is optional only when ``MCP_GATEWAY_AUTH_DISABLED=1``.

Host and Origin allow-lists (DNS-rebinding protection, MCP spec, transports: security warning):
an entry of ``MCP_GATEWAY_ALLOWED_HOSTS`` is a host name or address (``example.com``,
``10.0.0.5``, ``[::1]``) accepted with any port, or ``name:port`` for that port only; an entry of
``MCP_GATEWAY_ALLOWED_ORIGINS`` is ``scheme://host`` (any port) or ``scheme://host:port``. ``*``
accepts everything. The defaults are ``localhost``, ``127.0.0.1`` and ``[::1]`` (with ``http``
and ``https`` for origins). A request without an ``Origin`` header (not from a browser) passes
the origin check.

The two ``MCP_RUNTIME_*`` names are the runtime's own (``mcp-runtime --help``): the Python
baseline reads them so it applies the same limits as the runtime it stands in for. The socket
modes read ``MCP_RUNTIME_MAX_MESSAGE_BYTES`` too: a whole runtime response is read up to it plus
1 MiB (the gRPC channel's message size limits), so keep it equal to the runtime's.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from mcp_gateway._errors import ConfigError

__all__ = ["DEFAULT_ALLOWED_HOSTS", "DEFAULT_ALLOWED_ORIGINS", "Mode", "Settings"]

DEFAULT_ALLOWED_HOSTS: tuple[str, ...] = ("localhost", "127.0.0.1", "[::1]")
"""``Host`` names accepted by default, each with any port."""

DEFAULT_ALLOWED_ORIGINS: tuple[str, ...] = tuple(
    f"{scheme}://{host}" for scheme in ("http", "https") for host in DEFAULT_ALLOWED_HOSTS
)
"""``Origin`` values accepted by default, each with any port."""


class Mode(enum.StrEnum):
    """How the gateway reaches the MCP runtime."""

    PYTHON = "python"
    """In-process Python baseline on the official mcp SDK."""
    HTTP = "http"
    """HTTP/JSON over the Unix socket ``MCP_RUST_UDS``."""
    GRPC = "grpc"
    """gRPC over the Unix socket ``MCP_RUST_GRPC_UDS``."""


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the gateway reads from its environment.

    Attributes:
        jwt_secret: HS256 key of the bearer tokens.
        http_uds: Path of the runtime's HTTP/JSON socket, or ``None``.
        grpc_uds: Path of the runtime's gRPC socket, or ``None``.
        catalog: Catalog file for the Python baseline, or ``None``.
        host: Listen address of the public endpoint.
        port: Listen port of the public endpoint.
        request_timeout_s: Deadline of one non-streaming runtime call, in seconds (the gRPC
            deadline, the httpx timeout; open SSE streams have no read timeout). Keep it above
            the runtime's upstream timeout (60 s by default), so that an upstream timeout
            reaches the client as the runtime's JSON-RPC error rather than as a gateway 504.
        max_body_bytes: Largest request body the gateway accepts, in bytes (larger: 413).
        runtime_max_message_bytes: The runtime's ``--max-message-bytes``: the Python baseline's
            limit on request bodies and upstream results; in the socket modes, a whole runtime
            response is read up to it plus 1 MiB (gRPC: the channel's message size limits).
        upstream_timeout_s: Python baseline only: how long one upstream call may take, in
            seconds, as the runtime's ``--upstream-timeout-ms``.
        auth_disabled: No authentication: every caller is anonymous and sees public entries
            only. For local use (the conformance suite sends no token); never the default.
        allowed_hosts: ``Host`` values accepted (``name`` any port, ``name:port``, ``*``).
        allowed_origins: ``Origin`` values accepted (``scheme://host`` any port,
            ``scheme://host:port``, ``*``); requests without ``Origin`` pass.
    """

    jwt_secret: str
    http_uds: str | None = None
    grpc_uds: str | None = None
    catalog: Path | None = None
    host: str = "127.0.0.1"
    port: int = 4444
    request_timeout_s: float = 90.0
    max_body_bytes: int = 64 * 1024 * 1024
    runtime_max_message_bytes: int = 64 * 1024 * 1024
    upstream_timeout_s: float = 60.0
    auth_disabled: bool = False
    allowed_hosts: tuple[str, ...] = DEFAULT_ALLOWED_HOSTS
    allowed_origins: tuple[str, ...] = DEFAULT_ALLOWED_ORIGINS

    @property
    def mode(self) -> Mode:
        """The runtime mode: gRPC when its socket is set, else HTTP/JSON, else the Python baseline."""
        if self.grpc_uds:
            return Mode.GRPC
        if self.http_uds:
            return Mode.HTTP
        return Mode.PYTHON

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read the settings from ``env`` (default: ``os.environ``).

        Raises:
            ConfigError: ``JWT_SECRET_KEY`` is missing (and auth is not disabled),
                ``MCP_GATEWAY_AUTH_DISABLED`` is not ``0``/``1``, a number does not parse, or
                the Python baseline is selected without ``MCP_RUNTIME_CATALOG``.
        """
        env = os.environ if env is None else env
        auth_flag = env.get("MCP_GATEWAY_AUTH_DISABLED", "").strip().lower()
        if auth_flag not in ("", "0", "1", "false", "true"):
            raise ConfigError(f"MCP_GATEWAY_AUTH_DISABLED={auth_flag!r} must be 0 or 1")
        auth_disabled = auth_flag in ("1", "true")
        secret = env.get("JWT_SECRET_KEY", "")
        if not secret and not auth_disabled:
            raise ConfigError("JWT_SECRET_KEY is not set")

        def names(name: str, default: tuple[str, ...]) -> tuple[str, ...]:
            raw = env.get(name, "")
            values = tuple(v.strip().lower() for v in raw.split(",") if v.strip())
            return values or default

        def number(name: str, default: float) -> float:
            raw = env.get(name, "")
            if not raw:
                return default
            try:
                value = float(raw)
            except ValueError as e:
                raise ConfigError(f"{name}={raw!r} is not a number") from e
            if value <= 0:
                raise ConfigError(f"{name} must be positive")
            return value

        catalog = env.get("MCP_RUNTIME_CATALOG") or None
        settings = cls(
            jwt_secret=secret,
            http_uds=env.get("MCP_RUST_UDS") or None,
            grpc_uds=env.get("MCP_RUST_GRPC_UDS") or None,
            catalog=Path(catalog) if catalog else None,
            host=env.get("MCP_GATEWAY_HOST") or "127.0.0.1",
            port=int(number("MCP_GATEWAY_PORT", 4444)),
            request_timeout_s=number("MCP_GATEWAY_REQUEST_TIMEOUT_S", 90.0),
            max_body_bytes=int(number("MCP_GATEWAY_MAX_BODY_BYTES", 64 * 1024 * 1024)),
            runtime_max_message_bytes=int(number("MCP_RUNTIME_MAX_MESSAGE_BYTES", 64 * 1024 * 1024)),
            upstream_timeout_s=number("MCP_RUNTIME_UPSTREAM_TIMEOUT_MS", 60_000) / 1000,
            auth_disabled=auth_disabled,
            allowed_hosts=names("MCP_GATEWAY_ALLOWED_HOSTS", DEFAULT_ALLOWED_HOSTS),
            allowed_origins=names("MCP_GATEWAY_ALLOWED_ORIGINS", DEFAULT_ALLOWED_ORIGINS),
        )
        if settings.mode is Mode.PYTHON and settings.catalog is None:
            raise ConfigError("no runtime socket configured and MCP_RUNTIME_CATALOG is not set")
        return settings
