"""The contract version handshake (docs/contract.md, Versioning) against a real runtime.

The runtime is a debug build, which reads ``MCP_RUNTIME_TEST_CONTRACT_VERSION`` to report
another contract version on both health endpoints (release builds ignore it). The gateway must
refuse a runtime of another major at start, in both socket modes, and accept another minor.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from conftest import (
    ACCEPT,
    INITIALIZE,
    RUNTIME_FLAGS,
    SECRET,
    SOCKET_MODES,
    Runtime,
    _socket_dir,
    gateway_env,
)
from mcp_gateway._auth import mint_token
from mcp_gateway.testing import free_port, start_gateway, start_runtime, stop


def _runtime(
    monkeypatch: pytest.MonkeyPatch, workdir: Path, catalog: Path, version: str, name: str
) -> Runtime:
    sockets = _socket_dir()
    log = workdir / f"runtime-{name}.log"
    rt = Runtime(None, str(sockets / "http.sock"), str(sockets / "grpc.sock"), catalog, log)
    with monkeypatch.context() as m:
        m.setenv("MCP_RUNTIME_TEST_CONTRACT_VERSION", version)
        rt.process = start_runtime(catalog, rt.http_uds, rt.grpc_uds, extra=RUNTIME_FLAGS, log=log)
    return rt


@pytest.fixture
def runtime_v2(monkeypatch: pytest.MonkeyPatch, workdir: Path, catalog: Path) -> Iterator[Runtime]:
    rt = _runtime(monkeypatch, workdir, catalog, "2.0", "v2")
    try:
        yield rt
    finally:
        stop(rt.process)


def test_runtime_reports_the_override_on_both_health_endpoints(runtime_v2: Runtime) -> None:
    transport = httpx.HTTPTransport(uds=runtime_v2.http_uds)
    with httpx.Client(transport=transport, base_url="http://runtime") as client:
        assert client.get("/health").json()["contract_version"] == "2.0"


@pytest.mark.parametrize("mode", SOCKET_MODES)
def test_gateway_refuses_a_runtime_of_another_major(
    mode: str, runtime_v2: Runtime, workdir: Path, catalog: Path
) -> None:
    log = workdir / f"gateway-refuse-{mode}.log"
    env = gateway_env(mode, catalog, runtime_v2)
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "mcp_gateway", "serve", "--port", str(free_port())],
            env={**os.environ, **env},
            stdout=out,
            stderr=out,
        )
        try:
            code = process.wait(timeout=60)
        finally:
            stop(process)
    text = log.read_text()
    assert code != 0, text
    socket = "gRPC socket" if mode == "grpc" else "HTTP/JSON socket"
    assert f"refusing the MCP runtime on the {socket}" in text, text
    assert "reports contract version '2.0'" in text, text
    assert "this gateway speaks contract 1.x" in text, text


@pytest.mark.parametrize("mode", SOCKET_MODES)
def test_gateway_accepts_a_newer_minor(
    mode: str, monkeypatch: pytest.MonkeyPatch, workdir: Path, catalog: Path
) -> None:
    rt = _runtime(monkeypatch, workdir, catalog, "1.9", f"minor-{mode}")
    port = free_port()
    process = None
    try:
        process = start_gateway(
            gateway_env(mode, catalog, rt), port, log=workdir / f"gateway-minor-{mode}.log"
        )
        admin = mint_token(SECRET, "admin@example.com", is_admin=True)
        health = httpx.get(
            f"http://127.0.0.1:{port}/health", headers={"authorization": f"Bearer {admin}"}, timeout=5.0
        ).json()
        assert health["runtime"]["contract_version"] == "1.9"
        assert health["status"] == "ok"
    finally:
        stop(process)
        stop(rt.process)


@pytest.mark.parametrize("mode", SOCKET_MODES)
def test_runtime_started_after_the_gateway_is_checked_on_first_contact(
    mode: str, monkeypatch: pytest.MonkeyPatch, workdir: Path, catalog: Path
) -> None:
    sockets = _socket_dir()
    rt = Runtime(None, str(sockets / "http.sock"), str(sockets / "grpc.sock"), catalog, workdir / "late.log")
    port = free_port()
    gateway = start_gateway(gateway_env(mode, catalog, rt), port, log=workdir / f"gateway-late-{mode}.log")
    try:
        with monkeypatch.context() as m:
            m.setenv("MCP_RUNTIME_TEST_CONTRACT_VERSION", "2.0")
            rt.process = start_runtime(catalog, rt.http_uds, rt.grpc_uds, extra=RUNTIME_FLAGS, log=rt.log)
        token = mint_token(SECRET, "alice@example.com", teams=[])
        # The gRPC channel may still be in the reconnect backoff (100 ms) of the probe that
        # failed at start: then neither the handshake nor the call reaches the runtime and the
        # answer is the same 502; a request after the backoff reaches it.
        deadline = time.monotonic() + 30
        while True:
            r = httpx.post(
                f"http://127.0.0.1:{port}/mcp",
                json=INITIALIZE,
                headers={"authorization": f"Bearer {token}", "accept": ACCEPT},
                timeout=10.0,
            )
            assert r.status_code == 502, r.text
            assert r.json()["error"]["message"] == "MCP runtime unavailable"
            log = (workdir / f"gateway-late-{mode}.log").read_text()
            if "reports contract version '2.0'" in log or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert "reports contract version '2.0'" in log, log
    finally:
        stop(gateway)
        stop(rt.process)
