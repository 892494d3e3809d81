//! The abusive subject of `mcp-soak --abuser` (issue 13): a second subject, beside the soak's
//! normal traffic, that reaches for every resource one subject can hold on the public endpoint.
//!
//! In order, on connections of its own (HTTP/1.1 to the gateway, bearer token of its own
//! subject):
//!
//! 1. opens [`AbuserConfig::sessions`] sessions (`initialize` + `notifications/initialized`),
//!    more than the per-subject session cap, and keeps every one it gets;
//! 2. opens a standalone GET stream on [`AbuserConfig::streams`] of them, one connection each,
//!    more than the per-subject stream cap, and keeps reading the ones it gets;
//! 3. until stopped, keeps [`AbuserConfig::inflight`] `tools/call sleep` calls of
//!    [`AbuserConfig::sleep_ms`] in flight (more than the per-subject in-flight cap) and
//!    [`AbuserConfig::large`] `tools/call echo` calls of [`AbuserConfig::large_bytes`] each.
//!
//! A refusal (HTTP 429 or 503) is what the limits should produce and is counted as refused;
//! the task that was refused waits the answer's `Retry-After` (1 s when absent) before it
//! tries again, as a client is told to. A client that ignores `Retry-After`, or that simply
//! sends many short requests, is a question of request rates per client (CPU, not held
//! resources), which the project leaves to the proxy in front of the gateway: the quotas bound
//! what a subject holds, not how fast it asks.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode};
use http_body_util::BodyExt as _;
use serde::{Deserialize, Serialize};

use super::h1::Conn;
use super::mcp::{Endpoint, connect, jsonrpc_payload};
use super::{CallError, Workload, check_jsonrpc, initialize_body};

/// How hard the abusive subject pushes. The defaults exceed each per-subject limit of the
/// runtime and the Python baseline (sessions 256, streams 64, in-flight requests 256).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct AbuserConfig {
    /// Sessions to open and hold.
    pub sessions: usize,
    /// Standalone GET streams to open and hold (on the held sessions, one each).
    pub streams: usize,
    /// `tools/call sleep` calls to keep in flight.
    pub inflight: usize,
    /// Duration of each `sleep` call, in milliseconds: long, so the calls hold their slots
    /// (what the per-subject call quota is about) rather than make a request rate.
    pub sleep_ms: u64,
    /// `tools/call echo` calls with a large argument to keep in flight.
    pub large: usize,
    /// Size of each large `echo` argument (and result), in bytes.
    pub large_bytes: usize,
}

impl Default for AbuserConfig {
    fn default() -> Self {
        Self {
            sessions: 300,
            streams: 100,
            inflight: 300,
            sleep_ms: 20_000,
            large: 2,
            large_bytes: 8 * 1024 * 1024,
        }
    }
}

/// What the abusive subject got, by resource: granted, refused (429 or 503) and failed
/// otherwise (any other status or a transport error).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AbuseCounts {
    /// Sessions opened and held.
    pub sessions_opened: u64,
    /// `initialize` calls refused.
    pub sessions_refused: u64,
    /// GET streams opened and held.
    pub streams_opened: u64,
    /// GET streams refused.
    pub streams_refused: u64,
    /// GET streams the server ended before the abuser stopped.
    pub streams_ended_early: u64,
    /// `sleep` calls answered with a result.
    pub sleep_ok: u64,
    /// `sleep` calls refused.
    pub sleep_refused: u64,
    /// Large `echo` calls answered with a result.
    pub large_ok: u64,
    /// Large `echo` calls refused.
    pub large_refused: u64,
    /// Requests that failed otherwise.
    pub failed: u64,
    /// Up to five distinct failure messages, with their counts.
    pub failure_kinds: BTreeMap<String, u64>,
    /// Time from the start to holding every session and stream it got, in milliseconds.
    pub ramp_ms: u64,
}

/// Connections that open the abuser's sessions at once.
const OPENERS: usize = 8;

/// Longest wait for the GET streams' answers during the ramp-up.
const STREAM_RAMP_TIMEOUT: Duration = Duration::from_secs(30);

/// The counts, shared by the abuser's tasks.
#[derive(Default)]
struct Tally {
    counts: Mutex<AbuseCounts>,
}

impl Tally {
    fn add(&self, f: impl FnOnce(&mut AbuseCounts)) {
        f(&mut self
            .counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner));
    }

    fn failed(&self, e: &CallError) {
        self.add(|c| {
            c.failed += 1;
            let kinds = c.failure_kinds.len();
            let e = e.to_string();
            if let Some(n) = c.failure_kinds.get_mut(&e) {
                *n += 1;
            } else if kinds < 5 {
                c.failure_kinds.insert(e, 1);
            }
        });
    }
}

/// A request id unique among the abuser's requests.
fn next_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Whether `status` is a refusal by a limit.
fn refused(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE
}

