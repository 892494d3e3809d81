"""List the tools of the running stack and call one, with the official MCP Python SDK.

Usage (with `make run` running; it prints the URL and a token):

    .venv/bin/python examples/client.py http://127.0.0.1:4444/mcp <token>
"""

from __future__ import annotations

import asyncio
import sys

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client


async def main(url: str, token: str) -> None:
    """List the tools at ``url`` (the gateway's MCP endpoint) and call ``echo``, as ``token``'s subject."""
    # The gateway authenticates every request by its bearer token: give it to the HTTP client.
    async with (
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}) as http,
        Client(streamable_http_client(url, http_client=http), mode="legacy") as client,
    ):
        tools = await client.list_tools()
        print("tools:", ", ".join(sorted(tool.name for tool in tools.tools)))
        result = await client.call_tool("echo", {"text": "hello"})
        print("echo:", result.content[0].model_dump(mode="json", exclude_none=True))
        # with CATALOG=examples/catalog.toml, server-everything's tools too:
        # await client.call_tool("everything_echo", {"message": "hello"})


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
