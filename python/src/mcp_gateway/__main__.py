"""Command line: ``python -m mcp_gateway serve|token|stack|core|core-admin``.

``serve`` runs the gateway under uvicorn with the settings of the environment (see
:class:`mcp_gateway.Settings`). ``token`` prints an HS256 bearer token signed with
``JWT_SECRET_KEY`` (or ``--secret``) for local use. ``stack`` brings up the fixture upstream,
the runtime (both sockets) and the gateway in the chosen mode, prints the URL and tokens, and
stops everything on Ctrl-C (``make run MODE=grpc``); in the edge modes (``MODE=edge``, gRPC
callbacks, or ``MODE=edge-http``) the core and the runtime serving the public endpoint instead.
``core`` serves the Core SPI of edge mode on its Unix sockets (:mod:`mcp_gateway.core`,
``docs/core-spi.md``); ``core-admin`` revokes credentials through a running core's HTTP socket
and prints its counters.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["main"]


def _serve(args: argparse.Namespace) -> int:
    from uvicorn.config import STARTUP_FAILURE

    from mcp_gateway._app import Readiness, create_app, make_backend
    from mcp_gateway._errors import ConfigError
    from mcp_gateway._listener import DrainingServer, ListenerLimits, PublicConfig
    from mcp_gateway._logging import configure, level_and_format
    from mcp_gateway._metrics import GatewayMetrics, MetricsServer
    from mcp_gateway._settings import Mode, Settings
    from mcp_gateway._telemetry import Tracing, tracing_from_env

    env = dict(os.environ)
    if args.host:
        env["MCP_GATEWAY_HOST"] = args.host
    if args.port is not None:
        env["MCP_GATEWAY_PORT"] = str(args.port)
    metrics_server: MetricsServer | None = None
    try:
        log_level, log_format = level_and_format(args.log_level, env, "MCP_GATEWAY")
        settings = Settings.from_env(env)
        if settings.metrics_listen is not None and args.workers > 1:
            raise ConfigError(
                "MCP_GATEWAY_METRICS_LISTEN with --workers above 1 is not supported (each worker "
                "would count alone): run one worker per process, or leave metrics off"
            )
        if settings.plugins_file is not None:
            # Checked here too, so that a bad file is one line and status 2 with any --workers.
            from mcp_gateway._plugins import load_plugins

            load_plugins(settings.plugins_file)
        if settings.mode is Mode.PYTHON and settings.catalog is not None:
            # The baseline's catalog, read here as well: a missing or invalid file is one line
            # and status 2, not a traceback from the app's start-up.
            from mcp_gateway._baseline.catalog import load_catalog

            load_catalog(settings.catalog)
        tracing: Tracing | None = tracing_from_env(
            "mcp-gateway", env, {"mcp.gateway.mode": settings.mode.value}
        )
        backend = make_backend(settings)
        readiness = Readiness(backend)
        metrics: GatewayMetrics | None = None
        if settings.metrics_listen is not None:
            metrics = GatewayMetrics(settings.mode.value)
            metrics_server = MetricsServer(
                metrics, settings.metrics_listen, "MCP_GATEWAY_METRICS_LISTEN", readiness.check_threadsafe
            )
    except ConfigError as e:
        print(f"mcp-gateway: {e}", file=sys.stderr)
        return 2
    configure(log_level, log_format)
    if settings.grpc_uds and settings.http_uds:
        # Not an error: ADR-044's rollout adds the gRPC variable beside the existing one. Said
        # once, so that nobody believes the HTTP/JSON socket is in use.
        logging.getLogger("mcp_gateway").warning(
            "both MCP_RUST_GRPC_UDS and MCP_RUST_UDS are set: gRPC mode; MCP_RUST_UDS is not used"
        )
    # Public connections, plus the pool to the runtime (HTTP/JSON) or to the upstreams (Python
    # baseline), plus files.
    pool = 0 if settings.mode is Mode.GRPC else max(1024, settings.max_concurrent_requests)
    _raise_open_files_limit(settings.max_connections + pool + 256)
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_level": log_level,
        # The format is _logging's (configured above), for uvicorn's lines too.
        "log_config": None,
        "server_header": False,
        "access_log": args.access_log,
        "lifespan": "on",
        # After the drain: what calls in progress get before uvicorn cancels them (it would
        # wait for them without end).
        "timeout_graceful_shutdown": settings.shutdown_grace_s,
        "limits": ListenerLimits(
            max_header_bytes=settings.max_header_bytes,
            header_timeout_s=settings.header_timeout_s,
            max_connections=settings.max_connections,
        ),
    }
    if args.workers > 1:
        # Worker processes build their own app from the environment (uvicorn needs an import
        # string to start several); they share one listening socket bound here, and the kernel
        # spreads connections over them.
        env["MCP_GATEWAY_LOG_LEVEL"], env["MCP_GATEWAY_LOG_FORMAT"] = log_level, log_format
        os.environ.update(env)
        if tracing is not None:
            tracing.shutdown()  # each worker has its own (app_from_env)
        from uvicorn.supervisors import Multiprocess

        config = PublicConfig(
            "mcp_gateway.__main__:app_from_env", factory=True, workers=args.workers, **options
        )
        Multiprocess(config, sockets=[_tcp_listener(config.bind_socket())]).run()
        return 0
    app = create_app(settings, backend, metrics=metrics, tracing=tracing, readiness=readiness)
    server = DrainingServer(PublicConfig(app, **options), readiness, settings.drain_s)
    if metrics_server is not None:
        metrics_server.start()
        logging.getLogger("mcp_gateway").info("metrics on http://%s/metrics", metrics_server.address)
    try:
        server.run()
    finally:
        if metrics_server is not None:
            metrics_server.close()
    return 0 if server.started else STARTUP_FAILURE


def _raise_open_files_limit(needed: int) -> None:
    """Raise the soft limit of open files to ``needed`` (at most the hard limit).

    The connection cap protects nothing if the process runs out of descriptors first: a
    common soft limit is 1024, below the default cap plus the runtime pool.
    """
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    if target < needed:
        logging.getLogger("mcp_gateway").warning(
            "open files limit %d is below the %d the connection limits need; lower "
            "MCP_GATEWAY_MAX_CONNECTIONS or raise the hard limit",
            target,
            needed,
        )


def _tcp_listener(sock: socket.socket) -> socket.socket:
    """The listening socket ``sock`` re-wrapped so that it (and every accepted socket) says TCP.

    With ``--workers N`` uvicorn binds the listener itself with ``proto`` 0; accepted sockets
    inherit it and asyncio then leaves Nagle's algorithm on (it sets ``TCP_NODELAY`` only when
    ``proto`` is ``IPPROTO_TCP``), so every keep-alive request after the first waits about
    40 ms for the peer's delayed ACK (uvicorn issue #3149; measured here at 44 ms per request).
    """
    if sock.family in (socket.AF_INET, socket.AF_INET6) and sock.proto == 0:
        return socket.socket(sock.family, sock.type, socket.IPPROTO_TCP, fileno=sock.detach())
    return sock


def app_from_env() -> object:
    """The gateway app built from ``os.environ`` (the factory ``serve --workers N`` gives uvicorn).

    Raises:
        ConfigError: when the environment's settings are invalid.
    """
    from mcp_gateway._app import create_app
    from mcp_gateway._logging import configure, level_and_format
    from mcp_gateway._settings import Settings
    from mcp_gateway._telemetry import tracing_from_env

    env = dict(os.environ)
    configure(*level_and_format(None, env, "MCP_GATEWAY"))
    settings = Settings.from_env(env)
    mode = {"mcp.gateway.mode": settings.mode.value}
    return create_app(settings, tracing=tracing_from_env("mcp-gateway", env, mode))


def _token(args: argparse.Namespace) -> int:
    from mcp_gateway._auth import mint_token

    secret = args.secret or os.environ.get("JWT_SECRET_KEY", "")
    if not secret:
        print("mcp-gateway token: set JWT_SECRET_KEY or pass --secret", file=sys.stderr)
        return 2
    teams: list[str] | None = args.team
    if args.public_only:
        teams = []
    print(
        mint_token(
            secret,
            args.sub,
            teams=teams,
            is_admin=args.admin,
            scopes=args.scope or ["tools.execute"],
            ttl_s=args.ttl_s,
        )
    )
    return 0


def _stack(args: argparse.Namespace) -> int:
    import secrets
    import signal
    import time

    from mcp_gateway._auth import mint_token
    from mcp_gateway.testing import log_tail, stack

    secret = os.environ.get("JWT_SECRET_KEY") or secrets.token_urlsafe(32)
    # SIGTERM (make interrupted, a supervisor) stops the stack like Ctrl-C does.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    # SIGINT stops the stack even when this process was started with SIGINT ignored (a
    # background job of a non-interactive shell inherits it ignored, and Python then installs no
    # handler of its own).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    # A parent that goes away (SIGTERM to `make`: GNU make passes SIGTERM to the recipe's shell,
    # which dies; make killed outright) stops the stack too: the parent's pid changes when this
    # process is reparented. SIGINT to `make` alone reaches nobody: make passes SIGINT on to no
    # child (a terminal's Ctrl-C signals the whole group) and waits for the recipe (README).
    parent = os.getppid()
    if args.catalog is not None:
        # Checked before anything starts: no process, no log directory for a mistyped path.
        try:
            Path(args.catalog).read_bytes()
        except OSError as e:
            print(f"mcp-gateway stack: cannot read catalog {args.catalog}: {e.strerror}", file=sys.stderr)
            return 2
    try:
        with stack(args.mode, args.port, secret, catalog=args.catalog) as running:
            token = mint_token(secret, "alice@example.com", teams=["alpha"])
            admin = mint_token(secret, "admin@example.com", is_admin=True)
            print(f"mode:      {running.mode}")
            if args.catalog is not None:
                print(f"catalog:   {args.catalog}")
            print(f"MCP URL:   {running.url}")
            print(f"logs:      {running.workdir}")
            pids = ", ".join(f"{name} {pid}" for pid, (name, _) in running.names.items())
            print(f"processes: {pids}")
            if running.core_http_uds:
                print(f"core:      {running.core_http_uds}   (core-admin --http-uds)")
            print(f"token:     {token}   (alice@example.com, team alpha)")
            print(f"admin:     {admin}   (admin@example.com, unrestricted)")
            print("header:    Authorization: Bearer <token>     Ctrl-C stops the stack.", flush=True)
            while (exited := running.exited()) is None:
                if os.getppid() != parent:
                    print("mcp-gateway stack: the parent process is gone; stopping", file=sys.stderr)
                    return 0
                time.sleep(0.5)
            name, status, log = exited
            running.keep_workdir = True
            print(
                f"mcp-gateway stack: the {name} exited with status {status}; stopping the stack "
                f"(logs kept in {running.workdir})\n{log_tail(log)}",
                file=sys.stderr,
            )
            return 1
    except KeyboardInterrupt:
        return 0
    except RuntimeError as e:
        print(f"mcp-gateway stack: {e}", file=sys.stderr)
        return 1


def _core(args: argparse.Namespace) -> int:
    from mcp_gateway._errors import ConfigError
    from mcp_gateway._logging import configure, level_and_format
    from mcp_gateway._telemetry import tracing_from_env
    from mcp_gateway.core.server import CoreSettings, run

    try:
        level, fmt = level_and_format(args.log_level, os.environ, "MCP_CORE", args.log_format)
        settings = CoreSettings.from_env(
            grpc_uds=args.grpc_uds,
            http_uds=args.http_uds,
            plugins=args.plugins,
            metrics_listen=args.metrics_listen,
            drain_s=args.drain_s,
        )
        tracing = tracing_from_env("mcp-core", os.environ)
    except ConfigError as e:
        print(f"mcp-gateway core: {e}", file=sys.stderr)
        return 2
    configure(level, fmt)
    return run(settings, tracing)


def _core_admin(args: argparse.Namespace) -> int:
    import json

    from mcp_gateway.core.admin import AdminError, request
    from mcp_gateway.core.policy import token_sha256

    path = args.http_uds or os.environ.get("MCP_CORE_HTTP_UDS", "")
    if not path:
        print("mcp-gateway core-admin: give --http-uds (or MCP_CORE_HTTP_UDS)", file=sys.stderr)
        return 2
    try:
        if args.action == "stats":
            answer = request(path, "GET", "/admin/stats")
        else:
            body: dict[str, Any]
            if args.token:
                token = args.token.removeprefix("Bearer ").strip()
                body = {"tokenSha256": token_sha256(token)}
            elif args.token_sha256:
                body = {"tokenSha256": args.token_sha256}
            elif args.subject:
                body = {"subjectEmail": args.subject}
            else:
                body = {"all": True}
            answer = request(path, "POST", "/admin/revoke", body)
    except AdminError as e:
        print(f"mcp-gateway core-admin: {e}", file=sys.stderr)
        return 1
    print(json.dumps(answer))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit status."""
    parser = argparse.ArgumentParser(prog="python -m mcp_gateway", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the gateway (mode from MCP_RUST_GRPC_UDS / MCP_RUST_UDS)")
    serve.add_argument("--host", help="listen address (default MCP_GATEWAY_HOST or 127.0.0.1)")
    serve.add_argument("--port", type=int, help="listen port (default MCP_GATEWAY_PORT or 4444)")
    serve.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        help="log level (default MCP_GATEWAY_LOG_LEVEL or info); info logs one line per request",
    )
    serve.add_argument("--access-log", action="store_true", help="uvicorn's access log line too")
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        help="uvicorn worker processes sharing the port (default 1); in the socket modes "
        "sessions live in the runtime, so any worker serves any session",
    )
    serve.set_defaults(func=_serve)

    token = commands.add_parser("token", help="mint a bearer token for local use")
    token.add_argument("--sub", required=True, help="subject email, e.g. alice@example.com")
    token.add_argument("--team", action="append", help="team membership (repeatable); none: no teams claim")
    token.add_argument("--public-only", action="store_true", help="teams claim [] (public entries only)")
    token.add_argument("--admin", action="store_true", help="platform administrator")
    token.add_argument(
        "--scope", action="append", help="permission scope (repeatable; default tools.execute)"
    )
    token.add_argument("--ttl-s", type=int, default=7 * 24 * 3600, help="lifetime in seconds (0: no expiry)")
    token.add_argument("--secret", help="HS256 key (default JWT_SECRET_KEY)")
    token.set_defaults(func=_token)

    run = commands.add_parser("stack", help="bring up fixture upstream, runtime and gateway (make run)")
    run.add_argument("--mode", choices=["grpc", "http", "python", "edge", "edge-http"], default="grpc")
    run.add_argument("--port", type=int, default=4444)
    run.add_argument(
        "--catalog",
        type=Path,
        help="your catalog file (default: the fixture's); an upstream with "
        'url = { env = "MCP_FIXTURE_URL" } is the fixture, started then',
    )
    run.set_defaults(func=_stack)

    core = commands.add_parser("core", help="serve the Core SPI of edge mode on Unix sockets")
    core.add_argument("--grpc-uds", help="gRPC socket path (default MCP_CORE_GRPC_UDS)")
    core.add_argument("--http-uds", help="HTTP/JSON socket path (default MCP_CORE_HTTP_UDS)")
    core.add_argument(
        "--plugins", help="plugin configuration, JSON (default MCP_CORE_PLUGINS_FILE; none: no hooks)"
    )
    core.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        help="log level (default MCP_CORE_LOG_LEVEL or info); info logs one line per call",
    )
    core.add_argument(
        "--log-format", choices=["text", "json"], help="log format (default MCP_CORE_LOG_FORMAT or text)"
    )
    core.add_argument(
        "--metrics-listen",
        help="host:port of /metrics, /health and /ready (default MCP_CORE_METRICS_LISTEN; none: off)",
    )
    core.add_argument(
        "--drain-s",
        type=float,
        help="seconds not ready after SIGTERM before the sockets close (default MCP_CORE_DRAIN_S or 0)",
    )
    core.set_defaults(func=_core)

    admin = commands.add_parser("core-admin", help="revoke credentials or read counters of a running core")
    admin.add_argument("--http-uds", help="the core's HTTP/JSON socket (default MCP_CORE_HTTP_UDS)")
    actions = admin.add_subparsers(dest="action", required=True)
    revoke = actions.add_parser("revoke", help="revoke a token, a subject's tokens, or every cached caller")
    target = revoke.add_mutually_exclusive_group(required=True)
    target.add_argument("--token", help="the token itself (hashed before it is sent)")
    target.add_argument("--token-sha256", help="the lower-case hex SHA-256 of the token")
    target.add_argument("--subject", help="every token of this subject (issued up to now)")
    target.add_argument("--all", action="store_true", help="every cached caller (nothing refused)")
    actions.add_parser("stats", help="generation, open watchers, hooks, call record totals")
    admin.set_defaults(func=_core_admin)

    args = parser.parse_args(argv)
    status: int = args.func(args)
    return status


if __name__ == "__main__":
    sys.exit(main())
