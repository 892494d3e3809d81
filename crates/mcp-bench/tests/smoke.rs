//! Smoke test of the `mcp-bench` binary: a tiny run of every layer against the workspace's own
//! runtime and fixture binaries (next to this test's `mcp-bench`) must exit 0 and write a JSON
//! report (and the `--out-dir` files) with the expected rows. Timings are never checked.
//!
//! The Python-hop and gateway layers need the repository's `.venv` (`make python-build`);
//! without it the run skips them and says so in the report's `notes`, which is checked too.
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
    // The state layer needs `redis-server` (`make rust-test` checks it is installed).
    let redis = Command::new("redis-server")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !redis {
        eprintln!("redis-server not found: the state rows are not checked");
    }
    let out = tempfile::tempdir().unwrap();
    let json_path = out.path().join("report.json");
    let out_dir = out.path().join("run");
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
            "--workloads",
            "ping,tools/list:10",
            "--direct-workloads",
            "progress",
            "--workers-workloads",
            "echo:100",
            "--pyhop-clients",
            if grpc {
                "httpx,aiohttp,grpc"
            } else {
                "httpx,aiohttp"
            },
            "--pyhop-workloads",
            "ping",
            "--gateway-modes",
            if grpc {
                "python,http,grpc,edge-grpc,edge-http"
            } else {
                "python,http,edge-http"
            },
            "--edge-hook-workloads",
            "echo:100",
            "--gateway-metrics-workloads",
            "echo:100",
            "--gateway-2026-workloads",
            "echo:100",
            "--revocations",
            "3",
            "--gateway-workloads",
            "ping,echo:100,session,progress",
            "--state-workloads",
            "echo:100,progress",
            "--state-concurrency",
            "2",
        ])
        .args(if redis { &[][..] } else { &["--no-state"][..] })
        .arg("--runtime-bin")
        .arg(dir.join("mcp-runtime"))
        .arg("--fixture-bin")
        .arg(dir.join("mcp-fixture-server"))
        .arg("--json-out")
        .arg(&json_path)
        .arg("--out-dir")
        .arg(&out_dir)
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

    for f in ["results.json", "report.md"] {
        assert!(out_dir.join(f).exists(), "{f} not written");
    }
    // An earlier run renders again from its results.json alone.
    let rendered = out.path().join("rendered");
    let status = Command::new(env!("CARGO_BIN_EXE_mcp-bench"))
        .arg("--render")
        .arg(out_dir.join("results.json"))
        .arg("--out-dir")
        .arg(&rendered)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("mcp-bench --render runs");
    assert!(status.success());
    assert!(rendered.join("report.md").exists());
    let again: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("results.json")).unwrap())
            .expect("valid JSON in --out-dir");
    assert_eq!(again["schema"], "mcp-bench/1");

    // Either the Python layers ran, or exactly one note says why they were skipped.
    let notes: Vec<&str> = report["notes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    let python = !notes
        .iter()
        .any(|n| n.starts_with("python-hop and gateway layers skipped"));
    if python {
        assert!(notes.is_empty(), "{notes:?}");
    } else {
        eprintln!("the virtual environment is not usable: {notes:?}");
        assert_eq!(notes.len(), 1, "{notes:?}");
    }

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
        for w in ["ping", "tools/list (10 tools)"] {
            for c in [1, 2] {
                let key = rows
                    .iter()
                    .find(|r| r["transport"] == t && r["workload"] == w && r["concurrency"] == c)
                    .map_or(0, |r| r["payload_bytes"].as_u64().unwrap());
                expected.insert(("runtime".to_owned(), t.to_owned(), w.to_owned(), c, key));
            }
        }
    }
    let size_of = |layer: &str, w: &str| {
        rows.iter()
            .find(|r| r["layer"] == layer && r["workload"] == w)
            .map_or(0, |r| r["payload_bytes"].as_u64().unwrap())
    };
    for c in [1, 2] {
        let w = "tools/call progress";
        let size = size_of("direct", w);
        expected.insert((
            "direct".to_owned(),
            "upstream".to_owned(),
            w.to_owned(),
            c,
            size,
        ));
    }
    if redis {
        for m in ["memory", "redis-1", "redis-3"] {
            for w in ["tools/call echo", "tools/call progress"] {
                expected.insert((
                    "state".to_owned(),
                    m.to_owned(),
                    w.to_owned(),
                    2,
                    size_of("state", w),
                ));
            }
        }
    }
    if python {
        let clients: &[(&str, &str)] = if grpc {
            &[
                ("http-json", "httpx"),
                ("http-json", "aiohttp"),
                ("grpc", "grpc.aio"),
            ]
        } else {
            &[("http-json", "httpx"), ("http-json", "aiohttp")]
        };
        for c in [1, 2] {
            for &(t, _) in clients {
                expected.insert((
                    "python-hop".to_owned(),
                    t.to_owned(),
                    "ping".to_owned(),
                    c,
                    40,
                ));
            }
            let modes: &[&str] = if grpc {
                &["python", "http-json", "grpc"]
            } else {
                &["python", "http-json"]
            };
            let edge: &[&str] = if grpc {
                &["edge-grpc", "edge-http-json"]
            } else {
                &["edge-http-json"]
            };
            for &m in edge {
                expected.insert(("gateway".to_owned(), m.to_owned(), "ping".to_owned(), c, 40));
                for w in [
                    "tools/call echo",
                    "session open/close",
                    "tools/call progress",
                ] {
                    let size = size_of("gateway", w);
                    expected.insert(("gateway".to_owned(), m.to_owned(), w.to_owned(), c, size));
                }
                // The +hook rows run --edge-hook-workloads only.
                let w = "tools/call echo";
                // MCP 2026-07-28 (no session) beside it: --gateway-2026-workloads.
                expected.insert((
                    "gateway".to_owned(),
                    format!("{m}@2026"),
                    w.to_owned(),
                    c,
                    size_of("gateway", w),
                ));
                expected.insert((
                    "gateway".to_owned(),
                    format!("{m}+hook"),
                    w.to_owned(),
                    c,
                    size_of("gateway", w),
                ));
            }
            if grpc {
                // The gateway's metrics-on row runs --gateway-metrics-workloads only.
                let w = "tools/call echo";
                expected.insert((
                    "gateway".to_owned(),
                    "grpc+metrics".to_owned(),
                    w.to_owned(),
                    c,
                    size_of("gateway", w),
                ));
            }
            for &m in modes {
                expected.insert(("gateway".to_owned(), m.to_owned(), "ping".to_owned(), c, 40));
                for w in [
                    "tools/call echo",
                    "session open/close",
                    "tools/call progress",
                ] {
                    let size = size_of("gateway", w);
                    expected.insert(("gateway".to_owned(), m.to_owned(), w.to_owned(), c, size));
                }
                let w = "tools/call echo";
                expected.insert((
                    "gateway".to_owned(),
                    format!("{m}@2026"),
                    w.to_owned(),
                    c,
                    size_of("gateway", w),
                ));
                let size = size_of("gateway-2-workers", w);
                expected.insert((
                    "gateway-2-workers".to_owned(),
                    m.to_owned(),
                    w.to_owned(),
                    c,
                    size,
                ));
            }
        }
        assert_eq!(
            rows.iter()
                .filter(|r| r["layer"] == "python-hop")
                .map(|r| r["client"].as_str().unwrap())
                .collect::<BTreeSet<_>>(),
            clients.iter().map(|&(_, c)| c).collect::<BTreeSet<_>>()
        );
    }
    assert_eq!(keys, expected);

    for r in rows {
        let s = &r["summary"];
        assert_eq!(s["requests"], 50, "{r}");
        // Behind two gateway workers, the Python baseline's sessions live in one worker only.
        if !(r["layer"] == "gateway-2-workers" && r["transport"] == "python") {
            assert_eq!(s["errors"], 0, "{r}");
        }
        if r["workload"] == "tools/call progress" {
            assert!(
                s["notification_latency_us"]["p50"].as_f64().unwrap() > 0.0,
                "{r}"
            );
        }
        assert_eq!(r["rounds"].as_array().unwrap().len(), 1);
        if r["layer"] != "floor" && r["layer"] != "direct" {
            assert!(s["cpu_us_per_request"]["runtime"].is_number(), "{r}");
            assert!(r["payload_bytes"].as_u64().unwrap() > 0);
        }
        if r["layer"] == "gateway" || r["layer"] == "gateway-2-workers" {
            assert!(s["cpu_us_per_request"]["gateway"].is_number(), "{r}");
            assert!(s["peak_rss_kib"]["gateway"].as_u64().unwrap() > 0, "{r}");
        }
    }
    let comparisons = report["comparisons"].as_array().unwrap();
    let count = |layer: &str| {
        comparisons
            .iter()
            .filter(|c| c["numerator"]["layer"] == layer)
            .count()
    };
    assert_eq!(count("runtime"), if grpc { 4 } else { 0 });
    for c in comparisons
        .iter()
        .filter(|c| c["numerator"]["layer"] == "runtime")
    {
        assert_eq!(c["numerator"]["transport"], "grpc");
        assert_eq!(c["denominator"]["transport"], "http-json");
    }
    if python {
        // grpc.aio/httpx (with gRPC) and aiohttp/httpx, at two concurrency levels.
        assert_eq!(count("python-hop"), if grpc { 4 } else { 2 });
        // grpc/http-json, grpc/python, http-json/python (with gRPC), four workloads, two
        // levels; none for the two-worker rows (the baseline there mostly fails). Edge: with
        // gRPC, edge-grpc/grpc, edge-http-json/grpc, edge-grpc/edge-http-json (four workloads,
        // two levels) and the three +hook pairs (echo, two levels), and grpc+metrics/grpc
        // (echo, two levels); without, the edge-http-json+hook/edge-http-json pair. And each
        // MODE@2026 over MODE (echo, two levels): five modes with gRPC, three without.
        assert_eq!(
            count("gateway"),
            if grpc {
                24 + 24 + 6 + 2 + 10
            } else {
                8 + 2 + 6
            }
        );
        let revocations = report["revocations"].as_array().unwrap();
        assert_eq!(
            revocations.len(),
            if grpc { 2 } else { 1 },
            "{revocations:?}"
        );
        for r in revocations {
            assert_eq!(r["samples_ms"].as_array().unwrap().len(), 3, "{r}");
            assert!(r["failures"].as_array().unwrap().is_empty(), "{r}");
        }
        assert_eq!(count("gateway-2-workers"), 0);
        let md = std::fs::read_to_string(out_dir.join("report.md")).unwrap();
        for section in [
            "### Targets",
            "### Progress notification latency",
            "### Gateway with two uvicorn workers",
            "### Edge mode",
        ] {
            assert!(md.contains(section), "{section} missing from report.md");
        }
    }
}
