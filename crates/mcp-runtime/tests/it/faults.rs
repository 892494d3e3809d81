//! Faults on the bad day: a gRPC deadline shorter than the call, a client that leaves in the
//! middle of an SSE stream (HTTP/JSON and gRPC `InvokeStream`), a slow SSE consumer beside
//! other calls on the same channel, results of exactly the limit and just over it (64 MiB
//! default) on both adapters, an upstream killed mid-call and one that hangs. The fixture's
//! `inflight` counter (its `sleep` and `progress` calls running) must be back at zero after
//! each. (Calls cancelled after the grace period of a SIGTERM, and the RSS of 1,000 sessions:
//! `tests/process`.)

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::sidecar::{Options, Sidecar};
use crate::support::*;

/// Polls `inflight` until it is `n`; returns how long that took. Panics after 10 s.
async fn until_inflight(http: &Http, who: &Value, sid: &str, n: i64) -> Duration {
    http.until_inflight(who, sid, n, Duration::from_secs(10))
        .await
}

/// A `tools/call` of the fixture's `progress` with a progress token: 1,000 notifications 50 ms
/// apart, so the call streams for 50 s unless it is cancelled.
fn long_progress_call(who: &Value, sid: &str, id: i64) -> Call {
    Call::post(
        who,
        rpc(
            id,
            "tools/call",
            json!({"name": "progress", "arguments": {"steps": 1000, "interval_ms": 50}, "_meta": {"progressToken": "p"}}),
        ),
    )
    .session(sid)
}

#[cfg(feature = "grpc-uds")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_deadline_shorter_than_the_call_ends_it_and_cancels_upstream() {
    let fx = Fixture::start();
    let rt = Sidecar::start(&simple_catalog(&fx.url)).await;
    let http = Http::new(&rt.http);
    let who = auth("alice@example.com", false, Some(&[]));
    let sid = http.initialize(&who, None).await;
    let mut g = grpc::connect(&rt.grpc).await;
    let gsid = grpc::initialize(&mut g, &who, None).await;
    for streaming in [false, true] {
        let env = grpc::envelope(&sleep_call(&who, &gsid, 11, 30_000));
        let started = Instant::now();
        let err = if streaming {
            let mut req = tonic::Request::new(mcp_runtime_proto::v1::InvokeStreamRequest {
                envelope: Some(env),
            });
            req.set_timeout(Duration::from_millis(300));
            match g.invoke_stream(req).await {
                Err(e) => e,
                Ok(s) => {
                    let mut s = s.into_inner();
                    loop {
                        match s.message().await {
                            Err(e) => break e,
                            Ok(None) => panic!("stream ended without the deadline error"),
                            Ok(Some(_)) => {}
                        }
                    }
                }
            }
        } else {
            let mut req = tonic::Request::new(mcp_runtime_proto::v1::InvokeRequest {
                envelope: Some(env),
            });
            req.set_timeout(Duration::from_millis(300));
            g.invoke(req).await.expect_err("deadline")
        };
        assert!(
            matches!(
                err.code(),
                tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
            ),
            "streaming={streaming}: {err:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        // The runtime sent notifications/cancelled: the upstream's sleep ends.
        let waited = until_inflight(&http, &who, &sid, 0).await;
        eprintln!("streaming={streaming}: upstream call ended {waited:?} after the deadline error");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_an_http_sse_stream_midway_cancels_the_upstream_call() {
    use futures::StreamExt as _;

    let fx = Fixture::start();
    let rt = Sidecar::start(&simple_catalog(&fx.url)).await;
    let http = Http::new(&rt.http);
    let who = auth("alice@example.com", false, Some(&[]));
    let sid = http.initialize(&who, None).await;
    // A connection of its own, so leaving means closing this socket.
    let (mut sender, conn) = http.connect().await;
    let call = long_progress_call(&who, &sid, 12);
    let req = hyper::Request::post("http://localhost/mcp")
        .header("host", "localhost")
        .header("x-contextforge-auth-context", auth_header(&who))
        .header("mcp-session-id", &sid)
        .header("accept", call.accept.as_deref().unwrap())
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(call.body.clone()))
        .expect("request");
    let resp = sender.send_request(req).await.expect("send");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    // Read the SSE stream until the first progress notification has arrived.
    let mut events = sse_stream::SseStream::new(resp.into_body());
    let mut seen = Vec::new();
    let first = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let event = events
                .next()
                .await
                .expect("the stream ended before a progress notification")
                .expect("an SSE event");
            let data = event.data.unwrap_or_default();
            if is_progress(&data) {
                return;
            }
            seen.push(data);
        }
    })
    .await;
    assert!(first.is_ok(), "no progress notification in 10 s: {seen:?}");
    // The upstream call is running (and counted) now.
    assert_eq!(http.inflight(&who, &sid).await, 1);
    // Leave mid-stream: drop the body and close the connection.
    drop(events);
    drop(sender);
    conn.abort();
    let _ = conn.await;
    // The runtime sends notifications/cancelled upstream: the fixture's progress call ends.
    let waited = until_inflight(&http, &who, &sid, 0).await;
    eprintln!("http: upstream call ended {waited:?} after the client left the SSE stream");
}

