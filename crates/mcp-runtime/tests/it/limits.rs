//! Per-subject limits: a subject holds at most `--max-sessions-per-subject` open sessions,
//! `--max-streams-per-subject` GET streams, `--max-calls-per-subject` calls in flight and
//! `--max-bytes-per-subject` bytes in flight, and the process `--max-bytes-in-flight`. What is
//! beyond is answered 429 (503 for the process's budget) with a JSON-RPC error and
//! `Retry-After`, on both adapters, while other subjects are not affected and what ends frees
//! its slot.

use std::time::Duration;

use mcp_runtime_core::quota::QuotaConfig;
use serde_json::json;

use crate::sidecar::{Options, Sidecar};
use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initialize_beyond_the_per_subject_session_cap_is_429() {
    let fx = Fixture::start();
    let options = Options {
        max_sessions_per_subject: 3,
        ..Options::default()
    };
    let rt = Sidecar::with(&simple_catalog(&fx.url), options).await;
    let http = Http::new(&rt.http);
    let alice = auth("alice@example.com", false, Some(&[]));
    let mut sids = Vec::new();
    for _ in 0..3 {
        sids.push(http.initialize(&alice, None).await);
    }
    // A scoped session counts too: the cap is per subject, not per endpoint.
    let mut scoped = Call::post(&alice, initialize_body());
    scoped.path_server = Some("echo-only".into());
    for r in [
        http.send(&Call::post(&alice, initialize_body())).await,
        http.send(&scoped).await,
    ] {
        assert_eq!(r.status, 429, "{:?}", r.body);
        assert_eq!(r.session_id, None);
        assert_eq!(r.retry_after.as_deref(), Some("60"));
        assert_eq!(r.error_code(), Some(-32000));
        let message = r.json()["error"]["message"].clone();
        assert_eq!(
            message,
            json!(
                "Too many sessions: this subject already holds the limit of 3 open sessions; \
                 end one (DELETE) or let idle ones expire"
            )
        );
        // The error answers the request: its id.
        assert_eq!(r.json()["id"], json!(0));
    }
    #[cfg(feature = "grpc-uds")]
    {
        let mut g = grpc::connect(&rt.grpc).await;
        let r = grpc::send(&mut g, &Call::post(&alice, initialize_body())).await;
        assert_eq!(
            (r.status, r.retry_after.as_deref(), r.error_code()),
            (429, Some("60"), Some(-32000))
        );
    }
    // Another subject is not affected; alice's sessions all still work.
    let bob = auth("bob@example.com", false, Some(&[]));
    http.initialize(&bob, None).await;
    for (i, sid) in sids.iter().enumerate() {
        assert_eq!(http.send(&ping(&alice, i as i64, sid)).await.status, 200);
    }
    // Ending one frees its slot.
    let del = http.send(&Call::bodyless("DELETE", &alice, &sids[0])).await;
    assert_eq!(del.status, 200);
    http.initialize(&alice, None).await;
    assert_eq!(http.health().await.1["open_sessions"], json!(4));
}

/// A `ping` whose params carry `pad` bytes of padding: a body of about that size that the
/// runtime answers at once.
fn padded_ping(who: &serde_json::Value, sid: &str, id: i64, pad: usize) -> Call {
    Call::post(
        who,
        rpc(id, "ping", json!({"_meta": {"pad": "x".repeat(pad)}})),
    )
    .session(sid)
}

