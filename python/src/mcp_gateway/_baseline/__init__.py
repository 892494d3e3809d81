"""The Python baseline (mode ``python``): the MCP runtime's behaviour in-process, on the official mcp SDK.

Same catalog file, same visibility and session-ownership rules, same status codes and JSON-RPC
error codes as the runtime (``docs/http-boundary.md``); the differences that remain are listed in
``python/README.md``.

Layout:

- ``front``: :class:`PythonBaseline`, the backend: lifecycle, the runtime's checks, reshaping;
- ``server``: the SDK server whose handlers serve the catalog;
- ``asgi``: driving the SDK's session manager for one request, in process;
- ``sessions``: the session table: owners, idle expiry, the per-subject limits;
- ``catalog``: the catalog file and the entries discovered from the upstreams;
- ``live``: the live catalog: the current version, re-listed on an upstream's
  ``list_changed``, reloaded on ``SIGHUP``; the sessions whose view changed are told;
- ``upstream``: one shared SDK client session per upstream, with the message size caps and
  one reconnect when the upstream forgot the session.
"""

from __future__ import annotations

from mcp_gateway._baseline.front import PROTOCOL_VERSIONS, PythonBaseline
from mcp_gateway._baseline.sessions import Sessions

__all__ = ["PROTOCOL_VERSIONS", "PythonBaseline", "Sessions"]