#[cfg(feature = "grpc-uds")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_a_grpc_invoke_stream_midway_cancels_the_upstream_call() {
    use mcp_runtime_proto::v1::invoke_stream_response::Part;

    let fx = Fixture::start();
    let rt = Sidecar::start(&simple_catalog(&fx.url)).await;
    let http = Http::new(&rt.http);
    let who = auth("alice@example.com", false, Some(&[]));
    let sid = http.initialize(&who, None).await;
    // Leaving by dropping the stream alone (the channel stays open: only the stream's reset
    // tells the runtime), then by dropping the whole channel.
    for (id, whole_channel) in [(13, false), (14, true)] {
        let mut g = grpc::connect(&rt.grpc).await;
        let gsid = grpc::initialize(&mut g, &who, None).await;
        let mut stream = g
            .invoke_stream(mcp_runtime_proto::v1::InvokeStreamRequest {
                envelope: Some(grpc::envelope(&long_progress_call(&who, &gsid, id))),
            })
            .await
            .expect("stream opened")
            .into_inner();
        // Receive until the first streamed progress notification.
        let first = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let msg = stream
                    .message()
                    .await
                    .expect("stream")
                    .expect("the stream ended before a progress notification");
                match msg.part.expect("part") {
                    Part::Head(h) => assert_eq!(h.http_status, 200),
                    Part::Event(e) if is_progress(&e.data) => return,
                    Part::Event(_) | Part::BodyChunk(_) => {}
                }
            }
        })
        .await;
        assert!(first.is_ok(), "no progress notification in 10 s");
        assert_eq!(http.inflight(&who, &sid).await, 1);
        drop(stream);
        if whole_channel {
            drop(g);
        }
        let waited = until_inflight(&http, &who, &sid, 0).await;
        let how = if whole_channel {
            "dropped the channel"
        } else {
            "dropped the stream"
        };
        eprintln!("grpc: upstream call ended {waited:?} after the client {how}");
    }
}

#[cfg(feature = "grpc-uds")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_stream_consumer_does_not_stall_other_calls_on_the_channel() {
    let fx = Fixture::start();
    let rt = Sidecar::start(&simple_catalog(&fx.url)).await;
    let who = auth("alice@example.com", false, Some(&[]));
    let mut g = grpc::connect(&rt.grpc).await;
    let gsid = grpc::initialize(&mut g, &who, None).await;
    // A progress stream with many events that nobody reads.
    let progress = Call::post(
        &who,
        rpc(
            3,
            "tools/call",
            json!({"name": "progress", "arguments": {"steps": 2000, "interval_ms": 1}, "_meta": {"progressToken": "p"}}),
        ),
    )
    .session(&gsid);
    let stalled = g
        .clone()
        .invoke_stream(mcp_runtime_proto::v1::InvokeStreamRequest {
            envelope: Some(grpc::envelope(&progress)),
        })
        .await
        .expect("stream opened")
        .into_inner();
    // Other calls on the same channel keep being answered.
    for i in 0..20 {
        let echo = Call::post(
            &who,
            rpc(
                100 + i,
                "tools/call",
                json!({"name": "echo", "arguments": {"text": "x".repeat(100_000)}}),
            ),
        )
        .session(&gsid);
        let r = tokio::time::timeout(Duration::from_secs(10), grpc::send(&mut g, &echo))
            .await
            .expect("a call on the channel stalled");
        assert_eq!(r.error_code(), None);
    }
    drop(stalled);
}

