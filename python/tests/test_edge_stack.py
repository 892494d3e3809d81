"""Edge mode end to end: the runtime serves the public endpoint and asks the real Python core.

One stack per core transport (``edge``: gRPC, ``edge-http``: HTTP/JSON), on real sockets: the
fixture upstream, the core (``python -m mcp_gateway core``, both sockets, a deny-list and a
redactor configured) and ``mcp-runtime --public-listen`` asking the core on the transport's
socket. Covered: a valid token calls a tool; refused tokens are 401 with ``WWW-Authenticate``
and never reach the upstream; a revocation on the watch stream stops a cached token (latency
printed, bound generous); calls are recorded at the core in batches; the core killed makes every
request 503 with a JSON-RPC error at once, and the core restarted is used again without
restarting the runtime; an injected ``x-contextforge-auth-context`` header is ignored; the hooks
(deny-list, redactor) apply; a stalled body is 408; a non-ASCII token is 401, as in the
proxied modes. A flood of garbage tokens from one client address does not starve valid callers
from others (single-flight, the per-client cap's 503 with ``Retry-After``), and a repeated bad
token reaches the core once within the denial cache's TTL (the core's ``/admin/stats``). And a
core with authentication off (``MCP_GATEWAY_AUTH_DISABLED=1``, as ``make
conformance`` runs it) makes every caller anonymous and public-only, as the gateway with the same
variable.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
import jwt
import pytest

from conftest import INITIALIZE, RUNTIME_FLAGS, SECRET, Gateway, Runtimes, _socket_dir, gateway_env
from mcp_gateway.testing import free_port, start_core, start_edge_runtime, start_gateway, stop

PLUGINS = {"deny_tools": {"alpha": ["payload"]}, "redact": "sk-[A-Za-z0-9]{8,}"}
"""The core's plugins here: team alpha may not call ``payload``; ``sk-...`` is redacted."""


STALL_MS = 3000
"""The runtimes' public header read timeout here, in milliseconds: also how long a body may stall."""

PUBLIC_HEAD_TIMEOUT_S = 10.0
"""The default of ``--public-header-read-timeout-ms``, in seconds."""


@dataclass
class EdgeStack(Gateway):
    """An edge stack: the public endpoint is the runtime's; the core can be killed and restarted."""

    core_http: str = ""
    core_grpc: str = ""
    core_env: dict[str, str] = field(default_factory=dict)
    plugins: Path | None = None
    log: Path | None = None
    core: Any = None
    runtime: Any = None

    def start_core(self) -> None:
        for path in (self.core_http, self.core_grpc):
            if os.path.exists(path):
                os.unlink(path)
        self.core = start_core(
            http_uds=self.core_http,
            grpc_uds=self.core_grpc,
            env=self.core_env,
            plugins=self.plugins,
            log=self.log,
        )

    def kill_core(self) -> None:
        self.core.kill()
        self.core.wait()

    def stats(self) -> dict[str, Any]:
        """The core's counters (``GET /admin/stats`` on its HTTP socket)."""
        with httpx.Client(transport=httpx.HTTPTransport(uds=self.core_http), timeout=5.0) as admin:
            r = admin.get("http://core/admin/stats")
            assert r.status_code == 200, r.text
            answer: dict[str, Any] = r.json()
            return answer

    def revoke(self, body: dict[str, Any]) -> None:
        """Revoke through the core's admin route on its HTTP socket."""
        with httpx.Client(transport=httpx.HTTPTransport(uds=self.core_http), timeout=5.0) as admin:
            r = admin.post("http://core/admin/revoke", json=body)
            assert r.status_code == 200, r.text


