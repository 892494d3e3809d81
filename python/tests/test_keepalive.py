"""The keep-alive race on the HTTP/JSON hop: a runtime closing idle connections costs no call.

The runtime closes a keep-alive connection that stays silent for ``--header-read-timeout-ms``.
Here it is 200 ms while the gateway keeps idle connections for its default 5 s, and 200 calls
are made with pauses swept from just under 200 ms to just over: some go out just as the runtime
closes the connection they were sent on (without the resend, some of them were 502s). Each of
them must be answered (the gateway sends a request the runtime cannot have processed once
more); none may be a 502.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest

from conftest import RUNTIME_FLAGS, SECRET, Gateway, Runtime, _socket_dir, gateway_env
from mcp_gateway.testing import free_port, start_gateway, start_runtime, stop

RUNTIME_IDLE_S = 0.2
CALLS = 200


@pytest.fixture(params=["http", "http-httpx"])
def short_idle_stack(
    request: pytest.FixtureRequest, workdir: Path, catalog: Path
) -> Iterator[tuple[Gateway, Path]]:
    mode: str = request.param
    sockets = _socket_dir()
    log = workdir / "runtime-keepalive.log"
    rt = Runtime(None, str(sockets / "http.sock"), str(sockets / "grpc.sock"), catalog, log)
    idle_ms = str(int(RUNTIME_IDLE_S * 1000))
    rt.process = start_runtime(
        catalog, rt.http_uds, None, extra=(*RUNTIME_FLAGS, "--header-read-timeout-ms", idle_ms), log=log
    )
    port = free_port()
    gateway_log = workdir / f"gateway-keepalive-{mode}-{port}.log"
    process = start_gateway(gateway_env(mode, catalog, rt), port, log=gateway_log)
    try:
        yield Gateway(mode, f"http://127.0.0.1:{port}", SECRET, [process]), gateway_log
    finally:
        stop(process)
        stop(rt.process)


async def test_calls_spaced_around_the_runtime_idle_timeout_are_all_answered(
    short_idle_stack: tuple[Gateway, Path],
) -> None:
    gw, log = short_idle_stack
    token = gw.token()
    statuses: dict[int, int] = {}
    async with httpx.AsyncClient(timeout=30.0) as http:
        session = await gw.initialize(http, token)
        for i in range(CALLS):
            # Pauses swept from 10 ms under the runtime's idle timeout to 2 ms over it, in 0.25 ms
            # steps: the gateway's own work puts its request within a few ms of the close.
            await anyio.sleep(RUNTIME_IDLE_S - 0.010 + (i % 49) * 0.00025)
            r = await http.post(
                gw.url, json={"jsonrpc": "2.0", "id": i, "method": "ping"}, headers=gw.headers(token, session)
            )
            statuses[i] = r.status_code
    failed = {i: s for i, s in statuses.items() if s != 200}
    resent = log.read_text().count("sending again")
    print(f"{CALLS} calls, {resent} sent again after the runtime closed their connection")
    assert not failed, f"{len(failed)} of {CALLS} calls failed: {failed}"
