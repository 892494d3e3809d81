"""The Python baseline's live catalog (``_baseline/live.py``), as the runtime's ``live.rs``.

Real processes: dynamic fixtures (``--dynamic-tools``: ``add_tool`` / ``remove_tool`` change
the tool list and send ``notifications/tools/list_changed``) and plain ones as upstreams, and a
gateway in mode ``python`` of its own per test, signalled with ``SIGHUP``. Each session's
standalone GET stream is read as raw SSE, opened before anything changes (its ``200`` means the
baseline will tell it). Eventual states are polled with a bound, never timed. The last test
checks the runtime's ``list_changed`` relayed through the gateway's socket modes too.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import mcp_types as types
import pytest
from mcp.client.session import IncomingMessage

from conftest import INITIALIZE, SECRET, Gateway, gateway_env, serve_catalog
from mcp_gateway.testing import free_port, start_fixture, start_gateway, stop

WATCHED = "test://watched-resource"
"""A resource of the conformance fixture that reports an update every 200 ms once subscribed."""
BOUND_S = 30.0
"""The longest wait for an eventual state (a notification, a log line), in seconds."""


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("live")


@pytest.fixture(scope="module")
def fixtures(workdir: Path) -> Iterator[dict[str, str]]:
    """Upstream URLs: ``dyn`` and ``dyn_team`` (dynamic), ``a``, ``b``, ``c`` (plain)."""
    processes: list[subprocess.Popen[bytes]] = []
    urls: dict[str, str] = {}
    try:
        for name in ("dyn", "dyn_team", "a", "b", "c"):
            args = ("--dynamic-tools",) if name.startswith("dyn") else ()
            process, url = start_fixture(*args, log=workdir / f"fixture-{name}.log")
            processes.append(process)
            urls[name] = url
        yield urls
    finally:
        for process in processes:
            stop(process)


@contextlib.contextmanager
def baseline(
    workdir: Path, name: str, catalog: str
) -> Iterator[tuple[Gateway, subprocess.Popen[bytes], Path]]:
    """A gateway in mode ``python`` serving ``catalog`` (written to ``<name>.toml``).

    Yields:
        The gateway, its process and its log file.
    """
    path = workdir / f"{name}.toml"
    path.write_text(catalog)
    log = workdir / f"gateway-{name}.log"
    port = free_port()
    process = start_gateway(gateway_env("python", path, None), port, log=log)
    try:
        yield Gateway("python", f"http://127.0.0.1:{port}", SECRET, [process]), process, log
    finally:
        stop(process)


def upstream(uid: str, url: str, prefix: str = "", team: str | None = None) -> str:
    text = f'[[upstreams]]\nid = "{uid}"\nurl = "{url}"\nprefix = "{prefix}"\n'
    if team is not None:
        text += f'visibility = "team"\nteam = "{team}"\n'
    return text + "\n"


class Standalone:
    """A session's standalone GET stream: the JSON messages it carries, in order."""

    def __init__(self) -> None:
        self.send, self.receive = anyio.create_memory_object_stream[dict[str, Any]](100)

    async def next(self) -> dict[str, Any]:
        """The next message (within :data:`BOUND_S`)."""
        with anyio.fail_after(BOUND_S):
            return await self.receive.receive()

    async def next_method(self) -> str:
        """The method of the next message."""
        return str((await self.next())["method"])


@contextlib.asynccontextmanager
async def standalone(
    gw: Gateway, http: httpx.AsyncClient, token: str, session: str
) -> AsyncIterator[Standalone]:
    """Open the GET stream of ``session`` (answered ``200``) and read it in a task."""
    stream = Standalone()
    opened = anyio.Event()

    async def read() -> None:
        headers = gw.headers(token, session)
        headers["accept"] = "text/event-stream"
        async with http.stream("GET", gw.url, headers=headers) as r:
            assert r.status_code == 200, await r.aread()
            opened.set()
            async for line in r.aiter_lines():
                if line.startswith("data:"):
                    stream.send.send_nowait(json.loads(line[5:]))

    async with anyio.create_task_group() as tg:
        tg.start_soon(read)
        with anyio.fail_after(BOUND_S):
            await opened.wait()
        yield stream
        tg.cancel_scope.cancel()


