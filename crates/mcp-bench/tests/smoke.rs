//! Smoke test of the `mcp-bench` binary: a tiny run against the workspace's own runtime and
//! fixture binaries (next to this test's `mcp-bench`) must exit 0 and write a JSON report with
//! the expected rows. Timings are never checked.
//!
//! `cargo test --workspace` builds those binaries; when they are missing (`cargo test -p
//! mcp-bench` alone) the test builds them with
//! `cargo build -p mcp-runtime --features grpc-uds -p mcp-fixture-server`. It never rebuilds an
//! existing runtime, so it does not swap the binary under other crates' tests: a runtime built
//! without `grpc-uds` (the feature-off pass of `make rust-test`) is benchmarked over HTTP/JSON
//! only, one built with it over both adapters.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_mcp-bench"))
        .parent()
        .expect("binary has a directory")
        .to_owned()
}

/// Builds the runtime (with `grpc-uds`) and the fixture next to `mcp-bench` when either is
/// missing.
fn build_missing(dir: &Path) {
    if dir.join("mcp-runtime").exists() && dir.join("mcp-fixture-server").exists() {
        return;
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(env!("CARGO_MANIFEST_DIR")).args([
        "build",
        "-p",
        "mcp-runtime",
        "--features",
        "grpc-uds",
        "-p",
        "mcp-fixture-server",
    ]);
    if dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    let status = cmd.status().expect("cargo runs");
    assert!(
        status.success(),
        "building mcp-runtime and mcp-fixture-server failed"
    );
}

/// Whether the runtime binary has the gRPC adapter. Without it, `--grpc-uds` is refused with
/// exit code 2 before anything else; with it, the missing catalog file fails the start (1).
fn runtime_has_grpc(runtime: &Path) -> bool {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(runtime)
        .arg("--catalog")
        .arg(dir.path().join("missing.toml"))
        .arg("--grpc-uds")
        .arg(dir.path().join("probe.sock"))
        .output()
        .expect("mcp-runtime runs");
    let refused =
        out.status.code() == Some(2) && String::from_utf8_lossy(&out.stderr).contains("grpc-uds");
    !refused
}

#[test]
fn tiny_run_writes_the_expected_rows() {
    let dir = bin_dir();
    build_missing(&dir);
    let grpc = runtime_has_grpc(&dir.join("mcp-runtime"));
    let transports: &[&str] = if grpc {
        &["http-json", "grpc"]
    } else {
        &["http-json"]
    };
    if !grpc {
        eprintln!("mcp-runtime was built without grpc-uds: checking the HTTP/JSON rows only");
    }
    let out = tempfile::tempdir().unwrap();
    let json_path = out.path().join("report.json");
    let output = Command::new(env!("CARGO_BIN_EXE_mcp-bench"))
        .args([
            "--requests",
            "50",
            "--warmup",
            "5",
            "--rounds",
            "1",
            "--concurrency",
            "1,2",
            "--runtime-worker-threads",
            "1",
            "--transports",
            if grpc { "http,grpc" } else { "http" },
        ])
        .arg("--runtime-bin")
        .arg(dir.join("mcp-runtime"))
        .arg("--fixture-bin")
        .arg(dir.join("mcp-fixture-server"))
        .arg("--json-out")
        .arg(&json_path)
        .output()
        .expect("mcp-bench runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "mcp-bench failed:\n{stderr}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("| runtime | http-json | hyper | ping | 1 |"),
        "{stdout}"
    );

    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).expect("valid JSON");
    assert_eq!(report["schema"], "mcp-bench/1");
    assert!(report["machine"]["nproc"].as_u64().unwrap() >= 1);
    assert!(report["command_line"].as_array().unwrap().len() > 1);

    let rows = report["rows"].as_array().unwrap();
    let keys: BTreeSet<(String, String, String, u64, u64)> = rows
        .iter()
        .map(|r| {
            (
                r["layer"].as_str().unwrap().to_owned(),
                r["transport"].as_str().unwrap().to_owned(),
                r["workload"].as_str().unwrap().to_owned(),
                r["concurrency"].as_u64().unwrap(),
                r["payload_bytes"].as_u64().unwrap(),
            )
        })
        .collect();
    let mut expected = BTreeSet::new();
    for c in [1, 2] {
        for p in [64, 65536] {
            expected.insert((
                "floor".to_owned(),
                "uds-stream".to_owned(),
                "ping-pong".to_owned(),
                c,
                p,
            ));
        }
    }
    for &t in transports {
        for w in ["ping", "tools/list"] {
            for c in [1, 2] {
                let key = rows
                    .iter()
                    .find(|r| r["transport"] == t && r["workload"] == w && r["concurrency"] == c)
                    .map_or(0, |r| r["payload_bytes"].as_u64().unwrap());
                expected.insert(("runtime".to_owned(), t.to_owned(), w.to_owned(), c, key));
            }
        }
    }
    assert_eq!(keys, expected);

    for r in rows {
        let s = &r["summary"];
        assert_eq!(s["requests"], 50, "{r}");
        assert_eq!(s["errors"], 0, "{r}");
        assert_eq!(r["rounds"].as_array().unwrap().len(), 1);
        if r["layer"] == "runtime" {
            assert!(s["cpu_us_per_request"]["runtime"].is_number(), "{r}");
            assert!(r["payload_bytes"].as_u64().unwrap() > 0);
        }
    }
    let comparisons = report["comparisons"].as_array().unwrap();
    assert_eq!(comparisons.len(), if grpc { 4 } else { 0 });
    for c in comparisons {
        assert_eq!(c["numerator"]["transport"], "grpc");
        assert_eq!(c["denominator"]["transport"], "http-json");
    }
}
