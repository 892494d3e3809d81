"""How an ``Accept`` header is read: the weight it gives one media type (RFC 9110, 12.5.1).

Read the same way as the runtime reads it (``McpHeaders::accepts_sse`` and ``lists_sse`` in
``crates/mcp-runtime-core/src/request.rs``), so the gateway and the runtime agree on whether an
answer may be ``text/event-stream``: media types and the ``q`` name compare without regard to
case, the most specific range covering the type decides (exact, then ``type/*``, then ``*/*``;
of equal ones the highest weight), a weight of 0 rules the type out, parameters other than
``q`` are not compared, and a ``q`` that is not a number counts as 1 (a lenient reading).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

__all__ = ["SSE", "accept_weight", "accepts", "lists"]

SSE = "text/event-stream"
"""The media type of a streamed answer."""


def _media_ranges(accept: str) -> Iterator[tuple[str, float]]:
    """Yields each media range of ``accept`` (lower case) with its weight, 0.0 to 1.0."""
    for element in accept.split(","):
        range_, *params = element.split(";")
        range_ = range_.strip().lower()
        if not range_:
            continue
        weight = 1.0
        for param in params:
            name, sep, value = param.partition("=")
            if sep and name.strip().lower() == "q":
                try:
                    parsed = float(value.strip())
                except ValueError:
                    parsed = 1.0
                weight = min(max(parsed, 0.0), 1.0) if math.isfinite(parsed) else 1.0
                break
        yield range_, weight


def accept_weight(accept: str, media_type: str) -> float:
    """The weight (0.0 to 1.0) ``accept`` gives ``media_type`` (``type/subtype``, lower case).

    The ``q`` of the most specific media range covering it; 0.0 when none does.
    """
    kind = media_type.partition("/")[0]
    best: tuple[int, float] | None = None
    for range_, weight in _media_ranges(accept):
        if range_ == media_type:
            rank = 2
        elif range_ == f"{kind}/*":
            rank = 1
        elif range_ == "*/*":
            rank = 0
        else:
            continue
        if best is None or rank > best[0] or (rank == best[0] and weight > best[1]):
            best = (rank, weight)
    return 0.0 if best is None else best[1]


def accepts(accept: str | None, media_type: str = SSE) -> bool:
    """Whether an answer may be ``media_type``: ``Accept`` absent, or giving it a weight above 0.

    What a POST's answer and a ``subscriptions/listen`` go by.
    """
    return accept is None or accept_weight(accept, media_type) > 0.0


def lists(accept: str | None, media_type: str = SSE) -> bool:
    """Whether ``Accept`` names ``media_type`` itself (no wildcard) with a weight above 0.

    What a GET needs for the standalone stream (MCP 2025-11-25, transports: "The client MUST
    include an Accept header, listing text/event-stream as a supported content type").
    """
    if accept is None:
        return False
    return any(range_ == media_type and weight > 0.0 for range_, weight in _media_ranges(accept))
