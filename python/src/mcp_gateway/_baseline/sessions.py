"""The baseline's session table: owners, last use, what each subject holds, and its limits.

The runtime's rules (``session.rs``, ``error.rs``), kept the same way here:

- a session is bound to the subject (the token's ``sub``, ``AuthContext.email``) and the scope
  (virtual server id or ``None``) that created it; anyone else is answered as if it did not
  exist (404);
- a session unused for the idle TTL (no request, no call in flight, no open GET stream) is
  ended by the reaper (:meth:`Sessions.reap_idle`), which the front layer runs every
  ``min(ttl / 2, 60 s)``; it then answers 404 like any unknown session;
- per subject, at most ``max_sessions`` sessions (an ``initialize`` beyond it is refused with
  ``Retry-After: 60``, the reaper's longest period), ``max_streams`` open GET streams and
  ``max_calls`` upstream calls in flight (``tools/call``, ``prompts/get``, ``resources/read``;
  refused with ``Retry-After: 1``; MCP 2026-07-28 has no session: its calls count here too,
  its ``subscriptions/listen`` streams with the GET streams): HTTP 429 with a JSON-RPC ``-32000`` error
  (:class:`LimitReached`), in the runtime's words (``quota.rs``).

Every grant is a context manager (:meth:`Sessions.opening`, :meth:`Sessions.stream`,
:meth:`Sessions.call`) whose exit gives it back however the block ends (an exception, a
cancellation, a client that went away). Single event loop, no awaits inside: no locks needed.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from mcp_gateway._jsonrpc import LIMIT_REACHED

__all__ = [
    "DEFAULT_MAX_CALLS_PER_SUBJECT",
    "DEFAULT_MAX_SESSIONS_PER_SUBJECT",
    "DEFAULT_MAX_STREAMS_PER_SUBJECT",
    "DEFAULT_SESSION_IDLE_TTL_S",
    "SESSION_LIMIT_RETRY_AFTER_S",
    "STREAM_LIMIT_RETRY_AFTER_S",
    "LimitReached",
    "Opening",
    "Session",
    "Sessions",
]

DEFAULT_SESSION_IDLE_TTL_S = 3600.0
"""The runtime's ``--session-idle-ttl-s`` default, in seconds."""
DEFAULT_MAX_SESSIONS_PER_SUBJECT = 256
"""The runtime's ``--max-sessions-per-subject`` default."""
DEFAULT_MAX_STREAMS_PER_SUBJECT = 64
"""The runtime's ``--max-streams-per-subject`` default: open GET streams of one subject."""
DEFAULT_MAX_CALLS_PER_SUBJECT = 256
"""The runtime's ``--max-calls-per-subject`` default: upstream calls of one subject in flight."""

SESSION_LIMIT_RETRY_AFTER_S = 60
"""``Retry-After`` of a refused ``initialize``, in seconds: the reaper's longest period."""
STREAM_LIMIT_RETRY_AFTER_S = 1
"""``Retry-After`` of a refused GET stream or call, in seconds: these end by themselves."""

_REAP_PERIOD_MAX_S = 60.0


class LimitReached(Exception):
    """A subject is at one of its limits: answered 429, ``-32000``, ``Retry-After``.

    Attributes:
        message: The JSON-RPC error message (the runtime's words).
        retry_after_s: The ``Retry-After`` value, in seconds.
    """

    status = 429
    """The HTTP status of the answer."""
    code = LIMIT_REACHED
    """The JSON-RPC error code of the answer (``-32000``)."""

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after_s = retry_after_s


@dataclass(slots=True)
class Session:
    """One open session.

    Attributes:
        subject: The creator's subject (``AuthContext.email``; ``""`` is anonymous).
        scope: The virtual server id it was created on, ``None`` for ``/mcp``.
        last_used: When a request last named it, on :attr:`Sessions.clock` (seconds).
        calls: Its upstream calls in flight.
        streams: Its open GET streams.
    """

    subject: str
    scope: str | None
    last_used: float
    calls: int = 0
    streams: int = 0

    @property
    def busy(self) -> bool:
        """Whether it has work under way (an upstream call in flight or an open GET stream)."""
        return self.calls > 0 or self.streams > 0


@dataclass(slots=True)
class Opening:
    """A session slot held by an ``initialize`` in progress (see :meth:`Sessions.opening`)."""

    _sessions: Sessions
    _subject: str
    committed: bool = field(default=False)

    def commit(self, session_id: str, scope: str | None) -> Session:
        """The ``initialize`` minted ``session_id``: the slot becomes that session."""
        self.committed = True
        return self._sessions._add(session_id, self._subject, scope)


