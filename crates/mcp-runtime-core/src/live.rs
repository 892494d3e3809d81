//! The live catalog: the current [`Catalog`] version, replaced whole when it changes, and
//! what follows a change.
//!
//! Two things change it:
//! - an upstream's `notifications/tools/list_changed` (`prompts`, `resources`): the runtime
//!   lists that kind of that upstream again (`resources` also lists its templates) and builds
//!   a new version with the new entries ([`LiveCatalog::refresh`]). The notification arrives
//!   on an HTTP upstream's standalone GET stream ([`crate::subscribe::listen`]) or on a stdio
//!   server's stdout; notices of one upstream that arrive together are handled once;
//! - [`crate::Runtime::reload`] (the sidecar calls it on `SIGHUP`): a new catalog file.
//!   Upstreams whose entry is unchanged (and whose credentials and environment read the same
//!   values again) are kept as they are (their sessions, calls and listeners go on); new and changed ones are started and discovered, removed and changed
//!   ones are stopped once the new version is in place. A catalog that fails (a name exposed
//!   twice, a required upstream unreachable, a credential that cannot be read) is refused and
//!   the old one stays.
//!
//! After a change, every downstream session with an open standalone GET stream whose view
//! (its caller's visibility and its scope, as `tools/list` would answer) of a list changed
//! gets the matching `notifications/*/list_changed` there (one each, dropped for a stream
//! that is full); a session without a GET stream misses it, as the specification allows. So
//! does each `subscriptions/listen` stream (MCP 2026-07-28) that opted in to that list, tagged
//! with its subscription id ([`crate::listen`]). The change is also published, with the new catalog version, to the watchers of
//! [`crate::Runtime::watch_catalog`] (the `WatchCatalog` RPC and its HTTP/JSON twin).
//!
//! Each change takes one lock, so a refresh and a reload never build on the same old version;
//! requests read the current version without waiting (an `Arc` behind a read lock).

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock, Weak};

use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use crate::auth::{AuthContext, TeamScope};
use crate::catalog::{Catalog, CatalogConfig, CatalogError, Found, Kind, list_all, stop_all};
use crate::request::SseEvent;
use crate::session::Sessions;
use crate::subscribe::Subscriptions;
use crate::upstream::Upstream;

/// A list an upstream says changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ListKind {
    /// `tools/list`.
    Tools,
    /// `prompts/list`.
    Prompts,
    /// `resources/list` and `resources/templates/list`.
    Resources,
}

impl ListKind {
    /// Every kind.
    pub const ALL: [Self; 3] = [Self::Tools, Self::Prompts, Self::Resources];

    /// The kind of a `notifications/<kind>/list_changed` method, if it is one.
    #[must_use]
    pub fn of_notification(method: &str) -> Option<Self> {
        match method {
            "notifications/tools/list_changed" => Some(Self::Tools),
            "notifications/prompts/list_changed" => Some(Self::Prompts),
            "notifications/resources/list_changed" => Some(Self::Resources),
            _ => None,
        }
    }

    /// `tools`, `prompts` or `resources`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tools => "tools",
            Self::Prompts => "prompts",
            Self::Resources => "resources",
        }
    }

    fn notification(self) -> &'static str {
        match self {
            Self::Tools => "notifications/tools/list_changed",
            Self::Prompts => "notifications/prompts/list_changed",
            Self::Resources => "notifications/resources/list_changed",
        }
    }
}

/// What an upstream tells the runtime outside any call, with which upstream (its instance
/// number, so that a notice of an upstream a reload replaced is ignored).
#[derive(Debug, Clone)]
pub(crate) enum Notice {
    /// Its `notifications/*/list_changed`: list it again. `peer`: heard by another replica
    /// (Redis): the upstream by id (`instance` is that replica's numbering, unused), and not
    /// published again.
    ListChanged {
        instance: u64,
        kind: ListKind,
        peer: Option<String>,
    },
    /// Its `notifications/resources/updated` for `uri` (as it names it), read by a stdio
    /// supervisor: deliver it to the subscribed sessions ([`crate::subscribe`]). An HTTP
    /// upstream's updates are delivered by its listener directly.
    ResourceUpdated { instance: u64, uri: String },
    /// A stdio server started again (a new MCP session, which has no subscriptions): make
    /// the subscriptions with subscribers again.
    SessionStarted { instance: u64 },
}

