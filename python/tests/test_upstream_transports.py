"""Upstreams as users have them, in every mode: with credentials, and over stdio.

Credentials: two fixture servers answer 401 without their header (``x-api-key``, and
``authorization: Bearer ...``); the catalog takes the key from an environment variable and the
token from a file. Every mode reaches both; a wrong credential stops the start with an error
that names the upstream and never the value, and no log of the runtime (at ``debug``) or the
gateway holds a value.

stdio: server-everything started by the runtime (and by the Python baseline) as a child
process; what it writes on stderr is in their logs. Legacy HTTP+SSE: server-everything's
``sse`` mode in every mode (the baseline through the SDK's client, the runtime through its
own). ``make run CATALOG=...``: the stack serves the example catalog, and the README's client
(``examples/client.py``) uses it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import httpx
import pytest

from conftest import SECRET, Gateway, _socket_dir, serve_catalog
from mcp_gateway.testing import free_port, repo_root, start_fixture, stop
from test_server_everything import NODE22, SERVER_EVERYTHING, _wait_port

API_KEY = "key-2c5e81f0a7d3"
TOKEN = "token-9d04b6e1c8f2"
KEY_VARIABLE = "MCP_TEST_UPSTREAM_KEY"


@contextlib.contextmanager
def _environ(**values: str) -> Iterator[None]:
    """``values`` in this process's environment (inherited by what it starts), then removed."""
    os.environ.update(values)
    try:
        yield
    finally:
        for name in values:
            os.environ.pop(name, None)


def _guarded_fixture(header: str, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """A fixture server that answers 401 without ``header`` (``NAME=VALUE``, given in its environment)."""
    with _environ(MCP_FIXTURE_REQUIRE_HEADER=header):
        return start_fixture(log=log)


def _catalog(workdir: Path, keyed_url: str, bearer_url: str, token_file: Path) -> Path:
    catalog = workdir / "catalog.toml"
    catalog.write_text(
        f'[[upstreams]]\nid = "keyed"\nurl = "{keyed_url}"\nprefix = "k_"\n'
        f'headers = {{ X-Api-Key = {{ env = "{KEY_VARIABLE}" }} }}\n\n'
        f'[[upstreams]]\nid = "bearer"\nurl = "{bearer_url}"\nprefix = "b_"\n'
        f'bearer = {{ file = "{token_file.name}" }}\n\n'
        f'[[upstreams]]\nid = "everything"\ntransport = "stdio"\nprefix = "everything_"\n'
        f'command = "{NODE22}"\nargs = ["{SERVER_EVERYTHING}", "stdio"]\n'
    )
    return catalog


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str, str]]:
    """The two guarded fixture servers: (workdir, keyed URL, bearer URL)."""
    workdir = tmp_path_factory.mktemp("guarded")
    keyed, keyed_url = _guarded_fixture(f"x-api-key={API_KEY}", workdir / "fixture-keyed.log")
    try:
        bearer, bearer_url = _guarded_fixture(f"authorization=Bearer {TOKEN}", workdir / "fixture-bearer.log")
        try:
            yield workdir, keyed_url, bearer_url
        finally:
            stop(bearer)
    finally:
        stop(keyed)


@pytest.fixture(scope="module")
def stack(guarded: tuple[Path, str, str]) -> Iterator[tuple[Path, dict[str, Gateway]]]:
    """Runtime (log at debug) and one gateway per mode on the catalog with credentials and stdio."""
    workdir, keyed_url, bearer_url = guarded
    (workdir / "token").write_text(f"{TOKEN}\n")
    catalog = _catalog(workdir, keyed_url, bearer_url, workdir / "token")
    processes: list[subprocess.Popen[bytes]] = []
    try:
        with _environ(**{KEY_VARIABLE: API_KEY, "MCP_RUNTIME_LOG": "debug"}):
            gateways = serve_catalog(catalog, workdir, "up", processes)
        yield workdir, gateways
    finally:
        for process in reversed(processes):
            stop(process)


async def test_credentials_from_env_and_file_reach_the_upstreams(
    stack: tuple[Path, dict[str, Gateway]], http: httpx.AsyncClient
) -> None:
    workdir, gateways = stack
    for mode, gw in gateways.items():
        token = gw.token()
        session = await gw.initialize(http, token)
        for name in ("k_echo", "b_echo"):
            call = {
                "jsonrpc": "2.0",
                "id": 1,
                "method": "tools/call",
                "params": {"name": name, "arguments": {"text": name}},
            }
            r = await http.post(gw.url, json=call, headers=gw.headers(token, session))
            assert r.status_code == 200, f"{mode}: {r.text}"
            assert r.json()["result"]["content"][0]["text"] == name, f"{mode}: {r.text}"
    for log in workdir.glob("*.log"):
        if log.name.startswith("fixture-"):
            continue
        text = log.read_text(errors="replace")
        assert API_KEY not in text, f"the key in {log.name}"
        assert TOKEN not in text, f"the token in {log.name}"


