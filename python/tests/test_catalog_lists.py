"""Each list names every entry once, in every mode.

The test catalog's three upstreams are one fixture server (public, team alpha, team beta), so
its resource URIs and its URI template are exposed three times; each caller sees each once, and
reading one works. Tools and prompts are prefixed per upstream, so none repeats either.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import httpx
import pytest

from conftest import Gateway

LISTS = (
    ("tools/list", "tools", "name"),
    ("prompts/list", "prompts", "name"),
    ("resources/list", "resources", "uri"),
    ("resources/templates/list", "resourceTemplates", "uriTemplate"),
)


async def _rpc(
    gw: Gateway, http: httpx.AsyncClient, token: str, session: str, method: str, params: Any
) -> Any:
    body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
    r = await http.post(gw.url, json=body, headers=gw.headers(token, session))
    assert r.status_code == 200, r.text
    return r.json()["result"]


@pytest.mark.parametrize(
    ("who", "claims"),
    [
        ("alice", {"teams": ["alpha"]}),
        ("admin", {"teams": None, "is_admin": True}),
        ("anyone", {"teams": []}),
    ],
)
async def test_each_entry_is_listed_once(
    gw: Gateway, http: httpx.AsyncClient, who: str, claims: dict[str, Any]
) -> None:
    token = gw.token(f"{who}@example.com", **claims)
    session = await gw.initialize(http, token)
    for method, items, key in LISTS:
        names = [item[key] for item in (await _rpc(gw, http, token, session, method, {}))[items]]
        repeated = [name for name, n in Counter(names).items() if n > 1]
        assert not repeated, f"{gw.mode} {who} {method}: {names}"
        if method == "resources/templates/list":
            assert names == ["fixture://items/{id}"], f"{gw.mode} {who}"
        if method == "resources/list":
            assert "fixture://readme" in names, f"{gw.mode} {who}"
    for uri in ("fixture://readme", "fixture://items/7"):
        result = await _rpc(gw, http, token, session, "resources/read", {"uri": uri})
        assert result["contents"][0]["uri"] == uri, f"{gw.mode} {who}"
