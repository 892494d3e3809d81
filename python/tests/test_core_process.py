"""The core as a process: start-up errors, socket files, signals (``python -m mcp_gateway core``).

Each test starts its own core in a short temporary directory and always stops it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import grpc
import grpc.aio
import httpx
import pytest

from mcp_gateway._proto.mcp.core.v1 import core_pb2 as pb
from mcp_gateway._proto.mcp.core.v1 import core_pb2_grpc as pb_grpc
from mcp_gateway.testing import start_core, stop

SECRET = secrets.token_urlsafe(32)
ENV = {"JWT_SECRET_KEY": SECRET}
CHANNEL_OPTIONS = [("grpc.default_authority", "localhost"), ("grpc.enable_http_proxy", 0)]


@pytest.fixture
def sockets() -> Iterator[Path]:
    # Unix socket paths must stay under ~100 bytes: a short directory under /tmp.
    path = Path(tempfile.mkdtemp(prefix="corep-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def run_core(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the core expecting it to exit on its own (a start-up error)."""
    return subprocess.run(
        [sys.executable, "-m", "mcp_gateway", "core", *args],
        env={**os.environ, **(ENV if env is None else env)},
        capture_output=True,
        text=True,
        timeout=60,
    )


@contextlib.contextmanager
def running(
    directory: Path, env: dict[str, str] | None = None, **kw: object
) -> Iterator[subprocess.Popen[bytes]]:
    process = start_core(
        http_uds=str(directory / "h.sock"),
        grpc_uds=str(directory / "g.sock"),
        env={**ENV, **(env or {})},
        log=directory / "core.log",
        **kw,  # type: ignore[arg-type]
    )
    try:
        yield process
    finally:
        stop(process)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_a_signal_ends_the_streams_and_removes_the_sockets(sockets: Path, sig: signal.Signals) -> None:
    with running(sockets) as process:
        h, g = sockets / "h.sock", sockets / "g.sock"
        for path in (h, g):
            assert stat.S_ISSOCK(path.lstat().st_mode)
            assert stat.S_IMODE(path.lstat().st_mode) == 0o600, oct(path.lstat().st_mode)
        channel = grpc.aio.insecure_channel(f"unix:{g}", options=CHANNEL_OPTIONS)
        transport = httpx.AsyncHTTPTransport(uds=str(h))
        async with httpx.AsyncClient(
            transport=transport, base_url="http://core", timeout=httpx.Timeout(10.0, read=None)
        ) as http:
            call = pb_grpc.AuthPolicyServiceStub(channel).WatchPolicy(pb.WatchPolicyRequest(watcher="t"))
            assert (await asyncio.wait_for(call.read(), 10)).HasField("snapshot")
            async with http.stream("GET", "/v1/watch-policy") as stream:
                lines = stream.aiter_lines()
                assert "snapshot" in json.loads(await asyncio.wait_for(anext(lines), 10))
                process.send_signal(sig)
                # Both streams end (not hang) once the core stops.
                with contextlib.suppress(StopAsyncIteration, httpx.HTTPError):
                    while True:
                        await asyncio.wait_for(anext(lines), 10)
            # The gRPC stream ends with OK, not a cancelled call: the runtime tells an orderly
            # end from a crash.
            assert await asyncio.wait_for(call.read(), 10) is grpc.aio.EOF
            assert await call.code() is grpc.StatusCode.OK
        await channel.close()
        assert await asyncio.to_thread(process.wait, 10) == 0
        assert not h.exists()
        assert not g.exists()
        assert (sockets / "core.log").exists()