async def rpc(
    gw: Gateway, http: httpx.AsyncClient, token: str, session: str, method: str, params: Any
) -> Any:
    """A request's JSON-RPC answer (from a JSON body or the last event of an SSE one)."""
    body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
    r = await http.post(gw.url, json=body, headers=gw.headers(token, session))
    assert r.status_code == 200, r.text
    if r.headers["content-type"].startswith("text/event-stream"):
        events = [json.loads(line[5:]) for line in r.text.splitlines() if line.startswith("data:")]
        return events[-1]
    return r.json()


async def tool_names(gw: Gateway, http: httpx.AsyncClient, token: str, session: str) -> list[str]:
    answer = await rpc(gw, http, token, session, "tools/list", {})
    return sorted(t["name"] for t in answer["result"]["tools"])


async def call_text(
    gw: Gateway, http: httpx.AsyncClient, token: str, session: str, tool: str, **args: Any
) -> str:
    answer = await rpc(gw, http, token, session, "tools/call", {"name": tool, "arguments": args})
    assert "result" in answer, answer
    return str(answer["result"]["content"][0]["text"])


async def log_lines(log: Path, words: str, at_least: int = 1) -> list[str]:
    """The lines of ``log`` containing ``words``, once there are ``at_least`` (polled, bounded)."""
    deadline = time.monotonic() + BOUND_S
    while True:
        text = await anyio.Path(log).read_text(errors="replace")
        lines = [line for line in text.splitlines() if words in line]
        if len(lines) >= at_least:
            return lines
        assert time.monotonic() < deadline, f"no {at_least} log lines with {words!r}:\n{text}"
        await anyio.sleep(0.05)


async def test_an_upstream_list_changed_reaches_the_sessions_that_can_see_it(
    workdir: Path, fixtures: dict[str, str], http: httpx.AsyncClient
) -> None:
    catalog = upstream("public", fixtures["dyn"]) + upstream("team", fixtures["dyn_team"], "t_", team="alpha")
    with baseline(workdir, "list-changed", catalog) as (gw, _, _):
        alice, bob = gw.token("alice@example.com", teams=["alpha"]), gw.token("bob@example.com", teams=[])
        init = await http.post(gw.url, json=INITIALIZE, headers=gw.headers(alice))
        assert init.json()["result"]["capabilities"]["tools"]["listChanged"] is True, init.text
        a, b = await gw.initialize(http, alice), await gw.initialize(http, bob)
        async with standalone(gw, http, alice, a) as a_events, standalone(gw, http, bob, b) as b_events:
            # A public upstream's change reaches both; the new tool is listed and callable.
            assert await call_text(gw, http, bob, b, "add_tool", name="fresh") == "added tool fresh"
            assert await a_events.next_method() == "notifications/tools/list_changed"
            assert await b_events.next_method() == "notifications/tools/list_changed"
            assert "fresh" in await tool_names(gw, http, bob, b)
            assert await call_text(gw, http, bob, b, "fresh") == "added tool fresh"

            # The team upstream's change reaches alice only (bob cannot see it).
            await call_text(gw, http, alice, a, "t_add_tool", name="secret")
            assert await a_events.next_method() == "notifications/tools/list_changed"
            assert "t_secret" in await tool_names(gw, http, alice, a)
            assert "t_secret" not in await tool_names(gw, http, bob, b)
            assert await call_text(gw, http, alice, a, "t_secret") == "added tool secret"

            # Bob's next notification is the next public change (not the team's): the tool it
            # removed is gone from his list when it arrives.
            await call_text(gw, http, bob, b, "remove_tool", name="fresh")
            assert await b_events.next_method() == "notifications/tools/list_changed"
            assert "fresh" not in await tool_names(gw, http, bob, b)
            assert await a_events.next_method() == "notifications/tools/list_changed"
            names = await tool_names(gw, http, alice, a)
            assert "t_secret" in names, names
            assert "fresh" not in names, names
            # A removed tool is answered like any unknown one.
            gone = await rpc(gw, http, bob, b, "tools/call", {"name": "fresh", "arguments": {}})
            assert gone["error"]["code"] == -32602, gone


