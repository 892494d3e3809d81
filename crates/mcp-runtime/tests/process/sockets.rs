//! Socket handling: mode, stale socket replaced, live socket refused (also while its owner
//! drains), only the file a process bound removed at its exit, non-socket file kept, path
//! length limit, abstract names refused, empty socket variables meaning not given, sockets
//! removed on SIGTERM; and the upstream client's proxy handling, which needs a process
//! environment of its own.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::runtime_proc::{Proc, RuntimeProc, runtime_bin};
use crate::support::*;

/// The proxy variables reqwest reads; removed from a runtime's environment so that the test's
/// own environment does not decide the outcome.
const PROXY_VARS: [&str; 8] = [
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "ALL_PROXY",
    "all_proxy",
    "NO_PROXY",
    "no_proxy",
];

/// Starts the runtime serving HTTP/JSON only on `http`, with `catalog` (a file).
fn spawn_on(catalog: &Path, http: &Path, env: &[(&str, &str)]) -> Proc {
    Proc(
        Command::new(runtime_bin())
            .arg("--catalog")
            .arg(catalog)
            .arg("--http-uds")
            .arg(http)
            .envs(env.iter().copied())
            .env("MCP_RUNTIME_LOG", "error")
            .spawn()
            .expect("spawn runtime"),
    )
}

