"""The catalog file (``docs/catalog.md``) and the entries discovered from the upstreams.

The same TOML file the Rust runtime reads, with the same rules (``catalog.rs``): upstream ids
are unique, a team upstream names its team, unknown keys are errors; after discovery, two
upstreams exposing the same prefixed tool or prompt name is an error, a resource URI or URI
template exposed by several upstreams is listed once per caller (the first upstream the caller
may see serves it), and a virtual server naming an unknown tool is an error.
"""

from __future__ import annotations

import dataclasses
import os
import ssl
import tomllib
import urllib.parse
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from mcp_gateway._auth import AuthContext
from mcp_gateway._errors import CatalogError

__all__ = [
    "Catalog",
    "CatalogConfig",
    "Entry",
    "Kind",
    "Secret",
    "Transport",
    "UpstreamConfig",
    "VirtualServer",
    "load_catalog",
    "relative_to",
]

Kind = Literal["tool", "prompt", "resource"]


Transport = Literal["streamable-http", "sse", "stdio"]
"""How an upstream is reached: streamable HTTP, the legacy HTTP+SSE transport (2024-11-05), or
a child process speaking MCP on its stdin and stdout."""


@dataclass(frozen=True, slots=True)
class Secret:
    """Where a value comes from: written in the catalog, an environment variable, or a file.

    Attributes:
        source: ``"literal"``, ``"env"`` or ``"file"``.
        ref: The value itself (``literal``), the variable's name (``env``) or the file's path
            (``file``, relative to the catalog file's directory).
    """

    source: Literal["literal", "env", "file"]
    ref: str

    def __repr__(self) -> str:
        return "Secret(literal)" if self.source == "literal" else f"Secret({self.source}={self.ref!r})"

    def resolve(self, what: str) -> str:
        """The value. A file's trailing newline is not part of it.

        Args:
            what: What it is for, in errors (``upstream `x`: header `X-Api-Key```).

        Raises:
            CatalogError: The variable is unset or the file unreadable; the error names the
                variable or the file, never a value.
        """
        if self.source == "literal":
            return self.ref
        if self.source == "env":
            value = os.environ.get(self.ref)
            if value is None:
                raise CatalogError(f"{what}: environment variable {self.ref} is not set")
            return value
        try:
            return Path(self.ref).read_text(encoding="utf-8").rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as e:
            raise CatalogError(f"{what}: cannot read {self.ref}: {type(e).__name__}") from None


@dataclass(frozen=True, slots=True)
class UpstreamConfig:
    """One ``[[upstreams]]`` entry.

    Attributes:
        id: Unique id, used in logs and errors.
        url: Endpoint of the upstream MCP server (``streamable-http``, ``sse``); ``""`` for stdio.
            Written as it is or as ``{ env = "NAME" }`` (read when the catalog is parsed).
        prefix: Prepended to its tool and prompt names.
        team: ``None`` for a public upstream, else the team whose members see it.
        required: Whether being unreachable at start is an error (else its entries are skipped).
        transport: How it is reached.
        command: The program of a stdio upstream (a path if it has a ``/``, relative to ``cwd``;
            else looked up on ``PATH``).
        args: Its arguments.
        env: Variables set for it, over the few it inherits (``HOME``, ``LOGNAME``, ``PATH``,
            ``SHELL``, ``TERM``, ``USER``).
        cwd: Its working directory (``None``: the catalog file's directory).
        headers: Headers sent with every HTTP request to it.
        bearer: The token sent as ``Authorization: Bearer ...``.
        ca_file: PEM file of the certificate authorities an ``https://`` upstream's
            certificate must chain to, instead of the system's (as curl's ``--cacert``).
    """

    id: str
    url: str = ""
    prefix: str = ""
    team: str | None = None
    required: bool = True
    transport: Transport = "streamable-http"
    command: str = ""
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, Secret], ...] = ()
    cwd: str | None = None
    headers: tuple[tuple[str, Secret], ...] = ()
    bearer: Secret | None = None
    ca_file: str | None = None

    def tls_context(self) -> ssl.SSLContext | None:
        """The TLS context of an upstream with a ``ca_file``; ``None`` without one.

        Without one, httpx's default applies: the system's roots.

        Raises:
            CatalogError: The file cannot be read or holds no PEM certificate (naming the
                upstream and the file).
        """
        if self.ca_file is None:
            return None
        try:
            return ssl.create_default_context(cafile=self.ca_file)
        except (OSError, ssl.SSLError) as e:
            reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
            where = f"upstream `{self.id}`: ca_file {self.ca_file}"
            raise CatalogError(f"invalid catalog: {where}: {reason}") from None

    def http_headers(self) -> dict[str, str]:
        """The headers and bearer token with their values read.

        Raises:
            CatalogError: A value cannot be read or is not a valid header value (the error
                names the header and where its value comes from, never the value).
        """
        out: dict[str, str] = {}
        for name, secret in self.headers:
            out[name] = _header_value(secret, f"upstream `{self.id}`: header `{name}`")
        if self.bearer is not None:
            token = _header_value(self.bearer, f"upstream `{self.id}`: bearer token")
            out["Authorization"] = f"Bearer {token}"
        return out

    def process_env(self) -> dict[str, str]:
        """The variables of ``env`` with their values read (stdio).

        Raises:
            CatalogError: A value cannot be read.
        """
        return {name: secret.resolve(f"upstream `{self.id}`: env `{name}`") for name, secret in self.env}


