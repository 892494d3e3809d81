"""The core's policy: who a caller is, which credentials were revoked, and who must hear of it.

Transport-neutral: :mod:`mcp_gateway.core.grpc_server` and :mod:`mcp_gateway.core.http_server`
map their wire forms onto :class:`Policy` and give the same answers (``docs/core-spi.md``).

Resolving a caller (``AuthPolicyService.ResolveCaller``, ``POST /v1/resolve-caller``): the
``Authorization`` value is verified by the gateway's own code (:func:`mcp_gateway._auth.authenticate`,
HS256 with ``JWT_SECRET_KEY``); only the core verifies tokens. An allowed caller gets the same
:class:`~mcp_gateway._auth.AuthContext` the gateway builds in the proxied modes, with the
runtime's request id as ``trace_id``. A refusal is a :class:`Denial`: HTTP 401 with an RFC 6750
``WWW-Authenticate`` value (the gateway's exact challenge: ``Bearer realm="mcp-gateway"``, plus
``error="invalid_token"`` and an ``error_description`` when a credential was sent) and a reason
that never contains the token or a part of it.

With authentication off (``MCP_GATEWAY_AUTH_DISABLED=1``, the gateway's own switch; local use
only) the ``Authorization`` value is not read at all: every request, with or without a
credential, valid or not, revoked or not, gets the gateway's anonymous caller
(:func:`mcp_gateway._auth.anonymous_context`: no subject, public entries only), exactly as the
gateway answers every caller in the proxied modes with that variable.

Revocations (the admin route and ``core-admin revoke``), each bumping the generation by one and
pushed at once to every open watcher:

- a token, by the lower-case hex SHA-256 of the credential after ``Bearer ``: refused from then
  on (``token revoked``);
- a subject: every token of that subject issued (``iat``, seconds) at or before the revocation
  second is refused from then on (``token revoked``), a token without ``iat`` too; tokens issued
  later are accepted;
- all: every cached caller is dropped by the runtime (a team or key change); nothing is refused.

The generation starts at 1 and increases with every change (a revocation); it is not persisted:
a restarted core starts again at 1 and the runtime, whose watch stream broke, re-resolves.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import jwt

from mcp_gateway._auth import AuthContext, anonymous_context, authenticate
from mcp_gateway._errors import AuthError
from mcp_gateway.core.plugins import HookRegistration

__all__ = [
    "REALM_CHALLENGE",
    "Denial",
    "Policy",
    "Resolved",
    "Revocation",
    "Snapshot",
    "WatchEvent",
    "token_sha256",
]

logger = logging.getLogger(__name__)

REALM_CHALLENGE = 'Bearer realm="mcp-gateway"'
"""The ``WWW-Authenticate`` value of a 401 without credentials (the gateway's own challenge)."""

WATCHER_QUEUE_LIMIT = 1024
"""Events one watcher may have unread; a watcher further behind is ended (it resolves anew)."""


def token_sha256(token: str) -> str:
    """The lower-case hex SHA-256 of a token's UTF-8 bytes (the credential after ``Bearer ``)."""
    return hashlib.sha256(token.encode()).hexdigest()


def _credential(authorization: str) -> str:
    """The credential of a ``Bearer`` value, ``""`` when it is not one."""
    scheme, _, token = authorization.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def _description(text: str) -> str:
    r"""``text`` as an RFC 6750 ``error_description``: no ``"`` or ``\``, printable ASCII only."""
    text = text.replace('"', "'")
    return "".join(c if " " <= c <= "~" and c != "\\" else " " for c in text)


def _scrub(reason: str, token: str) -> str:
    """``reason`` without the token or any of its dot-separated parts (four characters or more)."""
    for piece in sorted({token, *token.split(".")}, key=len, reverse=True):
        if len(piece) >= 4:
            reason = reason.replace(piece, "<token>")
    return reason


@dataclass(frozen=True, slots=True)
class Denial:
    """A refused caller, relayed by the runtime to the public client.

    Attributes:
        http_status: 401 (missing, malformed, expired, unverifiable or revoked credentials).
        www_authenticate: The RFC 6750 challenge for the ``WWW-Authenticate`` header.
        reason: The JSON-RPC error message (``Unauthorized: ...``); never contains the token.
    """

    http_status: int
    www_authenticate: str
    reason: str


@dataclass(frozen=True, slots=True)
class Resolved:
    """The answer to one ResolveCaller: exactly one of ``caller`` and ``denial`` is set.

    Attributes:
        caller: The allowed caller's AuthContext, or ``None``.
        denial: The refusal, or ``None``.
        cache_max_age_ms: How long the runtime may reuse an allowed answer, in milliseconds
            (``MCP_CORE_CACHE_MAX_AGE_MS``); 0 for a denial.
        generation: The policy generation the answer was made in.
    """

    caller: AuthContext | None
    denial: Denial | None
    cache_max_age_ms: int
    generation: int


@dataclass(frozen=True, slots=True)
class Revocation:
    """Credentials that stopped holding: exactly one field is set.

    Attributes:
        token_sha256: One token, as the lower-case hex SHA-256 of the credential.
        subject_email: Every token of one subject.
        all: Every cached caller.
    """

    token_sha256: str = ""
    subject_email: str = ""
    all: bool = False


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The full policy state a watcher starts from.

    Attributes:
        hooks: Every hook registered (none when no plugin is configured).
        generation: The policy generation.
    """

    hooks: tuple[HookRegistration, ...]
    generation: int


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """One message of WatchPolicy: exactly one of ``snapshot`` and ``revocation`` is set.

    Attributes:
        generation: The policy generation after this event.
        snapshot: The full state (the first message of every stream).
        revocation: A revocation.
    """

    generation: int
    snapshot: Snapshot | None = None
    revocation: Revocation | None = None


class Policy:
    """Token verification, revocations, the generation counter and the watchers.

    Single-threaded: used from one asyncio loop (both servers run on it).

    Args:
        secret: The HS256 key (``JWT_SECRET_KEY``).
        cache_max_age_ms: The ``cache_max_age_ms`` of every allowed answer.
        hooks: The hooks the plugins registered (sent in every snapshot).
        auth_disabled: Authentication off (``MCP_GATEWAY_AUTH_DISABLED=1``): every caller is
            the anonymous one, whatever it sends; ``secret`` is then unused.
    """

    def __init__(
        self,
        secret: str,
        cache_max_age_ms: int,
        hooks: tuple[HookRegistration, ...],
        *,
        auth_disabled: bool = False,
    ) -> None:
        self._secret = secret
        self._auth_disabled = auth_disabled
        self._cache_max_age_ms = cache_max_age_ms
        self._hooks = hooks
        self._generation = 1
        self._revoked_tokens: set[str] = set()
        self._revoked_subjects: dict[str, int] = {}
        self._watchers: dict[int, tuple[str, asyncio.Queue[WatchEvent | None]]] = {}
        self._next_watcher = 0
        self.resolve_calls = 0
        """ResolveCaller calls answered (both transports), since start."""
        self.resolve_denials = 0
        """Of those, the ones answered with a denial."""

    @property
    def generation(self) -> int:
        """The current policy generation (starts at 1, +1 per change)."""
        return self._generation

    @property
    def auth_disabled(self) -> bool:
        """Authentication is off: every caller resolves to the anonymous one."""
        return self._auth_disabled

    @property
    def watchers(self) -> int:
        """How many WatchPolicy streams are open (both transports)."""
        return len(self._watchers)

    def snapshot(self) -> Snapshot:
        """The state a new watcher starts from."""
        return Snapshot(hooks=self._hooks, generation=self._generation)

    def resolve(self, authorization: str, *, request_id: str = "", traceparent: str = "") -> Resolved:
        """Resolve one public request's credentials.

        Args:
            authorization: The ``Authorization`` header as the client sent it; ``""`` when absent.
            request_id: The runtime's request id; becomes the AuthContext's ``trace_id``.
            traceparent: The public request's ``traceparent``; ``""`` when absent.

        Returns:
            The allowed caller or a 401 denial, with the generation it was made in; with
            authentication off always the anonymous caller.
        """
        self.resolve_calls += 1
        if self._auth_disabled:
            caller = anonymous_context(traceparent=traceparent, trace_id=request_id)
            return Resolved(
                caller=caller,
                denial=None,
                cache_max_age_ms=self._cache_max_age_ms,
                generation=self._generation,
            )
        token = _credential(authorization)
        try:
            caller = authenticate(
                authorization or None, self._secret, traceparent=traceparent, trace_id=request_id
            )
            if self._is_revoked(token, caller.email):
                raise AuthError("token revoked")
        except AuthError as e:
            reason = _scrub(str(e), token) if token else str(e)
            challenge = REALM_CHALLENGE
            if authorization:
                challenge += f', error="invalid_token", error_description="{_description(reason)}"'
            denial = Denial(http_status=401, www_authenticate=challenge, reason=f"Unauthorized: {reason}")
            self.resolve_denials += 1
            return Resolved(caller=None, denial=denial, cache_max_age_ms=0, generation=self._generation)
        return Resolved(
            caller=caller, denial=None, cache_max_age_ms=self._cache_max_age_ms, generation=self._generation
        )

    def _is_revoked(self, token: str, subject: str) -> bool:
        if self._revoked_tokens and token_sha256(token) in self._revoked_tokens:
            return True
        revoked_at = self._revoked_subjects.get(subject)
        if revoked_at is None:
            return False
        # The signature was verified by authenticate(): read the claims without checking again.
        iat = jwt.decode(token, options={"verify_signature": False}).get("iat")
        return not isinstance(iat, int) or iat <= revoked_at

    def revoke(self, revocation: Revocation) -> int:
        """Record a revocation, bump the generation and tell every watcher at once.

        Args:
            revocation: Exactly one of a token hash (64 lower-case hex digits), a subject, all.

        Returns:
            The new generation.

        Raises:
            ValueError: Not exactly one target, or a malformed token hash.
        """
        targets = sum((bool(revocation.token_sha256), bool(revocation.subject_email), revocation.all))
        if targets != 1:
            raise ValueError("a revocation names exactly one of token_sha256, subject_email, all")
        digest = revocation.token_sha256
        if digest and (len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest)):
            raise ValueError("token_sha256 must be 64 lower-case hex digits")
        if digest:
            self._revoked_tokens.add(digest)
        elif revocation.subject_email:
            self._revoked_subjects[revocation.subject_email] = int(time.time())
        self._generation += 1
        event = WatchEvent(generation=self._generation, revocation=revocation)
        for watcher_id, (name, queue) in list(self._watchers.items()):
            try:
                queue.put_nowait(event)
            except asyncio.QueueFull:
                logger.warning("watcher %s is %d events behind; ending its stream", name, queue.qsize())
                self._watchers.pop(watcher_id, None)
                with contextlib.suppress(asyncio.QueueEmpty):
                    queue.get_nowait()
                queue.put_nowait(None)
        logger.info(
            "revoked %s; generation %d; %d watchers told", revocation, self._generation, len(self._watchers)
        )
        return self._generation

    def close_watchers(self) -> None:
        """End every open watch stream (at shutdown): each ends after the events already queued."""
        for _, queue in self._watchers.values():
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(None)

    @contextlib.contextmanager
    def _register(self, name: str) -> Iterator[asyncio.Queue[WatchEvent | None]]:
        queue: asyncio.Queue[WatchEvent | None] = asyncio.Queue(WATCHER_QUEUE_LIMIT)
        watcher_id = self._next_watcher
        self._next_watcher += 1
        self._watchers[watcher_id] = (name, queue)
        logger.info("watcher %r opened (%d open)", name, len(self._watchers))
        try:
            yield queue
        finally:
            self._watchers.pop(watcher_id, None)
            logger.info("watcher %r closed (%d open)", name, len(self._watchers))

    async def watch(self, name: str) -> AsyncIterator[WatchEvent]:
        """The events of one WatchPolicy stream: the snapshot, then each change as it happens.

        Args:
            name: The watcher's name, for the logs.

        Yields:
            The snapshot first, then revocations in order. Ends when the watcher falls
            :data:`WATCHER_QUEUE_LIMIT` events behind (the runtime then re-resolves) or when the
            consumer stops iterating.
        """
        with self._register(name) as queue:
            yield WatchEvent(generation=self._generation, snapshot=self.snapshot())
            while (event := await queue.get()) is not None:
                yield event
