//! Starting and stopping the processes under test: the fixture upstream and the runtime.
//!
//! Each child is held by a [`ChildGuard`] that stops it when dropped (SIGTERM, then SIGKILL
//! after a grace period), so an error anywhere in a run still leaves no process behind. Their
//! stderr goes to log files in the run's work directory; the tail is quoted when a start fails.

use std::fs::File;
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::client::http;

/// How long a child gets to exit after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// How long a child gets to become ready.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A running child process, stopped on drop.
#[derive(Debug)]
pub struct ChildGuard {
    name: String,
    child: Child,
    log: PathBuf,
}

impl ChildGuard {
    /// The child's process id.
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The file the child's stderr goes to.
    #[must_use]
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// An error if the child has exited, quoting the end of its log.
    ///
    /// # Errors
    ///
    /// When the child is no longer running.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => bail!("{} exited ({status}); {}", self.name, log_tail(&self.log)),
            Err(e) => bail!("cannot query {}: {e}", self.name),
        }
    }

    /// Stops the child: SIGTERM, then SIGKILL after a grace period (5 s).
    pub fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        // `kill(1)` rather than libc: the workspace forbids `unsafe`.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The last lines of a log file, for error messages.
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(15)..].join("\n");
    format!("log {}:\n{tail}", path.display())
}

/// Starts `cmd` with stdin closed and stderr going to `log`, held by a [`ChildGuard`].
///
/// # Errors
///
/// When the log cannot be created or the process cannot start.
pub fn spawn_logged(name: &str, cmd: &mut Command, log: PathBuf) -> anyhow::Result<ChildGuard> {
    let err = File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
    let child = cmd
        .stdin(Stdio::null())
        .stderr(err)
        .spawn()
        .with_context(|| format!("cannot start {name} ({:?})", cmd.get_program()))?;
    Ok(ChildGuard {
        name: name.to_owned(),
        child,
        log,
    })
}

/// The running fixture upstream.
#[derive(Debug)]
pub struct Fixture {
    /// The process.
    pub guard: ChildGuard,
    /// Its MCP endpoint, `http://127.0.0.1:PORT/mcp`.
    pub url: String,
}

/// Starts `mcp-fixture-server --listen 127.0.0.1:0 --generated-tools N` (log `dir/NAME.log`)
/// and reads the URL it prints.
///
/// # Errors
///
/// When the process cannot start or prints no `MCP_FIXTURE_URL=` line in time.
pub fn start_fixture(
    bin: &Path,
    dir: &Path,
    name: &str,
    generated_tools: usize,
) -> anyhow::Result<Fixture> {
    let mut cmd = Command::new(bin);
    cmd.args([
        "--listen",
        "127.0.0.1:0",
        "--generated-tools",
        &generated_tools.to_string(),
    ])
    .stdout(Stdio::piped());
    let mut guard = spawn_logged(name, &mut cmd, dir.join(format!("{name}.log")))?;
    let stdout = guard
        .child
        .stdout
        .take()
        .context("fixture stdout is not piped")?;
    let (tx, rx) = mpsc::channel();
    // Reads stdout to its end so the fixture never blocks on a full pipe.
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        if let Some(Ok(first)) = lines.next() {
            let _ = tx.send(first);
        }
        for _ in lines {}
    });
    let line = rx.recv_timeout(START_TIMEOUT).map_err(|_| {
        let _ = guard.check_alive();
        anyhow::anyhow!(
            "mcp-fixture-server printed no URL; {}",
            log_tail(guard.log())
        )
    })?;
    let url = line
        .strip_prefix("MCP_FIXTURE_URL=")
        .with_context(|| format!("unexpected first line from mcp-fixture-server: {line:?}"))?
        .trim()
        .to_owned();
    Ok(Fixture { guard, url })
}

/// The running runtime and where it listens.
#[derive(Debug)]
pub struct RuntimeProcess {
    /// The process.
    pub guard: ChildGuard,
    /// The HTTP/JSON socket.
    pub http_socket: PathBuf,
    /// The gRPC socket, when the gRPC adapter was asked for.
    pub grpc_socket: Option<PathBuf>,
    /// The body of its first `GET /health` answer.
    pub health: serde_json::Value,
    /// The catalog file it serves (the Python baseline reads the same one).
    pub catalog: PathBuf,
    /// Its command line, for the report.
    pub command: String,
}

/// The upstreams of a run, for [`write_catalog`].
#[derive(Debug, Clone)]
pub struct Upstreams<'a> {
    /// The fixture serving every workload but `tools/list (500 tools)` (started with
    /// `--generated-tools 4`: its six fixed tools plus `gen_0000`..`gen_0003`).
    pub fixture: &'a str,
    /// A second fixture process started with `--generated-tools 500`, prefixed `big_`.
    pub big: Option<&'a str>,
    /// `@modelcontextprotocol/server-everything`, prefixed `everything_`.
    pub everything: Option<&'a str>,
}

