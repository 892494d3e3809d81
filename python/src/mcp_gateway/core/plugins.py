"""The core's plugins: a per-team tool deny-list and an output redactor, run as Core SPI hooks.

Configured by one small JSON file, named by ``MCP_CORE_PLUGINS_FILE`` (or ``core --plugins
FILE``); without it no plugin runs and no hook is registered::

    {
      "deny_tools": {"alpha": ["sleep", "payload"], "beta": ["echo"]},
      "redact": "sk-[A-Za-z0-9]{8,}"
    }

Both keys are optional; an unknown key is a configuration error (the core refuses to start).

``deny_tools`` (hook point ``pre_invoke``, registered for each tool named in the file): a caller
whose ``teams`` include a team that lists the called tool is refused with JSON-RPC error
``-32003`` and the message ``Tool '<name>' is not allowed for team '<team>'``. A caller
without teams (``teams`` ``null``, unrestricted, or ``[]``, public only) is never refused by it.

``redact`` (hook points ``post_invoke`` and ``post_fetch``, registered for ``*``): a Python
regular expression; in the result, every string that is the value of a ``text`` key (text
content of a tool result or prompt message, the text of a resource's contents), at any depth,
has each match replaced by ``[REDACTED]``. A result with no match is answered "proceed
unchanged" (no payload sent back).

The decision for a point or name with no registered hook is "proceed unchanged".
"""

from __future__ import annotations

import enum
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mcp_gateway._auth import AuthContext
from mcp_gateway._errors import ConfigError

__all__ = [
    "FORBIDDEN",
    "REDACTED",
    "HookDecision",
    "HookPoint",
    "HookRegistration",
    "Plugins",
]

FORBIDDEN = -32003
"""The JSON-RPC error code of a tool the deny-list refuses."""

REDACTED = "[REDACTED]"
"""What the redactor puts in place of each match."""


class HookPoint(enum.StrEnum):
    """Where in a request a hook runs (the proto's ``HookPoint`` without ``UNSPECIFIED``)."""

    PRE_INVOKE = "pre_invoke"
    """Before ``tools/call`` goes upstream; the payload is the call's ``arguments``."""
    POST_INVOKE = "post_invoke"
    """After ``tools/call`` answered; the payload is the JSON-RPC ``result``."""
    POST_FETCH = "post_fetch"
    """After ``resources/read`` or ``prompts/get`` answered; the payload is the ``result``."""


@dataclass(frozen=True, slots=True)
class HookRegistration:
    """One hook: the runtime calls InvokeHook at ``point`` for ``name`` (``*``: every name).

    Attributes:
        point: The hook point.
        name: The tool name, resource URI or prompt name; ``*`` for all.
        plugin: The plugin that registered it (``deny-list``, ``redactor``).
    """

    point: HookPoint
    name: str
    plugin: str


@dataclass(frozen=True, slots=True)
class HookDecision:
    """The outcome of one InvokeHook.

    Attributes:
        payload: The replacement payload (a JSON object), or ``None`` to keep the original.
        deny_code: The JSON-RPC error code of a refusal, or ``None`` to proceed.
        deny_message: The JSON-RPC error message of a refusal.
    """

    payload: dict[str, Any] | None = None
    deny_code: int | None = None
    deny_message: str = ""


_PROCEED = HookDecision()


def _redact(value: Any, pattern: re.Pattern[str]) -> tuple[Any, bool]:
    """``value`` with every match in each string under a ``text`` key replaced; and whether any was."""
    if isinstance(value, dict):
        changed = False
        out: dict[str, Any] = {}
        for key, item in value.items():
            if key == "text" and isinstance(item, str):
                new, count = pattern.subn(REDACTED, item)
                out[key], changed = new, changed or count > 0
            else:
                out[key], hit = _redact(item, pattern)
                changed = changed or hit
        return (out, True) if changed else (value, False)
    if isinstance(value, list):
        items = [_redact(item, pattern) for item in value]
        if any(hit for _, hit in items):
            return [item for item, _ in items], True
        return value, False
    return value, False


class Plugins:
    """The configured plugins and the hooks they registered.

    Args:
        deny_tools: Team name to the tool names refused to its members.
        redact: The redactor's regular expression, or ``None`` without a redactor.
    """

    def __init__(
        self, deny_tools: dict[str, frozenset[str]] | None = None, redact: str | None = None
    ) -> None:
        self._deny: dict[str, frozenset[str]] = {
            team: tools for team, tools in (deny_tools or {}).items() if tools
        }
        self._redact = re.compile(redact) if redact else None
        hooks = [
            HookRegistration(HookPoint.PRE_INVOKE, tool, "deny-list")
            for tool in sorted(set().union(*self._deny.values()))
        ]
        if self._redact is not None:
            hooks += [
                HookRegistration(HookPoint.POST_INVOKE, "*", "redactor"),
                HookRegistration(HookPoint.POST_FETCH, "*", "redactor"),
            ]
        self.hooks: tuple[HookRegistration, ...] = tuple(hooks)
        """Every hook registered; empty when no plugin is configured."""

    @classmethod
    def from_file(cls, path: Path | None) -> Plugins:
        """Read the JSON configuration of the module docstring; ``None``: no plugins.

        Raises:
            ConfigError: The file is unreadable, not the documented JSON shape, or the regular
                expression does not compile.
        """
        if path is None:
            return cls()
        try:
            config = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise ConfigError(f"plugins file {path}: {e}") from e
        if not isinstance(config, dict) or set(config) - {"deny_tools", "redact"}:
            raise ConfigError(f"plugins file {path}: expected an object with deny_tools and/or redact")
        deny = config.get("deny_tools", {})
        if not isinstance(deny, dict) or not all(
            isinstance(tools, list) and all(isinstance(t, str) for t in tools) for tools in deny.values()
        ):
            raise ConfigError(f"plugins file {path}: deny_tools must map team names to lists of tool names")
        redact = config.get("redact")
        if redact is not None and (not isinstance(redact, str) or not redact):
            raise ConfigError(f"plugins file {path}: redact must be a non-empty regular expression")
        try:
            return cls({team: frozenset(tools) for team, tools in deny.items()}, redact)
        except re.error as e:
            raise ConfigError(f"plugins file {path}: redact: {e}") from e

    def invoke(
        self, point: HookPoint, name: str, caller: AuthContext, payload: dict[str, Any]
    ) -> HookDecision:
        """Run the hooks registered for ``point`` and ``name``.

        Args:
            point: The hook point.
            name: The tool name, resource URI or prompt name.
            caller: The caller as ResolveCaller returned it.
            payload: The call's ``arguments`` (``pre_invoke``) or the JSON-RPC ``result``.

        Returns:
            Proceed (with a replaced payload when the redactor changed something) or deny.
        """
        if point is HookPoint.PRE_INVOKE:
            for team in caller.teams or ():
                if name in self._deny.get(team, ()):
                    return HookDecision(
                        deny_code=FORBIDDEN,
                        deny_message=f"Tool {name[:128]!r} is not allowed for team {team!r}",
                    )
            return _PROCEED
        if self._redact is not None:
            redacted, changed = _redact(payload, self._redact)
            if changed:
                return HookDecision(payload=redacted)
        return _PROCEED
