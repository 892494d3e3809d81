"""``resources/subscribe`` / ``unsubscribe`` through every mode, with the official SDK client.

The conformance fixture reports ``notifications/resources/updated`` for a subscribed URI every
200 ms. It is the team upstream (team alpha, prefix ``alpha_``) beside a plain public fixture,
so its ``test://`` resources are visible to alice (team alpha) and unknown to bob: his
subscribe gets -32002, the error ``resources/read`` gives for them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import anyio
import mcp_types as types
import pytest
from mcp.client.session import IncomingMessage
from mcp.shared.exceptions import MCPError

from conftest import SECRET, Gateway
from mcp_gateway.testing import EDGE_MODES, free_port, stack, start_fixture, stop

MODES = ["python", "http", "grpc", *EDGE_MODES]
WATCHED = "test://watched-resource"
STATIC = "test://static-text"


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    workdir = tmp_path_factory.mktemp("subscribe")
    conformance, conformance_url = start_fixture("--conformance", log=workdir / "conformance.log")
    plain, plain_url = start_fixture(log=workdir / "plain.log")
    path = workdir / "catalog.toml"
    path.write_text(
        f'[[upstreams]]\nid = "public"\nurl = "{plain_url}"\n\n'
        f'[[upstreams]]\nid = "alpha"\nurl = "{conformance_url}"\nprefix = "alpha_"\n'
        'visibility = "team"\nteam = "alpha"\n'
    )
    try:
        yield path
    finally:
        stop(conformance)
        stop(plain)


@pytest.fixture(params=MODES)
def gw(request: pytest.FixtureRequest, catalog: Path) -> Iterator[Gateway]:
    port = free_port()
    with stack(request.param, port, SECRET, catalog=catalog):
        yield Gateway(request.param, f"http://127.0.0.1:{port}", SECRET, [])


class Updates:
    """The URIs of the ``notifications/resources/updated`` a client receives, in order."""

    def __init__(self) -> None:
        self.send, self.receive = anyio.create_memory_object_stream[str](100)

    async def __call__(self, message: IncomingMessage) -> None:
        if isinstance(message, types.ResourceUpdatedNotification):
            self.send.send_nowait(str(message.params.uri))

    async def next(self, n: int) -> list[str]:
        """The next ``n`` updated URIs (each within 10 s)."""
        out = []
        for _ in range(n):
            with anyio.fail_after(10):
                out.append(await self.receive.receive())
        return out


async def test_updates_reach_the_sessions_subscribed_to_that_resource_only(gw: Gateway) -> None:
    alice = gw.token("alice@example.com", teams=["alpha"])
    watched, static = Updates(), Updates()
    async with (
        gw.client(alice, message_handler=watched) as one,
        gw.client(alice, message_handler=static) as two,
    ):
        assert one.server_capabilities is not None
        assert one.server_capabilities.resources is not None, gw.mode
        assert one.server_capabilities.resources.subscribe, gw.mode
        await one.subscribe_resource(WATCHED)
        await two.subscribe_resource(STATIC)
        assert await watched.next(3) == [WATCHED] * 3, gw.mode
        assert await static.next(3) == [STATIC] * 3, gw.mode
        # One session leaving keeps the other's upstream subscription alive.
        await one.unsubscribe_resource(WATCHED)
        await two.subscribe_resource(WATCHED)
        seen = set(await static.next(6))
        assert seen == {STATIC, WATCHED}, gw.mode


async def test_an_invisible_or_unknown_uri_is_refused_as_resources_read_refuses_it(gw: Gateway) -> None:
    async with gw.client(gw.token("bob@example.com", teams=[])) as client:
        for uri in (WATCHED, "test://nope"):
            with pytest.raises(MCPError) as read:
                await client.read_resource(uri)
            assert read.value.code == -32002, gw.mode
            for call in (client.subscribe_resource, client.unsubscribe_resource):
                with pytest.raises(MCPError) as err:
                    await call(uri)
                assert (err.value.code, str(err.value)) == (read.value.code, str(read.value)), (gw.mode, uri)