/// Where upstreams send their notices: the runtime's refresher, or nowhere (a catalog
/// discovered on its own, [`Catalog::discover`]).
#[derive(Debug, Clone)]
pub(crate) struct Notices(Option<mpsc::UnboundedSender<Notice>>);

impl Notices {
    /// Notices go nowhere.
    pub(crate) fn none() -> Self {
        Self(None)
    }

    /// Reports that `kind` of upstream `instance` changed.
    pub(crate) fn send(&self, instance: u64, kind: ListKind) {
        self.tell(Notice::ListChanged {
            instance,
            kind,
            peer: None,
        });
    }

    /// Reports `notice`.
    pub(crate) fn tell(&self, notice: Notice) {
        if let Some(tx) = &self.0 {
            let _ = tx.send(notice);
        }
    }

    /// Reports that another replica heard upstream `upstream` say its `kind` list changed.
    pub(crate) fn send_from_peer(&self, upstream: String, kind: ListKind) {
        self.tell(Notice::ListChanged {
            instance: 0,
            kind,
            peer: Some(upstream),
        });
    }
}

/// Why the catalog changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeCause {
    /// An upstream's `notifications/*/list_changed`.
    ListChanged,
    /// The catalog file was reloaded.
    Reload,
}

impl ChangeCause {
    /// `list_changed` or `reload`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ListChanged => "list_changed",
            Self::Reload => "reload",
        }
    }
}

/// One change of the catalog, as published to watchers ([`crate::Runtime::watch_catalog`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogChange {
    /// The catalog version after the change: 1 at start, one more at each change.
    pub version: u64,
    /// What caused it.
    pub cause: ChangeCause,
    /// Upstream ids the reload added.
    pub upstreams_added: Vec<String>,
    /// Upstream ids the reload removed.
    pub upstreams_removed: Vec<String>,
    /// Upstream ids whose entry the reload changed, or whose lists were listed again.
    pub upstreams_changed: Vec<String>,
    /// The lists whose content changed for some caller (`tools`, `prompts`, `resources`).
    pub lists: Vec<ListKind>,
}

/// The current catalog and how it changes (module documentation).
pub(crate) struct LiveCatalog {
    current: RwLock<Arc<Catalog>>,
    version: AtomicU64,
    changes: broadcast::Sender<CatalogChange>,
    /// Held while a change is built: one at a time.
    update: tokio::sync::Mutex<()>,
    pub(crate) notices: Notices,
    max_message_bytes: usize,
    /// Stops the listeners and the refresher (the runtime's stop, or its drop).
    listening: CancellationToken,
    subscriptions: Weak<Subscriptions>,
}

impl std::fmt::Debug for LiveCatalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveCatalog")
            .field("version", &self.version.load(Ordering::Relaxed))
            .field("current", &self.load())
            .finish_non_exhaustive()
    }
}

impl LiveCatalog {
    /// Discovers the catalog of `config`, starts the listeners of the upstreams that notify,
    /// and the refresher that turns their notices into new versions (both stop with
    /// `listening`).
    pub(crate) async fn start(
        config: &CatalogConfig,
        max_message_bytes: usize,
        sessions: &Arc<Sessions>,
        subscriptions: &Arc<Subscriptions>,
        listening: CancellationToken,
        store: Option<Arc<crate::state::redis::RedisStore>>,
    ) -> Result<Arc<Self>, CatalogError> {
        let (tx, rx) = mpsc::unbounded_channel();
        let notices = Notices(Some(tx));
        let catalog = Catalog::discover_with(config, max_message_bytes, &notices).await?;
        let live = Arc::new(Self {
            current: RwLock::new(Arc::new(catalog)),
            version: AtomicU64::new(1),
            changes: broadcast::channel(64).0,
            update: tokio::sync::Mutex::new(()),
            notices,
            max_message_bytes,
            listening,
            subscriptions: Arc::downgrade(subscriptions),
        });
        live.listen_to(&live.load().upstreams);
        tokio::spawn(refresher(
            Arc::downgrade(&live),
            Arc::downgrade(sessions),
            rx,
            live.listening.clone(),
            store,
        ));
        Ok(live)
    }