def _edge_stack(
    mode: str,
    workdir: Path,
    catalog: Path,
    *,
    core_env: dict[str, str],
    plugins: Path | None,
    runtime_extra: tuple[str, ...],
    tag: str,
) -> Iterator[EdgeStack]:
    """The core (restartable: :class:`EdgeStack`), then the runtime serving the public endpoint."""
    sockets = _socket_dir()
    port = free_port()
    stack = EdgeStack(
        mode,
        f"http://127.0.0.1:{port}",
        core_http=str(sockets / "core-http.sock"),
        core_grpc=str(sockets / "core-grpc.sock"),
        core_env=core_env,
        plugins=plugins,
        log=workdir / f"core-{tag}{mode}.log",
    )
    stack.start_core()
    try:
        stack.runtime = start_edge_runtime(
            catalog,
            str(sockets / "runtime-http.sock"),
            port=port,
            core_uds=stack.core_grpc if mode == "edge" else stack.core_http,
            core_transport="grpc" if mode == "edge" else "http",
            extra=runtime_extra,
            log=workdir / f"runtime-{tag}{mode}.log",
        )
        yield stack
    finally:
        stop(stack.runtime)
        stop(stack.core)


@pytest.fixture(scope="module", params=["edge", "edge-http"])
def edge(request: pytest.FixtureRequest, workdir: Path, catalog: Path) -> Iterator[EdgeStack]:
    mode: str = request.param
    plugins = workdir / f"plugins-{mode}.json"
    plugins.write_text(json.dumps(PLUGINS))
    yield from _edge_stack(
        mode,
        workdir,
        catalog,
        core_env={"JWT_SECRET_KEY": SECRET},
        plugins=plugins,
        # A short header read timeout, which also bounds a stalled body.
        runtime_extra=(*RUNTIME_FLAGS, "--public-header-read-timeout-ms", str(STALL_MS)),
        tag="",
    )


def _b64(obj: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


def _call(name: str, arguments: dict[str, Any], rid: int | str = 1) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": rid,
        "method": "tools/call",
        "params": {"name": name, "arguments": arguments},
    }


def _bad_tokens() -> dict[str, str | None]:
    now = int(time.time())
    claims = {"sub": "alice@example.com", "teams": ["alpha"], "scopes": ["tools.execute"]}
    return {
        "expired": jwt.encode({**claims, "exp": now - 60}, SECRET, algorithm="HS256"),
        "alg none": f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64({**claims, 'exp': now + 600})}.",
        "wrong key": jwt.encode({**claims, "exp": now + 600}, "another-key-" * 4, algorithm="HS256"),
        "garbage": "not.a.jwt-at-all",
        "missing": None,
    }


async def test_a_valid_token_calls_a_tool(edge: EdgeStack) -> None:
    async with httpx.AsyncClient(timeout=30.0) as http:
        token = edge.token()
        session = await edge.initialize(http, token)
        r = await http.post(
            edge.url, json=_call("echo", {"text": "hello"}), headers=edge.headers(token, session)
        )
        assert r.status_code == 200, r.text
        assert r.json()["result"]["content"][0]["text"] == "hello"
        # The virtual server's endpoint too.
        scoped = f"{edge.base}/servers/echo-only/mcp"
        session = await edge.initialize(http, token, "/servers/echo-only/mcp")
        r = await http.post(
            scoped, json=_call("echo", {"text": "scoped"}), headers=edge.headers(token, session)
        )
        assert r.status_code == 200, r.text
        assert r.json()["result"]["content"][0]["text"] == "scoped"


@pytest.mark.parametrize("kind", list(_bad_tokens()))
async def test_a_refused_token_is_401_and_never_reaches_the_upstream(edge: EdgeStack, kind: str) -> None:
    bad = _bad_tokens()[kind]
    async with httpx.AsyncClient(timeout=30.0) as http:
        good = edge.token()
        session = await edge.initialize(http, good)
        # A call that would keep the upstream busy for 5 s if it reached it.
        started = time.monotonic()
        r = await http.post(edge.url, json=_call("sleep", {"ms": 5000}), headers=edge.headers(bad, session))
        assert r.status_code == 401, r.text
        assert time.monotonic() - started < 2.0
        challenge = r.headers["www-authenticate"]
        assert challenge.startswith('Bearer realm="mcp-gateway"')
        if bad is not None:
            assert 'error="invalid_token"' in challenge
            assert bad not in r.text
        assert r.json()["error"]["code"] == -32001
        assert await edge.inflight(http, good, session) == 0


