"""``subscriptions/listen`` in the Python baseline (``_baseline/listen.py``), as the runtime's ``listen.rs``.

``test_listen.py`` runs the shared behaviour in every mode (the acknowledgement, visibility,
updates, list changes, a bad filter). Here, what the runtime pins in its own tests
(``it/listen.rs``), against a gateway in mode ``python`` with one stream per subject: a stream
gets only the kinds it opted in to; a URI whose upstream refuses the subscription is left out of
the acknowledgement; a second stream of the same subject is 429 while the first is open and
allowed once its client left; the upstream is subscribed once per URI however many streams and
sessions want it, and unsubscribed when the last one leaves (the baseline's log lines, polled
with a bound); every message carries the subscription id. Real processes: a conformance fixture
with a tool list that changes, the gateway, raw SSE read with httpx.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from conftest import INITIALIZE, SECRET, Gateway, gateway_env
from mcp_gateway.testing import free_port, start_fixture, start_gateway, stop

V2026 = "2026-07-28"
WATCHED = "test://watched-resource"
"""A resource of the conformance fixture that reports an update every 200 ms once subscribed."""
REFUSED = "test://template/1/data"
"""Routed by the fixture's resource template, and refused by the fixture (not a resource)."""
UNKNOWN = "test://nope"
"""No upstream's resource."""
SUBSCRIPTION_ID = "io.modelcontextprotocol/subscriptionId"
BOUND_S = 30.0
"""The longest wait for an eventual state (a message, a log line), in seconds."""


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Gateway, Path]]:
    """A gateway in mode ``python`` over one conformance fixture, one stream per subject.

    Yields:
        The gateway and its log file.
    """
    workdir = tmp_path_factory.mktemp("baseline-listen")
    fixture, url = start_fixture("--conformance", "--dynamic-tools", log=workdir / "fixture.log")
    catalog = workdir / "catalog.toml"
    catalog.write_text(f'[[upstreams]]\nid = "conf"\nurl = "{url}"\n')
    log = workdir / "gateway.log"
    port = free_port()
    env = {**gateway_env("python", catalog, None), "MCP_RUNTIME_MAX_STREAMS_PER_SUBJECT": "1"}
    try:
        process = start_gateway(env, port, log=log)
        try:
            yield Gateway("python", f"http://127.0.0.1:{port}", SECRET, [process]), log
        finally:
            stop(process)
    finally:
        stop(fixture)


def _listen_body(request_id: int | str, notifications: dict[str, Any]) -> dict[str, Any]:
    meta = {
        "io.modelcontextprotocol/protocolVersion": V2026,
        "io.modelcontextprotocol/clientCapabilities": {},
    }
    return {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": "subscriptions/listen",
        "params": {"_meta": meta, "notifications": notifications},
    }


def _headers(token: str) -> dict[str, str]:
    return {
        "authorization": f"Bearer {token}",
        "accept": "application/json, text/event-stream",
        "mcp-protocol-version": V2026,
        "mcp-method": "subscriptions/listen",
    }


class Stream:
    """An open listen stream: its acknowledgement and the messages after it, in order."""

    def __init__(self, ack: dict[str, Any]) -> None:
        self.ack = ack
        self.send, self.receive = anyio.create_memory_object_stream[dict[str, Any]](1000)

    async def next(self) -> dict[str, Any]:
        """The next message (within :data:`BOUND_S`)."""
        with anyio.fail_after(BOUND_S):
            return await self.receive.receive()


@contextlib.asynccontextmanager
async def listening(
    gw: Gateway, http: httpx.AsyncClient, token: str, request_id: int | str, notifications: dict[str, Any]
) -> AsyncIterator[Stream]:
    """Open a listen stream (answered 200, SSE) and read it in a task until the block ends."""
    acked: list[Stream] = []
    opened = anyio.Event()

    async def read() -> None:
        body = _listen_body(request_id, notifications)
        async with http.stream("POST", gw.url, json=body, headers=_headers(token)) as r:
            assert r.status_code == 200, await r.aread()
            assert r.headers["content-type"].startswith("text/event-stream"), r.headers
            async for line in r.aiter_lines():
                if not line.startswith("data:"):
                    continue
                message = json.loads(line[5:])
                if not acked:
                    acked.append(Stream(message))
                    opened.set()
                else:
                    acked[0].send.send_nowait(message)

    async with anyio.create_task_group() as tg:
        tg.start_soon(read)
        with anyio.fail_after(BOUND_S):
            await opened.wait()
        yield acked[0]
        tg.cancel_scope.cancel()


async def log_count(log: Path, words: str) -> int:
    """Lines of ``log`` containing ``words`` now."""
    text = await anyio.Path(log).read_text(errors="replace")
    return sum(words in line for line in text.splitlines())


