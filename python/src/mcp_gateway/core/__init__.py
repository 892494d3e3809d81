"""The Python core of edge mode: serves the Core SPI (``proto/mcp/core/v1/core.proto``).

In edge mode the Rust runtime serves the public MCP endpoint itself and asks this core who a
caller is, runs the core's hooks and reports its calls (``docs/core-spi.md``). The core is the
only component that verifies tokens (with the gateway's own :mod:`mcp_gateway._auth`).

Layout (one concept per module; the gateway's modules import none of them but ``plugins``,
which the gateway's ``_plugins`` applies in the proxied modes):

- :mod:`~mcp_gateway.core.policy`: token verification, revocations, the generation, watchers;
- :mod:`~mcp_gateway.core.plugins`: the per-team tool deny-list and the output redactor;
- :mod:`~mcp_gateway.core.service`: :class:`~mcp_gateway.core.service.Core`, the semantics both
  transports share, and the HTTP/JSON routes (decode, validate, encode);
- :mod:`~mcp_gateway.core.grpc_server`: the gRPC transport (grpc.aio, health);
- :mod:`~mcp_gateway.core.http_server`: the HTTP/JSON transport (asyncio and httptools);
- :mod:`~mcp_gateway.core.server`: the process: settings, sockets, signals;
- :mod:`~mcp_gateway.core.admin`: the ``core-admin`` client of the admin routes.

Run it with ``python -m mcp_gateway core --grpc-uds PATH --http-uds PATH``.
"""

from __future__ import annotations

from mcp_gateway.core.plugins import HookPoint, HookRegistration, Plugins
from mcp_gateway.core.policy import Policy, Revocation, token_sha256
from mcp_gateway.core.server import CoreSettings, run
from mcp_gateway.core.service import Core

__all__ = [
    "Core",
    "CoreSettings",
    "HookPoint",
    "HookRegistration",
    "Plugins",
    "Policy",
    "Revocation",
    "run",
    "token_sha256",
]
