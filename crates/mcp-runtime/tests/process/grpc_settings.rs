//! The gRPC adapter's server settings (`--grpc-*`, measured by `make bench-grpc-settings`):
//! a runtime started with every one of them set away from tonic's defaults still serves
//! unary and streaming calls, small and large.

use serde_json::json;

use crate::runtime_proc::RuntimeProc;
use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runtime_with_every_grpc_setting_changed_serves_small_and_large_calls() {
    let fx = Fixture::start();
    let rt = RuntimeProc::start(
        &simple_catalog(&fx.url),
        &[
            "--grpc-initial-stream-window-size",
            "65535",
            "--grpc-initial-connection-window-size",
            "131072",
            "--grpc-max-frame-size",
            "1048576",
            "--grpc-max-concurrent-streams",
            "4",
            "--grpc-concurrency-per-connection",
            "2",
            "--grpc-timeout-ms",
            "30000",
            "--grpc-codec-buffer-size",
            "1024",
            "--grpc-codec-yield-threshold",
            "4096",
        ],
    );
    let mut c = grpc::connect(&rt.grpc).await;
    let who = auth("alice@example.com", false, Some(&[]));
    let sid = grpc::initialize(&mut c, &who, None).await;
    for size in [10, 300 * 1024] {
        let text = "x".repeat(size);
        let body = rpc(
            2,
            "tools/call",
            json!({"name": "echo", "arguments": {"text": text}}),
        );
        let r = grpc::send(&mut c, &Call::post(&who, body.clone()).session(&sid)).await;
        assert_eq!(r.status, 200, "unary {size}");
        assert_eq!(
            r.json().pointer("/result/content/0/text"),
            Some(&json!(text)),
            "unary {size}"
        );
        let (r, _) = grpc::send_stream(&mut c, &Call::post(&who, body).session(&sid)).await;
        assert_eq!(r.status, 200, "stream {size}");
        assert_eq!(
            r.json().pointer("/result/content/0/text"),
            Some(&json!(text)),
            "stream {size}"
        );
    }
}

/// A setting out of its range is a usage error that names the flag (exit status 2).
#[test]
fn a_grpc_setting_out_of_range_is_refused_at_start() {
    for (flag, value) in [
        ("--grpc-max-frame-size", "1024"),
        ("--grpc-max-concurrent-streams", "0"),
        ("--grpc-codec-buffer-size", "0"),
    ] {
        crate::runtime_proc::assert_refused_at_start(flag, value);
    }
}
