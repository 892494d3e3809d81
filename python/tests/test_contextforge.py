"""ContextForge, the benchmark's peer, started by ``bench/contextforge.py`` as the bench starts it.

Runs only where ContextForge's venv exists (``make contextforge``; ``make contextforge-test`` runs
this file): ``$MCP_CONTEXTFORGE_PYTHON`` or ``target/contextforge-venv/bin/python``. Each test
starts the real fixture upstream and a real ContextForge (stateless, then stateful) through the
launcher, lists and calls the fixture's ``echo`` through ContextForge's ``/servers/<id>/mcp``
with the official ``mcp`` client, then stops the launcher and checks that ContextForge and its
directory are gone.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from mcp_gateway.testing import start_fixture, stop

REPO = Path(__file__).resolve().parents[2]
CF_PYTHON = Path(
    os.environ.get("MCP_CONTEXTFORGE_PYTHON") or REPO / "target" / "contextforge-venv" / "bin" / "python"
)
LAUNCHER = REPO / "bench" / "contextforge.py"

pytestmark = pytest.mark.skipif(
    not CF_PYTHON.exists(), reason=f"ContextForge not installed ({CF_PYTHON}): run `make contextforge`"
)


def launch(fixture_url: str, stateful: bool) -> tuple[subprocess.Popen[bytes], dict[str, Any]]:
    """Starts the launcher; returns it and its JSON line (ContextForge's address, token, paths)."""
    cmd = [str(CF_PYTHON), str(LAUNCHER), "--contextforge-python", str(CF_PYTHON)]
    cmd += ["--upstream", f"tools10={fixture_url}"]
    if stateful:
        cmd.append("--stateful")
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=sys.stderr)
    assert p.stdout is not None
    line = p.stdout.readline()  # the launcher prints one line when ready, or exits (EOF)
    if not line:
        stop(p)
        pytest.fail(f"the launcher exited ({p.returncode}) before ContextForge was ready")
    info: dict[str, Any] = json.loads(line)
    return p, info


def alive(pid: int) -> bool:
    """Whether process ``pid`` exists (and is not a zombie)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


async def call_echo(info: dict[str, Any]) -> None:
    """Lists ContextForge's tools and calls the fixture's ``echo`` (prefixed) with the ``mcp`` client."""
    mcp_url = f"{info['base_url']}{info['servers']['tools10']['mcp_path']}"
    echo = f"{info['tool_prefix']}echo"
    headers = {"Authorization": f"Bearer {info['token']}"}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30.0, read=60.0)) as http,
        Client(streamable_http_client(mcp_url, http_client=http), mode="legacy", cache=None) as client,
    ):
        names = {t.name for t in (await client.list_tools()).tools}
        assert echo in names, names
        result = await client.call_tool(echo, {"text": "hello contextforge"})
        assert not result.is_error
        assert result.content[0].text == "hello contextforge"  # type: ignore[union-attr]


@pytest.mark.parametrize("stateful", [False, True], ids=["stateless", "stateful"])
def test_a_tools_call_through_contextforge(stateful: bool) -> None:
    fixture, url = start_fixture("--generated-tools", "4")
    launcher: subprocess.Popen[bytes] | None = None
    try:
        launcher, info = launch(url, stateful)
        assert info["stateful"] is stateful
        assert info["settings"]["USE_STATEFUL_SESSIONS"] == ("true" if stateful else "false")
        assert info["settings"]["RATE_LIMITING_ENABLED"] == "false"
        assert info["servers"]["tools10"]["tools"] == 10
        asyncio.run(call_echo(info))
        # Stopping the launcher stops ContextForge and removes its directory.
        cf_pid = int(info["pid"])
        db = Path(info["settings"]["DATABASE_URL"].removeprefix("sqlite:///"))
        assert db.exists()
        launcher.send_signal(signal.SIGTERM)
        assert launcher.wait(30) == 0
        assert not alive(cf_pid)
        assert not db.parent.exists()
    finally:
        stop(launcher)
        stop(fixture)