    /// The current version.
    pub(crate) fn load(&self) -> Arc<Catalog> {
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// The current version number and a receiver of the changes after it.
    pub(crate) fn watch(&self) -> (u64, broadcast::Receiver<CatalogChange>) {
        let _g = self.current.read().unwrap_or_else(PoisonError::into_inner);
        (
            self.version.load(Ordering::SeqCst),
            self.changes.subscribe(),
        )
    }

    /// Starts the GET-stream listener of each upstream of `ups` whose server notifies.
    fn listen_to(&self, ups: &[Arc<Upstream>]) {
        for up in ups {
            if up.notifies.load(Ordering::Relaxed) {
                tokio::spawn(crate::subscribe::listen(
                    Arc::clone(up),
                    self.subscriptions.clone(),
                    self.listening.clone(),
                ));
            }
        }
    }

    /// The subscriptions and upstream `instance` of the current catalog, if both are there.
    fn subscriptions_and(&self, instance: u64) -> Option<(Arc<Subscriptions>, Arc<Upstream>)> {
        let subs = self.subscriptions.upgrade()?;
        let up = self
            .load()
            .upstreams
            .iter()
            .find(|u| u.instance == instance)
            .cloned()?;
        Some((subs, up))
    }

    /// Delivers upstream `instance`'s `notifications/resources/updated` for `uri` to the
    /// sessions subscribed to it.
    fn resource_updated(&self, instance: u64, uri: &str) {
        if let Some((subs, up)) = self.subscriptions_and(instance) {
            let n = subs.deliver_updated(&up, uri);
            tracing::debug!(upstream = %up.config.id, uri, sessions = n, "resource updated");
        }
    }

    /// Upstream `instance` has a new session: subscribes it again to what has subscribers
    /// (in a task of its own: the upstream answers while notices keep coming).
    fn session_started(&self, instance: u64) {
        if let Some((subs, up)) = self.subscriptions_and(instance) {
            tokio::spawn(async move { subs.resubscribe(&up).await });
        }
    }

    /// Lists `kinds` of upstream `instance` again and, when that changes anything, makes the
    /// result the current version. A list that fails, or new names that collide with another
    /// upstream's, leave the catalog as it is (logged at `warn`).
    async fn refresh(&self, sessions: &Sessions, instance: u64, kinds: &BTreeSet<ListKind>) {
        let _one = self.update.lock().await;
        let old = self.load();
        let Some(index) = old.upstreams.iter().position(|u| u.instance == instance) else {
            return;
        };
        let up = &old.upstreams[index];
        let mut found: Found = old.found[index].as_deref().cloned().unwrap_or_default();
        for kind in kinds {
            let listed = match kind {
                ListKind::Tools => list_all(up, "tools/list", "tools")
                    .await
                    .map(|l| found.tools = l),
                ListKind::Prompts => list_all(up, "prompts/list", "prompts")
                    .await
                    .map(|l| found.prompts = l),
                ListKind::Resources => match list_all(up, "resources/list", "resources").await {
                    Ok(l) => {
                        found.resources = l;
                        list_all(up, "resources/templates/list", "resourceTemplates")
                            .await
                            .map(|l| found.templates = l)
                    }
                    Err(e) => Err(e),
                },
            };
            if let Err(e) = listed {
                tracing::warn!(upstream = %up.config.id, list = kind.as_str(), error = %e, "listing a changed list failed; the upstream's entries are kept as they were");
                return;
            }
        }
        if old.found[index].as_deref() == Some(&found) {
            tracing::debug!(upstream = %up.config.id, "list_changed with nothing changed");
            return;
        }
        let mut all = old.found.clone();
        all[index] = Some(Arc::new(found));
        let new = match Catalog::assemble(
            old.servers_config.clone(),
            old.upstreams.clone(),
            all,
            false,
        ) {
            Ok(new) => new,
            Err(e) => {
                tracing::warn!(upstream = %up.config.id, error = %e, "the upstream's changed list is refused; its entries are kept as they were");
                return;
            }
        };
        let id = up.config.id.clone();
        self.publish(
            sessions,
            &old,
            new,
            ChangeCause::ListChanged,
            (Vec::new(), Vec::new(), vec![id]),
        );
    }

    /// Replaces the catalog by the one of `config` (module documentation); returns the change
    /// (`None` when nothing changed).
    ///
    /// # Errors
    ///
    /// The [`CatalogError`] of the new catalog; the old one is kept then.
    pub(crate) async fn reload(
        &self,
        sessions: &Sessions,
        config: &CatalogConfig,
    ) -> Result<Option<CatalogChange>, CatalogError> {
        let _one = self.update.lock().await;
        let old = self.load();
        let mut upstreams = Vec::new();
        let mut found = Vec::new();
        let mut started = Vec::new();
        for uc in &config.upstreams {
            // The same entry, and the same values read from its environment variables and
            // files (a rotated token file replaces the upstream).
            let same = |u: &Arc<Upstream>| {
                u.config == *uc
                    && uc.http_headers().ok().as_ref() == Some(&u.resolved.0)
                    && uc.process_env().ok().as_ref() == Some(&u.resolved.1)
            };
            if let Some(i) = old.upstreams.iter().position(same) {
                upstreams.push(Arc::clone(&old.upstreams[i]));
                found.push(old.found[i].clone());
                continue;
            }
            match crate::catalog::start_upstream(uc, self.max_message_bytes, &self.notices).await {
                Ok((up, f)) => {
                    started.push(Arc::clone(&up));
                    upstreams.push(up);
                    found.push(f);
                }
                Err(e) => {
                    stop_all(&started).await;
                    return Err(e);
                }
            }
        }
        let new = match Catalog::assemble(config.servers.clone(), upstreams, found, true) {
            Ok(new) => new,
            Err(e) => {
                stop_all(&started).await;
                return Err(e);
            }
        };
        let kept = |u: &Arc<Upstream>| new.upstreams.iter().any(|n| Arc::ptr_eq(n, u));
        let retired: Vec<Arc<Upstream>> =
            old.upstreams.iter().filter(|u| !kept(u)).cloned().collect();
        let ids = |ups: &[Arc<Upstream>]| -> BTreeSet<String> {
            ups.iter().map(|u| u.config.id.clone()).collect()
        };
        let (old_ids, new_ids) = (ids(&old.upstreams), ids(&new.upstreams));
        let added: Vec<String> = new_ids.difference(&old_ids).cloned().collect();
        let removed: Vec<String> = old_ids.difference(&new_ids).cloned().collect();
        let changed: Vec<String> = started
            .iter()
            .map(|u| u.config.id.clone())
            .filter(|id| old_ids.contains(id))
            .collect();
        self.listen_to(&started);
        let servers_changed = old.servers_config != new.servers_config;
        let change = self.publish(
            sessions,
            &old,
            new,
            ChangeCause::Reload,
            (added, removed, changed),
        );
        let change = match change {
            Some(c) => Some(c),
            None if servers_changed || !retired.is_empty() => {
                let change = self.bump(ChangeCause::Reload, Vec::new(), Vec::new(), Vec::new());
                let _ = self.changes.send(change.clone());
                Some(change)
            }
            None => None,
        };
        for up in &retired {
            up.retired.cancel();
        }
        stop_all(&retired).await;
        Ok(change)
    }

    /// Makes `new` current; tells each session whose view of a list changed, and the
    /// watchers. Returns the change, or `None` when no list changed for anyone (the new
    /// version is current all the same).
    fn publish(
        &self,
        sessions: &Sessions,
        old: &Catalog,
        new: Catalog,
        cause: ChangeCause,
        (added, removed, changed): (Vec<String>, Vec<String>, Vec<String>),
    ) -> Option<CatalogChange> {
        let new = Arc::new(new);
        let lists: Vec<ListKind> = ListKind::ALL
            .into_iter()
            .filter(|k| old.everything(*k) != new.everything(*k))
            .collect();
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::clone(&new);
        if lists.is_empty() && added.is_empty() && removed.is_empty() && changed.is_empty() {
            return None;
        }
        let change = self.bump(cause, added, removed, changed);
        let change = CatalogChange {
            lists: lists.clone(),
            ..change
        };
        if !lists.is_empty() {
            let told = notify_sessions(sessions, old, &new, &lists);
            tracing::info!(version = change.version, cause = cause.as_str(), lists = ?lists.iter().map(|k| k.as_str()).collect::<Vec<_>>(), sessions_told = told, "catalog changed");
        }
        let _ = self.changes.send(change.clone());
        Some(change)
    }

    /// The next version number and its change (the caller sends it to the watchers).
    fn bump(
        &self,
        cause: ChangeCause,
        upstreams_added: Vec<String>,
        upstreams_removed: Vec<String>,
        upstreams_changed: Vec<String>,
    ) -> CatalogChange {
        let version = self.version.fetch_add(1, Ordering::SeqCst) + 1;
        CatalogChange {
            version,
            cause,
            upstreams_added,
            upstreams_removed,
            upstreams_changed,
            lists: Vec::new(),
        }
    }
}

/// Sends `notifications/<kind>/list_changed` to each session with an open standalone stream,
/// and each `subscriptions/listen` stream that opted in to `kind` ([`crate::listen`]), whose
/// caller sees `kind` differently in `new` than in `old`; returns how many notifications were
/// sent. Views are compared once per (visibility, scope).
fn notify_sessions(sessions: &Sessions, old: &Catalog, new: &Catalog, kinds: &[ListKind]) -> usize {
    let mut views: HashMap<(bool, TeamScope, Option<String>), Vec<ListKind>> = HashMap::new();
    let mut sent = 0;
    for session in sessions.all().into_iter().chain(sessions.listeners()) {
        let Some((tx, auth)) = session.notification_stream() else {
            continue;
        };
        let key = (
            auth.is_admin,
            auth.team_scope.clone(),
            session.scope.clone(),
        );
        let changed = views
            .entry(key)
            .or_insert_with(|| changed_for(old, new, kinds, &auth, session.scope.as_deref()));
        for kind in changed.iter().filter(|k| session.wants(**k)) {
            let body = session.notification_body(kind.notification(), serde_json::json!({}));
            if tx.try_send(SseEvent::message(body)).is_ok() {
                sent += 1;
            }
        }
    }
    sent
}

/// The kinds of `kinds` that this caller, in this scope, lists differently in `new`.
fn changed_for(
    old: &Catalog,
    new: &Catalog,
    kinds: &[ListKind],
    auth: &AuthContext,
    scope: Option<&str>,
) -> Vec<ListKind> {
    kinds
        .iter()
        .copied()
        .filter(|k| {
            let lists = |c: &Catalog| match k {
                ListKind::Tools => (c.list_json(Kind::Tool, auth, scope), String::new()),
                ListKind::Prompts => (c.list_json(Kind::Prompt, auth, scope), String::new()),
                ListKind::Resources => (
                    c.list_json(Kind::Resource, auth, scope),
                    c.templates_json(auth, scope),
                ),
            };
            lists(old) != lists(new)
        })
        .collect()
}

/// Turns upstream notices into refreshes until `stop` (or the runtime is gone). Notices that
/// are already waiting are taken together: one refresh per upstream with every kind named.
/// With Redis (`store`), a notice this replica heard is published first, so every replica
/// lists that upstream again (one whose own upstream stream missed it included) and tells the
/// standalone streams it holds; a replica that heard it too finds nothing new the second time.
async fn refresher(
    live: Weak<LiveCatalog>,
    sessions: Weak<Sessions>,
    mut rx: mpsc::UnboundedReceiver<Notice>,
    stop: CancellationToken,
    store: Option<Arc<crate::state::redis::RedisStore>>,
) {
    loop {
        let first = tokio::select! {
            () = stop.cancelled() => return,
            n = rx.recv() => n,
        };
        let Some(first) = first else { return };
        let mut notices = vec![first];
        while let Ok(n) = rx.try_recv() {
            notices.push(n);
        }
        let (Some(live), Some(sessions)) = (live.upgrade(), sessions.upgrade()) else {
            return;
        };
        let current = live.load();
        // List changes are coalesced per upstream (one listing for a burst); the rest is
        // handled as it comes.
        let mut due: HashMap<u64, BTreeSet<ListKind>> = HashMap::new();
        for n in notices {
            let (instance, kind, peer) = match n {
                Notice::ResourceUpdated { instance, uri } => {
                    live.resource_updated(instance, &uri);
                    continue;
                }
                Notice::SessionStarted { instance } => {
                    live.session_started(instance);
                    continue;
                }
                Notice::ListChanged {
                    instance,
                    kind,
                    peer,
                } => (instance, kind, peer),
            };
            let instance = match &peer {
                Some(id) => current
                    .upstreams
                    .iter()
                    .find(|u| &u.config.id == id)
                    .map(|u| u.instance),
                None => {
                    let up = current.upstreams.iter().find(|u| u.instance == instance);
                    if let (Some(store), Some(up)) = (&store, up)
                        && let Err(e) = store.publish_notice(&up.config.id, kind).await
                    {
                        tracing::warn!(upstream = %up.config.id, error = %e, "list change not published to the other replicas");
                    }
                    Some(instance)
                }
            };
            if let Some(instance) = instance {
                due.entry(instance).or_default().insert(kind);
            }
        }
        drop(current);
        for (instance, kinds) in due {
            tokio::select! {
                () = stop.cancelled() => return,
                () = live.refresh(&sessions, instance, &kinds) => {}
            }
        }
    }
}

/// One message of a catalog watch ([`crate::Runtime::catalog_events`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogEvent {
    /// The catalog version now.
    pub version: u64,
    /// The change that made it; `None` for the first event of a watch (the version when the
    /// watch began) and after `lagged`.
    pub change: Option<CatalogChange>,
    /// The watcher fell behind and missed changes: whatever it cached about the catalog must
    /// be read again.
    pub lagged: bool,
}

