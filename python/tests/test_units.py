"""Unit tests of the pure parts: tokens, catalog rules, SSE and message framing, error classification."""

from __future__ import annotations

import base64
import dataclasses
import json

import jwt
import pytest

from mcp_gateway import (
    AuthContext,
    AuthError,
    CatalogError,
    ConfigError,
    Mode,
    Settings,
    authenticate,
    mint_token,
)
from mcp_gateway._baseline.catalog import Catalog, UpstreamConfig, VirtualServer, parse_catalog
from mcp_gateway._jsonrpc import FramingError, parse_message, shown
from mcp_gateway._sse import SseParser, encode_event

KEY = "k" * 40


class TestAuth:
    def test_round_trip(self) -> None:
        token = mint_token(KEY, "alice@example.com", teams=["alpha"], scopes=["tools.execute"])
        auth = authenticate(f"Bearer {token}", KEY, trace_id="t1")
        assert auth.email == "alice@example.com"
        assert auth.teams == ("alpha",)
        assert auth.is_admin is False
        assert auth.scopes == ("tools.execute",)
        assert auth.token_exp > 0
        assert auth.trace_id == "t1"

    def test_teams_claim_absent_is_unrestricted(self) -> None:
        auth = authenticate(f"Bearer {mint_token(KEY, 'a@x', is_admin=True)}", KEY)
        assert auth.teams is None
        assert auth.can_see("anything")
        assert not AuthContext("b@x", is_admin=False, teams=None).can_see("alpha")

    def test_empty_teams_is_public_only(self) -> None:
        auth = authenticate(f"Bearer {mint_token(KEY, 'a@x', teams=[], is_admin=True)}", KEY)
        assert auth.teams == ()
        assert auth.can_see(None)
        assert not auth.can_see("alpha")

    @pytest.mark.parametrize(
        "header",
        [None, "", "Bearer", "Bearer   ", "Token abc", "Bearer abc.def.ghi"],
    )
    def test_malformed(self, header: str | None) -> None:
        with pytest.raises(AuthError):
            authenticate(header, KEY)

    def test_forged_and_expired(self) -> None:
        with pytest.raises(AuthError):
            authenticate(f"Bearer {mint_token('x' * 40, 'a@x')}", KEY)
        with pytest.raises(AuthError, match="expired"):
            authenticate(f"Bearer {mint_token(KEY, 'a@x', ttl_s=-10)}", KEY)

    def test_other_algorithms_refused(self) -> None:
        none_token = jwt.encode({"sub": "a@x"}, key=None, algorithm="none")
        with pytest.raises(AuthError):
            authenticate(f"Bearer {none_token}", KEY)

    def test_bad_claim_types(self) -> None:
        token = jwt.encode({"sub": "a@x", "teams": "alpha"}, KEY, algorithm="HS256")
        with pytest.raises(AuthError):
            authenticate(f"Bearer {token}", KEY)

    def test_header_value_is_unpadded_base64url_json(self) -> None:
        auth = AuthContext("a@x", teams=("t",), scopes=("s",), token_exp=5, trace_id="r")
        value = auth.to_header_value()
        assert "=" not in value
        decoded = json.loads(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)))
        assert decoded == {
            "email": "a@x",
            "is_admin": False,
            "teams": ["t"],
            "scopes": ["s"],
            "token_exp": 5,
            "traceparent": "",
            "trace_id": "r",
        }
        assert (
            json.loads(base64.urlsafe_b64decode(AuthContext("a@x").to_header_value() + "=="))["teams"] is None
        )


def test_grpc_auth_mapping() -> None:
    from mcp_gateway._grpc_backend import auth_to_proto, pb

    assert auth_to_proto(AuthContext("a", is_admin=True)).team_scope == pb.TEAM_SCOPE_UNRESTRICTED
    assert auth_to_proto(AuthContext("a", teams=())).team_scope == pb.TEAM_SCOPE_PUBLIC_ONLY
    mapped = auth_to_proto(AuthContext("a", teams=("x", "y"), token_exp=9, scopes=("s",)))
    assert mapped.team_scope == pb.TEAM_SCOPE_TEAMS
    assert list(mapped.teams) == ["x", "y"]
    assert mapped.token_expires_at_unix_s == 9
    assert list(mapped.scopes) == ["s"]


