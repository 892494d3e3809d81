"""Log format and level of the gateway and the core, and the one line per request.

Two formats (``docs/operations.md``, Logs): ``text`` for people (``make run``) and ``json``, one
JSON object per line with ``ts``, ``level``, ``logger``, ``msg`` and the request fields, for
collectors. Every line of the process takes the format, uvicorn's included. The level is one
setting per process (``--log-level`` or ``MCP_GATEWAY_LOG_LEVEL`` / ``MCP_CORE_LOG_LEVEL``).

The per-request line is ``msg="request"`` on the logger ``mcp_gateway.access`` (gateway) or
``mcp_gateway.core.access`` (core) at ``info``; its fields are :data:`REQUEST_FIELDS`. It is
built only when that logger is enabled for ``info`` (one cached check per request otherwise). It
never carries a token, the ``Authorization`` header, the auth context or a body: the callers
pass the fields below and nothing else is read from the request.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Mapping
from typing import Any, TextIO

from mcp_gateway._errors import ConfigError

__all__ = ["LEVELS", "REQUEST_FIELDS", "JsonFormatter", "TextFormatter", "configure", "level_and_format"]

LEVELS = ("debug", "info", "warning", "error")
"""The accepted levels, lower case."""

FORMATS = ("text", "json")
"""The accepted formats; ``text`` is the default."""

REQUEST_FIELDS = (
    "request_id",
    "trace_id",
    "span_id",
    "session_id",
    "mode",
    "mcp_method",
    "operation",
    "http_status",
    "grpc_status",
    "rpc_code",
    "outcome",
    "duration_ms",
)
"""The fields a per-request line may carry (``extra=`` of the logging call), in output order."""


_second: list[Any] = [-1, ""]
"""The last whole second formatted by :func:`_ts` and its text (one ``strftime`` a second)."""


def _ts(created: float) -> str:
    seconds = int(created)
    if _second[0] != seconds:
        _second[:] = [seconds, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))]
    return f"{_second[1]}.{int((created - seconds) * 1000):03d}Z"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts``, ``level``, ``logger``, ``msg``, the request fields, ``exc``."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        line: dict[str, Any] = {
            "ts": _ts(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = record.__dict__
        for name in REQUEST_FIELDS:
            value = fields.get(name)
            if value is not None and value != "":
                line[name] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, separators=(",", ":"), default=str)


class TextFormatter(logging.Formatter):
    """``<ts> <LEVEL> <logger>: <msg> key=value ...`` for people."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        """The record as text, with the request fields as ``key=value``."""
        text = super().format(record)
        fields = record.__dict__
        extra = [f"{name}={fields[name]}" for name in REQUEST_FIELDS if fields.get(name) not in (None, "")]
        if not extra:
            return text
        head, sep, tail = text.partition("\n")
        return f"{head} {' '.join(extra)}{sep}{tail}"


def level_and_format(
    flag_level: str | None, env: Mapping[str, str], prefix: str, flag_format: str | None = None
) -> tuple[str, str]:
    """The level and format of a process: the flag, else ``{prefix}_LOG_LEVEL`` / ``_LOG_FORMAT``.

    Args:
        flag_level: ``--log-level``, ``None`` when not given.
        env: The environment.
        prefix: ``MCP_GATEWAY`` or ``MCP_CORE``.
        flag_format: ``--log-format``, ``None`` when not given.

    Returns:
        ``(level, format)``, lower case; ``info`` and ``text`` by default.

    Raises:
        ConfigError: A value is not one of :data:`LEVELS` / :data:`FORMATS`.
    """
    level = (flag_level or env.get(f"{prefix}_LOG_LEVEL") or "info").strip().lower()
    if level not in LEVELS:
        raise ConfigError(f"{prefix}_LOG_LEVEL={level!r} is not one of {', '.join(LEVELS)}")
    fmt = (flag_format or env.get(f"{prefix}_LOG_FORMAT") or "text").strip().lower()
    if fmt not in FORMATS:
        raise ConfigError(f"{prefix}_LOG_FORMAT={fmt!r} is not one of {', '.join(FORMATS)}")
    return level, fmt


def configure(level: str, fmt: str, stream: TextIO | None = None) -> None:
    """Send every logger's records at ``level`` and above to ``stream`` (stderr) in ``fmt``.

    Also switches off what neither format prints, as the logging HOWTO's "Optimization" section
    says: the caller's file and line (a walk up the stack for every record), thread, process and
    multiprocessing names.
    """
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging._srcfile = None  # documented in logging's source: skips findCaller
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # uvicorn's loggers keep their own handlers when it configures them; it does not here
    # (log_config=None), so they propagate to the root and take the format.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
