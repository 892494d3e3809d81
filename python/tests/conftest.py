"""Session-scoped real processes: the fixture upstream, the runtime, and one gateway per mode.

Everything runs on temporary sockets and ports under one temporary directory, whose process logs
are printed when a test fails (see ``pytest_runtest_makereport``). The runtime modes need the
binaries ``make python-binaries`` builds; without them those tests fail with the command to run.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import secrets
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from mcp_gateway import Backend, mint_token
from mcp_gateway.testing import (
    free_port,
    runtime_binary,
    start_fixture,
    start_gateway,
    start_runtime,
    stop,
    write_catalog,
)

MODES = ["python", "http", "http-httpx", "grpc"]
"""The gateway's modes: the Python baseline, HTTP/JSON with its default client (aiohttp), HTTP/JSON
with httpx (``MCP_RUST_HTTP_CLIENT=httpx``), gRPC."""
SOCKET_MODES = ["http", "http-httpx", "grpc"]
SECRET = secrets.token_urlsafe(32)
PROTOCOL = "2025-11-25"

# A raw `initialize` request body.
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 0,
    "method": "initialize",
    "params": {
        "protocolVersion": PROTOCOL,
        "capabilities": {},
        "clientInfo": {"name": "t", "version": "1"},
    },
}
ACCEPT = "application/json, text/event-stream"
# A message limit small enough to test 413 cheaply, large enough for the 1 MiB payload test.
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
# The session-scoped runtime serves the whole suite as a handful of subjects, and sessions idle
# for an hour by default: the per-subject session cap (256) would count every session the suite
# ever opened. The cap has tests of its own (the runtime's tests/it/limits.rs,
# test_baseline_sessions.py), so the shared runtime gets room for the suite.
RUNTIME_FLAGS = ("--max-message-bytes", str(MAX_MESSAGE_BYTES), "--max-sessions-per-subject", "100000")


@dataclass
class Gateway:
    """One running gateway and how to talk to it."""

    mode: str
    base: str
    secret: str = SECRET
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"{self.base}/mcp"

    def token(self, sub: str = "alice@example.com", **kw: Any) -> str:
        kw.setdefault("teams", ["alpha"])
        return mint_token(self.secret, sub, **kw)

    def headers(self, token: str | None, session: str | None = None, **extra: str) -> dict[str, str]:
        headers = {"accept": ACCEPT, "content-type": "application/json", **extra}
        if token:
            headers["authorization"] = f"Bearer {token}"
        if session:
            headers["mcp-session-id"] = session
            headers.setdefault("mcp-protocol-version", PROTOCOL)
        return headers

    @contextlib.asynccontextmanager
    async def client(
        self, token: str | None, path: str = "/mcp", mode: str = "legacy", **kw: Any
    ) -> AsyncIterator[Client]:
        """An official mcp SDK client over streamable HTTP.

        ``mode``: ``legacy`` (the ``initialize`` session) or a version of the sessionless era
        (``2026-07-28``).
        """
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with (
            httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30.0, read=60.0)) as http,
            Client(
                streamable_http_client(f"{self.base}{path}", http_client=http),
                mode=mode,
                cache=None,
                **kw,
            ) as client,
        ):
            yield client

    async def initialize(self, http: httpx.AsyncClient, token: str, path: str = "/mcp") -> str:
        """Raw initialize + initialized; returns the session id."""
        r = await http.post(f"{self.base}{path}", json=INITIALIZE, headers=self.headers(token))
        assert r.status_code == 200, r.text
        session = r.headers["mcp-session-id"]
        note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
        r = await http.post(f"{self.base}{path}", json=note, headers=self.headers(token, session))
        assert r.status_code == 202, r.text
        return session

    async def call_tool(self, http: httpx.AsyncClient, name: str, arguments: dict[str, Any]) -> str:
        """``tools/call`` of ``name`` in a new session of alice's; asserts a 200 and returns the body."""
        token = self.token()
        session = await self.initialize(http, token)
        call = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "tools/call",
            "params": {"name": name, "arguments": arguments},
        }
        r = await http.post(self.url, json=call, headers=self.headers(token, session))
        assert r.status_code == 200, f"{self.mode}: {r.text}"
        return r.text

    async def inflight(self, http: httpx.AsyncClient, token: str, session: str) -> int:
        """The fixture's count of its running ``sleep`` and ``progress`` calls (tool ``inflight``)."""
        call = {
            "jsonrpc": "2.0",
            "id": "inflight",
            "method": "tools/call",
            "params": {"name": "inflight", "arguments": {}},
        }
        r = await http.post(self.url, json=call, headers=self.headers(token, session))
        assert r.status_code == 200, r.text
        return int(r.json()["result"]["content"][0]["text"])


