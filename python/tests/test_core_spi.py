"""The Python core's Core SPI over both transports, against the real process on real Unix sockets.

One core per module (``python -m mcp_gateway core``, both sockets, the vector file's plugins),
driven by a real grpc.aio client and a real httpx client over the HTTP socket. Every semantic
test runs on both transports with the same inputs and expectations: the shared vectors of
``contract/vectors/core_spi.json`` (callers and hooks), revocations arriving on WatchPolicy,
call records. gRPC answers are normalized into the HTTP/JSON shapes of ``docs/core-spi.md``
here, independently of the core's own mapping, so that one expectation covers both.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import httpx
import jwt
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mcp_gateway import authenticate, mint_token
from mcp_gateway._auth import anonymous_context
from mcp_gateway._proto.mcp.core.v1 import core_pb2 as pb
from mcp_gateway._proto.mcp.core.v1 import core_pb2_grpc as pb_grpc
from mcp_gateway._proto.mcp.runtime.v1 import runtime_pb2 as rpb
from mcp_gateway.testing import repo_root, start_core, stop

VECTORS = json.loads((repo_root() / "contract" / "vectors" / "core_spi.json").read_text())
SECRET = secrets.token_urlsafe(32)
TRANSPORTS = ["grpc", "http"]
CHANNEL_OPTIONS = [("grpc.default_authority", "localhost"), ("grpc.enable_http_proxy", 0)]
WATCH_BOUND_S = 5.0  # generous: the measured latency is printed, milliseconds are expected

POINTS = {
    "pre_invoke": pb.HOOK_POINT_PRE_INVOKE,
    "post_invoke": pb.HOOK_POINT_POST_INVOKE,
    "post_fetch": pb.HOOK_POINT_POST_FETCH,
}
POINT_NAMES = {number: name for name, number in POINTS.items()}


# -- the tokens of the vectors -------------------------------------------------------------------


def _b64(obj: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


def authorization_of(spec: dict[str, Any]) -> str:
    """The Authorization value a vector's ``token`` describes."""
    kind = spec["kind"]
    sub = spec.get("sub", "alice@example.com")
    if kind == "valid":
        token = mint_token(
            SECRET,
            sub,
            teams=spec.get("teams"),
            is_admin=spec.get("is_admin", False),
            scopes=spec.get("scopes", ["tools.execute"]),
        )
    elif kind == "expired":
        token = mint_token(SECRET, sub, ttl_s=-60)
    elif kind == "alg_none":
        token = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64({'sub': sub, 'exp': int(time.time()) + 600})}."
    elif kind == "wrong_key":
        token = mint_token(secrets.token_urlsafe(32), sub)
    elif kind == "no_sub":
        token = jwt.encode({"exp": int(time.time()) + 600}, SECRET, algorithm="HS256")
    elif kind == "garbage":
        token = spec["value"]
    elif kind == "raw":
        return str(spec["authorization"])
    elif kind == "missing":
        return ""
    else:
        raise AssertionError(f"unknown token kind {kind}")
    return f"Bearer {token}"


# -- one client interface over both transports ---------------------------------------------------


def auth_json_of_proto(auth: rpb.AuthContext) -> dict[str, Any]:
    """The AuthContext JSON of docs/http-boundary.md from the proto (the test's own reading)."""
    teams: list[str] | None
    if auth.team_scope == rpb.TEAM_SCOPE_UNRESTRICTED:
        teams = None
    elif auth.team_scope == rpb.TEAM_SCOPE_TEAMS:
        teams = list(auth.teams)
    else:
        assert auth.team_scope == rpb.TEAM_SCOPE_PUBLIC_ONLY, auth
        teams = []
    return {
        "email": auth.subject_email,
        "is_admin": auth.is_admin,
        "teams": teams,
        "scopes": list(auth.scopes),
        "token_exp": auth.token_expires_at_unix_s,
        "traceparent": auth.traceparent,
        "trace_id": auth.trace_id,
    }


def auth_proto_of_json(obj: dict[str, Any]) -> rpb.AuthContext:
    teams = obj.get("teams")
    if teams is None:
        scope, names = rpb.TEAM_SCOPE_UNRESTRICTED, []
    elif not teams:
        scope, names = rpb.TEAM_SCOPE_PUBLIC_ONLY, []
    else:
        scope, names = rpb.TEAM_SCOPE_TEAMS, teams
    return rpb.AuthContext(
        subject_email=obj.get("email", ""),
        is_admin=obj.get("is_admin", False),
        team_scope=scope,
        teams=names,
        scopes=obj.get("scopes", []),
        token_expires_at_unix_s=obj.get("token_exp", 0),
    )


