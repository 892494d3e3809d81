//! The replica soak (issue 15 item 6): three runtimes on one real `redis-server`, a steady
//! load of streamed calls (the fixture's `progress` over HTTP/JSON, each event read with its
//! id) sent to the replicas in turn, and every `kill_every` one replica SIGKILLed and started
//! again on the same sockets. A client whose stream is cut resumes it on another replica with
//! `Last-Event-ID` (again if that one is killed too).
//!
//! Counted: calls started, completed and failed (by error), the events of every stream (the
//! highest sequence number seen is how many the stream stored up to there, so the events
//! expected; a sequence number missing below it is a lost event, one seen twice a duplicated
//! event) and, for the calls answered, the progress steps against the steps asked for.
//!
//! Targets: no lost or duplicated event; every failed call was running on a replica killed
//! while it was in flight and fails with a clear error (the JSON-RPC error "the runtime
//! replica running this call stopped", or a stream cut before its first event, which carries
//! no id to resume from); some calls complete. A replica is out of the round robin from just
//! before it is killed until it answers again with its store reachable, as a balancer's health
//! check would take it out; a call that picked it just before is one of its in-flight calls.
//!
//! The quick variant runs in the process suite; the long one is ignored and run by
//! `make soak-replicas DURATION=60 KILL_EVERY=10` (`REPLICA_SOAK_SECS`,
//! `REPLICA_SOAK_KILL_EVERY_S`, `REPLICA_SOAK_CLIENTS`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt as _;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

use super::{Replicas, alice};
use crate::support::*;

/// Progress notifications per call and their interval: a call streams for about 0.5 s.
const STEPS: u64 = 10;
const INTERVAL_MS: u64 = 50;

/// The longest a stream (or its resumption) may stay silent before the client gives up.
const SILENCE: Duration = Duration::from_secs(30);

/// Resumptions of one call before it is counted as failed.
const MAX_RESUMES: u64 = 5;

/// What to run.
#[derive(Debug, Clone, Copy)]
struct SoakConfig {
    /// Traffic time.
    duration: Duration,
    /// Time between two kills (the replicas are killed in turn).
    kill_every: Duration,
    /// Clients, each with its own session, one call at a time.
    clients: usize,
}

/// How a call ended.
#[derive(Debug)]
enum Outcome {
    /// Answered with a result.
    Completed,
    /// Failed: a short description of the error.
    Failed(String),
}

/// The soak's counts.
#[derive(Debug, Default)]
struct Counts {
    started: u64,
    completed: u64,
    failed: BTreeMap<String, u64>,
    /// Failed calls not in flight on a replica that was killed.
    failed_unexplained: Vec<String>,
    resumes: u64,
    /// Calls resumed more than once (a resumption cut or refused in turn).
    resumed_again: u64,
    /// Calls answered with their result after a resumption.
    completed_after_resume: u64,
    streams: u64,
    /// Events with ids: the sum over streams of the highest sequence number seen.
    events_expected: u64,
    /// Distinct events with ids received.
    events_received: u64,
    lost: u64,
    duplicated: u64,
    /// Progress steps of the answered calls: asked for and received.
    steps_expected: u64,
    steps_received: u64,
    kills: u64,
    /// Calls running on a replica when it was killed (summed over the kills).
    in_flight_at_kills: u64,
}

/// State shared by the clients and the killer.
struct Shared {
    sockets: Vec<PathBuf>,
    /// Whether each replica is in the round robin.
    up: Vec<AtomicBool>,
    /// How many times each replica was killed.
    generation: Vec<AtomicU64>,
    /// Calls running on each replica (started there and not yet ended).
    in_flight: Vec<AtomicU64>,
    next: AtomicUsize,
    stop: AtomicBool,
    counts: Mutex<Counts>,
}

