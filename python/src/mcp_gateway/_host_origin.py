"""The ``Host`` and ``Origin`` allow-lists: the MCP transport's protection against DNS rebinding.

The public endpoint checks both headers before authentication (MCP spec, transports: security
warning). The lists come from ``MCP_GATEWAY_ALLOWED_HOSTS`` and ``MCP_GATEWAY_ALLOWED_ORIGINS``
(:class:`~mcp_gateway.Settings`).
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["check_host_origin"]


def _split_host_port(netloc: str) -> tuple[str, str | None]:
    """``"host:port"`` -> ``("host", "port")``; IPv6 keeps its brackets; no port -> ``None``."""
    netloc = netloc.strip().lower()
    if netloc.startswith("["):
        end = netloc.find("]")
        if end < 0:
            return netloc, None
        rest = netloc[end + 1 :]
        return netloc[: end + 1], rest[1:] if rest.startswith(":") else None
    host, sep, port = netloc.partition(":")
    return host, (port if sep else None)


def _netloc_allowed(netloc: str, allowed: Sequence[str]) -> bool:
    host, port = _split_host_port(netloc)
    if not host:
        return False
    for entry in allowed:
        if entry == "*":
            return True
        entry_host, entry_port = _split_host_port(entry)
        if entry_host == host and (entry_port is None or entry_port == port):
            return True
    return False


def check_host_origin(
    host: str | None, origin: str | None, allowed_hosts: Sequence[str], allowed_origins: Sequence[str]
) -> tuple[int, str] | None:
    """Check a request's ``Host`` and ``Origin`` headers against the allow-lists.

    Args:
        host: The ``Host`` header, ``None`` when absent (rejected).
        origin: The ``Origin`` header, ``None`` when absent (browsers always send one on
            cross-origin requests; other clients need not, so absent passes).
        allowed_hosts: Entries ``name`` (any port), ``name:port`` or ``*``; lower case.
        allowed_origins: Entries ``scheme://host`` (any port), ``scheme://host:port`` or ``*``.

    Returns:
        ``None`` when the request may proceed, else ``(status, reason)``: ``421`` for a
        ``Host`` outside the list (the request was not meant for this server), ``403`` for an
        ``Origin`` outside it, as the official Python SDK answers.
    """
    if host is None or not _netloc_allowed(host, allowed_hosts):
        return 421, f"Host {host!r} is not allowed"
    if origin is not None:
        scheme, sep, netloc = origin.strip().lower().partition("://")
        ok = "*" in allowed_origins
        if not ok and sep and "/" not in netloc:
            ok = _netloc_allowed(
                netloc,
                [e.partition("://")[2] for e in allowed_origins if e.partition("://")[0] == scheme],
            )
        if not ok:
            return 403, f"Origin {origin!r} is not allowed"
    return None
