"""The core process: its settings, its sockets, both transports on one loop, clean shutdown.

``python -m mcp_gateway core --grpc-uds PATH --http-uds PATH`` (at least one) runs
:func:`run`. Settings (flags win over the environment):

================================  ==================  ===========================================
variable (flag)                   default             meaning
================================  ==================  ===========================================
``JWT_SECRET_KEY``                (required)          HS256 key of the bearer tokens (as the gateway)
``MCP_GATEWAY_AUTH_DISABLED``     unset               ``1``: no auth, every caller anonymous and
                                                      public-only (local tests only; warns)
``MCP_CORE_GRPC_UDS``             unset               gRPC socket path (``--grpc-uds``)
``MCP_CORE_HTTP_UDS``             unset               HTTP/JSON socket path (``--http-uds``)
``MCP_CORE_CACHE_MAX_AGE_MS``     ``30000``           ``cache_max_age_ms`` of an allowed caller (ms);
                                                      ``0``: the runtime must not cache
``MCP_CORE_PLUGINS_FILE``         unset               plugin configuration (``--plugins``;
                                                      :mod:`mcp_gateway.core.plugins`); unset: none
``MCP_CORE_WATCH_KEEPALIVE_S``    ``15``              seconds without an event after which an
                                                      HTTP/JSON watch stream gets an empty line
``MCP_CORE_METRICS_LISTEN``       unset (no metrics)  ``host:port`` of ``/metrics``, ``/health``,
                                                      ``/ready`` (``--metrics-listen``)
``MCP_CORE_DRAIN_S``              ``0``               seconds not ready before the sockets close
                                                      (``--drain-s``)
``MCP_CORE_LOG_LEVEL``            ``info``            log level (``--log-level``)
``MCP_CORE_LOG_FORMAT``           ``text``            ``text`` or ``json`` (``--log-format``)
``OTEL_*``                        unset (no traces)   OTLP/HTTP trace export
                                                      (``docs/operations.md``)
================================  ==================  ===========================================

Readiness: ``GET /ready`` on the HTTP/JSON socket (and on the metrics listener) answers 200
``{"status": "ready"}`` once the sockets serve, 503 ``starting`` / ``draining`` otherwise; gRPC
health says ``SERVING`` / ``NOT_SERVING`` alike. ``GET /health`` (liveness) stays 200.

``MCP_GATEWAY_AUTH_DISABLED`` is the gateway's own switch, read the same way
(:func:`mcp_gateway._auth.auth_disabled`): with ``1`` ResolveCaller answers every request, with
any credential or none, with the gateway's anonymous caller (:mod:`mcp_gateway.core.policy`),
``JWT_SECRET_KEY`` is optional, and the core logs a warning at start. For local use only (the
conformance suite through the edge modes sends no token), never for a shared deployment.

Sockets: each path must be free or a stale socket file (nothing listening; it is replaced); a
live socket or another kind of file there is a start-up error (exit status 2), as is an
abstract name (``@...``). Socket files are created with mode 600 (only the core's user may
connect). On SIGTERM or SIGINT the core ends every open WatchPolicy stream (gRPC: status OK;
HTTP/JSON: the last chunk), reports ``NOT_SERVING`` on gRPC health and ``/ready`` (then waits
``MCP_CORE_DRAIN_S``, serving as before), stops both servers (unary
calls in progress get 1 s) and removes the socket files it created (only those, and
only if they are still the files it bound), then exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import signal
import socket
import stat
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from mcp_gateway._auth import auth_disabled
from mcp_gateway._errors import ConfigError
from mcp_gateway._metrics import CoreMetrics, MetricsServer
from mcp_gateway._telemetry import Tracing
from mcp_gateway.core.observe import CoreObserver
from mcp_gateway.core.plugins import Plugins
from mcp_gateway.core.policy import Policy
from mcp_gateway.core.service import Core

__all__ = ["CoreSettings", "run", "serve"]

logger = logging.getLogger("mcp_gateway.core")

AUTH_DISABLED_WARNING = (
    "authentication is DISABLED (MCP_GATEWAY_AUTH_DISABLED=1): every caller, with any token or "
    "none, resolves to the anonymous caller and sees public entries only; for local testing, "
    "never for a shared deployment"
)


@dataclass(frozen=True, slots=True)
class CoreSettings:
    """Everything the core reads from its flags and environment (the module table).

    Attributes:
        jwt_secret: HS256 key of the bearer tokens.
        grpc_uds: gRPC socket path, or ``None``.
        http_uds: HTTP/JSON socket path, or ``None``.
        cache_max_age_ms: ``cache_max_age_ms`` of every allowed caller, in milliseconds.
        plugins_file: Plugin configuration file, or ``None`` (no plugins).
        watch_keepalive_s: Seconds without an event before an HTTP/JSON watch keep-alive line.
        auth_disabled: No authentication (``MCP_GATEWAY_AUTH_DISABLED=1``): every caller is
            anonymous and sees public entries only. For local use; never the default.
    """

    jwt_secret: str
    grpc_uds: str | None = None
    http_uds: str | None = None
    cache_max_age_ms: int = 30_000
    plugins_file: Path | None = None
    watch_keepalive_s: float = 15.0
    auth_disabled: bool = False
    metrics_listen: str | None = None
    drain_s: float = 0.0

    @classmethod
    def from_env(
        cls,
        env: Mapping[str, str] | None = None,
        *,
        grpc_uds: str | None = None,
        http_uds: str | None = None,
        plugins: str | None = None,
        metrics_listen: str | None = None,
        drain_s: float | None = None,
    ) -> CoreSettings:
        """Read the settings; the keyword arguments (the flags) win over ``env``.

        Raises:
            ConfigError: ``JWT_SECRET_KEY`` is missing (and auth is not disabled),
                ``MCP_GATEWAY_AUTH_DISABLED`` is not ``0``/``1``, no socket is given, a socket
                is an abstract name, ``MCP_CORE_CACHE_MAX_AGE_MS`` is not a whole number >= 0, or
                ``MCP_CORE_WATCH_KEEPALIVE_S`` is not a positive number.
        """
        env = os.environ if env is None else env
        auth_off = auth_disabled(env)
        secret = env.get("JWT_SECRET_KEY", "")
        if not secret and not auth_off:
            raise ConfigError("JWT_SECRET_KEY is not set")
        grpc_path = grpc_uds or env.get("MCP_CORE_GRPC_UDS") or None
        http_path = http_uds or env.get("MCP_CORE_HTTP_UDS") or None
        if grpc_path is None and http_path is None:
            raise ConfigError("give --grpc-uds and/or --http-uds (MCP_CORE_GRPC_UDS, MCP_CORE_HTTP_UDS)")
        for path in (grpc_path, http_path):
            if path is not None and path.startswith("@"):
                raise ConfigError(f"{path!r} is an abstract socket name: give a socket file path")
        raw_age = env.get("MCP_CORE_CACHE_MAX_AGE_MS", "") or "30000"
        if not raw_age.isdigit() or int(raw_age) > 2**32 - 1:
            raise ConfigError(f"MCP_CORE_CACHE_MAX_AGE_MS={raw_age!r} must be a whole number of ms (uint32)")
        raw_keepalive = env.get("MCP_CORE_WATCH_KEEPALIVE_S", "") or "15"
        try:
            keepalive_s = float(raw_keepalive)
        except ValueError:
            keepalive_s = 0.0
        if not 0 < keepalive_s < 3600:
            raise ConfigError(
                f"MCP_CORE_WATCH_KEEPALIVE_S={raw_keepalive!r} must be a number of seconds in (0, 3600)"
            )
        plugins_path = plugins or env.get("MCP_CORE_PLUGINS_FILE") or None
        listen = (metrics_listen or env.get("MCP_CORE_METRICS_LISTEN") or "").strip() or None
        if listen is not None:
            from mcp_gateway._metrics import parse_listen

            parse_listen(listen, "--metrics-listen" if metrics_listen else "MCP_CORE_METRICS_LISTEN")
        if drain_s is None:
            raw_drain = env.get("MCP_CORE_DRAIN_S", "").strip() or "0"
            try:
                drain_s = float(raw_drain)
            except ValueError:
                raise ConfigError(f"MCP_CORE_DRAIN_S={raw_drain!r} is not a number of seconds") from None
        if not 0 <= drain_s <= 3600:
            raise ConfigError("the drain period (--drain-s, MCP_CORE_DRAIN_S) must be 0-3600 seconds")
        return cls(
            jwt_secret=secret,
            grpc_uds=grpc_path,
            http_uds=http_path,
            cache_max_age_ms=int(raw_age),
            plugins_file=Path(plugins_path) if plugins_path else None,
            watch_keepalive_s=keepalive_s,
            auth_disabled=auth_off,
            metrics_listen=listen,
            drain_s=drain_s,
        )


def _claim(path: str) -> None:
    """Make ``path`` free for a socket: remove a stale socket file, refuse anything else.

    Raises:
        ConfigError: A live socket or a file of another kind is there.
    """
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise ConfigError(f"{path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError as e:
        if e.errno not in (errno.ECONNREFUSED, errno.ENOENT):
            raise ConfigError(f"{path}: {e}") from e
        os.unlink(path)
        logger.info("removed the stale socket file %s", path)
        return
    finally:
        probe.close()
    raise ConfigError(f"{path} is in use: another process listens on it")


def _identity(path: str) -> tuple[int, int]:
    st = os.lstat(path)
    return st.st_dev, st.st_ino


@contextlib.contextmanager
def _owned(created: dict[str, tuple[int, int]]) -> Iterator[None]:
    """On exit, remove each socket file in ``created`` that is still the file the core bound."""
    try:
        yield
    finally:
        for path, identity in created.items():
            with contextlib.suppress(OSError):
                if _identity(path) == identity:
                    os.unlink(path)


async def serve(
    settings: CoreSettings,
    stop: asyncio.Event,
    draining: asyncio.Event | None = None,
    tracing: Tracing | None = None,
) -> None:
    """Serve the Core SPI on the configured sockets until ``stop`` is set.

    Args:
        settings: The settings.
        stop: Set to close the sockets and return.
        draining: Set when shutdown begins: readiness turns not ready (gRPC health
            ``NOT_SERVING``, ``/ready`` 503) while the sockets still serve, until ``stop``.
        tracing: The tracer of the calls' spans; ``None``: no span.

    Raises:
        ConfigError: The plugins file is invalid, a socket path is taken, or the metrics
            listener cannot be bound.
    """
    plugins = Plugins.from_file(settings.plugins_file)
    policy = Policy(
        settings.jwt_secret, settings.cache_max_age_ms, plugins.hooks, auth_disabled=settings.auth_disabled
    )
    core = Core(policy, plugins)
    metrics: CoreMetrics | None = None
    metrics_server: MetricsServer | None = None
    if settings.metrics_listen is not None:
        metrics = CoreMetrics()
        metrics.watch_watchers(lambda: policy.watchers)
        core.on_revoke = metrics.revocation

        def readiness() -> tuple[bool, str]:
            if core.draining:
                return False, "draining"
            return (True, "") if core.serving else (False, "starting")

        metrics_server = MetricsServer(metrics, settings.metrics_listen, "--metrics-listen", readiness)
    observer = CoreObserver(metrics, tracing) if CoreObserver.wanted(metrics, tracing) else None
    try:
        await _serve_core(settings, core, observer, metrics_server, stop, draining)
    finally:
        if metrics_server is not None:
            metrics_server.close()
        if tracing is not None:
            tracing.shutdown()


async def _serve_core(
    settings: CoreSettings,
    core: Core,
    observer: CoreObserver | None,
    metrics_server: MetricsServer | None,
    stop: asyncio.Event,
    draining: asyncio.Event | None,
) -> None:
    from mcp_gateway.core.http_server import HttpServer

    plugins = core.plugins
    created: dict[str, tuple[int, int]] = {}
    http: HttpServer | None = None
    grpc_server = None
    old_umask = os.umask(0o177)  # socket files: mode 600 (sockets are created 777 & ~umask)
    with _owned(created):
        try:
            if settings.http_uds is not None:
                _claim(settings.http_uds)
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.bind(settings.http_uds)
                created[settings.http_uds] = _identity(settings.http_uds)
                sock.listen(1024)
                http = HttpServer(core, settings.watch_keepalive_s, observer)
                await http.start(sock)
            if settings.grpc_uds is not None:
                from mcp_gateway.core.grpc_server import GrpcServer

                _claim(settings.grpc_uds)
                grpc_server = GrpcServer(core, observer)
                await grpc_server.start(settings.grpc_uds)
                created[settings.grpc_uds] = _identity(settings.grpc_uds)
        finally:
            os.umask(old_umask)
        if settings.auth_disabled:
            logger.warning(AUTH_DISABLED_WARNING)
        logger.info(
            "core serving: gRPC %s, HTTP/JSON %s; %d hooks registered; generation %d",
            settings.grpc_uds or "off",
            settings.http_uds or "off",
            len(plugins.hooks),
            core.policy.generation,
        )
        if metrics_server is not None:
            metrics_server.start()
            logger.info("metrics on http://%s/metrics", metrics_server.address)
        core.serving = True
        try:
            if draining is not None:
                await _first(stop, draining)
                if draining.is_set() and not stop.is_set():
                    core.draining = True
                    if grpc_server is not None:
                        await grpc_server.not_serving()
                    logger.info("draining: not ready; closing the sockets in %g s", settings.drain_s)
            await stop.wait()
        finally:
            core.draining = True
            logger.info("core stopping")
            core.policy.close_watchers()
            if grpc_server is not None:
                await grpc_server.stop()
            if http is not None:
                await http.stop()


async def _first(*events: asyncio.Event) -> None:
    """Wait until any of ``events`` is set."""
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()


def run(settings: CoreSettings, tracing: Tracing | None = None) -> int:
    """Run the core until SIGTERM or SIGINT; returns the exit status (0, or 2 for a bad setting).

    The first signal starts the drain (not ready for ``settings.drain_s`` seconds, still
    serving), then the sockets close; a second signal during the drain closes them at once.
    """

    async def main() -> int:
        stop = asyncio.Event()
        draining = asyncio.Event()
        loop = asyncio.get_running_loop()

        def on_signal() -> None:
            if draining.is_set() or settings.drain_s <= 0:
                draining.set()
                stop.set()
                return
            draining.set()
            loop.call_later(settings.drain_s, stop.set)

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal)
        try:
            await serve(settings, stop, draining, tracing)
        except ConfigError as e:
            logger.error("%s", e)
            return 2
        return 0

    return asyncio.run(main())