async def test_sighup_reloads_the_catalog_and_keeps_the_upstreams_that_stay(
    workdir: Path, fixtures: dict[str, str], http: httpx.AsyncClient
) -> None:
    first = upstream("a", fixtures["a"]) + upstream("b", fixtures["b"], "b_")
    with baseline(workdir, "reload", first) as (gw, process, log):
        alice = gw.token("alice@example.com", teams=[])
        sid = await gw.initialize(http, alice)
        assert "b_echo" in await tool_names(gw, http, alice, sid)
        async with standalone(gw, http, alice, sid) as events, anyio.create_task_group() as tg:
            # A call to the upstream that stays, in flight across the reload.
            sleeping = anyio.Event()

            async def sleep() -> None:
                with contextlib.suppress(Exception):
                    await rpc(
                        gw, http, alice, sid, "tools/call", {"name": "sleep", "arguments": {"ms": 60_000}}
                    )
                sleeping.set()

            tg.start_soon(sleep)
            await _until_inflight(gw, http, alice, sid, 1)

            # `a` stays, `b` goes, `c` comes.
            (workdir / "reload.toml").write_text(
                upstream("a", fixtures["a"]) + upstream("c", fixtures["c"], "c_")
            )
            process.send_signal(signal.SIGHUP)
            assert await events.next_method() == "notifications/tools/list_changed"
            names = await tool_names(gw, http, alice, sid)
            assert "c_echo" in names, names
            assert "echo" in names, names
            assert not any(n.startswith("b_") for n in names), names
            line = await log_lines(log, "catalog reloaded")
            assert len(line) == 1, line
            assert '"c"' in line[0], line
            assert '"b"' in line[0], line

            # The session and the call of the upstream that stayed are still there.
            assert await gw.inflight(http, alice, sid) == 1
            assert not sleeping.is_set()
            assert await call_text(gw, http, alice, sid, "c_echo", text="hi") == "hi"
            assert await call_text(gw, http, alice, sid, "echo", text="still") == "still"
            tg.cancel_scope.cancel()


async def test_a_bad_catalog_at_sighup_is_refused_in_one_line_and_the_old_one_stays(
    workdir: Path, fixtures: dict[str, str], http: httpx.AsyncClient
) -> None:
    good = upstream("a", fixtures["a"]) + upstream("c", fixtures["c"], "c_")
    with baseline(workdir, "refused", good) as (gw, process, log):
        alice = gw.token("alice@example.com", teams=[])
        sid = await gw.initialize(http, alice)
        names = await tool_names(gw, http, alice, sid)
        assert "c_echo" in names, names
        assert "echo" in names, names

        # Two upstreams exposing `echo`: refused in one line naming it; the old catalog stays.
        (workdir / "refused.toml").write_text(upstream("a", fixtures["a"]) + upstream("c", fixtures["c"]))
        process.send_signal(signal.SIGHUP)
        refused = await log_lines(log, "catalog reload refused")
        assert len(refused) == 1, refused
        assert "echo" in refused[0], refused
        assert "the old catalog is kept" in refused[0], refused
        assert await tool_names(gw, http, alice, sid) == names
        assert await call_text(gw, http, alice, sid, "c_echo", text="hi") == "hi"

        # So is a file that is not TOML.
        (workdir / "refused.toml").write_text("[[upstreams]\n")
        process.send_signal(signal.SIGHUP)
        refused = await log_lines(log, "catalog reload refused", at_least=2)
        assert len(refused) == 2, refused
        assert "invalid catalog" in refused[1], refused
        assert await tool_names(gw, http, alice, sid) == names
        assert process.poll() is None
        assert not await log_lines(log, "catalog reloaded", at_least=0)


async def _until_inflight(gw: Gateway, http: httpx.AsyncClient, token: str, session: str, n: int) -> None:
    """Wait (bounded) until the fixture counts ``n`` calls in flight."""
    with anyio.fail_after(BOUND_S):
        while await gw.inflight(http, token, session) != n:
            await anyio.sleep(0.05)


async def test_a_changed_upstream_keeps_the_sessions_resource_subscriptions(workdir: Path) -> None:
    conformance, url = start_fixture("--conformance", log=workdir / "fixture-conformance.log")
    try:
        with baseline(workdir, "changed", upstream("watched", url, "w_")) as (gw, process, log):
            updates = Updates()
            async with gw.client(gw.token("alice@example.com", teams=[]), message_handler=updates) as client:
                await client.subscribe_resource(WATCHED)
                assert await updates.next(2) == [WATCHED] * 2

                # The same id with another prefix: a changed upstream, replaced by a new one.
                (workdir / "changed.toml").write_text(upstream("watched", url, "x_"))
                process.send_signal(signal.SIGHUP)
                line = await log_lines(log, "catalog reloaded")
                assert 'changed ["watched"]' in line[0], line
                names = [t.name for t in (await client.list_tools()).tools]
                assert "x_echo" in names, names
                assert "w_echo" not in names, names
                # The old upstream is stopped before the line is logged: what arrives after the
                # updates already queued comes from the new one.
                updates.drain()
                assert await updates.next(2) == [WATCHED] * 2
    finally:
        stop(conformance)


