"""An upstream that restarts between two calls of one gateway session, in every mode.

A stack of its own per mode: a fixture upstream, a catalog naming it, the runtime (socket modes)
and the gateway. The fixture is killed and a new one started on the same port: it knows no
session, so the shared upstream session is gone (the upstream answers 404 to it). The next call
of the same gateway session succeeds: the runtime and the baseline both open a new upstream
session and send the call once more. With no upstream at all, the call is answered with the
runtime's ``-32603`` "Upstream server unavailable", naming no upstream and no upstream session.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from conftest import MODES, RUNTIME_FLAGS, Gateway, Runtime, _socket_dir, gateway_env
from mcp_gateway.testing import (
    fixture_binary,
    free_port,
    start_fixture,
    start_gateway,
    start_runtime,
    stop,
    write_catalog,
)


@dataclass
class Stack:
    """A gateway over its own fixture upstream (and runtime), and how to restart the upstream."""

    gw: Gateway
    fixture: subprocess.Popen[bytes] | None
    port: int
    log: Path

    def kill_upstream(self) -> None:
        assert self.fixture is not None
        self.fixture.kill()
        self.fixture.wait()
        self.fixture = None

    def start_upstream(self) -> None:
        """A new fixture on the same port (it knows none of the old one's sessions)."""
        with self.log.open("ab") as log:
            process = subprocess.Popen(
                [str(fixture_binary()), "--listen", f"127.0.0.1:{self.port}"],
                stdout=subprocess.PIPE,
                stderr=log,
            )
        assert process.stdout is not None
        line = process.stdout.readline().decode()
        if not line.startswith("MCP_FIXTURE_URL="):
            stop(process)
            raise AssertionError(f"fixture did not start on port {self.port}: {line!r}")
        self.fixture = process


@pytest.fixture(params=MODES)
def stack(request: pytest.FixtureRequest, workdir: Path) -> Iterator[Stack]:
    mode: str = request.param
    tag = f"{mode}-{free_port()}"
    log = workdir / f"fixture-restart-{tag}.log"
    fixture, url = start_fixture(log=log)
    port = urlsplit(url).port
    assert port is not None
    catalog = write_catalog(workdir / f"catalog-restart-{tag}.toml", url)
    processes: list[subprocess.Popen[bytes]] = []
    stack = Stack(Gateway(mode, ""), fixture, port, log)
    try:
        rt: Runtime | None = None
        if mode != "python":
            sockets = _socket_dir()
            rt_log = workdir / f"runtime-restart-{tag}.log"
            rt = Runtime(None, str(sockets / "http.sock"), str(sockets / "grpc.sock"), catalog, rt_log)
            rt.process = start_runtime(catalog, rt.http_uds, rt.grpc_uds, extra=RUNTIME_FLAGS, log=rt_log)
            processes.append(rt.process)
        gw_port = free_port()
        processes.append(
            start_gateway(gateway_env(mode, catalog, rt), gw_port, log=workdir / f"gateway-restart-{tag}.log")
        )
        stack.gw = Gateway(mode, f"http://127.0.0.1:{gw_port}", processes=processes)
        yield stack
    finally:
        for process in reversed(processes):
            stop(process)
        stop(stack.fixture)


def echo(i: int, text: str) -> dict[str, object]:
    return {
        "jsonrpc": "2.0",
        "id": i,
        "method": "tools/call",
        "params": {"name": "echo", "arguments": {"text": text}},
    }


async def test_a_call_after_the_upstream_restarted_succeeds(stack: Stack, http: httpx.AsyncClient) -> None:
    gw = stack.gw
    token = gw.token()
    session = await gw.initialize(http, token)
    r = await http.post(gw.url, json=echo(1, "before"), headers=gw.headers(token, session))
    assert r.status_code == 200, r.text
    assert r.json()["result"]["content"][0]["text"] == "before"
    stack.kill_upstream()
    stack.start_upstream()
    r = await http.post(gw.url, json=echo(2, "after"), headers=gw.headers(token, session))
    assert r.status_code == 200, r.text
    assert r.json()["result"]["content"][0]["text"] == "after", r.text


async def test_an_upstream_that_is_gone_is_unavailable_without_its_id(
    stack: Stack, http: httpx.AsyncClient
) -> None:
    gw = stack.gw
    token = gw.token()
    session = await gw.initialize(http, token)
    r = await http.post(gw.url, json=echo(1, "before"), headers=gw.headers(token, session))
    assert r.status_code == 200, r.text
    stack.kill_upstream()
    r = await http.post(gw.url, json=echo(2, "nobody"), headers=gw.headers(token, session))
    assert r.status_code == 200, r.text
    assert r.json() == {
        "jsonrpc": "2.0",
        "id": 2,
        "error": {"code": -32603, "message": "Upstream server unavailable"},
    }
    # The gateway session itself keeps serving; once the upstream is back, so do calls.
    stack.start_upstream()
    r = await http.post(gw.url, json=echo(3, "back"), headers=gw.headers(token, session))
    assert r.status_code == 200, r.text
    assert r.json()["result"]["content"][0]["text"] == "back", r.text