async def until_logged(log: Path, words: str, at_least: int) -> None:
    """Wait (polled, bounded) until ``log`` has ``at_least`` lines with ``words``."""
    deadline = time.monotonic() + BOUND_S
    while await log_count(log, words) < at_least:
        assert time.monotonic() < deadline, f"no {at_least} log lines with {words!r}"
        await anyio.sleep(0.05)


async def test_opt_in_refused_uris_the_stream_cap_and_the_upstream_subscription(
    gateway: tuple[Gateway, Path],
) -> None:
    gw, log = gateway
    subscribed, unsubscribed = f"subscribed to {WATCHED!r}", f"unsubscribed from {WATCHED!r}"
    alice, bob = gw.token("alice@example.com"), gw.token("bob@example.com")
    async with httpx.AsyncClient(timeout=httpx.Timeout(BOUND_S)) as http:
        before, gone = await log_count(log, subscribed), await log_count(log, unsubscribed)
        async with (
            listening(
                gw, http, alice, 7, {"resourceSubscriptions": [WATCHED, REFUSED, UNKNOWN, WATCHED]}
            ) as a,
            listening(
                gw, http, bob, "b-1", {"toolsListChanged": True, "resourceSubscriptions": [WATCHED]}
            ) as b,
        ):
            # The acknowledgement: the flags asked for, the URIs honoured once each; neither a
            # URI the upstream refuses nor one of no upstream is an error.
            assert a.ack["method"] == "notifications/subscriptions/acknowledged", a.ack
            assert a.ack["params"]["notifications"] == {"resourceSubscriptions": [WATCHED]}, a.ack
            assert a.ack["params"]["_meta"] == {SUBSCRIPTION_ID: 7}, a.ack
            assert b.ack["params"]["notifications"] == {
                "toolsListChanged": True,
                "resourceSubscriptions": [WATCHED],
            }, b.ack
            assert b.ack["params"]["_meta"] == {SUBSCRIPTION_ID: "b-1"}, b.ack

            # One stream per subject: alice's second is refused while her first is open.
            r = await http.post(gw.url, json=_listen_body(8, {}), headers=_headers(alice))
            assert r.status_code == 429, r.text
            assert r.json()["error"]["code"] == -32000, r.text
            assert r.json()["id"] == 8, r.text
            assert r.headers["retry-after"] == "1", r.headers

            # Updates reach both, tagged with each one's id; the upstream was subscribed once.
            for stream, sid in ((a, 7), (b, "b-1")):
                message = await stream.next()
                assert message["method"] == "notifications/resources/updated", message
                assert message["params"]["uri"] == WATCHED, message
                assert message["params"]["_meta"] == {SUBSCRIPTION_ID: sid}, message
            assert await log_count(log, subscribed) == before + 1

            # A tool list change reaches bob, who opted in, and not alice, who did not: the
            # change is queued for every stream at once, so bob's `list_changed` arriving
            # before alice's next two updates shows that alice had none queued.
            init = await http.post(gw.url, json=INITIALIZE, headers=gw.headers(bob))
            session = init.headers["mcp-session-id"]
            await http.post(
                gw.url,
                json={"jsonrpc": "2.0", "method": "notifications/initialized"},
                headers=gw.headers(bob, session),
            )
            add = {"jsonrpc": "2.0", "id": 2, "method": "tools/call"}
            add["params"] = {"name": "add_tool", "arguments": {"name": "fresh"}}
            r = await http.post(gw.url, json=add, headers=gw.headers(bob, session))
            assert r.status_code == 200, r.text
            while (message := await b.next())["method"] != "notifications/tools/list_changed":
                assert message["method"] == "notifications/resources/updated", message
            assert message["params"]["_meta"] == {SUBSCRIPTION_ID: "b-1"}, message
            for _ in range(2):
                message = await a.next()
                assert message["method"] == "notifications/resources/updated", message

        # Both clients left: the last one leaving unsubscribed the upstream, and alice may open
        # a stream again.
        await until_logged(log, unsubscribed, gone + 1)
        async with listening(gw, http, alice, 9, {"promptsListChanged": True}) as again:
            assert again.ack["params"]["notifications"] == {"promptsListChanged": True}, again.ack


