"""Host and Origin allow-lists on the public endpoint, and the explicit auth-off setting.

Real gateways in every mode (the session fixtures of conftest.py). A Host or Origin outside the
allow-list is refused before authentication (a request without a token gets 421/403, not 401)
and so before the runtime sees anything.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from conftest import INITIALIZE, MODES, Gateway, Runtimes, gateway_env
from mcp_gateway._errors import ConfigError
from mcp_gateway._host_origin import check_host_origin
from mcp_gateway._settings import DEFAULT_ALLOWED_HOSTS, DEFAULT_ALLOWED_ORIGINS, Settings
from mcp_gateway.testing import free_port, start_gateway, stop


@pytest.mark.parametrize(
    ("host", "origin", "token", "status"),
    [
        ("evil.example.com", None, False, 421),
        ("evil.example.com", None, True, 421),
        ("evil.example.com:80", "http://localhost", True, 421),
        ("localhost.evil.example.com", None, True, 421),
        ("127.0.0.1", "http://evil.example.com", False, 403),
        ("127.0.0.1", "http://evil.example.com", True, 403),
        ("localhost", "null", True, 403),
        ("localhost:1", "http://localhost.evil.example.com:1", True, 403),
        ("localhost", None, True, 200),
        ("localhost:1234", "http://localhost:5173", True, 200),
        ("127.0.0.1", "https://127.0.0.1", True, 200),
        ("[::1]:9", "http://[::1]:9", True, 200),
        ("LOCALHOST:80", None, True, 200),
        ("localhost", None, False, 401),
    ],
)
async def test_host_and_origin_are_checked_before_auth(
    gw: Gateway, http: httpx.AsyncClient, host: str, origin: str | None, token: bool, status: int
) -> None:
    headers = gw.headers(gw.token() if token else None, host=host)
    if origin is not None:
        headers["origin"] = origin
    r = await http.post(gw.url, json=INITIALIZE, headers=headers)
    assert r.status_code == status, r.text
    if status in (403, 421):
        assert "not allowed" in r.json()["error"]["message"]
        assert "mcp-session-id" not in r.headers


async def test_every_method_and_virtual_servers_are_checked(gw: Gateway, http: httpx.AsyncClient) -> None:
    evil = gw.headers(gw.token(), host="evil.example.com")
    for path in ("/mcp", "/servers/echo-only/mcp"):
        for method in ("GET", "DELETE", "POST"):
            r = await http.request(method, f"{gw.base}{path}", headers=evil, content=b"{}")
            assert r.status_code == 421, (method, path, r.text)


@pytest.mark.parametrize(
    ("host", "origin", "status"),
    [
        ("evil.example.com", None, 421),
        ("127.0.0.1", "http://evil.example.com", 403),
        ("localhost", None, 200),
    ],
)
async def test_health_is_checked_too(
    gw: Gateway, http: httpx.AsyncClient, host: str, origin: str | None, status: int
) -> None:
    admin = gw.token("admin@example.com", is_admin=True, teams=None)
    headers = {"host": host, "authorization": f"Bearer {admin}"}
    if origin is not None:
        headers["origin"] = origin
    r = await http.get(f"{gw.base}/health", headers=headers)
    assert r.status_code == status, r.text
    if status != 200:
        assert r.json()["error"]["code"] == -32000
        assert "not allowed" in r.json()["error"]["message"]
        assert "runtime" not in r.text


def test_check_host_origin_rules() -> None:
    hosts, origins = DEFAULT_ALLOWED_HOSTS, DEFAULT_ALLOWED_ORIGINS
    assert check_host_origin(None, None, hosts, origins) == (421, "Host None is not allowed")
    assert check_host_origin("localhost:x", None, hosts, origins) is None
    assert check_host_origin("[::1", None, hosts, origins) is not None
    assert check_host_origin("localhost", "ftp://localhost", hosts, origins) is not None
    assert check_host_origin("localhost", "http://localhost/path", hosts, origins) is not None
    # A configured list: a name with any port, a name with one port, origins likewise.
    hosts, origins = ("gw.example.com", "10.0.0.5:4444"), ("https://app.example.com",)
    assert check_host_origin("gw.example.com:443", "https://app.example.com:8443", hosts, origins) is None
    assert check_host_origin("10.0.0.5:4444", None, hosts, origins) is None
    assert check_host_origin("10.0.0.5:4445", None, hosts, origins) == (
        421,
        "Host '10.0.0.5:4445' is not allowed",
    )
    assert check_host_origin("localhost", None, hosts, origins) is not None
    assert check_host_origin("gw.example.com", "http://app.example.com", hosts, origins) is not None
    assert check_host_origin("anything", "http://anything", ("*",), ("*",)) is None


def test_settings_read_the_lists_and_never_disable_auth_by_default() -> None:
    settings = Settings.from_env({"JWT_SECRET_KEY": "k", "MCP_RUST_UDS": "/s"})
    assert not settings.auth_disabled
    assert settings.allowed_hosts == DEFAULT_ALLOWED_HOSTS
    assert settings.allowed_origins == DEFAULT_ALLOWED_ORIGINS
    settings = Settings.from_env(
        {
            "JWT_SECRET_KEY": "k",
            "MCP_RUST_UDS": "/s",
            "MCP_GATEWAY_ALLOWED_HOSTS": " GW.example.com , 10.0.0.5:4444,",
            "MCP_GATEWAY_ALLOWED_ORIGINS": "https://app.example.com",
        }
    )
    assert settings.allowed_hosts == ("gw.example.com", "10.0.0.5:4444")
    assert settings.allowed_origins == ("https://app.example.com",)
    with pytest.raises(ConfigError, match="JWT_SECRET_KEY"):
        Settings.from_env({"MCP_RUST_UDS": "/s", "MCP_GATEWAY_AUTH_DISABLED": "0"})
    with pytest.raises(ConfigError, match="MCP_GATEWAY_AUTH_DISABLED"):
        Settings.from_env({"MCP_RUST_UDS": "/s", "MCP_GATEWAY_AUTH_DISABLED": "yes please"})
    assert Settings.from_env({"MCP_RUST_UDS": "/s", "MCP_GATEWAY_AUTH_DISABLED": "1"}).auth_disabled


@contextlib.contextmanager
def _open_gateway(mode: str, workdir: Path, catalog: Path, runtimes: Runtimes) -> Iterator[tuple[str, Path]]:
    env = gateway_env(mode, catalog, runtimes.get() if mode != "python" else None)
    env["MCP_GATEWAY_AUTH_DISABLED"] = "1"
    env["JWT_SECRET_KEY"] = ""
    port, log = free_port(), workdir / f"gateway-noauth-{mode}.log"
    process = start_gateway(env, port, log=log)
    try:
        yield f"http://127.0.0.1:{port}", log
    finally:
        stop(process)


@pytest.mark.parametrize("mode", MODES)
async def test_auth_disabled_is_anonymous_public_only_and_warns(
    mode: str, workdir: Path, catalog: Path, runtimes: Runtimes, http: httpx.AsyncClient
) -> None:
    with _open_gateway(mode, workdir, catalog, runtimes) as (base, log):
        health = (await http.get(f"{base}/health")).json()
        assert health["auth"] == "disabled"
        assert "DISABLED" in health["warning"]
        assert "authentication is DISABLED" in log.read_text()
        gw = Gateway(mode, base)
        # No token at all, and a forged admin token that must not grant anything either.
        for headers in (gw.headers(None), gw.headers("not-a-token")):
            r = await http.post(gw.url, json=INITIALIZE, headers=headers)
            assert r.status_code == 200, r.text
            session = r.headers["mcp-session-id"]
            note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
            await http.post(gw.url, json=note, headers={**headers, "mcp-session-id": session})
            body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
            r = await http.post(gw.url, json=body, headers={**gw.headers(None, session), **headers})
            assert r.status_code == 200, r.text
            text = r.text
            if r.headers["content-type"].startswith("text/event-stream"):
                text = next(line[5:] for line in text.splitlines() if line.startswith("data:"))
            names = {tool["name"] for tool in json.loads(text)["result"]["tools"]}
            assert "echo" in names
            assert not any(name.startswith(("alpha_", "beta_")) for name in names), names
        # The Host check still applies with auth off.
        r = await http.post(gw.url, json=INITIALIZE, headers=gw.headers(None, host="evil.example.com"))
        assert r.status_code == 421