/// Tool names of the `tools10` virtual server: the fixture's fixed tools and its first four
/// generated ones.
pub const TOOLS10: [&str; 10] = [
    "echo", "payload", "sleep", "inflight", "progress", "fail", "gen_0000", "gen_0001", "gen_0002",
    "gen_0003",
];

/// Writes `dir/catalog.toml` (`docs/catalog.md`): the upstreams, and the virtual servers
/// `tools10` (exactly [`TOOLS10`]) and, with the big fixture, `tools500` (its 500 generated
/// tools). Returns the path.
///
/// # Errors
///
/// When the file cannot be written.
pub fn write_catalog(dir: &Path, up: &Upstreams<'_>) -> anyhow::Result<PathBuf> {
    let mut toml = format!(
        "[[upstreams]]\nid = \"fixture\"\nurl = {}\n",
        toml_string(up.fixture)
    );
    if let Some(url) = up.big {
        toml.push_str(&format!(
            "\n[[upstreams]]\nid = \"big\"\nurl = {}\nprefix = \"big_\"\n",
            toml_string(url)
        ));
    }
    if let Some(url) = up.everything {
        toml.push_str(&format!(
            "\n[[upstreams]]\nid = \"everything\"\nurl = {}\nprefix = \"everything_\"\n",
            toml_string(url)
        ));
    }
    let list = |names: &mut dyn Iterator<Item = String>| {
        names
            .map(|n| toml_string(&n))
            .collect::<Vec<_>>()
            .join(", ")
    };
    toml.push_str(&format!(
        "\n[[servers]]\nid = \"tools10\"\ntools = [{}]\n",
        list(&mut TOOLS10.iter().map(|&n| n.to_owned()))
    ));
    if up.big.is_some() {
        toml.push_str(&format!(
            "\n[[servers]]\nid = \"tools500\"\ntools = [{}]\n",
            list(&mut (0..500).map(|i| format!("big_gen_{i:04}")))
        ));
    }
    let catalog = dir.join("catalog.toml");
    std::fs::write(&catalog, toml)
        .with_context(|| format!("cannot write {}", catalog.display()))?;
    Ok(catalog)
}

/// Starts an upstream MCP server from a shell command (e.g. server-everything under Node) with
/// `PORT` set to a free loopback port, and waits until the port accepts connections. The
/// command is run as `exec COMMAND` so the guard's signal reaches the server itself.
///
/// # Errors
///
/// When the process cannot start, exits, or does not listen within the start timeout.
pub fn start_command_upstream(name: &str, command: &str, dir: &Path) -> anyhow::Result<Fixture> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .context("cannot find a free loopback port")?
        .port();
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!("exec {command}"))
        .env("PORT", port.to_string())
        .stdout(Stdio::null());
    let mut guard = spawn_logged(name, &mut cmd, dir.join(format!("{name}.log")))?;
    let deadline = Instant::now() + START_TIMEOUT;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        guard.check_alive()?;
        if Instant::now() > deadline {
            bail!(
                "{name} not listening on port {port} after {START_TIMEOUT:?}; {}",
                log_tail(guard.log())
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(Fixture {
        guard,
        url: format!("http://127.0.0.1:{port}/mcp"),
    })
}

/// The runtime's byte budgets in the benchmark: 4 GiB per subject and for the process, so the
/// largest rows (`echo:16m` at concurrency 64 from one subject: about 2 GiB of bodies and
/// results in flight) measure the boundary and not the runtime's refusals. The other quotas
/// keep their defaults; the soak runs with every default.
pub const BENCH_QUOTA_ARGS: [&str; 4] = [
    "--max-bytes-per-subject",
    "4294967296",
    "--max-bytes-in-flight",
    "4294967296",
];

/// Starts `mcp-runtime` serving `catalog` with its HTTP/JSON socket (and, with `grpc`, its
/// gRPC socket) in `dir`, socket and log names prefixed `name`, and `quota_args` (flags of its
/// quotas, as [`BENCH_QUOTA_ARGS`]), and waits until the socket files exist and `GET /health`
/// answers 200.
///
/// # Errors
///
/// When the process cannot start, exits, or is not ready within the start timeout.
pub async fn start_runtime(
    bin: &Path,
    dir: &Path,
    name: &str,
    catalog: &Path,
    worker_threads: Option<usize>,
    grpc: bool,
    quota_args: &[&str],
) -> anyhow::Result<RuntimeProcess> {
    start_runtime_with(
        bin,
        dir,
        name,
        catalog,
        worker_threads,
        &Launch {
            grpc,
            args: quota_args,
            env: &[],
        },
    )
    .await
}

/// How [`start_runtime_with`] starts a runtime beyond its catalog and sockets.
#[derive(Debug, Clone, Copy)]
pub struct Launch<'a> {
    /// Whether to serve the gRPC adapter too (`--grpc-uds`).
    pub grpc: bool,
    /// More command-line arguments (quotas, settings).
    pub args: &'a [&'a str],
    /// Environment variables set for the process (name, value), e.g. the `OTEL_*` ones.
    pub env: &'a [(&'a str, &'a str)],
}

