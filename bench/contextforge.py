"""Start ContextForge (mcp-contextforge-gateway) in front of the fixture upstream, for the bench.

One process runs ONE ContextForge: it writes generated secrets (ContextForge's own
``mcpgateway.scripts.init_secrets``) into a temporary directory, starts ``uvicorn
mcpgateway.main:app`` (one worker) on a free loopback port with its SQLite database in that
directory, waits until ``GET /health`` answers 200, registers each upstream with ``POST
/gateways`` (transport ``STREAMABLEHTTP``), groups each upstream's tools in a virtual server with
``POST /servers``, and prints ONE JSON line on stdout:

``{"base_url", "port", "pid", "token", "tool_prefix", "stateful", "servers": {NAME: {"id",
"mcp_path", "tools"}}, "settings": {...}, "command": [...]}``

where ``mcp_path`` is ``/servers/<id>/mcp``, ``token`` an admin bearer token minted with
``mcpgateway.utils.create_jwt_token`` (valid 10 hours), ``tool_prefix`` what ContextForge puts
before the upstream's tool names (``fixture-``: ``echo`` is called as ``fixture-echo``; it also
turns ``_`` into ``-``), ``pid`` ContextForge's process and ``settings`` every environment value
set for it except the secrets. It then waits until it gets SIGTERM/SIGINT (or, with
``--exit-on-stdin-eof``, stdin closes), stops ContextForge (SIGTERM, SIGKILL after 3 s) and
removes the directory; it cleans up the same way when a step fails (exit status 2, the reason
on stderr with the tail of ContextForge's log).

Usage::

    python bench/contextforge.py --contextforge-python target/contextforge-venv/bin/python
        --upstream tools10=http://127.0.0.1:PORT/mcp [--upstream tools500=URL
        --generated-only tools500] [--stateful]

Standard library only, so any Python >= 3.11 runs it (the bench runs it with ContextForge's).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

#: The admin ContextForge creates at its first start (``PLATFORM_ADMIN_EMAIL``).
ADMIN_EMAIL = "admin@example.com"

#: The name each upstream is registered under: ContextForge prefixes its tools with it and
#: ``GATEWAY_TOOL_NAME_SEPARATOR`` (default ``-``).
UPSTREAM_NAME = "fixture"

#: What the benchmark changes from ContextForge's defaults, and why. Everything else keeps
#: its default (auth required, JWT with JTI, security headers, compression, the deprecation
#: headers of ``/servers/<id>/mcp``, DB metrics recording with its buffer, the 60 s upstream
#: health check, plugins off as shipped, log level ERROR).
BENCH_SETTINGS: dict[str, str] = {
    # One machine, no Redis: the in-memory cache (the default is the database).
    "CACHE_TYPE": "memory",
    "REDIS_URL": "",
    # The fixture listens on 127.0.0.1; SSRF protection refuses loopback upstreams otherwise.
    "SSRF_ALLOW_LOCALHOST": "true",
    # The default rate limit (100 MCP requests a minute) would refuse the benchmark's load.
    "RATE_LIMITING_ENABLED": "false",
    "PLATFORM_ADMIN_EMAIL": ADMIN_EMAIL,
    "MCPGATEWAY_UI_ENABLED": "false",
    "MCPGATEWAY_ADMIN_API_ENABLED": "false",
    "LOG_LEVEL": "ERROR",
}

START_TIMEOUT_S = 300.0
STOP_GRACE_S = 3.0


class LaunchError(Exception):
    """A step of the start failed; the message names it."""


def free_port() -> int:
    """A free loopback TCP port (bound and released: a small race with other programs)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def read_env_file(path: Path) -> dict[str, str]:
    """``KEY=VALUE`` lines of ``path`` (comments and blank lines skipped, quotes stripped)."""
    out: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        k, v = line.split("=", 1)
        out[k.strip()] = v.strip().strip("'\"")
    return out