async def test_the_hooks_of_the_core_apply(edge: EdgeStack) -> None:
    async with httpx.AsyncClient(timeout=30.0) as http:
        token = edge.token()  # team alpha: `payload` is on its deny-list
        session = await edge.initialize(http, token)
        r = await http.post(
            edge.url, json=_call("payload", {"bytes": 10}), headers=edge.headers(token, session)
        )
        assert r.status_code == 200, r.text
        assert r.json()["error"]["code"] == -32003, r.text
        r = await http.post(
            edge.url,
            json=_call("echo", {"text": "key sk-ABCDEFGH1234 end"}),
            headers=edge.headers(token, session),
        )
        assert r.status_code == 200, r.text
        assert r.json()["result"]["content"][0]["text"] == "key [REDACTED] end"


async def test_calls_are_recorded_at_the_core_in_batches(edge: EdgeStack) -> None:
    before = edge.stats()["records"]["records"]
    async with httpx.AsyncClient(timeout=30.0) as http:
        token = edge.token()
        session = await edge.initialize(http, token)
        for i in range(5):
            r = await http.post(
                edge.url, json=_call("echo", {"text": "r"}, i), headers=edge.headers(token, session)
            )
            assert r.status_code == 200, r.text
    deadline = time.monotonic() + 5.0
    while edge.stats()["records"]["records"] < before + 5 and time.monotonic() < deadline:
        await anyio.sleep(0.05)
    records = edge.stats()["records"]
    assert records["records"] >= before + 5
    assert records["dropped"] == 0


async def test_a_stalled_body_is_408_and_the_connection_closed(edge: EdgeStack) -> None:
    port = int(edge.base.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = (
        "POST /mcp HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n"
        f"authorization: Bearer {edge.token()}\r\ncontent-length: 100\r\n\r\n"
        '{"jsonrpc":'
    )
    started = time.monotonic()
    writer.write(head.encode())
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), timeout=STALL_MS / 1000 * 5)
    elapsed = time.monotonic() - started
    writer.close()
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"Request body stalled" in answer
    assert STALL_MS / 1000 * 0.9 <= elapsed < STALL_MS / 1000 * 4


async def test_a_non_ascii_token_is_401_as_in_the_proxied_modes(edge: EdgeStack) -> None:
    # The gateway reads headers as Latin-1 and refuses such a credential with its 401; the edge
    # gave 400 (a malformed header) before. Raw bytes: httpx sends only ASCII header values.
    port = int(edge.base.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    body = json.dumps(_call("echo", {"text": "x"})).encode()
    head = (
        b"POST /mcp HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n"
        b"accept: application/json, text/event-stream\r\n"
        b"authorization: Bearer t\xc3\xa9st.\xff\r\nconnection: close\r\n"
        + f"content-length: {len(body)}\r\n\r\n".encode()
    )
    writer.write(head + body)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), timeout=10)
    writer.close()
    status_line, _, rest = answer.partition(b"\r\n")
    headers, _, payload = rest.partition(b"\r\n\r\n")
    assert status_line.startswith(b"HTTP/1.1 401"), answer[:300]
    assert b'www-authenticate: bearer realm="mcp-gateway", error="invalid_token"' in headers.lower()
    error = json.loads(payload)["error"]
    assert error["code"] == -32001
    assert error["message"].startswith("Unauthorized: invalid token")


