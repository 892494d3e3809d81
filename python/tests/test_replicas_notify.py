"""A session's standalone GET stream across replicas, through a gateway per replica, in both socket modes.

Three runtimes on one Redis (the ``replicas`` fixture of ``test_replicas.py``, here on a
catalog of the conformance fixture, which sends ``notifications/resources/updated`` every
200 ms on the upstream session that subscribed): a subscription made through gateway A yields
updates on the session's GET stream opened through gateway B, each with an event id; the
stream resumed through gateway C with ``Last-Event-ID`` replays exactly the events after it,
then goes on live there (the updates follow it).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from mcp_gateway.testing import start_fixture, stop
from test_replicas import Replicas, replicas  # noqa: F401 (the fixture, on this module's catalog)

WATCHED = "test://watched-resource"
UPDATED = "notifications/resources/updated"


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    workdir = tmp_path_factory.mktemp("replicas-notify")
    fixture, url = start_fixture("--conformance", log=workdir / "conformance.log")
    path = workdir / "catalog.toml"
    path.write_text(f'[[upstreams]]\nid = "conformance"\nurl = "{url}"\n')
    try:
        yield path
    finally:
        stop(fixture)


async def _stream_events(response: httpx.Response) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """``(id, message)`` of each event of an SSE response as it comes."""
    event_id, data = "", []
    async for line in response.aiter_lines():
        if line.startswith("id:"):
            event_id = line.removeprefix("id:").strip()
        elif line.startswith("data:"):
            data.append(line.removeprefix("data:").lstrip())
        elif not line and data:
            yield event_id, json.loads("\n".join(data))
            event_id, data = "", []


async def _take(
    events: AsyncIterator[tuple[str, dict[str, Any]]], n: int
) -> list[tuple[str, dict[str, Any]]]:
    """The next ``n`` events (the test fails if they do not come within 20 s)."""
    got: list[tuple[str, dict[str, Any]]] = []
    with anyio.fail_after(20):
        while len(got) < n:
            got.append(await anext(events))
    return got


def _seq(event_id: str) -> int:
    return int(event_id.rsplit("-", 1)[1])


def _stream(event_id: str) -> str:
    return event_id.split("-", 1)[0]


async def test_updates_of_a_subscription_made_through_one_gateway_reach_the_stream_through_another_and_resume(
    replicas: Replicas,  # noqa: F811
    http: httpx.AsyncClient,
) -> None:
    a, b, c = replicas.gateways
    token = a.token()
    session = await a.initialize(http, token)

    def get_headers(gw: Any, **extra: str) -> dict[str, str]:
        headers: dict[str, str] = gw.headers(token, session, **extra)
        headers["accept"] = "text/event-stream"
        headers.pop("content-type")
        return headers

    async with http.stream("GET", b.url, headers=get_headers(b), timeout=None) as on_b:
        assert on_b.status_code == 200
        subscribe = {"jsonrpc": "2.0", "id": 2, "method": "resources/subscribe", "params": {"uri": WATCHED}}
        r = await http.post(a.url, json=subscribe, headers=a.headers(token, session))
        assert r.status_code == 200, r.text
        assert r.json()["result"] == {}, r.text
        seen = await _take(_stream_events(on_b), 3)
    assert all(m["method"] == UPDATED and m["params"]["uri"] == WATCHED for _, m in seen), seen
    assert [_seq(i) for i, _ in seen] == [1, 2, 3], seen
    assert len({_stream(i) for i, _ in seen}) == 1
    # Resumed through C after the first: the second and third once, in order, then what B
    # stored after them (same stream, numbered on), then the live stream on C from 1.
    headers = get_headers(c, **{"last-event-id": seen[0][0]})
    async with http.stream("GET", c.url, headers=headers, timeout=None) as on_c:
        assert on_c.status_code == 200
        events = _stream_events(on_c)
        assert await _take(events, 2) == seen[1:]
        expected = 4
        while True:
            (event_id, message), *_ = await _take(events, 1)
            assert message["method"] == UPDATED, message
            if _stream(event_id) != _stream(seen[0][0]):
                assert _seq(event_id) == 1, event_id
                break
            assert _seq(event_id) == expected, event_id
            expected += 1