def http_json(method: str, url: str, token: str | None, body: Any = None, timeout: float = 60.0) -> Any:
    """One JSON request; returns the decoded answer.

    Raises:
        LaunchError: on a status other than 2xx or a transport failure (status and body).
    """
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("content-type", "application/json")
    if token is not None:
        req.add_header("authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as e:
        raise LaunchError(f"{method} {url}: HTTP {e.code}: {e.read()[:500]!r}") from e
    except (urllib.error.URLError, OSError) as e:
        raise LaunchError(f"{method} {url}: {e}") from e


class ContextForge:
    """One ContextForge process and its directory; :meth:`close` stops it and removes both."""

    def __init__(self, python: str, stateful: bool, port: int | None = None) -> None:
        self.python = python
        self.stateful = stateful
        self.port = port or free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="contextforge-"))
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.dir / "contextforge.log"
        self.settings: dict[str, str] = {}
        self.env: dict[str, str] = {}
        self.command: list[str] = []
        self.token = ""

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Writes the secrets, starts ContextForge and waits for ``GET /health`` 200.

        Raises:
            LaunchError: the secrets could not be made, the process exited, or it was not
                healthy within ``timeout_s``.
        """
        secrets_file = self.dir / "secrets.env"
        r = subprocess.run(
            [self.python, "-m", "mcpgateway.scripts.init_secrets", "--output", str(secrets_file), "--force"],
            capture_output=True,
            cwd=self.dir,
            check=False,
        )
        if r.returncode != 0 or not secrets_file.exists():
            raise LaunchError(f"init_secrets failed ({r.returncode}): {r.stderr.decode()[-500:]}")
        secrets = read_env_file(secrets_file)
        self.settings = {
            **BENCH_SETTINGS,
            "DATABASE_URL": f"sqlite:///{self.dir / 'contextforge.db'}",
            "HOST": "127.0.0.1",
            "PORT": str(self.port),
            "USE_STATEFUL_SESSIONS": "true" if self.stateful else "false",
        }
        self.env = {**os.environ, **secrets, **self.settings}
        self.command = [
            self.python,
            "-m",
            "uvicorn",
            "mcpgateway.main:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            "1",
            "--no-access-log",
        ]
        with open(self.log_path, "wb") as log:
            # cwd is the temp dir: ContextForge reads a .env from its working directory.
            self.proc = subprocess.Popen(
                self.command,
                cwd=self.dir,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout_s
        while True:
            if self.proc.poll() is not None:
                raise LaunchError(f"ContextForge exited with status {self.proc.returncode}")
            try:
                with urllib.request.urlopen(f"{self.base_url}/health", timeout=5) as resp:
                    if resp.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise LaunchError(f"ContextForge not healthy on {self.base_url} after {timeout_s:.0f} s")
            time.sleep(0.5)
        r = subprocess.run(
            [
                self.python,
                "-m",
                "mcpgateway.utils.create_jwt_token",
                "-u",
                ADMIN_EMAIL,
                "--admin",
                "-e",
                "600",
            ],
            capture_output=True,
            cwd=self.dir,
            env=self.env,
            check=False,
        )
        lines = r.stdout.decode().strip().splitlines()
        if r.returncode != 0 or not lines:
            raise LaunchError(f"create_jwt_token failed ({r.returncode}): {r.stderr.decode()[-500:]}")
        self.token = lines[-1].strip()

    def add_upstream(self, name: str, gateway: str, url: str, generated_only: bool = False) -> dict[str, Any]:
        """Registers an upstream and a virtual server of its tools.

        The upstream at ``url`` becomes gateway ``gateway`` (streamable HTTP; its tools are
        called ``<gateway>-<tool>``), the virtual server ``name``; returns ``{"id",
        "mcp_path", "tools"}``. With ``generated_only`` the server takes only the
        fixture's generated tools (``gen_*``), as the bench's own catalog does for ``tools500``.

        Raises:
            LaunchError: a request failed or the upstream brought no tool.
        """
        gw = http_json(
            "POST",
            f"{self.base_url}/gateways",
            self.token,
            {"name": gateway, "url": url, "transport": "STREAMABLEHTTP"},
            timeout=120,
        )
        tools = http_json(
            "GET", f"{self.base_url}/tools?gateway_id={gw['id']}&limit=0", self.token, timeout=120
        )
        if isinstance(tools, dict):
            tools = tools.get("items") or tools.get("tools") or []
        if generated_only:
            tools = [t for t in tools if str(t.get("originalName", "")).startswith("gen_")]
        if not tools:
            raise LaunchError(f"upstream {url} registered as {gw['id']} but no tool was listed")
        server = http_json(
            "POST",
            f"{self.base_url}/servers",
            self.token,
            {"server": {"name": name, "associated_tools": [t["id"] for t in tools]}},
            timeout=120,
        )
        return {"id": server["id"], "mcp_path": f"/servers/{server['id']}/mcp", "tools": len(tools)}

    def log_tail(self, n: int = 2000) -> str:
        """The last ``n`` characters of ContextForge's log."""
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def close(self) -> None:
        """Stops ContextForge (its whole process group) and removes the directory; idempotent."""
        p = self.proc
        if p is not None and p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
            try:
                p.wait(STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)