@pytest.fixture(scope="session")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Unix socket paths must stay under ~100 bytes: use a short directory.
    return tmp_path_factory.mktemp("stack", numbered=True)


@pytest.fixture(scope="session")
def fixture_url(workdir: Path) -> Iterator[str]:
    process, url = start_fixture(log=workdir / "fixture.log")
    try:
        yield url
    finally:
        stop(process)


@pytest.fixture(scope="session")
def catalog(workdir: Path, fixture_url: str) -> Path:
    return write_catalog(workdir / "catalog.toml", fixture_url)


@dataclass
class Runtime:
    """A running runtime and its sockets."""

    process: subprocess.Popen[bytes] | None
    http_uds: str
    grpc_uds: str
    catalog: Path
    log: Path

    def restart(self) -> None:
        stop(self.process)
        self.process = start_runtime(
            self.catalog, self.http_uds, self.grpc_uds, extra=RUNTIME_FLAGS, log=self.log
        )

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait()


def _socket_dir() -> Path:
    """Make a short directory for Unix sockets, removed when the test process exits.

    pytest's tmp_path can exceed the 107-byte socket path limit.
    """
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"mcpgw-{os.getpid()}-{secrets.token_hex(3)}"
    path.mkdir(parents=True, exist_ok=True)
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


class Runtimes:
    """Starts the session's runtime on first use (the Python-only tests never need it)."""

    def __init__(self, workdir: Path, catalog: Path) -> None:
        self._workdir = workdir
        self._catalog = catalog
        self._runtime: Runtime | None = None

    def get(self) -> Runtime:
        if self._runtime is None:
            binary = runtime_binary()
            if not binary.exists():
                pytest.fail(f"{binary} not built: run `cargo build -p mcp-runtime --features grpc-uds`")
            sockets = _socket_dir()
            rt = Runtime(
                None,
                str(sockets / "http.sock"),
                str(sockets / "grpc.sock"),
                self._catalog,
                self._workdir / "runtime.log",
            )
            rt.restart()
            self._runtime = rt
        return self._runtime

    def stop(self) -> None:
        if self._runtime is not None:
            stop(self._runtime.process)


@pytest.fixture(scope="session")
def runtimes(workdir: Path, catalog: Path) -> Iterator[Runtimes]:
    holder = Runtimes(workdir, catalog)
    try:
        yield holder
    finally:
        holder.stop()


def gateway_env(mode: str, catalog: Path, rt: Runtime | None) -> dict[str, str]:
    env = {
        "JWT_SECRET_KEY": SECRET,
        "MCP_RUNTIME_CATALOG": str(catalog),
        "MCP_RUNTIME_MAX_MESSAGE_BYTES": str(MAX_MESSAGE_BYTES),
        "MCP_GATEWAY_REQUEST_TIMEOUT_S": "30",
    }
    if mode != "python":
        assert rt is not None
        env["MCP_RUST_UDS"] = rt.http_uds
        if mode == "http-httpx":
            env["MCP_RUST_HTTP_CLIENT"] = "httpx"
        if mode == "grpc":
            # Both set: gRPC must win.
            env["MCP_RUST_GRPC_UDS"] = rt.grpc_uds
    return env


def socket_backend(mode: str, rt: Runtime, request_timeout_s: float = 30.0, **kwargs: Any) -> Backend:
    """The gateway's backend of socket mode ``mode`` (not started) on ``rt``'s socket.

    For tests that drive a backend directly; ``kwargs`` go to its constructor.
    """
    if mode == "grpc":
        from mcp_gateway._grpc_backend import GrpcUdsBackend

        return GrpcUdsBackend(rt.grpc_uds, request_timeout_s, **kwargs)
    if mode == "http-httpx":
        from mcp_gateway._http_backend import HttpUdsBackend

        return HttpUdsBackend(rt.http_uds, request_timeout_s, **kwargs)
    from mcp_gateway._aiohttp_backend import AiohttpUdsBackend

    return AiohttpUdsBackend(rt.http_uds, request_timeout_s, **kwargs)