class TestSettings:
    def test_mode_selection(self) -> None:
        base = {"JWT_SECRET_KEY": KEY, "MCP_RUNTIME_CATALOG": "/c.toml"}
        assert Settings.from_env(base).mode is Mode.PYTHON
        assert Settings.from_env({**base, "MCP_RUST_UDS": "/h"}).mode is Mode.HTTP
        assert Settings.from_env({**base, "MCP_RUST_UDS": "/h", "MCP_RUST_GRPC_UDS": "/g"}).mode is Mode.GRPC

    @pytest.mark.parametrize(
        "env",
        [{}, {"JWT_SECRET_KEY": KEY}, {"JWT_SECRET_KEY": KEY, "MCP_RUST_UDS": "/h", "MCP_GATEWAY_PORT": "x"}],
    )
    def test_invalid(self, env: dict[str, str]) -> None:
        with pytest.raises(ConfigError):
            Settings.from_env(env)

    def test_the_http_client_is_aiohttp_unless_httpx_is_asked_for(self) -> None:
        base = {"JWT_SECRET_KEY": KEY, "MCP_RUST_UDS": "/h"}
        assert Settings.from_env(base).http_client == "aiohttp"
        assert Settings.from_env({**base, "MCP_RUST_HTTP_CLIENT": "httpx"}).http_client == "httpx"
        assert Settings.from_env({**base, "MCP_RUST_HTTP_CLIENT": " HTTPX "}).http_client == "httpx"
        with pytest.raises(ConfigError, match="MCP_RUST_HTTP_CLIENT='requests' is not one of aiohttp, httpx"):
            Settings.from_env({**base, "MCP_RUST_HTTP_CLIENT": "requests"})

    def test_an_empty_socket_is_unset(self) -> None:
        base = {"JWT_SECRET_KEY": KEY, "MCP_RUNTIME_CATALOG": "/c.toml"}
        assert Settings.from_env({**base, "MCP_RUST_GRPC_UDS": "", "MCP_RUST_UDS": "/h"}).mode is Mode.HTTP
        assert Settings.from_env({**base, "MCP_RUST_GRPC_UDS": "", "MCP_RUST_UDS": ""}).mode is Mode.PYTHON

    @pytest.mark.parametrize("name", ["MCP_RUST_UDS", "MCP_RUST_GRPC_UDS"])
    def test_an_abstract_socket_name_is_refused(self, name: str) -> None:
        with pytest.raises(ConfigError, match=f"{name}='@rt' is an abstract socket name"):
            Settings.from_env({"JWT_SECRET_KEY": KEY, name: "@rt"})

    def test_serve_refuses_an_abstract_socket_name_at_start(self) -> None:
        import os
        import subprocess
        import sys

        env = {**os.environ, "JWT_SECRET_KEY": KEY, "MCP_RUST_GRPC_UDS": "@rt"}
        out = subprocess.run(
            [sys.executable, "-m", "mcp_gateway", "serve", "--port", "1"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert out.returncode == 2, out.stderr
        assert "abstract socket name" in out.stderr

    def test_listener_limits_defaults(self) -> None:
        settings = Settings.from_env({"JWT_SECRET_KEY": KEY, "MCP_RUST_UDS": "/h"})
        assert settings.max_header_bytes == 64 * 1024
        assert settings.header_timeout_s == 10.0
        assert settings.max_connections == 2048
        assert settings.max_concurrent_requests == 1024
        # Well below the runtime's default header-read timeout (30 s), which closes idle connections.
        assert settings.runtime_keepalive_s == 5.0


class TestCatalog:
    def test_parse(self) -> None:
        config = parse_catalog(
            """
            [[upstreams]]
            id = "a"
            url = "http://x/mcp"
            [[upstreams]]
            id = "b"
            url = "http://y/mcp"
            prefix = "b_"
            visibility = "team"
            team = "t"
            required = false
            [[servers]]
            id = "s"
            tools = ["echo"]
            """
        )
        assert config.upstreams[1] == UpstreamConfig("b", "http://y/mcp", "b_", "t", False)
        assert config.servers[0].tools == frozenset({"echo"})

    @pytest.mark.parametrize(
        "text",
        [
            "[[upstreams]]\nid='a'\nurl='u'\n[[upstreams]]\nid='a'\nurl='v'",
            "[[upstreams]]\nid='a'\nurl='u'\nvisibility='team'",
            "[[upstreams]]\nid='a'\nurl='u'\ncolour='red'",
            "[[upstreams]]\nid='a'\nurl='u'\nvisibility='secret'",
            "[[servers]]\nid='s'\n[[servers]]\nid='s'",
            "upstreams = 3 = 4",
            "unknown = 1",
        ],
    )
    def test_invalid(self, text: str) -> None:
        with pytest.raises(CatalogError):
            parse_catalog(text)

    def _catalog(self) -> Catalog:
        cat = Catalog()
        pub = UpstreamConfig("pub", "u")
        team = UpstreamConfig("team", "v", prefix="t_", team="alpha")
        for up in (pub, team):
            cat.add(up, "tool", [{"name": "echo"}])
            cat.add(up, "prompt", [{"name": "greet"}])
            cat.add(up, "resource", [{"uri": "r://x"}])
            cat.add(up, "template", [{"uriTemplate": f"{up.id}://items/{{id}}"}])
        cat.add_servers([VirtualServer("s", tools=frozenset({"echo"}), resources=frozenset({"r://x"}))])
        return cat

    def test_names_visibility_scope(self) -> None:
        cat = self._catalog()
        assert list(cat.tools) == ["echo", "t_echo"]
        assert [e.upstream for e in cat.resources["r://x"]] == ["pub", "team"]  # kept for each upstream
        alice = AuthContext("a", teams=("alpha",))
        public = AuthContext("p", teams=())
        assert [t["name"] for t in cat.visible("tool", alice, None)] == ["echo", "t_echo"]
        assert [t["name"] for t in cat.visible("tool", public, None)] == ["echo"]
        assert [t["name"] for t in cat.visible("tool", alice, "s")] == ["echo"]
        assert list(cat.visible("prompt", alice, "s")) == []
        assert list(cat.visible_templates(alice, "s")) == []
        assert len(list(cat.visible_templates(alice, None))) == 2
        assert cat.lookup("tool", "t_echo", public, None) is None
        assert cat.lookup("tool", "t_echo", alice, None) is not None
        routed = cat.lookup("resource", "team://items/7", alice, None)
        assert routed is not None
        assert routed.upstream == "team"
        assert cat.lookup("resource", "team://items/7", public, None) is None
        assert cat.lookup("resource", "team://items/7", alice, "s") is None

    def test_a_uri_or_template_of_several_upstreams_is_listed_once(self) -> None:
        """A URI and a template of two upstreams, the team's first: each caller sees each once.

        The first upstream the caller may see serves it (a public caller still sees the public one).
        """
        cat = Catalog()
        team = UpstreamConfig("team", "v", prefix="t_", team="alpha")
        pub = UpstreamConfig("pub", "u")
        for up in (team, pub):
            cat.add(up, "resource", [{"uri": "r://x", "name": up.id}, {"uri": f"r://{up.id}"}])
            cat.add(up, "template", [{"uriTemplate": "r://items/{id}", "name": up.id}])
        alice = AuthContext("a", teams=("alpha",))
        public = AuthContext("p", teams=())
        assert [r["uri"] for r in cat.visible("resource", alice, None)] == ["r://x", "r://team", "r://pub"]
        assert [r["uri"] for r in cat.visible("resource", public, None)] == ["r://x", "r://pub"]
        assert [r["name"] for r in cat.visible("resource", public, None) if r["uri"] == "r://x"] == ["pub"]
        assert [t["name"] for t in cat.visible_templates(alice, None)] == ["team"]
        assert [t["name"] for t in cat.visible_templates(public, None)] == ["pub"]
        for who, upstream in ((alice, "team"), (public, "pub")):
            for uri in ("r://x", "r://items/7"):
                routed = cat.lookup("resource", uri, who, None)
                assert routed is not None
                assert routed.upstream == upstream, (who, uri)

    def test_collisions_and_unknown_server_tools(self) -> None:
        cat = Catalog()
        cat.add(UpstreamConfig("a", "u"), "tool", [{"name": "echo"}])
        with pytest.raises(CatalogError, match="collision"):
            cat.add(UpstreamConfig("b", "v"), "tool", [{"name": "echo"}])
        with pytest.raises(CatalogError, match="unknown tool"):
            cat.add_servers([VirtualServer("s", tools=frozenset({"nope"}))])


class TestSse:
    def test_encode_matches_runtime_framing(self) -> None:
        assert encode_event("a\nb", "", "7") == b"id: 7\ndata: a\ndata: b\n\n"
        assert encode_event("{}", "message") == b"event: message\ndata: {}\n\n"

    def test_parser_across_chunks_and_crlf(self) -> None:
        parser = SseParser()
        stream = (
            b': ping\r\n\r\nevent: message\r\ndata: {"a":1}\r\n\r\nid: 9\ndata: x\ndata: y\n\nretry: 5\n\n'
        )
        events = []
        for i in range(len(stream)):
            events += parser.feed(stream[i : i + 1])
        assert [(e.event, e.id, e.data) for e in events] == [("message", "", '{"a":1}'), ("", "9", "x\ny")]


DEEP = b'{"jsonrpc":"2.0","id":1,"method":"ping","params":{"a":DEEP,"s":"x\\"]}"}}'
"""A ping whose params nest deeper than Python's decoder goes (``DEEP`` replaced)."""


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"", -32700),
        (b"{", -32700),
        (b"\xff", -32700),
        (b"[]", -32600),
        (b"[1]", -32600),
        (b"null", -32600),
        (b"42", -32600),
        (b'{"jsonrpc":"1.0","id":1,"method":"x"}', -32600),
        (b'{"jsonrpc":"2.0","id":{},"method":"x"}', -32600),
        (b'{"jsonrpc":"2.0","id":true,"method":"x"}', -32600),
        (b'{"jsonrpc":"2.0","id":1,"method":7}', -32600),
        (b'{"jsonrpc":"2.0","id":1}', -32600),
        (b'{"jsonrpc":"2.0","id":1,"result":{},"error":{}}', -32600),
        (b'{"jsonrpc":"2.0","id":1.5,"method":"ping"}', -32600),
        (
            DEEP.replace(b"DEEP", b"[" * 5000 + b"]" * 5000).replace(
                b'"id":1', b'"id":' + b"[" * 5000 + b"]" * 5000
            ),
            -32600,
        ),
        (DEEP.replace(b"DEEP", b"[" * 5000 + b"]" * 4999), -32700),
        (DEEP.replace(b"DEEP", b"[" * 5000 + b"]" * 5000) + b"x", -32700),
        (DEEP.replace(b"DEEP", b"[" * 2500 + b"1 2" + b"]" * 2500), -32700),
        (b"[" * 5000 + b"]" * 5000, -32600),
    ],
)
def test_framing_errors(body: bytes, code: int) -> None:
    with pytest.raises(FramingError) as err:
        parse_message(body)
    assert err.value.code == code


