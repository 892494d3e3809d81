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
``MCP_RUST_HTTP_CLIENT``           ``aiohttp``                HTTP mode's client: aiohttp or httpx
``MCP_RUNTIME_CATALOG``            unset                      catalog file (Python baseline mode)
``MCP_GATEWAY_HOST``               ``127.0.0.1``              listen address
``MCP_GATEWAY_PORT``               ``4444``                   listen port
``MCP_GATEWAY_REQUEST_TIMEOUT_S``  ``90``                     deadline of one non-streaming call (s)
``MCP_GATEWAY_MAX_BODY_BYTES``     ``67108864`` (64 MiB)      largest request body accepted (bytes)
``MCP_RUNTIME_MAX_MESSAGE_BYTES``  ``67108864`` (64 MiB)      the runtime's message limit (below)
``MCP_RUNTIME_UPSTREAM_TIMEOUT_MS``  ``60000``                baseline: the runtime's upstream timeout
``MCP_RUNTIME_SESSION_IDLE_TTL_S``  ``3600``                  baseline: idle sessions end after (s)
``MCP_RUNTIME_MAX_SESSIONS_PER_SUBJECT``  ``256``             baseline: sessions per subject (429)
``MCP_RUNTIME_MAX_STREAMS_PER_SUBJECT``  ``64``               baseline: open GET streams per subject
``MCP_RUNTIME_MAX_CALLS_PER_SUBJECT``  ``256``               baseline: upstream calls in flight per subject
``MCP_GATEWAY_RUNTIME_KEEPALIVE_S``  ``5``                    idle expiry of pooled runtime connections
``MCP_GATEWAY_MAX_HEADER_BYTES``   ``65536`` (64 KiB)         largest request head (431 above)
``MCP_GATEWAY_HEADER_TIMEOUT_S``   ``10``                     time for a request head (else closed)
``MCP_GATEWAY_MAX_CONNECTIONS``    ``2048``                   open connections per worker process
``MCP_GATEWAY_MAX_CONCURRENT_REQUESTS``  ``1024``             requests in progress per worker (503)
``MCP_GATEWAY_MAX_BYTES_PER_SUBJECT``  ``134217728`` (128 MiB)  request bytes in flight per subject (429)
``MCP_GATEWAY_MAX_BYTES_IN_FLIGHT``  ``536870912`` (512 MiB)  request bytes in flight per worker (503)
``MCP_CORE_PLUGINS_FILE``          unset                      the core's plugin file, applied here
``MCP_GATEWAY_METRICS_LISTEN``     unset (no metrics)         ``host:port`` of ``/metrics``
``MCP_GATEWAY_DRAIN_S``            ``0``                      not ready this long before closing (s)
``MCP_GATEWAY_SHUTDOWN_GRACE_S``   ``10``                     then calls in progress get this long (s)
``MCP_GATEWAY_SSE_KEEP_ALIVE_S``   ``15``                     SSE comment after this silence (s; 0 off)
``MCP_GATEWAY_LOG_LEVEL``          ``info``                   log level (``--log-level`` wins)
``MCP_GATEWAY_LOG_FORMAT``         ``text``                   ``text`` or ``json`` (one object a line)
``OTEL_*``                         unset (no traces)          OTLP/HTTP trace export (operations.md)
=================================  =========================  =====================================

``JWT_SECRET_KEY`` is optional only when ``MCP_GATEWAY_AUTH_DISABLED=1``.

Host and Origin allow-lists (DNS-rebinding protection, MCP spec, transports: security warning):
an entry of ``MCP_GATEWAY_ALLOWED_HOSTS`` is a host name or address (``example.com``,
``10.0.0.5``, ``[::1]``) accepted with any port, or ``name:port`` for that port only; an entry of
``MCP_GATEWAY_ALLOWED_ORIGINS`` is ``scheme://host`` (any port) or ``scheme://host:port``. ``*``
accepts everything. The defaults are ``localhost``, ``127.0.0.1`` and ``[::1]`` (with ``http``
and ``https`` for origins). A request without an ``Origin`` header (not from a browser) passes
the origin check.

