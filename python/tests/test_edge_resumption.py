"""Resumption with ``Last-Event-ID`` through the edge modes' public endpoint.

The runtime serves the public endpoint itself (``--public-listen``) and keeps its event history
in a real Redis (``--state-url``, a ``redis-server`` of this test). A streamed call's events are
replayed after the one a client names, once and in order; another subject naming them gets
400 and none of them, as through the proxied modes (``test_replicas.py``).
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from conftest import SECRET, Gateway
from mcp_gateway.testing import EDGE_MODES, free_port, stack, start_redis
from test_replicas import _call, _events, _resume, _seq


@pytest.fixture(params=EDGE_MODES)
def edge(request: pytest.FixtureRequest) -> Iterator[Gateway]:
    with start_redis() as redis:
        port = free_port()
        with stack(request.param, port, SECRET, runtime_extra=("--state-url", redis.url)):
            yield Gateway(request.param, f"http://127.0.0.1:{port}", SECRET, [])


async def test_a_stream_is_resumed_through_the_public_endpoint(
    edge: Gateway, http: httpx.AsyncClient
) -> None:
    token = edge.token()
    session = await edge.initialize(http, token)
    r = await http.post(
        edge.url,
        json=_call(3, "progress", {"steps": 3, "interval_ms": 10}, "p"),
        headers=edge.headers(token, session),
    )
    assert r.status_code == 200, r.text
    seen = _events(r.text)
    assert len(seen) >= 4, seen
    assert [_seq(i) for i, _ in seen] == list(range(1, len(seen) + 1))
    assert seen[-1][1]["id"] == 3
    resumed = await _resume(http, edge, token, session, seen[1][0])
    assert resumed.status_code == 200, resumed.text
    assert _events(resumed.text) == seen[2:]
    bob = edge.token("bob@example.com")
    bobs = await edge.initialize(http, bob)
    refused = await _resume(http, edge, bob, bobs, seen[0][0])
    assert refused.status_code == 400, refused.text
    assert "Last-Event-ID" in refused.json()["error"]["message"]
    assert "progress" not in refused.text