def test_framing_kinds() -> None:
    assert parse_message(b'{"jsonrpc":"2.0","id":"a","method":"ping"}').kind == "request"
    assert parse_message(b'{"jsonrpc":"2.0","method":"notifications/x"}').kind == "notification"
    assert parse_message(b'{"jsonrpc":"2.0","id":3,"error":{"code":1,"message":"m"}}').kind == "response"
    # An integer written with a fraction or an exponent is an integer (JSON Schema).
    assert parse_message(b'{"jsonrpc":"2.0","id":1e2,"method":"ping"}').id == 100


def test_a_message_too_deep_for_pythons_decoder_keeps_its_envelope() -> None:
    from mcp_gateway._jsonrpc import TOO_DEEP

    message = parse_message(DEEP.replace(b"DEEP", b"[" * 5000 + b"]" * 5000))
    assert (message.kind, message.id, message.method) == ("request", 1, "ping")
    assert message.params is TOO_DEEP  # the whole params member is too deep to decode


def test_grpc_deadline_is_a_timeout_whichever_side_reports_it() -> None:
    """Tonic reports its own grpc-timeout expiry as CANCELLED "Timeout expired"; both are 504."""
    import grpc

    from mcp_gateway._errors import RuntimeTimeoutError, RuntimeUnavailableError
    from mcp_gateway._grpc_backend import runtime_error

    def rpc_error(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
        return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details)

    assert isinstance(runtime_error(rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED, "x")), RuntimeTimeoutError)
    assert isinstance(
        runtime_error(rpc_error(grpc.StatusCode.CANCELLED, "Timeout expired")), RuntimeTimeoutError
    )
    assert isinstance(
        runtime_error(rpc_error(grpc.StatusCode.CANCELLED, "Cancelled")), RuntimeUnavailableError
    )
    assert isinstance(runtime_error(rpc_error(grpc.StatusCode.UNAVAILABLE, "down")), RuntimeUnavailableError)