The ``MCP_RUNTIME_*`` names are the runtime's own (``mcp-runtime --help``): the Python
baseline reads them so it applies the same limits as the runtime it stands in for. The socket
modes read ``MCP_RUNTIME_MAX_MESSAGE_BYTES`` too: a whole runtime response is read up to it plus
1 MiB (the gRPC channel's message size limits), so keep it equal to the runtime's.

The baseline's sessions (``_baseline.sessions``), as the runtime's: a session with no request,
no call in flight and no open GET stream for ``MCP_RUNTIME_SESSION_IDLE_TTL_S`` seconds is
ended (checked every half TTL, at least once a minute) and then answers 404. A subject (the
token's ``sub``) holds at most ``MCP_RUNTIME_MAX_SESSIONS_PER_SUBJECT`` sessions (an
``initialize`` beyond is answered 429, ``-32000``, ``Retry-After: 60``),
``MCP_RUNTIME_MAX_STREAMS_PER_SUBJECT`` open GET streams and
``MCP_RUNTIME_MAX_CALLS_PER_SUBJECT`` upstream calls in flight (``tools/call``, ``prompts/get``,
``resources/read``; beyond either: 429, ``-32000``,
``Retry-After: 1``). In the socket modes the runtime applies its own flags of these names.

An empty ``MCP_RUST_GRPC_UDS`` or ``MCP_RUST_UDS`` means unset (as for the runtime). A value
starting with ``@`` (a Linux abstract socket name) is refused at start: the gateway and the
runtime take socket paths only.

The public listener's limits (``_listener``): a request head (request line and headers) over
``MCP_GATEWAY_MAX_HEADER_BYTES`` is answered 431 and the connection closed; a connection must
complete each request head within ``MCP_GATEWAY_HEADER_TIMEOUT_S`` of opening (or of the end of
its previous response), else it is closed, and a request body that stalls as long gets 408; at
most ``MCP_GATEWAY_MAX_CONNECTIONS`` connections are open at once (a new one past the cap closes
the connection that has waited longest for a request head, or is answered 503 when every
connection is busy); at most ``MCP_GATEWAY_MAX_CONCURRENT_REQUESTS`` requests are in progress at
once (open SSE streams included), more are answered 503 with ``Retry-After``.

The byte budget (``_byte_budget``, every mode): a request body is held against
``MCP_GATEWAY_MAX_BYTES_PER_SUBJECT`` and ``MCP_GATEWAY_MAX_BYTES_IN_FLIGHT`` from its declared
``Content-Length`` (before it is read) until its answer is sent; a body with no room is read and
dropped unparsed and answered 429 (the subject's budget) or 503 (the process's), ``-32000``,
``Retry-After: 1`` (none when the body alone is larger), as the runtime answers.

``MCP_CORE_PLUGINS_FILE`` names the plugin configuration of the core (the per-team tool
deny-list and the output redactor, :mod:`mcp_gateway.core.plugins`, ``docs/core-spi.md``): the
same file and the same variable as the core's, so one file gives the same decisions in the
proxied modes (applied by the gateway, :mod:`mcp_gateway._plugins`) and in the edge modes
(applied by the runtime through the core's hooks). Unset or empty: no plugin runs and the
gateway parses no more of a request or an answer than without plugins. An unreadable or invalid
file is a start-up error (status 2), as for the core.

``MCP_GATEWAY_SSE_KEEP_ALIVE_S``: an SSE answer (a GET or ``subscriptions/listen`` stream, a call's
stream) silent this long gets a comment line, ``: keep-alive``, which SSE clients ignore, so that
a proxy or client with an idle timeout keeps it open; written only between whole events, in every
mode (the runtime's ``--public-sse-keep-alive-ms`` does the same on the edge modes' public
endpoint; 15 s is the ``mcp`` SDK server's ping interval, from ``sse-starlette``). ``0``: never;
otherwise at least 0.1.

``MCP_GATEWAY_RUNTIME_KEEPALIVE_S`` (HTTP/JSON mode) is how long an idle pooled connection to the
runtime is kept. Keep it well below the runtime's ``--header-read-timeout-ms`` (30 s), which
closes idle keep-alive connections: a client that keeps a connection as long as the server does
sends some requests on connections the server is closing.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from mcp_gateway._auth import auth_disabled
from mcp_gateway._errors import ConfigError

__all__ = ["DEFAULT_ALLOWED_HOSTS", "DEFAULT_ALLOWED_ORIGINS", "HTTP_CLIENTS", "Mode", "Settings"]

HTTP_CLIENTS: tuple[str, ...] = ("aiohttp", "httpx")
"""The HTTP/JSON mode's client libraries (``MCP_RUST_HTTP_CLIENT``), the default first."""

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
            deadline, also of the whole ``InvokeStream`` of a call the upstream may ask the
            client something during; the httpx timeout; open SSE streams have no read timeout).
            Keep it above
            the runtime's upstream timeout (60 s by default), so that an upstream timeout
            reaches the client as the runtime's JSON-RPC error rather than as a gateway 504.
        max_body_bytes: Largest request body the gateway accepts, in bytes (larger: 413).
        runtime_max_message_bytes: The runtime's ``--max-message-bytes``: the Python baseline's
            limit on request bodies and upstream results; in the socket modes, a whole runtime
            response is read up to it plus 1 MiB (gRPC: the channel's message size limits).
        upstream_timeout_s: Python baseline only: how long one upstream call may take, in
            seconds, as the runtime's ``--upstream-timeout-ms``.
        session_idle_ttl_s: Python baseline only: a session unused this long is ended, in
            seconds (the runtime's ``--session-idle-ttl-s``).
        max_sessions_per_subject: Python baseline only: sessions one subject may hold (the
            runtime's ``--max-sessions-per-subject``).
        max_streams_per_subject: Python baseline only: open GET streams one subject may hold
            (the runtime's ``--max-streams-per-subject``).
        max_calls_per_subject: Python baseline only: upstream calls one subject may have in
            flight (the runtime's ``--max-calls-per-subject``).
        auth_disabled: No authentication: every caller is anonymous and sees public entries
            only. For local use (the conformance suite sends no token); never the default.
        allowed_hosts: ``Host`` values accepted (``name`` any port, ``name:port``, ``*``).
        allowed_origins: ``Origin`` values accepted (``scheme://host`` any port,
            ``scheme://host:port``, ``*``); requests without ``Origin`` pass.
        http_client: HTTP/JSON mode's client library: ``"aiohttp"`` (the default, the faster)
            or ``"httpx"`` (what the ContextForge gateway uses); both follow the same rules
            (``_http_wire``).
        runtime_keepalive_s: HTTP/JSON mode: how long an idle pooled connection to the runtime
            is kept, in seconds; well below the runtime's header-read timeout (30 s).
        max_header_bytes: Largest request head (request line and headers) on the public
            port, in bytes (larger: 431, connection closed).
        header_timeout_s: How long a connection may take to send a complete request head, from
            its opening or the end of its previous response, in seconds (then it is closed);
            also how long a request body may stall (then 408).
        max_connections: Open connections on the public port, per worker process.
        max_concurrent_requests: Requests in progress at once, per worker process (more: 503).
        max_bytes_per_subject: Request bytes one subject may have in flight in a worker process
            (more: 429), as the runtime's ``--max-bytes-per-subject``.
        max_bytes_in_flight: Request bytes a worker process may have in flight (more: 503), as
            the runtime's ``--max-bytes-in-flight``.
        plugins_file: The core's plugin configuration (``MCP_CORE_PLUGINS_FILE``), applied by
            the gateway to the calls it relays; ``None``: no plugins.
        metrics_listen: ``host:port`` of the metrics listener (``MCP_GATEWAY_METRICS_LISTEN``,
            ``docs/operations.md``); ``None``: no metrics.
        drain_s: Seconds between the first SIGTERM/SIGINT (``/ready`` turns 503) and the
            listener's closing (``MCP_GATEWAY_DRAIN_S``; 0: at once).
        shutdown_grace_s: Seconds the requests in progress get once the listener closed (GET
            and listen streams are ended at once); then they are cancelled
            (``MCP_GATEWAY_SHUTDOWN_GRACE_S``, as the runtime's ``--shutdown-grace-ms``).
        sse_keep_alive_s: Seconds of silence after which an SSE answer gets a ``: keep-alive``
            comment (``MCP_GATEWAY_SSE_KEEP_ALIVE_S``, as the runtime's
            ``--public-sse-keep-alive-ms``); 0: never, else at least 0.1.
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
    session_idle_ttl_s: float = 3600.0
    max_sessions_per_subject: int = 256
    max_streams_per_subject: int = 64
    max_calls_per_subject: int = 256
    auth_disabled: bool = False
    allowed_hosts: tuple[str, ...] = DEFAULT_ALLOWED_HOSTS
    allowed_origins: tuple[str, ...] = DEFAULT_ALLOWED_ORIGINS
    http_client: str = "aiohttp"
    runtime_keepalive_s: float = 5.0
    max_header_bytes: int = 64 * 1024
    header_timeout_s: float = 10.0
    max_connections: int = 2048
    max_concurrent_requests: int = 1024
    max_bytes_per_subject: int = 128 * 1024 * 1024
    max_bytes_in_flight: int = 512 * 1024 * 1024
    plugins_file: Path | None = None
    metrics_listen: str | None = None
    drain_s: float = 0.0
    shutdown_grace_s: float = 10.0
    sse_keep_alive_s: float = 15.0

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
                ``MCP_GATEWAY_AUTH_DISABLED`` is not ``0``/``1``, a number does not parse, a
                socket is an abstract name (``@...``), ``MCP_RUST_HTTP_CLIENT`` is neither
                ``aiohttp`` nor ``httpx``, or the Python baseline is selected without
                ``MCP_RUNTIME_CATALOG``.
        """
        env = os.environ if env is None else env
        auth_off = auth_disabled(env)
        secret = env.get("JWT_SECRET_KEY", "")
        if not secret and not auth_off:
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

        def socket_path(name: str) -> str | None:
            value = env.get(name) or None
            if value is not None and value.startswith("@"):
                raise ConfigError(
                    f"{name}={value!r} is an abstract socket name, which the gateway and the "
                    f"runtime do not support: give the path of the runtime's socket file"
                )
            return value

        catalog = env.get("MCP_RUNTIME_CATALOG") or None
        http_client = (env.get("MCP_RUST_HTTP_CLIENT") or "aiohttp").strip().lower()
        if http_client not in HTTP_CLIENTS:
            raise ConfigError(f"MCP_RUST_HTTP_CLIENT={http_client!r} is not one of {', '.join(HTTP_CLIENTS)}")
        plugins_file = env.get("MCP_CORE_PLUGINS_FILE") or None
        metrics_listen = (env.get("MCP_GATEWAY_METRICS_LISTEN") or "").strip() or None
        if metrics_listen is not None:
            from mcp_gateway._metrics import parse_listen

            parse_listen(metrics_listen, "MCP_GATEWAY_METRICS_LISTEN")
        drain_raw = env.get("MCP_GATEWAY_DRAIN_S", "").strip()
        try:
            drain_s = float(drain_raw) if drain_raw else 0.0
        except ValueError as e:
            raise ConfigError(f"MCP_GATEWAY_DRAIN_S={drain_raw!r} is not a number") from e
        if not 0 <= drain_s <= 3600:
            raise ConfigError("MCP_GATEWAY_DRAIN_S must be between 0 and 3600 seconds")
        shutdown_grace_s = number("MCP_GATEWAY_SHUTDOWN_GRACE_S", 10.0)
        if shutdown_grace_s > 3600:
            raise ConfigError("MCP_GATEWAY_SHUTDOWN_GRACE_S must be at most 3600 seconds")
        keep_alive_raw = env.get("MCP_GATEWAY_SSE_KEEP_ALIVE_S", "").strip()
        try:
            sse_keep_alive_s = float(keep_alive_raw) if keep_alive_raw else 15.0
        except ValueError as e:
            raise ConfigError(f"MCP_GATEWAY_SSE_KEEP_ALIVE_S={keep_alive_raw!r} is not a number") from e
        if sse_keep_alive_s != 0 and not 0.1 <= sse_keep_alive_s <= 3600:
            # Under 0.1 s a silent stream's client would be flooded with comments for nothing.
            raise ConfigError(
                "MCP_GATEWAY_SSE_KEEP_ALIVE_S must be 0 (never) or between 0.1 and 3600 seconds"
            )
        settings = cls(
            jwt_secret=secret,
            http_uds=socket_path("MCP_RUST_UDS"),
            grpc_uds=socket_path("MCP_RUST_GRPC_UDS"),
            catalog=Path(catalog) if catalog else None,
            host=env.get("MCP_GATEWAY_HOST") or "127.0.0.1",
            port=int(number("MCP_GATEWAY_PORT", 4444)),
            request_timeout_s=number("MCP_GATEWAY_REQUEST_TIMEOUT_S", 90.0),
            max_body_bytes=int(number("MCP_GATEWAY_MAX_BODY_BYTES", 64 * 1024 * 1024)),
            runtime_max_message_bytes=int(number("MCP_RUNTIME_MAX_MESSAGE_BYTES", 64 * 1024 * 1024)),
            upstream_timeout_s=number("MCP_RUNTIME_UPSTREAM_TIMEOUT_MS", 60_000) / 1000,
            session_idle_ttl_s=number("MCP_RUNTIME_SESSION_IDLE_TTL_S", 3600),
            max_sessions_per_subject=int(number("MCP_RUNTIME_MAX_SESSIONS_PER_SUBJECT", 256)),
            max_streams_per_subject=int(number("MCP_RUNTIME_MAX_STREAMS_PER_SUBJECT", 64)),
            max_calls_per_subject=int(number("MCP_RUNTIME_MAX_CALLS_PER_SUBJECT", 256)),
            auth_disabled=auth_off,
            allowed_hosts=names("MCP_GATEWAY_ALLOWED_HOSTS", DEFAULT_ALLOWED_HOSTS),
            allowed_origins=names("MCP_GATEWAY_ALLOWED_ORIGINS", DEFAULT_ALLOWED_ORIGINS),
            http_client=http_client,
            runtime_keepalive_s=number("MCP_GATEWAY_RUNTIME_KEEPALIVE_S", 5.0),
            max_header_bytes=int(number("MCP_GATEWAY_MAX_HEADER_BYTES", 64 * 1024)),
            header_timeout_s=number("MCP_GATEWAY_HEADER_TIMEOUT_S", 10.0),
            max_connections=int(number("MCP_GATEWAY_MAX_CONNECTIONS", 2048)),
            max_concurrent_requests=int(number("MCP_GATEWAY_MAX_CONCURRENT_REQUESTS", 1024)),
            max_bytes_per_subject=int(number("MCP_GATEWAY_MAX_BYTES_PER_SUBJECT", 128 * 1024 * 1024)),
            max_bytes_in_flight=int(number("MCP_GATEWAY_MAX_BYTES_IN_FLIGHT", 512 * 1024 * 1024)),
            plugins_file=Path(plugins_file) if plugins_file else None,
            metrics_listen=metrics_listen,
            drain_s=drain_s,
            shutdown_grace_s=shutdown_grace_s,
            sse_keep_alive_s=sse_keep_alive_s,
        )
        if settings.mode is Mode.PYTHON and settings.catalog is None:
            raise ConfigError("no runtime socket configured and MCP_RUNTIME_CATALOG is not set")
        return settings