/// Waits until `/health` on `http` answers 200 (at most 30 s).
async fn until_healthy(http: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(http.exists() && tokio::net::UnixStream::connect(http).await.is_ok()) {
        assert!(
            Instant::now() < deadline,
            "no runtime on {}",
            http.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(Http::new(http).health().await.0, 200);
}

/// Runs the runtime to its exit; returns the exit code and stderr.
fn run_to_exit(cmd: &mut Command) -> (Option<i32>, String) {
    let out = cmd.stdout(Stdio::null()).output().expect("run");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn mode(p: &std::path::Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// Runs the runtime expecting it to fail at start; returns its stderr.
fn start_fails(catalog: &std::path::Path, http: &std::path::Path) -> String {
    let out = Command::new(runtime_bin())
        .arg("--catalog")
        .arg(catalog)
        .arg("--http-uds")
        .arg(http)
        .stdout(Stdio::null())
        .output()
        .expect("run");
    assert!(!out.status.success(), "expected a startup failure");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn sockets_are_owner_only_by_default_and_removed_on_sigterm() {
    let fx = Fixture::start();
    let mut rt = RuntimeProc::start(&simple_catalog(&fx.url), &[]);
    assert!(std::fs::metadata(&rt.http).unwrap().file_type().is_socket());
    assert_eq!(mode(&rt.http), 0o600);
    if cfg!(feature = "grpc-uds") {
        assert_eq!(mode(&rt.grpc), 0o600);
    }
    assert!(rt.terminate(), "clean exit on SIGTERM");
    assert!(!rt.http.exists(), "HTTP socket removed");
    assert!(!rt.grpc.exists(), "gRPC socket removed");
}

#[test]
fn socket_mode_flag_and_parent_directory_creation() {
    let fx = Fixture::start();
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let cat = dir.path().join("c.toml");
    std::fs::write(&cat, simple_catalog(&fx.url)).unwrap();
    let http = dir.path().join("nested/deeper/http.sock");
    let _p = Proc(
        Command::new(runtime_bin())
            .arg("--catalog")
            .arg(&cat)
            .arg("--http-uds")
            .arg(&http)
            .args(["--socket-mode", "660"])
            .spawn()
            .unwrap(),
    );
    for _ in 0..1500 {
        if http.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(mode(&http), 0o660);
}

#[test]
fn stale_socket_is_replaced_and_live_one_refused() {
    let fx = Fixture::start();
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let cat = dir.path().join("c.toml");
    std::fs::write(&cat, simple_catalog(&fx.url)).unwrap();
    let http = dir.path().join("http.sock");
    // A stale socket: bound, then its listener dropped (connect is refused).
    drop(std::os::unix::net::UnixListener::bind(&http).unwrap());
    assert!(http.exists());
    let _live = Proc(
        Command::new(runtime_bin())
            .arg("--catalog")
            .arg(&cat)
            .arg("--http-uds")
            .arg(&http)
            .spawn()
            .unwrap(),
    );
    let mut ok = false;
    for _ in 0..1500 {
        if std::os::unix::net::UnixStream::connect(&http).is_ok() {
            ok = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(ok, "the stale socket was replaced by a live one");
    let err = start_fails(&cat, &http);
    assert!(err.contains("in use"), "{err}");
    assert!(
        std::os::unix::net::UnixStream::connect(&http).is_ok(),
        "the live runtime keeps its socket"
    );
}

#[test]
fn non_socket_file_is_never_deleted() {
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let cat = dir.path().join("c.toml");
    std::fs::write(&cat, "").unwrap();
    let file = dir.path().join("precious.txt");
    std::fs::write(&file, "keep me").unwrap();
    let err = start_fails(&cat, &file);
    assert!(err.contains("not a socket"), "{err}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");
}

#[test]
fn too_long_path_is_a_clear_error() {
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let cat = dir.path().join("c.toml");
    std::fs::write(&cat, "").unwrap();
    let long = dir.path().join("x".repeat(120));
    let err = start_fails(&cat, &long);
    assert!(err.contains("platform limit is 107"), "{err}");
}

#[test]
fn unreachable_required_upstream_is_a_startup_error() {
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let cat = dir.path().join("c.toml");
    std::fs::write(&cat, simple_catalog("http://127.0.0.1:9/mcp")).unwrap();
    let err = start_fails(&cat, &dir.path().join("h.sock"));
    assert!(err.contains("required upstream unavailable"), "{err}");
    assert!(!dir.path().join("h.sock").exists());
}

#[test]
fn startup_errors_are_one_line_that_names_each_cause_once() {
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let missing = dir.path().join("missing.toml");
    let err = start_fails(&missing, &dir.path().join("h.sock"));
    assert_eq!(
        err,
        format!(
            "mcp-runtime: cannot read catalog {}: No such file or directory (os error 2)\n",
            missing.display()
        )
    );
    // The upstream's error words (reqwest's) appear once, not again as the error's source.
    let cat = dir.path().join("c.toml");
    std::fs::write(&cat, simple_catalog("http://127.0.0.1:9/mcp")).unwrap();
    let err = start_fails(&cat, &dir.path().join("h.sock"));
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with(
            "mcp-runtime: required upstream unavailable at start: upstream fixture unavailable: "
        ),
        "{err}"
    );
    assert_eq!(err.matches("error sending request").count(), 1, "{err}");
    // A bad URL and an unknown key: the catalog's own words, on one line, before any connection.
    for (text, want) in [
        (
            "[[upstreams]]\nid = \"u\"\nurl = \"not a url\"\n",
            "mcp-runtime: invalid catalog: upstream `u` has a `url` that is not a URL \
             (relative URL without a base)\n",
        ),
        (
            "[[upstreams]]\nid = \"u\"\nurl = \"http://127.0.0.1:9/mcp\"\nbogus = 1\n",
            "mcp-runtime: invalid catalog: line 4, column 1: unknown field `bogus`, expected one \
             of `id`, `transport`, `url`, `headers`, `bearer`, `ca_file`, `command`, `args`, `env`, `cwd`, \
             `prefix`, `visibility`, `team`, `required`\n",
        ),
    ] {
        std::fs::write(&cat, text).unwrap();
        assert_eq!(start_fails(&cat, &dir.path().join("h.sock")), want);
    }
}

#[test]
fn an_unreadable_catalog_is_one_line_naming_it() {
    // A directory where the catalog file should be: unreadable as a file whatever the uid
    // (a mode-000 file is readable by root).
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let err = start_fails(dir.path(), &dir.path().join("h.sock"));
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with(&format!(
            "mcp-runtime: cannot read catalog {}: ",
            dir.path().display()
        )),
        "{err}"
    );
    assert!(err.contains("directory"), "{err}");
}

#[test]
fn help_names_every_log_and_operations_setting() {
    let out = Command::new(runtime_bin())
        .arg("--help")
        .output()
        .expect("run");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for setting in [
        "MCP_RUNTIME_LOG ",
        "MCP_RUNTIME_LOG_FORMAT",
        "mcp_runtime::access",
        "MCP_RUNTIME_METRICS_LISTEN",
        "MCP_RUNTIME_DRAIN_MS",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    ] {
        assert!(help.contains(setting), "{setting} not in --help:\n{help}");
    }
}

#[tokio::test]
async fn missing_socket_directories_are_created_owner_only() {
    let fx = Fixture::start();
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let cat = dir.path().join("c.toml");
    std::fs::write(&cat, simple_catalog(&fx.url)).unwrap();
    let http = dir.path().join("a/b/h.sock");
    let _rt = spawn_on(&cat, &http, &[]);
    until_healthy(&http).await;
    assert_eq!(mode(&dir.path().join("a")), 0o700);
    assert_eq!(mode(&dir.path().join("a/b")), 0o700);
    assert_eq!(mode(&http), 0o600);
}

#[test]
fn tool_name_collision_is_a_startup_error() {
    let (a, b) = (Fixture::start(), Fixture::start());
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let cat = dir.path().join("c.toml");
    std::fs::write(
        &cat,
        format!(
            "[[upstreams]]\nid = \"a\"\nurl = \"{}\"\n[[upstreams]]\nid = \"b\"\nurl = \"{}\"\n",
            a.url, b.url
        ),
    )
    .unwrap();
    let err = start_fails(&cat, &dir.path().join("h.sock"));
    assert!(err.contains("collision") && err.contains("`echo`"), "{err}");
}

#[cfg(not(feature = "grpc-uds"))]
#[test]
fn grpc_socket_without_the_feature_is_refused() {
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let cat = dir.path().join("c.toml");
    std::fs::write(&cat, "").unwrap();
    let out = Command::new(runtime_bin())
        .arg("--catalog")
        .arg(&cat)
        .arg("--http-uds")
        .arg(dir.path().join("h.sock"))
        .arg("--grpc-uds")
        .arg(dir.path().join("g.sock"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("`grpc-uds` feature"));
}

/// A restart that overlaps the old runtime's drain: the draining runtime still owns its path,
/// so the new one refuses it (status 2, the path named) instead of replacing it as stale and
/// then losing it to the old one's clean-up. A client connecting during the drain has its
/// connection closed at once. After the old one exits, the path can be bound again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_runtime_still_owns_its_socket() {
    let within = Duration::from_secs(10);
    let fx = Fixture::start();
    let mut a = RuntimeProc::start(&simple_catalog(&fx.url), &[]);
    let http = Http::new(&a.http);
    let who = auth("alice@example.com", false, Some(&[]));
    let sid = http.initialize(&who, None).await;
    let call = http.spawn(sleep_call(&who, &sid, 5, 3_000));
    http.until_inflight(&who, &sid, 1, within).await;
    a.signal_term();
    tokio::time::sleep(Duration::from_millis(500)).await;

    let catalog = a.dir.path().join("catalog.toml");
    let path = a.http.clone();
    let (code, err) = tokio::task::spawn_blocking(move || {
        run_to_exit(
            Command::new(runtime_bin())
                .arg("--catalog")
                .arg(&catalog)
                .arg("--http-uds")
                .arg(&path),
        )
    })
    .await
    .unwrap();
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("in use") && err.contains(&a.http.display().to_string()),
        "{err}"
    );
    assert!(
        !call.is_finished(),
        "the call keeps the first runtime draining"
    );

    // A client of the draining runtime is not left waiting in the backlog.
    let mut conn = tokio::net::UnixStream::connect(&a.http)
        .await
        .expect("the draining runtime's socket still listens");
    let _ = conn
        .write_all(b"GET /health HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await;
    let mut answer = Vec::new();
    let read = tokio::time::timeout(within, conn.read_to_end(&mut answer))
        .await
        .expect("the connection was closed before the drain ended");
    assert!(
        read.is_err() || answer.is_empty(),
        "closed unanswered: {answer:?}"
    );
    assert!(
        !call.is_finished(),
        "closed while the drain was still open, not at the runtime's exit"
    );

    let r = call.await.unwrap();
    assert_eq!(
        r.json().pointer("/result/content/0/text"),
        Some(&json!("slept 3000 ms"))
    );
    let (ok, a) = tokio::task::spawn_blocking(move || {
        let ok = a.wait();
        (ok, a)
    })
    .await
    .unwrap();
    assert!(ok, "clean exit");
    assert!(!a.http.exists(), "the first runtime removed its own socket");
    let _b = spawn_on(&a.dir.path().join("catalog.toml"), &a.http, &[]);
    until_healthy(&a.http).await;
}

/// A socket file deleted under a running runtime and bound again by a second one: the first
/// one's exit leaves the second one's file in place (it removes only the file it bound).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runtime_removes_only_the_socket_file_it_bound() {
    let fx = Fixture::start();
    let mut a = RuntimeProc::start(&simple_catalog(&fx.url), &[]);
    std::fs::remove_file(&a.http).unwrap();
    let _b = spawn_on(&a.dir.path().join("catalog.toml"), &a.http, &[]);
    until_healthy(&a.http).await;
    let (ok, a) = tokio::task::spawn_blocking(move || {
        let ok = a.terminate();
        (ok, a)
    })
    .await
    .unwrap();
    assert!(ok, "clean exit");
    assert!(
        std::fs::metadata(&a.http).unwrap().file_type().is_socket(),
        "the second runtime's socket is still there"
    );
    let (status, body) = Http::new(&a.http).health().await;
    assert_eq!((status, &body["status"]), (200, &json!("serving")));
}

/// `@name` is an abstract socket name on Linux; the runtime serves only file paths and says
/// so (status 2) instead of creating a file named `@name` in the working directory. The same
/// for both flags and their env forms.
#[test]
fn abstract_socket_names_are_refused() {
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let cat = dir.path().join("c.toml");
    std::fs::write(&cat, "").unwrap();
    let runs: [(&str, Option<&str>); 4] = [
        ("--http-uds", None),
        ("--grpc-uds", None),
        ("MCP_RUST_UDS", Some("@mcp-test")),
        ("MCP_RUST_GRPC_UDS", Some("@mcp-test")),
    ];
    for (name, env) in runs {
        let mut cmd = Command::new(runtime_bin());
        cmd.current_dir(dir.path())
            .arg("--catalog")
            .arg(&cat)
            .env_remove("MCP_RUST_UDS")
            .env_remove("MCP_RUST_GRPC_UDS");
        match env {
            Some(value) => cmd.env(name, value),
            None => cmd.args([name, "@mcp-test"]),
        };
        let (code, err) = run_to_exit(&mut cmd);
        assert_eq!(code, Some(2), "{name}: {err}");
        let grpc = name.contains("GRPC") || name.contains("grpc");
        if grpc && !cfg!(feature = "grpc-uds") {
            assert!(err.contains("`grpc-uds` feature"), "{name}: {err}");
        } else {
            assert!(
                err.contains("@mcp-test")
                    && err.contains("abstract socket names are not supported"),
                "{name}: {err}"
            );
        }
        assert!(!dir.path().join("@mcp-test").exists(), "{name}");
    }
}

/// An empty `MCP_RUST_GRPC_UDS` (or `MCP_RUST_UDS`) means the socket is not wanted, as the
/// gateway reads it: the runtime serves the other socket; with neither, it says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_socket_variable_means_not_given() {
    let fx = Fixture::start();
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let cat = dir.path().join("c.toml");
    std::fs::write(&cat, simple_catalog(&fx.url)).unwrap();
    let http = dir.path().join("h.sock");
    let _rt = spawn_on(&cat, &http, &[("MCP_RUST_GRPC_UDS", "")]);
    until_healthy(&http).await;
    let who = auth("alice@example.com", false, Some(&[]));
    let sid = Http::new(&http).initialize(&who, None).await;
    assert!(!sid.is_empty());

    let (code, err) = run_to_exit(
        Command::new(runtime_bin())
            .arg("--catalog")
            .arg(&cat)
            .env("MCP_RUST_UDS", "")
            .env("MCP_RUST_GRPC_UDS", ""),
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("no socket to serve"), "{err}");
}

/// A proxy in the environment (here a closed port) is not used for a loopback upstream: the
/// runtime starts and calls reach the fixture.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_upstreams_never_go_through_a_proxy() {
    let fx = Fixture::start();
    let closed = "http://127.0.0.1:1";
    let rt = RuntimeProc::start_with_env(
        &simple_catalog(&fx.url),
        &[],
        &[
            ("http_proxy", closed),
            ("HTTP_PROXY", closed),
            ("ALL_PROXY", closed),
            ("NO_PROXY", ""),
            ("no_proxy", ""),
        ],
    );
    let http = Http::new(&rt.http);
    let who = auth("alice@example.com", false, Some(&[]));
    let sid = http.initialize(&who, None).await;
    let r = http.send(&sleep_call(&who, &sid, 5, 10)).await;
    assert_eq!(
        r.json().pointer("/result/content/0/text"),
        Some(&json!("slept 10 ms"))
    );
}

/// An upstream that is not on loopback goes through the proxy of the environment; when that
/// fails the start-up error names the variable (here the proxy is a closed loopback port, so
/// nothing leaves the host).
#[test]
fn an_unreachable_upstream_behind_a_proxy_names_the_variable() {
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let cat = dir.path().join("c.toml");
    // 192.0.2.0/24 is TEST-NET-1 (RFC 5737): never routed.
    std::fs::write(&cat, simple_catalog("http://192.0.2.1:9/mcp")).unwrap();
    let mut cmd = Command::new(runtime_bin());
    cmd.arg("--catalog")
        .arg(&cat)
        .arg("--http-uds")
        .arg(dir.path().join("h.sock"));
    for var in PROXY_VARS {
        cmd.env_remove(var);
    }
    cmd.env("http_proxy", "http://127.0.0.1:1");
    let (code, err) = run_to_exit(&mut cmd);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("required upstream unavailable") && err.contains("http_proxy"),
        "{err}"
    );
}

/// Edge mode's flags go together: `--public-listen` without `--core-uds` (or the reverse) is a
/// usage error (status 2), and so is `--core-transport grpc` in a build without the feature.
#[test]
fn edge_flags_are_checked_before_start() {
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let cat = dir.path().join("c.toml");
    std::fs::write(&cat, "").unwrap();
    let core = dir.path().join("core.sock");
    let run = |args: &[&std::ffi::OsStr]| {
        let out = Command::new(runtime_bin())
            .arg("--catalog")
            .arg(&cat)
            .args(args)
            .env_remove("MCP_RUNTIME_CORE_UDS")
            .env_remove("MCP_RUNTIME_PUBLIC_LISTEN")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = run(&["--public-listen".as_ref(), "127.0.0.1:0".as_ref()]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("go together"), "{err}");
    let (code, err) = run(&[
        "--http-uds".as_ref(),
        dir.path().join("h.sock").as_os_str(),
        "--core-uds".as_ref(),
        core.as_os_str(),
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("go together"), "{err}");
    if !cfg!(feature = "grpc-uds") {
        let (code, err) = run(&[
            "--public-listen".as_ref(),
            "127.0.0.1:0".as_ref(),
            "--core-uds".as_ref(),
            core.as_os_str(),
        ]);
        assert_eq!(code, Some(2), "{err}");
        assert!(err.contains("`grpc-uds` feature"), "{err}");
    }
}

/// A keep-alive period under 100 ms (a client flooded with comments) or not a number is a
/// usage error naming the flag (exit status 2); 0 (never) and 100 are taken.
#[test]
fn a_keep_alive_period_out_of_range_is_refused_at_start() {
    let flag = "--public-sse-keep-alive-ms";
    for value in ["1", "99", "3600001", "soon"] {
        crate::runtime_proc::assert_refused_at_start(flag, value);
    }
    for value in ["0", "100"] {
        // Taken: the start then stops at what is missing (the catalog), not at the value.
        let out = std::process::Command::new(runtime_bin())
            .args([flag, value])
            .output()
            .expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("invalid value"), "{value}: {err}");
        assert!(err.contains("--catalog"), "{value}: {err}");
    }
}
