//! The caller cache: allowed ResolveCaller answers per credential, keyed by the SHA-256 of the
//! `Authorization` value, never holding a denial.
//!
//! An entry lives until the earliest of the token's expiry, the core's `cache_max_age_ms`, the
//! runtime's `--auth-cache-max-age-ms`, and a WatchPolicy revocation that matches it (its
//! token's SHA-256, its subject, or all). While the watch stream is not open nothing is cached
//! and nothing is served from the cache, so a revocation can never be missed; an answer made
//! in an older policy generation than the one watched is not cached. At most `max_entries`
//! entries: a full cache first drops what expired, then the entry closest to its expiry.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mcp_runtime_core::AuthContext;

use super::Denial;
use sha2::{Digest, Sha256};

/// The key of one credential: SHA-256 of the whole `Authorization` value.
pub type CacheKey = [u8; 32];

/// The cache's own bounds (`--auth-cache-max-entries`, `--auth-cache-max-age-ms`).
#[derive(Debug, Clone, Copy)]
pub struct CacheLimits {
    /// Most entries at once; 0 disables the cache.
    pub max_entries: usize,
    /// Longest any entry lives.
    pub max_age: Duration,
}

/// A credential as the cache sees it: the key and the token's SHA-256 (what a token
/// revocation names).
#[derive(Debug, Clone)]
pub struct Credential {
    /// SHA-256 of the `Authorization` value.
    pub key: CacheKey,
    /// Lower-case hex SHA-256 of the token (the value after `Bearer `, or the whole value
    /// without that prefix).
    pub token_sha256: String,
}

/// The cache key of one `Authorization` header value (one SHA-256: what a lookup costs).
#[must_use]
pub fn key_of(authorization: &str) -> CacheKey {
    Sha256::digest(authorization.as_bytes()).into()
}

impl Credential {
    /// The hashes of one `Authorization` header value.
    #[must_use]
    pub fn of(authorization: &str) -> Self {
        let token = strip_bearer(authorization);
        Self {
            key: key_of(authorization),
            token_sha256: hex(&Sha256::digest(token.as_bytes())),
        }
    }
}

/// The token of a `Bearer` header value (scheme case-insensitive), else the value itself.
fn strip_bearer(authorization: &str) -> &str {
    let v = authorization.trim();
    match v.split_once(' ') {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
        _ => v,
    }
}

/// Lower-case hex of `bytes`.
#[must_use]
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// What a revocation names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revocation {
    /// One token, by the lower-case hex SHA-256 of the token.
    TokenSha256(String),
    /// Every token of one subject (AuthContext `subject_email`).
    Subject(String),
    /// Every cached caller.
    All,
}

#[derive(Debug)]
struct Entry {
    caller: Arc<AuthContext>,
    token_sha256: String,
    expires: Instant,
}

#[derive(Debug, Default)]
struct State {
    entries: HashMap<CacheKey, Entry>,
    /// The watch stream is open (a snapshot arrived and it has not ended since).
    watching: bool,
    /// The newest policy generation seen on the watch stream.
    generation: u64,
}

/// The cache of allowed callers. Cheap to share behind an `Arc`; one short lock per lookup.
#[derive(Debug)]
pub struct CallerCache {
    limits: CacheLimits,
    state: Mutex<State>,
}

