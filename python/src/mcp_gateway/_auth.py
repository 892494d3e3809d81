"""Bearer tokens (HS256 JWT) and the AuthContext the gateway builds from them.

The gateway is the only component that authenticates. It turns the verified claims into an
:class:`AuthContext` and hands that to the runtime (as the ``x-contextforge-auth-context`` header
on the HTTP/JSON boundary, as the proto ``AuthContext`` on gRPC, as a Python object in the
baseline). Claims read from a token:

=============  ==============================  ===========================================
claim          type                            meaning
=============  ==============================  ===========================================
``sub``        str (required)                  subject email; sessions are bound to it
``teams``      list[str] or absent             absent: unrestricted; ``[]``: public only
``is_admin``   bool, default false             platform administrator
``scopes``     list[str], default ``[]``       permission scopes, e.g. ``tools.execute``
``exp``        int seconds since epoch         expiry; checked; absent means no expiry
=============  ==============================  ===========================================

With auth disabled (``MCP_GATEWAY_AUTH_DISABLED=1``, local use only; :func:`auth_disabled`
reads it for the gateway and for the core of edge mode) every caller gets
:func:`anonymous_context`: no subject, public entries only. (Before any of this, the public
endpoint checks ``Host`` and ``Origin``: ``_host_origin``.)
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import jwt

from mcp_gateway._errors import AuthError, ConfigError

__all__ = [
    "AuthContext",
    "anonymous_context",
    "auth_context_from_claims",
    "auth_disabled",
    "authenticate",
    "mint_token",
]

_ALGORITHM = "HS256"


@dataclass(frozen=True, slots=True)
class AuthContext:
    """The caller's identity and rights, as the runtime receives them.

    Attributes:
        email: Subject email (the JWT ``sub``); ``""`` is anonymous.
        is_admin: Platform administrator.
        teams: ``None`` is unrestricted (everything only for an admin; a non-admin then sees
            public entries only), ``()`` is public only, otherwise public plus these teams.
        scopes: Permission scopes granted by the token.
        token_exp: Token expiry in seconds since the Unix epoch, ``0`` when it does not expire.
        traceparent: W3C ``traceparent`` of the public request, ``""`` when absent.
        trace_id: Gateway-assigned id of the public request, for log correlation.
    """

    email: str
    is_admin: bool = False
    teams: tuple[str, ...] | None = None
    scopes: tuple[str, ...] = field(default=())
    token_exp: int = 0
    traceparent: str = ""
    trace_id: str = ""

    def can_see(self, team: str | None) -> bool:
        """Whether this caller may see a catalog entry.

        Args:
            team: ``None`` for a public entry, else the team that owns it.

        Returns:
            True when the entry is visible (the rule of ``docs/catalog.md``).
        """
        if team is None:
            return True
        if self.teams is None:
            return self.is_admin
        return team in self.teams

    def to_json(self) -> dict[str, Any]:
        """The JSON object of ``docs/http-boundary.md`` (``teams`` is ``null`` when unrestricted)."""
        return {
            "email": self.email,
            "is_admin": self.is_admin,
            "teams": None if self.teams is None else list(self.teams),
            "scopes": list(self.scopes),
            "token_exp": self.token_exp,
            "traceparent": self.traceparent,
            "trace_id": self.trace_id,
        }

    def to_header_value(self) -> str:
        """The ``x-contextforge-auth-context`` value: unpadded base64url of the UTF-8 JSON."""
        raw = json.dumps(self.to_json(), separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _str_list(claims: dict[str, Any], name: str) -> tuple[str, ...] | None:
    value = claims.get(name)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise AuthError(f"claim {name!r} must be a list of strings")
    return tuple(value)


def auth_context_from_claims(
    claims: dict[str, Any], *, traceparent: str = "", trace_id: str = ""
) -> AuthContext:
    """Build the AuthContext from verified JWT claims.

    Args:
        claims: The decoded, verified claims (see the module table).
        traceparent: The public request's ``traceparent`` header, ``""`` when absent.
        trace_id: The gateway's id for the public request.

    Returns:
        The AuthContext; ``teams`` stays ``None`` when the claim is absent.

    Raises:
        AuthError: A claim has the wrong type.
    """
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub:
        raise AuthError("token has no subject")
    is_admin = claims.get("is_admin", False)
    if not isinstance(is_admin, bool):
        raise AuthError("claim 'is_admin' must be a boolean")
    exp = claims.get("exp", 0)
    if not isinstance(exp, int):
        raise AuthError("claim 'exp' must be an integer")
    return AuthContext(
        email=sub,
        is_admin=is_admin,
        teams=_str_list(claims, "teams"),
        scopes=_str_list(claims, "scopes") or (),
        token_exp=exp,
        traceparent=traceparent,
        trace_id=trace_id,
    )


def authenticate(
    authorization: str | None, secret: str, *, traceparent: str = "", trace_id: str = ""
) -> AuthContext:
    """Verify an ``Authorization`` header value and build the caller's AuthContext.

    Args:
        authorization: The header value (``Bearer <jwt>``), ``None`` when absent.
        secret: The HS256 key (``JWT_SECRET_KEY``).
        traceparent: The public request's ``traceparent`` header, ``""`` when absent.
        trace_id: The gateway's id for the public request.

    Returns:
        The caller's AuthContext.

    Raises:
        AuthError: No bearer token, a malformed, forged or expired token, or bad claims.
    """
    if not authorization:
        raise AuthError("missing bearer token")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError("authorization is not a bearer token")
    try:
        claims = jwt.decode(token.strip(), secret, algorithms=[_ALGORITHM], options={"require": ["sub"]})
    except jwt.ExpiredSignatureError as e:
        raise AuthError("token expired") from e
    except jwt.PyJWTError as e:
        raise AuthError(f"invalid token: {e}") from e
    return auth_context_from_claims(claims, traceparent=traceparent, trace_id=trace_id)


def anonymous_context(*, traceparent: str = "", trace_id: str = "") -> AuthContext:
    """The AuthContext of every caller when auth is disabled: anonymous, public entries only.

    Args:
        traceparent: The public request's ``traceparent`` header, ``""`` when absent.
        trace_id: The gateway's id for the public request.

    Returns:
        ``AuthContext(email="", teams=())``: no subject, not admin, no scopes, no expiry.
    """
    return AuthContext(email="", teams=(), traceparent=traceparent, trace_id=trace_id)


def auth_disabled(env: Mapping[str, str]) -> bool:
    """Whether ``MCP_GATEWAY_AUTH_DISABLED`` in ``env`` turns authentication off.

    One reading for the gateway (``_settings``) and the core of edge mode (``core.server``):
    ``1``/``true`` is on, unset, empty, ``0``/``false`` off (case and surrounding blanks
    ignored).

    Raises:
        ConfigError: Any other value.
    """
    flag = env.get("MCP_GATEWAY_AUTH_DISABLED", "").strip().lower()
    if flag not in ("", "0", "1", "false", "true"):
        raise ConfigError(f"MCP_GATEWAY_AUTH_DISABLED={flag!r} must be 0 or 1")
    return flag in ("1", "true")


def mint_token(
    secret: str,
    sub: str,
    *,
    teams: Sequence[str] | None = None,
    is_admin: bool = False,
    scopes: Sequence[str] = ("tools.execute",),
    ttl_s: int = 7 * 24 * 3600,
) -> str:
    """Mint an HS256 token for local use and tests.

    Args:
        secret: The HS256 key.
        sub: Subject email.
        teams: ``None`` leaves the claim out (unrestricted), ``[]`` is public only.
        is_admin: Sets the ``is_admin`` claim.
        scopes: The ``scopes`` claim.
        ttl_s: Lifetime in seconds; ``0`` mints a token without ``exp``; negative values mint an
            already expired token (for tests).

    Returns:
        The compact JWT.
    """
    now = int(time.time())
    claims: dict[str, Any] = {"sub": sub, "iat": now, "is_admin": is_admin, "scopes": list(scopes)}
    if teams is not None:
        claims["teams"] = list(teams)
    if ttl_s:
        claims["exp"] = now + ttl_s
    return jwt.encode(claims, secret, algorithm=_ALGORITHM)
