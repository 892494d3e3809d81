"""The shared boundary vectors (``contract/vectors/boundary.json``) through the gateway.

The same list the Rust tests send to the runtime directly and the TypeScript client sends over
gRPC, here sent to the gateway's public endpoint in every mode (Python baseline, HTTP/JSON, gRPC)
and to the runtime's own public endpoint in the edge modes (callers resolved by the core over gRPC
or HTTP/JSON), so that each client side of the boundary is held to one list. The runtime and gateways here use
the default message limit (64 MiB), which the 20 MiB payload case needs; the format of a case is
described in ``contract/vectors/README.md``.
"""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import INITIALIZE, SECRET, Runtime, _socket_dir, gateway_env
from mcp_gateway._auth import mint_token
from mcp_gateway.testing import (
    EDGE_MODES,
    free_port,
    start_core,
    start_edge_runtime,
    start_gateway,
    start_runtime,
    stop,
)

VECTORS_PATH = Path(__file__).resolve().parents[2] / "contract" / "vectors" / "boundary.json"
VECTORS: dict[str, Any] = json.loads(VECTORS_PATH.read_text())
CASES: list[dict[str, Any]] = VECTORS["cases"]
DEFAULT_LIMIT = 64 * 1024 * 1024

MODES = ["python", "http", "http-httpx", "grpc", "edge", "edge-http"]
"""The gateway's modes (HTTP/JSON with each of its two clients), then the runtime serving the
public endpoint itself and asking the core over gRPC (``edge``) or HTTP/JSON (``edge-http``)."""


class Target:
    """One gateway of a mode, with the two sessions the vectors name."""

    def __init__(self, mode: str, base: str) -> None:
        self.mode = mode
        self.base = base
        auth = VECTORS["auth"]
        self.token = mint_token(SECRET, auth["email"], teams=auth["teams"], is_admin=auth["is_admin"])
        self.sessions: dict[str, str] = {}

    def open_sessions(self, http: httpx.Client) -> None:
        for name, path in (("live", "/mcp"), ("scoped", "/servers/echo-only/mcp")):
            headers = {"authorization": f"Bearer {self.token}", "accept": VECTORS["default_accept"]}
            r = http.post(f"{self.base}{path}", json=INITIALIZE, headers=headers)
            assert r.status_code == 200, r.text
            sid = r.headers["mcp-session-id"]
            note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
            r = http.post(f"{self.base}{path}", json=note, headers={**headers, "mcp-session-id": sid})
            assert r.status_code == 202, r.text
            self.sessions[name] = sid


@pytest.fixture(scope="module")
def targets(workdir: Path, catalog: Path) -> Iterator[dict[str, Target]]:
    """Every mode's public endpoint, sessions opened.

    A runtime with the default limits and one gateway per gateway mode; for the edge modes a core
    (both sockets) and one edge runtime per core transport.
    """
    sockets = _socket_dir()
    log = workdir / "runtime-vectors.log"
    rt = Runtime(None, str(sockets / "http.sock"), str(sockets / "grpc.sock"), catalog, log)
    rt.process = start_runtime(catalog, rt.http_uds, rt.grpc_uds, log=log)
    processes = [rt.process]
    found: dict[str, Target] = {}
    try:
        core_http, core_grpc = str(sockets / "core-http.sock"), str(sockets / "core-grpc.sock")
        core = start_core(
            http_uds=core_http,
            grpc_uds=core_grpc,
            env={"JWT_SECRET_KEY": SECRET},
            log=workdir / "core-vectors.log",
        )
        processes.append(core)
        with httpx.Client(timeout=30.0) as http:
            for mode in MODES:
                if mode in EDGE_MODES:
                    port = free_port()
                    processes.append(
                        start_edge_runtime(
                            catalog,
                            str(sockets / f"{mode}.sock"),
                            port=port,
                            core_uds=core_grpc if mode == "edge" else core_http,
                            core_transport="grpc" if mode == "edge" else "http",
                            log=workdir / f"runtime-vectors-{mode}.log",
                        )
                    )
                    target = Target(mode, f"http://127.0.0.1:{port}")
                    target.open_sessions(http)
                    found[mode] = target
                    continue
                env = gateway_env(mode, catalog, rt)
                env["MCP_RUNTIME_MAX_MESSAGE_BYTES"] = str(DEFAULT_LIMIT)
                port = free_port()
                processes.append(start_gateway(env, port, log=workdir / f"gateway-vectors-{mode}.log"))
                target = Target(mode, f"http://127.0.0.1:{port}")
                target.open_sessions(http)
                found[mode] = target
        yield found
    finally:
        for process in reversed(processes):
            stop(process)