async def test_an_injected_auth_context_header_is_ignored(edge: EdgeStack) -> None:
    forged = _b64({"email": "admin@example.com", "is_admin": True, "teams": None, "scopes": []})
    async with httpx.AsyncClient(timeout=30.0) as http:
        # Without a token the header does not authenticate.
        r = await http.post(
            edge.url,
            json={"jsonrpc": "2.0", "id": 0, "method": "ping"},
            headers=edge.headers(None, **{"x-contextforge-auth-context": forged}),
        )
        assert r.status_code == 401, r.text
        # With a public-only token it widens nothing: the same tools as without it.
        token = edge.token("bob@example.com", teams=[])
        lists = []
        for extra in ({}, {"x-contextforge-auth-context": forged}):
            session = await edge.initialize(http, token)
            list_call = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
            r = await http.post(edge.url, json=list_call, headers=edge.headers(token, session, **extra))
            assert r.status_code == 200, r.text
            lists.append(sorted(t["name"] for t in r.json()["result"]["tools"]))
        assert lists[0] == lists[1]
        assert not any(name.startswith(("alpha_", "beta_")) for name in lists[1])


async def test_a_revocation_on_the_watch_stream_stops_a_cached_token(edge: EdgeStack) -> None:
    async with httpx.AsyncClient(timeout=30.0) as http:
        token = edge.token("carol@example.com")
        session = await edge.initialize(http, token)  # resolved and cached
        ping = {"jsonrpc": "2.0", "id": 2, "method": "ping"}
        r = await http.post(edge.url, json=ping, headers=edge.headers(token, session))
        assert r.status_code == 200, r.text
        started = time.monotonic()
        edge.revoke({"tokenSha256": hashlib.sha256(token.encode()).hexdigest()})
        status = 200
        while status == 200 and time.monotonic() - started < 10.0:
            status = (await http.post(edge.url, json=ping, headers=edge.headers(token, session))).status_code
        latency_ms = (time.monotonic() - started) * 1000
        print(f"\n{edge.mode}: revoked token refused after {latency_ms:.1f} ms (admin request included)")
        assert status == 401
        # Well below the core's cache max age (30 s): the watch stream, not a TTL, dropped it.
        assert latency_ms < 5000
        # Another token of the same subject still works; then the subject is revoked.
        other = edge.token("carol@example.com", scopes=["tools.execute", "x"])
        session = await edge.initialize(http, other)
        edge.revoke({"subjectEmail": "carol@example.com"})
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            status = (await http.post(edge.url, json=ping, headers=edge.headers(other, session))).status_code
            if status == 401:
                break
        assert status == 401


async def test_the_core_killed_fails_closed_and_its_return_is_used_without_a_runtime_restart(
    edge: EdgeStack,
) -> None:
    async with httpx.AsyncClient(timeout=30.0) as http:
        token = edge.token()
        session = await edge.initialize(http, token)  # cached
        runtime_pid = edge.runtime.pid
        edge.kill_core()
        try:
            await anyio.sleep(0.2)
            slowest = 0.0
            for i in range(20):
                started = time.monotonic()
                r = await http.post(
                    edge.url, json=_call("echo", {"text": "x"}, i), headers=edge.headers(token, session)
                )
                slowest = max(slowest, time.monotonic() - started)
                assert r.status_code == 503, r.text
                assert r.json()["error"]["code"] == -32000
            print(f"\n{edge.mode}: core down, slowest 503 in {slowest * 1000:.1f} ms")
            assert slowest < 1.0
        finally:
            edge.start_core()
        deadline = time.monotonic() + 10.0
        status = 503
        while time.monotonic() < deadline:
            r = await http.post(
                edge.url, json=_call("echo", {"text": "back"}), headers=edge.headers(token, session)
            )
            status = r.status_code
            if status == 200:
                break
            await anyio.sleep(0.05)
        assert status == 200
        assert r.json()["result"]["content"][0]["text"] == "back"
        assert edge.runtime.poll() is None
        assert edge.runtime.pid == runtime_pid


# -- a flood of bad credentials (single-flight, caps per client and in all, the denial cache) ------

FLOOD_WORKERS = 64
"""Concurrent requests of the flooding client, each with a new garbage token."""

VALID_CALLERS = 14
"""Valid callers, each from its own loopback address, each with a token the runtime never saw."""


