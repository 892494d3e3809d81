//! Socket handling: mode, stale socket replaced, live socket refused, non-socket file kept,
//! path length limit, sockets removed on SIGTERM.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::process::{Command, Stdio};

use crate::runtime_proc::{Proc, RuntimeProc, runtime_bin};
use crate::support::*;

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