def _body(req: dict[str, Any]) -> bytes:
    if "body" in req:
        body = copy.deepcopy(req["body"])
        fill = req.get("fill")
        if fill:
            *parents, last = fill["pointer"].split("/")[1:]
            node = body
            for key in parents:
                node = node[int(key)] if isinstance(node, list) else node[key]
            node[last] = fill["char"] * fill["count"]
        return json.dumps(body, separators=(",", ":")).encode()
    if "body_text" in req:
        return str(req["body_text"]).encode()
    if "body_base64" in req:
        return base64.b64decode(req["body_base64"])
    return b""


def _pointer(doc: Any, pointer: str) -> Any:
    node = doc
    for raw in pointer.split("/")[1:]:
        key = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, list):
            if not key.isdigit() or int(key) >= len(node):
                return None
            node = node[int(key)]
        elif isinstance(node, dict):
            node = node.get(key)
        else:
            return None
    return node


def _sse_events(text: str) -> list[Any]:
    return [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: ")]


def check(case: dict[str, Any], r: httpx.Response) -> None:
    """Check a response against the case's ``expect`` (contract/vectors/README.md)."""
    e = case["expect"]
    what = f"{case['name']}: body {r.content[:300]!r}"
    assert r.status_code == e["status"], f"{what}: status"
    is_sse = r.headers.get("content-type", "").startswith("text/event-stream")
    if e["error_code"] is not None:
        assert _pointer(r.json(), "/error/code") == e["error_code"], f"{what}: error code"
    elif r.content and not is_sse:
        assert "error" not in r.json(), f"{what}: unexpected error"
    if "content_type" in e:
        assert r.headers.get("content-type") == e["content_type"], f"{what}: content type"
    if e.get("empty_body"):
        assert r.content == b"", f"{what}: body not empty"
    for c in e.get("result", []):
        at = _pointer(r.json(), c["pointer"])
        if "equals" in c:
            assert at == c["equals"], f"{case['name']}: {c}"
        if "length" in c:
            assert (len(at.encode()) if isinstance(at, str) else 0) == c["length"], f"{case['name']}: {c}"
        if "array_length" in c:
            assert (len(at) if isinstance(at, list) else 0) == c["array_length"], f"{case['name']}: {c}"
        for name in c.get("names_include", []):
            names = [t.get("name") for t in at] if isinstance(at, list) else []
            assert name in names, f"{case['name']}: {name} missing from {names}"
    if "sse" in e:
        sse = e["sse"]
        events = _sse_events(r.text)
        progress = [x for x in events if x.get("method") == "notifications/progress"]
        assert len(progress) == sse["progress"], what
        assert all(p["params"]["progressToken"] == sse["progress_token"] for p in progress), what
        assert events[-1].get("id") == sse["final_id"], what
        first = next(i for i, x in enumerate(events) if x.get("method") == "notifications/progress")
        assert first < len(events) - 1, f"{what}: progress before the result"


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_vector(targets: dict[str, Target], mode: str, case: dict[str, Any]) -> None:
    target = targets[mode]
    req = case["request"]
    limit = case["expect"].get("min_max_message_bytes", 0)
    assert limit <= DEFAULT_LIMIT, f"{case['name']} needs a message limit of {limit} bytes"
    headers = {"authorization": f"Bearer {target.token}"}
    session = target.sessions.get(req["session"], req["session"])
    if req["session"] != "none":
        headers["mcp-session-id"] = session
    if "protocol_version" in req:
        headers["mcp-protocol-version"] = req["protocol_version"]
    headers["accept"] = req.get("accept", VECTORS["default_accept"])
    if req["method"] == "POST":
        headers["content-type"] = "application/json"
    path = f"/servers/{req['server_id']}/mcp" if "server_id" in req else "/mcp"
    body = _body(req)
    with httpx.Client(timeout=60.0) as http:
        r = http.request(req["method"], f"{target.base}{path}", headers=headers, content=body or None)
    check(case, r)