/// Run once, in the build with both adapters (about a minute in a debug build).
#[cfg(feature = "grpc-uds")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_of_the_limit_work_and_just_over_it_get_a_clear_error() {
    let fx = Fixture::start();
    let rt = Sidecar::start(&simple_catalog(&fx.url)).await;
    let http = Http::new(&rt.http);
    let who = auth("alice@example.com", false, Some(&[]));
    let sid = http.initialize(&who, None).await;
    // The limit is on the whole JSON-RPC result: a text of 64 MiB less 1 KiB fits in 64 MiB.
    let fits = (64 << 20) - 1024;
    let over = 65 << 20;
    let call = |sid: &str, id, size: usize| {
        Call::post(
            &who,
            rpc(
                id,
                "tools/call",
                json!({"name": "payload", "arguments": {"size_bytes": size}}),
            ),
        )
        .session(sid)
    };
    let text_len = |r: &Reply| {
        r.json()
            .pointer("/result/content/0/text")
            .and_then(Value::as_str)
            .map_or(0, str::len)
    };
    let r = http.send(&call(&sid, 1, fits)).await;
    assert_eq!((r.status, text_len(&r)), (200, fits));
    let r = http.send(&call(&sid, 2, over)).await;
    assert_eq!((r.status, r.error_code()), (200, Some(-32603)));
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("limit")
    );
    {
        let mut g = grpc::connect(&rt.grpc).await;
        let gsid = grpc::initialize(&mut g, &who, None).await;
        // One large transfer per gRPC RPC and outcome (each costs seconds in a debug build):
        // the whole result through Invoke, the error through InvokeStream.
        let r = grpc::send(&mut g, &call(&gsid, 3, fits)).await;
        assert_eq!(text_len(&r), fits);
        let (r, _) = grpc::send_stream(&mut g, &call(&gsid, 6, over)).await;
        assert_eq!(r.error_code(), Some(-32603));
    }
    assert_eq!(http.inflight(&who, &sid).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_killed_mid_call_answers_the_caller_at_once_and_the_pool_recovers() {
    let fx = Fixture::start();
    let addr = fx.addr();
    // A long upstream timeout: the answer must come from the dead connection, not the timer.
    let rt = Sidecar::with(
        &simple_catalog(&fx.url),
        Options {
            upstream_timeout: Duration::from_millis(60_000),
            ..Options::default()
        },
    )
    .await;
    let http = Http::new(&rt.http);
    let who = auth("alice@example.com", false, Some(&[]));
    let sid = http.initialize(&who, None).await;
    let calls: Vec<_> = (0..8)
        .map(|i| http.spawn(sleep_call(&who, &sid, 20 + i, 30_000)))
        .collect();
    until_inflight(&http, &who, &sid, 8).await;
    let killed = Instant::now();
    drop(fx);
    for c in calls {
        let r = tokio::time::timeout(Duration::from_secs(10), c)
            .await
            .expect("a caller hung after the upstream died")
            .unwrap();
        assert_eq!(
            (r.status, r.error_code()),
            (200, Some(-32603)),
            "{:?}",
            r.json()
        );
    }
    eprintln!(
        "8 callers answered {:?} after the upstream was killed",
        killed.elapsed()
    );
    let _fx2 = Fixture::start_at(addr);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = http.send(&sleep_call(&who, &sid, 40, 1)).await;
        if r.error_code().is_none() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the pool never recovered: {:?}",
            r.json()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(http.inflight(&who, &sid).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_upstream_call_times_out_and_the_upstream_keeps_serving() {
    let fx = Fixture::start();
    let rt = Sidecar::with(
        &simple_catalog(&fx.url),
        Options {
            upstream_timeout: Duration::from_millis(500),
            ..Options::default()
        },
    )
    .await;
    let http = Http::new(&rt.http);
    let who = auth("alice@example.com", false, Some(&[]));
    let sid = http.initialize(&who, None).await;
    // Several hung calls at once (sleep of a day is a hang): each times out on its own.
    let calls: Vec<_> = (0..4)
        .map(|i| http.spawn(sleep_call(&who, &sid, 50 + i, 86_400_000)))
        .collect();
    for c in calls {
        let r = tokio::time::timeout(Duration::from_secs(10), c)
            .await
            .expect("answered")
            .unwrap();
        assert_eq!(r.error_code(), Some(-32001), "{:?}", r.json());
    }
    until_inflight(&http, &who, &sid, 0).await;
    let r = http.send(&sleep_call(&who, &sid, 60, 1)).await;
    assert_eq!(r.error_code(), None, "{:?}", r.json());
}