def test_grpc_status_codes_are_classified_in_one_place() -> None:
    """Pins the one wording read of grpc itself: its receive limit's "Received message larger than max"."""
    import grpc

    from mcp_gateway._grpc_backend import Fault, fault_of

    def rpc_error(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
        return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details)

    receive = "CLIENT: Received message larger than max (6291456 vs. 5242880)"
    assert fault_of(rpc_error(grpc.StatusCode.RESOURCE_EXHAUSTED, receive)) is Fault.RECEIVE_LIMIT
    refused = "Error, decoded message length too large: found 9 bytes, the limit is: 8 bytes"
    assert fault_of(rpc_error(grpc.StatusCode.RESOURCE_EXHAUSTED, refused)) is Fault.REQUEST_TOO_LARGE
    assert fault_of(rpc_error(grpc.StatusCode.INVALID_ARGUMENT, "bad")) is Fault.INVALID_REQUEST
    assert fault_of(rpc_error(grpc.StatusCode.INTERNAL, "x")) is Fault.UNAVAILABLE


def test_http_backend_errors_are_mapped_by_type() -> None:
    import httpx

    from mcp_gateway._errors import RuntimeBusyError, RuntimeTimeoutError, RuntimeUnavailableError
    from mcp_gateway._http_backend import runtime_error

    assert isinstance(runtime_error(TimeoutError()), RuntimeTimeoutError)
    assert isinstance(runtime_error(httpx.ReadTimeout("slow")), RuntimeTimeoutError)
    assert isinstance(runtime_error(httpx.PoolTimeout("busy")), RuntimeBusyError)
    assert isinstance(runtime_error(httpx.ConnectError("refused")), RuntimeUnavailableError)
    assert isinstance(runtime_error(httpx.RemoteProtocolError("gone")), RuntimeUnavailableError)
    assert isinstance(runtime_error(FileNotFoundError("no socket")), RuntimeUnavailableError)


