//! The upstream side: per-call timeout, cancellation reaching the upstream, the shared session
//! re-established after an upstream restart, size limits, the standalone GET stream, and a
//! session ended during a stream. (Graceful shutdown with a call in flight, on SIGTERM:
//! `tests/process/shutdown.rs`.)

use std::time::Duration;

use serde_json::{Value, json};

use crate::sidecar::{Options, Sidecar};
use crate::support::*;

/// Polls until the fixture reports no `sleep` call running; panics after 5 s.
async fn until_no_sleep_runs(http: &Http, who: &Value, sid: &str) {
    http.until_inflight(who, sid, 0, Duration::from_secs(5))
        .await;
}

/// Starts a 30 s `sleep` call with JSON-RPC id `id` on its own connection and waits until it
/// runs at the upstream.
async fn start_sleep(
    http: &Http,
    who: &Value,
    sid: &str,
    id: i64,
) -> tokio::task::JoinHandle<Reply> {
    let task = http.spawn(sleep_call(who, sid, id, 30_000));
    http.until_inflight(who, sid, 1, Duration::from_secs(5))
        .await;
    task
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_call_times_out_and_is_cancelled_upstream() {
    let fx = Fixture::start();
    let rt = Sidecar::with(
        &simple_catalog(&fx.url),
        Options {
            upstream_timeout: Duration::from_millis(300),
            ..Options::default()
        },
    )
    .await;
    let http = Http::new(&rt.http);
    let who = auth("alice@example.com", false, Some(&[]));
    let sid = http.initialize(&who, None).await;
    let r = http.send(&sleep_call(&who, &sid, 1, 30_000)).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.error_code(), Some(-32001), "{:?}", r.json());
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("timed out after 300 ms")
    );
    until_no_sleep_runs(&http, &who, &sid).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_goes_away_cancels_the_upstream_call() {
    let fx = Fixture::start();
    let rt = Sidecar::start(&simple_catalog(&fx.url)).await;
    let http = Http::new(&rt.http);
    let who = auth("alice@example.com", false, Some(&[]));
    let sid = http.initialize(&who, None).await;
    let task = start_sleep(&http, &who, &sid, 2).await;
    task.abort();
    until_no_sleep_runs(&http, &who, &sid).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_cancelled_from_the_client_stops_the_call() {
    let fx = Fixture::start();
    let rt = Sidecar::start(&simple_catalog(&fx.url)).await;
    let http = Http::new(&rt.http);
    let who = auth("alice@example.com", false, Some(&[]));
    let sid = http.initialize(&who, None).await;
    let task = start_sleep(&http, &who, &sid, 77).await;
    let cancel = bytes::Bytes::from(
        json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 77}})
            .to_string(),
    );
    assert_eq!(
        http.send(&Call::post(&who, cancel).session(&sid))
            .await
            .status,
        202
    );
    let r = task.await.unwrap();
    assert_eq!(r.error_code(), Some(-32603), "{:?}", r.json());
    until_no_sleep_runs(&http, &who, &sid).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstream_session_is_re_established_after_a_restart() {
    let fx = Fixture::start();
    let addr = fx.addr();
    let rt = Sidecar::start(&simple_catalog(&fx.url)).await;
    let http = Http::new(&rt.http);
    let who = auth("alice@example.com", false, Some(&[]));
    let sid = http.initialize(&who, None).await;
    let echo = Call::post(
        &who,
        rpc(
            1,
            "tools/call",
            json!({"name": "echo", "arguments": {"text": "a"}}),
        ),
    )
    .session(&sid);
    assert_eq!(
        http.send(&echo)
            .await
            .json()
            .pointer("/result/content/0/text"),
        Some(&json!("a"))
    );
    drop(fx);
    let down = http.send(&echo).await;
    assert_eq!(
        (down.status, down.error_code()),
        (200, Some(-32603)),
        "upstream down is a JSON-RPC error"
    );
    let message = down.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(
        !message.contains("127.0.0.1") && !message.contains("fixture"),
        "the upstream's address and id stay in the runtime's log: {message}"
    );
    // Same port, a new fixture: a new upstream session id.
    let _fx2 = Fixture::start_at(addr);
    let mut last = None;
    for _ in 0..250 {
        let r = http.send(&echo).await;
        if r.error_code().is_none() {
            last = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let r = last.expect("the runtime reconnected to the restarted upstream");
    assert_eq!(
        r.json().pointer("/result/content/0/text"),
        Some(&json!("a"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_size_limit_gives_clear_errors() {
    let fx = Fixture::start();
    let rt = Sidecar::with(
        &simple_catalog(&fx.url),
        Options {
            max_message_bytes: 1_048_576,
            ..Options::default()
        },
    )
    .await;
    let http = Http::new(&rt.http);
    let who = auth("alice@example.com", false, Some(&[]));
    let sid = http.initialize(&who, None).await;
    let big = Call::post(
        &who,
        rpc(
            1,
            "tools/call",
            json!({"name": "echo", "arguments": {"text": "z".repeat(2 << 20)}}),
        ),
    )
    .session(&sid);
    let r = http.send(&big).await;
    assert_eq!((r.status, r.error_code()), (413, Some(-32600)));
    let result = Call::post(
        &who,
        rpc(
            2,
            "tools/call",
            json!({"name": "payload", "arguments": {"size_bytes": 2 << 20}}),
        ),
    )
    .session(&sid);
    let r = http.send(&result).await;
    assert_eq!(r.error_code(), Some(-32603));
    let msg = r.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(msg.contains("exceeds the message size limit"), "{msg}");
    #[cfg(feature = "grpc-uds")]
    {
        let mut g = grpc::connect(&rt.grpc).await;
        let gsid = grpc::initialize(&mut g, &who, None).await;
        let mut big = big.clone();
        big.session = Some(gsid.clone());
        let err = g
            .invoke(mcp_runtime_proto::v1::InvokeRequest {
                envelope: Some(grpc::envelope(&big)),
            })
            .await
            .expect_err("over the limit");
        assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
        let mut result = result.clone();
        result.session = Some(gsid);
        let r = grpc::send(&mut g, &result).await;
        assert_eq!(r.error_code(), Some(-32603));
    }
    // Still serving.
    assert_eq!(
        http.send(&Call::post(&who, rpc(3, "ping", json!({}))).session(&sid))
            .await
            .status,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_get_stream_opens_and_ends_with_the_session() {
    let fx = Fixture::start();
    let rt = Sidecar::start(&simple_catalog(&fx.url)).await;
    let http = Http::new(&rt.http);
    let who = auth("alice@example.com", false, Some(&[]));
    let sid = http.initialize(&who, None).await;
    let mut get = Call::bodyless("GET", &who, &sid);
    get.accept = Some("text/event-stream".into());
    let stream = http.spawn(get);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!stream.is_finished(), "the GET stream stays open");
    let del = Call::bodyless("DELETE", &who, &sid);
    assert_eq!(http.send(&del).await.status, 200);
    let r = tokio::time::timeout(Duration::from_secs(5), stream)
        .await
        .expect("stream ended")
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.content_type.as_deref(), Some("text/event-stream"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_during_a_stream_ends_it_with_an_error_answer() {
    let fx = Fixture::start();
    let rt = Sidecar::start(&simple_catalog(&fx.url)).await;
    let http = Http::new(&rt.http);
    let who = auth("alice@example.com", false, Some(&[]));
    let sid = http.initialize(&who, None).await;
    let call = Call::post(
        &who,
        rpc(
            41,
            "tools/call",
            json!({"name": "progress", "arguments": {"steps": 100, "interval_ms": 50}, "_meta": {"progressToken": 1}}),
        ),
    )
    .session(&sid);
    let stream = http.spawn(call);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let del = Call::bodyless("DELETE", &who, &sid);
    assert_eq!(http.send(&del).await.status, 200);
    let r = tokio::time::timeout(Duration::from_secs(10), stream)
        .await
        .expect("the stream ended")
        .unwrap();
    assert_eq!(r.content_type.as_deref(), Some("text/event-stream"));
    let last = r.json();
    assert_eq!(
        last["id"], 41,
        "the stream ends with an answer to its request: {last}"
    );
    assert_eq!(last["error"]["code"], -32603);
}
