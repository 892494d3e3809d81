"""Test and demo helpers: bring up the whole chain on one machine (fixture upstream, runtime, gateway).

Not part of the gateway: nothing in the gateway imports this module. It is public so that the
tests (``python/tests``), ``make run`` (``python -m mcp_gateway stack``) and the conformance
runner (``conformance/run.py``) share one way to start the real processes. Every helper starts a
real process on temporary sockets and ports and returns it; the caller stops it with
:func:`stop`. Binaries come from ``$MCP_BIN_DIR`` (``make python-binaries`` copies them there)
or cargo's ``target/debug``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx

__all__ = [
    "EDGE_MODES",
    "FIXTURE_URL_VARIABLE",
    "RedisServer",
    "Stack",
    "fixture_binary",
    "free_port",
    "names_fixture",
    "repo_root",
    "rmcp_client_binary",
    "runtime_binary",
    "stack",
    "start_core",
    "start_edge",
    "start_edge_runtime",
    "start_fixture",
    "start_gateway",
    "start_redis",
    "start_runtime",
    "stop",
    "write_catalog",
]


def repo_root() -> Path:
    """The repository root (``MCP_REPO_ROOT``, else three levels above this module's package)."""
    env = os.environ.get("MCP_REPO_ROOT")
    return Path(env) if env else Path(__file__).resolve().parents[3]


def _binary(name: str) -> Path:
    """``$MCP_BIN_DIR/name`` when set (``make python-binaries`` copies them there), else cargo's."""
    if bin_dir := os.environ.get("MCP_BIN_DIR"):
        return Path(bin_dir) / name
    target = Path(os.environ.get("CARGO_TARGET_DIR", repo_root() / "target"))
    return target / "debug" / name


def runtime_binary() -> Path:
    """Path of the cargo-built ``mcp-runtime`` (``cargo build -p mcp-runtime --features grpc-uds``)."""
    return _binary("mcp-runtime")


def fixture_binary() -> Path:
    """Path of the cargo-built ``mcp-fixture-server``."""
    return _binary("mcp-fixture-server")


def rmcp_client_binary() -> Path:
    """Path of the cargo-built ``mcp-rmcp-client`` (rmcp's client; ``cargo build -p mcp-rmcp-client``)."""
    return _binary("mcp-rmcp-client")


def free_port() -> int:
    """A TCP port number on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def stop(process: subprocess.Popen[bytes] | None, timeout_s: float = 5.0) -> None:
    """SIGTERM, wait up to ``timeout_s`` seconds, then SIGKILL. Safe on ended processes."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def start_fixture(*args: str, log: Path | None = None) -> tuple[subprocess.Popen[bytes], str]:
    """Start ``mcp-fixture-server --listen 127.0.0.1:0``.

    Returns:
        The process and its MCP endpoint URL (from its ``MCP_FIXTURE_URL=`` stdout line).

    Raises:
        RuntimeError: The binary is missing or did not print its URL within 30 s.
    """
    binary = fixture_binary()
    if not binary.exists():
        raise RuntimeError(f"{binary} not built: run `cargo build -p mcp-fixture-server`")
    stderr = log.open("ab") if log else subprocess.DEVNULL
    process = subprocess.Popen(
        [str(binary), "--listen", "127.0.0.1:0", *args], stdout=subprocess.PIPE, stderr=stderr
    )
    assert process.stdout is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = process.stdout.readline().decode().strip()
        if line.startswith("MCP_FIXTURE_URL="):
            return process, line.split("=", 1)[1]
        if not line and process.poll() is not None:
            break
    stop(process)
    raise RuntimeError("mcp-fixture-server did not print MCP_FIXTURE_URL")


def write_catalog(path: Path, fixture_url: str, *, teams: bool = True) -> Path:
    """Write the catalog of the tests and ``make run``.

    One public upstream (no prefix), and with ``teams`` two team upstreams on the same fixture
    server (``alpha_`` for team alpha, ``beta_`` for team beta); a virtual server ``echo-only``
    exposing ``echo``, the readme resource and the ``greet`` prompt.
    """
    text = f"""
[[upstreams]]
id = "fixture"
url = "{fixture_url}"
"""
    if teams:
        for team in ("alpha", "beta"):
            text += f"""
[[upstreams]]
id = "{team}"
url = "{fixture_url}"
prefix = "{team}_"
visibility = "team"
team = "{team}"
"""
    text += """
[[servers]]
id = "echo-only"
tools = ["echo"]
resources = ["fixture://readme"]
prompts = ["greet"]
"""
    path.write_text(text)
    return path


def _wait_uds_health(
    path: str, process: subprocess.Popen[bytes], timeout_s: float, name: str = "mcp-runtime"
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with status {process.returncode}")
        if os.path.exists(path):
            try:
                with httpx.Client(transport=httpx.HTTPTransport(uds=path), timeout=1.0) as client:
                    if client.get("http://runtime/health").status_code == 200:
                        return
            except httpx.HTTPError:
                pass
        time.sleep(0.05)
    raise RuntimeError(f"{name} did not serve on {path} within {timeout_s} s")


def start_runtime(
    catalog: Path,
    http_uds: str,
    grpc_uds: str | None,
    *,
    extra: tuple[str, ...] = (),
    log: Path | None = None,
    timeout_s: float = 30.0,
) -> subprocess.Popen[bytes]:
    """Start ``mcp-runtime`` and wait until ``GET /health`` answers on its HTTP socket.

    Args:
        catalog: The catalog file.
        http_uds: Path of its HTTP/JSON socket.
        grpc_uds: Path of its gRPC socket, ``None`` for none.
        extra: More command-line flags.
        log: File its stdout and stderr are appended to (default: discarded).
        timeout_s: How long to wait for it to serve, in seconds.

    Raises:
        RuntimeError: Binary missing, early exit, or not serving within ``timeout_s`` seconds.
    """
    binary = runtime_binary()
    if not binary.exists():
        raise RuntimeError(f"{binary} not built: run `cargo build -p mcp-runtime --features grpc-uds`")
    args = [str(binary), "--catalog", str(catalog), "--http-uds", http_uds]
    if grpc_uds:
        args += ["--grpc-uds", grpc_uds]
    stderr = log.open("ab") if log else subprocess.DEVNULL
    process = subprocess.Popen([*args, *extra], stdout=stderr, stderr=stderr)
    try:
        _wait_uds_health(http_uds, process, timeout_s)
    except BaseException:
        stop(process)
        raise
    return process


class RedisServer:
    """A ``redis-server`` of the tests on a Unix socket in a temporary directory of its own.

    No persistence (``--save ""``, no append-only file), no TCP port. :meth:`stop` kills it
    (every connection to it is cut, as when Redis goes away), :meth:`start` starts it again on
    the same socket with nothing stored, :meth:`close` stops it and removes its directory. A
    context manager: leaving the ``with`` block closes it, however the block ends.

    Attributes:
        directory: Its temporary directory (socket, log).
        process: The running server, ``None`` while stopped.
    """

    def __init__(self, directory: Path, timeout_s: float = 10.0) -> None:
        self.directory = directory
        self.process: subprocess.Popen[bytes] | None = None
        self._timeout_s = timeout_s

    @property
    def socket(self) -> Path:
        """Path of its Unix socket."""
        return self.directory / "redis.sock"

    @property
    def url(self) -> str:
        """The runtime's ``--state-url`` for it: ``unix:///path/redis.sock``."""
        return f"unix://{self.socket}"

    def start(self) -> None:
        """Start the server (again) on :attr:`socket`, empty, and wait until it answers PING.

        Raises:
            RuntimeError: ``redis-server`` is not installed (Debian package ``redis-server``),
                exited, or did not answer within the timeout given to :func:`start_redis`.
        """
        self.stop()
        self.socket.unlink(missing_ok=True)
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server not found: install the Debian package `redis-server`")
        log = (self.directory / "redis.log").open("ab")
        try:
            self.process = subprocess.Popen(
                [
                    *(binary, "--port", "0", "--save", "", "--appendonly", "no"),
                    *(
                        "--unixsocket",
                        str(self.socket),
                        "--unixsocketperm",
                        "700",
                        "--dir",
                        str(self.directory),
                    ),
                ],
                stdout=log,
                stderr=log,
            )
        finally:
            log.close()
        deadline = time.monotonic() + self._timeout_s
        while not self.ping():
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with status {self.process.returncode}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not answer on {self.socket} within {self._timeout_s} s")
            time.sleep(0.02)

    def ping(self) -> bool:
        """Whether the server answers ``PING`` with ``+PONG`` on its socket within 1 s."""
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(1.0)
                s.connect(str(self.socket))
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def command(self, *args: str) -> bytes:
        """Send one command (RESP array of bulk strings); returns the raw reply's first 64 KiB.

        Raises:
            OSError: The server is not reachable.
        """
        frame = f"*{len(args)}\r\n".encode() + b"".join(
            f"${len(a.encode())}\r\n".encode() + a.encode() + b"\r\n" for a in args
        )
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5.0)
            s.connect(str(self.socket))
            s.sendall(frame)
            return s.recv(65536)

    def stop(self) -> None:
        """Kill the server (SIGKILL: no goodbye to its clients). Safe when it is not running."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None

    def close(self) -> None:
        """Stop the server and remove its directory."""
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def start_redis(timeout_s: float = 10.0) -> RedisServer:
    """Start a :class:`RedisServer` in a new short temporary directory under ``/tmp``.

    Use it as a context manager (or call :meth:`RedisServer.close`) so that it always stops.

    Args:
        timeout_s: How long to wait for it to answer, in seconds.

    Raises:
        RuntimeError: As :meth:`RedisServer.start`; the directory is removed first.
    """
    # Unix socket paths must stay under ~100 bytes: a short directory.
    server = RedisServer(Path(tempfile.mkdtemp(prefix="redis-", dir="/tmp")), timeout_s)
    try:
        server.start()
    except BaseException:
        server.close()
        raise
    return server


def start_core(
    *,
    http_uds: str | None,
    grpc_uds: str | None,
    env: Mapping[str, str],
    plugins: Path | None = None,
    log: Path | None = None,
    timeout_s: float = 30.0,
) -> subprocess.Popen[bytes]:
    """Start the Python core (``python -m mcp_gateway core``) and wait until it serves.

    Ready means: ``GET /health`` answers 200 on the HTTP socket (when given) and the gRPC socket
    file exists (when given; grpc creates it when it binds, before the core logs that it serves).

    Args:
        http_uds: Path of its HTTP/JSON socket, or ``None``.
        grpc_uds: Path of its gRPC socket, or ``None``.
        env: Variables added to this process's environment (``JWT_SECRET_KEY``, ...).
        plugins: Its plugin configuration file (``--plugins``), or ``None`` for none.
        log: File its output is appended to (default: discarded).
        timeout_s: How long to wait for it to serve, in seconds.

    Raises:
        RuntimeError: Early exit or not serving within ``timeout_s`` seconds.
    """
    args = [sys.executable, "-m", "mcp_gateway", "core", "--log-level", "info"]
    if http_uds:
        args += ["--http-uds", http_uds]
    if grpc_uds:
        args += ["--grpc-uds", grpc_uds]
    if plugins is not None:
        args += ["--plugins", str(plugins)]
    stderr = log.open("ab") if log else subprocess.DEVNULL
    process = subprocess.Popen(args, env={**os.environ, **env}, stdout=stderr, stderr=stderr)
    try:
        deadline = time.monotonic() + timeout_s
        if http_uds:
            _wait_uds_health(http_uds, process, timeout_s, name="core")
        while grpc_uds and not os.path.exists(grpc_uds):
            if process.poll() is not None:
                raise RuntimeError(f"core exited with status {process.returncode}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"core did not serve on {grpc_uds} within {timeout_s} s")
            time.sleep(0.05)
    except BaseException:
        stop(process)
        raise
    return process


def start_gateway(
    env: Mapping[str, str], port: int, *, log: Path | None = None, timeout_s: float = 60.0
) -> subprocess.Popen[bytes]:
    """Start ``python -m mcp_gateway serve`` with ``env`` and wait until ``GET /health`` answers.

    Args:
        env: Variables added to this process's environment (``JWT_SECRET_KEY``, the sockets...).
        port: TCP port on 127.0.0.1.
        log: File its output is appended to (default: discarded).
        timeout_s: How long to wait for any answer from ``/health``, in seconds.

    Raises:
        RuntimeError: Early exit or no answer within ``timeout_s`` seconds.
    """
    stderr = log.open("ab") if log else subprocess.DEVNULL
    process = subprocess.Popen(
        [sys.executable, "-m", "mcp_gateway", "serve", "--port", str(port), "--log-level", "info"],
        env={**os.environ, **env},
        stdout=stderr,
        stderr=stderr,
    )
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"gateway exited with status {process.returncode}")
        try:
            r = httpx.get(f"http://127.0.0.1:{port}/health", timeout=1.0)
            # The gateway's own answer (200 or 503, a JSON object with its status), not another
            # server's on the same port; and the gateway still running (it exits when the port
            # turns out to be taken).
            if _is_gateway_health(r) and process.poll() is None:
                return process
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    stop(process)
    raise RuntimeError(f"gateway did not answer on port {port} within {timeout_s} s")


def _is_gateway_health(r: httpx.Response) -> bool:
    """Whether ``r`` is the gateway's ``GET /health`` answer: 200 or 503 with a JSON ``status``."""
    if r.status_code not in (200, 503):
        return False
    try:
        body = r.json()
    except ValueError:
        return False
    return isinstance(body, dict) and isinstance(body.get("status"), str)


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something listens on ``host:port`` already (a bind there fails)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


EDGE_MODES = ("edge", "edge-http")
"""The stack modes where the runtime serves the public endpoint itself and asks the core over the
Core SPI: ``edge`` on gRPC, ``edge-http`` on HTTP/JSON."""


@dataclass
class Stack:
    """A running chain of processes behind one public endpoint.

    Fixture upstream, runtime (unless mode ``python``) and gateway; in the edge modes fixture
    upstream, core and runtime (serving the public endpoint).

    Attributes:
        mode: ``grpc``, ``http``, ``python``, ``edge`` or ``edge-http``.
        url: The public MCP endpoint, ``http://127.0.0.1:PORT/mcp``.
        processes: Every process started, in start order.
        workdir: Sockets, catalog and logs.
        core_http_uds: The core's HTTP/JSON socket in the edge modes (its admin routes), else
            ``None``.
        names: Each process's name (``fixture``, ``runtime``, ``core``, ``gateway``) and log
            file, by pid.
        keep_workdir: Set it to keep a temporary ``workdir`` (and its logs) after the stack
            stops, e.g. when a process died and its log tells why.
    """

    mode: str
    url: str
    processes: list[subprocess.Popen[bytes]]
    workdir: Path
    core_http_uds: str | None = None
    names: dict[int, tuple[str, Path]] = field(default_factory=dict)
    keep_workdir: bool = False

    def add(self, name: str, process: subprocess.Popen[bytes], log: Path) -> None:
        """Record a started process with its name and log file."""
        self.processes.append(process)
        self.names[process.pid] = (name, log)

    def exited(self) -> tuple[str, int, Path] | None:
        """The first process that exited: its name, exit status and log file; ``None`` if none."""
        for process in self.processes:
            status = process.poll()
            if status is not None:
                name, log = self.names.get(process.pid, (f"pid {process.pid}", self.workdir))
                return name, status, log
        return None

    def stop(self) -> None:
        """Stop every process, the last started first."""
        for process in reversed(self.processes):
            stop(process)


def _wait_http_health(url: str, process: subprocess.Popen[bytes], timeout_s: float, name: str) -> None:
    """Wait until ``GET url`` answers 200 on TCP (``process`` still running)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with status {process.returncode}")
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{name} did not serve {url} within {timeout_s} s")


def start_edge_runtime(
    catalog: Path,
    http_uds: str,
    *,
    port: int,
    core_uds: str,
    core_transport: str,
    extra: tuple[str, ...] = (),
    log: Path | None = None,
    timeout_s: float = 30.0,
) -> subprocess.Popen[bytes]:
    """Start ``mcp-runtime`` in edge mode and wait until its public endpoint answers ``/health``.

    Args:
        catalog: The catalog file.
        http_uds: Path of its (internal) HTTP/JSON socket.
        port: The public endpoint's TCP port on 127.0.0.1 (``--public-listen``).
        core_uds: The core's socket (``--core-uds``).
        core_transport: ``grpc`` or ``http`` (``--core-transport``).
        extra: More command-line flags.
        log: File its stdout and stderr are appended to (default: discarded).
        timeout_s: How long to wait for it to serve, in seconds.

    Raises:
        RuntimeError: Binary missing, early exit, or not serving within ``timeout_s`` seconds.
    """
    flags = (
        "--public-listen",
        f"127.0.0.1:{port}",
        "--core-uds",
        core_uds,
        "--core-transport",
        core_transport,
        *extra,
    )
    process = start_runtime(catalog, http_uds, None, extra=flags, log=log, timeout_s=timeout_s)
    try:
        _wait_http_health(f"http://127.0.0.1:{port}/health", process, timeout_s, "mcp-runtime")
    except BaseException:
        stop(process)
        raise
    return process


def start_edge(
    mode: str,
    catalog: Path,
    sockets: Path,
    *,
    port: int,
    env: Mapping[str, str],
    plugins: Path | None = None,
    runtime_extra: tuple[str, ...] = (),
    logs: Path,
) -> tuple[subprocess.Popen[bytes], subprocess.Popen[bytes]]:
    """Start an edge mode: the core on both its sockets, then the runtime serving the public endpoint.

    Args:
        mode: ``edge`` (the runtime asks the core over gRPC) or ``edge-http`` (HTTP/JSON).
        catalog: The catalog file.
        sockets: A short directory for the sockets: ``core-http.sock`` (also the core's admin
            routes), ``core-grpc.sock``, ``runtime-http.sock``.
        port: The public endpoint's TCP port on 127.0.0.1.
        env: The core's added environment (``JWT_SECRET_KEY``, ...).
        plugins: The core's plugin file, or ``None`` for none.
        runtime_extra: More flags for the runtime.
        logs: Directory of ``core.log`` and ``runtime.log``.

    Returns:
        The core and the runtime processes, to stop in reverse order.

    Raises:
        RuntimeError: A process did not start or serve (the core is stopped again then).
    """
    core_http, core_grpc = str(sockets / "core-http.sock"), str(sockets / "core-grpc.sock")
    core = start_core(http_uds=core_http, grpc_uds=core_grpc, env=env, plugins=plugins, log=logs / "core.log")
    try:
        runtime = start_edge_runtime(
            catalog,
            str(sockets / "runtime-http.sock"),
            port=port,
            core_uds=core_grpc if mode == "edge" else core_http,
            core_transport="grpc" if mode == "edge" else "http",
            extra=runtime_extra,
            log=logs / "runtime.log",
        )
    except BaseException:
        stop(core)
        raise
    return core, runtime


@contextlib.contextmanager
def stack(
    mode: str,
    port: int,
    secret: str,
    workdir: Path | None = None,
    *,
    runtime_extra: tuple[str, ...] = (),
    catalog: Path | None = None,
) -> Iterator[Stack]:
    """Bring up the chain for ``mode``; stop it on exit.

    With ``catalog`` (the user's own, ``make run CATALOG=path``) the chain serves that file;
    the fixture server is started only when an upstream's ``url`` is
    ``{ env = "MCP_FIXTURE_URL" }`` (:data:`FIXTURE_URL_VARIABLE`), set to its URL for the
    runtime and the gateway. Without it, the fixture and the tests' catalog
    (:func:`write_catalog`).

    ``grpc``, ``http`` and ``python`` start the fixture, the runtime (not for ``python``) and the
    gateway in that mode. The edge modes (:data:`EDGE_MODES`) start the fixture, the core (both
    sockets: the runtime uses one, the admin routes are on the HTTP one) and the runtime serving
    the public endpoint on ``port``, asking the core over gRPC (``edge``) or HTTP/JSON
    (``edge-http``).

    Args:
        mode: ``grpc``, ``http``, ``python``, ``edge`` or ``edge-http``.
        port: The public endpoint's TCP port on 127.0.0.1.
        secret: ``JWT_SECRET_KEY`` of the gateway or the core.
        workdir: Where sockets, the catalog and the logs go; default a temporary directory
            removed on exit (kept when the caller sets :attr:`Stack.keep_workdir`).
        runtime_extra: More flags for the runtime (edge modes only).
        catalog: The catalog file to serve instead of the tests' one.

    Yields:
        The running chain.

    Raises:
        RuntimeError: ``port`` is in use, a binary is missing or a process did not start (see
            the start helpers).
    """
    if port_in_use(port):
        raise RuntimeError(f"port {port} on 127.0.0.1 is in use: choose another (PORT=N with make run)")
    with contextlib.ExitStack() as cleanup:
        temporary = workdir is None
        running = Stack(
            mode=mode,
            url=f"http://127.0.0.1:{port}/mcp",
            processes=[],
            workdir=Path(tempfile.mkdtemp(prefix="mcp-stack-")) if workdir is None else workdir,
        )

        def remove_workdir() -> None:
            if temporary and not running.keep_workdir:
                shutil.rmtree(running.workdir, ignore_errors=True)

        cleanup.callback(remove_workdir)
        cleanup.callback(running.stop)
        try:
            _start_stack(running, mode, port, secret, runtime_extra, catalog)
        except RuntimeError as e:
            running.keep_workdir = True
            raise RuntimeError(f"{e}\n{log_tail(running.workdir)}") from e
        yield running


FIXTURE_URL_VARIABLE = "MCP_FIXTURE_URL"
"""A catalog given to :func:`stack` names the fixture server as ``url = { env = "MCP_FIXTURE_URL" }``."""


def names_fixture(catalog: Path) -> bool:
    """Whether an upstream of ``catalog`` has ``url = { env = "MCP_FIXTURE_URL" }``.

    Raises:
        RuntimeError: The file cannot be read or is not TOML.
    """
    try:
        data = tomllib.loads(catalog.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise RuntimeError(f"catalog {catalog}: {e}") from e
    upstreams = data.get("upstreams", [])
    return isinstance(upstreams, list) and any(
        isinstance(u, dict) and u.get("url") == {"env": FIXTURE_URL_VARIABLE} for u in upstreams
    )


def _start_stack(
    running: Stack, mode: str, port: int, secret: str, runtime_extra: tuple[str, ...], catalog: Path | None
) -> None:
    """Start the processes of :func:`stack` into ``running``, in order."""
    workdir = running.workdir
    if catalog is None or names_fixture(catalog):
        fixture, fixture_url = start_fixture(log=workdir / "fixture.log")
        running.add("fixture", fixture, workdir / "fixture.log")
        # Inherited by the runtime and the gateway, which read it from the catalog.
        os.environ[FIXTURE_URL_VARIABLE] = fixture_url
        if catalog is None:
            catalog = write_catalog(workdir / "catalog.toml", fixture_url)
    assert catalog is not None
    env = {"JWT_SECRET_KEY": secret, "MCP_RUNTIME_CATALOG": str(catalog)}
    if mode in EDGE_MODES:
        core, runtime = start_edge(
            mode, catalog, workdir, port=port, env=env, runtime_extra=runtime_extra, logs=workdir
        )
        running.add("core", core, workdir / "core.log")
        running.add("runtime", runtime, workdir / "runtime.log")
        running.core_http_uds = str(workdir / "core-http.sock")
        return
    if mode != "python":
        http_uds, grpc_uds = str(workdir / "runtime-http.sock"), str(workdir / "runtime-grpc.sock")
        log = workdir / "runtime.log"
        running.add("runtime", start_runtime(catalog, http_uds, grpc_uds, log=log), log)
        if mode == "http":
            env["MCP_RUST_UDS"] = http_uds
        else:
            env["MCP_RUST_GRPC_UDS"] = grpc_uds
    running.add("gateway", start_gateway(env, port, log=workdir / "gateway.log"), workdir / "gateway.log")


def log_tail(where: Path, lines: int = 15) -> str:
    """The last ``lines`` lines of the log ``where`` (or, for a directory, of its newest ``*.log``).

    Returns:
        ``"last lines of PATH:"`` and the lines, or ``"logs in PATH"`` when there is no log.
    """
    log = where
    if where.is_dir():
        logs = sorted(where.glob("*.log"), key=lambda p: p.stat().st_mtime)
        if not logs:
            return f"logs in {where}"
        log = logs[-1]
    try:
        tail = log.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return f"logs in {where}"
    return "\n".join([f"last lines of {log}:", *tail])