def test_aiohttp_backend_errors_are_mapped_by_type() -> None:
    import aiohttp

    from mcp_gateway._aiohttp_backend import runtime_error
    from mcp_gateway._errors import RuntimeBusyError, RuntimeTimeoutError, RuntimeUnavailableError

    assert isinstance(runtime_error(TimeoutError()), RuntimeTimeoutError)
    assert isinstance(runtime_error(aiohttp.SocketTimeoutError("slow")), RuntimeTimeoutError)
    assert isinstance(runtime_error(aiohttp.ConnectionTimeoutError("busy")), RuntimeBusyError)
    assert isinstance(runtime_error(aiohttp.ServerDisconnectedError()), RuntimeUnavailableError)
    assert isinstance(runtime_error(aiohttp.ClientPayloadError("cut short")), RuntimeUnavailableError)
    assert isinstance(runtime_error(FileNotFoundError("no socket")), RuntimeUnavailableError)


def test_a_connection_closed_before_any_response_is_recognised() -> None:
    """The words httpcore uses for it, produced by a real server that reads a request and closes."""
    import socket
    import tempfile
    import threading

    import httpx

    from mcp_gateway._http_backend import closed_before_response

    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/s.sock"
        with socket.socket(socket.AF_UNIX) as server:
            server.bind(path)
            server.listen()

            def close_after_the_request() -> None:
                conn, _ = server.accept()
                conn.recv(65536)
                conn.close()

            thread = threading.Thread(target=close_after_the_request, daemon=True)
            thread.start()
            with (
                httpx.Client(transport=httpx.HTTPTransport(uds=path), timeout=10.0) as client,
                pytest.raises(httpx.RemoteProtocolError) as raised,
            ):
                client.get("http://runtime/health")
            thread.join(10)
    assert closed_before_response(raised.value)
    assert not closed_before_response(httpx.RemoteProtocolError("illegal status line"))
    assert closed_before_response(httpx.ReadError("reset"))