impl CatalogEvent {
    /// The event as the HTTP/JSON twin sends it: `{"version": N, "cause": "reload" | ...,
    /// "upstreams_added": [...], "upstreams_removed": [...], "upstreams_changed": [...],
    /// "lists": ["tools", ...], "lagged": false}` (`cause` null and the lists empty for the
    /// first event and after a lag).
    #[must_use]
    pub fn to_json(&self) -> serde_json::Value {
        let c = self.change.as_ref();
        let list =
            |f: fn(&CatalogChange) -> &Vec<String>| c.map_or_else(Vec::new, |c| f(c).clone());
        serde_json::json!({
            "version": self.version,
            "cause": c.map(|c| c.cause.as_str()),
            "upstreams_added": list(|c| &c.upstreams_added),
            "upstreams_removed": list(|c| &c.upstreams_removed),
            "upstreams_changed": list(|c| &c.upstreams_changed),
            "lists": c.map_or_else(Vec::new, |c| c.lists.iter().map(|k| k.as_str()).collect()),
            "lagged": self.lagged,
        })
    }
}

/// The events of one watch: the current version first, then each change, until `end`.
pub(crate) fn events(
    version: u64,
    rx: broadcast::Receiver<CatalogChange>,
    end: CancellationToken,
) -> futures::stream::BoxStream<'static, CatalogEvent> {
    use futures::StreamExt as _;
    let first = CatalogEvent {
        version,
        change: None,
        lagged: false,
    };
    let rest = futures::stream::unfold((rx, end, version), |(mut rx, end, last)| async move {
        let next = tokio::select! {
            () = end.cancelled() => return None,
            n = rx.recv() => n,
        };
        let event = match next {
            Ok(change) => CatalogEvent {
                version: change.version,
                change: Some(change),
                lagged: false,
            },
            Err(broadcast::error::RecvError::Lagged(_)) => CatalogEvent {
                version: last,
                change: None,
                lagged: true,
            },
            Err(broadcast::error::RecvError::Closed) => return None,
        };
        let last = event.version;
        Some((event, (rx, end, last)))
    });
    futures::stream::once(async move { first })
        .chain(rest)
        .boxed()
}
