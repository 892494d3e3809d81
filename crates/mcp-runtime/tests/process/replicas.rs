//! Three runtime processes sharing one real `redis-server` (started here in a temp dir on a
//! Unix socket, no persistence, killed at the end): a session opened on one is used on the
//! others, DELETE on one ends it on all, a `notifications/cancelled` sent to another replica
//! stops the call, the per-subject session limit holds across replicas, two subjects never see
//! each other's sessions or events (guessed session ids, replayed event ids), a stream resumed
//! on another replica after its replica was SIGKILLed gets every stored event exactly once and
//! then the call's error, and Redis stopped answers 503 and recovers once it is back.
//!
//! Needs the `redis-server` binary (Debian package `redis-server`).

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt as _;
use http_body_util::{BodyExt as _, Full};
use serde_json::{Value, json};

use crate::runtime_proc::{Proc, RuntimeProc};
use crate::support::*;

/// A `redis-server` on a Unix socket in a temp dir, killed (and the dir removed) on drop.
struct Redis {
    dir: tempfile::TempDir,
    proc: Option<Proc>,
}

impl Redis {
    fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("redis")
            .tempdir_in("/tmp")
            .expect("tempdir");
        let mut r = Self { dir, proc: None };
        r.restart();
        r
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("redis.sock")
    }

    /// The `--state-url` of the runtimes.
    fn url(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    /// Starts the server (again) on the same socket path, with nothing stored.
    fn restart(&mut self) {
        let _ = std::fs::remove_file(self.socket());
        let child = Command::new("redis-server")
            .args(["--port", "0", "--save", "", "--appendonly", "no"])
            .arg("--unixsocket")
            .arg(self.socket())
            .args(["--unixsocketperm", "700"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start redis-server ({e}): install the Debian package `redis-server`")
            });
        self.proc = Some(Proc(child));
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.client().get_connection().is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not start in 10 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server (every connection to it is cut).
    fn stop(&mut self) {
        self.proc.take();
    }

    fn client(&self) -> redis::Client {
        redis::Client::open(self.url()).expect("redis url")
    }
}

/// Three runtimes on one Redis, on the fixture upstream.
struct Replicas {
    redis: Redis,
    rts: Vec<RuntimeProc>,
    http: Vec<Http>,
    /// The replicas' catalog and flags (a replica is restarted with the same).
    catalog: String,
    args: Vec<String>,
    _fx: Fixture,
}

impl Replicas {
    fn start(extra: &[&str]) -> Self {
        Self::start_on(mcp_fixture_server::SharedState::new(0), 3, extra)
    }

    /// `n` runtimes on a fixture serving `state`.
    fn start_on(state: mcp_fixture_server::SharedState, n: usize, extra: &[&str]) -> Self {
        let fx = Fixture::start_with("127.0.0.1:0".parse().expect("address"), state);
        let redis = Redis::start();
        let url = redis.url();
        let mut args = vec!["--state-url", url.as_str(), "--state-timeout-ms", "500"];
        args.extend_from_slice(extra);
        let catalog = simple_catalog(&fx.url);
        let rts: Vec<_> = (0..n)
            .map(|_| RuntimeProc::start(&catalog, &args))
            .collect();
        let http = rts.iter().map(|rt| Http::new(&rt.http)).collect();
        Self {
            redis,
            rts,
            http,
            catalog,
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            _fx: fx,
        }
    }

    /// SIGKILLs replica `i` (no drain, no goodbye) and waits for it to exit.
    fn kill(&mut self, i: usize) {
        let pid = self.rts[i].pid().to_string();
        assert!(
            Command::new("kill")
                .args(["-KILL", &pid])
                .status()
                .expect("kill")
                .success()
        );
        self.rts[i].wait();
    }

    /// Starts replica `i` again on the same sockets, with the same catalog and flags.
    fn restart(&mut self, i: usize) {
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        self.rts[i].restart(&self.catalog, &args);
    }

    /// Waits until every replica reports its store reachable (subscribed and heartbeating).
    async fn ready(&self) {
        for h in &self.http {
            until(Duration::from_secs(10), "the store reachable", async || {
                h.health().await.1["state_store"]["reachable"] == json!(true)
            })
            .await;
        }
    }
}

/// Polls `cond` every 20 ms until it holds; panics naming `what` after `within`.
async fn until(within: Duration, what: &str, mut cond: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !cond().await {
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn alice() -> Value {
    auth("alice@example.com", false, Some(&[]))
}

fn bob() -> Value {
    auth("bob@example.com", false, Some(&[]))
}

fn echo(who: &Value, sid: &str, id: i64) -> Call {
    Call::post(
        who,
        rpc(
            id,
            "tools/call",
            json!({"name": "echo", "arguments": {"text": "hi"}}),
        ),
    )
    .session(sid)
}

fn cancel(who: &Value, sid: &str, request: i64) -> Call {
    let body = json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
        "params": {"requestId": request, "reason": "test"}});
    Call::post(who, Bytes::from(body.to_string())).session(sid)
}

/// A `tools/call` of `progress`: `steps` notifications `interval_ms` apart, then the result.
fn progress(who: &Value, sid: &str, id: i64, steps: u64, interval_ms: u64) -> Call {
    Call::post(
        who,
        rpc(
            id,
            "tools/call",
            json!({"name": "progress", "arguments": {"steps": steps, "interval_ms": interval_ms},
                "_meta": {"progressToken": "p"}}),
        ),
    )
    .session(sid)
}

/// A GET of session `sid` with `Last-Event-ID: last` on its own connection; the response with
/// its body unread.
async fn resume(
    http: &Http,
    who: &Value,
    sid: &str,
    last: &str,
) -> hyper::Response<hyper::body::Incoming> {
    let (mut sender, _conn) = http.connect().await;
    let req = hyper::Request::get("http://localhost/mcp")
        .header("host", "localhost")
        .header("x-contextforge-auth-context", auth_header(who))
        .header("mcp-session-id", sid)
        .header("accept", "text/event-stream")
        .header("last-event-id", last)
        .body(Full::new(Bytes::new()))
        .expect("request");
    sender.send_request(req).await.expect("send")
}

/// `(id, data)` of every event of a whole SSE response.
async fn all_events(resp: hyper::Response<hyper::body::Incoming>) -> Vec<(String, String)> {
    let body = tokio::time::timeout(Duration::from_secs(30), resp.into_body().collect())
        .await
        .expect("the stream ended within 30 s")
        .expect("body")
        .to_bytes();
    sse_stream::SseStream::new(Full::new(body))
        .map(|e| {
            let e = e.expect("an SSE event");
            (e.id.unwrap_or_default(), e.data.unwrap_or_default())
        })
        .collect()
        .await
}

/// The `seq` of an event id `<stream>-<ms>-<seq>`.
fn seq(id: &str) -> u64 {
    id.rsplit('-')
        .next()
        .and_then(|s| s.parse().ok())
        .expect("an event id")
}

fn stream_of(id: &str) -> &str {
    id.split('-').next().expect("an event id")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_opened_on_one_replica_is_used_on_the_others_and_delete_ends_it_on_all() {
    let r = Replicas::start(&[]);
    r.ready().await;
    let (a, b, c) = (&r.http[0], &r.http[1], &r.http[2]);
    let who = alice();
    let sid = a.initialize(&who, None).await;
    // Cached on A and C, loaded on B.
    for (i, h) in r.http.iter().enumerate() {
        assert_eq!(
            h.send(&ping(&who, i as i64, &sid)).await.status,
            200,
            "replica {i}"
        );
    }
    let answer = c.send(&echo(&who, &sid, 5)).await;
    assert_eq!(answer.status, 200);
    assert_eq!(
        answer.json()["result"]["content"][0]["text"],
        "hi",
        "{:?}",
        answer.json()
    );
    let (_, health) = b.health().await;
    assert_eq!(
        health["state_store"],
        json!({"kind": "redis", "reachable": true})
    );
    // DELETE on B ends it on every replica, also where it is cached.
    assert_eq!(
        b.send(&Call::bodyless("DELETE", &who, &sid)).await.status,
        200
    );
    for (i, h) in r.http.iter().enumerate() {
        until(
            Duration::from_secs(5),
            "the deleted session answered 404",
            async || h.send(&ping(&who, 9, &sid)).await.status == 404,
        )
        .await;
        let _ = i;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_or_delete_sent_to_another_replica_stops_the_call() {
    let r = Replicas::start(&[]);
    r.ready().await;
    let (a, b, c) = (&r.http[0], &r.http[1], &r.http[2]);
    let who = alice();
    let sid = a.initialize(&who, None).await;
    for (stop, what) in [(b, "notifications/cancelled"), (c, "DELETE")] {
        let call = a.spawn(sleep_call(&who, &sid, 7, 60_000));
        b.until_inflight(&who, &sid, 1, Duration::from_secs(10))
            .await;
        let sent = if what == "DELETE" {
            stop.send(&Call::bodyless("DELETE", &who, &sid)).await
        } else {
            stop.send(&cancel(&who, &sid, 7)).await
        };
        assert!(
            sent.status == 202 || sent.status == 200,
            "{what}: {}",
            sent.status
        );
        let answer = tokio::time::timeout(Duration::from_secs(10), call)
            .await
            .unwrap_or_else(|_| panic!("{what}: the call still runs after 10 s"))
            .expect("call task");
        assert_eq!(
            answer.json()["error"]["message"],
            "Request cancelled",
            "{what}"
        );
        // The upstream stopped working (counted through another session).
        let other = c.initialize(&who, None).await;
        c.until_inflight(&who, &other, 0, Duration::from_secs(10))
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_subject_session_limit_holds_across_replicas() {
    let r = Replicas::start(&["--max-sessions-per-subject", "2"]);
    r.ready().await;
    let (a, b, c) = (&r.http[0], &r.http[1], &r.http[2]);
    let who = alice();
    let first = a.initialize(&who, None).await;
    let _second = b.initialize(&who, None).await;
    let refused = c.send(&Call::post(&who, initialize_body())).await;
    assert_eq!(refused.status, 429);
    assert!(refused.session_id.is_none());
    // Another subject is not affected.
    let _bobs = c.initialize(&bob(), None).await;
    // Ending one anywhere frees a slot everywhere.
    assert_eq!(
        c.send(&Call::bodyless("DELETE", &who, &first)).await.status,
        200
    );
    let _third = c.initialize(&who, None).await;
    assert_eq!(
        a.send(&Call::post(&who, initialize_body())).await.status,
        429
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_subjects_never_see_each_others_sessions_or_events() {
    let r = Replicas::start(&[]);
    r.ready().await;
    let (a, b, c) = (&r.http[0], &r.http[1], &r.http[2]);
    let (alice, bob) = (alice(), bob());
    let alices = a.initialize(&alice, None).await;
    let bobs = b.initialize(&bob, None).await;
    // Alice's streamed call: its events carry ids.
    let streamed = a.send(&progress(&alice, &alices, 3, 3, 10)).await;
    assert_eq!(streamed.content_type.as_deref(), Some("text/event-stream"));
    let ids: Vec<String> = sse_stream::SseStream::new(Full::new(streamed.body.clone()))
        .map(|e| e.expect("event").id.expect("every event has an id"))
        .collect()
        .await;
    let seqs: Vec<u64> = ids.iter().map(|i| seq(i)).collect();
    assert!(ids.len() >= 4, "{ids:?}");
    assert_eq!(seqs, (1..=ids.len() as u64).collect::<Vec<_>>());
    assert!(ids.iter().all(|i| stream_of(i) == stream_of(&ids[0])));
    // Bob with Alice's session id, on every replica: as an unknown session.
    for h in &r.http {
        assert_eq!(h.send(&ping(&bob, 1, &alices)).await.status, 404);
        let r = resume(h, &bob, &alices, &ids[0]).await;
        assert_eq!(r.status(), 404);
    }
    // A guessed session id.
    assert_eq!(c.send(&ping(&bob, 1, &"0".repeat(32))).await.status, 404);
    // Alice's event ids in Bob's session: nothing of hers, on every replica.
    for h in &r.http {
        for id in [&ids[0], &ids[2]] {
            let resp = resume(h, &bob, &bobs, id).await;
            assert_eq!(resp.status(), 400);
            let body = resp.into_body().collect().await.expect("body").to_bytes();
            let text = String::from_utf8_lossy(&body);
            assert!(text.contains("Last-Event-ID"), "{text}");
            assert!(!text.contains("progress"), "{text}");
        }
        for bad in ["nonsense", "0123456789abcdef-1-1"] {
            assert_eq!(resume(h, &bob, &bobs, bad).await.status(), 400, "{bad}");
        }
    }
    // Alice herself replays exactly the events after hers, on another replica.
    let replay = all_events(resume(c, &alice, &alices, &ids[1]).await).await;
    let replayed: Vec<&str> = replay.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(
        replayed,
        ids[2..].iter().map(String::as_str).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_resumed_after_its_replica_was_killed_gets_every_stored_event_once_then_the_error()
{
    let mut r = Replicas::start(&[]);
    r.ready().await;
    let who = alice();
    let sid = r.http[0].initialize(&who, None).await;
    // 1,000 progress notifications 20 ms apart on A: it runs until A is killed.
    let resp = r.http[0].open(&progress(&who, &sid, 11, 1000, 20)).await;
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut events = sse_stream::SseStream::new(resp.into_body());
    let mut seen = Vec::new();
    while seen.len() < 5 {
        let e = tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .expect("an event within 10 s")
            .expect("the stream goes on")
            .expect("an SSE event");
        seen.push((e.id.expect("an id"), e.data.unwrap_or_default()));
    }
    // SIGKILL: no drain, no goodbye.
    let pid = r.rts[0].pid().to_string();
    assert!(
        Command::new("kill")
            .args(["-KILL", &pid])
            .status()
            .expect("kill")
            .success()
    );
    r.rts[0].wait();
    drop(events);
    // What A stored of the stream before it died.
    let key = format!("mcp:ev:{sid}:{}", stream_of(&seen[0].0));
    let stored: usize = redis::cmd("XLEN")
        .arg(&key)
        .query(&mut r.redis.client().get_connection().expect("redis"))
        .expect("XLEN");
    assert!(stored >= 5, "{stored} events stored");
    // Resumed on B after the third event: every stored event after it, once, in order, then
    // the call's error.
    let replay = all_events(resume(&r.http[1], &who, &sid, &seen[2].0).await).await;
    let (last, replayed) = replay.split_last().expect("events");
    let seqs: Vec<u64> = replayed.iter().map(|(id, _)| seq(id)).collect();
    assert_eq!(seqs, (4..=stored as u64).collect::<Vec<_>>());
    assert_eq!(
        &replayed[..2],
        &seen[3..5],
        "the events seen on A are replayed as they were"
    );
    let error: Value = serde_json::from_str(&last.1).expect("json");
    assert_eq!(error["id"], 11);
    assert!(
        error["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("replica running this call stopped")),
        "{error}"
    );
    // The same again on C: a resumption is repeatable, never shared with another stream.
    let again = all_events(resume(&r.http[2], &who, &sid, &seen[2].0).await).await;
    assert_eq!(again.len(), replay.len());
}

/// `(kind, reachable)` of the state store as the gRPC `HealthCheck` reports it.
#[cfg(feature = "grpc-uds")]
async fn grpc_store_health(path: &std::path::Path) -> (String, bool) {
    let h = crate::support::grpc::connect(path)
        .await
        .health_check(mcp_runtime_proto::v1::HealthCheckRequest {})
        .await
        .expect("HealthCheck")
        .into_inner();
    let s = h.state_store.expect("state_store (contract 1.2)");
    (s.kind, s.reachable)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stopped_answers_503_within_the_bound_and_recovers_when_it_is_back() {
    let mut r = Replicas::start(&[]);
    r.ready().await;
    let who = alice();
    let sid = r.http[0].initialize(&who, None).await;
    assert_eq!(r.http[1].send(&ping(&who, 1, &sid)).await.status, 200);
    #[cfg(feature = "grpc-uds")]
    for rt in &r.rts {
        assert_eq!(grpc_store_health(&rt.grpc).await, ("redis".into(), true));
    }
    r.redis.stop();
    // Every replica notices; a cached session is not served on trust while the invalidation
    // channel is down.
    for (i, h) in r.http.iter().enumerate() {
        until(
            Duration::from_secs(10),
            "health reports the store unreachable",
            async || h.health().await.1["state_store"]["reachable"] == json!(false),
        )
        .await;
        // `HealthCheck` says the same as `/health` (contract 1.2).
        #[cfg(feature = "grpc-uds")]
        assert_eq!(
            grpc_store_health(&r.rts[i].grpc).await,
            ("redis".into(), false)
        );
        let _ = i;
        let refused = h.send(&ping(&who, 2, &sid)).await;
        assert_eq!(refused.status, 503, "{:?}", refused.body);
        assert_eq!(refused.retry_after.as_deref(), Some("1"));
        assert!(
            refused.json()["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("state store")),
        );
        assert_eq!(
            h.send(&Call::post(&who, initialize_body())).await.status,
            503
        );
    }
    // Back (empty: it kept nothing): the old session is gone everywhere, new ones work.
    r.redis.restart();
    for h in &r.http {
        until(
            Duration::from_secs(10),
            "initialize served again",
            async || h.send(&Call::post(&who, initialize_body())).await.status == 200,
        )
        .await;
    }
    r.ready().await;
    for h in &r.http {
        assert_eq!(h.send(&ping(&who, 3, &sid)).await.status, 404);
    }
    let fresh = r.http[2].initialize(&who, None).await;
    assert_eq!(r.http[0].send(&ping(&who, 4, &fresh)).await.status, 200);
}

/// A request refused because Redis is down is counted in `mcp_state_errors_total` by the
/// operation that failed (one runtime on Redis, its metrics listener scraped).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_store_failure_is_counted_by_its_operation() {
    use crate::observability::{free_addr, get, until_listening};
    let fx = Fixture::start();
    let mut redis = Redis::start();
    let url = redis.url();
    let addr = free_addr();
    let a = addr.to_string();
    let rt = RuntimeProc::start(
        &simple_catalog(&fx.url),
        &[
            "--state-url",
            &url,
            "--state-timeout-ms",
            "500",
            "--metrics-listen",
            &a,
        ],
    );
    until_listening(addr).await;
    let http = Http::new(&rt.http);
    let who = alice();
    let sid = http.initialize(&who, None).await;
    let (_, before) = get(addr, "/metrics").await;
    assert!(
        !before.contains("mcp_state_errors_total{"),
        "no state error yet:\n{before}"
    );
    redis.stop();
    until(Duration::from_secs(10), "a request refused", async || {
        http.send(&Call::post(&who, initialize_body())).await.status == 503
    })
    .await;
    let _ = sid;
    let (_, text) = get(addr, "/metrics").await;
    let counted: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("mcp_state_errors_total{operation="))
        .collect();
    assert!(
        counted
            .iter()
            .any(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) >= Some(1.0)),
        "state store failures counted by operation:\n{text}"
    );
}

/// Resumption through the gRPC adapter: `InvokeStream` with `headers.last_event_id`, as the
/// gateway's gRPC mode relays a `GET` with `Last-Event-ID`.
#[cfg(feature = "grpc-uds")]
mod grpc_resumption {
    use super::*;
    use crate::support::grpc;
    use mcp_runtime_proto::v1 as pb;
    use pb::invoke_stream_response::Part;

    /// `InvokeStream` of `call` (with `Last-Event-ID: last` when given): the head's status and
    /// a stream of `(id, data)`, read as they come.
    async fn open(
        path: &std::path::Path,
        call: &Call,
        last: Option<&str>,
    ) -> (
        u32,
        impl futures::Stream<Item = (String, String)> + Unpin + use<>,
    ) {
        let mut client = grpc::connect(path).await;
        let mut envelope = grpc::envelope(call);
        if let Some(last) = last {
            envelope.headers.as_mut().expect("headers").last_event_id = last.to_owned();
        }
        let mut s = client
            .invoke_stream(pb::InvokeStreamRequest {
                envelope: Some(envelope),
            })
            .await
            .expect("InvokeStream")
            .into_inner();
        let head = tokio::time::timeout(Duration::from_secs(10), s.message())
            .await
            .expect("the head within 10 s")
            .expect("stream")
            .and_then(|m| m.part);
        let Some(Part::Head(head)) = head else {
            panic!("the first message is not the head: {head:?}")
        };
        let events = Box::pin(futures::stream::unfold(s, |mut s| async move {
            match s.message().await.expect("stream")?.part? {
                Part::Event(e) => Some(((e.id, e.data), s)),
                Part::BodyChunk(b) => {
                    Some(((String::new(), String::from_utf8_lossy(&b).into_owned()), s))
                }
                Part::Head(h) => panic!("a second head: {h:?}"),
            }
        }));
        (head.http_status, events)
    }

    /// Every `(id, data)` of a whole stream, within 30 s.
    async fn collect(
        events: impl futures::Stream<Item = (String, String)> + Unpin,
    ) -> Vec<(String, String)> {
        tokio::time::timeout(Duration::from_secs(30), events.collect::<Vec<_>>())
            .await
            .expect("the stream ended within 30 s")
    }

    fn get(who: &Value, sid: &str) -> Call {
        let mut call = Call::bodyless("GET", who, sid);
        call.accept = Some("text/event-stream".into());
        call
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stream_is_resumed_on_another_replica_through_grpc_as_through_http() {
        let r = Replicas::start(&[]);
        r.ready().await;
        let (alice, bob) = (alice(), bob());
        let mut a = grpc::connect(&r.rts[0].grpc).await;
        let sid = grpc::initialize(&mut a, &alice, None).await;
        let bobs = grpc::initialize(&mut a, &bob, None).await;
        // A streamed call over gRPC on A: every event carries an id.
        let (status, events) = open(&r.rts[0].grpc, &progress(&alice, &sid, 3, 3, 10), None).await;
        assert_eq!(status, 200);
        let seen = collect(events).await;
        assert!(seen.len() >= 4, "{seen:?}");
        let seqs: Vec<u64> = seen.iter().map(|(id, _)| seq(id)).collect();
        assert_eq!(seqs, (1..=seen.len() as u64).collect::<Vec<_>>());
        // Resumed after the second event over gRPC on B: the rest, once, in order, as sent.
        let (status, events) = open(&r.rts[1].grpc, &get(&alice, &sid), Some(&seen[1].0)).await;
        assert_eq!(status, 200);
        assert_eq!(collect(events).await, seen[2..]);
        // The same id over HTTP on C: the same events (one history for both adapters).
        let over_http = all_events(resume(&r.http[2], &alice, &sid, &seen[1].0).await).await;
        assert_eq!(over_http, seen[2..]);
        // A stream made over HTTP, resumed over gRPC.
        let streamed = r.http[2].send(&progress(&alice, &sid, 4, 2, 10)).await;
        let http_ids: Vec<(String, String)> =
            sse_stream::SseStream::new(Full::new(streamed.body.clone()))
                .map(|e| {
                    let e = e.expect("event");
                    (e.id.expect("an id"), e.data.unwrap_or_default())
                })
                .collect()
                .await;
        let (status, events) = open(&r.rts[1].grpc, &get(&alice, &sid), Some(&http_ids[0].0)).await;
        assert_eq!(status, 200);
        assert_eq!(collect(events).await, http_ids[1..]);
        // Alice's ids in Bob's session, and malformed ids: 400 with nobody's events, on every
        // replica; Alice's session as Bob: 404.
        for rt in &r.rts {
            for last in [seen[0].0.as_str(), "nonsense", "0123456789abcdef-1-1"] {
                let (status, events) = open(&rt.grpc, &get(&bob, &bobs), Some(last)).await;
                assert_eq!(status, 400, "{last}");
                let body = collect(events).await;
                let text: String = body.into_iter().map(|(_, d)| d).collect();
                assert!(text.contains("Last-Event-ID"), "{text}");
                assert!(!text.contains("progress"), "{text}");
            }
            let (status, _) = open(&rt.grpc, &get(&bob, &sid), Some(&seen[0].0)).await;
            assert_eq!(status, 404);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_grpc_stream_of_a_killed_replica_is_resumed_over_grpc_with_every_stored_event_then_the_error()
     {
        let mut r = Replicas::start(&[]);
        r.ready().await;
        let who = alice();
        let mut a = grpc::connect(&r.rts[0].grpc).await;
        let sid = grpc::initialize(&mut a, &who, None).await;
        let (status, mut events) =
            open(&r.rts[0].grpc, &progress(&who, &sid, 11, 1000, 20), None).await;
        assert_eq!(status, 200);
        let mut seen = Vec::new();
        while seen.len() < 5 {
            let e = tokio::time::timeout(Duration::from_secs(10), events.next())
                .await
                .expect("an event within 10 s")
                .expect("the stream goes on");
            seen.push(e);
        }
        let pid = r.rts[0].pid().to_string();
        assert!(
            Command::new("kill")
                .args(["-KILL", &pid])
                .status()
                .expect("kill")
                .success()
        );
        r.rts[0].wait();
        drop(events);
        let key = format!("mcp:ev:{sid}:{}", stream_of(&seen[0].0));
        let stored: usize = redis::cmd("XLEN")
            .arg(&key)
            .query(&mut r.redis.client().get_connection().expect("redis"))
            .expect("XLEN");
        assert!(stored >= 5, "{stored} events stored");
        let (status, events) = open(&r.rts[1].grpc, &get(&who, &sid), Some(&seen[2].0)).await;
        assert_eq!(status, 200);
        let replay = collect(events).await;
        let (last, replayed) = replay.split_last().expect("events");
        let seqs: Vec<u64> = replayed.iter().map(|(id, _)| seq(id)).collect();
        assert_eq!(seqs, (4..=stored as u64).collect::<Vec<_>>());
        assert_eq!(&replayed[..2], &seen[3..5]);
        let error: Value = serde_json::from_str(&last.1).expect("json");
        assert_eq!(error["id"], 11);
        assert!(
            error["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("replica running this call stopped")),
            "{error}"
        );
    }
}

/// Redis memory per session, and that expired sessions leave nothing behind (`make
/// redis-memory`; ignored in `make test`: it waits for the idle TTL). One runtime on a fresh
/// Redis opens `REDIS_MEMORY_SESSIONS` (default 10,000) sessions for 100 subjects; Redis's
/// `used_memory` before and after gives the bytes per session (the session hash, its member
/// in the subject's sorted set, the sets themselves); then, with no request, every session
/// expires after the idle TTL (`REDIS_MEMORY_TTL_S`, default 30) and the keys left are exactly
/// those there were before (the replica's liveness key).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "waits for the idle TTL; run by `make redis-memory`"]
async fn redis_memory_per_session_and_nothing_left_after_expiry() {
    let env_or = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(default)
    };
    let sessions = env_or("REDIS_MEMORY_SESSIONS", 10_000);
    let ttl_s = env_or("REDIS_MEMORY_TTL_S", 30);
    let subjects = 100u64;
    let fx = Fixture::start();
    let redis = Redis::start();
    let url = redis.url();
    let ttl = ttl_s.to_string();
    let cap = sessions.div_ceil(subjects).to_string();
    let rt = RuntimeProc::start(
        &simple_catalog(&fx.url),
        &[
            "--state-url",
            &url,
            "--session-idle-ttl-s",
            &ttl,
            "--max-sessions-per-subject",
            &cap,
        ],
    );
    let http = Http::new(&rt.http);
    until(Duration::from_secs(10), "the store reachable", async || {
        http.health().await.1["state_store"]["reachable"] == json!(true)
    })
    .await;
    let mut con = redis.client().get_connection().expect("redis");
    let used = |con: &mut redis::Connection| -> u64 {
        let info: String = redis::cmd("INFO").arg("memory").query(con).expect("INFO");
        info.lines()
            .find_map(|l| l.strip_prefix("used_memory:"))
            .and_then(|v| v.trim().parse().ok())
            .expect("used_memory")
    };
    let keys = |con: &mut redis::Connection| -> Vec<String> {
        let mut k: Vec<String> = redis::cmd("KEYS").arg("*").query(con).expect("KEYS");
        k.sort();
        k
    };
    let keys_before = keys(&mut con);
    let before = used(&mut con);
    let start = Instant::now();
    let made: Vec<String> = futures::stream::iter(0..sessions)
        .map(|i| {
            let http = &http;
            async move {
                let who = auth(
                    &format!("user{}@example.com", i % subjects),
                    false,
                    Some(&[]),
                );
                http.initialize(&who, None).await
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let took = start.elapsed();
    assert!(
        took < Duration::from_secs(ttl_s) / 2,
        "opening {sessions} sessions took {took:?}, more than half the idle TTL: raise REDIS_MEMORY_TTL_S"
    );
    assert_eq!(made.len() as u64, sessions);
    let after = used(&mut con);
    let session_keys = keys(&mut con)
        .iter()
        .filter(|k| k.starts_with("mcp:s:"))
        .count();
    assert_eq!(session_keys as u64, sessions);
    let one: u64 = redis::cmd("MEMORY")
        .arg("USAGE")
        .arg(format!("mcp:s:{}", made[0]))
        .query(&mut con)
        .expect("MEMORY USAGE");
    let set: u64 = redis::cmd("MEMORY")
        .arg("USAGE")
        .arg("mcp:subj:user0@example.com")
        .query(&mut con)
        .expect("MEMORY USAGE");
    eprintln!(
        "redis used_memory: {before} bytes before, {after} bytes with {sessions} sessions of {subjects} subjects \
         ({} bytes per session; MEMORY USAGE of one session hash {one} bytes, of one subject's sorted set of {} members {set} bytes); \
         opened in {took:.1?}",
        after.saturating_sub(before) / sessions,
        sessions / subjects,
    );
    // No request from now on: every session expires after the idle TTL.
    let deadline = Instant::now() + Duration::from_secs(ttl_s + 30);
    loop {
        let now = keys(&mut con);
        if now == keys_before {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} keys left {}s after the idle TTL, e.g. {:?}",
            now.len(),
            30,
            now.iter().take(5).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let expired = used(&mut con);
    eprintln!(
        "after expiry: {} keys, as before ({keys_before:?}); used_memory {expired} bytes ({} bytes above before)",
        keys_before.len(),
        expired as i64 - before as i64
    );
    // An expired session answers 404 on the replica that made it.
    let who = auth("user0@example.com", false, Some(&[]));
    assert_eq!(http.send(&ping(&who, 1, &made[0])).await.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_a_stream_does_not_cancel_the_call_and_resumes_it_elsewhere_to_the_answer()
 {
    let r = Replicas::start(&[]);
    r.ready().await;
    let who = alice();
    let sid = r.http[0].initialize(&who, None).await;
    // 20 progress notifications 50 ms apart on A; the client reads three, then leaves.
    let resp = r.http[0].open(&progress(&who, &sid, 12, 20, 50)).await;
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut events = sse_stream::SseStream::new(resp.into_body());
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let e = tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .expect("an event within 10 s")
            .expect("the stream goes on")
            .expect("an SSE event");
        seen.push((e.id.expect("an id"), e.data.unwrap_or_default()));
    }
    drop(events);
    // The call runs on upstream (MCP: a disconnection SHOULD NOT cancel it).
    r.http[1]
        .until_inflight(&who, &sid, 1, Duration::from_secs(10))
        .await;
    // Resumed on B after the third event: the rest, once, in order, ending with the result.
    let replay = all_events(resume(&r.http[1], &who, &sid, &seen[2].0).await).await;
    let seqs: Vec<u64> = replay.iter().map(|(id, _)| seq(id)).collect();
    assert_eq!(seqs, (4..4 + replay.len() as u64).collect::<Vec<_>>());
    let (last, notes) = replay.split_last().expect("events");
    // Steps 1 to 3 were seen on A; 4 to 20 come with the resumption (then the fixture's log
    // message and the answer).
    let steps: Vec<u64> = notes
        .iter()
        .filter_map(|(_, d)| {
            let v: Value = serde_json::from_str(d).ok()?;
            (v["method"] == "notifications/progress").then(|| v["params"]["progress"].as_f64())?
        })
        .map(|p| p as u64)
        .collect();
    assert_eq!(steps, (4..=20).collect::<Vec<_>>(), "{notes:?}");
    let answer: Value = serde_json::from_str(&last.1).expect("json");
    assert_eq!(answer["id"], 12);
    assert!(answer.get("result").is_some(), "{answer}");
    r.http[2]
        .until_inflight(&who, &sid, 0, Duration::from_secs(10))
        .await;
}

mod listen;
mod notify;
mod soak;
