//! MCP sessions: minted by `initialize`, bound to the caller's subject and scope, ended by
//! DELETE or the idle reaper. Each subject may hold at most a configured number of sessions at
//! once, so one subject cannot fill the table (or what each session holds) for everyone.
//!
//! With the in-memory store the table is the whole truth. With the Redis store
//! ([`crate::state`]) it is this replica's cache of the shared records: a session is created
//! in Redis first (the per-subject limit counted there, across replicas), a miss is loaded from
//! Redis, a hit is served without a round trip while the invalidation channel is up and the
//! session was checked in the current epoch and renewed within half the idle TTL
//! ([`Runtime::find_session`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use rand::RngCore;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::error::RequestError;
use crate::request::SseEvent;
use crate::runtime::Runtime;
use crate::server_requests::PendingTable;
use crate::state::memory::StreamLog;
use crate::state::redis::Record;
use crate::state::{self, Store};

/// `checked_epoch` of a session never checked against the invalidation channel's epoch.
const UNCHECKED: u64 = u64::MAX;

/// How long an ended session's id is remembered, so a load racing with its invalidation
/// cannot put it back into the cache.
const TOMBSTONE_MS: u64 = 10_000;

/// One MCP session.
#[derive(Debug)]
pub(crate) struct Session {
    /// Its id (32 hex digits).
    pub(crate) id: String,
    /// Subject email of the creator; any other subject is answered as if the session did
    /// not exist.
    pub(crate) subject: String,
    /// Virtual server id it was created on (`None` for `/mcp`); it is valid only there.
    pub(crate) scope: Option<String>,
    /// Sender of the standalone GET stream, if one is open. Dropping it ends that stream.
    /// A std mutex: held only to swap the value, never across an await.
    pub(crate) standalone: Mutex<Option<mpsc::Sender<SseEvent>>>,
    /// The caller that opened the standalone stream: whose view of the catalog decides which
    /// `list_changed` notifications it gets ([`crate::live`]).
    pub(crate) viewer: Mutex<Option<crate::auth::AuthContext>>,
    /// In-flight requests by the caller's raw JSON-RPC id, so `notifications/cancelled` and
    /// DELETE can stop them. A std mutex: held only to insert or remove.
    pub(crate) inflight: Mutex<HashMap<String, CancellationToken>>,
    /// Cancelled when the session ends: stops everything still running for it.
    pub(crate) ended: CancellationToken,
    /// Last use, in milliseconds since the table's epoch; read by the idle reaper.
    last_used_ms: AtomicU64,
    /// The event history of its resumable streams by stream id (in-memory store only).
    pub(crate) streams: Mutex<HashMap<String, Arc<StreamLog>>>,
    /// Redis store: the invalidation epoch in which the record was last found in Redis
    /// ([`UNCHECKED`]: never).
    checked_epoch: AtomicU64,
    /// Redis store: when its idle TTL was last renewed in Redis, in ms since the table's epoch.
    refreshed_ms: AtomicU64,
    /// The client capabilities declared at `initialize`, as the bits of
    /// [`crate::server_requests`] (`SAMPLING`, `ELICITATION_FORM`, ...): which upstream requests
    /// are relayed to this session's client.
    pub(crate) caps: AtomicU8,
    /// The log level the client set with `logging/setLevel` ([`log_level`] numbering; 0:
    /// none set, every message passes): upstream `notifications/message` below it are not
    /// relayed to this client.
    pub(crate) log_level: AtomicU8,
    /// Source of the ids the runtime gives the upstream requests it relays to this client.
    pub(crate) next_server_request: AtomicU64,
    /// Upstream requests relayed to this client and not yet answered, by the runtime's id. A
    /// std mutex: held only to insert, find or remove.
    pending: Mutex<PendingTable>,
    /// A request of the sessionless era (MCP 2026-07-28) runs in a session of its own that is
    /// in no table ([`Sessions::sessionless`]): nothing of it outlives the request, its
    /// streams are never stored for resumption (that revision has none).
    pub(crate) sessionless: bool,
    /// Set on the session of a `subscriptions/listen` stream ([`crate::listen`]): what it
    /// opted in to and the id its messages carry.
    pub(crate) listen: std::sync::OnceLock<crate::listen::Opted>,
}

