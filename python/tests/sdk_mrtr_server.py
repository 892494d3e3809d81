"""An upstream built with the official Python SDK that asks its client for input mid-request.

Started by ``test_baseline_input_required.py`` as ``python sdk_mrtr_server.py MODE PORT``
(streamable HTTP at ``/mcp`` on 127.0.0.1):

- ``both``: the SDK's own server, which speaks MCP 2026-07-28 and 2025-11-25 on one endpoint.
  Its ``confirm`` tool asks an elicitation through the SDK's resolvers: to a 2026-07-28 request
  it answers ``resultType: "input_required"`` (``requestState`` sealed by the SDK, so a
  tampered one is refused with -32602), to a 2025-11-25 session it sends ``elicitation/create``
  mid-call; ``plan`` asks a sampling and the client's roots the same way, both in one round.
  Its ``approval`` prompt and its ``mrtr://vault/{item}`` resource template do the
  same by hand (an ``InputRequiredResult`` until the retry carries the answer).
- ``legacy``: the same server behind a check that refuses any request whose
  ``MCP-Protocol-Version`` is not of the handshake era (HTTP 400, ``-32000``
  "Bad Request: Unsupported protocol version ...", as a server written before 2026-07-28
  answers), so it speaks only 2025-11-25.

Both have ``add`` (no input) and ``calls`` (how many ``confirm`` calls reached the body, the
tool run once its answer is in).
"""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import uvicorn
from mcp.server.mcpserver import Context, Elicit, ListRoots, MCPServer, Resolve, Sample
from mcp_types import (
    CreateMessageResult,
    ElicitRequest,
    ElicitRequestFormParams,
    ElicitResult,
    InputRequiredResult,
    ListRootsResult,
    SamplingMessage,
    TextContent,
)
from pydantic import BaseModel

HANDSHAKE_VERSIONS = ("2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05")

server = MCPServer("sdk-mrtr")
completed = 0


class Answer(BaseModel):
    """What ``confirm`` asks for."""

    ok: bool


def ask(text: str) -> Elicit[Answer]:
    """The resolver of ``confirm``: one elicitation naming the text."""
    return Elicit(f"Proceed with {text}?", Answer)


@server.tool()
def confirm(text: str, answer: Annotated[Answer, Resolve(ask)]) -> str:
    """Echo ``text`` with the client's yes or no (asked by elicitation)."""
    global completed
    completed += 1
    return f"{text}: {'yes' if answer.ok else 'no'}"


def draft(goal: str) -> Sample:
    """A resolver of ``plan``: one sampling request naming the goal."""
    return Sample([SamplingMessage(role="user", content=TextContent(type="text", text=goal))], max_tokens=20)


def places() -> ListRoots:
    """A resolver of ``plan``: the client's roots."""
    return ListRoots()


@server.tool()
def plan(
    goal: str,
    sampled: Annotated[CreateMessageResult, Resolve(draft)],
    roots: Annotated[ListRootsResult, Resolve(places)],
) -> str:
    """Asks for a sampling and the roots in one round; answers with both."""
    text = sampled.content.text if isinstance(sampled.content, TextContent) else "?"
    return f"{goal}: {text} in {','.join(str(r.uri) for r in roots.roots)}"


@server.tool()
def add(a: int, b: int) -> int:
    """Add two integers (asks nothing)."""
    return a + b


@server.tool()
def calls() -> int:
    """How many ``confirm`` calls ran to their end."""
    return completed


@server.prompt()
def approval(topic: str, ctx: Context) -> Any:
    """A prompt that needs the client's name first (MCP 2026-07-28 only)."""
    answers = ctx.input_responses or {}
    given = answers.get("who")
    if isinstance(given, ElicitResult) and given.action == "accept" and given.content:
        return f"{given.content.get('name')} approves {topic} (state {ctx.request_state})"
    request = ElicitRequest(
        params=ElicitRequestFormParams(
            message="Who approves?",
            requested_schema={"type": "object", "properties": {"name": {"type": "string"}}},
        )
    )
    return InputRequiredResult(input_requests={"who": request}, request_state=f"prompt:{topic}")


@server.resource("mrtr://vault/{item}")
def vault(item: str, ctx: Context) -> Any:
    """A resource template whose read needs a passphrase first (MCP 2026-07-28 only)."""
    given = (ctx.input_responses or {}).get("pass")
    if isinstance(given, ElicitResult) and given.action == "accept" and given.content:
        return f"{item} opened with {given.content.get('phrase')}"
    request = ElicitRequest(
        params=ElicitRequestFormParams(
            message=f"Passphrase for {item}?",
            requested_schema={"type": "object", "properties": {"phrase": {"type": "string"}}},
        )
    )
    return InputRequiredResult(input_requests={"pass": request}, request_state=f"vault:{item}")


def legacy_only(app: Any) -> Any:
    """``app`` refusing every request of a version it was not written for (HTTP 400)."""

    async def guarded(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            headers = dict(scope["headers"])
            version = headers.get(b"mcp-protocol-version", b"").decode()
            if version and version not in HANDSHAKE_VERSIONS:
                body = json.dumps(
                    {
                        "jsonrpc": "2.0",
                        "id": None,
                        "error": {
                            "code": -32000,
                            "message": f"Bad Request: Unsupported protocol version: {version}",
                        },
                    }
                ).encode()
                await send(
                    {
                        "type": "http.response.start",
                        "status": 400,
                        "headers": [(b"content-type", b"application/json")],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        await app(scope, receive, send)

    return guarded


if __name__ == "__main__":
    mode, port = sys.argv[1], int(sys.argv[2])
    app = server.streamable_http_app()
    if mode == "legacy":
        app = legacy_only(app)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")
