"""The catalog file (``docs/catalog.md``) and the entries discovered from the upstreams.

The same TOML file the Rust runtime reads, with the same rules (``catalog.rs``): upstream ids
are unique, a team upstream names its team, unknown keys are errors; after discovery, two
upstreams exposing the same prefixed tool or prompt name is an error, a resource URI exposed
twice keeps the first upstream's, and a virtual server naming an unknown tool is an error.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from mcp_gateway._auth import AuthContext
from mcp_gateway._errors import CatalogError

__all__ = ["Catalog", "CatalogConfig", "Entry", "Kind", "UpstreamConfig", "VirtualServer", "load_catalog"]

Kind = Literal["tool", "prompt", "resource"]


@dataclass(frozen=True, slots=True)
class UpstreamConfig:
    """One ``[[upstreams]]`` entry.

    Attributes:
        id: Unique id, used in logs and errors.
        url: Streamable HTTP endpoint of the upstream MCP server.
        prefix: Prepended to its tool and prompt names.
        team: ``None`` for a public upstream, else the team whose members see it.
        required: Whether being unreachable at start is an error (else its entries are skipped).
    """

    id: str
    url: str
    prefix: str = ""
    team: str | None = None
    required: bool = True


@dataclass(frozen=True, slots=True)
class VirtualServer:
    """One ``[[servers]]`` entry: ``/servers/{id}/mcp`` exposes only what it lists."""

    id: str
    tools: frozenset[str] = frozenset()
    resources: frozenset[str] = frozenset()
    prompts: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class CatalogConfig:
    """The parsed catalog file."""

    upstreams: tuple[UpstreamConfig, ...]
    servers: tuple[VirtualServer, ...]


_UPSTREAM_KEYS = {"id", "url", "prefix", "visibility", "team", "required"}
_SERVER_KEYS = {"id", "tools", "resources", "prompts"}


def _strings(table: dict[str, Any], key: str, where: str) -> frozenset[str]:
    value = table.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise CatalogError(f"{where}: `{key}` must be a list of strings")
    return frozenset(value)


def parse_catalog(text: str) -> CatalogConfig:
    """Parse and validate catalog TOML.

    Raises:
        CatalogError: Malformed TOML, unknown keys, repeated ids, a team upstream without team.
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise CatalogError(f"invalid catalog: {e}") from e
    unknown = set(data) - {"upstreams", "servers"}
    if unknown:
        raise CatalogError(f"invalid catalog: unknown keys {sorted(unknown)}")
    upstreams: list[UpstreamConfig] = []
    for raw in data.get("upstreams", []):
        extra = set(raw) - _UPSTREAM_KEYS
        if extra:
            raise CatalogError(f"invalid catalog: upstream has unknown keys {sorted(extra)}")
        uid, url = raw.get("id"), raw.get("url")
        if not isinstance(uid, str) or not isinstance(url, str):
            raise CatalogError("invalid catalog: an upstream needs string `id` and `url`")
        if any(u.id == uid for u in upstreams):
            raise CatalogError(f"invalid catalog: duplicate upstream id `{uid}`")
        visibility = raw.get("visibility", "public")
        if visibility not in ("public", "team"):
            raise CatalogError(f"invalid catalog: upstream `{uid}` has unknown visibility {visibility!r}")
        team = raw.get("team")
        if visibility == "team" and not team:
            raise CatalogError(f'invalid catalog: upstream `{uid}` has visibility "team" but no team')
        upstreams.append(
            UpstreamConfig(
                id=uid,
                url=url,
                prefix=str(raw.get("prefix", "")),
                team=str(team) if visibility == "team" else None,
                required=bool(raw.get("required", True)),
            )
        )
    servers: list[VirtualServer] = []
    for raw in data.get("servers", []):
        extra = set(raw) - _SERVER_KEYS
        if extra:
            raise CatalogError(f"invalid catalog: server has unknown keys {sorted(extra)}")
        sid = raw.get("id")
        if not isinstance(sid, str):
            raise CatalogError("invalid catalog: a server needs a string `id`")
        if any(s.id == sid for s in servers):
            raise CatalogError(f"invalid catalog: duplicate server id `{sid}`")
        where = f"server `{sid}`"
        servers.append(
            VirtualServer(
                id=sid,
                tools=_strings(raw, "tools", where),
                resources=_strings(raw, "resources", where),
                prompts=_strings(raw, "prompts", where),
            )
        )
    return CatalogConfig(upstreams=tuple(upstreams), servers=tuple(servers))