def _client_at(address: str, connections: int) -> httpx.AsyncClient:
    """A client whose connections come from ``address`` (any 127.0.0.0/8 address is local)."""
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    transport = httpx.AsyncHTTPTransport(local_address=address, limits=limits)
    return httpx.AsyncClient(transport=transport, timeout=30.0)


async def test_a_flood_of_bad_tokens_from_one_client_does_not_starve_valid_callers(edge: EdgeStack) -> None:
    ping = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
    statuses: dict[int, int] = {}
    busy_answers: list[httpx.Response] = []
    stop_flood = anyio.Event()
    flooding = anyio.Event()

    async def flood_worker(http: httpx.AsyncClient, worker: int) -> None:
        n = 0
        while not stop_flood.is_set():
            n += 1
            garbage = f"garbage-{worker}-{n}-{os.urandom(6).hex()}"
            r = await http.post(edge.url, json=ping, headers=edge.headers(garbage))
            statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
            if r.status_code == 503 and len(busy_answers) < 4:
                busy_answers.append(r)
            flooding.set()

    valid: list[int] = []

    async def valid_caller(i: int) -> None:
        # A token never seen: the runtime must ask the core for it, during the flood.
        token = edge.token(f"user{i}@example.com")
        async with _client_at(f"127.0.0.{10 + i}", 1) as http:
            r = await http.post(edge.url, json=INITIALIZE, headers=edge.headers(token))
            valid.append(r.status_code)
            assert r.status_code == 200, f"valid caller {i}: {r.status_code} {r.text}"

    before = edge.stats()["resolve"]
    async with _client_at("127.0.0.2", FLOOD_WORKERS) as flood, anyio.create_task_group() as tg:
        for w in range(FLOOD_WORKERS):
            tg.start_soon(flood_worker, flood, w)
        await flooding.wait()
        await anyio.sleep(0.3)  # the flood is in full swing
        try:
            async with anyio.create_task_group() as callers:
                for i in range(VALID_CALLERS):
                    callers.start_soon(valid_caller, i)
        finally:
            stop_flood.set()
    after = edge.stats()["resolve"]
    print(
        f"\n{edge.mode}: flood answers by status {dict(sorted(statuses.items()))}; "
        f"{after['calls'] - before['calls']} ResolveCaller calls reached the core"
    )
    assert valid == [200] * VALID_CALLERS
    # The flood got refusals only: 401 from the core, or 503 at its client's cap.
    assert set(statuses) <= {401, 503}, statuses
    assert statuses.get(503, 0) > 0, statuses
    for r in busy_answers:
        assert r.headers["retry-after"] == "1"
        error = r.json()["error"]
        assert error["code"] == -32000
        assert "caller resolutions are in progress from this client" in error["message"]
    # Calls refused at the cap never reached the core.
    assert after["calls"] - before["calls"] <= statuses.get(401, 0) + VALID_CALLERS


async def test_a_repeated_bad_token_reaches_the_core_once_within_the_denial_ttl(edge: EdgeStack) -> None:
    ping = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
    bad = f"garbage-{os.urandom(8).hex()}"
    before = edge.stats()["resolve"]
    async with _client_at("127.0.0.3", 32) as http:
        # Concurrent requests share one call; later ones are answered from the denial cache.
        concurrent = await asyncio.gather(
            *(http.post(edge.url, json=ping, headers=edge.headers(bad)) for _ in range(32))
        )
        sequential = [await http.post(edge.url, json=ping, headers=edge.headers(bad)) for _ in range(20)]
    after = edge.stats()["resolve"]
    for r in [*concurrent, *sequential]:
        assert r.status_code == 401, r.text
        assert r.headers["www-authenticate"].startswith('Bearer realm="mcp-gateway", error="invalid_token"')
        assert r.json()["error"]["code"] == -32001
        assert bad not in r.text
    # Well within the 5 s TTL: one call reached the core (its answer served the 52 requests).
    assert after["calls"] - before["calls"] == 1, (before, after)
    assert after["denied"] - before["denied"] == 1
    # A revocation (any watch event) clears the denial cache: the token is asked again.
    edge.revoke({"subjectEmail": "nobody@example.com"})
    deadline = time.monotonic() + 5.0
    async with _client_at("127.0.0.3", 1) as http:
        while True:
            r = await http.post(edge.url, json=ping, headers=edge.headers(bad))
            assert r.status_code == 401
            if edge.stats()["resolve"]["calls"] > after["calls"]:
                break
            assert time.monotonic() < deadline, "the revocation did not clear the denial cache"
            await anyio.sleep(0.02)


