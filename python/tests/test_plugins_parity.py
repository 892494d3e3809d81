"""The core's plugins give the same answers in every mode: one table of calls and their answers.

The plugins (``mcp_gateway.core.plugins``: a per-team tool deny-list and an output redactor) are
configured by one file, :data:`PLUGINS`, named by ``MCP_CORE_PLUGINS_FILE``. In the proxied
modes (``python``, ``http``, ``grpc``) the gateway applies them (``mcp_gateway._plugins``); in
the edge modes the runtime applies them through the core's hooks (``docs/core-spi.md``). Either
way a call must get the answer :data:`CASES` gives for it:

- ``plugged``: the answer with :data:`PLUGINS`;
- ``plain``: the answer with no plugin file (nothing changes);
- ``notes``: the notifications an SSE answer relays before its result, unchanged (the log
  message matches the redactor's pattern and still arrives as the upstream sent it);
- ``upstream_idle``: right after the answer the fixture runs no ``sleep`` or ``progress`` call
  (tool ``inflight`` answers 0): a refused ``sleep`` was never sent upstream.

Each case is run by :func:`run_case` against a public MCP endpoint, whatever serves it: a
gateway in the proxied modes, the runtime's public endpoint (``--public-listen``) asking the core
over gRPC (``edge``) or HTTP/JSON (``edge-http``) in the edge modes, the core started with
``--plugins`` :data:`PLUGINS` or without a plugin file.

The parts the real plugin set does not reach (a pre_invoke hook replacing the arguments, a post
hook refusing, a plugin raising, an SSE answer cut at every byte) are checked at the end on
``ProxiedPlugins`` itself, with a plugin class made for it (no server is stood in for).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import (
    ACCEPT,
    INITIALIZE,
    PROTOCOL,
    RUNTIME_FLAGS,
    SECRET,
    Gateway,
    Runtimes,
    _socket_dir,
    gateway_env,
)
from mcp_gateway import mint_token
from mcp_gateway._auth import AuthContext
from mcp_gateway._backend import McpRequest, McpResponse
from mcp_gateway._plugins import ProxiedPlugins, load_plugins
from mcp_gateway.core.plugins import HookDecision, HookPoint, Plugins
from mcp_gateway.testing import free_port, start_edge, start_gateway, stop

MODES = ["python", "http", "grpc", "edge", "edge-http"]
"""The modes the table runs through: the three proxied modes and the two edge modes."""

KEY = "sk-ABCDEFGH12"
"""A string the redactor matches (``sk-`` and at least 8 letters or digits)."""

PLUGINS: dict[str, Any] = {
    "deny_tools": {"alpha": ["sleep", "alpha_echo"]},
    # `[0-9]+ steps` stands in for a secret in the one fixture tool that streams (progress).
    "redact": "sk-[A-Za-z0-9]{8,}|[0-9]+ steps",
}
"""The plugin file of the plugged endpoints: team alpha may not call ``sleep`` (the public tool)
nor ``alpha_echo`` (its own team upstream's echo, by its prefixed name); ``sk-...`` keys and
``N steps`` are redacted from every result."""

CALLERS: dict[str, dict[str, Any]] = {
    "alpha": {"sub": "alice@example.com", "teams": ["alpha"]},
    "beta": {"sub": "bob@example.com", "teams": ["beta"]},
    "admin": {"sub": "root@example.com", "teams": None, "is_admin": True},
}
"""Who calls: a member of alpha, a member of beta, an unrestricted admin (no ``teams`` claim)."""


@dataclass(frozen=True)
class Answer:
    """An expected JSON-RPC answer (always HTTP 200, the request's id).

    Attributes:
        texts: The result's ``text`` strings, in document order (tool content, resource
            contents, prompt messages).
        error: The JSON-RPC error code instead of a result.
        message: The error's message, exactly; ``None``: not checked.
        message_has: A string the error's message contains.
    """

    texts: tuple[str, ...] = ()
    error: int | None = None
    message: str | None = None
    message_has: str | None = None


@dataclass(frozen=True)
class Case:
    """One call and its answers.

    Attributes:
        name: The case's id.
        caller: A key of :data:`CALLERS`.
        method: ``tools/call``, ``resources/read`` or ``prompts/get``.
        params: The call's params.
        plugged: The answer with :data:`PLUGINS`.
        plain: The answer without a plugin file.
        notes: The notifications an SSE answer relays before the result, as ``(method, text)``
            pairs (text: a progress notification's ``message``, a log message's ``data``), in
            order, in both runs; ``()``: none (a JSON answer, or an SSE one with only the result).
        progress: The call asks for progress (``_meta.progressToken``).
        path: The MCP endpoint's path.
        upstream_idle: When refused: answered before the call would have ended upstream, and
            after the answer the fixture runs no ``sleep`` or ``progress`` call.
    """

    name: str
    caller: str
    method: str
    params: dict[str, Any]
    plugged: Answer
    plain: Answer
    notes: tuple[tuple[str, str], ...] = ()
    progress: bool = False
    path: str = "/mcp"
    upstream_idle: bool = False


def denied(tool: str, team: str) -> Answer:
    """The deny-list's answer to ``tool`` for a member of ``team``."""
    return Answer(error=-32003, message=f"Tool '{tool}' is not allowed for team '{team}'")


def texts(*values: str) -> Answer:
    """A result whose ``text`` strings are ``values``."""
    return Answer(texts=values)


def call(tool: str, **arguments: Any) -> dict[str, Any]:
    """The params of ``tools/call`` of ``tool``."""
    return {"name": tool, "arguments": arguments}


LARGE = 1_200_000
"""A result over 1 MiB: the HTTP/JSON mode relays such an answer as it arrives, unless a hook
needs it whole."""

SLEEP_MS = 2000
"""How long a refused ``sleep`` would have run upstream, in milliseconds."""

CASES = [
    # The deny-list: the team's own refusals, by the name the client calls.
    Case(
        "alpha sleep denied, upstream never called",
        "alpha",
        "tools/call",
        call("sleep", ms=SLEEP_MS),
        plugged=denied("sleep", "alpha"),
        plain=texts(f"slept {SLEEP_MS} ms"),
        upstream_idle=True,
    ),
    Case(
        "alpha prefixed alpha_echo denied",
        "alpha",
        "tools/call",
        call("alpha_echo", text="hi"),
        plugged=denied("alpha_echo", "alpha"),
        plain=texts("hi"),
    ),
    Case(
        "alpha alpha_sleep allowed (only sleep is listed)",
        "alpha",
        "tools/call",
        call("alpha_sleep", ms=1),
        plugged=texts("slept 1 ms"),
        plain=texts("slept 1 ms"),
    ),
    Case(
        "beta sleep allowed",
        "beta",
        "tools/call",
        call("sleep", ms=1),
        texts("slept 1 ms"),
        texts("slept 1 ms"),
    ),
    Case(
        "admin sleep allowed",
        "admin",
        "tools/call",
        call("sleep", ms=1),
        texts("slept 1 ms"),
        texts("slept 1 ms"),
    ),
    # The redactor: every caller's results, JSON and SSE answers, tools, resources, prompts.
    Case(
        "echo redacted (json)",
        "alpha",
        "tools/call",
        call("echo", text=f"key {KEY} end"),
        plugged=texts("key [REDACTED] end"),
        plain=texts(f"key {KEY} end"),
    ),
    Case(
        "beta_echo redacted for beta",
        "beta",
        "tools/call",
        call("beta_echo", text=f"{KEY} and {KEY}"),
        plugged=texts("[REDACTED] and [REDACTED]"),
        plain=texts(f"{KEY} and {KEY}"),
    ),
    Case(
        "admin echo redacted",
        "admin",
        "tools/call",
        call("echo", text=KEY),
        plugged=texts("[REDACTED]"),
        plain=texts(KEY),
    ),
    Case(
        "echo on a virtual server redacted",
        "alpha",
        "tools/call",
        call("echo", text=f"key {KEY}"),
        plugged=texts("key [REDACTED]"),
        plain=texts(f"key {KEY}"),
        path="/servers/echo-only/mcp",
    ),
    Case(
        "echo without a match unchanged",
        "alpha",
        "tools/call",
        call("echo", text="sk-short"),
        plugged=texts("sk-short"),
        plain=texts("sk-short"),
    ),
    Case(
        "large result read whole, unchanged without a match",
        "alpha",
        "tools/call",
        call("payload", size_bytes=LARGE),
        plugged=texts("x" * LARGE),
        plain=texts("x" * LARGE),
    ),
    Case(
        "tool error result redacted",
        "alpha",
        "tools/call",
        call("fail", message=f"leaked {KEY}"),
        plugged=texts("leaked [REDACTED]"),
        plain=texts(f"leaked {KEY}"),
    ),
    # SSE answers: the notifications pass as the upstream sent them, only the result is
    # rewritten (in the edge modes the runtime holds back only the answer for its post hook).
    Case(
        "progress result redacted (sse), notifications unchanged",
        "alpha",
        "tools/call",
        call("progress", steps=2, interval_ms=20),
        plugged=texts("done [REDACTED]"),
        plain=texts("done 2 steps"),
        notes=(
            ("notifications/progress", "step 1"),
            ("notifications/progress", "step 2"),
            ("notifications/message", "progress finished after 2 steps"),
        ),
        progress=True,
    ),
    Case(
        "progress result redacted without a progress token",
        "beta",
        "tools/call",
        call("progress", steps=1, interval_ms=0),
        plugged=texts("done [REDACTED]"),
        plain=texts("done 1 steps"),
        notes=(("notifications/message", "progress finished after 1 steps"),),
    ),
    Case(
        "resource redacted",
        "alpha",
        "resources/read",
        {"uri": f"fixture://items/{KEY}"},
        plugged=texts("item [REDACTED]"),
        plain=texts(f"item {KEY}"),
    ),
    Case(
        "resource without a match unchanged",
        "beta",
        "resources/read",
        {"uri": "fixture://readme"},
        plugged=texts("MCP fixture server"),
        plain=texts("MCP fixture server"),
    ),
    Case(
        "prompt redacted",
        "alpha",
        "prompts/get",
        {"name": "greet", "arguments": {"name": KEY}},
        plugged=texts("Hello, [REDACTED]!"),
        plain=texts(f"Hello, {KEY}!"),
    ),
    Case(
        "error answers are not rewritten",
        "alpha",
        "prompts/get",
        {"name": f"nothing-{KEY}"},
        plugged=Answer(error=-32602, message_has=KEY),
        plain=Answer(error=-32602, message_has=KEY),
    ),
]


@dataclass
class Reply:
    """What a call got: the HTTP status, the final JSON-RPC message, the notifications before it."""

    status: int
    content_type: str
    final: dict[str, Any]
    notes: list[dict[str, Any]] = field(default_factory=list)


def sse_messages(body: str) -> list[dict[str, Any]]:
    """The JSON messages of the ``data`` of each event of an SSE body."""
    messages = []
    for block in re.split(r"\r?\n\r?\n", body):
        data = "\n".join(
            line.removeprefix("data:").removeprefix(" ")
            for line in block.splitlines()
            if line.startswith("data:")
        )
        if data:
            messages.append(json.loads(data))
    return messages


def collect_texts(value: Any) -> list[str]:
    """Every string under a ``text`` key in ``value``, in document order."""
    if isinstance(value, dict):
        found = []
        for key, item in value.items():
            if key == "text" and isinstance(item, str):
                found.append(item)
            else:
                found.extend(collect_texts(item))
        return found
    if isinstance(value, list):
        return [text for item in value for text in collect_texts(item)]
    return []


async def open_session(http: httpx.AsyncClient, url: str, token: str) -> str:
    """``initialize`` and ``notifications/initialized`` at ``url``; the session id."""
    headers = {"accept": ACCEPT, "content-type": "application/json", "authorization": f"Bearer {token}"}
    r = await http.post(url, json=INITIALIZE, headers=headers)
    assert r.status_code == 200, r.text
    session = r.headers["mcp-session-id"]
    headers |= {"mcp-session-id": session, "mcp-protocol-version": PROTOCOL}
    r = await http.post(url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=headers)
    assert r.status_code == 202, r.text
    return session


async def send(http: httpx.AsyncClient, url: str, token: str, session: str, body: dict[str, Any]) -> Reply:
    """POST one JSON-RPC request in ``session``; the answer, JSON or SSE."""
    headers = {
        "accept": ACCEPT,
        "content-type": "application/json",
        "authorization": f"Bearer {token}",
        "mcp-session-id": session,
        "mcp-protocol-version": PROTOCOL,
    }
    r = await http.post(url, json=body, headers=headers)
    content_type = r.headers.get("content-type", "")
    if content_type.startswith("text/event-stream"):
        messages = sse_messages(r.text)
        assert messages, r.text
        return Reply(r.status_code, content_type, messages[-1], messages[:-1])
    return Reply(r.status_code, content_type, r.json())


def token_of(caller: str) -> str:
    claims = dict(CALLERS[caller])
    return mint_token(SECRET, claims.pop("sub"), **claims)


async def inflight(http: httpx.AsyncClient, base: str) -> int:
    """The fixture's count of running ``sleep`` and ``progress`` calls, asked by the admin."""
    token = token_of("admin")
    session = await open_session(http, f"{base}/mcp", token)
    body = {"jsonrpc": "2.0", "id": "n", "method": "tools/call", "params": call("inflight")}
    reply = await send(http, f"{base}/mcp", token, session, body)
    assert reply.status == 200, reply
    return int(reply.final["result"]["content"][0]["text"])


async def run_case(http: httpx.AsyncClient, base: str, case: Case, expected: Answer) -> None:
    """Make ``case``'s call at the endpoint ``base`` and check the answer against ``expected``."""
    token = token_of(case.caller)
    url = f"{base}{case.path}"
    session = await open_session(http, url, token)
    try:
        await check_case(http, base, url, token, session, case, expected)
    finally:
        headers = {"authorization": f"Bearer {token}", "mcp-session-id": session}
        await http.request("DELETE", url, headers={**headers, "mcp-protocol-version": PROTOCOL})


async def check_case(
    http: httpx.AsyncClient, base: str, url: str, token: str, session: str, case: Case, expected: Answer
) -> None:
    """The call of :func:`run_case` in ``session`` and the checks of its answer."""
    params = dict(case.params)
    if case.progress:
        params["_meta"] = {"progressToken": "p"}
    body = {"jsonrpc": "2.0", "id": case.name, "method": case.method, "params": params}
    started = time.monotonic()
    reply = await send(http, url, token, session, body)
    took = time.monotonic() - started
    assert reply.status == 200, reply
    final = reply.final
    assert final.get("jsonrpc") == "2.0", final
    assert final.get("id") == case.name, final
    if expected.error is not None:
        assert "result" not in final, final
        assert final["error"]["code"] == expected.error, final
        if expected.message is not None:
            assert final["error"]["message"] == expected.message, final
        if expected.message_has is not None:
            assert expected.message_has in final["error"]["message"], final
    else:
        assert "error" not in final, final
        assert tuple(collect_texts(final["result"])) == expected.texts, final
    if case.progress:
        assert reply.content_type.startswith("text/event-stream"), reply
    seen = [
        (note["method"], note["params"].get("message") or note["params"].get("data")) for note in reply.notes
    ]
    assert seen == list(case.notes), reply
    if case.upstream_idle and expected.error is not None:
        assert took < SLEEP_MS / 1000, f"the refused call took {took:.2f} s: it ran upstream"
        assert await inflight(http, base) == 0


# --- the endpoints -------------------------------------------------------------------------------


def _gateways(
    workdir: Path, catalog: Path, runtimes: Runtimes, extra: dict[str, str], tag: str
) -> Iterator[dict[str, str]]:
    """Public endpoints started on first use, one per mode, with ``extra`` in their environment.

    A proxied mode is a gateway. An edge mode is the core (``--plugins`` the file of
    ``MCP_CORE_PLUGINS_FILE`` in ``extra``, none without) and a runtime serving the public
    endpoint on a free port, asking that core.
    """
    started: list[Any] = []

    class Lazy(dict[str, str]):
        def __missing__(self, mode: str) -> str:
            port = free_port()
            if mode in ("edge", "edge-http"):
                plugins = extra.get("MCP_CORE_PLUGINS_FILE")
                logs = workdir / f"edge-{tag}-{mode}"
                logs.mkdir(exist_ok=True)
                started.extend(
                    start_edge(
                        mode,
                        catalog,
                        _socket_dir(),
                        port=port,
                        env={"JWT_SECRET_KEY": SECRET},
                        plugins=Path(plugins) if plugins else None,
                        runtime_extra=RUNTIME_FLAGS,
                        logs=logs,
                    )
                )
                self[mode] = f"http://127.0.0.1:{port}"
                return self[mode]
            env = gateway_env(mode, catalog, runtimes.get() if mode != "python" else None) | extra
            started.append(start_gateway(env, port, log=workdir / f"gateway-{tag}-{mode}.log"))
            self[mode] = f"http://127.0.0.1:{port}"
            return self[mode]

    try:
        yield Lazy()
    finally:
        for process in reversed(started):
            stop(process)


@pytest.fixture(scope="session")
def plugins_file(workdir: Path) -> Path:
    path = workdir / "plugins.json"
    path.write_text(json.dumps(PLUGINS))
    return path


@pytest.fixture(scope="session")
def plugged_endpoints(
    workdir: Path, catalog: Path, runtimes: Runtimes, plugins_file: Path
) -> Iterator[dict[str, str]]:
    """The base URL of each mode's public endpoint with :data:`PLUGINS` (started on first use)."""
    yield from _gateways(workdir, catalog, runtimes, {"MCP_CORE_PLUGINS_FILE": str(plugins_file)}, "plugged")


@pytest.fixture(scope="session")
def plain_endpoints(
    gateways: dict[str, Gateway], workdir: Path, catalog: Path, runtimes: Runtimes
) -> Iterator[dict[str, str]]:
    """The base URL of each mode's public endpoint without a plugin file.

    The session's gateways in the proxied modes, an edge stack of its own in each edge mode.
    """
    edges = _gateways(workdir, catalog, runtimes, {}, "plain")
    edge = next(edges)

    class Lazy(dict[str, str]):
        def __missing__(self, mode: str) -> str:
            self[mode] = edge[mode] if mode in ("edge", "edge-http") else gateways[mode].base
            return self[mode]

    try:
        yield Lazy()
    finally:
        edges.close()


# --- the table through every mode ------------------------------------------------------------------


@pytest.mark.needs_runtime
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
async def test_with_the_plugins(
    mode: str, case: Case, plugged_endpoints: dict[str, str], http: httpx.AsyncClient
) -> None:
    await run_case(http, plugged_endpoints[mode], case, case.plugged)


@pytest.mark.needs_runtime
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
async def test_without_a_plugin_file_nothing_changes(
    mode: str, case: Case, plain_endpoints: dict[str, str], http: httpx.AsyncClient
) -> None:
    await run_case(http, plain_endpoints[mode], case, case.plain)


def test_the_table_is_the_core_s_decisions() -> None:
    """Every refusal and redaction the table expects is what ``Plugins`` itself decides."""
    plugins = Plugins.from_file(None)
    assert plugins.hooks == ()
    deny = {team: frozenset(tools) for team, tools in PLUGINS["deny_tools"].items()}
    plugins = Plugins(deny, PLUGINS["redact"])
    for case in CASES:
        claims = CALLERS[case.caller]
        caller = AuthContext(
            claims["sub"],
            is_admin=claims.get("is_admin", False),
            teams=None if claims["teams"] is None else tuple(claims["teams"]),
        )
        if case.method == "tools/call":
            decision = plugins.invoke(
                HookPoint.PRE_INVOKE, case.params["name"], caller, case.params["arguments"]
            )
            if case.plugged.error == -32003:
                assert (decision.deny_code, decision.deny_message) == (-32003, case.plugged.message)
                continue
            assert decision.deny_code is None
        if case.plugged.error is None:
            point = HookPoint.POST_INVOKE if case.method == "tools/call" else HookPoint.POST_FETCH
            result = {"content": [{"type": "text", "text": text} for text in case.plain.texts]}
            decision = plugins.invoke(point, "*", caller, result)
            got = collect_texts(decision.payload or result)
            assert tuple(got) == case.plugged.texts, case.name


# --- what the real plugin set does not reach ------------------------------------------------------


class _Scripted(Plugins):
    """Plugins whose decisions a test chooses: a pre_invoke and a post hook for ``*``."""

    def __init__(self, pre: HookDecision | Exception, post: HookDecision | Exception) -> None:
        super().__init__({"team": frozenset({"x"})}, "unused")
        self.pre, self.post = pre, post
        self.payloads: list[dict[str, Any]] = []

    def invoke(
        self, point: HookPoint, name: str, caller: AuthContext, payload: dict[str, Any]
    ) -> HookDecision:
        self.payloads.append(payload)
        decision = self.pre if point is HookPoint.PRE_INVOKE else self.post
        if isinstance(decision, Exception):
            raise decision
        return decision


def _request(body: dict[str, Any] | bytes) -> McpRequest:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return McpRequest(
        method="POST", server_id=None, auth=AuthContext("a@example.com"), request_id="r", body=raw
    )


def _tools_call(name: str, **params: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": name, **params}}


def test_pre_invoke_replaces_the_arguments_and_keeps_the_rest() -> None:
    scripted = _Scripted(HookDecision(payload={"text": "new"}), HookDecision())
    plugins = ProxiedPlugins(scripted)
    body = _tools_call("x", arguments={"text": "old"}, _meta={"progressToken": 3})
    prepared = plugins.prepare(_request(body))
    assert prepared is not None
    assert prepared.answer is None
    sent = json.loads(prepared.request.body)
    assert sent == _tools_call("x", arguments={"text": "new"}, _meta={"progressToken": 3})
    assert scripted.payloads == [{"text": "old"}]
    # Absent or null arguments are the empty object; a name without a pre hook gets none.
    for params in ({}, {"arguments": None}):
        scripted.payloads.clear()
        prepared = plugins.prepare(_request(_tools_call("x", **params)))
        assert prepared is not None
        assert scripted.payloads == [{}]
    scripted.payloads.clear()
    prepared = plugins.prepare(_request(_tools_call("y", arguments={})))
    assert prepared is not None
    assert prepared.request.body == json.dumps(_tools_call("y", arguments={})).encode()
    assert scripted.payloads == []


def test_pre_invoke_sees_through_escapes_and_skips_what_the_runtime_refuses() -> None:
    plugins = ProxiedPlugins(Plugins({"alpha": frozenset({"sleep"})}))
    member = AuthContext("a@example.com", teams=("alpha",))

    def answer(raw: bytes) -> McpResponse | None:
        request = McpRequest(method="POST", server_id=None, auth=member, request_id="r", body=raw)
        prepared = plugins.prepare(request)
        return None if prepared is None else prepared.answer

    escaped = b'{"jsonrpc":"2.0","id":1,"method":"tools\\/call","params":{"name":"sl\\u0065ep"}}'
    refused = answer(escaped)
    assert refused is not None
    assert refused.status == 200
    assert json.loads(refused.body) == {
        "jsonrpc": "2.0",
        "id": 1,
        "error": {"code": -32003, "message": "Tool 'sleep' is not allowed for team 'alpha'"},
    }
    # Framing errors, notifications, other methods, arguments that are not an object: the
    # runtime refuses these itself (nothing goes upstream), so they pass unjudged.
    for raw in (
        b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"sleep"},"id":2}',
        b'{"jsonrpc":"2.0","method":"tools/call","params":{"name":"sleep"}}',
        b'{"jsonrpc":"2.0","id":1,"method":"tools/list"}',
        b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"sleep","arguments":[1]}}',
    ):
        assert answer(raw) is None, raw


