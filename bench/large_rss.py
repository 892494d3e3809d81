"""Memory of large results: peak and after RSS of the gateway and the runtime around large ``echo`` calls.

Issue 13 (item 4) measured one 60 MiB ``echo`` costing the gateway 430 MiB and the runtime 470 MiB,
and six at once 2 GB and 1 GB. This script repeats that measurement for each gateway mode on a
fresh stack (``mcp_gateway.testing.stack``: fixture upstream, runtime, gateway), so a change to the
copies a large body goes through can show its before and after.

Usage::

    MCP_BIN_DIR=target/release .venv/bin/python bench/large_rss.py [--modes grpc,http,python]
        [--mib 60] [--concurrent 1,6] [--port 4480]

For each mode and each ``--concurrent`` count N: a fresh stack, one ``initialize``, then N
``tools/call echo`` with a ``--mib`` MiB argument at once through the gateway. Reported per process
(gateway, runtime; the runtime is absent in ``python`` mode): RSS before (after ``initialize``),
peak (``VmHWM`` of ``/proc/PID/status``: the high-water mark since the process started), and after
(2 s after the last answer), in MiB; and how each call was answered (HTTP status). A call refused
by a byte budget (HTTP 429/503) is counted as such: with the defaults (128 MiB per subject, 512 MiB
per process in the runtime) several 60 MiB calls at once from one subject are refused by design.

Prints one Markdown table on stdout. Needs the release binaries (``cargo build --release -p
mcp-runtime --features grpc-uds -p mcp-fixture-server``) in ``MCP_BIN_DIR``.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import time
from collections import Counter
from pathlib import Path

import httpx
from mcp_gateway._auth import mint_token
from mcp_gateway.testing import stack

INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 0,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "large-rss", "version": "1"},
    },
}


def _kib(pid: int, field: str) -> int:
    """``field`` (``VmRSS``, ``VmHWM``) of ``/proc/PID/status``, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/{pid}/status")


def _mib(kib: int) -> str:
    return f"{kib / 1024:.0f}"


async def _run(url: str, token: str, mib: int, concurrent: int) -> Counter[int]:
    headers = {
        "authorization": f"Bearer {token}",
        "accept": "application/json, text/event-stream",
    }
    timeout = httpx.Timeout(300.0)
    async with httpx.AsyncClient(timeout=timeout, headers=headers) as client:
        r = await client.post(url, json=INITIALIZE)
        r.raise_for_status()
        sid = r.headers["mcp-session-id"]
        text = "y" * (mib * 1024 * 1024)

        async def call(i: int) -> int:
            body = {
                "jsonrpc": "2.0",
                "id": i + 1,
                "method": "tools/call",
                "params": {"name": "echo", "arguments": {"text": text}},
            }
            reply = await client.post(url, json=body, headers={"mcp-session-id": sid})
            return reply.status_code

        statuses = await asyncio.gather(*(call(i) for i in range(concurrent)))
    return Counter(statuses)


def main() -> None:
    """Run every mode and count; print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modes", default="grpc,http,python")
    parser.add_argument("--mib", type=int, default=60)
    parser.add_argument("--concurrent", default="1,6")
    parser.add_argument("--port", type=int, default=4480)
    args = parser.parse_args()
    secret = secrets.token_urlsafe(32)
    token = mint_token(secret, "large@example.com", teams=None, is_admin=True)
    print(
        "| mode | calls at once x MiB | answers | process | RSS before | peak | after (MiB) |"
    )
    print("|---|---|---|---|--:|--:|--:|")
    for mode in args.modes.split(","):
        for n in (int(c) for c in args.concurrent.split(",")):
            with stack(mode, args.port, secret) as running:
                names = ["gateway"] if mode == "python" else ["gateway", "runtime"]
                # Processes: fixture, [runtime], gateway.
                pids = {"gateway": running.processes[-1].pid}
                if mode != "python":
                    pids["runtime"] = running.processes[1].pid
                before = {k: _kib(p, "VmRSS") for k, p in pids.items()}
                statuses = asyncio.run(_run(running.url, token, args.mib, n))
                time.sleep(2)
                answers = ", ".join(
                    f"{count}x {status}" for status, count in sorted(statuses.items())
                )
                for name in names:
                    pid = pids[name]
                    print(
                        f"| {mode} | {n} x {args.mib} | {answers} | {name} | {_mib(before[name])} "
                        f"| {_mib(_kib(pid, 'VmHWM'))} | {_mib(_kib(pid, 'VmRSS'))} |",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