impl Session {
    /// A notification for this session's stream: `params` (an object) as given, tagged with
    /// the listen request's id on a listen stream ([`crate::listen`]).
    pub(crate) fn notification_body(&self, method: &str, params: serde_json::Value) -> String {
        if let Some(opted) = self.listen.get() {
            return opted.notification_body(method, params);
        }
        crate::jsonrpc::notification_body(method, &params)
    }

    /// Whether this session's stream takes `kind`'s `list_changed`: every GET stream does, a
    /// listen stream only when it opted in.
    pub(crate) fn wants(&self, kind: crate::live::ListKind) -> bool {
        self.listen.get().is_none_or(|o| o.wants(kind))
    }

    /// The open standalone stream and the caller that opened it, if there is one.
    pub(crate) fn notification_stream(
        &self,
    ) -> Option<(mpsc::Sender<SseEvent>, crate::auth::AuthContext)> {
        let tx = self
            .standalone
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
            .filter(|tx| !tx.is_closed())?;
        let auth = self
            .viewer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()?;
        Some((tx, auth))
    }

    /// The table of relayed upstream requests awaiting the client's answer
    /// ([`crate::server_requests`]).
    pub(crate) fn pending_table(&self) -> std::sync::MutexGuard<'_, PendingTable> {
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether a call of the client with raw request id `key` is in flight here.
    pub(crate) fn has_call(&self, key: &str) -> bool {
        self.inflight
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains_key(key)
    }

    /// Whether the session has work under way: an in-flight call or an open GET stream.
    fn busy(&self) -> bool {
        let calls = !self
            .inflight
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_empty();
        let stream = self
            .standalone
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .is_some_and(|tx| !tx.is_closed());
        calls || stream
    }
}

/// The sessions by id, and how many each subject holds (kept together under one lock, so a
/// count is never out of step with the sessions).
#[derive(Debug, Default)]
struct Table {
    by_id: HashMap<String, Arc<Session>>,
    per_subject: HashMap<String, usize>,
    /// Ids ended recently (Redis store), with when, in ms since the table's epoch.
    tombstones: HashMap<String, u64>,
}

impl Table {
    fn insert(&mut self, id: String, session: Arc<Session>) {
        *self.per_subject.entry(session.subject.clone()).or_default() += 1;
        self.by_id.insert(id, session);
    }

    fn remove(&mut self, id: &str) -> Option<Arc<Session>> {
        let session = self.by_id.remove(id)?;
        if let Some(n) = self.per_subject.get_mut(&session.subject) {
            *n -= 1;
            if *n == 0 {
                self.per_subject.remove(&session.subject);
            }
        }
        Some(session)
    }
}

/// The session table.
#[derive(Debug)]
pub(crate) struct Sessions {
    /// Read-mostly: every request looks its session up, only initialize, DELETE and the
    /// reaper write.
    map: RwLock<Table>,
    /// Most sessions one subject may hold at once.
    per_subject_limit: usize,
    /// Epoch of `last_used_ms`.
    epoch: Instant,
    /// Parent of the `ended` token of every sessionless request's session: cancelled by
    /// [`Sessions::cancel_calls`] at shutdown, as the tabled sessions' calls are.
    sessionless_ended: CancellationToken,
    /// The open `subscriptions/listen` streams' sessions ([`Sessions::listener`]), by id.
    listeners: Mutex<HashMap<String, std::sync::Weak<Session>>>,
    /// Source of the listen streams' session ids.
    next_listener: AtomicU64,
}

/// `initialize` of a subject that already holds the most sessions allowed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct SubjectLimitReached {
    /// The limit.
    pub(crate) limit: usize,
}

/// What the local table holds for an id.
#[derive(Debug)]
pub(crate) enum Local {
    /// The caller's session.
    Hit(Arc<Session>),
    /// Another subject's or another scope's.
    Mismatch,
    /// Nothing.
    Absent,
}

/// Why a session lookup failed (the table's own lookup, for its tests).
#[cfg(test)]
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Lookup {
    /// No `Mcp-Session-Id` header.
    Missing,
    /// Unknown, ended, another subject's, or another scope's.
    NotFound,
}