def parse_upstream(s: str) -> tuple[str, str]:
    """``NAME=URL`` of ``--upstream``."""
    name, sep, url = s.partition("=")
    if not sep or not name or not url.startswith("http"):
        raise argparse.ArgumentTypeError(f"expected NAME=http://HOST:PORT/mcp, got {s!r}")
    return name, url


def main(argv: list[str] | None = None) -> int:
    """Runs the launcher; see the module docstring."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument(
        "--contextforge-python", required=True, help="python of ContextForge's venv (make contextforge)"
    )
    ap.add_argument(
        "--upstream",
        action="append",
        type=parse_upstream,
        required=True,
        help="NAME=URL: an upstream and the virtual server of its tools (the first is named `fixture`)",
    )
    ap.add_argument(
        "--generated-only",
        action="append",
        default=[],
        metavar="NAME",
        help="the virtual server NAME takes only the upstream's generated tools (gen_*)",
    )
    ap.add_argument("--stateful", action="store_true", help="USE_STATEFUL_SESSIONS=true (default: stateless)")
    ap.add_argument("--port", type=int, default=0, help="listen port (default: a free one)")
    ap.add_argument("--start-timeout-s", type=float, default=START_TIMEOUT_S)
    ap.add_argument("--exit-on-stdin-eof", action="store_true", help="also stop when stdin closes")
    args = ap.parse_args(argv)

    stop = False

    def on_signal(_sig: int, _frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    cf = ContextForge(args.contextforge_python, args.stateful, args.port or None)
    try:
        try:
            cf.start(args.start_timeout_s)
            servers = {
                name: cf.add_upstream(
                    name, UPSTREAM_NAME if i == 0 else name, url, name in args.generated_only
                )
                for i, (name, url) in enumerate(args.upstream)
            }
        except LaunchError as e:
            print(f"contextforge: {e}\n--- log tail ---\n{cf.log_tail()}", file=sys.stderr)
            return 2
        assert cf.proc is not None
        info = {
            "base_url": cf.base_url,
            "port": cf.port,
            "pid": cf.proc.pid,
            "token": cf.token,
            "tool_prefix": f"{UPSTREAM_NAME}-",
            "stateful": cf.stateful,
            "servers": servers,
            "settings": cf.settings,
            "command": cf.command,
        }
        print(json.dumps(info), flush=True)
        # Wait for a signal, ContextForge's exit or (with --exit-on-stdin-eof) stdin's end.
        while not stop and cf.proc.poll() is None:
            if not args.exit_on_stdin_eof:
                time.sleep(0.2)
                continue
            try:
                ready, _, _ = select.select([sys.stdin], [], [], 0.5)
            except InterruptedError:
                continue
            if ready and not os.read(sys.stdin.fileno(), 4096):
                break
        if cf.proc.poll() is not None:
            print(f"contextforge: exited with status {cf.proc.returncode}\n{cf.log_tail()}", file=sys.stderr)
            return 2
        return 0
    finally:
        cf.close()


if __name__ == "__main__":
    sys.exit(main())