async def _chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def _relayed(plugins: ProxiedPlugins, response: McpResponse) -> McpResponse:
    prepared = plugins.prepare(_request(_tools_call("x", arguments={})))
    assert prepared is not None
    assert prepared.post is not None
    return await plugins.finish(prepared.post, response)


async def test_an_sse_answer_cut_anywhere_is_relayed_with_its_result_rewritten() -> None:
    plugins = ProxiedPlugins(Plugins(redact="sk-[a-z]+"))
    note = {
        "jsonrpc": "2.0",
        "method": "notifications/progress",
        "params": {"progressToken": 1, "message": "sk-x"},
    }
    final = {"jsonrpc": "2.0", "id": 7, "result": {"content": [{"type": "text", "text": "a sk-key b"}]}}
    raw = f"data: {json.dumps(note)}\n\nid: 9\nevent: message\ndata: {json.dumps(final)}\n\n".encode()
    for cut in range(1, len(raw)):
        sse = [("content-type", "text/event-stream")]
        response = await _relayed(plugins, McpResponse(200, sse, stream=_chunks(raw[:cut], raw[cut:])))
        assert response.stream is not None
        body = b"".join([chunk async for chunk in response.stream]).decode()
        first, second, rest = body.split("\n\n")
        assert rest == ""
        assert json.loads(first.removeprefix("data: ")) == note
        lines = second.split("\n")
        assert lines[:2] == ["id: 9", "event: message"]
        rewritten = json.loads(lines[2].removeprefix("data: "))
        assert rewritten["result"]["content"][0]["text"] == "a [REDACTED] b"


