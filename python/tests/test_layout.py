"""The gateway's import rules (``docs/ARCHITECTURE.md``), checked on the source and in a fresh process.

- Only ``_grpc_backend`` imports grpc and the generated stubs; only ``_http_backend`` imports
  httpx for the boundary (``testing`` may: it is not the gateway), only ``_aiohttp_backend``
  aiohttp. The core of edge mode
  (``mcp_gateway.core``) is a separate package: only its ``grpc_server`` imports grpc and the
  stubs, it imports httpx nowhere, and no gateway module imports it (only ``__main__``
  starts it), but for ``_plugins``, which applies the core's ``plugins`` (and nothing else of
  the core) in the proxied modes, loaded only with a plugin file.
- No module of the gateway imports ``mcp_gateway.testing``.
- Importing the package or building the app loads no backend: ``make_backend`` imports the one
  chosen at start.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "mcp_gateway"


def imports_of(path: Path) -> set[str]:
    """Every module ``path`` imports, at any depth of its code (lazy imports included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def gateway_modules() -> dict[str, set[str]]:
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE)
        if relative.parts[0] == "_proto":
            continue
        modules[".".join(relative.with_suffix("").parts)] = imports_of(path)
    return modules


def importers(prefix: str) -> set[str]:
    return {
        name
        for name, imported in gateway_modules().items()
        if any(m == prefix or m.startswith(prefix + ".") for m in imported)
    }


def test_only_the_grpc_backend_imports_grpc_and_the_stubs() -> None:
    # core.observe: the gRPC server interceptor of the core's transport (docs/operations.md).
    assert importers("grpc") == {"_grpc_backend", "core.grpc_server", "core.observe"}
    assert importers("mcp_gateway._proto") == {"_grpc_backend", "core.grpc_server"}


def test_the_core_is_apart_from_the_gateway() -> None:
    modules = gateway_modules()
    gateway = {name for name in modules if not name.startswith("core.")}
    assert importers("mcp_gateway.core") & (gateway - {"__main__"}) == {"_plugins"}
    # One implementation of each plugin decision: the proxied modes run the core's own.
    borrowed_by_plugins = {m for m in modules["_plugins"] if m.startswith("mcp_gateway.core")}
    assert borrowed_by_plugins == {"mcp_gateway.core.plugins"}
    # What the core takes from the gateway: token verification, errors, the AuthContext's proto
    # mapping (so both build the very same AuthContext), the operations conventions (metric names
    # and the metrics listener, spans and traceparent: docs/operations.md); nothing of the app or
    # the backends' I/O.
    borrowed = {
        m
        for name, imported in gateway_modules().items()
        if name.startswith("core.")
        for m in imported
        if m.startswith("mcp_gateway.") and not m.startswith(("mcp_gateway.core", "mcp_gateway._proto"))
    }
    assert borrowed == {
        "mcp_gateway._auth",
        "mcp_gateway._errors",
        "mcp_gateway._grpc_backend",
        "mcp_gateway._metrics",
        "mcp_gateway._telemetry",
    }


def test_only_the_http_backend_imports_httpx_for_the_boundary() -> None:
    assert importers("httpx") == {"_http_backend", "testing"}


def test_only_the_aiohttp_backend_imports_aiohttp() -> None:
    assert importers("aiohttp") == {"_aiohttp_backend"}


def test_no_gateway_module_imports_the_test_helpers() -> None:
    assert importers("mcp_gateway.testing") == {"__main__"}, "only the `stack` command may"


def test_building_the_app_loads_no_backend() -> None:
    code = (
        "import sys; from mcp_gateway import create_app;"
        "loaded = [m for m in sys.modules if m.startswith(('mcp_gateway._grpc_backend',"
        " 'mcp_gateway._http_backend', 'mcp_gateway._aiohttp_backend', 'aiohttp',"
        " 'mcp_gateway._baseline', 'mcp_gateway._proto', 'grpc',"
        " 'mcp_gateway._plugins', 'mcp_gateway.core'))];"
        "print(','.join(sorted(loaded)))"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert out.stdout.strip() == ""