async def test_concurrent_listeners_subscribe_the_upstream_once(gateway: tuple[Gateway, Path]) -> None:
    """Streams opened at once subscribe the upstream once; streams leaving as others come.

    The upstream stays subscribed for those that stay: one subscribe or unsubscribe per URI at a
    time (before, each of the first streams sent its own subscribe, and an unsubscribe could
    overtake a subscribe whose answer was still on its way).
    """
    gw, log = gateway
    subscribed, unsubscribed = f"subscribed to {WATCHED!r}", f"unsubscribed from {WATCHED!r}"
    before, gone = await log_count(log, subscribed), await log_count(log, unsubscribed)
    filter_ = {"resourceSubscriptions": [WATCHED]}

    async def hold(http: httpx.AsyncClient, who: int, opened: list[Stream], leave: anyio.Event) -> None:
        token = gw.token(f"user{who}@example.com")
        async with listening(gw, http, token, who, filter_) as stream:
            opened.append(stream)
            await leave.wait()

    async with httpx.AsyncClient(timeout=httpx.Timeout(BOUND_S)) as http, anyio.create_task_group() as tg:
        first: list[Stream] = []
        first_leave = anyio.Event()
        for who in range(6):
            tg.start_soon(hold, http, who, first, first_leave)
        with anyio.fail_after(BOUND_S):
            while len(first) < 6:
                await anyio.sleep(0.02)
        assert await log_count(log, subscribed) == before + 1
        # Half leave while as many come.
        second: list[Stream] = []
        second_leave = anyio.Event()
        first_leave.set()
        for who in range(6, 9):
            tg.start_soon(hold, http, who, second, second_leave)
        with anyio.fail_after(BOUND_S):
            while len(second) < 3:
                await anyio.sleep(0.02)
        # Once the first six are gone (their upstream subscription's count with them), the
        # three that stay still hear of updates: the upstream was left subscribed.
        await anyio.sleep(0.5)
        for stream in second:
            while True:
                try:
                    stream.receive.receive_nowait()
                except anyio.WouldBlock:
                    break
            message = await stream.next()
            assert message["method"] == "notifications/resources/updated", message
        second_leave.set()
    # Unsubscribed as often as subscribed (the first six may all have left before the other
    # three came): nothing is left subscribed upstream.
    await until_logged(log, unsubscribed, gone + await log_count(log, subscribed) - before)


async def test_a_client_that_leaves_mid_subscribe_leaves_the_upstream_unsubscribed(
    tmp_path: Path,
) -> None:
    """A client leaving while its listen's subscribe is on its way leaves the upstream unsubscribed.

    The subscribe runs to its end (shielded) and is recorded; the stream's end then drops it,
    the last subscriber unsubscribing the upstream. Cut short with its handler, the subscribe
    would reach the upstream unrecorded, and stay there. The fixture answers each subscribe
    after 2 s.
    """
    fixture, url = start_fixture(
        "--conformance", "--subscribe-delay-ms", "2000", log=tmp_path / "fixture.log"
    )
    catalog = tmp_path / "catalog.toml"
    catalog.write_text(f'[[upstreams]]\nid = "slow"\nurl = "{url}"\n')
    log = tmp_path / "gateway.log"
    port = free_port()
    try:
        process = start_gateway(gateway_env("python", catalog, None), port, log=log)
        try:
            gw = Gateway("python", f"http://127.0.0.1:{port}", SECRET, [process])
            body = _listen_body(1, {"resourceSubscriptions": [WATCHED]})
            async with httpx.AsyncClient(timeout=httpx.Timeout(BOUND_S)) as http:
                with anyio.move_on_after(0.5) as gone:
                    await http.post(gw.url, json=body, headers=_headers(gw.token()))
                assert gone.cancelled_caught, "answered before the upstream's subscribe"
            await until_logged(log, f"subscribed to {WATCHED!r}", 1)
            await until_logged(log, f"unsubscribed from {WATCHED!r}", 1)
            # A 2025 session deleted while its resources/subscribe is on its way: its end ran
            # before the subscription was recorded, which is then dropped at once (before, it
            # stayed, counted for a session that was gone, and the upstream stayed subscribed).
            async with httpx.AsyncClient(timeout=httpx.Timeout(BOUND_S)) as http:
                token = gw.token()
                r = await http.post(gw.url, json=INITIALIZE, headers=gw.headers(token))
                session = r.headers["mcp-session-id"]
                initialized = {"jsonrpc": "2.0", "method": "notifications/initialized"}
                await http.post(gw.url, json=initialized, headers=gw.headers(token, session))
                subscribe = {"jsonrpc": "2.0", "id": 2, "method": "resources/subscribe"}
                subscribe["params"] = {"uri": WATCHED}
                async with anyio.create_task_group() as tg:
                    # Its answer does not matter here (the SDK cancels it at the DELETE).
                    tg.start_soon(
                        lambda: http.post(gw.url, json=subscribe, headers=gw.headers(token, session))
                    )
                    await anyio.sleep(0.5)
                    r = await http.delete(gw.url, headers=gw.headers(token, session))
                    assert r.status_code == 200, r.text
            await until_logged(log, f"subscribed to {WATCHED!r}", 2)
            await until_logged(log, f"unsubscribed from {WATCHED!r}", 2)
        finally:
            stop(process)
    finally:
        stop(fixture)