@pytest.mark.parametrize(
    ("body", "wanted"),
    [
        (b'{"params":{"_meta":{"progressToken":1}}}', True),
        (b'{"params":{"_meta":{"progress\\u0054oken":1}}}', True),
        (b'{"params":{"_meta":{"\\u0070rogressToken":"x"}}}', True),
        (b'{"params":{"_meta":{"other":"\\u0041"}}}', False),
        (b'{"params":{"arguments":{"text":"a\\nb"}}}', False),
        (b'{"params":{"_meta":{"progress\\u0054oken":1}', False),
    ],
)
def test_every_spelling_of_progress_token_streams(body: bytes, wanted: bool) -> None:
    from mcp_gateway._backend import McpRequest

    request = McpRequest(method="POST", server_id=None, auth=AuthContext("a@x"), request_id="r", body=body)
    assert request.wants_progress is wanted
    assert request.streaming is wanted


@pytest.mark.parametrize(
    ("method", "body", "accept", "asks"),
    [
        ("POST", b'{"method":"tools/call","params":{"name":"t"}}', None, True),
        (
            "POST",
            b'{"method":"prompts/get","params":{"name":"p"}}',
            "application/json, text/event-stream",
            True,
        ),
        ("POST", b'{"method":"resources/read","params":{"uri":"u"}}', "*/*", True),
        ("POST", b'{"method":"tools\\/call","params":{"name":"t"}}', None, True),
        ("POST", b'{"method":"\\u0074ools/call","params":{"name":"t"}}', None, True),
        ("POST", b'{"method":"tools/list","params":{"cursor":"\\u0041"}}', None, False),
        ("POST", b'{"method":"completion/complete","params":{}}', None, False),
        ("POST", b'{"method":"tools/call","params":{"name":"t"}}', "application/json", False),
        ("GET", b"", None, False),
    ],
)
def test_a_call_the_upstream_may_ask_during_is_told_apart(
    method: str, body: bytes, accept: str | None, asks: bool
) -> None:
    from mcp_gateway._backend import McpRequest

    request = McpRequest(
        method=method, server_id=None, auth=AuthContext("a@x"), request_id="r", body=body, accept=accept
    )
    assert request.may_ask_client is asks
    assert not request.wants_progress


@pytest.mark.parametrize(
    ("method", "body", "listens"),
    [
        ("POST", b'{"method":"subscriptions/listen","params":{"notifications":{}}}', True),
        ("POST", b'{"method":"subscriptions\\/listen","params":{}}', True),
        ("POST", b'{"method":"\\u0073ubscriptions/listen","params":{}}', True),
        ("POST", b'{"method":"tools/list","params":{"cursor":"\\u0041"}}', False),
        # The documented false positive of the bytes check: only the gateway's deadline is lost.
        ("POST", b'{"method":"tools/call","params":{"name":"subscriptions/listen"}}', True),
        ("POST", b'{"method":"tools/call","params":{"name":"subscriptions"}}', False),
        ("GET", b"", False),
    ],
)
def test_a_listen_is_a_streamed_call(method: str, body: bytes, listens: bool) -> None:
    """A ``subscriptions/listen`` POST, however its method is spelled, is streamed (no deadline)."""
    from mcp_gateway._backend import McpRequest

    request = McpRequest(method=method, server_id=None, auth=AuthContext("a@x"), request_id="r", body=body)
    assert request.listens is listens
    assert request.streaming is (listens or method == "GET")


def test_a_long_name_is_cut_to_128_bytes_as_the_runtime_cuts_it() -> None:
    assert shown("echo") == "echo"
    assert shown("x" * 128) == "x" * 128
    assert shown("x" * 129) == "x" * 128 + "..."
    # A character that does not fit whole is dropped, never split: 127 bytes + a 2-byte "é".
    assert shown("x" * 127 + "é" + "y") == "x" * 127 + "..."
    assert shown("é" * 64) == "é" * 64


