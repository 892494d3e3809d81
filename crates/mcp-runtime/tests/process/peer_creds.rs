//! Who may connect: `--allow-uid` checked with `SO_PEERCRED` on both sockets before a byte of
//! the request is read (a client under another uid runs via `setpriv`, which needs root as the
//! test runner here is). (How many may connect, and how long they may stay silent:
//! `tests/it/admission.rs`.)

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use crate::runtime_proc::RuntimeProc;
use crate::support::*;

/// The uid the tests (and so the runtime) run as.
fn own_uid() -> u32 {
    std::fs::metadata("/proc/self").expect("proc").uid()
}

/// A client in Python run under `uid` via `setpriv`: connects to `sock`, sends `payload`, and
/// prints `ANSWERED <n>` with the number of bytes the server sent back, or `REFUSED` when the
/// connection was closed or reset without an answer. `None` when setpriv cannot switch uid
/// (not root): the caller skips.
fn client_as(uid: u32, sock: &Path, payload: &[u8]) -> Option<String> {
    let script = r#"
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(5)
try:
    s.connect(sys.argv[1])
    s.sendall(bytes.fromhex(sys.argv[2]))
    data = s.recv(65536)
    print("ANSWERED %d" % len(data) if data else "REFUSED")
except (ConnectionResetError, BrokenPipeError):
    print("REFUSED")
except PermissionError:
    print("NO PERMISSION")
"#;
    let hex: String = payload.iter().map(|b| format!("{b:02x}")).collect();
    let out = Command::new("setpriv")
        .args([
            &format!("--reuid={uid}"),
            &format!("--regid={uid}"),
            "--clear-groups",
            "python3",
            "-c",
            script,
        ])
        .arg(sock)
        .arg(hex)
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!("setpriv failed: {}", String::from_utf8_lossy(&out.stderr));
        return None;
    }
    Some(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

const HEALTH: &[u8] = b"GET /health HTTP/1.1\r\nhost: localhost\r\n\r\n";
/// The HTTP/2 connection preface and an empty SETTINGS frame: a gRPC server answers with its
/// own SETTINGS.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

/// Lets any uid reach the sockets through the file system, so only the uid check refuses.
fn open_to_all(rt: &RuntimeProc) {
    std::fs::set_permissions(rt.dir.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod dir");
}

#[test]
fn another_uid_is_refused_on_both_sockets_before_its_request_is_read() {
    let fx = Fixture::start();
    let me = own_uid().to_string();
    let rt = RuntimeProc::start(
        &simple_catalog(&fx.url),
        &["--socket-mode", "666", "--allow-uid", &me],
    );
    open_to_all(&rt);
    let Some(other) = client_as(65534, &rt.http, HEALTH) else {
        eprintln!("skipped: setpriv cannot switch to uid 65534 (not root)");
        return;
    };
    assert_eq!(other, "REFUSED", "uid 65534 on the HTTP socket");
    assert!(
        client_as(own_uid(), &rt.http, HEALTH)
            .unwrap()
            .starts_with("ANSWERED")
    );
    if cfg!(feature = "grpc-uds") {
        assert_eq!(client_as(65534, &rt.grpc, H2_PREFACE).unwrap(), "REFUSED");
        assert!(
            client_as(own_uid(), &rt.grpc, H2_PREFACE)
                .unwrap()
                .starts_with("ANSWERED")
        );
    }
    // Without --allow-uid the same client is served (the file mode lets it in).
    let open = RuntimeProc::start(&simple_catalog(&fx.url), &["--socket-mode", "666"]);
    open_to_all(&open);
    assert!(
        client_as(65534, &open.http, HEALTH)
            .unwrap()
            .starts_with("ANSWERED")
    );
}

#[test]
fn allow_uid_takes_a_list_a_repeated_flag_or_the_env_form() {
    let fx = Fixture::start();
    let me = own_uid();
    for (args, env) in [
        (vec!["--allow-uid".to_owned(), format!("{me},65534")], None),
        (
            vec![
                "--allow-uid".to_owned(),
                me.to_string(),
                "--allow-uid".to_owned(),
                "65534".to_owned(),
            ],
            None,
        ),
        (vec![], Some(format!("{me},65534"))),
    ] {
        let mut extra: Vec<&str> = vec!["--socket-mode", "666"];
        extra.extend(args.iter().map(String::as_str));
        let rt = match &env {
            Some(v) => RuntimeProc::start_with_env(
                &simple_catalog(&fx.url),
                &extra,
                &[("MCP_RUNTIME_ALLOW_UID", v)],
            ),
            None => RuntimeProc::start(&simple_catalog(&fx.url), &extra),
        };
        open_to_all(&rt);
        let Some(other) = client_as(65534, &rt.http, HEALTH) else {
            eprintln!("skipped: setpriv cannot switch uid");
            return;
        };
        assert!(other.starts_with("ANSWERED"), "{args:?} {env:?}: {other}");
        assert_eq!(
            client_as(65533, &rt.http, HEALTH).unwrap(),
            "REFUSED",
            "{args:?} {env:?}"
        );
    }
}
