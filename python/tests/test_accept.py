"""``Accept`` read as RFC 9110 reads it, the same table as the runtime's (``request.rs`` tests).

The gateway decides from it whether a call may be asked something by its upstream (a stream
to ask on) and, in the Python baseline, whether an answer is SSE; the runtime decides the
rest. Both must agree, so both are pinned by the same rows.
"""

from __future__ import annotations

import pytest

from mcp_gateway._accept import accept_weight, accepts, lists

# (Accept, accepts SSE, lists SSE)
ROWS: list[tuple[str | None, bool, bool]] = [
    (None, True, False),
    ("application/json, text/event-stream", True, True),
    ("TEXT/EVENT-STREAM", True, True),
    ("Text/Event-Stream; Q=0.5", True, True),
    ("application/json", False, False),
    ("", False, False),
    ("*/*", True, False),
    ("text/*", True, False),
    ("TEXT/*;q=1", True, False),
    ("application/*", False, False),
    ("text/event-stream;q=0", False, False),
    ("text/event-stream; q=0.000, */*", False, False),
    ("text/event-stream;q=0, text/event-stream;q=0.2", True, True),
    ("*/*;q=0, text/event-stream", True, True),
    ("text/*;q=0, */*", False, False),
    ("text/event-stream;q=abc", True, True),
    ("text/event-stream;charset=utf-8", True, True),
    ("text/event-streamx, text/event", False, False),
    (" , ;q=1, text/event-stream ", True, True),
]


@pytest.mark.parametrize(("accept", "sse", "listed"), ROWS)
def test_accept_is_read_as_the_runtime_reads_it(accept: str | None, sse: bool, listed: bool) -> None:
    assert accepts(accept) is sse
    assert lists(accept) is listed


def test_the_most_specific_range_gives_the_weight() -> None:
    assert accept_weight("*/*;q=0.1, text/*;q=0.5, text/event-stream;q=0.9", "text/event-stream") == 0.9
    assert accept_weight("*/*;q=0.1, text/*;q=0.5", "text/event-stream") == 0.5
    assert accept_weight("*/*;q=0.1", "text/event-stream") == 0.1
    assert accept_weight("text/event-stream;q=7", "text/event-stream") == 1.0
    assert accept_weight("text/event-stream;q=-1", "text/event-stream") == 0.0
    assert accept_weight("text/event-stream;q=nan", "text/event-stream") == 1.0