def test_baseline_sessions_count_per_subject_and_reap_only_idle_ones() -> None:
    """The table's bookkeeping on a hand-driven clock: grants given back however blocks end."""
    from mcp_gateway._baseline.sessions import LimitReached, Sessions

    now = [0.0]
    table = Sessions(idle_ttl_s=10, max_sessions=2, max_streams=1, max_calls=1, clock=lambda: now[0])
    with table.opening("a") as slot:
        a1 = slot.commit("s1", None)
    with table.opening("a"):
        pass  # an initialize that minted no session gives its slot back
    with table.opening("a") as slot:
        slot.commit("s2", "echo-only")
    with pytest.raises(LimitReached) as refused, table.opening("a"):
        pass
    assert (refused.value.status, refused.value.code, refused.value.retry_after_s) == (429, -32000, 60)
    with table.opening("b") as slot:
        slot.commit("s3", None)
    assert table.get("s1", "b", None) is None
    assert table.get("s2", "a", None) is None
    with table.stream(a1), pytest.raises(LimitReached) as refused, table.stream(a1):
        pass
    assert refused.value.retry_after_s == 1
    with pytest.raises(RuntimeError), table.call(a1):
        raise RuntimeError("the request failed")
    with table.call(a1):
        now[0] = 100.0
        assert sorted(table.reap_idle()) == ["s2", "s3"]  # s1 is busy
    assert table.reap_idle() == []  # its last use is when its call ended
    now[0] = 111.0
    assert table.reap_idle() == ["s1"]
    assert len(table) == 0
    assert table.held("a") == 0
    assert table.reap_period_s == 5


def test_grpc_mode_streams_only_the_calls_of_sessions_that_may_be_asked() -> None:
    """A session initialized here without sampling, elicitation or roots stays on unary Invoke."""
    from mcp_gateway._backend import McpRequest
    from mcp_gateway._grpc_backend import GrpcUdsBackend, declares_askable

    def init(capabilities: str) -> bytes:
        return (
            b'{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25",'
            b'"capabilities":' + capabilities.encode() + b',"clientInfo":{"name":"t","version":"1"}}}'
        )

    assert declares_askable(init("{}")) is False
    assert declares_askable(init('{"sampling":{}}')) is True
    assert declares_askable(init('{"roots":{"listChanged":true}}')) is True
    assert declares_askable(b'{"jsonrpc":"2.0","id":1,"method":"ping"}') is None
    assert declares_askable(b"initialize, not JSON") is None

    backend = GrpcUdsBackend("/nonexistent.sock", 5.0)
    call = b'{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo","arguments":{}}}'

    def request(body: bytes, session: str | None, method: str = "POST") -> McpRequest:
        return McpRequest(
            method=method,
            server_id=None,
            auth=AuthContext("a@x"),
            request_id="r",
            body=body,
            session_id=session,
            accept="application/json, text/event-stream",
        )

    answered = [("content-type", "application/json"), ("mcp-session-id", "plain")]
    backend._remember(request(init("{}"), None), 200, answered)
    backend._remember(request(init('{"elicitation":{}}'), None), 200, [("mcp-session-id", "asks")])
    backend._remember(request(init("{}"), None), 429, [("mcp-session-id", "refused")])
    assert not backend._may_be_asked(request(call, "plain"))
    assert backend._may_be_asked(request(call, "asks"))
    assert backend._may_be_asked(request(call, "refused"))
    # Unknown here (another worker, a restart): streamed, which is always correct.
    assert backend._may_be_asked(request(call, "elsewhere"))
    assert backend._may_be_asked(request(call, None))
    # MCP 2026-07-28 asks the client nothing (input_required results instead): unary.
    sessionless = dataclasses.replace(request(call, None), protocol_version="2026-07-28")
    assert not backend._may_be_asked(sessionless)
    # The memory is bounded: the oldest session is forgotten (and streamed again).
    backend.NEVER_ASKED_CAPACITY = 2
    for sid in ("s1", "s2"):
        backend._remember(request(init("{}"), None), 200, [("mcp-session-id", sid)])
    assert backend._may_be_asked(request(call, "plain"))
    assert not backend._may_be_asked(request(call, "s2"))
