"""``completion/complete`` through every mode, with the official SDK client.

The fixture serves its conformance catalog (``--conformance``: it completes the arguments of
``test_prompt_with_arguments`` and of the template ``test://template/{id}/data`` from a fixed
word list). The catalog exposes it twice: public, and for team alpha with the prefix ``alpha_``,
so a completion of ``alpha_test_prompt_with_arguments`` only gets values when the chain renamed
the prompt to the upstream's name, and a caller outside team alpha gets the error of an unknown
prompt (-32602), as ``prompts/get`` answers.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import mcp_types as types
import pytest
from mcp.shared.exceptions import MCPError

from conftest import SECRET, Gateway
from mcp_gateway.testing import EDGE_MODES, free_port, stack, start_fixture, stop

MODES = ["python", "http", "grpc", *EDGE_MODES]


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    workdir = tmp_path_factory.mktemp("completion")
    process, url = start_fixture("--conformance", log=workdir / "fixture.log")
    path = workdir / "catalog.toml"
    path.write_text(
        f'[[upstreams]]\nid = "public"\nurl = "{url}"\n\n'
        f'[[upstreams]]\nid = "alpha"\nurl = "{url}"\nprefix = "alpha_"\n'
        'visibility = "team"\nteam = "alpha"\n'
    )
    try:
        yield path
    finally:
        stop(process)


@pytest.fixture(params=MODES)
def gw(request: pytest.FixtureRequest, catalog: Path) -> Iterator[Gateway]:
    port = free_port()
    with stack(request.param, port, SECRET, catalog=catalog):
        yield Gateway(request.param, f"http://127.0.0.1:{port}", SECRET, [])


def values(result: types.CompleteResult) -> list[str]:
    return list(result.completion.values)


async def test_completion_is_routed_to_the_prompt_or_template_upstream(gw: Gateway) -> None:
    prompt = types.PromptReference(type="ref/prompt", name="alpha_test_prompt_with_arguments")
    async with gw.client(gw.token("alice@example.com", teams=["alpha"])) as client:
        assert client.server_capabilities is not None
        assert client.server_capabilities.completions is not None, gw.mode
        done = await client.complete(prompt, {"name": "arg1", "value": "par"})
        assert values(done) == ["paris", "park", "party"], gw.mode
        template = types.ResourceTemplateReference(type="ref/resource", uri="test://template/{id}/data")
        done = await client.complete(template, {"name": "id", "value": "test"})
        assert values(done) == ["test", "testing", "tested"], gw.mode
    async with gw.client(gw.token("bob@example.com", teams=[])) as client:
        with pytest.raises(MCPError) as err:
            await client.complete(prompt, {"name": "arg1", "value": "par"})
        assert err.value.code == -32602, gw.mode
        assert str(err.value) == "Unknown prompt: alpha_test_prompt_with_arguments", gw.mode