# -- hook payloads count in the bytes-in-flight budget -------------------------------------------

RESULT_BYTES = 2 * 1024 * 1024
"""The ``payload`` result of the budget tests: fits the budget alone, not with the hook's copy."""

BUDGET = RESULT_BYTES * 3 // 2
"""``--max-bytes-in-flight`` of the budget stacks."""


@pytest.fixture(scope="module", params=["edge", "edge-http"])
def budget_stacks(
    request: pytest.FixtureRequest, workdir: Path, catalog: Path
) -> Iterator[dict[str, EdgeStack]]:
    """Two edge stacks with a small byte budget: the core's redactor (a post hook on every tool) or none."""
    mode: str = request.param
    redactor = workdir / f"plugins-redact-{mode}.json"
    redactor.write_text(json.dumps({"redact": PLUGINS["redact"]}))
    extra = (*RUNTIME_FLAGS, "--max-bytes-in-flight", str(BUDGET))
    stacks = {
        "hook": _edge_stack(
            mode,
            workdir,
            catalog,
            core_env={"JWT_SECRET_KEY": SECRET},
            plugins=redactor,
            runtime_extra=extra,
            tag="budget-hook-",
        ),
        "none": _edge_stack(
            mode,
            workdir,
            catalog,
            core_env={"JWT_SECRET_KEY": SECRET},
            plugins=None,
            runtime_extra=extra,
            tag="budget-none-",
        ),
    }
    started: dict[str, EdgeStack] = {}
    try:
        for name, gen in stacks.items():
            started[name] = next(gen)
        yield started
    finally:
        for gen in stacks.values():
            gen.close()


async def _payload(stack: EdgeStack, http: httpx.AsyncClient, size: int) -> httpx.Response:
    token = stack.token("erin@example.com", teams=["beta"])
    session = await stack.initialize(http, token)
    return await http.post(
        stack.url, json=_call("payload", {"size_bytes": size}), headers=stack.headers(token, session)
    )


