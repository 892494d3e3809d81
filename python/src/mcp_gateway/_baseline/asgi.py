"""Driving an ASGI app (the SDK's session manager) for one synthesized request, in process.

The baseline's front layer hands each request to the SDK's ``StreamableHTTPSessionManager``
without a socket: :class:`AsgiCall` runs the app in the baseline's task group, feeds it the body
and turns what it sends into a response head and body chunks (or SSE events, :func:`events`).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import anyio
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream
from starlette.types import ASGIApp, Message

from mcp_gateway._sse import SseEvent, SseParser

__all__ = ["AsgiCall", "sse_events"]

logger = logging.getLogger(__name__)

# How long a released call may take to finish its response before it is cancelled, in seconds.
_RELEASE_GRACE_S = 30


class AsgiCall:
    """One request to ``app``, running in ``task_group`` from construction on.

    Args:
        task_group: Where the app runs (the baseline's lifespan task group), so that it may
            outlive the public request that started it (see :meth:`release`).
        app: The ASGI app.
        scope: The request's ASGI ``http`` scope.
        body: The whole request body, delivered in one ``http.request`` message.
    """

    def __init__(self, task_group: TaskGroup, app: ASGIApp, scope: dict[str, Any], body: bytes) -> None:
        self._task_group = task_group
        send_stream, self._messages = anyio.create_memory_object_stream[Message](64)
        self._cancel = anyio.CancelScope()
        self.finished = anyio.Event()
        delivered = False

        async def receive() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            await anyio.sleep_forever()
            raise AssertionError("unreachable")

        async def run() -> None:
            with self._cancel:
                async with send_stream:
                    try:
                        await app(scope, receive, send_stream.send)
                    except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                        pass
                    except Exception:
                        logger.exception("baseline request failed")
            self.finished.set()

        task_group.start_soon(run)

    @property
    def messages(self) -> MemoryObjectReceiveStream[Message]:
        """The ASGI messages the app sends, in order."""
        return self._messages

    async def start(self) -> Message | None:
        """The ``http.response.start`` message, or ``None`` when the app ended without one."""
        async for message in self._messages:
            if message["type"] == "http.response.start":
                return message
        return None

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body chunks (non-empty ``bytes``), until the last one."""
        async for message in self._messages:
            if message["type"] != "http.response.body":
                continue
            if message.get("body"):
                yield message["body"]
            if not message.get("more_body", False):
                return

    async def read_all(self) -> bytes:
        """The whole body."""
        return b"".join([chunk async for chunk in self.chunks()])

    async def aclose(self) -> None:
        """Abandon the request: cancel the app's work for it (the client went away)."""
        self._cancel.cancel()
        await self._messages.aclose()

    def release(self) -> None:
        """The answer is complete: let the app finish the response in the background.

        Never cancel a response the SDK is still writing: the session manager discards a
        session whose opening request did not complete. A response not finished within 30 s
        is cancelled.
        """

        async def drain() -> None:
            with anyio.move_on_after(_RELEASE_GRACE_S):
                async for _ in self._messages:
                    pass
            self._cancel.cancel()
            await self._messages.aclose()

        self._task_group.start_soon(drain)


async def sse_events(call: AsgiCall) -> AsyncGenerator[SseEvent, None]:
    """The SSE events of ``call``'s body, as they complete."""
    parser = SseParser()
    async for chunk in call.chunks():
        for event in parser.feed(chunk):
            yield event