async def test_a_stdio_servers_stderr_is_in_the_log(
    stack: tuple[Path, dict[str, Gateway]], http: httpx.AsyncClient
) -> None:
    workdir, gateways = stack
    for mode, gw in gateways.items():
        text = await gw.call_tool(http, "everything_echo", {"message": f"via {mode}"})
        assert f"via {mode}" in text, f"{mode}: {text}"
    # server-everything says so on its stderr when it starts over stdio.
    said = "Starting default (STDIO) server"
    runtime_log = (workdir / "runtime.log").read_text(errors="replace")
    assert any(said in line and "everything" in line for line in runtime_log.splitlines()), runtime_log[
        -2000:
    ]
    baseline_log = (workdir / "gateway-python.log").read_text(errors="replace")
    assert f"upstream everything stderr: {said}" in baseline_log, baseline_log[-2000:]


@pytest.mark.parametrize("which", ["runtime", "python"])
def test_a_wrong_credential_stops_the_start_without_showing_it(
    guarded: tuple[Path, str, str], tmp_path: Path, which: str
) -> None:
    _, keyed_url, bearer_url = guarded
    wrong = "wrong-credential-6b1d0e"
    (tmp_path / "token").write_text(TOKEN)
    catalog = _catalog(tmp_path, keyed_url, bearer_url, tmp_path / "token")
    env = {**os.environ, KEY_VARIABLE: wrong, "MCP_RUNTIME_LOG": "debug", "JWT_SECRET_KEY": SECRET}
    if which == "runtime":
        sockets = _socket_dir()
        args = [
            str(Path(os.environ["MCP_BIN_DIR"]) / "mcp-runtime"),
            "--catalog",
            str(catalog),
            "--http-uds",
            str(sockets / "wrong.sock"),
        ]
    else:
        args = [sys.executable, "-m", "mcp_gateway", "serve", "--port", str(free_port())]
        env["MCP_RUNTIME_CATALOG"] = str(catalog)
        env.pop("MCP_RUST_UDS", None)
        env.pop("MCP_RUST_GRPC_UDS", None)
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120, check=False)
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert "keyed" in output, output
    assert "401" in output, output
    assert wrong not in output, output
    assert API_KEY not in output, output


@pytest.fixture(scope="module")
def everything_sse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """server-everything over the legacy HTTP+SSE transport (2024-11-05): its ``/sse`` URL."""
    port = free_port()
    log = tmp_path_factory.mktemp("everything-sse") / "server-everything.log"
    with log.open("ab") as out:
        process = subprocess.Popen(
            [str(NODE22), str(SERVER_EVERYTHING), "sse"],
            env={**os.environ, "PORT": str(port)},
            stdout=out,
            stderr=out,
        )
    try:
        _wait_port(port, process)
        yield f"http://127.0.0.1:{port}/sse"
    finally:
        stop(process)


async def test_a_legacy_sse_upstream_in_every_mode(
    everything_sse: str, tmp_path: Path, http: httpx.AsyncClient
) -> None:
    """The baseline through the SDK's ``sse_client``, the runtime through its own client."""
    catalog = tmp_path / "catalog.toml"
    catalog.write_text(f'[[upstreams]]\nid = "everything"\ntransport = "sse"\nurl = "{everything_sse}"\n')
    processes: list[subprocess.Popen[bytes]] = []
    try:
        gateways = serve_catalog(catalog, tmp_path, "sse", processes)
        for mode, gw in gateways.items():
            text = await gw.call_tool(http, "echo", {"message": f"over sse, {mode}"})
            assert f"over sse, {mode}" in text, f"{mode}: {text}"
    finally:
        for process in reversed(processes):
            stop(process)


@pytest.mark.parametrize("mode", ["python", "grpc"])
def test_make_run_serves_the_users_catalog(mode: str) -> None:
    """``make run CATALOG=examples/catalog.toml``'s command, and the README's client against it.

    The stack starts with SIGINT ignored, as a background job of a non-interactive shell does (a
    stack that kept it ignored never stopped on Ctrl-C or SIGINT). Its output is read to the end
    by a thread, and it runs in a process group of its own: if it has not stopped 90 s after
    SIGINT, the group is killed and the test fails with what the stack printed.
    """
    root = repo_root()
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mcp_gateway",
            "stack",
            "--mode",
            mode,
            "--port",
            str(port),
            "--catalog",
            str(root / "examples" / "catalog.toml"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        # As a background job of a non-interactive shell starts (CI, scripts): SIGINT ignored,
        # which the stack must undo for itself.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    assert process.stdout is not None
    output: list[str] = []
    banner_done = threading.Event()

    def read(stream: IO[str]) -> None:
        for line in stream:
            output.append(line)
            if line.startswith("header"):
                banner_done.set()
        banner_done.set()

    reader = threading.Thread(target=read, args=(process.stdout,), daemon=True)
    reader.start()
    try:
        assert banner_done.wait(180), "".join(output)
        printed: dict[str, str] = {}
        for line in output:
            name, _, value = line.partition(":")
            printed[name.strip()] = value.strip().split(" ")[0]
        assert "token" in printed, "".join(output)
        client = subprocess.run(
            [sys.executable, str(root / "examples" / "client.py"), printed["MCP URL"], printed["token"]],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert client.returncode == 0, client.stderr
        assert "everything_echo" in client.stdout, client.stdout
        assert "echo: {'type': 'text', 'text': 'hello'}" in client.stdout, client.stdout
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(90)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
            raise AssertionError(
                "the stack did not stop within 90 s of SIGINT:\n" + "".join(output)
            ) from None
        reader.join(10)
