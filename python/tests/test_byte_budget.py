"""The gateway's byte budget: request bytes in flight per subject and per worker, in every mode.

A gateway of its own per mode with a budget of 1 MiB per subject and 1.5 MiB in total
(``MCP_GATEWAY_MAX_BYTES_PER_SUBJECT``, ``MCP_GATEWAY_MAX_BYTES_IN_FLIGHT``):

- a body larger than the subject's budget alone is 429 ``-32000`` without ``Retry-After``;
- while alice holds 700 KiB in a running ``sleep`` call, her next 400 KiB is 429 with
  ``Retry-After: 1``, bob's 900 KiB is 503 with ``Retry-After: 1`` (the process's budget), and
  small requests of both are served;
- once the call has ended, bob's 900 KiB is served: what was held was given back.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from conftest import MODES, Gateway, Runtimes, gateway_env
from mcp_gateway.testing import free_port, start_gateway, stop

KIB = 1024
PER_SUBJECT = 1024 * KIB
TOTAL = 1536 * KIB


@pytest.fixture(params=MODES)
def budgeted(
    request: pytest.FixtureRequest, workdir: Path, catalog: Path, runtimes: Runtimes
) -> Iterator[Gateway]:
    """A gateway of its own in each mode with a small byte budget."""
    mode: str = request.param
    env = gateway_env(mode, catalog, runtimes.get() if mode != "python" else None)
    env["MCP_GATEWAY_MAX_BYTES_PER_SUBJECT"] = str(PER_SUBJECT)
    env["MCP_GATEWAY_MAX_BYTES_IN_FLIGHT"] = str(TOTAL)
    port = free_port()
    process = start_gateway(env, port, log=workdir / f"gateway-budget-{mode}-{port}.log")
    try:
        yield Gateway(mode, f"http://127.0.0.1:{port}", processes=[process])
    finally:
        stop(process)


def padded_ping(i: int, pad: int) -> bytes:
    """A ``ping`` body of about ``pad`` bytes (the padding in ``params._meta``)."""
    params = {"_meta": {"pad": "x" * pad}}
    return json.dumps({"jsonrpc": "2.0", "id": i, "method": "ping", "params": params}).encode()


def assert_refused(r: httpx.Response, status: int, retry_after: str | None, message: str) -> None:
    assert r.status_code == status, r.text
    body: dict[str, Any] = r.json()
    assert body["error"]["code"] == -32000
    assert body["error"]["message"].startswith(message), body
    assert r.headers.get("retry-after") == retry_after


async def test_bodies_past_the_byte_budget_are_refused_and_given_back(budgeted: Gateway) -> None:
    gw = budgeted
    alice, bob = gw.token("alice@example.com"), gw.token("bob@example.com")
    async with httpx.AsyncClient(timeout=30.0) as http:
        a_sid = await gw.initialize(http, alice)
        b_sid = await gw.initialize(http, bob)

        async def post(token: str, sid: str, body: bytes) -> httpx.Response:
            return await http.post(gw.url, content=body, headers=gw.headers(token, sid))

        alone = await post(alice, a_sid, padded_ping(1, 1100 * KIB))
        assert_refused(alone, 429, None, "Too many bytes in flight: this request alone exceeds")

        sleep = {
            "jsonrpc": "2.0",
            "id": 2,
            "method": "tools/call",
            "params": {"name": "sleep", "arguments": {"ms": 1500}, "_meta": {"pad": "x" * (700 * KIB)}},
        }
        async with anyio.create_task_group() as tg:
            answers: list[httpx.Response] = []

            async def hold() -> None:
                answers.append(await post(alice, a_sid, json.dumps(sleep).encode()))

            tg.start_soon(hold)
            with anyio.fail_after(10):
                while await gw.inflight(http, bob, b_sid) != 1:
                    await anyio.sleep(0.01)
            over_quota = await post(alice, a_sid, padded_ping(3, 400 * KIB))
            assert_refused(over_quota, 429, "1", "Too many bytes in flight: this subject already holds")
            over_budget = await post(bob, b_sid, padded_ping(4, 900 * KIB))
            assert_refused(over_budget, 503, "1", "Server busy: the budget of 1572864 bytes")
            assert (await post(alice, a_sid, padded_ping(5, 10))).status_code == 200
            assert (await post(bob, b_sid, padded_ping(6, 10))).status_code == 200
        assert answers[0].status_code == 200, answers[0].text
        again = await post(bob, b_sid, padded_ping(7, 900 * KIB))
        assert again.status_code == 200, again.text
        assert "error" not in again.json()
