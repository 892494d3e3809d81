"""The core's admin client: revoke credentials and read the core's counters over its HTTP socket.

``python -m mcp_gateway core-admin --http-uds PATH revoke --token T | --token-sha256 H |
--subject EMAIL | --all`` posts to the core's ``POST /admin/revoke`` and prints the new policy
generation; ``... stats`` prints ``GET /admin/stats`` (generation, open watchers, hooks, call
record totals). The admin routes exist only on the core's HTTP/JSON socket, whose file mode (600)
limits them to the core's user. Exit status 0 on success, 1 when the core refused or could not be
reached.
"""

from __future__ import annotations

import http.client
import json
import socket
from typing import Any

__all__ = ["AdminError", "UnixHTTPConnection", "request"]


class AdminError(Exception):
    """The core could not be reached or answered with an error."""


class UnixHTTPConnection(http.client.HTTPConnection):
    """An ``http.client`` connection to a Unix socket (standard library only).

    Args:
        path: The socket file.
        timeout_s: Connect and read timeout, in seconds.
    """

    def __init__(self, path: str, timeout_s: float = 5.0) -> None:
        super().__init__("localhost", timeout=timeout_s)
        self._path = path

    def connect(self) -> None:
        """Connect to the socket file instead of a TCP address."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


def request(path: str, method: str, route: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    """One request to the core's HTTP socket; returns the JSON answer.

    Raises:
        AdminError: Connection failure, or a status other than 200.
    """
    conn = UnixHTTPConnection(path)
    try:
        payload = None if body is None else json.dumps(body).encode()
        headers = {} if payload is None else {"content-type": "application/json"}
        conn.request(method, route, body=payload, headers=headers)
        response = conn.getresponse()
        raw = response.read()
    except OSError as e:
        raise AdminError(f"core at {path}: {e}") from e
    finally:
        conn.close()
    try:
        answer = json.loads(raw) if raw else {}
    except ValueError as e:
        raise AdminError(f"core answered {response.status} with a body that is not JSON") from e
    if response.status != 200:
        raise AdminError(f"core answered {response.status}: {answer.get('error', answer)}")
    if not isinstance(answer, dict):
        raise AdminError("core answered a JSON value that is not an object")
    return answer