/// The wait a refusal asks for (`Retry-After` in seconds; 1 s when absent or unreadable).
fn retry_after(headers: &http::HeaderMap) -> Duration {
    let s = headers
        .get(http::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(1);
    Duration::from_secs(s.clamp(1, 60))
}

/// Sleeps for `d` or until `stop` is set, whichever comes first.
async fn pause(d: Duration, stop: &AtomicBool) {
    let step = Duration::from_millis(100);
    let mut left = d;
    while !left.is_zero() && !stop.load(Ordering::Relaxed) {
        let s = left.min(step);
        tokio::time::sleep(s).await;
        left = left.saturating_sub(s);
    }
}

/// What one POST came back with.
enum Answer {
    Ok,
    Refused(Duration),
}

/// POSTs `body` on `conn` in `session` and checks for a result with id `id`; reconnects once
/// when the connection was closed before the request went out.
async fn post(
    conn: &mut Conn,
    endpoint: &Endpoint,
    session: &HeaderValue,
    body: Bytes,
    id: u64,
) -> Result<Answer, CallError> {
    if conn.is_closed() {
        *conn = connect(endpoint.addr)
            .await
            .map_err(|e| CallError::Transport(format!("reconnecting: {e:#}")))?;
    }
    let (status, headers, reply) = conn
        .send(endpoint.request(Method::POST, None, Some(session), body))
        .await?;
    if refused(status) {
        return Ok(Answer::Refused(retry_after(&headers)));
    }
    if status != StatusCode::OK {
        return Err(CallError::Status(status.as_u16()));
    }
    check_jsonrpc(
        jsonrpc_payload(headers.get(http::header::CONTENT_TYPE), &reply),
        id,
    )?;
    Ok(Answer::Ok)
}

/// Opens up to `n` sessions on [`OPENERS`] connections at once; each connection stops at its
/// first refusal or failure.
async fn open_sessions(endpoint: &Endpoint, n: usize, tally: &Arc<Tally>) -> Vec<HeaderValue> {
    let left = Arc::new(AtomicU64::new(n as u64));
    let mut openers = tokio::task::JoinSet::new();
    for _ in 0..OPENERS.min(n) {
        let (endpoint, tally, left) = (endpoint.clone(), Arc::clone(tally), Arc::clone(&left));
        openers.spawn(async move {
            let mut sessions = Vec::new();
            let Ok(mut conn) = connect(endpoint.addr).await else {
                tally.failed(&CallError::Transport("cannot connect".to_owned()));
                return sessions;
            };
            while left
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |l| l.checked_sub(1))
                .is_ok()
            {
                match open_session(&mut conn, &endpoint, &tally).await {
                    Some(session) => sessions.push(session),
                    None => break,
                }
            }
            sessions
        });
    }
    let mut sessions = Vec::new();
    while let Some(opened) = openers.join_next().await {
        sessions.extend(opened.unwrap_or_default());
    }
    sessions
}

