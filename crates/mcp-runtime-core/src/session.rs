//! MCP sessions: minted by `initialize`, bound to the caller's subject and scope, ended by
//! DELETE or the idle reaper. Each subject may hold at most a configured number of sessions at
//! once, so one subject cannot fill the table (or what each session holds) for everyone.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use rand::RngCore;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::request::SseEvent;

/// One MCP session.
#[derive(Debug)]
pub(crate) struct Session {
    /// Subject email of the creator; any other subject is answered as if the session did
    /// not exist.
    pub(crate) subject: String,
    /// Virtual server id it was created on (`None` for `/mcp`); it is valid only there.
    pub(crate) scope: Option<String>,
    /// Sender of the standalone GET stream, if one is open. Dropping it ends that stream.
    /// A std mutex: held only to swap the value, never across an await.
    pub(crate) standalone: Mutex<Option<mpsc::Sender<SseEvent>>>,
    /// In-flight requests by the caller's raw JSON-RPC id, so `notifications/cancelled` and
    /// DELETE can stop them. A std mutex: held only to insert or remove.
    pub(crate) inflight: Mutex<HashMap<String, CancellationToken>>,
    /// Cancelled when the session ends: stops everything still running for it.
    pub(crate) ended: CancellationToken,
    /// Last use, in milliseconds since the table's epoch; read by the idle reaper.
    last_used_ms: AtomicU64,
}

impl Session {
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
}

/// `initialize` of a subject that already holds the most sessions allowed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct SubjectLimitReached {
    /// The limit.
    pub(crate) limit: usize,
}

/// Why a session lookup failed.
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
        let mut bytes = [0u8; 16];
        rand::rng().fill_bytes(&mut bytes);
        let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let session = Arc::new(Session {
            subject: subject.to_owned(),
            scope: scope.map(str::to_owned),
            standalone: Mutex::new(None),
            inflight: Mutex::new(HashMap::new()),
            ended: CancellationToken::new(),
            last_used_ms: AtomicU64::new(self.now_ms()),
        });
        let mut table = self.write();
        if table.per_subject.get(subject).copied().unwrap_or(0) >= self.per_subject_limit {
            return Err(SubjectLimitReached {
                limit: self.per_subject_limit,
            });
        }
        table.insert(id.clone(), session);
        Ok(id)
    }

    /// Finds the caller's session.
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

    fn now_ms(&self) -> u64 {
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
    /// `notifications/cancelled` upstream. Sessions stay open.
    pub(crate) fn cancel_calls(&self) -> usize {
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

    /// Ends every standalone GET stream (at shutdown, so connections can drain).
    pub(crate) fn close_streams(&self) {
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

#[cfg(test)]
mod tests {
    use super::*;

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