def load_catalog(path: Path) -> CatalogConfig:
    """Read and validate a catalog file.

    Raises:
        CatalogError: The file cannot be read or is invalid.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise CatalogError(f"cannot read catalog {path}: {e}") from e
    return parse_catalog(text)


@dataclass(frozen=True, slots=True)
class Entry:
    """One discovered tool, prompt, resource or resource template.

    Attributes:
        upstream: The upstream's id.
        upstream_name: Its name (tools, prompts) or URI (resources, templates) at the upstream.
        team: ``None`` when public, else the owning team (inherited from the upstream).
        json: Its JSON object as exposed (prefix applied).
    """

    upstream: str
    upstream_name: str
    team: str | None
    json: dict[str, Any]


@dataclass(slots=True)
class Catalog:
    """Discovered entries plus virtual servers, filtered per caller and scope."""

    tools: dict[str, Entry] = field(default_factory=dict)
    prompts: dict[str, Entry] = field(default_factory=dict)
    resources: dict[str, Entry] = field(default_factory=dict)
    templates: list[tuple[str, Entry]] = field(default_factory=list)
    servers: dict[str, VirtualServer] = field(default_factory=dict)

    def add(self, upstream: UpstreamConfig, kind: str, items: Iterable[dict[str, Any]]) -> None:
        """Add the items of one kind (``tool``, ``prompt``, ``resource``, ``template``) of an upstream.

        Raises:
            CatalogError: A tool or prompt name is already exposed by another upstream.
        """
        for item in items:
            if kind == "template":
                template = item.get("uriTemplate")
                if isinstance(template, str):
                    entry = Entry(upstream.id, template, upstream.team, item)
                    self.templates.append((template.split("{", 1)[0], entry))
                continue
            key = "uri" if kind == "resource" else "name"
            name = item.get(key)
            if not isinstance(name, str):
                continue
            exposed = name if kind == "resource" else f"{upstream.prefix}{name}"
            table = {"tool": self.tools, "prompt": self.prompts, "resource": self.resources}[kind]
            if exposed in table:
                if kind == "resource":
                    continue  # first upstream wins, as in the runtime
                first = table[exposed].upstream
                raise CatalogError(
                    f"catalog collision: {kind} `{exposed}` is exposed by both `{first}` and `{upstream.id}`"
                )
            table[exposed] = Entry(upstream.id, name, upstream.team, {**item, key: exposed})

    def add_servers(self, servers: Iterable[VirtualServer]) -> None:
        """Register the virtual servers.

        Raises:
            CatalogError: A server names a tool no upstream exposes.
        """
        for server in servers:
            for tool in sorted(server.tools):
                if tool not in self.tools:
                    raise CatalogError(f"invalid catalog: server `{server.id}` names unknown tool `{tool}`")
            self.servers[server.id] = server

    def allowed(self, kind: Kind, name: str, entry: Entry, auth: AuthContext, scope: str | None) -> bool:
        """Whether the caller may use ``name``: visible, and listed by the virtual server if any."""
        if not auth.can_see(entry.team):
            return False
        if scope is None:
            return True
        server = self.servers.get(scope)
        if server is None:
            return False
        listed = {"tool": server.tools, "prompt": server.prompts, "resource": server.resources}[kind]
        return name in listed

    def visible(self, kind: Kind, auth: AuthContext, scope: str | None) -> Iterator[dict[str, Any]]:
        """The JSON objects of ``kind`` the caller may see in ``scope``, in discovery order."""
        table = {"tool": self.tools, "prompt": self.prompts, "resource": self.resources}[kind]
        for name, entry in table.items():
            if self.allowed(kind, name, entry, auth, scope):
                yield entry.json

    def visible_templates(self, auth: AuthContext, scope: str | None) -> Iterator[dict[str, Any]]:
        """Resource templates: listed in the federated scope only (virtual servers list resources)."""
        if scope is not None:
            return
        for _, entry in self.templates:
            if auth.can_see(entry.team):
                yield entry.json

    def lookup(self, kind: Kind, name: str, auth: AuthContext, scope: str | None) -> Entry | None:
        """The entry a ``tools/call``, ``prompts/get`` or ``resources/read`` routes to, or ``None``.

        Resources not listed by name fall back (federated scope only) to the visible template
        with the longest literal prefix matching ``name``. Not visible is answered like unknown.
        """
        table = {"tool": self.tools, "prompt": self.prompts, "resource": self.resources}[kind]
        entry = table.get(name)
        if entry is not None:
            return entry if self.allowed(kind, name, entry, auth, scope) else None
        if kind != "resource" or scope is not None:
            return None
        matches = [
            (prefix, e)
            for prefix, e in self.templates
            if prefix and name.startswith(prefix) and auth.can_see(e.team)
        ]
        if not matches:
            return None
        return max(matches, key=lambda m: len(m[0]))[1]
