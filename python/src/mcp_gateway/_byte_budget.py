"""The gateway's budget of request bytes in flight, per subject and per worker process.

A request body is held against the budget from before it is read (its declared
``Content-Length``; a body sent without one is counted once read) until its answer is sent, so
one subject cannot fill the gateway's memory with large bodies and a body that has no room is
refused without being read. The numbers and the answers are the runtime's
(``crates/mcp-runtime-core/src/quota.rs``): per subject 128 MiB (HTTP 429), per process 512 MiB
(HTTP 503), JSON-RPC ``-32000``, ``Retry-After: 1`` unless the request alone is larger than the
budget. Results are not counted here: in the socket modes the runtime counts them, and every
result is bounded by the message limit.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator

from mcp_gateway._jsonrpc import LIMIT_REACHED

RETRY_AFTER_S = 1
"""``Retry-After`` of a refusal, in seconds: bodies in flight end with their requests."""


class BytesRefused(Exception):
    """A body that does not fit: answered ``status``, ``-32000``, ``Retry-After`` when time helps.

    Attributes:
        status: 429 (the subject's budget) or 503 (the process's).
        message: The JSON-RPC error message (the runtime's words).
        retry_after_s: ``Retry-After`` in seconds, ``None`` when the request alone is too large.
    """

    code = LIMIT_REACHED
    """The JSON-RPC error code of the answer (``-32000``)."""

    def __init__(self, status: int, message: str, retry_after_s: int | None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after_s = retry_after_s


class ByteBudget:
    """Bytes in flight per subject and in total, for one worker process (one event loop).

    Args:
        per_subject: Most bytes one subject may have in flight (at least 1).
        total: Most bytes the process may have in flight (at least 1).
    """

    def __init__(self, per_subject: int, total: int) -> None:
        self._per_subject = max(1, per_subject)
        self._total = max(1, total)
        self._held: Counter[str] = Counter()
        self._sum = 0

    @property
    def in_flight(self) -> int:
        """Bytes held right now, in the whole process."""
        return self._sum

    @contextlib.contextmanager
    def hold(self, subject: str, size: int) -> Iterator[None]:
        """Hold ``size`` bytes for ``subject`` for the ``with`` block.

        Raises:
            BytesRefused: The subject's or the process's budget has no room; nothing is held.
        """
        if size <= 0:
            yield
            return
        if self._held[subject] + size > self._per_subject:
            limit = self._per_subject
            if size > limit:
                alone = f"this request alone exceeds this subject's limit of {limit}"
                raise BytesRefused(429, f"Too many bytes in flight: {alone}", None)
            held = f"this subject already holds its limit of {limit}; retry when one ends"
            raise BytesRefused(429, f"Too many bytes in flight: {held}", RETRY_AFTER_S)
        if self._sum + size > self._total:
            budget = self._total
            if size > budget:
                alone = f"this request alone exceeds the budget of {budget} bytes in flight"
                raise BytesRefused(503, f"Server busy: {alone}", None)
            spent = f"the budget of {budget} bytes in flight is spent; retry shortly"
            raise BytesRefused(503, f"Server busy: {spent}", RETRY_AFTER_S)
        self._held[subject] += size
        self._sum += size
        try:
            yield
        finally:
            self._sum -= size
            self._held[subject] -= size
            if self._held[subject] <= 0:
                del self._held[subject]