impl CallerCache {
    /// An empty cache, not watching (caching nothing until [`CallerCache::watch_started`]).
    #[must_use]
    pub fn new(limits: CacheLimits) -> Self {
        Self {
            limits,
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The cached caller of `key`, if one is valid at `now`; an expired entry is dropped.
    #[must_use]
    pub fn get(&self, key: &CacheKey, now: Instant) -> Option<Arc<AuthContext>> {
        let mut st = self.state();
        if !st.watching {
            return None;
        }
        match st.entries.get(key) {
            Some(e) if e.expires > now => Some(Arc::clone(&e.caller)),
            Some(_) => {
                st.entries.remove(key);
                None
            }
            None => None,
        }
    }

    /// Caches an allowed answer made in `generation`, for at most `core_max_age_ms` (0: not
    /// at all), the cache's max age and until the token's expiry (`token_expires_at_unix_s`,
    /// 0 = none). Returns whether it was cached: not while the watch stream is down, not for
    /// an answer older than the watched generation, not for an expired token.
    pub fn insert(
        &self,
        credential: &Credential,
        caller: Arc<AuthContext>,
        generation: u64,
        core_max_age_ms: u32,
        now: Instant,
    ) -> bool {
        if self.limits.max_entries == 0 || core_max_age_ms == 0 {
            return false;
        }
        let mut ttl = self
            .limits
            .max_age
            .min(Duration::from_millis(u64::from(core_max_age_ms)));
        if caller.token_expires_at_unix_s > 0 {
            let left =
                Duration::from_secs(u64::try_from(caller.token_expires_at_unix_s).unwrap_or(0))
                    .saturating_sub(
                        SystemTime::now()
                            .duration_since(UNIX_EPOCH)
                            .unwrap_or_default(),
                    );
            ttl = ttl.min(left);
        }
        if ttl.is_zero() {
            return false;
        }
        let mut st = self.state();
        if !st.watching || generation < st.generation {
            return false;
        }
        if st.entries.len() >= self.limits.max_entries && !st.entries.contains_key(&credential.key)
        {
            st.entries.retain(|_, e| e.expires > now);
            if st.entries.len() >= self.limits.max_entries {
                let soonest = st
                    .entries
                    .iter()
                    .min_by_key(|(_, e)| e.expires)
                    .map(|(k, _)| *k);
                if let Some(k) = soonest {
                    st.entries.remove(&k);
                }
            }
        }
        st.entries.insert(
            credential.key,
            Entry {
                caller,
                token_sha256: credential.token_sha256.clone(),
                expires: now + ttl,
            },
        );
        true
    }

    /// The watch stream opened (or sent a new snapshot) at `generation`: caching starts from
    /// an empty cache, since what was cached before may have been revoked meanwhile. The
    /// generation is the snapshot's, also when it is lower than the one seen before (a
    /// restarted core counts from the start again).
    pub fn watch_started(&self, generation: u64) {
        let mut st = self.state();
        st.entries.clear();
        st.watching = true;
        st.generation = generation;
    }

    /// The watch stream ended: everything cached is dropped and nothing is cached until it
    /// opens again.
    pub fn watch_ended(&self) {
        let mut st = self.state();
        st.entries.clear();
        st.watching = false;
    }

    /// Applies a revocation seen at `generation`; returns how many entries it dropped.
    pub fn revoke(&self, revocation: &Revocation, generation: u64) -> usize {
        let mut st = self.state();
        st.generation = st.generation.max(generation);
        let before = st.entries.len();
        match revocation {
            Revocation::All => st.entries.clear(),
            Revocation::TokenSha256(sha) => {
                let sha = sha.to_ascii_lowercase();
                st.entries.retain(|_, e| e.token_sha256 != sha);
            }
            Revocation::Subject(subject) => {
                st.entries.retain(|_, e| &e.caller.subject_email != subject);
            }
        }
        before - st.entries.len()
    }

    /// The newest policy generation seen on the watch stream (0 before the first snapshot).
    #[must_use]
    pub fn generation(&self) -> u64 {
        self.state().generation
    }

    /// Entries held now (expired ones not yet dropped included).
    #[must_use]
    pub fn len(&self) -> usize {
        self.state().entries.len()
    }

    /// Whether the cache holds nothing.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The denial cache's bounds (`--auth-deny-cache-ttl-ms`, `--auth-deny-cache-max-entries`).
#[derive(Debug, Clone, Copy)]
pub struct DenialLimits {
    /// How long a refused credential is answered from the cache; zero disables the cache.
    pub ttl: Duration,
    /// Most entries at once; 0 disables the cache. A full cache drops its oldest entry.
    pub max_entries: usize,
}

/// The key of one refused credential in one scope: SHA-256 of the virtual server id's length
/// (8 bytes, little endian), the id and the whole `Authorization` value. Never the token.
#[must_use]
pub fn denial_key(authorization: &str, server_id: &str) -> CacheKey {
    let mut h = Sha256::new();
    h.update((server_id.len() as u64).to_le_bytes());
    h.update(server_id.as_bytes());
    h.update(authorization.as_bytes());
    h.finalize().into()
}

#[derive(Debug, Default)]
struct DenialState {
    entries: HashMap<CacheKey, (Arc<Denial>, Instant)>,
    /// Keys in insertion order with their expiry (all entries live the same TTL, so this is
    /// also expiry order); an item whose key was since replaced or dropped is skipped.
    order: VecDeque<(CacheKey, Instant)>,
    /// The newest policy generation seen on the watch stream.
    generation: u64,
}

/// Credentials the core refused, answered from here (the same 401 or 403, the same challenge)
/// for a short TTL, so that a client repeating a bad credential does not reach the core with
/// every request. Bounded: at most `max_entries`, the oldest dropped first, in O(1) per insert.
/// Every watch event (snapshot, revocation, unknown change) and the watch stream ending clear
/// it, as they clear the allowed callers' cache.
#[derive(Debug)]
pub struct DenialCache {
    limits: DenialLimits,
    state: Mutex<DenialState>,
}

impl DenialCache {
    /// An empty cache.
    #[must_use]
    pub fn new(limits: DenialLimits) -> Self {
        Self {
            limits,
            state: Mutex::new(DenialState::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, DenialState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn enabled(&self) -> bool {
        self.limits.max_entries > 0 && !self.limits.ttl.is_zero()
    }

    /// The cached denial of `key`, if one is valid at `now`.
    #[must_use]
    pub fn get(&self, key: &CacheKey, now: Instant) -> Option<Arc<Denial>> {
        if !self.enabled() {
            return None;
        }
        let mut st = self.state();
        match st.entries.get(key) {
            Some((d, expires)) if *expires > now => Some(Arc::clone(d)),
            Some(_) => {
                st.entries.remove(key);
                None
            }
            None => None,
        }
    }

    /// Caches a denial made in `generation` for the TTL from `now`; returns whether it was
    /// cached (not when disabled, not for an answer older than the watched generation).
    pub fn insert(
        &self,
        key: CacheKey,
        denial: Arc<Denial>,
        generation: u64,
        now: Instant,
    ) -> bool {
        if !self.enabled() {
            return false;
        }
        let mut st = self.state();
        if generation < st.generation {
            return false;
        }
        // Drop what expired or was replaced from the front, then the oldest while full.
        while let Some(&(k, expires)) = st.order.front() {
            let live = st.entries.get(&k).is_some_and(|(_, e)| *e == expires);
            let full =
                st.entries.len() >= self.limits.max_entries && !st.entries.contains_key(&key);
            if !live || expires <= now || full {
                st.order.pop_front();
                if live {
                    st.entries.remove(&k);
                }
            } else {
                break;
            }
        }
        if st.order.len() >= self.limits.max_entries.saturating_mul(2) {
            // Keys replaced before they expired: keep only the items of live entries.
            let DenialState { entries, order, .. } = &mut *st;
            order.retain(|(k, e)| entries.get(k).is_some_and(|(_, x)| x == e));
        }
        let expires = now + self.limits.ttl;
        st.entries.insert(key, (denial, expires));
        st.order.push_back((key, expires));
        true
    }

    /// Drops everything (a watch event, or the watch stream ended) and raises the generation
    /// to `generation` (`None`: keep it; a snapshot sets it, also lower, as a restarted core
    /// counts from the start again).
    pub fn clear(&self, generation: Option<u64>, snapshot: bool) {
        let mut st = self.state();
        st.entries.clear();
        st.order.clear();
        if let Some(g) = generation {
            st.generation = if snapshot { g } else { st.generation.max(g) };
        }
    }

    /// Entries held now (expired ones not yet dropped included).
    #[must_use]
    pub fn len(&self) -> usize {
        self.state().entries.len()
    }

    /// Whether the cache holds nothing.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(max_entries: usize, max_age_ms: u64) -> CallerCache {
        let c = CallerCache::new(CacheLimits {
            max_entries,
            max_age: Duration::from_millis(max_age_ms),
        });
        c.watch_started(1);
        c
    }

    fn caller(subject: &str, exp: i64) -> Arc<AuthContext> {
        Arc::new(AuthContext {
            subject_email: subject.to_owned(),
            token_expires_at_unix_s: exp,
            ..AuthContext::anonymous()
        })
    }

    fn now_s() -> i64 {
        i64::try_from(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_secs(),
        )
        .unwrap()
    }

    #[test]
    fn keys_hash_the_header_and_the_token() {
        let c = Credential::of("Bearer abc");
        // sha256("abc")
        assert_eq!(
            c.token_sha256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(Credential::of("bearer  abc").token_sha256, c.token_sha256);
        assert_ne!(Credential::of("bearer abc").key, c.key);
    }

    #[test]
    fn an_entry_ends_at_the_smallest_bound() {
        let now = Instant::now();
        let c = cache(10, 60_000);
        let a = Credential::of("Bearer a");
        // The core's max age (1 s) is below the cache's (60 s).
        assert!(c.insert(&a, caller("a@x", 0), 1, 1000, now));
        assert!(c.get(&a.key, now + Duration::from_millis(999)).is_some());
        assert!(c.get(&a.key, now + Duration::from_millis(1000)).is_none());
        assert!(c.is_empty(), "an expired entry is dropped when seen");
        // The cache's max age (60 s) is below the core's (100 s).
        assert!(c.insert(&a, caller("a@x", 0), 1, 100_000, now));
        assert!(c.get(&a.key, now + Duration::from_secs(59)).is_some());
        assert!(c.get(&a.key, now + Duration::from_secs(60)).is_none());
        // The token's expiry (about 2 s from now) is below both.
        let b = Credential::of("Bearer b");
        assert!(c.insert(&b, caller("b@x", now_s() + 2), 1, 100_000, now));
        assert!(c.get(&b.key, now + Duration::from_millis(500)).is_some());
        assert!(c.get(&b.key, now + Duration::from_secs(3)).is_none());
        // An expired token, or a core answer of max age 0, is not cached.
        assert!(!c.insert(&b, caller("b@x", now_s() - 1), 1, 100_000, now));
        assert!(!c.insert(&b, caller("b@x", 0), 1, 0, now));
    }

    #[test]
    fn at_most_max_entries() {
        let now = Instant::now();
        let c = cache(2, 60_000);
        let creds: Vec<_> = (0..3)
            .map(|i| Credential::of(&format!("Bearer {i}")))
            .collect();
        assert!(c.insert(&creds[0], caller("0", 0), 1, 1000, now));
        assert!(c.insert(&creds[1], caller("1", 0), 1, 2000, now));
        assert!(c.insert(&creds[2], caller("2", 0), 1, 3000, now));
        assert_eq!(c.len(), 2);
        assert!(
            c.get(&creds[0].key, now).is_none(),
            "closest to expiry dropped"
        );
        assert!(c.get(&creds[1].key, now).is_some());
        assert!(c.get(&creds[2].key, now).is_some());
        let off = cache(0, 60_000);
        assert!(!off.insert(&creds[0], caller("0", 0), 1, 1000, now));
    }

    #[test]
    fn nothing_is_cached_while_not_watching_or_from_an_older_generation() {
        let now = Instant::now();
        let c = CallerCache::new(CacheLimits {
            max_entries: 10,
            max_age: Duration::from_secs(60),
        });
        let a = Credential::of("Bearer a");
        assert!(
            !c.insert(&a, caller("a@x", 0), 0, 1000, now),
            "not watching"
        );
        c.watch_started(5);
        assert!(
            !c.insert(&a, caller("a@x", 0), 4, 1000, now),
            "older generation"
        );
        assert!(c.insert(&a, caller("a@x", 0), 5, 1000, now));
        assert!(c.get(&a.key, now).is_some());
        c.watch_ended();
        assert!(c.get(&a.key, now).is_none());
        assert!(!c.insert(&a, caller("a@x", 0), 5, 1000, now));
        c.watch_started(5);
        assert!(c.get(&a.key, now).is_none(), "a new stream starts empty");
        // A revocation raises the generation: answers made before it are not cached.
        c.revoke(&Revocation::Subject("z@x".into()), 6);
        assert!(!c.insert(&a, caller("a@x", 0), 5, 1000, now));
        assert!(c.insert(&a, caller("a@x", 0), 6, 1000, now));
        // A restarted core counts generations from the start again.
        c.watch_ended();
        c.watch_started(1);
        assert!(c.insert(&a, caller("a@x", 0), 1, 1000, now));
    }

    #[test]
    fn revocations_drop_what_they_name() {
        let now = Instant::now();
        let c = cache(10, 60_000);
        let (a1, a2, b) = (
            Credential::of("Bearer a1"),
            Credential::of("Bearer a2"),
            Credential::of("Bearer b"),
        );
        for (cred, who) in [(&a1, "a@x"), (&a2, "a@x"), (&b, "b@x")] {
            assert!(c.insert(cred, caller(who, 0), 1, 1000, now));
        }
        assert_eq!(
            c.revoke(&Revocation::TokenSha256(a1.token_sha256.to_uppercase()), 2),
            1
        );
        assert!(c.get(&a1.key, now).is_none());
        assert!(c.get(&a2.key, now).is_some());
        assert_eq!(c.revoke(&Revocation::Subject("a@x".into()), 3), 1);
        assert!(c.get(&a2.key, now).is_none());
        assert!(c.get(&b.key, now).is_some());
        assert_eq!(c.revoke(&Revocation::All, 4), 1);
        assert!(c.is_empty());
    }

    fn denial(reason: &str) -> Arc<Denial> {
        Arc::new(Denial {
            http_status: 401,
            www_authenticate: String::new(),
            reason: reason.to_owned(),
        })
    }

    fn denials(max_entries: usize, ttl_ms: u64) -> DenialCache {
        DenialCache::new(DenialLimits {
            ttl: Duration::from_millis(ttl_ms),
            max_entries,
        })
    }

    #[test]
    fn a_denial_key_hashes_credential_and_scope_never_holding_the_token() {
        let k = denial_key("Bearer secret-token", "");
        assert_ne!(k, denial_key("Bearer secret-token", "echo-only"));
        assert_ne!(k, denial_key("Bearer other", ""));
        // The scope's length is part of the key: no two (scope, header) pairs run together.
        assert_ne!(denial_key("bc", "a"), denial_key("c", "ab"));
        assert_eq!(k, denial_key("Bearer secret-token", ""));
    }

    #[test]
    fn a_denial_is_served_for_the_ttl_only() {
        let now = Instant::now();
        let c = denials(10, 5000);
        let k = denial_key("Bearer bad", "");
        assert!(c.get(&k, now).is_none());
        assert!(c.insert(k, denial("Unauthorized: bad"), 1, now));
        assert_eq!(
            c.get(&k, now + Duration::from_millis(4999)).unwrap().reason,
            "Unauthorized: bad"
        );
        assert!(c.get(&k, now + Duration::from_millis(5000)).is_none());
        assert!(c.is_empty(), "an expired entry is dropped when seen");
        // Disabled by either bound at zero.
        assert!(!denials(0, 5000).insert(k, denial("x"), 1, now));
        assert!(!denials(10, 0).insert(k, denial("x"), 1, now));
    }

    #[test]
    fn a_full_denial_cache_drops_its_oldest_entry() {
        let now = Instant::now();
        let c = denials(3, 60_000);
        let keys: Vec<_> = (0..5)
            .map(|i| denial_key(&format!("Bearer {i}"), ""))
            .collect();
        for (i, k) in keys.iter().enumerate() {
            let at = now + Duration::from_millis(u64::try_from(i).unwrap());
            assert!(c.insert(*k, denial(&i.to_string()), 1, at));
            assert!(c.len() <= 3);
        }
        assert!(c.get(&keys[0], now).is_none());
        assert!(c.get(&keys[1], now).is_none());
        for k in &keys[2..] {
            assert!(c.get(k, now).is_some());
        }
        // Re-inserting a key replaces it without growing the cache past its bound.
        for _ in 0..10 {
            assert!(c.insert(keys[4], denial("again"), 1, now));
        }
        assert_eq!(c.len(), 3);
        assert_eq!(c.get(&keys[4], now).unwrap().reason, "again");
        // Many distinct keys (a flood of garbage tokens) never hold more than the bound.
        let big = denials(100, 60_000);
        for i in 0..10_000 {
            big.insert(denial_key(&format!("Bearer g{i}"), ""), denial("g"), 1, now);
        }
        assert_eq!(big.len(), 100);
        assert!(big.state().order.len() <= 101);
    }

    #[test]
    fn a_watch_event_clears_the_denials_and_older_answers_are_not_cached() {
        let now = Instant::now();
        let c = denials(10, 60_000);
        let k = denial_key("Bearer bad", "");
        assert!(c.insert(k, denial("x"), 1, now));
        c.clear(Some(3), false);
        assert!(c.get(&k, now).is_none());
        assert!(
            !c.insert(k, denial("x"), 2, now),
            "made before the revocation"
        );
        assert!(c.insert(k, denial("x"), 3, now));
        c.clear(None, false);
        assert!(c.is_empty());
        // A snapshot of a restarted core sets the generation back.
        c.clear(Some(1), true);
        assert!(c.insert(k, denial("x"), 1, now));
    }
}