async def test_a_post_hook_denial_or_failure_replaces_the_result() -> None:
    final = {"jsonrpc": "2.0", "id": 7, "result": {"content": []}}
    json_answer = [("content-type", "application/json")]
    denying = ProxiedPlugins(_Scripted(HookDecision(), HookDecision(deny_code=-32099, deny_message="no")))
    response = await _relayed(denying, McpResponse(200, json_answer, body=json.dumps(final).encode()))
    assert response.status == 200
    assert json.loads(response.body)["error"] == {"code": -32099, "message": "no"}
    failing = ProxiedPlugins(_Scripted(HookDecision(), RuntimeError("plugin bug")))
    response = await _relayed(failing, McpResponse(200, json_answer, body=json.dumps(final).encode()))
    assert response.status == 503
    assert response.header("retry-after") == "1"
    assert json.loads(response.body)["error"]["code"] == -32000
    # A large JSON answer relayed as it arrives is read whole first, then rewritten.
    body = json.dumps(final).encode()
    streamed = McpResponse(200, json_answer, stream=_chunks(body[:5], body[5:]), length=len(body))
    response = await _relayed(denying, streamed)
    assert response.stream is None
    assert response.length is None
    assert json.loads(response.body)["error"]["message"] == "no"
    # An error answer is not the hook's.
    error = {"jsonrpc": "2.0", "id": 7, "error": {"code": -32602, "message": "sk-x"}}
    response = await _relayed(denying, McpResponse(200, json_answer, body=json.dumps(error).encode()))
    assert json.loads(response.body) == error


def test_a_plugin_file_that_registers_nothing_costs_nothing(tmp_path: Path) -> None:
    empty = tmp_path / "plugins.json"
    empty.write_text("{}")
    assert load_plugins(empty) is None


@pytest.mark.parametrize(
    ("text", "why"),
    [
        (None, "No such file or directory"),
        ('{"deny": {}}', "expected an object with deny_tools and/or redact"),
        ('{"redact": "("}', "redact: missing ), unterminated subpattern"),
    ],
)
def test_a_bad_plugin_file_stops_the_gateway_at_start(tmp_path: Path, text: str | None, why: str) -> None:
    path = tmp_path / "plugins.json"
    if text is not None:
        path.write_text(text)
    env = {
        **os.environ,
        "JWT_SECRET_KEY": SECRET,
        "MCP_RUNTIME_CATALOG": str(tmp_path / "catalog.toml"),
        "MCP_CORE_PLUGINS_FILE": str(path),
    }
    out = subprocess.run(
        [sys.executable, "-m", "mcp_gateway", "serve", "--port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 2, out
    [line] = out.stderr.strip().splitlines()
    assert line.startswith(f"mcp-gateway: plugins file {path}: "), line
    assert why in line