/// Asserts a quota refusal: `status`, JSON-RPC -32000, `retry_after`, and a message that
/// starts with `message`.
fn assert_refused(r: &Reply, status: u16, retry_after: Option<&str>, message: &str) {
    assert_eq!(r.status, status, "{:?}", r.body);
    assert_eq!(r.error_code(), Some(-32000), "{:?}", r.body);
    assert_eq!(r.retry_after.as_deref(), retry_after);
    let text = r.json()["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(text.starts_with(message), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_streams_beyond_the_per_subject_cap_are_429_and_an_ended_one_frees_its_slot() {
    let fx = Fixture::start();
    let options = Options {
        quotas: QuotaConfig {
            max_streams_per_subject: 2,
            ..QuotaConfig::default()
        },
        ..Options::default()
    };
    let rt = Sidecar::with(&simple_catalog(&fx.url), options).await;
    let http = Http::new(&rt.http);
    let alice = auth("alice@example.com", false, Some(&[]));
    let mut sids = Vec::new();
    for _ in 0..3 {
        sids.push(http.initialize(&alice, None).await);
    }
    let get = |sid: &str| Call::bodyless("GET", &alice, sid);
    let first = http.open(&get(&sids[0])).await;
    let second = http.open(&get(&sids[1])).await;
    assert_eq!(
        (first.status().as_u16(), second.status().as_u16()),
        (200, 200)
    );
    let refused = http.send(&get(&sids[2])).await;
    assert_refused(
        &refused,
        429,
        Some("1"),
        "Too many open streams: this subject already holds its limit of 2",
    );
    #[cfg(feature = "grpc-uds")]
    {
        let mut g = grpc::connect(&rt.grpc).await;
        let (r, _) = grpc::send_stream(&mut g, &get(&sids[2])).await;
        assert_eq!((r.status, r.retry_after.as_deref()), (429, Some("1")));
    }
    // Another subject opens its own; alice's sessions still answer.
    let bob = auth("bob@example.com", false, Some(&[]));
    let bob_sid = http.initialize(&bob, None).await;
    let bobs = http.open(&Call::bodyless("GET", &bob, &bob_sid)).await;
    assert_eq!(bobs.status().as_u16(), 200);
    assert_eq!(http.send(&ping(&alice, 1, &sids[2])).await.status, 200);
    // A client that leaves its stream frees the slot (once the runtime sees it gone).
    drop(first);
    let start = std::time::Instant::now();
    loop {
        let r = http.open(&get(&sids[2])).await;
        if r.status().as_u16() == 200 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the slot was never freed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_beyond_the_per_subject_cap_are_429_with_their_id() {
    let fx = Fixture::start();
    let options = Options {
        quotas: QuotaConfig {
            max_calls_per_subject: 2,
            ..QuotaConfig::default()
        },
        ..Options::default()
    };
    let rt = Sidecar::with(&simple_catalog(&fx.url), options).await;
    let http = Http::new(&rt.http);
    let alice = auth("alice@example.com", false, Some(&[]));
    let bob = auth("bob@example.com", false, Some(&[]));
    let sid = http.initialize(&alice, None).await;
    let bob_sid = http.initialize(&bob, None).await;
    let running = [
        http.spawn(sleep_call(&alice, &sid, 1, 1_500)),
        http.spawn(sleep_call(&alice, &sid, 2, 1_500)),
    ];
    // Bob's own calls are not alice's: he asks the fixture how many sleeps run.
    http.until_inflight(&bob, &bob_sid, 2, Duration::from_secs(10))
        .await;
    let refused = http.send(&sleep_call(&alice, &sid, 3, 10)).await;
    assert_refused(
        &refused,
        429,
        Some("1"),
        "Too many calls in flight: this subject already holds its limit of 2",
    );
    assert_eq!(
        refused.json()["id"],
        json!(3),
        "the error answers the request"
    );
    #[cfg(feature = "grpc-uds")]
    {
        let mut g = grpc::connect(&rt.grpc).await;
        let r = grpc::send(&mut g, &sleep_call(&alice, &sid, 4, 10)).await;
        assert_eq!((r.status, r.retry_after.as_deref()), (429, Some("1")));
    }
    // Methods that hold nothing upstream still work, and the slots come back.
    assert_eq!(http.send(&ping(&alice, 5, &sid)).await.status, 200);
    for call in running {
        assert_eq!(call.await.expect("call").status, 200);
    }
    let again = http.send(&sleep_call(&alice, &sid, 6, 10)).await;
    assert_eq!((again.status, again.error_code()), (200, None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_in_flight_beyond_the_subject_quota_are_429_and_beyond_the_process_budget_503() {
    const KIB: usize = 1024;
    let fx = Fixture::start();
    let options = Options {
        quotas: QuotaConfig {
            max_bytes_per_subject: 1024 * KIB,
            max_bytes_in_flight: 1536 * KIB,
            ..QuotaConfig::default()
        },
        ..Options::default()
    };
    let rt = Sidecar::with(&simple_catalog(&fx.url), options).await;
    let http = Http::new(&rt.http);
    let alice = auth("alice@example.com", false, Some(&[]));
    let bob = auth("bob@example.com", false, Some(&[]));
    let sid = http.initialize(&alice, None).await;
    let bob_sid = http.initialize(&bob, None).await;

    // One request larger than the subject's quota: refused, and waiting would not help.
    let alone = http.send(&padded_ping(&alice, &sid, 1, 1100 * KIB)).await;
    assert_refused(
        &alone,
        429,
        None,
        "Too many bytes in flight: this request alone exceeds this subject's limit of 1048576",
    );

    // Alice holds 700 KiB in a running call (its body stays counted until it is answered).
    let mut held = sleep_call(&alice, &sid, 2, 1_500);
    held.body = rpc(
        2,
        "tools/call",
        json!({"name": "sleep", "arguments": {"ms": 1_500}, "_meta": {"pad": "x".repeat(700 * KIB)}}),
    );
    let running = http.spawn(held);
    http.until_inflight(&bob, &bob_sid, 1, Duration::from_secs(10))
        .await;
    // Alice's next 400 KiB would pass her quota; Bob's 900 KiB the process's budget.
    let over_quota = http.send(&padded_ping(&alice, &sid, 3, 400 * KIB)).await;
    assert_refused(&over_quota, 429, Some("1"), "Too many bytes in flight");
    let over_budget = http.send(&padded_ping(&bob, &bob_sid, 4, 900 * KIB)).await;
    assert_refused(
        &over_budget,
        503,
        Some("1"),
        "Server busy: the budget of 1572864 bytes in flight is spent",
    );
    // Small requests of both still pass.
    assert_eq!(http.send(&ping(&alice, 5, &sid)).await.status, 200);
    assert_eq!(http.send(&ping(&bob, 6, &bob_sid)).await.status, 200);
    assert_eq!(running.await.expect("call").status, 200);
    // Everything was given back: Bob's 900 KiB passes now, and a result is counted only
    // while it is written.
    let r = http.send(&padded_ping(&bob, &bob_sid, 7, 900 * KIB)).await;
    assert_eq!((r.status, r.error_code()), (200, None));
    let echo = Call::post(
        &bob,
        rpc(
            8,
            "tools/call",
            json!({"name": "echo", "arguments": {"text": "y".repeat(400 * KIB)}}),
        ),
    )
    .session(&bob_sid);
    assert_eq!(http.send(&echo).await.status, 200);
    // The server drops the result once hyper has written it, just after the client read it.
    let start = std::time::Instant::now();
    while rt.runtime().bytes_in_flight() != 0 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "bytes left counted: {}",
            rt.runtime().bytes_in_flight()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