def _header_value(secret: Secret, what: str) -> str:
    value = secret.resolve(what)
    if not value or any(not (0x20 <= ord(c) < 0x7F or c == "\t") for c in value):
        origin = "" if secret.source == "literal" else f" (from {secret.source} {secret.ref})"
        raise CatalogError(f"{what}: the value{origin} is empty or not a valid header value")
    return value


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


_COMMON_KEYS = {"id", "transport", "prefix", "visibility", "team", "required"}
_TRANSPORT_KEYS: dict[str, set[str]] = {
    "streamable-http": {"url", "headers", "bearer", "ca_file"},
    "sse": {"url", "headers", "bearer", "ca_file"},
    "stdio": {"command", "args", "env", "cwd"},
}


def _secret(value: Any, where: str, *, literal: bool = True) -> Secret:
    """A value written as a string (when ``literal``), ``{ env = "NAME" }`` or ``{ file = "path" }``."""
    if isinstance(value, str) and literal:
        return Secret("literal", value)
    if isinstance(value, dict) and len(value) == 1:
        ((source, ref),) = value.items()
        if source in ("env", "file") and isinstance(ref, str) and ref:
            return Secret("env" if source == "env" else "file", ref)
    forms = (
        '"value", { env = "NAME" } or { file = "path" }'
        if literal
        else '{ env = "NAME" } or { file = "path" }'
    )
    raise CatalogError(f"invalid catalog: {where} must be {forms}")


