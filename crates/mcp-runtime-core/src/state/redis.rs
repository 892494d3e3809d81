//! The Redis state store: the shared session records, the per-subject session limit across
//! replicas, event history as Redis streams, cancellation and invalidation on pub/sub, the
//! replica's liveness key. Client: redis-rs (`redis`), a [`ConnectionManager`] (one
//! multiplexed connection that reconnects by itself) for commands, one pub/sub connection per
//! replica (resubscribed after a reconnect), and one dedicated connection per resumed stream
//! (its blocking `XREAD` must not hold up the shared connection).
//!
//! Keys (`docs/deployment.md` has the table): `mcp:s:{sid}` (hash: `sub`, `scope`, `ver`,
//! `created`, `caps` client capability bits, `lvl` log level set by `logging/setLevel`, `gr`
//! the replica holding its standalone GET stream, `r:{uri}` one per resource subscription
//! with the replica whose upstream session holds it; idle TTL; a record without the newer
//! fields loads with their defaults), `mcp:subj:{subject}` (sorted set of the subject's session ids scored
//! by expiry, Unix ms; idle TTL), `mcp:ev:{sid}:{stream}` (stream of events, entry id
//! `<ms>-<seq>`, fields `d` data and `e` on the last event; retention), `mcp:st:{sid}:{stream}`
//! (hash: `owner` replica, `rid` caller's request id; retention), `mcp:replica:{id}` (liveness,
//! [`LIVENESS_TTL`]). Channels: `mcp:inv` (a session id: it ended), `mcp:cancel` (`{sid}\n{raw
//! request id}`: cancel that call wherever it runs), `mcp:note:{replica}` (`{sid}\n{JSON-RPC
//! notification}`: for the session's standalone GET stream that replica holds), `mcp:upd`
//! (`{sid}\nlvl\n{level}`: a session's log level changed), `mcp:notice` (`{replica}\n{upstream
//! id}\n{list}`: that replica heard an upstream's `list_changed`), `mcp:unsub` (`{replica}\n{sid}\n{upstream
//! id}\n{upstream URI}`: the session unsubscribed there).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use ::redis::aio::ConnectionManager;
use ::redis::streams::{StreamId, StreamRangeReply, StreamReadReply};
use ::redis::{AsyncConnectionConfig, Client, Script, Value};
use futures::StreamExt;
use serde_json::value::RawValue;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{EventId, Retention, StoreError, unix_ms};
use crate::error::RequestError;
use crate::request::SseEvent;
use crate::session::Sessions;

/// How often a replica renews its liveness key.
pub(crate) const HEARTBEAT: Duration = Duration::from_secs(1);
/// Lifetime of a replica's liveness key: a replica silent this long is taken for dead.
pub(crate) const LIVENESS_TTL: Duration = Duration::from_secs(3);
/// How long a resumed stream's reader blocks on `XREAD` before it checks the owner is alive.
const FOLLOW_BLOCK: Duration = Duration::from_secs(1);

const INVALIDATE: &str = "mcp:inv";
const CANCEL: &str = "mcp:cancel";
const UPDATE: &str = "mcp:upd";
const NOTICE: &str = "mcp:notice";
const UNSUBSCRIBE: &str = "mcp:unsub";

/// What another replica asks of this one's runtime (the subscriber hands it over).
#[derive(Debug)]
pub(crate) enum Peer {
    /// Upstream `upstream` said its `kind` list changed (heard by another replica).
    Notice {
        upstream: String,
        kind: crate::live::ListKind,
    },
    /// Session `sid` unsubscribed from `uri` of `upstream` (as the upstream names it).
    Unsubscribe {
        sid: String,
        upstream: String,
        uri: String,
    },
}

/// Hands a notification to the replica holding a session's standalone GET stream. KEYS:
/// session hash. ARGV: message (`{sid}\n{body}`), this replica. Returns 1 when published to
/// another replica, 0 when no other replica holds one, -1 when the session is gone.
const ROUTE: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local r = redis.call('HGET', KEYS[1], 'gr')
if r and r ~= ARGV[2] then
  redis.call('PUBLISH', 'mcp:note:' .. r, ARGV[1])
  return 1
end
return 0
";

