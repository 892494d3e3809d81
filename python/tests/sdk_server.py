"""An MCP server built with the official Python SDK (``mcp.server.mcpserver.MCPServer``).

The SDK's own server transports stand on the other side of the runtime's and the baseline's
clients in ``test_sdk_servers.py``: ``python sdk_server.py stdio``, or ``sse PORT`` (the legacy
HTTP+SSE transport, its stream at ``/sse``), or ``streamable-http PORT`` (at ``/mcp``), on
127.0.0.1. One tool, ``add``, and one resource, ``sdk://greeting``.
"""

from __future__ import annotations

import sys

from mcp.server.mcpserver import MCPServer

server = MCPServer("sdk-example")


@server.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@server.resource("sdk://greeting")
def greeting() -> str:
    """A fixed text."""
    return "hello from the Python SDK"


if __name__ == "__main__":
    transport = sys.argv[1]
    if transport == "stdio":
        server.run("stdio")
    elif transport == "sse":
        server.run("sse", host="127.0.0.1", port=int(sys.argv[2]))
    else:
        server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[2]))
