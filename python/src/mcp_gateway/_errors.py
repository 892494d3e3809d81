"""The gateway's one exception hierarchy.

Lower-level exceptions (httpx, grpc, the mcp SDK, PyJWT) are translated into these at the seam
where they occur, so the ASGI layer only ever handles ``GatewayError`` subclasses.
"""

from __future__ import annotations

__all__ = [
    "AuthError",
    "CatalogError",
    "ConfigError",
    "GatewayError",
    "RuntimeBusyError",
    "RuntimeTimeoutError",
    "RuntimeUnavailableError",
]


class GatewayError(Exception):
    """Base class of every error the gateway raises on purpose.

    Attributes:
        grpc_status: The canonical gRPC status name of a failed call to the runtime (the
            ``grpc_status`` label of ``mcp_boundary_errors_total``, ``docs/operations.md``); the
            gRPC backend sets the status the call ended with, the HTTP/JSON backends get the
            class's mapping.
    """

    grpc_status: str = "INTERNAL"


class ConfigError(GatewayError):
    """The gateway's environment or flags are invalid (raised at start, never per request)."""


class CatalogError(ConfigError):
    """The catalog file is unreadable or violates the rules of ``docs/catalog.md``."""


class AuthError(GatewayError):
    """The bearer token is missing, malformed, forged or expired (answered with HTTP 401)."""


class RuntimeUnavailableError(GatewayError):
    """The runtime cannot be reached or went away mid-request (answered with HTTP 502)."""

    grpc_status = "UNAVAILABLE"


class RuntimeBusyError(GatewayError):
    """Every connection to the runtime is in use and none freed in time (HTTP 503, Retry-After)."""

    grpc_status = "RESOURCE_EXHAUSTED"


class RuntimeTimeoutError(GatewayError):
    """The runtime did not answer within the request timeout (answered with HTTP 504)."""

    grpc_status = "DEADLINE_EXCEEDED"