@pytest.fixture(scope="session")
def gateways(workdir: Path, catalog: Path, runtimes: Runtimes) -> Iterator[dict[str, Gateway]]:
    """Gateways are started on first use, one per mode, and all stopped at the end."""
    started: dict[str, Gateway] = {}

    class Lazy(dict[str, Gateway]):
        def __missing__(self, mode: str) -> Gateway:
            port = free_port()
            env = gateway_env(mode, catalog, runtimes.get() if mode != "python" else None)
            for key in ("MCP_RUST_UDS", "MCP_RUST_GRPC_UDS"):
                os.environ.pop(key, None)
            process = start_gateway(env, port, log=workdir / f"gateway-{mode}.log")
            gw = Gateway(mode, f"http://127.0.0.1:{port}", processes=[process])
            started[mode] = gw
            self[mode] = gw
            return gw

    try:
        yield Lazy()
    finally:
        for gw in started.values():
            for process in gw.processes:
                stop(process)


@pytest.fixture(params=MODES)
def gw(request: pytest.FixtureRequest, gateways: dict[str, Gateway]) -> Gateway:
    """The gateway of each mode in turn (the test runs once per mode)."""
    mode: str = request.param
    return gateways[mode]


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30.0) as client:
        yield client


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.failed and "workdir" in getattr(item, "funcargs", {}):
        workdir: Path = item.funcargs["workdir"]
        for log in sorted(workdir.glob("*.log")):
            tail = log.read_text(errors="replace").splitlines()[-40:]
            report.sections.append((f"log {log.name}", "\n".join(tail)))


def serve_catalog(
    catalog: Path, workdir: Path, name: str, processes: list[subprocess.Popen[bytes]]
) -> dict[str, Gateway]:
    """A runtime on ``catalog`` and one gateway per mode of ``MODES``.

    The runtime's sockets are ``<name>-http.sock`` and ``<name>-grpc.sock``, its log
    ``runtime.log`` in ``workdir``; the Python baseline serves the catalog itself; gateway logs
    are ``gateway-<mode>.log``. Every process started is appended to ``processes``, also when
    a later one fails to start: the caller stops them, last first.
    """
    sockets = _socket_dir()
    http_uds, grpc_uds = str(sockets / f"{name}-http.sock"), str(sockets / f"{name}-grpc.sock")
    log = workdir / "runtime.log"
    process = start_runtime(catalog, http_uds, grpc_uds, extra=RUNTIME_FLAGS, log=log)
    processes.append(process)
    rt = Runtime(process, http_uds, grpc_uds, catalog, log)
    gateways = {}
    for mode in MODES:
        port = free_port()
        env = gateway_env(mode, catalog, rt if mode != "python" else None)
        processes.append(start_gateway(env, port, log=workdir / f"gateway-{mode}.log"))
        gateways[mode] = Gateway(mode, f"http://127.0.0.1:{port}", secret=SECRET)
    return gateways


@pytest.fixture(params=SOCKET_MODES)
def own_stack(
    request: pytest.FixtureRequest, workdir: Path, catalog: Path
) -> Iterator[tuple[Gateway, Runtime]]:
    """A runtime and a gateway of their own in each socket mode, for tests that kill them."""
    mode: str = request.param
    sockets = _socket_dir()
    log = workdir / f"runtime-own-{mode}-{free_port()}.log"
    rt = Runtime(None, str(sockets / "http.sock"), str(sockets / "grpc.sock"), catalog, log)
    rt.process = start_runtime(catalog, rt.http_uds, rt.grpc_uds, extra=RUNTIME_FLAGS, log=log)
    port = free_port()
    process = start_gateway(
        gateway_env(mode, catalog, rt), port, log=workdir / f"gateway-own-{mode}-{port}.log"
    )
    gw = Gateway(mode, f"http://127.0.0.1:{port}", SECRET, [process])
    try:
        yield gw, rt
    finally:
        stop(process)
        stop(rt.process)
