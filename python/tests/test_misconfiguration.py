"""Misconfiguration gets one clear line and a non-zero exit; a stack that cannot run says why.

The gateway's start-up checks (``serve``) and ``make run``'s ``stack`` command, each run as the
real process: a missing or invalid Python-baseline catalog and a missing ``JWT_SECRET_KEY`` are
one line on stderr and status 2 (no traceback); the stack refuses a port already in use before
starting anything, names the process that died with its exit status and keeps its logs, and
stops when the process that started it goes away (``make`` interrupted alone does not signal
its children).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mcp_gateway.testing import free_port, start_gateway, stop

SECRET = "misconfiguration-secret-0123456789abcdef"


def serve(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("MCP_", "JWT_"))}
    return subprocess.run(
        [sys.executable, "-m", "mcp_gateway", "serve", "--port", str(free_port())],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def one_line(out: subprocess.CompletedProcess[str]) -> str:
    assert out.returncode == 2, out
    assert "Traceback" not in out.stderr, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    return lines[0]


def test_a_missing_baseline_catalog_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "missing.toml"
    line = one_line(serve({"JWT_SECRET_KEY": SECRET, "MCP_RUNTIME_CATALOG": str(path)}))
    assert line == f"mcp-gateway: cannot read catalog {path}: [Errno 2] No such file or directory: '{path}'"


def test_an_invalid_baseline_catalog_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "catalog.toml"
    path.write_text("bogus = 1\n")
    line = one_line(serve({"JWT_SECRET_KEY": SECRET, "MCP_RUNTIME_CATALOG": str(path)}))
    assert line == "mcp-gateway: invalid catalog: unknown keys ['bogus']"


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("not a url", "has a `url` with no scheme: expected http:// or https://"),
        ("ftp://example.com/mcp", "has a `url` with scheme `ftp`: expected http:// or https://"),
        ("http://", "has a `url` with no host"),
        ("http://127.0.0.1:99999/mcp", "has a `url` that is not a URL (Port out of range 0-65535)"),
    ],
)
def test_a_bad_upstream_url_in_the_baseline_catalog_is_one_line(tmp_path: Path, url: str, words: str) -> None:
    path = tmp_path / "catalog.toml"
    path.write_text(f'[[upstreams]]\nid = "u"\nurl = "{url}"\n')
    line = one_line(serve({"JWT_SECRET_KEY": SECRET, "MCP_RUNTIME_CATALOG": str(path)}))
    assert line == f"mcp-gateway: invalid catalog: upstream `u` {words}"


def test_a_missing_secret_is_one_line(tmp_path: Path) -> None:
    line = one_line(serve({"MCP_RUST_UDS": str(tmp_path / "rt.sock")}))
    assert line == "mcp-gateway: JWT_SECRET_KEY is not set"


def test_an_unknown_http_client_is_one_line(tmp_path: Path) -> None:
    env = {"JWT_SECRET_KEY": SECRET, "MCP_RUST_UDS": str(tmp_path / "rt.sock")}
    env["MCP_RUST_HTTP_CLIENT"] = "curl"
    assert one_line(serve(env)) == "mcp-gateway: MCP_RUST_HTTP_CLIENT='curl' is not one of aiohttp, httpx"


def stack_command(port: int) -> list[str]:
    return [sys.executable, "-m", "mcp_gateway", "stack", "--mode", "python", "--port", str(port)]


def test_the_stack_refuses_a_port_in_use_before_starting_anything() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = subprocess.run(stack_command(port), capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 1, out
    assert "MCP URL" not in out.stdout
    assert out.stderr.strip() == (
        f"mcp-gateway stack: port {port} on 127.0.0.1 is in use: choose another (PORT=N with make run)"
    )


def test_the_stack_refuses_a_catalog_it_cannot_read_before_starting_anything(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    before = set(Path(tempfile.gettempdir()).glob("mcp-stack-*"))
    out = subprocess.run(
        [*stack_command(free_port()), "--catalog", str(missing)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 2, out
    assert "MCP URL" not in out.stdout
    expected = f"mcp-gateway stack: cannot read catalog {missing}: No such file or directory"
    assert out.stderr.strip() == expected
    assert set(Path(tempfile.gettempdir()).glob("mcp-stack-*")) == before, "a log directory was left behind"


def banner(process: subprocess.Popen[str]) -> dict[str, str]:
    """The stack's banner lines (``name: value``), read until the last one."""
    assert process.stdout is not None
    lines: dict[str, str] = {}
    for line in process.stdout:
        name, _, value = line.partition(":")
        lines[name.strip()] = value.strip()
        if name.startswith("header"):
            return lines
    raise AssertionError(f"the stack stopped before it was ready: {process.wait()}")