impl Shared {
    /// The next replica in the round robin that is up, other than `not`.
    async fn pick(&self, not: Option<usize>) -> usize {
        loop {
            for _ in 0..self.sockets.len() {
                let i = self.next.fetch_add(1, Ordering::Relaxed) % self.sockets.len();
                if Some(i) != not && self.up[i].load(Ordering::SeqCst) {
                    return i;
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// The events of one stream by sequence number, with how often each came.
#[derive(Debug, Default)]
struct StreamLog {
    seqs: BTreeMap<u64, u64>,
    steps: BTreeMap<u64, u64>,
}

/// Sends `req` on a new connection to `socket`; the response head, or the error as text.
async fn open(
    socket: &PathBuf,
    req: hyper::Request<Full<Bytes>>,
) -> Result<hyper::Response<hyper::body::Incoming>, String> {
    let stream = tokio::net::UnixStream::connect(socket)
        .await
        .map_err(|e| format!("connect: {}", e.kind()))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(conn);
    sender
        .send_request(req)
        .await
        .map_err(|_| "the connection closed before the response head".to_owned())
}

/// A request of `method` to `/mcp` in session `sid`, with `who`'s AuthContext.
fn request(method: &str, who: &Value, sid: &str) -> hyper::http::request::Builder {
    hyper::Request::builder()
        .method(method)
        .uri("http://localhost/mcp")
        .header("host", "localhost")
        .header("x-contextforge-auth-context", auth_header(who))
        .header("mcp-session-id", sid)
        .header("accept", "application/json, text/event-stream")
}

/// Reads the SSE events of `resp` into `log` until the JSON-RPC answer to `id` (its
/// outcome), or the stream ends or stays silent (`None`: cut). `last` is the id of the last
/// event received.
async fn read(
    resp: hyper::Response<hyper::body::Incoming>,
    id: i64,
    log: &mut StreamLog,
    last: &mut Option<String>,
) -> Option<Outcome> {
    let mut events = sse_stream::SseStream::new(resp.into_body());
    loop {
        let e = match tokio::time::timeout(SILENCE, events.next()).await {
            Ok(Some(Ok(e))) => e,
            _ => return None,
        };
        if let Some(eid) = &e.id {
            let seq = eid
                .rsplit('-')
                .next()
                .and_then(|s| s.parse::<u64>().ok())
                .expect("an event id <stream>-<ms>-<seq>");
            *log.seqs.entry(seq).or_default() += 1;
            *last = Some(eid.clone());
        }
        let Some(v) = e
            .data
            .as_deref()
            .and_then(|d| serde_json::from_str::<Value>(d).ok())
        else {
            continue;
        };
        if v["method"] == "notifications/progress" {
            if let Some(p) = v["params"]["progress"].as_f64() {
                *log.steps.entry(p as u64).or_default() += 1;
            }
        } else if v["id"] == json!(id) {
            return Some(if v.get("result").is_some() {
                Outcome::Completed
            } else {
                let msg = v["error"]["message"].as_str().unwrap_or("?").to_owned();
                Outcome::Failed(format!("JSON-RPC error {}: {msg}", v["error"]["code"]))
            });
        }
    }
}

/// One call: a POST streamed from replica `first`, resumed on other replicas while cut.
/// Returns the outcome, its stream's events and how many times it was resumed.
async fn call(
    s: &Shared,
    who: &Value,
    sid: &str,
    id: i64,
    first: usize,
) -> (Outcome, StreamLog, u64) {
    let mut log = StreamLog::default();
    let mut last: Option<String> = None;
    let mut resumes = 0;
    let body = rpc(
        id,
        "tools/call",
        json!({"name": "progress", "arguments": {"steps": STEPS, "interval_ms": INTERVAL_MS},
            "_meta": {"progressToken": format!("p{id}")}}),
    );
    let req = request("POST", who, sid)
        .header("content-type", "application/json")
        .body(Full::new(body))
        .expect("request");
    let mut on = first;
    let mut outcome = match open(&s.sockets[on], req).await {
        Err(e) => return (Outcome::Failed(e), log, 0),
        Ok(resp) if resp.status() != 200 => {
            return (
                Outcome::Failed(format!("POST answered {}", resp.status())),
                log,
                0,
            );
        }
        Ok(resp) => read(resp, id, &mut log, &mut last).await,
    };
    while outcome.is_none() {
        let Some(from) = last.clone() else {
            return (
                Outcome::Failed("stream cut before its first event".to_owned()),
                log,
                resumes,
            );
        };
        if resumes == MAX_RESUMES {
            return (
                Outcome::Failed(format!("stream still cut after {MAX_RESUMES} resumptions")),
                log,
                resumes,
            );
        }
        resumes += 1;
        on = s.pick(Some(on)).await;
        let req = request("GET", who, sid)
            .header("last-event-id", from)
            .body(Full::new(Bytes::new()))
            .expect("request");
        outcome = match open(&s.sockets[on], req).await {
            // The replica picked was killed meanwhile: resume elsewhere.
            Err(_) => None,
            Ok(resp) if resp.status() != 200 => {
                return (
                    Outcome::Failed(format!("resumption answered {}", resp.status())),
                    log,
                    resumes,
                );
            }
            Ok(resp) => read(resp, id, &mut log, &mut last).await,
        };
    }
    (outcome.expect("an outcome"), log, resumes)
}

/// One client: its own session, calls one after the other until the soak stops.
async fn client(s: Arc<Shared>, n: usize) {
    let who = alice();
    let first = s.pick(None).await;
    let sid = Http::new(&s.sockets[first]).initialize(&who, None).await;
    let mut id = (n as i64) * 1_000_000;
    while !s.stop.load(Ordering::SeqCst) {
        id += 1;
        let on = s.pick(None).await;
        let generation = s.generation[on].load(Ordering::SeqCst);
        s.counts.lock().expect("counts").started += 1;
        s.in_flight[on].fetch_add(1, Ordering::SeqCst);
        let (outcome, log, resumes) = call(&s, &who, &sid, id, on).await;
        s.in_flight[on].fetch_sub(1, Ordering::SeqCst);
        let killed = s.generation[on].load(Ordering::SeqCst) != generation;
        let mut c = s.counts.lock().expect("counts");
        c.resumes += resumes;
        c.resumed_again += u64::from(resumes > 1);
        if !log.seqs.is_empty() {
            c.streams += 1;
            let max = *log.seqs.keys().next_back().expect("a seq");
            c.events_expected += max;
            c.events_received += log.seqs.len() as u64;
            c.lost += (1..=max).filter(|q| !log.seqs.contains_key(q)).count() as u64;
            c.duplicated += log.seqs.values().map(|n| n - 1).sum::<u64>();
        }
        match outcome {
            Outcome::Completed => {
                c.completed += 1;
                c.completed_after_resume += u64::from(resumes > 0);
                c.steps_expected += STEPS;
                c.steps_received += log.steps.len() as u64;
                c.duplicated += log.steps.values().map(|n| n - 1).sum::<u64>();
            }
            Outcome::Failed(e) => {
                if !killed {
                    c.failed_unexplained
                        .push(format!("call {id} on replica {on}: {e}"));
                }
                *c.failed.entry(e).or_default() += 1;
            }
        }
    }
}

/// Runs the soak and prints the report; fails when a target is missed.
async fn soak(cfg: SoakConfig) {
    let mut r = Replicas::start(&[]);
    r.ready().await;
    let n = r.rts.len();
    let shared = Arc::new(Shared {
        sockets: r.rts.iter().map(|rt| rt.http.clone()).collect(),
        up: (0..n).map(|_| AtomicBool::new(true)).collect(),
        generation: (0..n).map(|_| AtomicU64::new(0)).collect(),
        in_flight: (0..n).map(|_| AtomicU64::new(0)).collect(),
        next: AtomicUsize::new(0),
        stop: AtomicBool::new(false),
        counts: Mutex::new(Counts::default()),
    });
    let clients: Vec<_> = (0..cfg.clients)
        .map(|i| tokio::spawn(client(shared.clone(), i)))
        .collect();
    let start = Instant::now();
    let mut kills = 0;
    let mut downtime = Duration::ZERO;
    let mut in_flight_at_kills = 0;
    loop {
        let next_kill = start + cfg.kill_every * (kills as u32 + 1);
        if next_kill >= start + cfg.duration {
            break;
        }
        tokio::time::sleep_until(next_kill.into()).await;
        let victim = kills % n;
        shared.up[victim].store(false, Ordering::SeqCst);
        shared.generation[victim].fetch_add(1, Ordering::SeqCst);
        let down = Instant::now();
        let running = shared.in_flight[victim].load(Ordering::SeqCst);
        in_flight_at_kills += running;
        tokio::task::block_in_place(|| {
            r.kill(victim);
            r.restart(victim);
        });
        let h = Http::new(&r.rts[victim].http);
        let deadline = Instant::now() + Duration::from_secs(30);
        while h.health().await.1["state_store"]["reachable"] != json!(true) {
            assert!(
                Instant::now() < deadline,
                "replica {victim} not back in 30 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        downtime += down.elapsed();
        shared.up[victim].store(true, Ordering::SeqCst);
        kills += 1;
        eprintln!(
            "replica soak: t={:.1}s killed replica {victim} with {running} calls in flight, \
             restarted it (back in {:.2} s)",
            start.elapsed().as_secs_f64(),
            down.elapsed().as_secs_f64()
        );
    }
    tokio::time::sleep_until((start + cfg.duration).into()).await;
    shared.stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.await.expect("a client panicked");
    }
    let secs = start.elapsed().as_secs_f64();
    let mut c = shared.counts.lock().expect("counts");
    c.kills = kills as u64;
    c.in_flight_at_kills = in_flight_at_kills;
    eprintln!(
        "replica soak: {secs:.1} s, {} clients, {} replicas on one redis-server, a kill every {:.1} s \
         ({kills} kills, {:.2} s mean time to back)",
        cfg.clients,
        n,
        cfg.kill_every.as_secs_f64(),
        if kills > 0 {
            downtime.as_secs_f64() / kills as f64
        } else {
            0.0
        }
    );
    eprintln!(
        "  calls: {} started, {} completed, {} failed ({} were in flight on a replica when it was \
         killed); {} resumptions ({} calls answered after one, {} calls resumed more than once)",
        c.started,
        c.completed,
        c.failed.values().sum::<u64>(),
        c.in_flight_at_kills,
        c.resumes,
        c.completed_after_resume,
        c.resumed_again
    );
    for (e, k) in &c.failed {
        eprintln!("  failed x{k}: {e}");
    }
    eprintln!(
        "  events: {} streams, {} expected, {} received, {} lost, {} duplicated; progress steps of \
         answered calls: {} expected, {} received",
        c.streams,
        c.events_expected,
        c.events_received,
        c.lost,
        c.duplicated,
        c.steps_expected,
        c.steps_received
    );
    assert_eq!(c.lost, 0, "lost events: {c:?}");
    assert_eq!(c.duplicated, 0, "duplicated events: {c:?}");
    assert_eq!(c.steps_received, c.steps_expected, "{c:?}");
    assert!(
        c.failed_unexplained.is_empty(),
        "calls failed on a replica that was not killed: {:?}",
        c.failed_unexplained
    );
    let clear = [
        "replica running this call stopped",
        "stream cut before its first event",
        "connect: ",
        "the connection closed before the response head",
    ];
    for e in c.failed.keys() {
        assert!(
            clear.iter().any(|m| e.contains(m)),
            "a failure without a clear error: {e}"
        );
    }
    assert!(
        c.failed.values().sum::<u64>() <= c.in_flight_at_kills,
        "more calls failed than were in flight on the killed replicas: {c:?}"
    );
    assert!(c.kills >= 1, "{c:?}");
    assert!(c.completed > 0, "{c:?}");
    assert_eq!(
        c.started,
        c.completed + c.failed.values().sum::<u64>(),
        "{c:?}"
    );
}

/// `name` from the environment as a number, or `default`.
fn env_f64(name: &str, default: f64) -> f64 {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name}={v}: not a number"))
        })
        .unwrap_or(default)
}

/// A short soak (12 s, a kill every 4 s) in the process suite, so the long one cannot rot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_killed_in_turn_under_load_lose_no_event_and_fail_only_their_calls() {
    soak(SoakConfig {
        duration: Duration::from_secs(12),
        kill_every: Duration::from_secs(4),
        clients: 6,
    })
    .await;
}

/// The long soak of `make soak-replicas` (ignored in `make test`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long run: make soak-replicas"]
async fn soak_replicas() {
    soak(SoakConfig {
        duration: Duration::from_secs_f64(env_f64("REPLICA_SOAK_SECS", 60.0)),
        kill_every: Duration::from_secs_f64(env_f64("REPLICA_SOAK_KILL_EVERY_S", 10.0)),
        clients: env_f64("REPLICA_SOAK_CLIENTS", 8.0) as usize,
    })
    .await;
}
