//! The `mcp-runtime` binary as a child process on Unix sockets in a temp dir.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The runtime binary under test.
pub(crate) fn runtime_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_mcp-runtime"))
}

/// Asserts that `flag value` is a usage error naming both (clap's "invalid value", exit
/// status 2), before anything starts.
pub(crate) fn assert_refused_at_start(flag: &str, value: &str) {
    let out = Command::new(runtime_bin())
        .args([flag, value])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2), "{flag} {value}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("invalid value '{value}' for '{flag}")),
        "{flag}: {err}"
    );
}

/// A child process killed on drop.
pub(crate) struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A running runtime with its sockets in a temp dir.
pub(crate) struct RuntimeProc {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) http: PathBuf,
    pub(crate) grpc: PathBuf,
    pub(crate) proc: Option<Proc>,
}

impl RuntimeProc {
    /// Starts the runtime with `catalog` (TOML) and extra flags; waits until both sockets
    /// answer (the gRPC one only when built with `grpc-uds`).
    pub(crate) fn start(catalog: &str, extra: &[&str]) -> Self {
        Self::start_with_env(catalog, extra, &[])
    }

    /// As [`RuntimeProc::start`], with extra environment variables.
    pub(crate) fn start_with_env(catalog: &str, extra: &[&str], env: &[(&str, &str)]) -> Self {
        Self::start_logged(catalog, extra, env, None)
    }

    /// As [`RuntimeProc::start_with_env`], with the runtime's stderr written to `log` (a file)
    /// when given; `env` may set `MCP_RUNTIME_LOG`.
    pub(crate) fn start_logged(
        catalog: &str,
        extra: &[&str],
        env: &[(&str, &str)],
        log: Option<std::fs::File>,
    ) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("rt")
            .tempdir_in("/tmp")
            .expect("tempdir");
        let http = dir.path().join("http.sock");
        let grpc = dir.path().join("grpc.sock");
        let mut rt = Self {
            dir,
            http,
            grpc,
            proc: None,
        };
        rt.spawn(catalog, extra, env, log);
        rt
    }

    /// Starts the runtime again in the same directory, on the same socket paths (after it
    /// exited or was killed; the stale socket files are removed first), with `catalog` and
    /// `extra` flags; waits until its sockets are bound.
    pub(crate) fn restart(&mut self, catalog: &str, extra: &[&str]) {
        assert!(self.proc.is_none(), "restart of a running runtime");
        let _ = std::fs::remove_file(&self.http);
        let _ = std::fs::remove_file(&self.grpc);
        self.spawn(catalog, extra, &[], None);
    }

    fn spawn(
        &mut self,
        catalog: &str,
        extra: &[&str],
        env: &[(&str, &str)],
        log: Option<std::fs::File>,
    ) {
        let cat = self.dir.path().join("catalog.toml");
        std::fs::write(&cat, catalog).expect("write catalog");
        let (http, grpc) = (&self.http, &self.grpc);
        let mut cmd = Command::new(runtime_bin());
        cmd.arg("--catalog").arg(&cat).arg("--http-uds").arg(http);
        if cfg!(feature = "grpc-uds") {
            cmd.arg("--grpc-uds").arg(grpc);
        }
        cmd.args(extra)
            // TEST_RUNTIME_LOG=debug shows the runtime's log while debugging a test.
            .env(
                "MCP_RUNTIME_LOG",
                std::env::var("TEST_RUNTIME_LOG").unwrap_or_else(|_| "error".into()),
            )
            .envs(env.iter().copied())
            .stderr(log.map_or_else(Stdio::inherit, Stdio::from));
        self.proc = Some(Proc(cmd.spawn().expect("spawn runtime")));
        self.wait_ready();
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = self.http.exists() && (!cfg!(feature = "grpc-uds") || self.grpc.exists());
            if ready {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "runtime did not bind its sockets in 30 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The runtime's process id.
    pub(crate) fn pid(&self) -> u32 {
        self.proc.as_ref().expect("running").0.id()
    }

    /// Sends SIGTERM and waits for exit; returns whether it exited successfully.
    pub(crate) fn terminate(&mut self) -> bool {
        self.signal_term();
        self.wait()
    }

    /// Sends SIGTERM without waiting: the runtime starts draining.
    pub(crate) fn signal_term(&self) {
        let pid = self.pid().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
    }

    /// Waits for the process to exit; returns whether it exited successfully.
    pub(crate) fn wait(&mut self) -> bool {
        let mut p = self.proc.take().expect("running");
        let status = p.0.wait().expect("wait");
        std::mem::forget(p);
        status.success()
    }
}

/// Resident set size (`VmRSS`) of process `pid` in KiB, from `/proc/PID/status`; `None` when
/// the process is gone or the line is missing.
pub(crate) fn rss_kib(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}
