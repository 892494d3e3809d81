//! The state store: where what several runtime replicas must share lives, behind one interface
//! ([`Store`]) with two implementations.
//!
//! - [`Store::Memory`] (the default, `--state-url` not given): one process. The session table
//!   (`session.rs`) is the whole truth, the SSE event history of each stream lives in its
//!   session ([`memory::StreamLog`]), cancellation is local. Nothing on the hot path costs
//!   more than it did before the store existed.
//! - [`Store::Redis`] (`--state-url redis://HOST:PORT` or `unix:///PATH`): several replicas on
//!   one Redis ([`redis::RedisStore`]). The local session table becomes a per-replica cache of
//!   the shared session record; event history is a Redis stream per (session, stream);
//!   cancellation and session invalidation travel on pub/sub channels. The keys, their TTLs
//!   and what happens when each part fails: `docs/deployment.md`.
//!
//! An enum rather than a trait object: the set is closed, the in-memory arm compiles to a
//! branch on the hot path, and no future is boxed.
//!
//! # Event ids
//!
//! Every SSE event the runtime sends on a resumable stream carries an id
//! `<stream>-<ms>-<seq>` ([`EventId`]): `stream` is 16 lowercase hex digits (64 random bits,
//! minted per stream), `ms` the append time in Unix milliseconds (never decreasing within a
//! stream), `seq` the event's number in its stream, from 1. An id is unique per session and
//! stream; it is looked up only under the session it is presented with, so another session's
//! id names nothing (MCP 2025-11-25, transports, resumability: "MUST NOT replay messages that
//! would have been delivered on a different stream").

pub(crate) mod memory;
pub(crate) mod redis;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use rand::RngCore;

/// Where shared state lives and how long event history is kept.
#[derive(Debug, Clone)]
pub struct StateConfig {
    /// `None`: in memory (one process). `Some(url)`: Redis at `redis://HOST:PORT[/DB]` or
    /// `unix:///PATH` (redis-rs URL forms).
    pub url: Option<String>,
    /// Longest wait for one Redis command (connecting included) before the request that needs
    /// it is answered 503 ([`crate::RequestError::StateUnavailable`]).
    pub command_timeout: Duration,
    /// How much SSE event history each stream keeps for resumption.
    pub retention: Retention,
}

impl Default for StateConfig {
    fn default() -> Self {
        Self {
            url: None,
            command_timeout: Duration::from_secs(1),
            retention: Retention::default(),
        }
    }
}

/// Bounded retention of one stream's SSE events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Most events kept per stream (the oldest go first). In Redis the trim is approximate
    /// (`MAXLEN ~`): a few more may stay.
    pub max_events: usize,
    /// Longest time an event is kept after it was appended; a stream's history goes
    /// altogether this long after its last event.
    pub max_age: Duration,
}

/// Default of [`Retention::max_events`].
pub const DEFAULT_RETENTION_EVENTS: usize = 1000;
/// Default of [`Retention::max_age`], in seconds.
pub const DEFAULT_RETENTION_AGE_S: u64 = 300;

impl Default for Retention {
    fn default() -> Self {
        Self {
            max_events: DEFAULT_RETENTION_EVENTS,
            max_age: Duration::from_secs(DEFAULT_RETENTION_AGE_S),
        }
    }
}

/// The store failed: Redis did not answer within the command timeout, refused a command, or
/// is unreachable. Answered 503 ([`crate::RequestError::StateUnavailable`]).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No answer within the command timeout.
    #[error("the state store did not answer within {0:?}")]
    Timeout(Duration),
    /// The Redis client's error (connection refused, broken, command error).
    #[error("state store: {0}")]
    Redis(#[from] ::redis::RedisError),
    /// A `--state-url` the Redis client cannot use.
    #[error("--state-url: {0}")]
    Url(String),
}

impl From<StoreError> for crate::RequestError {
    fn from(e: StoreError) -> Self {
        tracing::warn!(error = %e, "shared state store unavailable: request refused");
        Self::StateUnavailable
    }
}

/// The state store of one runtime (see the module doc).
#[derive(Debug, Clone)]
pub(crate) enum Store {
    /// One process: everything in the session table.
    Memory,
    /// Several replicas on one Redis.
    Redis(Arc<redis::RedisStore>),
}

/// What health reports of the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreHealth {
    /// `memory` or `redis`.
    pub kind: &'static str,
    /// Whether the store answers: always for memory; for Redis, whether the last heartbeat
    /// (every second) succeeded and the invalidation channel is subscribed.
    pub reachable: bool,
}

impl Store {
    /// The health of the store, without a round trip.
    pub(crate) fn health(&self) -> StoreHealth {
        match self {
            Self::Memory => StoreHealth {
                kind: "memory",
                reachable: true,
            },
            Self::Redis(r) => StoreHealth {
                kind: "redis",
                reachable: r.reachable(),
            },
        }
    }
}

/// The writer of one resumable stream's history: numbers its events (the `id` each carries)
/// and stores each before it is sent, so an event a client saw is always one a resumption
/// can find.
#[derive(Debug)]
pub(crate) struct StreamWriter {
    stream: String,
    seq: u64,
    last_ms: u64,
    retention: Retention,
    target: Target,
}

#[derive(Debug)]
enum Target {
    Memory(Arc<memory::StreamLog>),
    Redis {
        store: Arc<redis::RedisStore>,
        sid: String,
        /// The caller's raw JSON-RPC id (recorded with the stream, for the error a resumption
        /// answers when the replica running the call stopped).
        rid: String,
    },
}