def event_json_of_proto(msg: pb.WatchPolicyResponse) -> dict[str, Any]:
    if msg.HasField("snapshot"):
        hooks = [
            {"point": POINT_NAMES[h.point], "name": h.name, "plugin": h.plugin} for h in msg.snapshot.hooks
        ]
        return {
            "generation": msg.generation,
            "snapshot": {"hooks": hooks, "generation": msg.snapshot.generation},
        }
    target = msg.revocation.WhichOneof("target")
    key = {"token_sha256": "tokenSha256", "subject_email": "subjectEmail", "all": "all"}[target]
    return {"generation": msg.generation, "revocation": {key: getattr(msg.revocation, target)}}


class Watch:
    """One open WatchPolicy stream: ``next()`` gives the next event as JSON."""

    def __init__(self, events: AsyncIterator[dict[str, Any]]) -> None:
        self._events = events

    async def next(self, timeout_s: float = WATCH_BOUND_S) -> dict[str, Any]:
        return await asyncio.wait_for(anext(self._events), timeout_s)


class CoreClient:
    """The Core SPI over one transport, answers in the HTTP/JSON shapes."""

    transport: str

    async def resolve(self, request: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    async def invoke_hook(self, request: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    async def record_calls(self, records: list[dict[str, Any]], dropped: int) -> None:
        raise NotImplementedError

    def watch(self, watcher: str) -> contextlib.AbstractAsyncContextManager[Watch]:
        raise NotImplementedError


class GrpcClient(CoreClient):
    transport = "grpc"

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.auth = pb_grpc.AuthPolicyServiceStub(channel)
        self.plugins = pb_grpc.PluginServiceStub(channel)
        self.observability = pb_grpc.ObservabilityServiceStub(channel)

    async def resolve(self, request: dict[str, Any]) -> dict[str, Any]:
        r = await self.auth.ResolveCaller(
            pb.ResolveCallerRequest(
                authorization=request.get("authorization", ""),
                client_address=request.get("clientAddress", ""),
                server_id=request.get("serverId", ""),
                request_id=request.get("requestId", ""),
                traceparent=request.get("traceparent", ""),
            ),
            timeout=10,
        )
        if r.WhichOneof("outcome") == "caller":
            return {
                "caller": auth_json_of_proto(r.caller),
                "cacheMaxAgeMs": r.cache_max_age_ms,
                "generation": r.generation,
            }
        d = r.denial
        return {
            "denial": {
                "httpStatus": d.http_status,
                "wwwAuthenticate": d.www_authenticate,
                "reason": d.reason,
            },
            "generation": r.generation,
        }

    async def invoke_hook(self, request: dict[str, Any]) -> dict[str, Any]:
        r = await self.plugins.InvokeHook(
            pb.InvokeHookRequest(
                point=POINTS[request["point"]],
                name=request["name"],
                method=request.get("method", ""),
                caller=auth_proto_of_json(request["caller"]),
                payload=json.dumps(request["payload"]).encode(),
            ),
            timeout=10,
        )
        if r.WhichOneof("decision") == "deny":
            return {"deny": {"code": r.deny.code, "message": r.deny.message}}
        return {"proceed": {"payload": json.loads(r.proceed.payload)} if r.proceed.payload else {}}

    async def record_calls(self, records: list[dict[str, Any]], dropped: int) -> None:
        names = {
            "subjectEmail": "subject_email",
            "serverId": "server_id",
            "httpStatus": "http_status",
            "jsonrpcCode": "jsonrpc_code",
            "durationUs": "duration_us",
            "requestId": "request_id",
            "startedAtUnixUs": "started_at_unix_us",
        }
        batch = [pb.CallRecord(**{names.get(k, k): v for k, v in r.items()}) for r in records]
        await self.observability.RecordCalls(
            pb.RecordCallsRequest(records=batch, dropped=dropped), timeout=10
        )

    @contextlib.asynccontextmanager
    async def watch(self, watcher: str) -> AsyncIterator[Watch]:
        call = self.auth.WatchPolicy(pb.WatchPolicyRequest(watcher=watcher))

        async def events() -> AsyncIterator[dict[str, Any]]:
            async for msg in call:
                yield event_json_of_proto(msg)

        try:
            yield Watch(events())
        finally:
            call.cancel()


class HttpClient(CoreClient):
    transport = "http"

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http

    async def resolve(self, request: dict[str, Any]) -> dict[str, Any]:
        r = await self.http.post("/v1/resolve-caller", json=request)
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "application/json"
        answer: dict[str, Any] = r.json()
        return answer

    async def invoke_hook(self, request: dict[str, Any]) -> dict[str, Any]:
        r = await self.http.post("/v1/invoke-hook", json=request)
        assert r.status_code == 200, r.text
        answer: dict[str, Any] = r.json()
        return answer

    async def record_calls(self, records: list[dict[str, Any]], dropped: int) -> None:
        r = await self.http.post("/v1/record-calls", json={"records": records, "dropped": dropped})
        assert r.status_code == 204, r.text
        assert r.content == b""

    @contextlib.asynccontextmanager
    async def watch(self, watcher: str) -> AsyncIterator[Watch]:
        async with self.http.stream("GET", "/v1/watch-policy", params={"watcher": watcher}) as r:
            assert r.status_code == 200
            assert r.headers["content-type"] == "application/x-ndjson"

            async def events() -> AsyncIterator[dict[str, Any]]:
                async for line in r.aiter_lines():
                    if line:  # an empty line is a keep-alive
                        yield json.loads(line)

            yield Watch(events())


# -- the core processes --------------------------------------------------------------------------


class Core:
    """A running core: its sockets and clients."""

    def __init__(
        self, directory: Path, plugins: dict[str, Any] | None, env: dict[str, str] | None = None
    ) -> None:
        self.http_uds = str(directory / "core-http.sock")
        self.grpc_uds = str(directory / "core-grpc.sock")
        self.log = directory / "core.log"
        plugins_file = None
        if plugins is not None:
            plugins_file = directory / "plugins.json"
            plugins_file.write_text(json.dumps(plugins))
        self.process: subprocess.Popen[bytes] | None = start_core(
            http_uds=self.http_uds,
            grpc_uds=self.grpc_uds,
            env=env or {"JWT_SECRET_KEY": SECRET, "MCP_CORE_CACHE_MAX_AGE_MS": "30000"},
            plugins=plugins_file,
            log=self.log,
        )

    def admin(self, *args: str) -> dict[str, Any]:
        """``python -m mcp_gateway core-admin --http-uds ... ARGS``; returns its JSON output."""
        out = subprocess.run(
            [sys.executable, "-m", "mcp_gateway", "core-admin", "--http-uds", self.http_uds, *args],
            check=True,
            capture_output=True,
            text=True,
            timeout=30,
        )
        answer: dict[str, Any] = json.loads(out.stdout)
        return answer

    @contextlib.asynccontextmanager
    async def clients(self) -> AsyncIterator[dict[str, CoreClient]]:
        channel = grpc.aio.insecure_channel(f"unix:{self.grpc_uds}", options=CHANNEL_OPTIONS)
        transport = httpx.AsyncHTTPTransport(uds=self.http_uds)
        # No read timeout: a watch stream is quiet between events (each read is bounded by Watch).
        timeout = httpx.Timeout(10.0, read=None)
        try:
            async with httpx.AsyncClient(
                transport=transport, base_url="http://core", timeout=timeout
            ) as http:
                yield {"grpc": GrpcClient(channel), "http": HttpClient(http)}
        finally:
            await channel.close()


@contextlib.contextmanager
def _running_core(plugins: dict[str, Any] | None, env: dict[str, str] | None = None) -> Iterator[Core]:
    # Unix socket paths must stay under ~100 bytes: a short directory under /tmp.
    directory = Path(tempfile.mkdtemp(prefix="core-", dir="/tmp"))
    running = None
    try:
        running = Core(directory, plugins, env)
        yield running
    finally:
        if running is not None:
            stop(running.process)
            if running.process is not None and running.process.returncode != 0:
                print(running.log.read_text())
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def core() -> Iterator[Core]:
    """The core with the vector file's plugins, both sockets."""
    with _running_core(VECTORS["plugins"]) as running:
        yield running


@pytest.fixture(scope="module")
def bare_core() -> Iterator[Core]:
    """A core without plugins."""
    with _running_core(None) as running:
        yield running


@pytest.fixture(scope="module")
def open_core() -> Iterator[Core]:
    """A core with authentication off (``MCP_GATEWAY_AUTH_DISABLED=1``) and no secret at all."""
    env = {"MCP_GATEWAY_AUTH_DISABLED": "1", "JWT_SECRET_KEY": "", "MCP_CORE_CACHE_MAX_AGE_MS": "1234"}
    with _running_core(VECTORS["plugins"], env) as running:
        yield running


@pytest.fixture(params=TRANSPORTS)
async def client(request: pytest.FixtureRequest, core: Core) -> AsyncIterator[CoreClient]:
    async with core.clients() as clients:
        yield clients[request.param]


# -- ResolveCaller ------------------------------------------------------------------------------


@pytest.mark.parametrize("case", VECTORS["resolve"], ids=[c["name"] for c in VECTORS["resolve"]])
async def test_resolve_caller_vectors(client: CoreClient, case: dict[str, Any]) -> None:
    authorization = authorization_of(case["token"])
    answer = await client.resolve({"authorization": authorization, **case["request"]})
    expect = case["expect"]
    assert isinstance(answer["generation"], int)
    assert answer["generation"] >= 1
    if "caller" in expect:
        assert "denial" not in answer, answer
        want = dict(expect["caller"])
        token = authorization.removeprefix("Bearer ")
        if want["token_exp"] == "from_token":
            want["token_exp"] = jwt.decode(token, SECRET, algorithms=["HS256"])["exp"]
        assert answer["caller"] == want
        # The very AuthContext the gateway builds for this header in the proxied modes.
        gateway = authenticate(
            authorization,
            SECRET,
            traceparent=case["request"].get("traceparent", ""),
            trace_id=case["request"].get("requestId", ""),
        )
        assert answer["caller"] == gateway.to_json()
        assert answer["cacheMaxAgeMs"] == expect["cacheMaxAgeMs"]
        return
    assert "caller" not in answer, answer
    denial, want = answer["denial"], expect["denial"]
    assert denial["httpStatus"] == want["httpStatus"]
    if "wwwAuthenticate" in want:
        assert denial["wwwAuthenticate"] == want["wwwAuthenticate"]
    else:
        assert denial["wwwAuthenticate"].startswith(want["wwwAuthenticatePrefix"]), denial
        assert 'error_description="' in denial["wwwAuthenticate"]
    assert want["reasonContains"] in denial["reason"], denial
    assert denial["reason"].startswith("Unauthorized: ")
    # Never the token, nor a part of it, in what the runtime relays to the client.
    credential = authorization.partition(" ")[2]
    for piece in {credential, *credential.split(".")}:
        if len(piece) >= 8:
            assert piece not in denial["reason"]
            assert piece not in denial["wwwAuthenticate"]
    assert answer.get("cacheMaxAgeMs", 0) == 0


# -- ResolveCaller with authentication off --------------------------------------------------------


def _anonymous_answer(answer: dict[str, Any], request: dict[str, Any]) -> None:
    """``answer`` is the anonymous caller the gateway builds with auth off, for ``request``."""
    assert "denial" not in answer, answer
    # The gateway's own function, as it answers every caller in the proxied modes.
    want = anonymous_context(
        traceparent=request.get("traceparent", ""), trace_id=request.get("requestId", "")
    )
    assert answer["caller"] == want.to_json()
    assert answer["caller"]["email"] == ""
    assert answer["caller"]["teams"] == []
    assert answer["cacheMaxAgeMs"] == 1234
    assert isinstance(answer["generation"], int)


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("case", VECTORS["resolve"], ids=[c["name"] for c in VECTORS["resolve"]])
async def test_with_auth_disabled_every_credential_resolves_to_the_anonymous_caller(
    open_core: Core, transport: str, case: dict[str, Any]
) -> None:
    # Every credential of the vectors (valid, admin, expired, unsigned, wrong key, garbage,
    # missing...) gets the same anonymous caller, never a denial.
    request = {"authorization": authorization_of(case["token"]), **case["request"]}
    async with open_core.clients() as clients:
        _anonymous_answer(await clients[transport].resolve(request), request)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_with_auth_disabled_a_revoked_token_is_still_anonymous(open_core: Core, transport: str) -> None:
    authorization = f"Bearer {mint_token(SECRET, 'carol@example.com', is_admin=True)}"
    token = authorization.removeprefix("Bearer ")
    async with open_core.clients() as clients:
        client = clients[transport]
        before = await client.resolve({"authorization": authorization})
        async with client.watch("auth-off") as watch:
            assert "snapshot" in await watch.next()
            for body in (
                {"tokenSha256": hashlib.sha256(token.encode()).hexdigest()},
                {"subjectEmail": "carol@example.com"},
            ):
                generation = await _admin_revoke(open_core, body)
                # The watch stream works as usual: the runtime still drops what it cached.
                assert (await watch.next())["generation"] == generation
        request = {"authorization": authorization, "requestId": "r-1", "traceparent": ""}
        after = await client.resolve(request)
        _anonymous_answer(after, request)
        assert after["generation"] == before["generation"] + 2


async def test_health_says_whether_authentication_is_disabled(core: Core, open_core: Core) -> None:
    for running, authentication in ((core, "enabled"), (open_core, "disabled")):
        transport = httpx.AsyncHTTPTransport(uds=running.http_uds)
        async with httpx.AsyncClient(transport=transport, base_url="http://core", timeout=10) as http:
            r = await http.get("/health")
        assert r.status_code == 200, r.text
        assert r.json() == {"status": "serving", "authentication": authentication}
        stats = await asyncio.to_thread(running.admin, "stats")
        assert stats["authDisabled"] is (authentication == "disabled")


async def test_resolve_calls_and_denials_are_counted_in_the_stats(core: Core, client: CoreClient) -> None:
    before = (await asyncio.to_thread(core.admin, "stats"))["resolve"]
    good = f"Bearer {mint_token(SECRET, 'dora@example.com')}"
    for authorization in (good, "Bearer garbage", ""):
        await client.resolve({"authorization": authorization})
    after = (await asyncio.to_thread(core.admin, "stats"))["resolve"]
    assert after == {"calls": before["calls"] + 3, "denied": before["denied"] + 2}


def test_with_auth_disabled_the_core_warns_at_start(open_core: Core) -> None:
    log = open_core.log.read_text()
    warnings = [line for line in log.splitlines() if " WARNING " in line]
    assert any("authentication is DISABLED (MCP_GATEWAY_AUTH_DISABLED=1)" in line for line in warnings), log
    assert "local testing" in log


# -- InvokeHook ---------------------------------------------------------------------------------


@pytest.mark.parametrize("case", VECTORS["hooks"], ids=[c["name"] for c in VECTORS["hooks"]])
async def test_invoke_hook_vectors(client: CoreClient, case: dict[str, Any]) -> None:
    answer = await client.invoke_hook(case["request"])
    assert answer == case["expect"]


async def test_snapshot_lists_the_hooks_of_the_configured_plugins(core: Core, bare_core: Core) -> None:
    for running, want in ((core, VECTORS["hooks_with_plugins"]), (bare_core, [])):
        async with running.clients() as clients:
            for name, c in clients.items():
                async with c.watch(f"snapshot-{name}") as watch:
                    first = await watch.next()
                    assert set(first) == {"generation", "snapshot"}, first
                    assert first["snapshot"]["generation"] == first["generation"]
                    assert first["snapshot"]["hooks"] == want, (name, first)


async def test_without_plugins_every_hook_proceeds_unchanged(bare_core: Core) -> None:
    async with bare_core.clients() as clients:
        for c in clients.values():
            for case in VECTORS["hooks"]:
                assert await c.invoke_hook(case["request"]) == {"proceed": {}}, case["name"]


# -- WatchPolicy and revocations ----------------------------------------------------------------


async def _revoked_within_bound(
    core: Core, watch: Watch, revoke: Any, want: dict[str, Any], label: str
) -> dict[str, Any]:
    started = time.perf_counter()
    generation = await revoke()
    event = await watch.next()
    latency_ms = (time.perf_counter() - started) * 1000
    print(f"revocation {label}: event {latency_ms:.2f} ms after the revoking request started")
    assert latency_ms < WATCH_BOUND_S * 1000
    assert event == {"generation": generation, "revocation": want}
    return event


async def _admin_revoke(core: Core, body: dict[str, Any], http: httpx.AsyncClient | None = None) -> int:
    """``POST /admin/revoke`` on the core's HTTP socket; returns the new generation."""
    if http is None:
        transport = httpx.AsyncHTTPTransport(uds=core.http_uds)
        async with httpx.AsyncClient(transport=transport, base_url="http://core", timeout=10) as client:
            return await _admin_revoke(core, body, client)
    r = await http.post("/admin/revoke", json=body)
    assert r.status_code == 200, r.text
    generation: int = r.json()["generation"]
    return generation


async def test_token_revocation_reaches_both_transports_and_refuses_the_token(core: Core) -> None:
    sub = f"rev-{uuid.uuid4().hex[:8]}@example.com"
    token = mint_token(SECRET, sub, teams=["alpha"])
    other = mint_token(SECRET, sub, teams=["alpha"], scopes=["other"])
    digest = hashlib.sha256(token.encode()).hexdigest()
    async with core.clients() as clients:
        for c in clients.values():
            assert "caller" in await c.resolve({"authorization": f"Bearer {token}"})
        async with clients["grpc"].watch("t-grpc") as wg, clients["http"].watch("t-http") as wh:
            snap_g, snap_h = await wg.next(), await wh.next()
            assert snap_g["generation"] == snap_h["generation"]
            http = clients["http"]
            assert isinstance(http, HttpClient)
            await http.http.get("/health")  # the admin request below reuses this open connection
            started = time.perf_counter()
            generation = await _admin_revoke(core, {"tokenSha256": digest}, http.http)
            got = [await wg.next(), await wh.next()]
            elapsed_ms = (time.perf_counter() - started) * 1000
            print(f"token revocation, admin request to both events: {elapsed_ms:.2f} ms")
            assert generation == snap_g["generation"] + 1
            for event in got:
                assert event == {"generation": generation, "revocation": {"tokenSha256": digest}}
        for c in clients.values():
            denied = await c.resolve({"authorization": f"Bearer {token}"})
            assert denied["denial"]["httpStatus"] == 401
            assert "token revoked" in denied["denial"]["reason"]
            assert denied["generation"] == generation
            # Another token of the same subject still holds.
            assert "caller" in await c.resolve({"authorization": f"Bearer {other}"})


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_subject_revocation_by_the_cli(core: Core, transport: str) -> None:
    sub = f"rev-{uuid.uuid4().hex[:8]}@example.com"
    token = mint_token(SECRET, sub, teams=[])
    async with core.clients() as clients:
        c = clients[transport]
        async with c.watch(f"subject-{transport}") as watch:
            await watch.next()

            async def revoke() -> int:
                answer = await asyncio.to_thread(core.admin, "revoke", "--subject", sub)
                generation: int = answer["generation"]
                return generation

            await _revoked_within_bound(
                core, watch, revoke, {"subjectEmail": sub}, f"subject via CLI ({transport})"
            )
        denied = await c.resolve({"authorization": f"Bearer {token}"})
        assert "token revoked" in denied["denial"]["reason"]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_revoke_all_and_by_token_value(core: Core, transport: str) -> None:
    token = mint_token(SECRET, f"rev-{uuid.uuid4().hex[:8]}@example.com")
    async with core.clients() as clients:
        c = clients[transport]
        async with c.watch(f"all-{transport}") as watch:
            await watch.next()

            admin = clients["http"]
            assert isinstance(admin, HttpClient)
            await admin.http.get("/health")  # the admin request below reuses this open connection

            async def revoke_all() -> int:
                return await _admin_revoke(core, {"all": True}, admin.http)

            await _revoked_within_bound(core, watch, revoke_all, {"all": True}, f"all ({transport})")
            # "all" drops caches; it refuses nothing.
            assert "caller" in await c.resolve({"authorization": f"Bearer {token}"})

            async def revoke_token() -> int:
                answer = await asyncio.to_thread(core.admin, "revoke", "--token", token)
                generation: int = answer["generation"]
                return generation

            digest = hashlib.sha256(token.encode()).hexdigest()
            await _revoked_within_bound(
                core, watch, revoke_token, {"tokenSha256": digest}, f"token via CLI ({transport})"
            )
        assert "denial" in await c.resolve({"authorization": f"Bearer {token}"})


async def test_a_closed_watch_stream_unregisters_its_watcher(core: Core) -> None:
    async with core.clients() as clients:
        before = core.admin("stats")["watchers"]
        for c in clients.values():
            async with c.watch("short-lived") as watch:
                await watch.next()
        deadline = time.monotonic() + WATCH_BOUND_S
        while (await asyncio.to_thread(core.admin, "stats"))["watchers"] != before:
            assert time.monotonic() < deadline, "watchers were not unregistered"
            await asyncio.sleep(0.05)


# -- RecordCalls --------------------------------------------------------------------------------


async def test_record_calls_are_accepted_and_counted(client: CoreClient, core: Core) -> None:
    before = (await asyncio.to_thread(core.admin, "stats"))["records"]
    request_id = f"rec-{uuid.uuid4().hex[:8]}"
    records = [
        {
            "subjectEmail": "alice@example.com",
            "serverId": "",
            "method": "tools/call",
            "name": "echo",
            "httpStatus": 200,
            "jsonrpcCode": 0,
            "durationUs": 1234,
            "requestId": request_id,
            "startedAtUnixUs": int(time.time() * 1e6),
        },
        {
            "subjectEmail": "",
            "serverId": "echo-only",
            "method": "tools/call",
            "name": "sleep",
            "httpStatus": 200,
            "jsonrpcCode": -32003,
            "durationUs": 50,
            "requestId": request_id + "-2",
            "startedAtUnixUs": int(time.time() * 1e6),
        },
    ]
    await client.record_calls(records, dropped=3)
    await client.record_calls([], dropped=0)
    after = (await asyncio.to_thread(core.admin, "stats"))["records"]
    assert after["batches"] == before["batches"] + 2
    assert after["records"] == before["records"] + 2
    assert after["dropped"] == before["dropped"] + 3
    assert request_id + "-2" in after["latest"]


# -- transport errors ---------------------------------------------------------------------------


BAD_HTTP = [
    ("POST", "/v1/resolve-caller", b"{not json", 400),
    ("POST", "/v1/resolve-caller", b"[1, 2]", 400),
    ("POST", "/v1/resolve-caller", b"", 400),
    ("POST", "/v1/resolve-caller", b"\xff\xfe", 400),
    ("POST", "/v1/resolve-caller", b'{"authorization": 5}', 400),
    ("POST", "/v1/resolve-caller", b'{"requestId": ["x"]}', 400),
    ("POST", "/v1/invoke-hook", b'{"point": "sideways", "name": "echo", "caller": {}, "payload": {}}', 400),
    ("POST", "/v1/invoke-hook", b'{"point": "pre_invoke", "name": "echo", "payload": {}}', 400),
    (
        "POST",
        "/v1/invoke-hook",
        b'{"point": "pre_invoke", "name": "echo", "caller": {}, "payload": [1]}',
        400,
    ),
    (
        "POST",
        "/v1/invoke-hook",
        b'{"point": "pre_invoke", "name": "echo", "caller": {"teams": "alpha"}}',
        400,
    ),
    ("POST", "/v1/invoke-hook", b'{"point": "pre_invoke", "name": 7, "caller": {}}', 400),
    ("POST", "/v1/record-calls", b'{"records": {}}', 400),
    ("POST", "/v1/record-calls", b'{"records": [1]}', 400),
    ("POST", "/v1/record-calls", b'{"records": [{"httpStatus": "200"}]}', 400),
    ("POST", "/v1/record-calls", b'{"records": [], "dropped": true}', 400),
    ("POST", "/admin/revoke", b"{}", 400),
    ("POST", "/admin/revoke", b'{"tokenSha256": "abc"}', 400),
    ("POST", "/admin/revoke", b'{"all": true, "subjectEmail": "x@example.com"}', 400),
    ("GET", "/v1/resolve-caller", b"", 405),
    ("POST", "/v1/watch-policy", b"", 405),
    ("GET", "/v1/nothing-here", b"", 404),
]


@pytest.mark.parametrize(("method", "path", "body", "status"), BAD_HTTP)
async def test_malformed_http_requests_get_a_json_error(
    core: Core, method: str, path: str, body: bytes, status: int
) -> None:
    transport = httpx.AsyncHTTPTransport(uds=core.http_uds)
    async with httpx.AsyncClient(transport=transport, base_url="http://core", timeout=10) as http:
        r = await http.request(method, path, content=body)
        assert r.status_code == status, r.text
        assert r.headers["content-type"] == "application/json"
        assert isinstance(r.json()["error"], str)
        # The connection and the core carry on.
        assert (await http.get("/health")).json() == {"status": "serving", "authentication": "enabled"}


async def test_a_request_that_is_not_http_is_answered_400_and_closed(core: Core) -> None:
    reader, writer = await asyncio.open_unix_connection(core.http_uds)
    writer.write(b"\x16\x03\x01 this is not HTTP\r\n\r\n")
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    assert data.startswith(b"HTTP/1.1 400 "), data
    assert b'{"error":' in data
    transport = httpx.AsyncHTTPTransport(uds=core.http_uds)
    async with httpx.AsyncClient(transport=transport, base_url="http://core", timeout=10) as http:
        assert (await http.get("/health")).status_code == 200


async def test_pipelined_requests_are_answered_in_order(core: Core) -> None:
    reader, writer = await asyncio.open_unix_connection(core.http_uds)
    one = b'{"authorization": ""}'
    request = b"POST /v1/resolve-caller HTTP/1.1\r\nhost: core\r\ncontent-length: %d\r\n\r\n%s" % (
        len(one),
        one,
    )
    writer.write(request + b"GET /health HTTP/1.1\r\nhost: core\r\n\r\n")
    first = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    length = int(first.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    assert b"denial" in await reader.readexactly(length)
    second = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    length = int(second.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    assert await reader.readexactly(length) == b'{"status":"serving","authentication":"enabled"}'
    writer.close()


async def test_grpc_a_hook_request_without_caller_is_invalid_argument(core: Core) -> None:
    async with core.clients() as clients:
        c = clients["grpc"]
        assert isinstance(c, GrpcClient)
        request = pb.InvokeHookRequest(point=pb.HOOK_POINT_PRE_INVOKE, name="sleep", payload=b"{}")
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await c.plugins.InvokeHook(request, timeout=10)
        assert e.value.code() is grpc.StatusCode.INVALID_ARGUMENT


async def test_a_body_over_the_limit_is_413_and_closed(core: Core) -> None:
    size = 65 * 1024 * 1024 + 1
    reader, writer = await asyncio.open_unix_connection(core.http_uds)
    writer.write(b"POST /v1/invoke-hook HTTP/1.1\r\nhost: core\r\ncontent-length: %d\r\n\r\n" % size)
    chunk = b" " * (1024 * 1024)
    with contextlib.suppress(ConnectionError):
        for _ in range(65):
            writer.write(chunk)
            await writer.drain()
        writer.write(b" ")
        await writer.drain()
    data = await asyncio.wait_for(reader.read(), 30)
    writer.close()
    assert data.startswith(b"HTTP/1.1 413 "), data[:200]
    transport = httpx.AsyncHTTPTransport(uds=core.http_uds)
    async with httpx.AsyncClient(transport=transport, base_url="http://core", timeout=10) as http:
        assert (await http.get("/health")).status_code == 200


@pytest.mark.parametrize(
    ("point", "payload", "caller_scope"),
    [
        (pb.HOOK_POINT_UNSPECIFIED, b"{}", rpb.TEAM_SCOPE_PUBLIC_ONLY),
        (17, b"{}", rpb.TEAM_SCOPE_PUBLIC_ONLY),
        (pb.HOOK_POINT_POST_INVOKE, b"{not json", rpb.TEAM_SCOPE_PUBLIC_ONLY),
        (pb.HOOK_POINT_POST_INVOKE, b"[1]", rpb.TEAM_SCOPE_PUBLIC_ONLY),
        (pb.HOOK_POINT_PRE_INVOKE, b"{}", 42),
    ],
)
async def test_grpc_invalid_hook_requests_are_invalid_argument(
    core: Core, point: int, payload: bytes, caller_scope: int
) -> None:
    async with core.clients() as clients:
        c = clients["grpc"]
        assert isinstance(c, GrpcClient)
        request = pb.InvokeHookRequest(
            point=point,  # type: ignore[arg-type]
            name="echo",
            caller=rpb.AuthContext(team_scope=caller_scope),  # type: ignore[arg-type]
            payload=payload,
        )
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await c.plugins.InvokeHook(request, timeout=10)
        assert e.value.code() is grpc.StatusCode.INVALID_ARGUMENT


async def test_grpc_health_reports_each_service(core: Core) -> None:
    async with grpc.aio.insecure_channel(f"unix:{core.grpc_uds}", options=CHANNEL_OPTIONS) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in (
            "",
            "mcp.core.v1.AuthPolicyService",
            "mcp.core.v1.PluginService",
            "mcp.core.v1.ObservabilityService",
        ):
            r = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
            assert r.status == health_pb2.HealthCheckResponse.SERVING, service