async def test_an_idle_http_watch_gets_keepalive_lines_and_still_its_events(sockets: Path) -> None:
    with running(sockets, env={"MCP_CORE_WATCH_KEEPALIVE_S": "0.2"}):
        transport = httpx.AsyncHTTPTransport(uds=str(sockets / "h.sock"))
        async with (
            httpx.AsyncClient(
                transport=transport, base_url="http://core", timeout=httpx.Timeout(10.0, read=None)
            ) as http,
            http.stream("GET", "/v1/watch-policy", params={"watcher": "idle"}) as stream,
        ):
            lines = stream.aiter_lines()
            first = json.loads(await asyncio.wait_for(anext(lines), 10))
            # Three keep-alives in a row: the stream's event source survives each timeout.
            for _ in range(3):
                assert await asyncio.wait_for(anext(lines), 10) == ""
            r = await http.post("/admin/revoke", json={"all": True})
            assert r.status_code == 200
            line = ""
            while not line:
                line = await asyncio.wait_for(anext(lines), 10)
            assert json.loads(line) == {
                "generation": first["generation"] + 1,
                "revocation": {"all": True},
            }


def test_a_stale_socket_file_is_replaced(sockets: Path) -> None:
    stale = sockets / "h.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(stale))
    s.close()  # the file stays, nothing listens
    with running(sockets):
        assert (
            httpx.Client(transport=httpx.HTTPTransport(uds=str(stale))).get("http://core/health").status_code
            == 200
        )


def test_a_live_socket_is_refused_and_left_alone(sockets: Path) -> None:
    live = sockets / "h.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(live))
    listener.listen(1)
    try:
        r = run_core("--http-uds", str(live), "--grpc-uds", str(sockets / "g.sock"))
        assert r.returncode == 2, r.stderr
        assert "in use" in r.stderr
        assert live.exists()
        assert not (sockets / "g.sock").exists()
    finally:
        listener.close()


def test_a_file_that_is_not_a_socket_is_refused_and_kept(sockets: Path) -> None:
    path = sockets / "g.sock"
    path.write_text("keep me")
    r = run_core("--grpc-uds", str(path), "--http-uds", str(sockets / "h.sock"))
    assert r.returncode == 2, r.stderr
    assert "not a socket" in r.stderr
    assert path.read_text() == "keep me"
    assert not (sockets / "h.sock").exists(), "the socket it had bound first is removed again"


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (("--http-uds", "{d}/h.sock"), {}, "JWT_SECRET_KEY is not set"),
        (("--http-uds", "{d}/h.sock"), {"MCP_GATEWAY_AUTH_DISABLED": "0"}, "JWT_SECRET_KEY is not set"),
        (
            ("--http-uds", "{d}/h.sock"),
            {**ENV, "MCP_GATEWAY_AUTH_DISABLED": "yes"},
            "MCP_GATEWAY_AUTH_DISABLED",
        ),
        ((), ENV, "--grpc-uds and/or --http-uds"),
        (("--http-uds", "@abstract"), ENV, "abstract socket name"),
        (
            ("--http-uds", "{d}/h.sock"),
            {**ENV, "MCP_CORE_CACHE_MAX_AGE_MS": "-1"},
            "MCP_CORE_CACHE_MAX_AGE_MS",
        ),
        (
            ("--http-uds", "{d}/h.sock"),
            {**ENV, "MCP_CORE_WATCH_KEEPALIVE_S": "0"},
            "MCP_CORE_WATCH_KEEPALIVE_S",
        ),
        (("--http-uds", "{d}/h.sock", "--plugins", "{d}/missing.json"), ENV, "plugins file"),
        (("--http-uds", "{d}/h.sock", "--plugins", "{d}/bad.json"), ENV, "redact"),
    ],
)
def test_bad_settings_exit_2(sockets: Path, args: tuple[str, ...], env: dict[str, str], message: str) -> None:
    (sockets / "bad.json").write_text(json.dumps({"redact": "(unclosed"}))
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("JWT_SECRET_KEY", "MCP_CORE_", "MCP_GATEWAY_AUTH_DISABLED"))
    }
    r = subprocess.run(
        [sys.executable, "-m", "mcp_gateway", "core", *(a.format(d=sockets) for a in args)],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2, r.stderr
    assert message in r.stderr
    assert not (sockets / "h.sock").exists()


def test_the_admin_cli_reports_an_unreachable_core(sockets: Path) -> None:
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "mcp_gateway",
            "core-admin",
            "--http-uds",
            str(sockets / "none.sock"),
            "stats",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 1
    assert "core-admin" in r.stderr