def _secrets(value: Any, where: str) -> tuple[tuple[str, Secret], ...]:
    if not isinstance(value, dict):
        raise CatalogError(f"invalid catalog: {where} must be a table")
    return tuple((str(k), _secret(v, f"{where} `{k}`")) for k, v in value.items())


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
        uid = raw.get("id")
        if not isinstance(uid, str):
            raise CatalogError("invalid catalog: an upstream needs a string `id`")
        transport = raw.get("transport", "streamable-http")
        if transport not in _TRANSPORT_KEYS:
            raise CatalogError(
                f"invalid catalog: upstream `{uid}` has unknown transport {transport!r}"
                ' (expected "streamable-http", "sse" or "stdio")'
            )
        extra = set(raw) - _COMMON_KEYS - _TRANSPORT_KEYS[transport]
        if extra:
            raise CatalogError(
                f"invalid catalog: upstream `{uid}` ({transport}) has unknown keys {sorted(extra)}"
            )
        if any(u.id == uid for u in upstreams):
            raise CatalogError(f"invalid catalog: duplicate upstream id `{uid}`")
        visibility = raw.get("visibility", "public")
        if visibility not in ("public", "team"):
            raise CatalogError(f"invalid catalog: upstream `{uid}` has unknown visibility {visibility!r}")
        team = raw.get("team")
        if visibility == "team" and not team:
            raise CatalogError(f'invalid catalog: upstream `{uid}` has visibility "team" but no team')
        where = f"upstream `{uid}`"
        url, command, cwd = raw.get("url", ""), raw.get("command", ""), raw.get("cwd")
        if isinstance(url, dict):
            # `{ env = "NAME" }`: read now, as the runtime does.
            secret = _secret(
                url, f'{where}: url must be "http://..." or {{ env = "NAME" }}; it', literal=False
            )
            if secret.source != "env":
                raise CatalogError(
                    f'invalid catalog: {where}: url must be "http://..." or {{ env = "NAME" }}'
                )
            url = secret.resolve(f"invalid catalog: {where}: url")
        args = raw.get("args", [])
        if transport == "stdio":
            if not isinstance(command, str) or not command:
                raise CatalogError(f"invalid catalog: {where} (stdio) needs a string `command`")
            if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
                raise CatalogError(f"invalid catalog: {where}: `args` must be a list of strings")
            if cwd is not None and not isinstance(cwd, str):
                raise CatalogError(f"invalid catalog: {where}: `cwd` must be a string")
        elif not isinstance(url, str) or not url:
            raise CatalogError(f"invalid catalog: {where} needs a string `url`")
        else:
            _check_url(url, where)
        ca_file = raw.get("ca_file")
        if ca_file is not None and not isinstance(ca_file, str):
            raise CatalogError(f"invalid catalog: {where}: `ca_file` must be a string")
        if ca_file is not None and not url.lower().startswith("https://"):
            raise CatalogError(
                f"invalid catalog: {where} has a `ca_file` but an http:// `url` (a CA is for https:// only)"
            )
        bearer = raw.get("bearer")
        upstreams.append(
            UpstreamConfig(
                id=uid,
                url=url,
                prefix=str(raw.get("prefix", "")),
                team=str(team) if visibility == "team" else None,
                required=bool(raw.get("required", True)),
                transport=transport,
                command=command,
                args=tuple(args),
                env=_secrets(raw.get("env", {}), f"{where}: env"),
                cwd=cwd,
                headers=_secrets(raw.get("headers", {}), f"{where}: headers"),
                bearer=None if bearer is None else _secret(bearer, f"{where}: bearer", literal=False),
                ca_file=ca_file,
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
    return relative_to(parse_catalog(text), path.parent)


def relative_to(config: CatalogConfig, base: Path) -> CatalogConfig:
    """The catalog with its relative paths made relative to ``base`` (the catalog's directory).

    A ``cwd`` (default ``base`` itself) and a secret's ``file``; a stdio ``command`` with a
    ``/`` is relative to the resolved ``cwd``.
    """

    def file(secret: Secret) -> Secret:
        return Secret("file", str(base / secret.ref)) if secret.source == "file" else secret

    upstreams = []
    for u in config.upstreams:
        cwd = str(base / u.cwd) if u.cwd is not None else str(base)
        command = (
            str(Path(cwd) / u.command) if "/" in u.command and not u.command.startswith("/") else u.command
        )
        upstreams.append(
            dataclasses.replace(
                u,
                cwd=cwd if u.transport == "stdio" else u.cwd,
                command=command,
                env=tuple((k, file(v)) for k, v in u.env),
                headers=tuple((k, file(v)) for k, v in u.headers),
                bearer=None if u.bearer is None else file(u.bearer),
                ca_file=None if u.ca_file is None else str(base / u.ca_file),
            )
        )
    return CatalogConfig(upstreams=tuple(upstreams), servers=config.servers)


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
    """Discovered entries plus virtual servers, filtered per caller and scope.

    A tool or prompt name has one entry; a resource URI or URI template exposed by several
    upstreams has one per upstream, in catalog order, and each caller sees it once: the first
    of them the caller may use, which is also the one a read is routed to (as in the runtime).
    """

    tools: dict[str, list[Entry]] = field(default_factory=dict)
    prompts: dict[str, list[Entry]] = field(default_factory=dict)
    resources: dict[str, list[Entry]] = field(default_factory=dict)
    templates: list[tuple[str, Entry]] = field(default_factory=list)
    servers: dict[str, VirtualServer] = field(default_factory=dict)
    _order: dict[Kind, list[tuple[str, Entry]]] = field(
        default_factory=lambda: {"tool": [], "prompt": [], "resource": []}
    )

    def _table(self, kind: Kind) -> dict[str, list[Entry]]:
        return {"tool": self.tools, "prompt": self.prompts, "resource": self.resources}[kind]

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
            if kind not in ("tool", "prompt", "resource"):
                raise ValueError(f"unknown catalog kind {kind!r}")
            table_kind: Kind = "tool" if kind == "tool" else "prompt" if kind == "prompt" else "resource"
            key = "uri" if table_kind == "resource" else "name"
            name = item.get(key)
            if not isinstance(name, str):
                continue
            exposed = name if table_kind == "resource" else f"{upstream.prefix}{name}"
            table = self._table(table_kind)
            if exposed in table and table_kind != "resource":
                first = table[exposed][0].upstream
                raise CatalogError(
                    f"catalog collision: {kind} `{exposed}` is exposed by both `{first}` and `{upstream.id}`"
                )
            entry = Entry(upstream.id, name, upstream.team, {**item, key: exposed})
            table.setdefault(exposed, []).append(entry)
            self._order[table_kind].append((exposed, entry))

    def add_servers(self, servers: Iterable[VirtualServer], *, strict: bool = True) -> None:
        """Register the virtual servers.

        Args:
            servers: The ``[[servers]]`` of the catalog file.
            strict: Whether a server naming a tool no upstream exposes is an error (at start and
                at a reload); after an upstream's ``list_changed`` it is not (the server just
                does not list it).

        Raises:
            CatalogError: A server names a tool no upstream exposes (``strict`` only).
        """
        for server in servers:
            for tool in sorted(server.tools) if strict else ():
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
        """The JSON objects of ``kind`` the caller may see in ``scope``, in catalog order, each name once."""
        seen: set[str] = set()
        for name, entry in self._order[kind]:
            if name not in seen and self.allowed(kind, name, entry, auth, scope):
                seen.add(name)
                yield entry.json

    def visible_templates(self, auth: AuthContext, scope: str | None) -> Iterator[dict[str, Any]]:
        """Resource templates, each once; in the federated scope only (virtual servers list resources)."""
        if scope is not None:
            return
        seen: set[str] = set()
        for _, entry in self.templates:
            if entry.upstream_name not in seen and auth.can_see(entry.team):
                seen.add(entry.upstream_name)
                yield entry.json

    def lookup(self, kind: Kind, name: str, auth: AuthContext, scope: str | None) -> Entry | None:
        """The entry a ``tools/call``, ``prompts/get`` or ``resources/read`` routes to, or ``None``.

        A listed name routes to the first upstream exposing it that the caller may use.
        Resources not listed by name fall back (federated scope only) to the visible template
        with the longest literal prefix matching ``name`` (the first in catalog order among
        equal ones). Not visible is answered like unknown.
        """
        entries = self._table(kind).get(name)
        if entries:
            return next((e for e in entries if self.allowed(kind, name, e, auth, scope)), None)
        if kind != "resource" or scope is not None:
            return None
        best: tuple[int, Entry] | None = None
        for prefix, e in self.templates:
            if (
                prefix
                and name.startswith(prefix)
                and auth.can_see(e.team)
                and (best is None or len(prefix) > best[0])
            ):
                best = (len(prefix), e)
        return None if best is None else best[1]


def _check_url(url: str, where: str) -> None:
    """Refuse an upstream ``url`` that is not an absolute ``http://`` or ``https://`` URL.

    The value is not repeated in the message: it may come from the environment and carry
    credentials. The runtime checks the same.

    Raises:
        CatalogError: naming the upstream and what is wrong.
    """
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError for a port out of range or not a number
    except ValueError as e:
        raise CatalogError(f"invalid catalog: {where} has a `url` that is not a URL ({e})") from None
    if parts.scheme not in ("http", "https"):
        what = f"scheme `{parts.scheme}`" if parts.scheme else "no scheme"
        raise CatalogError(f"invalid catalog: {where} has a `url` with {what}: expected http:// or https://")
    if not host:
        raise CatalogError(f"invalid catalog: {where} has a `url` with no host")
