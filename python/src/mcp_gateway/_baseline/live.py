"""The baseline's live catalog: the current :class:`Catalog` version, replaced whole when it changes.

The same behaviour as the runtime's ``live.rs`` (``docs/catalog.md``, "Live catalog"). Two
things change it:

- an upstream's ``notifications/tools/list_changed`` (``prompts``, ``resources``), which the
  SDK client hands to :attr:`Upstream.on_list_changed`: that kind of that upstream is listed
  again (``resources`` also lists its templates) and a new version is built with the new
  entries (:meth:`LiveCatalog.refresh`). Notices of one upstream and kind that arrive while an
  earlier one waits are handled once. A listing that fails, or new names that collide with
  another upstream's, leave the catalog as it was (a warning); a virtual server naming a tool
  the upstream no longer has just does not list it;
- :meth:`LiveCatalog.reload` (the front layer calls it on ``SIGHUP``): the catalog file read
  again. Upstreams whose entry is unchanged and whose credentials and environment read the
  same values again are kept as they are (their upstream session, calls and subscriptions go
  on); new and changed ones are started and discovered; removed ones, and the old form of
  changed ones, are stopped once the new version is in place (the new form of a changed one is
  subscribed to the URIs the old one was, so the sessions' subscriptions go on). A catalog
  that fails (not TOML,
  a name exposed twice, a required upstream unreachable, a credential that cannot be read, a
  virtual server naming an unknown tool) is refused with one log line and the old one stays.

After a change, every downstream session with an open standalone GET stream
(:attr:`LiveCatalog.streams`) whose view of a list changed (its caller's visibility and its
virtual server, as ``tools/list`` would answer) gets the matching
``notifications/*/list_changed`` there, sent through the SDK's server session of that MCP
session (:attr:`LiveCatalog.sessions`); a session without a GET stream misses it, as the
specification allows.

Each change holds one lock, so a refresh and a reload never build on the same old version;
requests read :attr:`LiveCatalog.catalog` and :attr:`LiveCatalog.upstreams` without waiting
(both are replaced together, with no await in between).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import TaskGroup
from mcp import Client
from mcp.shared.exceptions import MCPError

from mcp_gateway._auth import AuthContext
from mcp_gateway._baseline.catalog import Catalog, CatalogConfig, UpstreamConfig, load_catalog
from mcp_gateway._baseline.upstream import ListKind, Upstream, UpstreamUnavailableError
from mcp_gateway._errors import CatalogError

__all__ = ["LIST_KINDS", "LiveCatalog", "OpenUpstream"]

logger = logging.getLogger("mcp_gateway._baseline")

LIST_KINDS: tuple[ListKind, ...] = ("tools", "prompts", "resources")
"""Every list a ``list_changed`` may name, in the order sessions are told."""

NOTIFY_TIMEOUT_S = 5.0
"""How long telling one session of a change may take, in seconds (then it is skipped)."""

OpenUpstream = Callable[[UpstreamConfig, contextlib.AsyncExitStack], Awaitable[Upstream]]
"""Builds the :class:`Upstream` of a catalog entry; what it opens for it (an HTTP client with
the upstream's headers) goes on the stack, closed when the upstream leaves."""


@dataclass(frozen=True, slots=True)
class _Member:
    """An upstream of the current version.

    Attributes:
        upstream: Its connection pool.
        values: The values its entry's credentials and environment read when it was started
            (compared at a reload: a rotated token file replaces the upstream).
        found: What it listed, by catalog kind (``tool``, ``prompt``, ``resource``,
            ``template``); ``None`` for an optional upstream unreachable when it was started.
        stack: What was opened for it, closed when it leaves.
    """

    upstream: Upstream
    values: tuple[Any, ...]
    found: dict[str, list[dict[str, Any]]] | None
    stack: contextlib.AsyncExitStack


def _values(config: UpstreamConfig) -> tuple[Any, ...]:
    """The values ``config``'s credentials, CA file and environment read now.

    Raises:
        CatalogError: One cannot be read (as at start).
    """
    tls = config.tls_context()
    return (
        sorted(config.http_headers().items()),
        sorted(config.process_env().items()),
        None if tls is None else tls.get_ca_certs(binary_form=True),
    )


async def _subscribe(uri: str, client: Client) -> None:
    await client.subscribe_resource(uri)


def _view(catalog: Catalog, kind: ListKind, auth: AuthContext, scope: str | None) -> list[Any]:
    """What the list ``kind`` answers the caller ``auth`` in ``scope`` (``resources``: with templates)."""
    if kind == "tools":
        return list(catalog.visible("tool", auth, scope))
    if kind == "prompts":
        return list(catalog.visible("prompt", auth, scope))
    return [list(catalog.visible("resource", auth, scope)), list(catalog.visible_templates(auth, scope))]


class LiveCatalog:
    """The catalog the baseline serves now, and what changes it (see the module docstring).

    Args:
        path: The catalog file, read again by :meth:`reload`.
        open_upstream: Builds an upstream (see :data:`OpenUpstream`).
        task_group: Where refreshes run (the baseline's lifespan task group).
    """

    def __init__(self, path: Path, open_upstream: OpenUpstream, task_group: TaskGroup) -> None:
        self._path = path
        self._open_upstream = open_upstream
        self.task_group = task_group
        """Where background work runs (the baseline's lifespan task group)."""
        self._lock = anyio.Lock()
        self._config = CatalogConfig(upstreams=(), servers=())
        self._members: dict[str, _Member] = {}
        self._pending: set[tuple[int, ListKind]] = set()
        self.catalog = Catalog()
        """The current version: read it per request, never keep it across an await."""
        self.upstreams: dict[str, Upstream] = {}
        """The upstreams of :attr:`catalog`, by id."""
        self.streams: dict[str, tuple[AuthContext, str | None]] = {}
        """The MCP sessions with an open standalone GET stream, by session id: the caller and the
        virtual server id (``None`` for ``/mcp``) that decide what it sees. The front layer
        keeps it."""
        self.sessions: dict[str, Any] = {}
        """The SDK's server session (``mcp.server.session.ServerSession``) of each MCP session, by
        session id: what sends on its standalone stream. The SDK server's handlers keep it."""
        self.on_upstream: Callable[[Upstream], None] | None = None
        """Called with each upstream started (at start and at a reload), before its discovery:
        the SDK server wires its resource updates."""

    # --- start and stop --------------------------------------------------------------------

    async def start(self, config: CatalogConfig) -> None:
        """Start and discover every upstream of ``config``; serve the first version.

        Raises:
            CatalogError: A credential that cannot be read, a required upstream unreachable, a
                name collision, a virtual server naming an unknown tool.
        """
        members: dict[str, _Member] = {}
        try:
            for upstream_config in config.upstreams:
                members[upstream_config.id] = await self._start(upstream_config, "at start")
            catalog = self._build(config, members, strict=True)
        except BaseException:
            with anyio.CancelScope(shield=True):
                for member in members.values():
                    await self._stop(member)
            raise
        self._replace(config, members, catalog)

    async def aclose(self) -> None:
        """Stop every upstream and close what was opened for it."""
        members, self._members = self._members, {}
        self.upstreams = {}
        for member in members.values():
            member.upstream.close()
        for member in members.values():
            await self._stop(member)

    async def _start(self, config: UpstreamConfig, when: str) -> _Member:
        """Start the upstream of ``config`` and discover it.

        Raises:
            CatalogError: A value of its entry cannot be read, or it is required and
                unreachable (``when`` says when, in the error).
        """
        # Credentials and a stdio server's environment are read now: one that cannot be read is
        # a misconfiguration, also for an optional upstream.
        values = _values(config)
        stack = contextlib.AsyncExitStack()
        try:
            upstream = await self._open_upstream(config, stack)
            upstream.on_list_changed = functools.partial(self._notice, upstream)
            if self.on_upstream is not None:
                self.on_upstream(upstream)
            found: dict[str, list[dict[str, Any]]] | None
            try:
                found = await upstream.list_all()
            except MCPError as e:
                # A caller's error names no upstream; the operator's does (the cause).
                cause = e.__cause__
                detail = (
                    str(cause)
                    if isinstance(cause, UpstreamUnavailableError)
                    else f"upstream {config.id} unavailable: {cause or e.error.message}"
                )
                if config.required:
                    raise CatalogError(f"required upstream unavailable {when}: {detail}") from e
                logger.warning("optional upstream %s unavailable %s: %s", config.id, when, e)
                found = None
        except BaseException:
            with anyio.CancelScope(shield=True):
                await stack.aclose()
            raise
        return _Member(upstream, values, found, stack)

    @staticmethod
    async def _stop(member: _Member) -> None:
        """Stop an upstream that left (its calls in flight fail) and close what it held."""
        with anyio.CancelScope(shield=True):
            await member.upstream.aclose()
            await member.stack.aclose()

    # --- versions --------------------------------------------------------------------------

    @staticmethod
    def _build(config: CatalogConfig, members: dict[str, _Member], *, strict: bool) -> Catalog:
        """A version of ``config``'s upstreams (in catalog order) with what ``members`` listed.

        Raises:
            CatalogError: A tool or prompt name exposed twice; a virtual server naming an unknown
                tool (``strict`` only).
        """
        catalog = Catalog()
        for upstream_config in config.upstreams:
            member = members.get(upstream_config.id)
            if member is None or member.found is None:
                continue
            for kind in ("tool", "prompt", "resource", "template"):
                catalog.add(upstream_config, kind, member.found.get(kind, []))
        catalog.add_servers(config.servers, strict=strict)
        return catalog

    def _replace(self, config: CatalogConfig, members: dict[str, _Member], catalog: Catalog) -> Catalog:
        """Serve ``catalog`` from now on (no await: requests see the old or the new, whole).

        Returns:
            The version it replaced.
        """
        old = self.catalog
        self._config = config
        self._members = members
        self.upstreams = {uid: member.upstream for uid, member in members.items()}
        self.catalog = catalog
        return old

    # --- an upstream's list_changed --------------------------------------------------------

    def _notice(self, upstream: Upstream, kind: ListKind) -> None:
        """An upstream said ``kind`` changed: list it again in a task (once for notices that wait)."""
        key = (id(upstream), kind)
        if key in self._pending:
            return
        self._pending.add(key)
        self.task_group.start_soon(self.refresh, upstream, kind)

    async def refresh(self, upstream: Upstream, kind: ListKind) -> None:
        """List ``kind`` of ``upstream`` again, serve the new entries, tell the sessions that see them.

        Nothing happens for an upstream that is no longer served (a reload removed or replaced
        it). A listing that fails, or new names that collide, leave the catalog as it was (a
        warning).
        """
        async with self._lock:
            self._pending.discard((id(upstream), kind))
            uid = upstream.config.id
            member = self._members.get(uid)
            if member is None or member.upstream is not upstream:
                return
            try:
                fresh = await upstream.list_kinds((kind,))
            except Exception as e:
                # MCPError as a call's (the SDK maps its transport's failures to it); anything
                # else is logged too, never raised into the baseline's task group.
                logger.warning("upstream %s: %s list_changed: listing failed: %s", uid, kind, e)
                return
            members = {
                **self._members,
                uid: dataclasses.replace(member, found={**(member.found or {}), **fresh}),
            }
            try:
                catalog = self._build(self._config, members, strict=False)
            except CatalogError as e:
                logger.warning("upstream %s: %s list_changed: the new list is not served: %s", uid, kind, e)
                return
            old = self._replace(self._config, members, catalog)
            logger.info("upstream %s: %s list refreshed", uid, kind)
        await self._tell(old, catalog)

    # --- SIGHUP ----------------------------------------------------------------------------

    async def reload(self) -> None:
        """Read the catalog file again and serve it; log the outcome in one line.

        ``catalog reloaded`` with the upstreams added, removed and changed (or ``catalog
        reloaded: nothing changed``), or ``catalog reload refused; the old catalog is kept``
        with the reason (then nothing changed). Never raises (any error refuses the new catalog).
        """
        async with self._lock:
            try:
                config = load_catalog(self._path)
                change = await self._reload(config)
            except Exception as e:
                # A CatalogError says what is wrong; anything else is refused the same way (it
                # must not end the baseline's task group), with its type.
                reason = str(e) if isinstance(e, CatalogError) else f"{type(e).__name__}: {e}"
                logger.error("catalog reload refused; the old catalog is kept: %s: %s", self._path, reason)
                return
        old, catalog, added, removed, changed = change
        if added or removed or changed or old is not catalog:
            logger.info(
                "catalog reloaded: added %s, removed %s, changed %s",
                json.dumps(added),
                json.dumps(removed),
                json.dumps(changed),
            )
        else:
            logger.info("catalog reloaded: nothing changed")
        await self._tell(old, catalog)

    async def _reload(
        self, config: CatalogConfig
    ) -> tuple[Catalog, Catalog, list[str], list[str], list[str]]:
        """Serve ``config``, keeping the upstreams whose entry and values are the same.

        Returns:
            The old version, the new one, and the ids of the upstreams added, removed and
            changed.

        Raises:
            CatalogError: As :meth:`start`; nothing changed then (the upstreams it started are
                stopped again).
        """
        old_members = self._members
        kept: dict[str, _Member] = {}
        started: dict[str, _Member] = {}
        try:
            for upstream_config in config.upstreams:
                member = old_members.get(upstream_config.id)
                if (
                    member is not None
                    and member.upstream.config == upstream_config
                    and member.values == _values(upstream_config)
                ):
                    kept[upstream_config.id] = member
                else:
                    started[upstream_config.id] = await self._start(upstream_config, "at reload")
            members = {**kept, **started}
            catalog = self._build(config, members, strict=True)
        except BaseException:
            with anyio.CancelScope(shield=True):
                for member in started.values():
                    await self._stop(member)
            raise
        if not started and len(kept) == len(old_members) and config == self._config:
            return self.catalog, self.catalog, [], [], []
        old = self._replace(config, members, catalog)
        added = [uid for uid in started if uid not in old_members]
        changed = [uid for uid in started if uid in old_members]
        removed = [uid for uid in old_members if uid not in members]
        for uid in changed:
            await self._carry_subscriptions(old_members[uid].upstream, members[uid].upstream)
        for uid in removed + changed:
            await self._stop(old_members[uid])
        return old, catalog, added, removed, changed

    @staticmethod
    async def _carry_subscriptions(old: Upstream, new: Upstream) -> None:
        """Subscribe the new form of a changed upstream to the URIs its old form was subscribed to.

        The downstream subscriptions are kept by upstream id and URI (:mod:`.server`), so the
        sessions subscribed go on receiving ``notifications/resources/updated``. A subscribe
        that fails is logged; that URI's subscribers then get no updates.
        """
        for uri in sorted(old.subscribed):
            try:
                await new.call(functools.partial(_subscribe, uri))
                new.subscribed.add(uri)
            except Exception as e:
                logger.warning(
                    "upstream %s: subscribing %s again after the reload failed: %s", new.config.id, uri, e
                )

    # --- telling the sessions --------------------------------------------------------------

    async def _tell(self, old: Catalog, new: Catalog) -> None:
        """Send each session with a GET stream whose view of a list changed that list's ``list_changed``."""
        if old is new:
            return
        for session_id, (auth, scope) in list(self.streams.items()):
            session = self.sessions.get(session_id)
            if session is None:
                continue
            for kind in LIST_KINDS:
                if _view(old, kind, auth, scope) == _view(new, kind, auth, scope):
                    continue
                send = {
                    "tools": session.send_tool_list_changed,
                    "prompts": session.send_prompt_list_changed,
                    "resources": session.send_resource_list_changed,
                }[kind]
                try:
                    with anyio.move_on_after(NOTIFY_TIMEOUT_S):
                        await send()
                except Exception as e:
                    # The stream ended meanwhile: it misses the change, as one without a stream.
                    logger.debug("session %s: %s list_changed not sent: %s", session_id, kind, e)