def pids(banner: dict[str, str]) -> dict[str, int]:
    """``processes: fixture 12, gateway 34`` as ``{"fixture": 12, "gateway": 34}``."""
    found = {}
    for item in banner["processes"].split(","):
        name, pid = item.split()
        found[name] = int(pid)
    return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by its parent) counts as gone.
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.fixture
def running_stack() -> Iterator[tuple[subprocess.Popen[str], dict[str, str]]]:
    process = subprocess.Popen(
        stack_command(free_port()), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        yield process, banner(process)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            process.wait(30)


def test_a_process_that_dies_is_named_with_its_status_and_its_logs_are_kept(
    running_stack: tuple[subprocess.Popen[str], dict[str, str]],
) -> None:
    process, lines = running_stack
    os.kill(pids(lines)["gateway"], signal.SIGKILL)
    status = process.wait(30)
    assert process.stderr is not None
    err = process.stderr.read()
    assert status == 1, err
    logs = Path(lines["logs"])
    assert f"the gateway exited with status -9; stopping the stack (logs kept in {logs})" in err, err
    assert f"last lines of {logs / 'gateway.log'}:" in err, err
    assert (logs / "gateway.log").is_file()
    for pid in pids(lines).values():
        assert not alive(pid)


def test_the_stack_stops_when_the_process_that_started_it_goes_away(tmp_path: Path) -> None:
    """As ``make run`` interrupted alone: make exits, its child is reparented and must stop."""
    out = tmp_path / "banner.txt"
    # The parent waits for the banner (the stack is up), then exits without signalling it.
    parent = (
        "import pathlib, subprocess, sys, time\n"
        f"out = pathlib.Path({str(out)!r})\n"
        f"child = subprocess.Popen({stack_command(free_port())!r}, stdout=out.open('w'))\n"
        "deadline = time.monotonic() + 60\n"
        "while 'header' not in out.read_text() and time.monotonic() < deadline:\n"
        "    time.sleep(0.1)\n"
    )
    subprocess.run([sys.executable, "-c", parent], check=True, timeout=90)
    lines = dict(line.partition(":")[::2] for line in out.read_text().splitlines())
    started = pids({k.strip(): v.strip() for k, v in lines.items()})
    try:
        deadline = time.monotonic() + 30
        while any(alive(pid) for pid in started.values()):
            assert time.monotonic() < deadline, f"still running: {started}"
            time.sleep(0.1)
    finally:
        for pid in started.values():
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_both_socket_variables_say_which_one_is_used(tmp_path: Path) -> None:
    """Not an error (ADR-044 adds the gRPC variable beside the HTTP one), but said at start."""
    log = tmp_path / "gateway.log"
    env = {
        "JWT_SECRET_KEY": SECRET,
        "MCP_RUST_UDS": str(tmp_path / "http.sock"),
        "MCP_RUST_GRPC_UDS": str(tmp_path / "grpc.sock"),
    }
    process = start_gateway(env, free_port(), log=log)
    try:
        text = log.read_text()
    finally:
        stop(process)
    assert "both MCP_RUST_GRPC_UDS and MCP_RUST_UDS are set: gRPC mode; MCP_RUST_UDS is not used" in text
