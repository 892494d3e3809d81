//! Shutdown of the process on SIGTERM: calls in flight finish and the socket files go; calls
//! still running after the grace period are cancelled upstream and their callers answered;
//! the exit status is success either way.

use std::time::Duration;

use serde_json::json;

use crate::runtime_proc::RuntimeProc;
use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_in_flight_calls_finish() {
    let fx = Fixture::start();
    let mut rt = RuntimeProc::start(&simple_catalog(&fx.url), &[]);
    let http = Http::new(&rt.http);
    let who = auth("alice@example.com", false, Some(&[]));
    let sid = http.initialize(&who, None).await;
    let task = http.spawn(sleep_call(&who, &sid, 5, 700));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let exited = tokio::task::spawn_blocking(move || {
        let ok = rt.terminate();
        (ok, rt)
    });
    let r = task.await.unwrap();
    assert_eq!(
        r.json().pointer("/result/content/0/text"),
        Some(&json!("slept 700 ms"))
    );
    let (ok, rt) = exited.await.unwrap();
    assert!(ok);
    assert!(!rt.http.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_still_running_after_the_grace_period_are_cancelled_upstream() {
    let within = Duration::from_secs(10);
    let fx = Fixture::start();
    let mut rt = RuntimeProc::start(&simple_catalog(&fx.url), &["--shutdown-grace-ms", "300"]);
    let http = Http::new(&rt.http);
    let who = auth("alice@example.com", false, Some(&[]));
    let sid = http.initialize(&who, None).await;
    let call = http.spawn(sleep_call(&who, &sid, 5, 60_000));
    http.until_inflight(&who, &sid, 1, within).await;
    let stopped = tokio::task::spawn_blocking(move || rt.terminate());
    // The caller gets an answer (an error), not a reset connection.
    let r = tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .expect("the caller was answered")
        .unwrap();
    assert_eq!(r.error_code(), Some(-32603), "{:?}", r.json());
    assert!(stopped.await.unwrap(), "runtime exit status");
    // A second runtime on the same upstream sees no call left running there.
    let rt2 = RuntimeProc::start(&simple_catalog(&fx.url), &[]);
    let http2 = Http::new(&rt2.http);
    let sid2 = http2.initialize(&who, None).await;
    http2.until_inflight(&who, &sid2, 0, within).await;
}