/// Opens one session on `conn` (`initialize` + `notifications/initialized`); `None` after a
/// refusal or a failure, which are counted.
async fn open_session(conn: &mut Conn, endpoint: &Endpoint, tally: &Tally) -> Option<HeaderValue> {
    let id = next_id();
    let sent = conn
        .send(endpoint.request(Method::POST, None, None, Bytes::from(initialize_body(id))))
        .await;
    let session = match sent {
        Ok((status, _, _)) if refused(status) => {
            tally.add(|c| c.sessions_refused += 1);
            return None;
        }
        Ok((StatusCode::OK, headers, _)) => headers.get("mcp-session-id").cloned(),
        Ok((status, _, _)) => {
            tally.failed(&CallError::Status(status.as_u16()));
            return None;
        }
        Err(e) => {
            tally.failed(&e);
            return None;
        }
    };
    let Some(session) = session else {
        tally.failed(&CallError::Response("no mcp-session-id".to_owned()));
        return None;
    };
    let note = Bytes::from_static(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
    if let Err(e) = conn
        .send(endpoint.request(Method::POST, None, Some(&session), note))
        .await
    {
        tally.failed(&e);
        return None;
    }
    tally.add(|c| c.sessions_opened += 1);
    Some(session)
}

/// Opens a GET stream on `session` over a connection of its own and reads it until `stop`.
/// `answered` gets a permit once the stream's answer (or failure) is known.
async fn hold_stream(
    endpoint: Endpoint,
    session: HeaderValue,
    tally: Arc<Tally>,
    stop: Arc<AtomicBool>,
    answered: Arc<tokio::sync::Semaphore>,
) {
    let _answered = Answered(answered);
    let mut conn = match connect(endpoint.addr).await {
        Ok(c) => c,
        Err(e) => return tally.failed(&CallError::Transport(format!("{e:#}"))),
    };
    let req = endpoint.request(Method::GET, None, Some(&session), Bytes::new());
    let (status, _, mut body) = match conn.send_streaming(req).await {
        Ok(r) => r,
        Err(e) => return tally.failed(&e),
    };
    if refused(status) {
        return tally.add(|c| c.streams_refused += 1);
    }
    if status != StatusCode::OK {
        return tally.failed(&CallError::Status(status.as_u16()));
    }
    tally.add(|c| c.streams_opened += 1);
    drop(_answered);
    while !stop.load(Ordering::Relaxed) {
        match tokio::time::timeout(Duration::from_millis(200), body.frame()).await {
            Err(_) | Ok(Some(Ok(_))) => {}
            Ok(None | Some(Err(_))) => {
                if !stop.load(Ordering::Relaxed) {
                    tally.add(|c| c.streams_ended_early += 1);
                }
                return;
            }
        }
    }
}

/// Adds a permit to its semaphore when dropped: a stream task's answer is known on every path.
struct Answered(Arc<tokio::sync::Semaphore>);

impl Drop for Answered {
    fn drop(&mut self) {
        self.0.add_permits(1);
    }
}

/// Loops one kind of call (`large`: echo of `large_bytes`, else `sleep`) on a connection of
/// its own until `stop`.
async fn call_loop(
    endpoint: Endpoint,
    session: HeaderValue,
    cfg: AbuserConfig,
    large: bool,
    tally: Arc<Tally>,
    stop: Arc<AtomicBool>,
) {
    let mut conn = match connect(endpoint.addr).await {
        Ok(c) => c,
        Err(e) => return tally.failed(&CallError::Transport(format!("{e:#}"))),
    };
    while !stop.load(Ordering::Relaxed) {
        let id = next_id();
        let body = if large {
            Workload::Echo(cfg.large_bytes).body(id)
        } else {
            format!(
                r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"sleep","arguments":{{"ms":{}}}}}}}"#,
                cfg.sleep_ms
            )
        };
        match post(&mut conn, &endpoint, &session, Bytes::from(body), id).await {
            Ok(Answer::Ok) if large => tally.add(|c| c.large_ok += 1),
            Ok(Answer::Ok) => tally.add(|c| c.sleep_ok += 1),
            Ok(Answer::Refused(wait)) => {
                tally.add(|c| {
                    if large {
                        c.large_refused += 1;
                    } else {
                        c.sleep_refused += 1;
                    }
                });
                pause(wait, &stop).await;
            }
            Err(e) => {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                tally.failed(&e);
                pause(Duration::from_secs(1), &stop).await;
                if let Ok(c) = connect(endpoint.addr).await {
                    conn = c;
                }
            }
        }
    }
}

/// Runs the abusive subject against `endpoint` until `stop` is set; returns what it got.
/// `ramped` is sent the ramp-up's duration once the sessions are open, every GET stream has
/// its answer and the calls have started (it is dropped unsent if the run ends before).
/// Every connection it opened is closed when this returns.
pub async fn run(
    endpoint: Endpoint,
    cfg: AbuserConfig,
    stop: Arc<AtomicBool>,
    ramped: tokio::sync::oneshot::Sender<Duration>,
) -> AbuseCounts {
    let started = tokio::time::Instant::now();
    let tally = Arc::new(Tally::default());
    let sessions = open_sessions(&endpoint, cfg.sessions, &tally).await;
    let mut tasks = tokio::task::JoinSet::new();
    if !sessions.is_empty() {
        let answered = Arc::new(tokio::sync::Semaphore::new(0));
        for i in 0..cfg.streams {
            let session = sessions[i % sessions.len()].clone();
            tasks.spawn(hold_stream(
                endpoint.clone(),
                session,
                Arc::clone(&tally),
                Arc::clone(&stop),
                Arc::clone(&answered),
            ));
        }
        let all = u32::try_from(cfg.streams).unwrap_or(u32::MAX);
        // A stream with no answer after the timeout is still counted when it gets one.
        let _ = tokio::time::timeout(STREAM_RAMP_TIMEOUT, answered.acquire_many(all)).await;
        for i in 0..cfg.inflight + cfg.large {
            let session = sessions[i % sessions.len()].clone();
            tasks.spawn(call_loop(
                endpoint.clone(),
                session,
                cfg,
                i >= cfg.inflight,
                Arc::clone(&tally),
                Arc::clone(&stop),
            ));
        }
    }
    let ramp = started.elapsed();
    tally.add(|c| c.ramp_ms = u64::try_from(ramp.as_millis()).unwrap_or(u64::MAX));
    let _ = ramped.send(ramp);
    while tasks.join_next().await.is_some() {}
    tally
        .counts
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_falls_back_to_one() {
        let mut h = http::HeaderMap::new();
        assert_eq!(retry_after(&h), Duration::from_secs(1));
        h.insert(http::header::RETRY_AFTER, HeaderValue::from_static("60"));
        assert_eq!(retry_after(&h), Duration::from_secs(60));
        h.insert(http::header::RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h), Duration::from_secs(1));
    }

    #[test]
    fn the_defaults_exceed_every_per_subject_limit() {
        let c = AbuserConfig::default();
        assert!(c.sessions > 256 && c.streams > 64 && c.inflight > 256);
    }
}