impl Sessions {
    /// An empty table in which each subject may hold at most `per_subject_limit` sessions
    /// (at least 1).
    pub(crate) fn new(per_subject_limit: usize) -> Self {
        Self {
            map: RwLock::default(),
            per_subject_limit: per_subject_limit.max(1),
            epoch: Instant::now(),
            sessionless_ended: CancellationToken::new(),
            listeners: Mutex::default(),
            next_listener: AtomicU64::new(1),
        }
    }

    /// Creates a session and returns its id: 128 random bits from the OS-seeded CSPRNG,
    /// hex-encoded (32 visible ASCII characters, as the spec requires of session ids).
    ///
    /// # Errors
    ///
    /// [`SubjectLimitReached`] when `subject` already holds the most sessions allowed.
    pub(crate) fn create(
        &self,
        subject: &str,
        scope: Option<&str>,
    ) -> Result<String, SubjectLimitReached> {
        let id = new_session_id();
        let session = self.session(&id, subject, scope, UNCHECKED);
        let mut table = self.write();
        if table.per_subject.get(subject).copied().unwrap_or(0) >= self.per_subject_limit {
            return Err(SubjectLimitReached {
                limit: self.per_subject_limit,
            });
        }
        table.insert(id.clone(), session);
        Ok(id)
    }

    /// The session one request of the sessionless era (MCP 2026-07-28) runs in: bound to its
    /// caller's subject and scope, in no table (nobody can name it: a client response or a
    /// `notifications/cancelled` cannot reach it), declaring no client capability (an
    /// upstream's sampling, elicitation or roots request during the call is refused to the
    /// upstream: nobody could answer it), gone with the request.
    pub(crate) fn sessionless(&self, subject: &str, scope: Option<&str>) -> Arc<Session> {
        self.build(
            "",
            subject,
            scope,
            UNCHECKED,
            Some(self.sessionless_ended.child_token()),
        )
    }

    /// The session of one `subscriptions/listen` stream ([`crate::listen`]): sessionless (in
    /// no table, nobody can name it, no client capability, never stored with Redis), with an
    /// id of its own (`listen-<n>`, which keys its resource subscriptions), listed by
    /// [`Sessions::listeners`] until [`Sessions::end_listener`].
    pub(crate) fn listener(&self, subject: &str, scope: Option<&str>) -> Arc<Session> {
        let n = self.next_listener.fetch_add(1, Ordering::Relaxed);
        let session = self.build(
            &format!("listen-{n}"),
            subject,
            scope,
            UNCHECKED,
            Some(self.sessionless_ended.child_token()),
        );
        self.listeners
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(session.id.clone(), Arc::downgrade(&session));
        session
    }

    /// Forgets listen stream `id` (its stream ended).
    pub(crate) fn end_listener(&self, id: &str) {
        self.listeners
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(id);
    }

    /// The sessions of the open `subscriptions/listen` streams, at this moment.
    pub(crate) fn listeners(&self) -> Vec<Arc<Session>> {
        self.listeners
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .filter_map(std::sync::Weak::upgrade)
            .collect()
    }

    fn session(&self, id: &str, subject: &str, scope: Option<&str>, epoch: u64) -> Arc<Session> {
        self.build(id, subject, scope, epoch, None)
    }

    fn build(
        &self,
        id: &str,
        subject: &str,
        scope: Option<&str>,
        epoch: u64,
        sessionless: Option<CancellationToken>,
    ) -> Arc<Session> {
        let now = self.now_ms();
        Arc::new(Session {
            sessionless: sessionless.is_some(),
            id: id.to_owned(),
            subject: subject.to_owned(),
            scope: scope.map(str::to_owned),
            standalone: Mutex::new(None),
            viewer: Mutex::new(None),
            inflight: Mutex::new(HashMap::new()),
            ended: sessionless.unwrap_or_default(),
            last_used_ms: AtomicU64::new(now),
            streams: Mutex::new(HashMap::new()),
            checked_epoch: AtomicU64::new(epoch),
            refreshed_ms: AtomicU64::new(now),
            caps: AtomicU8::new(0),
            log_level: AtomicU8::new(0),
            next_server_request: AtomicU64::new(1),
            pending: Mutex::new(PendingTable::new()),
            listen: std::sync::OnceLock::new(),
        })
    }