async def test_a_post_hooks_payloads_count_in_the_byte_budget(budget_stacks: dict[str, EdgeStack]) -> None:
    async with httpx.AsyncClient(timeout=30.0) as http:
        # Without a hook the result fits the budget.
        r = await _payload(budget_stacks["none"], http, RESULT_BYTES)
        assert r.status_code == 200, r.text[:300]
        assert len(r.json()["result"]["content"][0]["text"]) == RESULT_BYTES
        # With the redactor the result and the copy the hook is sent do not: the budget's own
        # 503 and JSON-RPC error (this request alone exceeds it: no Retry-After), never served
        # with uncounted copies (before, the hook's copies were not counted and this was 200).
        hooked = budget_stacks["hook"]
        r = await _payload(hooked, http, RESULT_BYTES)
        assert r.status_code == 503, r.text[:300]
        error = r.json()["error"]
        assert error["code"] == -32000
        assert (
            error["message"]
            == f"Server busy: this request alone exceeds the budget of {BUDGET} bytes in flight"
        )
        assert "retry-after" not in r.headers
        # Half the size fits with the hook's copy: served, through the hook.
        r = await _payload(hooked, http, RESULT_BYTES // 2)
        assert r.status_code == 200, r.text[:300]
        assert len(r.json()["result"]["content"][0]["text"]) == RESULT_BYTES // 2
        # Nothing stayed counted: the same call again is served too.
        r = await _payload(hooked, http, RESULT_BYTES // 2)
        assert r.status_code == 200, r.text[:300]


# -- the core with authentication off, as `make conformance` runs the edge modes ------------------


@pytest.fixture(scope="module")
def open_gateway(workdir: Path, catalog: Path, runtimes: Runtimes) -> Iterator[Gateway]:
    """The proxied reference: a gRPC-mode gateway with ``MCP_GATEWAY_AUTH_DISABLED=1``."""
    port = free_port()
    env = {**gateway_env("grpc", catalog, runtimes.get()), "MCP_GATEWAY_AUTH_DISABLED": "1"}
    process = start_gateway(env, port, log=workdir / "gateway-auth-off.log")
    try:
        yield Gateway("grpc", f"http://127.0.0.1:{port}", processes=[process])
    finally:
        stop(process)


@pytest.fixture(scope="module", params=["edge", "edge-http"])
def open_edge(request: pytest.FixtureRequest, workdir: Path, catalog: Path) -> Iterator[EdgeStack]:
    """An edge stack whose core runs with ``MCP_GATEWAY_AUTH_DISABLED=1`` and no secret."""
    yield from _edge_stack(
        request.param,
        workdir,
        catalog,
        core_env={"MCP_GATEWAY_AUTH_DISABLED": "1", "JWT_SECRET_KEY": ""},
        plugins=None,
        runtime_extra=RUNTIME_FLAGS,
        tag="auth-off-",
    )


async def test_a_half_sent_head_is_dropped_after_the_default_public_timeout(open_edge: EdgeStack) -> None:
    # The stack runs with the runtime's defaults: 10 s for a public head (30 s on its sockets).
    port = int(open_edge.base.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=PUBLIC_HEAD_TIMEOUT_S * 3) as sock:
        started = time.monotonic()
        sock.sendall(b"POST /mcp HTTP/1.1\r\nHost: localhost\r\nContent-Type: applica")
        try:
            closed = sock.recv(65536)
        except ConnectionResetError:
            closed = b""
        elapsed = time.monotonic() - started
    print(f"\n{open_edge.mode}: a half-sent head was dropped after {elapsed:.2f} s")
    # Dropped (hyper may first answer 408), not kept for the socket timeout of 30 s.
    assert closed == b"" or closed.startswith(b"HTTP/1.1 408"), closed[:200]
    assert PUBLIC_HEAD_TIMEOUT_S * 0.9 <= elapsed < PUBLIC_HEAD_TIMEOUT_S * 2
    async with httpx.AsyncClient(timeout=10.0) as http:
        assert (await http.get(f"{open_edge.base}/health", headers={"host": "localhost"})).status_code == 200


async def _tool_names(gateway: Gateway, http: httpx.AsyncClient, token: str | None) -> list[str]:
    """``tools/list`` after a raw initialize, sending ``token`` (or none) on every request."""
    r = await http.post(gateway.url, json=INITIALIZE, headers=gateway.headers(token))
    assert r.status_code == 200, r.text
    session = r.headers["mcp-session-id"]
    note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    r = await http.post(gateway.url, json=note, headers=gateway.headers(token, session))
    assert r.status_code == 202, r.text
    listing = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}
    r = await http.post(gateway.url, json=listing, headers=gateway.headers(token, session))
    assert r.status_code == 200, r.text
    return sorted(tool["name"] for tool in r.json()["result"]["tools"])


async def test_with_the_cores_auth_off_every_caller_is_anonymous_as_with_the_gateways(
    open_edge: EdgeStack, open_gateway: Gateway
) -> None:
    admin = open_edge.token("root@example.com", is_admin=True, teams=None)
    async with httpx.AsyncClient(timeout=30.0) as http:
        public = await _tool_names(open_gateway, http, None)
        assert "echo" in public
        assert not [name for name in public if name.startswith(("alpha_", "beta_"))]
        # No token, an admin's token (which would see every team), a refused one: all anonymous,
        # public entries only, never a 401 - what the gateway does with the same variable.
        for token in (None, admin, *(t for t in _bad_tokens().values() if t)):
            assert await _tool_names(open_edge, http, token) == public