class Sessions:
    """The session table and the per-subject counts, kept in step.

    Args:
        idle_ttl_s: A session unused for longer is reaped, in seconds (> 0).
        max_sessions: Sessions one subject may hold at once (at least 1).
        max_streams: Open GET streams one subject may hold at once (at least 1).
        max_calls: Upstream calls one subject may have in flight at once (at least 1).
        clock: The time source, in seconds (monotonic).
    """

    def __init__(
        self,
        *,
        idle_ttl_s: float = DEFAULT_SESSION_IDLE_TTL_S,
        max_sessions: int = DEFAULT_MAX_SESSIONS_PER_SUBJECT,
        max_streams: int = DEFAULT_MAX_STREAMS_PER_SUBJECT,
        max_calls: int = DEFAULT_MAX_CALLS_PER_SUBJECT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.idle_ttl_s = idle_ttl_s
        self.max_sessions = max(1, max_sessions)
        self.max_streams = max(1, max_streams)
        self.max_calls = max(1, max_calls)
        self.clock = clock
        self._by_id: dict[str, Session] = {}
        self._open: Counter[str] = Counter()
        self._opening: Counter[str] = Counter()
        self._streams: Counter[str] = Counter()
        self._calls: Counter[str] = Counter()

    def __len__(self) -> int:
        """Open sessions."""
        return len(self._by_id)

    @property
    def reap_period_s(self) -> float:
        """How often the reaper looks, in seconds: half the TTL, at most a minute."""
        return min(self.idle_ttl_s / 2, _REAP_PERIOD_MAX_S)

    def held(self, subject: str) -> int:
        """Sessions ``subject`` holds, ``initialize`` calls in progress included."""
        return self._open[subject] + self._opening[subject]

    def _add(self, session_id: str, subject: str, scope: str | None) -> Session:
        session = Session(subject, scope, self.clock())
        self._by_id[session_id] = session
        self._open[subject] += 1
        return session

    def _drop(self, session_id: str) -> Session | None:
        session = self._by_id.pop(session_id, None)
        if session is not None:
            self._open[session.subject] -= 1
            if not self._open[session.subject]:
                del self._open[session.subject]
        return session

    @contextlib.contextmanager
    def opening(self, subject: str) -> Iterator[Opening]:
        """Hold a session slot of ``subject`` while its ``initialize`` runs.

        Yields:
            The slot; :meth:`Opening.commit` turns it into the session, else it is given back
            when the block ends.

        Raises:
            LimitReached: ``subject`` already holds ``max_sessions`` sessions.
        """
        if self.held(subject) >= self.max_sessions:
            raise LimitReached(
                f"Too many sessions: this subject already holds the limit of {self.max_sessions} "
                f"open sessions; end one (DELETE) or let idle ones expire",
                SESSION_LIMIT_RETRY_AFTER_S,
            )
        self._opening[subject] += 1
        slot = Opening(self, subject)
        try:
            yield slot
        finally:
            self._opening[subject] -= 1
            if not self._opening[subject]:
                del self._opening[subject]

    def get(self, session_id: str, subject: str, scope: str | None) -> Session | None:
        """The caller's session (its last use set to now), ``None`` when unknown or not theirs."""
        session = self._by_id.get(session_id)
        if session is None or session.subject != subject or session.scope != scope:
            return None
        session.last_used = self.clock()
        return session

    def remove(self, session_id: str) -> Session | None:
        """Forget a session (DELETE); returns it, ``None`` when unknown."""
        return self._drop(session_id)

    @contextlib.contextmanager
    def stream(self, session: Session) -> Iterator[None]:
        """Hold one open GET stream of ``session``'s subject for the block.

        Raises:
            LimitReached: The subject already holds ``max_streams`` open streams.
        """
        with self._hold(self._streams, session.subject, session, "streams", self.max_streams, "open streams"):
            yield

    @contextlib.contextmanager
    def listen(self, subject: str) -> Iterator[None]:
        """Hold one open stream of ``subject`` for a ``subscriptions/listen`` stream (no session).

        A listen stream counts as one of its subject's GET streams, as in the runtime
        (``--max-streams-per-subject``).

        Raises:
            LimitReached: The subject already holds ``max_streams`` open streams.
        """
        with self._hold(self._streams, subject, None, "streams", self.max_streams, "open streams"):
            yield

    @contextlib.contextmanager
    def sessionless_call(self, subject: str) -> Iterator[None]:
        """Hold one upstream call in flight of ``subject`` for a call of MCP 2026-07-28 (no session).

        Counted with the subject's calls of its sessions, as in the runtime (``forward.rs``).

        Raises:
            LimitReached: The subject already has ``max_calls`` calls in flight.
        """
        with self._hold(self._calls, subject, None, "calls", self.max_calls, "calls in flight"):
            yield

    @contextlib.contextmanager
    def call(self, session: Session) -> Iterator[None]:
        """Hold one upstream call in flight of ``session``'s subject for the block.

        Raises:
            LimitReached: The subject already has ``max_calls`` calls in flight.
        """
        with self._hold(self._calls, session.subject, session, "calls", self.max_calls, "calls in flight"):
            yield

    @contextlib.contextmanager
    def _hold(
        self, counts: Counter[str], subject: str, session: Session | None, attr: str, limit: int, what: str
    ) -> Iterator[None]:
        """Count one more of ``attr`` for ``subject`` (and ``session``, if any), unless at ``limit``.

        Raises:
            LimitReached: The subject already holds ``limit`` (``what`` names them).
        """
        if counts[subject] >= limit:
            raise LimitReached(
                f"Too many {what}: this subject already holds its limit of {limit}; retry when one ends",
                STREAM_LIMIT_RETRY_AFTER_S,
            )
        counts[subject] += 1
        if session is not None:
            setattr(session, attr, getattr(session, attr) + 1)
        try:
            yield
        finally:
            if session is not None:
                setattr(session, attr, getattr(session, attr) - 1)
                session.last_used = self.clock()
            counts[subject] -= 1
            if not counts[subject]:
                del counts[subject]

    def reap_idle(self) -> list[str]:
        """Forget the sessions unused for longer than the TTL and not busy; returns their ids.

        The caller ends each one's SDK session (the front layer sends it a DELETE).
        """
        now = self.clock()
        idle = [sid for sid, s in self._by_id.items() if now - s.last_used > self.idle_ttl_s and not s.busy]
        for sid in idle:
            self._drop(sid)
        return idle