    /// Caches a session whose record is in Redis (just created, or loaded), checked in
    /// `epoch`; returns the cached one if another request cached it first. Not counted against
    /// the local per-subject limit: Redis counts it. `None` when the id ended moments ago.
    fn insert_shared(&self, id: &str, record: &Record, epoch: Option<u64>) -> Option<Arc<Session>> {
        let mut table = self.write();
        let now = self.now_ms();
        table
            .tombstones
            .retain(|_, at| now.saturating_sub(*at) < TOMBSTONE_MS);
        if table.tombstones.contains_key(id) {
            return None;
        }
        if let Some(s) = table.by_id.get(id) {
            return Some(Arc::clone(s));
        }
        let session = self.session(
            id,
            &record.subject,
            record.scope.as_deref(),
            epoch.unwrap_or(UNCHECKED),
        );
        session.caps.store(record.caps, Ordering::Relaxed);
        session.log_level.store(record.level, Ordering::Relaxed);
        table.insert(id.to_owned(), Arc::clone(&session));
        Some(session)
    }

    /// What the table holds for `id`, for `subject` in `scope`; a hit counts as a use.
    pub(crate) fn lookup(&self, id: &str, subject: &str, scope: Option<&str>) -> Local {
        let map = self
            .map
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match map.by_id.get(id) {
            Some(s) if s.subject == subject && s.scope.as_deref() == scope => {
                s.last_used_ms.store(self.now_ms(), Ordering::Relaxed);
                Local::Hit(Arc::clone(s))
            }
            Some(_) => Local::Mismatch,
            None => Local::Absent,
        }
    }

    /// Ends session `id` on this replica (DELETE, an invalidation from another replica, or
    /// its record found gone): drops it, closes its GET stream, cancels its calls. Remembers
    /// the id for a moment so a racing load cannot bring it back.
    pub(crate) fn end_local(&self, id: &str) {
        let session = {
            let mut table = self.write();
            let now = self.now_ms();
            table.tombstones.insert(id.to_owned(), now);
            table.remove(id)
        };
        if let Some(s) = session {
            s.ended.cancel();
            s.standalone
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take();
        }
    }

    /// Cancels call `rid` (the caller's raw JSON-RPC id) of session `id` if it runs here;
    /// returns whether it did.
    pub(crate) fn cancel_local(&self, id: &str, rid: &str) -> bool {
        let map = self
            .map
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let token = map.by_id.get(id).and_then(|s| {
            s.inflight
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .get(rid)
                .cloned()
        });
        token.map(|t| t.cancel()).is_some()
    }

    /// Another replica set session `id`'s log level: the cached copy follows.
    pub(crate) fn set_level_local(&self, id: &str, level: u8) {
        let map = self
            .map
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(s) = map.by_id.get(id) {
            s.log_level.store(level, Ordering::Relaxed);
        }
    }

    /// Another replica's notification (`body`, one JSON-RPC message) for session `id`'s
    /// standalone GET stream, held here: sent on it (stored in its history first). Dropped
    /// when the stream is gone or full, as a local one would be.
    pub(crate) fn deliver_local(&self, id: &str, body: &str) {
        let session = self
            .map
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .by_id
            .get(id)
            .cloned();
        let tx = session.and_then(|s| {
            s.standalone
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone()
        });
        if let Some(tx) = tx {
            let _ = tx.try_send(SseEvent::message(body.to_owned()));
        }
    }

    /// The sessions with work under way here (id, subject): their idle TTL in Redis is
    /// renewed by the heartbeat.
    pub(crate) fn busy(&self) -> Vec<(String, String)> {
        let map = self
            .map
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.by_id
            .iter()
            .filter(|(_, s)| s.busy())
            .map(|(id, s)| (id.clone(), s.subject.clone()))
            .collect()
    }