impl StreamWriter {
    /// A new stream of `session` answering the request with raw id `rid`.
    pub(crate) fn open(
        store: &Store,
        session: &crate::session::Session,
        rid: &str,
        retention: Retention,
    ) -> Self {
        let stream = new_stream_id();
        let target = match store {
            // A sessionless request's stream is never resumed: kept in its own session only.
            _ if session.sessionless => Target::Memory(Arc::new(memory::StreamLog::new())),
            Store::Memory => {
                let log = Arc::new(memory::StreamLog::new());
                let mut logs = session
                    .streams
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                memory::prune(&mut logs, retention);
                logs.insert(stream.clone(), Arc::clone(&log));
                Target::Memory(log)
            }
            Store::Redis(r) => Target::Redis {
                store: Arc::clone(r),
                sid: session.id.clone(),
                rid: rid.to_owned(),
            },
        };
        Self {
            stream,
            seq: 0,
            last_ms: 0,
            retention,
            target,
        }
    }

    /// Whether the stream's call runs on when its client goes away: with Redis, where every
    /// event is stored for a resumption on any replica (MCP 2025-06-18 and 2025-11-25,
    /// streamable HTTP: a disconnection SHOULD NOT be read as a cancellation). In memory the
    /// call is cancelled when its client leaves, as before the store existed.
    pub(crate) fn outlives_its_client(&self) -> bool {
        matches!(self.target, Target::Redis { .. })
    }

    /// Gives `ev` the stream's next id and stores it (`end`: the stream's last event). A
    /// store that fails is logged and the event sent anyway: the live stream goes on, a
    /// resumption past the missing event is refused as unknown.
    pub(crate) async fn record(&mut self, ev: &mut crate::request::SseEvent, end: bool) {
        self.seq += 1;
        let ms = unix_ms().max(self.last_ms);
        self.last_ms = ms;
        let id = EventId {
            stream: self.stream.clone(),
            ms,
            seq: self.seq,
        };
        ev.id = Some(id.to_string());
        match &self.target {
            Target::Memory(log) => log.append(ms, self.seq, ev.data.clone(), end, self.retention),
            Target::Redis { store, sid, rid } => {
                if let Err(e) = store
                    .append(sid, &self.stream, rid, ms, self.seq, &ev.data, end)
                    .await
                {
                    tracing::warn!(error = %e, stream = %self.stream, "event not stored: a resumption past it is refused");
                }
            }
        }
    }
}

impl StreamWriter {
    /// The standalone GET stream of a session on the Redis store: sends `replay` (the events
    /// a resumption replays, already numbered) into `tx`, then each notification that arrives
    /// on `rx` (produced here or handed over by another replica), stored in the stream's
    /// history first. Ends when the client goes away or the session's sender is dropped.
    pub(crate) async fn pump(
        mut self,
        replay: Vec<crate::request::SseEvent>,
        mut rx: tokio::sync::mpsc::Receiver<crate::request::SseEvent>,
        tx: tokio::sync::mpsc::Sender<crate::request::SseEvent>,
    ) {
        for ev in replay {
            if tx.send(ev).await.is_err() {
                return;
            }
        }
        loop {
            let next = tokio::select! {
                ev = rx.recv() => ev,
                () = tx.closed() => return,
            };
            let Some(mut ev) = next else { return };
            self.record(&mut ev, false).await;
            if tx.send(ev).await.is_err() {
                return;
            }
        }
    }
}

/// The id of one SSE event of a resumable stream: `<stream>-<ms>-<seq>` (module doc).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EventId {
    /// The stream: 16 lowercase hex digits.
    pub(crate) stream: String,
    /// Append time, Unix milliseconds.
    pub(crate) ms: u64,
    /// Number in the stream, from 1.
    pub(crate) seq: u64,
}

impl EventId {
    /// Parses a `Last-Event-ID`; `None` for anything that is not exactly an id this runtime
    /// mints.
    pub(crate) fn parse(s: &str) -> Option<Self> {
        let mut parts = s.split('-');
        let (stream, ms, seq) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || !is_stream_id(stream) {
            return None;
        }
        let number = |p: &str| {
            (!p.is_empty() && p.len() <= 20 && p.bytes().all(|b| b.is_ascii_digit()))
                .then(|| p.parse::<u64>().ok())
                .flatten()
        };
        Some(Self {
            stream: stream.to_owned(),
            ms: number(ms)?,
            seq: number(seq).filter(|n| *n > 0)?,
        })
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}-{}", self.stream, self.ms, self.seq)
    }
}

/// Whether `s` is a stream id as [`new_stream_id`] mints them.
fn is_stream_id(s: &str) -> bool {
    s.len() == 16 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A new stream id: 64 bits from the OS-seeded CSPRNG as 16 lowercase hex digits.
pub(crate) fn new_stream_id() -> String {
    format!("{:016x}", rand::rng().next_u64())
}

/// Now, in Unix milliseconds.
pub(crate) fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_round_trip_and_anything_else_is_refused() {
        let id = EventId {
            stream: new_stream_id(),
            ms: 1_700_000_000_000,
            seq: 7,
        };
        assert_eq!(EventId::parse(&id.to_string()), Some(id));
        for bad in [
            "",
            "7",
            "abc-1-1",
            "0123456789abcdef-1",
            "0123456789abcdef-1-0",
            "0123456789ABCDEF-1-1",
            "0123456789abcdef-1-1-1",
            "0123456789abcdef--1",
            "0123456789abcdef-1-+1",
            "0123456789abcdef-99999999999999999999999-1",
        ] {
            assert_eq!(EventId::parse(bad), None, "{bad}");
        }
    }
}