async def test_a_rotated_token_file_replaces_the_upstream_at_sighup(
    workdir: Path, http: httpx.AsyncClient
) -> None:
    keyed, url = start_fixture("--require-header", "x-key=new-key", log=workdir / "fixture-keyed.log")
    try:
        (workdir / "key").write_text("old-key\n")
        catalog = (
            f'[[upstreams]]\nid = "keyed"\nurl = "{url}"\nrequired = false\n'
            'headers = { X-Key = { file = "key" } }\n'
        )
        with baseline(workdir, "rotated", catalog) as (gw, process, log):
            alice = gw.token("alice@example.com", teams=[])
            sid = await gw.initialize(http, alice)
            assert await tool_names(gw, http, alice, sid) == []

            # The same file, the same value: nothing changes.
            process.send_signal(signal.SIGHUP)
            await log_lines(log, "catalog reloaded: nothing changed")
            # The same catalog, the file rotated: the upstream is replaced and now listed.
            (workdir / "key").write_text("new-key\n")
            process.send_signal(signal.SIGHUP)
            line = await log_lines(log, 'changed ["keyed"]')
            assert len(line) == 1, line
            assert "echo" in await tool_names(gw, http, alice, sid)
            # The value is never logged.
            assert "new-key" not in await anyio.Path(log).read_text()
    finally:
        stop(keyed)


class Updates:
    """The URIs of the ``notifications/resources/updated`` an SDK client receives, in order."""

    def __init__(self) -> None:
        self.send, self.receive = anyio.create_memory_object_stream[str](1000)

    async def __call__(self, message: IncomingMessage) -> None:
        if isinstance(message, types.ResourceUpdatedNotification):
            self.send.send_nowait(str(message.params.uri))

    def drain(self) -> None:
        """Forget the updates received so far."""
        with contextlib.suppress(anyio.WouldBlock):
            while True:
                self.receive.receive_nowait()

    async def next(self, n: int) -> list[str]:
        """The next ``n`` updated URIs (each within :data:`BOUND_S`)."""
        out = []
        for _ in range(n):
            with anyio.fail_after(BOUND_S):
                out.append(await self.receive.receive())
        return out


async def test_an_upstream_list_changed_reaches_clients_in_every_mode(
    workdir: Path, http: httpx.AsyncClient
) -> None:
    """The runtime's list_changed, relayed on the GET stream through the gateway's socket modes.

    One runtime and a gateway per mode (the baseline serving the same catalog itself) in front of
    a dynamic fixture of this test's own; in each mode in turn, a session's change of the tool
    list reaches its own GET stream, and the new tool is listed and callable.
    """
    fixture, url = start_fixture("--dynamic-tools", log=workdir / "fixture-every-mode.log")
    processes: list[subprocess.Popen[bytes]] = [fixture]
    try:
        path = workdir / "every-mode.toml"
        path.write_text(upstream("dyn", url))
        gateways = serve_catalog(path, workdir, "every-mode", processes)
        for mode, gw in gateways.items():
            token = gw.token("alice@example.com", teams=[])
            sid = await gw.initialize(http, token)
            async with standalone(gw, http, token, sid) as events:
                name = f"fresh_{mode.replace('-', '_')}"
                assert await call_text(gw, http, token, sid, "add_tool", name=name) == f"added tool {name}"
                assert await events.next_method() == "notifications/tools/list_changed", mode
                deadline = time.monotonic() + BOUND_S
                while name not in await tool_names(gw, http, token, sid):
                    assert time.monotonic() < deadline, f"{mode}: {name} never listed"
                    await anyio.sleep(0.05)
                assert await call_text(gw, http, token, sid, name) == f"added tool {name}", mode
    finally:
        for process in reversed(processes):
            stop(process)