    /// Finds the caller's session.
    #[cfg(test)]
    pub(crate) fn get(
        &self,
        id: Option<&str>,
        subject: &str,
        scope: Option<&str>,
    ) -> Result<Arc<Session>, Lookup> {
        let id = id.ok_or(Lookup::Missing)?;
        let map = self
            .map
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match map.by_id.get(id) {
            Some(s) if s.subject == subject && s.scope.as_deref() == scope => {
                s.last_used_ms.store(self.now_ms(), Ordering::Relaxed);
                Ok(Arc::clone(s))
            }
            _ => Err(Lookup::NotFound),
        }
    }

    /// Ends the caller's session: removes it, closes its stream and cancels its calls.
    #[cfg(test)]
    pub(crate) fn remove(
        &self,
        id: Option<&str>,
        subject: &str,
        scope: Option<&str>,
    ) -> Result<(), Lookup> {
        let session = self.get(id, subject, scope)?;
        let id = id.ok_or(Lookup::Missing)?;
        self.write().remove(id);
        session.ended.cancel();
        session
            .standalone
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        Ok(())
    }

    pub(crate) fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Ends the sessions idle for longer than `ttl` (no request, no in-flight call, no open
    /// GET stream); returns how many. A reaped session then answers 404 like any unknown one.
    pub(crate) fn reap_idle(&self, ttl: Duration) -> usize {
        let now = self.now_ms();
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        let idle: Vec<(String, Arc<Session>)> = {
            let map = self
                .map
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            map.by_id
                .iter()
                .filter(|(_, s)| {
                    now.saturating_sub(s.last_used_ms.load(Ordering::Relaxed)) > ttl_ms && !s.busy()
                })
                .map(|(id, s)| (id.clone(), Arc::clone(s)))
                .collect()
        };
        let mut map = self.write();
        for (id, s) in &idle {
            map.remove(id);
            s.ended.cancel();
        }
        idle.len()
    }

    /// Cancels every in-flight call of every session (at shutdown, once the grace period is
    /// over); each call then answers its caller with an error and sends
    /// `notifications/cancelled` upstream. Sessions stay open. Also the calls of sessionless
    /// requests, and of any sessionless request still to come (the runtime is stopping).
    pub(crate) fn cancel_calls(&self) -> usize {
        self.sessionless_ended.cancel();
        let map = self
            .map
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut n = 0;
        for s in map.by_id.values() {
            for t in s
                .inflight
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .values()
            {
                t.cancel();
                n += 1;
            }
        }
        n
    }

    /// Ends every standalone GET stream (at shutdown, so connections can drain), and every
    /// listen stream, whose last message is then its request's result ([`crate::listen`]).
    pub(crate) fn close_streams(&self) {
        for s in self.listeners() {
            let tx = s
                .standalone
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take();
            if let (Some(tx), Some(opted)) = (tx, s.listen.get()) {
                let _ = tx.try_send(SseEvent::message(opted.final_result()));
            }
            s.ended.cancel();
        }
        let map = self
            .map
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for s in map.by_id.values() {
            s.standalone
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take();
        }
    }

    /// Every session of this replica, at this moment.
    pub(crate) fn all(&self) -> Vec<Arc<Session>> {
        self.map
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .by_id
            .values()
            .cloned()
            .collect()
    }

    /// Number of open sessions.
    pub(crate) fn len(&self) -> usize {
        self.map
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .by_id
            .len()
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Table> {
        self.map
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The number of an MCP log level (`logging/setLevel`, RFC 5424 severities, MCP 2025-06-18
/// and later, server utilities: logging): `debug` 1 up to `emergency` 8; `None` for any other
/// name.
pub(crate) fn log_level(name: &str) -> Option<u8> {
    const LEVELS: [&str; 8] = [
        "debug",
        "info",
        "notice",
        "warning",
        "error",
        "critical",
        "alert",
        "emergency",
    ];
    LEVELS
        .iter()
        .position(|l| *l == name)
        .and_then(|i| u8::try_from(i + 1).ok())
}

/// A new session id: 128 random bits from the OS-seeded CSPRNG, hex-encoded (32 visible
/// ASCII characters, as the spec requires of session ids).
fn new_session_id() -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Runtime {
    /// Creates a session for `subject` in `scope`, speaking protocol `version`, whose client
    /// declared capabilities `caps` (bits of [`crate::server_requests`]); returns its id.
    ///
    /// # Errors
    ///
    /// [`RequestError::TooManySessions`] when the subject holds the most sessions allowed
    /// (across every replica with Redis); [`RequestError::StateUnavailable`] when Redis does
    /// not answer.
    pub(crate) async fn create_session(
        &self,
        subject: &str,
        scope: Option<&str>,
        version: &str,
        caps: u8,
    ) -> Result<String, RequestError> {
        let limit = self.config.max_sessions_per_subject.max(1);
        let Store::Redis(r) = &self.store else {
            return self
                .sessions
                .create(subject, scope)
                .map_err(|e| RequestError::TooManySessions { limit: e.limit });
        };
        let id = new_session_id();
        let epoch = r.epoch();
        let ttl = self.config.session_idle_ttl;
        let record = Record {
            subject: subject.to_owned(),
            scope: scope.map(str::to_owned),
            caps,
            level: 0,
        };
        if !r.create_session(&id, &record, version, ttl, limit).await? {
            return Err(RequestError::TooManySessions { limit });
        }
        self.sessions.insert_shared(&id, &record, epoch);
        Ok(id)
    }

    /// The caller's session `id`: bound to `subject` and `scope`, else answered exactly like
    /// an unknown one.
    ///
    /// # Errors
    ///
    /// [`RequestError::MissingSessionId`] without an id, [`RequestError::UnknownSession`] for
    /// an unknown, ended, expired, another subject's or another scope's session,
    /// [`RequestError::StateUnavailable`] when Redis must be asked and does not answer.
    pub(crate) async fn find_session(
        &self,
        id: Option<&str>,
        subject: &str,
        scope: Option<&str>,
    ) -> Result<Arc<Session>, RequestError> {
        let id = id.ok_or(RequestError::MissingSessionId)?;
        let local = self.sessions.lookup(id, subject, scope);
        let r = match (&self.store, local) {
            (Store::Memory, Local::Hit(s)) => return Ok(s),
            (_, Local::Mismatch) | (Store::Memory, Local::Absent) => {
                return Err(RequestError::UnknownSession);
            }
            (Store::Redis(r), Local::Hit(s)) => {
                return self.check_cached(r, s).await;
            }
            (Store::Redis(r), Local::Absent) => r,
        };
        let epoch = r.epoch();
        let record = r.load_session(id).await?;
        let Some(record) =
            record.filter(|rec| rec.subject == subject && rec.scope.as_deref() == scope)
        else {
            return Err(RequestError::UnknownSession);
        };
        if r.touch_session(id, subject, self.config.session_idle_ttl)
            .await?
            .is_none()
        {
            return Err(RequestError::UnknownSession);
        }
        self.sessions
            .insert_shared(id, &record, epoch)
            .ok_or(RequestError::UnknownSession)
    }

    /// A cached session (Redis store) served as is while the invalidation channel is up, it
    /// was checked in the current epoch and renewed within half the idle TTL (so its record
    /// outlives the answer); renewed in the background past an eighth of the TTL. Otherwise
    /// checked (and renewed) in Redis first.
    async fn check_cached(
        &self,
        r: &Arc<state::redis::RedisStore>,
        s: Arc<Session>,
    ) -> Result<Arc<Session>, RequestError> {
        let ttl = self.config.session_idle_ttl;
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        let now = self.sessions.now_ms();
        let since = now.saturating_sub(s.refreshed_ms.load(Ordering::Relaxed));
        let epoch = r.epoch();
        let checked = epoch.is_some_and(|e| e == s.checked_epoch.load(Ordering::Acquire));
        if checked && since < ttl_ms / 2 {
            if since >= ttl_ms / 8 {
                s.refreshed_ms.store(now, Ordering::Relaxed);
                let (r, sessions, s) = (Arc::clone(r), Arc::clone(&self.sessions), Arc::clone(&s));
                tokio::spawn(async move {
                    match r.touch_session(&s.id, &s.subject, ttl).await {
                        Ok(None) => sessions.end_local(&s.id),
                        Ok(Some(level)) => s.log_level.store(level, Ordering::Relaxed),
                        Err(_) => {}
                    }
                });
            }
            return Ok(s);
        }
        // A level set elsewhere while this replica's channel was down is read here.
        if let Some(level) = r.touch_session(&s.id, &s.subject, ttl).await? {
            s.log_level.store(level, Ordering::Relaxed);
            s.refreshed_ms.store(now, Ordering::Relaxed);
            if let Some(e) = epoch {
                s.checked_epoch.store(e, Ordering::Release);
            }
            Ok(s)
        } else {
            self.sessions.end_local(&s.id);
            Err(RequestError::UnknownSession)
        }
    }

    /// Ends the caller's session everywhere: its record in Redis (every replica then drops it
    /// and cancels its calls), and here.
    ///
    /// # Errors
    ///
    /// As [`Runtime::find_session`].
    pub(crate) async fn end_session(
        &self,
        id: Option<&str>,
        subject: &str,
        scope: Option<&str>,
    ) -> Result<(), RequestError> {
        let session = self.find_session(id, subject, scope).await?;
        if let Store::Redis(r) = &self.store {
            r.delete_session(&session.id, subject).await?;
        }
        self.sessions.end_local(&session.id);
        Ok(())
    }

    /// Cancels call `rid` (raw JSON-RPC id) of `session` wherever it runs: here, else (Redis
    /// store) on the replica that runs it.
    ///
    /// # Errors
    ///
    /// [`RequestError::StateUnavailable`] when the cancellation cannot be published.
    pub(crate) async fn cancel_call(
        &self,
        session: &Session,
        rid: &str,
    ) -> Result<(), RequestError> {
        if self.sessions.cancel_local(&session.id, rid) {
            return Ok(());
        }
        if let Store::Redis(r) = &self.store {
            r.publish_cancel(&session.id, rid).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_levels_are_numbered_by_severity_and_nothing_else_is_one() {
        assert_eq!(log_level("debug"), Some(1));
        assert_eq!(log_level("warning"), Some(4));
        assert_eq!(log_level("emergency"), Some(8));
        for bad in ["", "Debug", "warn", "fatal", "debug "] {
            assert_eq!(log_level(bad), None, "{bad}");
        }
    }

    #[test]
    fn sessions_are_bound_to_subject_and_scope() {
        let s = Sessions::new(16);
        let id = s.create("alice", None).unwrap();
        assert_eq!(id.len(), 32);
        assert!(s.get(Some(&id), "alice", None).is_ok());
        assert_eq!(s.get(Some(&id), "bob", None).unwrap_err(), Lookup::NotFound);
        assert_eq!(
            s.get(Some(&id), "alice", Some("x")).unwrap_err(),
            Lookup::NotFound
        );
        assert_eq!(s.get(None, "alice", None).unwrap_err(), Lookup::Missing);
        assert_eq!(s.remove(Some(&id), "bob", None), Err(Lookup::NotFound));
        assert_eq!(s.remove(Some(&id), "alice", None), Ok(()));
        assert_eq!(
            s.get(Some(&id), "alice", None).unwrap_err(),
            Lookup::NotFound
        );
        assert_ne!(s.create("a", None), s.create("a", None));
    }

    #[test]
    fn each_subject_holds_at_most_the_limit_and_an_ended_session_frees_its_slot() {
        let s = Sessions::new(2);
        let a1 = s.create("alice", None).unwrap();
        let _a2 = s.create("alice", Some("x")).unwrap();
        assert_eq!(
            s.create("alice", None),
            Err(SubjectLimitReached { limit: 2 })
        );
        // Another subject is not affected.
        let b = s.create("bob", None).unwrap();
        assert_eq!(s.remove(Some(&a1), "alice", None), Ok(()));
        let _a3 = s.create("alice", None).unwrap();
        assert!(s.create("alice", None).is_err());
        // The reaper frees slots too.
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(s.reap_idle(Duration::ZERO), 3);
        assert!(s.get(Some(&b), "bob", None).is_err());
        s.create("alice", None).unwrap();
        s.create("alice", None).unwrap();
        assert_eq!(s.len(), 2);
    }
}