/// Sets one field of an existing session record, and publishes a message on `mcp:upd` if one
/// is given. KEYS: session hash. ARGV: field, value, message ('' for none). Returns 1, or 0
/// when the record is gone.
const SET_FIELD: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if ARGV[3] ~= '' then redis.call('PUBLISH', 'mcp:upd', ARGV[3]) end
return 1
";

/// Creates a session if its subject holds fewer than the limit. KEYS: session hash, subject
/// set. ARGV: now ms, ttl ms, limit, sid, subject, scope, has scope (1/0), version, client
/// capability bits. Returns 1 (created) or 0 (at the limit).
const CREATE: &str = r"
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[3]) then return 0 end
redis.call('ZADD', KEYS[2], tonumber(ARGV[1]) + tonumber(ARGV[2]), ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
redis.call('HSET', KEYS[1], 'sub', ARGV[5], 'ver', ARGV[8], 'created', ARGV[1], 'caps', ARGV[9])
if ARGV[7] == '1' then redis.call('HSET', KEYS[1], 'scope', ARGV[6]) end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
";

/// Extends a session's idle TTL. KEYS: session hash, subject set. ARGV: now ms, ttl ms, sid.
/// Returns 1 + the session's log level (`lvl`, 0 when none), or 0 when the session is gone
/// (then its slot is freed too).
const TOUCH: &str = r"
if redis.call('PEXPIRE', KEYS[1], ARGV[2]) == 0 then
  redis.call('ZREM', KEYS[2], ARGV[3])
  return 0
end
redis.call('ZADD', KEYS[2], tonumber(ARGV[1]) + tonumber(ARGV[2]), ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return 1 + (tonumber(redis.call('HGET', KEYS[1], 'lvl')) or 0)
";

/// Ends a session and tells every replica. KEYS: session hash, subject set. ARGV: sid.
const DELETE: &str = r"
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('PUBLISH', 'mcp:inv', ARGV[1])
return 1
";

/// A session's shared record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Record {
    /// The subject it is bound to.
    pub(crate) subject: String,
    /// The virtual server it was created on.
    pub(crate) scope: Option<String>,
    /// The client capabilities declared at `initialize` (bits of [`crate::server_requests`];
    /// 0 in a record written before the field existed).
    pub(crate) caps: u8,
    /// The log level `logging/setLevel` set ([`crate::session::log_level`] numbering; 0: none).
    pub(crate) level: u8,
}

/// The Redis store of one replica.
#[derive(Debug)]
pub(crate) struct RedisStore {
    client: Client,
    conn: ConnectionManager,
    timeout: Duration,
    retention: Retention,
    /// This replica's id (random), the owner of the streams it writes.
    replica: String,
    /// The invalidation channel is subscribed: cached sessions checked since `epoch` began
    /// may be served without a round trip.
    subscribed: AtomicBool,
    /// Bumped at each (re)subscription: a cached session checked in an earlier epoch is
    /// checked again before it is served.
    epoch: AtomicU64,
    /// The last heartbeat succeeded.
    beat_ok: AtomicBool,
    /// Stops the heartbeat and subscriber tasks.
    stop: CancellationToken,
    create: Script,
    touch: Script,
    delete: Script,
    route: Script,
    set_field: Script,
    /// Where the subscriber hands what other replicas ask of this runtime (set once at start).
    peers: std::sync::OnceLock<mpsc::UnboundedSender<Peer>>,
}

impl Drop for RedisStore {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl RedisStore {
    /// A store on `url` (nothing is connected yet: the first command connects, so a runtime
    /// starts while Redis is down and serves once it is up).
    ///
    /// # Errors
    ///
    /// [`StoreError::Url`] for a URL the client cannot use.
    pub(crate) fn new(
        url: &str,
        timeout: Duration,
        retention: Retention,
    ) -> Result<Self, StoreError> {
        let client = Client::open(url).map_err(|e| StoreError::Url(e.to_string()))?;
        let config = ::redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(200));
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), config)
            .map_err(|e| StoreError::Url(e.to_string()))?;
        Ok(Self {
            client,
            conn,
            timeout,
            retention,
            replica: super::new_stream_id(),
            subscribed: AtomicBool::new(false),
            epoch: AtomicU64::new(0),
            beat_ok: AtomicBool::new(false),
            stop: CancellationToken::new(),
            create: Script::new(CREATE),
            touch: Script::new(TOUCH),
            delete: Script::new(DELETE),
            route: Script::new(ROUTE),
            set_field: Script::new(SET_FIELD),
            peers: std::sync::OnceLock::new(),
        })
    }

    /// Starts the replica's two tasks (they end when the store is dropped): the heartbeat
    /// (liveness key every [`HEARTBEAT`]; every `refresh` the idle TTL of the sessions busy
    /// here) and the subscriber (invalidations and cancellations for `sessions`).
    pub(crate) fn spawn_tasks(self: &Arc<Self>, sessions: &Arc<Sessions>, ttl: Duration) {
        let (weak, table) = (Arc::downgrade(self), Arc::downgrade(sessions));
        let stop = self.stop.clone();
        tokio::spawn(stop.clone().run_until_cancelled_owned(heartbeat(
            weak.clone(),
            table.clone(),
            ttl,
        )));
        tokio::spawn(stop.run_until_cancelled_owned(subscriber(weak, table)));
    }

    /// Hands what other replicas ask of this runtime (list changes, unsubscriptions) to
    /// `tx` from now on (once; a second call is ignored).
    pub(crate) fn set_peers(&self, tx: mpsc::UnboundedSender<Peer>) {
        let _ = self.peers.set(tx);
    }

    /// This replica's id.
    pub(crate) fn replica(&self) -> &str {
        &self.replica
    }

    /// Whether the store answers (health).
    pub(crate) fn reachable(&self) -> bool {
        self.beat_ok.load(Ordering::Relaxed) && self.subscribed.load(Ordering::Relaxed)
    }

    /// The current epoch, if the invalidation channel is subscribed.
    pub(crate) fn epoch(&self) -> Option<u64> {
        self.subscribed
            .load(Ordering::Acquire)
            .then(|| self.epoch.load(Ordering::Acquire))
    }

    /// Runs one command (or script, or pipeline) within the command timeout. A connection
    /// error is tried once more within the same timeout: the connection manager reconnects on
    /// an error, and the first command after Redis came back would otherwise fail on the
    /// connection that broke. (Every command here may run twice: a repeated `PUBLISH` cancels
    /// or invalidates twice, a repeated `XADD` of the same entry id is refused and logged.)
    ///
    /// A failure is counted in `mcp_state_errors_total{operation}` (metrics on).
    async fn run<T, F>(
        &self,
        operation: &'static str,
        f: impl Fn(ConnectionManager) -> F,
    ) -> Result<T, StoreError>
    where
        F: Future<Output = ::redis::RedisResult<T>>,
    {
        let attempts = async {
            match f(self.conn.clone()).await {
                Err(e)
                    if e.is_io_error()
                        || e.is_connection_dropped()
                        || e.is_connection_refusal() =>
                {
                    f(self.conn.clone()).await
                }
                r => r,
            }
        };
        let r = match tokio::time::timeout(self.timeout, attempts).await {
            Ok(r) => r.map_err(StoreError::from),
            Err(_) => Err(StoreError::Timeout(self.timeout)),
        };
        if r.is_err() {
            crate::metrics::state_error(operation);
        }
        r
    }

    /// Creates `record` as session `sid`'s unless its subject already holds `limit` sessions
    /// (counted across every replica); `Ok(false)` at the limit.
    pub(crate) async fn create_session(
        &self,
        sid: &str,
        record: &Record,
        version: &str,
        ttl: Duration,
        limit: usize,
    ) -> Result<bool, StoreError> {
        let scope = record.scope.as_deref();
        let inv = {
            let mut inv = self.create.key(session_key(sid));
            inv.key(subject_key(&record.subject))
                .arg(unix_ms())
                .arg(ms(ttl))
                .arg(limit)
                .arg(sid)
                .arg(&record.subject)
                .arg(scope.unwrap_or(""))
                .arg(u8::from(scope.is_some()))
                .arg(version)
                .arg(record.caps);
            inv
        };
        let inv = &inv;
        let created: i64 = self
            .run("create_session", |mut c| async move {
                inv.invoke_async(&mut c).await
            })
            .await?;
        Ok(created == 1)
    }

    /// The record of session `sid`, `None` when there is none (unknown, ended or expired).
    pub(crate) async fn load_session(&self, sid: &str) -> Result<Option<Record>, StoreError> {
        let key = &session_key(sid);
        let (sub, scope, caps, level): (
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
        ) = self
            .run("load_session", |mut c| async move {
                ::redis::cmd("HMGET")
                    .arg(key)
                    .arg("sub")
                    .arg("scope")
                    .arg("caps")
                    .arg("lvl")
                    .query_async(&mut c)
                    .await
            })
            .await?;
        // A field missing (a record of an older runtime) or unreadable takes its default.
        let number = |v: Option<String>| v.and_then(|v| v.parse::<u8>().ok()).unwrap_or(0);
        Ok(sub.map(|subject| Record {
            subject,
            scope,
            caps: number(caps),
            level: number(level),
        }))
    }

    /// Extends the idle TTL of session `sid`; its log level as the record has it now (0:
    /// none), or `Ok(None)` when it is gone.
    pub(crate) async fn touch_session(
        &self,
        sid: &str,
        subject: &str,
        ttl: Duration,
    ) -> Result<Option<u8>, StoreError> {
        let inv = {
            let mut inv = self.touch.key(session_key(sid));
            inv.key(subject_key(subject))
                .arg(unix_ms())
                .arg(ms(ttl))
                .arg(sid);
            inv
        };
        let inv = &inv;
        let alive: i64 = self
            .run("touch_session", |mut c| async move {
                inv.invoke_async(&mut c).await
            })
            .await?;
        Ok((alive >= 1).then(|| u8::try_from(alive - 1).unwrap_or(0)))
    }

    /// Removes session `sid`'s record and frees its slot; every replica drops it and cancels
    /// its calls (the invalidation channel).
    pub(crate) async fn delete_session(&self, sid: &str, subject: &str) -> Result<(), StoreError> {
        let inv = {
            let mut inv = self.delete.key(session_key(sid));
            inv.key(subject_key(subject)).arg(sid);
            inv
        };
        let inv = &inv;
        let _: i64 = self
            .run("delete_session", |mut c| async move {
                inv.invoke_async(&mut c).await
            })
            .await?;
        Ok(())
    }

    /// Sets `field` of session `sid`'s record to `value` (and publishes `message` on `mcp:upd`
    /// unless it is empty); `Ok(false)` when the record is gone.
    pub(crate) async fn set_field(
        &self,
        sid: &str,
        field: &str,
        value: &str,
        message: &str,
    ) -> Result<bool, StoreError> {
        let inv = {
            let mut inv = self.set_field.key(session_key(sid));
            inv.arg(field).arg(value).arg(message);
            inv
        };
        let inv = &inv;
        let done: i64 = self
            .run("set_field", |mut c| async move {
                inv.invoke_async(&mut c).await
            })
            .await?;
        Ok(done == 1)
    }

    /// Records that this replica holds session `sid`'s standalone GET stream: notifications
    /// other replicas produce for the session come here ([`RedisStore::route`]).
    pub(crate) async fn claim_stream(&self, sid: &str) -> Result<bool, StoreError> {
        self.set_field(sid, "gr", &self.replica, "").await
    }

    /// Sets session `sid`'s log level (every replica caching it is told).
    pub(crate) async fn set_level(&self, sid: &str, level: u8) -> Result<bool, StoreError> {
        let level = level.to_string();
        self.set_field(sid, "lvl", &level, &format!("{sid}\nlvl\n{level}"))
            .await
    }

    /// Hands notification `body` (one JSON-RPC message) to the replica holding session
    /// `sid`'s standalone GET stream; `Ok(None)` when the session is gone, `Ok(Some(false))`
    /// when no other replica holds a stream of it.
    pub(crate) async fn route(&self, sid: &str, body: &str) -> Result<Option<bool>, StoreError> {
        let inv = {
            let mut inv = self.route.key(session_key(sid));
            inv.arg(format!("{sid}\n{body}")).arg(&self.replica);
            inv
        };
        let inv = &inv;
        let sent: i64 = self
            .run(
                "route",
                |mut c| async move { inv.invoke_async(&mut c).await },
            )
            .await?;
        Ok((sent >= 0).then_some(sent == 1))
    }

    /// The replica whose upstream session holds session `sid`'s subscription to `uri` (as the
    /// session named it), if one is recorded and alive.
    pub(crate) async fn subscription_holder(
        &self,
        sid: &str,
        uri: &str,
    ) -> Result<Option<String>, StoreError> {
        let (key, field) = (&session_key(sid), &format!("r:{uri}"));
        let holder: Option<String> = self
            .run("subscription", |mut c| async move {
                ::redis::cmd("HGET")
                    .arg(key)
                    .arg(field)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        match holder {
            Some(h) if h == self.replica || self.alive(&h).await => Ok(Some(h)),
            _ => Ok(None),
        }
    }

    /// Records session `sid`'s subscription to `uri`, held by this replica's upstream session.
    pub(crate) async fn record_subscription(
        &self,
        sid: &str,
        uri: &str,
    ) -> Result<bool, StoreError> {
        self.set_field(sid, &format!("r:{uri}"), &self.replica, "")
            .await
    }

    /// Removes session `sid`'s subscription to `uri` from its record and tells every other
    /// replica (the one whose upstream session holds it unsubscribes: [`Peer::Unsubscribe`]).
    pub(crate) async fn drop_subscription(
        &self,
        sid: &str,
        uri: &str,
        upstream: &str,
        upstream_uri: &str,
    ) -> Result<(), StoreError> {
        let (key, field) = (&session_key(sid), &format!("r:{uri}"));
        let message = &format!("{}\n{sid}\n{upstream}\n{upstream_uri}", self.replica);
        self.run("unsubscribe", |mut c| async move {
            ::redis::pipe()
                .cmd("HDEL")
                .arg(key)
                .arg(field)
                .ignore()
                .cmd("PUBLISH")
                .arg(UNSUBSCRIBE)
                .arg(message)
                .ignore()
                .query_async::<()>(&mut c)
                .await
        })
        .await
    }

    /// Tells every other replica that upstream `upstream` said its `kind` list changed.
    pub(crate) async fn publish_notice(
        &self,
        upstream: &str,
        kind: crate::live::ListKind,
    ) -> Result<(), StoreError> {
        let message = &format!("{}\n{upstream}\n{}", self.replica, kind.as_str());
        let _: i64 = self
            .run("publish_notice", |mut c| async move {
                ::redis::cmd("PUBLISH")
                    .arg(NOTICE)
                    .arg(message)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        Ok(())
    }

    /// Asks every replica to cancel call `rid` (raw JSON-RPC id) of session `sid`.
    pub(crate) async fn publish_cancel(&self, sid: &str, rid: &str) -> Result<(), StoreError> {
        let message = &format!("{sid}\n{rid}");
        let _: i64 = self
            .run("publish_cancel", |mut c| async move {
                ::redis::cmd("PUBLISH")
                    .arg(CANCEL)
                    .arg(message)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        Ok(())
    }

    /// Appends event `(ms, seq)` of `stream` in session `sid` (`rid`: the caller's raw request
    /// id, recorded with the stream's owner on the first event), trims by the retention and
    /// renews the stream's expiry. `end`: the stream's last event.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn append(
        &self,
        sid: &str,
        stream: &str,
        rid: &str,
        at_ms: u64,
        seq: u64,
        data: &str,
        end: bool,
    ) -> Result<(), StoreError> {
        let (events, meta) = (events_key(sid, stream), meta_key(sid, stream));
        let age = ms(self.retention.max_age).max(1);
        let mut p = ::redis::pipe();
        let add = p
            .cmd("XADD")
            .arg(&events)
            .arg("MAXLEN")
            .arg("~")
            .arg(self.retention.max_events.max(1))
            .arg(format!("{at_ms}-{seq}"))
            .arg("d")
            .arg(data);
        if end {
            add.arg("e").arg("1");
        }
        p.ignore();
        p.cmd("XTRIM")
            .arg(&events)
            .arg("MINID")
            .arg("~")
            .arg(unix_ms().saturating_sub(age))
            .ignore();
        p.cmd("PEXPIRE").arg(&events).arg(age).ignore();
        if seq == 1 {
            p.cmd("HSET")
                .arg(&meta)
                .arg("owner")
                .arg(&self.replica)
                .arg("rid")
                .arg(rid)
                .ignore();
        }
        p.cmd("PEXPIRE").arg(&meta).arg(age).ignore();
        let p = &p;
        self.run("append", |mut c| async move {
            p.query_async::<()>(&mut c).await
        })
        .await
    }

    /// Checks that the events after `after` of its stream in session `sid` are retained and
    /// starts a task sending them into `tx` in order, then the stream's new events live, until
    /// its last event; if the replica running the call stops first, the stream ends with the
    /// call's [`RequestError::ReplicaStopped`].
    ///
    /// A standalone GET stream's history (its `rid` is empty) is not followed here: the
    /// answer is [`Resumed::Standalone`], and the caller replays it ([`RedisStore::replay`])
    /// and opens the session's standalone stream on this replica.
    ///
    /// # Errors
    ///
    /// [`RequestError::UnknownEventId`] when the stream is not one of this session's, or the
    /// position is past its last event or before its retained ones;
    /// [`RequestError::StateUnavailable`] when Redis does not answer.
    pub(crate) async fn resume(
        self: &Arc<Self>,
        sid: &str,
        after: EventId,
        tx: mpsc::Sender<SseEvent>,
    ) -> Result<Resumed, RequestError> {
        let unknown = || RequestError::UnknownEventId(after.to_string());
        let (events, meta) = (events_key(sid, &after.stream), meta_key(sid, &after.stream));
        let (events_ref, meta_ref) = (&events, &meta);
        let ((owner, rid), first, last): (
            (Option<String>, Option<String>),
            StreamRangeReply,
            StreamRangeReply,
        ) = self
            .run("resume", |mut c| async move {
                ::redis::pipe()
                    .cmd("HMGET")
                    .arg(meta_ref)
                    .arg("owner")
                    .arg("rid")
                    .cmd("XRANGE")
                    .arg(events_ref)
                    .arg("-")
                    .arg("+")
                    .arg("COUNT")
                    .arg(1)
                    .cmd("XREVRANGE")
                    .arg(events_ref)
                    .arg("+")
                    .arg("-")
                    .arg("COUNT")
                    .arg(1)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        let (Some(owner), Some(rid)) = (owner, rid) else {
            return Err(unknown());
        };
        let seq_of = |r: &StreamRangeReply| r.ids.first().and_then(|e| position(&e.id));
        let (Some((_, first)), Some((_, last))) = (seq_of(&first), seq_of(&last)) else {
            return Err(unknown());
        };
        if after.seq > last || first > after.seq + 1 {
            return Err(unknown());
        }
        if rid.is_empty() {
            return Ok(Resumed::Standalone);
        }
        let store = Arc::clone(self);
        let follow = Follow {
            events,
            stream: after.stream.clone(),
            owner,
            rid,
            from: format!("{}-{}", after.ms, after.seq),
        };
        tokio::spawn(async move { store.follow(follow, tx).await });
        Ok(Resumed::Following)
    }

    /// The retained events of session `sid`'s stream after `after`, in order (at most the
    /// retention's count), each with its id.
    pub(crate) async fn replay(
        &self,
        sid: &str,
        after: &EventId,
    ) -> Result<Vec<SseEvent>, StoreError> {
        let events = &events_key(sid, &after.stream);
        let from = &format!("({}-{}", after.ms, after.seq);
        let count = self.retention.max_events.max(1) * 2;
        let range: StreamRangeReply = self
            .run("replay", |mut c| async move {
                ::redis::cmd("XRANGE")
                    .arg(events)
                    .arg(from)
                    .arg("+")
                    .arg("COUNT")
                    .arg(count)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        Ok(range
            .ids
            .into_iter()
            .filter_map(|e| {
                let (at_ms, seq) = position(&e.id)?;
                let mut ev = SseEvent::message(e.get::<String>("d").unwrap_or_default());
                ev.id = Some(
                    EventId {
                        stream: after.stream.clone(),
                        ms: at_ms,
                        seq,
                    }
                    .to_string(),
                );
                Some(ev)
            })
            .collect())
    }

    /// The reader of a resumed stream (see [`RedisStore::resume`]).
    async fn follow(&self, mut f: Follow, tx: mpsc::Sender<SseEvent>) {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(FOLLOW_BLOCK + self.timeout));
        let Ok(Ok(mut conn)) = tokio::time::timeout(
            self.timeout,
            self.client
                .get_multiplexed_async_connection_with_config(&config),
        )
        .await
        else {
            tracing::warn!("resumed stream: cannot connect to the state store; stream ended");
            return;
        };
        let mut owner_gone = false;
        loop {
            let mut xread = ::redis::cmd("XREAD");
            xread
                .arg("COUNT")
                .arg(256)
                .arg("BLOCK")
                .arg(ms(FOLLOW_BLOCK))
                .arg("STREAMS")
                .arg(&f.events)
                .arg(&f.from);
            let read: ::redis::RedisResult<Option<StreamReadReply>> = tokio::select! {
                r = xread.query_async(&mut conn) => r,
                () = tx.closed() => return,
            };
            let entries: Vec<StreamId> = match read {
                Ok(reply) => reply
                    .into_iter()
                    .flat_map(|r| r.keys)
                    .flat_map(|k| k.ids)
                    .collect(),
                Err(e) => {
                    tracing::warn!(error = %e, "resumed stream: state store failed; stream ended");
                    return;
                }
            };
            if entries.is_empty() {
                if owner_gone {
                    // The owner stopped and nothing arrived since: the call has no answer.
                    let rid = RawValue::from_string(f.rid.clone()).ok();
                    let body = RequestError::ReplicaStopped.body(rid.as_deref());
                    let _ = tx
                        .send(SseEvent::message(
                            String::from_utf8(body).unwrap_or_default(),
                        ))
                        .await;
                    return;
                }
                // Read once more after the owner is found gone, for what it wrote last.
                owner_gone = !self.alive(&f.owner).await;
                continue;
            }
            for e in entries {
                let Some((at_ms, seq)) = position(&e.id) else {
                    continue;
                };
                let data: String = e.get("d").unwrap_or_default();
                let end = e.contains_key("e");
                let mut ev = SseEvent::message(data);
                ev.id = Some(
                    EventId {
                        stream: f.stream.clone(),
                        ms: at_ms,
                        seq,
                    }
                    .to_string(),
                );
                f.from = e.id.clone();
                if tx.send(ev).await.is_err() || end {
                    return;
                }
            }
        }
    }

    /// Whether replica `id`'s liveness key exists (an error counts as alive: only a replica
    /// known to have stopped ends a stream).
    async fn alive(&self, id: &str) -> bool {
        let key = &replica_key(id);
        self.run("alive", |mut c| async move {
            ::redis::cmd("EXISTS")
                .arg(key)
                .query_async::<i64>(&mut c)
                .await
        })
        .await
        .map_or(true, |n| n == 1)
    }
}

/// How [`RedisStore::resume`] went on.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Resumed {
    /// A call's stream: its reader is sending into the channel.
    Following,
    /// A standalone GET stream's: the caller replays it.
    Standalone,
}

/// What the reader of a resumed stream follows.
struct Follow {
    events: String,
    stream: String,
    owner: String,
    rid: String,
    /// The entry id it read up to.
    from: String,
}

impl RedisStore {
    /// A `mcp:notice` or `mcp:unsub` message: handed to the runtime unless this replica sent
    /// it.
    fn hand_to_runtime(&self, channel: &str, payload: &str) {
        let Some(tx) = self.peers.get() else { return };
        let mut parts = payload.split('\n');
        if parts.next() == Some(self.replica.as_str()) {
            return;
        }
        let peer = if channel == NOTICE {
            let (Some(upstream), Some(kind)) = (parts.next(), parts.next()) else {
                return;
            };
            let Some(kind) = crate::live::ListKind::ALL
                .into_iter()
                .find(|k| k.as_str() == kind)
            else {
                return;
            };
            Peer::Notice {
                upstream: upstream.to_owned(),
                kind,
            }
        } else {
            let (Some(sid), Some(upstream)) = (parts.next(), parts.next()) else {
                return;
            };
            // The URI is the rest (it may hold no newline, but it is taken whole).
            let uri = parts.collect::<Vec<_>>().join("\n");
            Peer::Unsubscribe {
                sid: sid.to_owned(),
                upstream: upstream.to_owned(),
                uri,
            }
        };
        let _ = tx.send(peer);
    }
}

/// Renews the liveness key every [`HEARTBEAT`] and, every `ttl / 8`, the idle TTL of the
/// sessions busy on this replica (in-flight calls or an open GET stream: they send no request
/// that would renew it).
async fn heartbeat(
    store: std::sync::Weak<RedisStore>,
    sessions: std::sync::Weak<Sessions>,
    ttl: Duration,
) {
    let mut tick = tokio::time::interval(HEARTBEAT);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let every = (ttl / 8).max(HEARTBEAT);
    let mut last_refresh = tokio::time::Instant::now();
    loop {
        tick.tick().await;
        let (Some(s), Some(table)) = (store.upgrade(), sessions.upgrade()) else {
            return;
        };
        let key = &replica_key(&s.replica);
        let ok = s
            .run("heartbeat", |mut c| async move {
                ::redis::cmd("SET")
                    .arg(key)
                    .arg(1)
                    .arg("PX")
                    .arg(ms(LIVENESS_TTL))
                    .query_async::<()>(&mut c)
                    .await
            })
            .await;
        if let Err(e) = &ok
            && s.beat_ok.load(Ordering::Relaxed)
        {
            tracing::warn!(error = %e, "state store heartbeat failed");
        }
        s.beat_ok.store(ok.is_ok(), Ordering::Relaxed);
        if ok.is_ok() && last_refresh.elapsed() >= every {
            last_refresh = tokio::time::Instant::now();
            for (sid, subject) in table.busy() {
                if let Ok(None) = s.touch_session(&sid, &subject, ttl).await {
                    table.end_local(&sid);
                }
            }
        }
    }
}

/// Follows the invalidation and cancellation channels on a pub/sub connection of its own,
/// reconnecting and resubscribing when it breaks (pinged every [`HEARTBEAT`], so a silent break
/// is found). While it is down, cached sessions are checked against Redis on every request.
async fn subscriber(store: std::sync::Weak<RedisStore>, sessions: std::sync::Weak<Sessions>) {
    loop {
        let Some(s) = store.upgrade() else { return };
        let timeout = s.timeout;
        let client = s.client.clone();
        let note = format!("mcp:note:{}", s.replica);
        drop(s);
        let connected = tokio::time::timeout(timeout, async {
            let (mut sink, stream) = client.get_async_pubsub().await?.split();
            sink.subscribe(&[INVALIDATE, CANCEL, UPDATE, NOTICE, UNSUBSCRIBE])
                .await?;
            sink.subscribe(&note).await?;
            ::redis::RedisResult::Ok((sink, stream))
        })
        .await;
        if let Ok(Ok((mut sink, mut stream))) = connected {
            let Some(s) = store.upgrade() else { return };
            s.epoch.fetch_add(1, Ordering::AcqRel);
            s.subscribed.store(true, Ordering::Release);
            tracing::info!("state store: invalidation channel subscribed");
            drop(s);
            let mut ping = tokio::time::interval(HEARTBEAT);
            loop {
                tokio::select! {
                    msg = stream.next() => {
                        let Some(msg) = msg else { break };
                        let Some(table) = sessions.upgrade() else { return };
                        let payload: String = msg.get_payload().unwrap_or_default();
                        match msg.get_channel_name() {
                            INVALIDATE => table.end_local(&payload),
                            CANCEL => {
                                if let Some((sid, rid)) = payload.split_once('\n') {
                                    table.cancel_local(sid, rid);
                                }
                            }
                            UPDATE => {
                                let mut parts = payload.splitn(3, '\n');
                                if let (Some(sid), Some("lvl"), Some(level)) =
                                    (parts.next(), parts.next(), parts.next())
                                {
                                    table.set_level_local(sid, level.parse().unwrap_or(0));
                                }
                            }
                            NOTICE | UNSUBSCRIBE => {
                                let Some(s) = store.upgrade() else { return };
                                s.hand_to_runtime(msg.get_channel_name(), &payload);
                            }
                            channel if channel == note => {
                                if let Some((sid, body)) = payload.split_once('\n') {
                                    table.deliver_local(sid, body);
                                }
                            }
                            _ => {}
                        }
                    }
                    _ = ping.tick() => {
                        let pong = tokio::time::timeout(timeout, sink.ping::<Value>()).await;
                        if !matches!(pong, Ok(Ok(_))) {
                            break;
                        }
                    }
                }
            }
            if let Some(s) = store.upgrade() {
                s.subscribed.store(false, Ordering::Release);
            }
            tracing::warn!("state store: invalidation channel lost; resubscribing");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `(ms, seq)` of an entry id `<ms>-<seq>`.
fn position(id: &str) -> Option<(u64, u64)> {
    let (a, b) = id.split_once('-')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn session_key(sid: &str) -> String {
    format!("mcp:s:{sid}")
}

fn subject_key(subject: &str) -> String {
    format!("mcp:subj:{subject}")
}

fn events_key(sid: &str, stream: &str) -> String {
    format!("mcp:ev:{sid}:{stream}")
}

fn meta_key(sid: &str, stream: &str) -> String {
    format!("mcp:st:{sid}:{stream}")
}

fn replica_key(id: &str) -> String {
    format!("mcp:replica:{id}")
}
