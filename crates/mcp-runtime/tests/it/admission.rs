//! How many may connect, and how long they may stay silent: `--max-connections` and
//! `--header-read-timeout-ms` applied to each socket before a request is read. (Who may
//! connect, `--allow-uid` checked with `SO_PEERCRED`: `tests/process/peer_creds.rs`.)

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use crate::sidecar::{Options, Sidecar};
use crate::support::*;

const HEALTH: &[u8] = b"GET /health HTTP/1.1\r\nhost: localhost\r\n\r\n";

/// Reads until EOF or error; `true` when the server closed the connection within `within`.
async fn closed_within(s: &mut UnixStream, within: Duration) -> bool {
    let mut buf = [0u8; 4096];
    let end = Instant::now() + within;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_cap_are_closed_and_served_again_once_one_ends() {
    // The process's metrics (shared by the tests of this binary: counts only grow).
    let metrics = mcp_runtime_core::metrics::enable();
    let refused = || {
        let mut text = String::new();
        mcp_runtime_core::metrics::encode(metrics, &mut text).expect("encode");
        text.lines()
            .find_map(|l| {
                l.strip_prefix(
                    r#"mcp_connections_refused_total{mode="http",reason="max_connections"} "#,
                )?
                .trim()
                .parse::<u64>()
                .ok()
            })
            .unwrap_or(0)
    };
    let before = refused();
    let fx = Fixture::start();
    let rt = Sidecar::with(
        &simple_catalog(&fx.url),
        Options {
            max_connections: 4,
            ..Options::default()
        },
    )
    .await;
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(UnixStream::connect(&rt.http).await.expect("connect"));
    }
    // Let the runtime accept the four.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut fifth = UnixStream::connect(&rt.http).await.expect("connect");
    let _ = fifth.write_all(HEALTH).await;
    assert!(
        closed_within(&mut fifth, Duration::from_secs(5)).await,
        "the fifth connection was served"
    );
    assert!(
        refused() > before,
        "the refusal is counted in mcp_connections_refused_total"
    );
    drop(idle.pop());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut s = UnixStream::connect(&rt.http).await.expect("connect");
        let _ = s.write_all(HEALTH).await;
        let mut buf = [0u8; 64];
        if matches!(s.read(&mut buf).await, Ok(n) if n > 0) {
            assert!(buf.starts_with(b"HTTP/1.1 200"));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no slot freed after a connection ended"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// On tokio's paused clock once the runtime has started (its catalog discovery talks to the
/// fixture, on a runtime and clock of its own): the timeouts fire as soon as the runtime has
/// nothing else to do, so the test waits for no wall-clock time. No upstream call runs after
/// the pause; one would let the clock jump past its own deadline while the fixture answers.
#[tokio::test]
async fn silent_and_slow_clients_are_closed_after_the_header_read_timeout() {
    let fx = Fixture::start();
    let rt = Sidecar::with(
        &simple_catalog(&fx.url),
        Options {
            header_read_timeout: Duration::from_millis(300),
            ..Options::default()
        },
    )
    .await;
    tokio::time::pause();
    let mut silent = UnixStream::connect(&rt.http).await.expect("connect");
    assert!(
        closed_within(&mut silent, Duration::from_secs(10)).await,
        "silent HTTP client kept"
    );
    let mut slow = UnixStream::connect(&rt.http).await.expect("connect");
    slow.write_all(b"GET /health HTTP/1.1\r\nhost: loc")
        .await
        .unwrap();
    assert!(
        closed_within(&mut slow, Duration::from_secs(10)).await,
        "half a request head kept"
    );
    if cfg!(feature = "grpc-uds") {
        let mut silent = UnixStream::connect(&rt.grpc).await.expect("connect");
        assert!(
            closed_within(&mut silent, Duration::from_secs(10)).await,
            "silent gRPC client kept"
        );
    }
    // A normal request is still served.
    let (status, _) = Http::new(&rt.http).health().await;
    assert_eq!(status, 200);
}