/// [`start_runtime`] with environment variables of its own (`launch`).
///
/// # Errors
///
/// As [`start_runtime`].
pub async fn start_runtime_with(
    bin: &Path,
    dir: &Path,
    name: &str,
    catalog: &Path,
    worker_threads: Option<usize>,
    launch: &Launch<'_>,
) -> anyhow::Result<RuntimeProcess> {
    let (grpc, quota_args) = (launch.grpc, launch.args);
    let catalog = catalog.to_path_buf();
    let http_socket = dir.join(format!("{name}-http.sock"));
    let grpc_socket = grpc.then(|| dir.join(format!("{name}-grpc.sock")));
    let mut cmd = Command::new(bin);
    cmd.arg("--catalog")
        .arg(&catalog)
        .arg("--http-uds")
        .arg(&http_socket)
        .args(["--shutdown-grace-ms", "1000"])
        .args(quota_args)
        .stdout(Stdio::null());
    if let Some(path) = &grpc_socket {
        cmd.arg("--grpc-uds").arg(path);
    }
    if let Some(n) = worker_threads {
        cmd.args(["--worker-threads", &n.to_string()]);
    }
    cmd.envs(launch.env.iter().copied());
    let command = launch
        .env
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .chain(
            std::iter::once(cmd.get_program())
                .chain(cmd.get_args())
                .map(|a| a.to_string_lossy().into_owned()),
        )
        .collect::<Vec<_>>()
        .join(" ");
    let mut guard = spawn_logged(name, &mut cmd, dir.join(format!("{name}.log")))?;
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        guard.check_alive()?;
        if http_socket.exists()
            && grpc_socket.as_ref().is_none_or(|p| p.exists())
            && let Ok((status, body)) = http::get(&http_socket, "/health").await
            && status == 200
        {
            let health = serde_json::from_slice(&body).context("GET /health is not JSON")?;
            return Ok(RuntimeProcess {
                guard,
                http_socket,
                grpc_socket,
                health,
                catalog,
                command,
            });
        }
        if Instant::now() > deadline {
            bail!(
                "{name} not ready after {START_TIMEOUT:?}; {}",
                log_tail(guard.log())
            );
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A TOML basic string.
fn toml_string(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

/// The first line of `BIN --version`, or `"unknown"`.
#[must_use]
pub fn version_of(bin: &Path) -> String {
    Command::new(bin)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.lines().next().map(str::to_owned))
        .unwrap_or_else(|| "unknown".to_owned())
}

/// An OTLP/HTTP trace receiver that keeps nothing (`POST /v1/traces` answered 200 with an
/// empty `ExportTraceServiceResponse`, per the OpenTelemetry protocol specification's
/// OTLP/HTTP section): where a runtime measured with tracing on exports its spans, so that
/// the export is real (serialised and sent) without a collector's cost on the machine.
#[derive(Debug)]
pub struct OtlpSink {
    /// Its `http://127.0.0.1:PORT` base, for `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub endpoint: String,
    /// Export requests received.
    pub requests: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Body bytes received.
    pub bytes: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

/// Starts an [`OtlpSink`] on a loopback port, served by tasks of the current tokio runtime.
///
/// # Errors
///
/// When no loopback port can be bound.
pub async fn start_otlp_sink() -> anyhow::Result<OtlpSink> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    use http_body_util::BodyExt as _;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let endpoint = format!("http://{}", listener.local_addr()?);
    let (requests, bytes) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let (r, b) = (Arc::clone(&requests), Arc::clone(&bytes));
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (r, b) = (Arc::clone(&r), Arc::clone(&b));
            let service =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let (r, b) = (Arc::clone(&r), Arc::clone(&b));
                    async move {
                        let n = req
                            .into_body()
                            .collect()
                            .await
                            .map_or(0, |c| c.to_bytes().len());
                        r.fetch_add(1, Ordering::Relaxed);
                        b.fetch_add(n as u64, Ordering::Relaxed);
                        let mut resp =
                            hyper::Response::new(http_body_util::Full::new(bytes::Bytes::new()));
                        resp.headers_mut().insert(
                            hyper::header::CONTENT_TYPE,
                            hyper::header::HeaderValue::from_static("application/x-protobuf"),
                        );
                        Ok::<_, std::convert::Infallible>(resp)
                    }
                });
            tokio::spawn(async move {
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .await;
            });
        }
    });
    Ok(OtlpSink {
        endpoint,
        requests,
        bytes,
    })
}
