"""Upstreams built with the official Python SDK, over each of its server transports.

``sdk_server.py`` (the SDK's ``MCPServer``, one tool and one resource) is served over stdio
(started by the runtime and by the baseline), over the legacy HTTP+SSE transport and over
streamable HTTP (started here on a free port); every gateway mode calls its tool and reads its
resource. With server-everything (the TypeScript SDK) in ``test_upstream_transports.py``, each
transport of the runtime's and the baseline's clients meets two server implementations nobody
here wrote.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from conftest import serve_catalog
from mcp_gateway.testing import free_port, stop
from test_server_everything import _wait_port

SERVER = Path(__file__).with_name("sdk_server.py")


@pytest.fixture(params=["stdio", "sse", "streamable-http"])
def sdk_upstream(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The catalog entry of the SDK server over the transport of the parameter."""
    transport: str = request.param
    if transport == "stdio":
        yield (
            f'[[upstreams]]\nid = "sdk"\ntransport = "stdio"\ncommand = "{sys.executable}"\n'
            f'args = ["{SERVER}", "stdio"]\n'
        )
        return
    port = free_port()
    with (tmp_path / "sdk-server.log").open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, str(SERVER), transport, str(port)], stdout=out, stderr=out
        )
    try:
        _wait_port(port, process)
        path = "sse" if transport == "sse" else "mcp"
        yield f'[[upstreams]]\nid = "sdk"\ntransport = "{transport}"\nurl = "http://127.0.0.1:{port}/{path}"\n'
    finally:
        stop(process)


async def test_an_sdk_server_is_reached_in_every_mode(
    sdk_upstream: str, tmp_path: Path, http: httpx.AsyncClient
) -> None:
    catalog = tmp_path / "catalog.toml"
    catalog.write_text(sdk_upstream)
    processes: list[subprocess.Popen[bytes]] = []
    try:
        gateways = serve_catalog(catalog, tmp_path, "sdk", processes)
        for mode, gw in gateways.items():
            text = await gw.call_tool(http, "add", {"a": 2, "b": 3})
            assert '"text":"5"' in text.replace(" ", ""), f"{mode}: {text}"
            token = gw.token()
            headers = gw.headers(token, await gw.initialize(http, token))
            read = {
                "jsonrpc": "2.0",
                "id": 2,
                "method": "resources/read",
                "params": {"uri": "sdk://greeting"},
            }
            r = await http.post(gw.url, json=read, headers=headers)
            assert r.status_code == 200, f"{mode}: {r.text}"
            assert "hello from the Python SDK" in r.text, f"{mode}: {r.text}"
    finally:
        for process in reversed(processes):
            stop(process)
