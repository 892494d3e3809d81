//! The Python side of a run: the project's virtual environment, the gateway processes
//! (`python -m mcp_gateway serve`, one per mode) and the Python-hop client `bench/pyhop.py`.
//!
//! Everything here needs `.venv` (made by `make python-build`). [`PythonEnv::probe`] checks
//! that it can import the gateway, its generated gRPC stubs and uvicorn; when it cannot, the
//! run skips the Python layers and says why in the report instead of failing.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde::Deserialize;

use crate::client::mcp;
use crate::harness::{self, ChildGuard};
use crate::stats::LatencySummary;

/// How long a gateway gets to answer `GET /health` with 200.
const GATEWAY_START_TIMEOUT: Duration = Duration::from_secs(60);

/// Python packages whose versions are recorded.
const PACKAGES: &[&str] = &[
    "mcp-gateway",
    "mcp",
    "uvicorn",
    "starlette",
    "httptools",
    "uvloop",
    "httpx",
    "aiohttp",
    "grpcio",
    "protobuf",
    "pyjwt",
];

/// Probe script: imports what the layers need and prints the versions as JSON.
const PROBE: &str = r#"
import json, platform, sys
from importlib import metadata
import mcp_gateway, uvicorn
import mcp_gateway._proto.mcp.runtime.v1.runtime_pb2_grpc
v = {"python": platform.python_version()}
for name in sys.argv[1:]:
    try:
        v[name] = metadata.version(name)
    except metadata.PackageNotFoundError:
        v[name] = "not installed"
print(json.dumps(v))
"#;

/// A usable virtual environment.
#[derive(Debug, Clone)]
pub struct PythonEnv {
    /// `.venv/bin/python`.
    pub python: PathBuf,
    /// The repository root (working directory of the Python processes).
    pub repo_root: PathBuf,
    /// Python and package versions.
    pub versions: BTreeMap<String, String>,
}

impl PythonEnv {
    /// Checks that `python` can import the gateway, its gRPC stubs and uvicorn.
    ///
    /// # Errors
    ///
    /// Why the environment cannot be used (missing interpreter, failed import), for the note
    /// in the report.
    pub fn probe(python: &Path, repo_root: &Path) -> anyhow::Result<Self> {
        if !python.exists() {
            bail!(
                "{} does not exist (run `make python-build`)",
                python.display()
            );
        }
        let out = Command::new(python)
            .arg("-c")
            .arg(PROBE)
            .args(PACKAGES)
            .current_dir(repo_root)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("cannot run {}", python.display()))?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            let last = err.lines().last().unwrap_or("").trim();
            bail!(
                "{} cannot import the gateway ({last}); run `make python-build`",
                python.display()
            );
        }
        let versions = serde_json::from_slice(&out.stdout).context("probe printed no JSON")?;
        Ok(Self {
            python: python.to_owned(),
            repo_root: repo_root.to_owned(),
            versions,
        })
    }

    /// Mints an HS256 bearer token with the gateway's own `token` command: subject
    /// `bench@example.com`, administrator, no `teams` claim (unrestricted).
    ///
    /// # Errors
    ///
    /// When the command fails.
    pub fn mint_token(&self, secret: &str) -> anyhow::Result<String> {
        let out = Command::new(&self.python)
            .args([
                "-m",
                "mcp_gateway",
                "token",
                "--sub",
                crate::client::SUBJECT_EMAIL,
                "--admin",
                "--ttl-s",
                "86400",
            ])
            .env("JWT_SECRET_KEY", secret)
            .current_dir(&self.repo_root)
            .stdin(Stdio::null())
            .output()
            .context("cannot run `python -m mcp_gateway token`")?;
        if !out.status.success() {
            bail!(
                "`python -m mcp_gateway token` failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8(out.stdout)
            .context("token is not UTF-8")?
            .trim()
            .to_owned())
    }
}

/// How the gateway hands requests to the runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, clap::ValueEnum)]
pub enum GatewayMode {
    /// No runtime socket: the Python baseline (the MCP runtime in-process, official SDK).
    Python,
    /// `MCP_RUST_UDS`: HTTP/JSON over the runtime's Unix socket (httpx).
    #[value(name = "http")]
    HttpJson,
    /// `MCP_RUST_GRPC_UDS`: gRPC over the runtime's Unix socket (grpc.aio).
    Grpc,
}

impl GatewayMode {
    /// Name in reports: `python`, `http-json` or `grpc`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Python => "python",
            Self::HttpJson => "http-json",
            Self::Grpc => "grpc",
        }
    }
}

/// A running gateway.
#[derive(Debug)]
pub struct Gateway {
    /// The mode it was started in.
    pub mode: GatewayMode,
    /// The process (uvicorn, in-process app).
    pub guard: ChildGuard,
    /// Its listen address.
    pub addr: SocketAddr,
    /// The command, environment first, for the report.
    pub command: String,
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
fn free_port() -> anyhow::Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("cannot bind a loopback port")?;
    Ok(l.local_addr()?.port())
}

/// Starts `python -m mcp_gateway serve --workers N` in `mode` on a free loopback port and
/// waits until its `GET /health` answers 200. `socket` is the runtime socket of the mode (unused for Python).
///
/// # Errors
///
/// When the process cannot start, exits, or is not healthy in time.
pub async fn start_gateway(
    env: &PythonEnv,
    mode: GatewayMode,
    workers: usize,
    socket: Option<&Path>,
    catalog: &Path,
    secret: &str,
    dir: &Path,
) -> anyhow::Result<Gateway> {
    let port = free_port()?;
    let mut cmd = Command::new(&env.python);
    cmd.args([
        "-m",
        "mcp_gateway",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
    ])
    .arg(port.to_string())
    .args(["--log-level", "warning", "--workers"])
    .arg(workers.to_string())
    .current_dir(&env.repo_root)
    .env_remove("MCP_RUST_UDS")
    .env_remove("MCP_RUST_GRPC_UDS")
    .env("JWT_SECRET_KEY", secret)
    .env("MCP_RUNTIME_CATALOG", catalog)
    .stdout(Stdio::null());
    let mut shown = format!(
        "JWT_SECRET_KEY=... MCP_RUNTIME_CATALOG={}",
        catalog.display()
    );
    let var = match mode {
        GatewayMode::Python => None,
        GatewayMode::HttpJson => Some("MCP_RUST_UDS"),
        GatewayMode::Grpc => Some("MCP_RUST_GRPC_UDS"),
    };
    if let Some(var) = var {
        let path =
            socket.with_context(|| format!("gateway mode {} needs a socket", mode.name()))?;
        cmd.env(var, path);
        shown.push_str(&format!(" {var}={}", path.display()));
    }
    let command = format!(
        "{shown} {} -m mcp_gateway serve --host 127.0.0.1 --port {port} --log-level warning --workers {workers}",
        env.python.display()
    );
    let log = dir.join(format!("gateway-{}-{workers}w.log", mode.name()));
    let mut guard = harness::spawn_logged("mcp-gateway", &mut cmd, log)?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + GATEWAY_START_TIMEOUT;
    loop {
        guard.check_alive()?;
        if let Ok(status) = mcp::get_status(addr, "/health").await
            && status == 200
        {
            return Ok(Gateway {
                mode,
                guard,
                addr,
                command,
            });
        }
        if Instant::now() > deadline {
            bail!(
                "gateway ({}) not healthy on {addr} after {GATEWAY_START_TIMEOUT:?}; see {}",
                mode.name(),
                guard.log().display()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A Python HTTP or gRPC client of `bench/pyhop.py`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, clap::ValueEnum)]
pub enum PyClient {
    /// `httpx.AsyncClient` over the HTTP/JSON socket (what the gateway uses today).
    Httpx,
    /// `aiohttp.ClientSession` over the HTTP/JSON socket.
    Aiohttp,
    /// `grpc.aio` over the gRPC socket.
    Grpc,
}

impl PyClient {
    /// The `--client` value of `pyhop.py`.
    #[must_use]
    pub fn arg(self) -> &'static str {
        match self {
            Self::Httpx => "httpx",
            Self::Aiohttp => "aiohttp",
            Self::Grpc => "grpc",
        }
    }

    /// Name of the client in reports.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Grpc => "grpc.aio",
            other => other.arg(),
        }
    }

    /// The transport it uses, as named in reports.
    #[must_use]
    pub fn transport(self) -> &'static str {
        match self {
            Self::Grpc => "grpc",
            _ => "http-json",
        }
    }
}

/// The Python-hop workloads `pyhop.py` knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, clap::ValueEnum)]
pub enum PyWorkload {
    /// JSON-RPC `ping`.
    Ping,
    /// `tools/call echo` with a 1 KiB text.
    Echo1k,
}

impl PyWorkload {
    /// The `--workload` value of `pyhop.py`.
    #[must_use]
    pub fn arg(self) -> &'static str {
        match self {
            Self::Ping => "ping",
            Self::Echo1k => "echo1k",
        }
    }

    /// The equivalent Rust workload (same method, same text size), for names and sizes.
    #[must_use]
    pub fn workload(self) -> crate::client::Workload {
        match self {
            Self::Ping => crate::client::Workload::Ping,
            Self::Echo1k => crate::client::Workload::Echo(1024),
        }
    }
}

/// The JSON object `pyhop.py` prints (the fields used here).
#[derive(Debug, Clone, Deserialize)]
pub struct PyHopRow {
    /// Requests sent in the measured phase (successes plus errors).
    pub requests: u64,
    /// Failed requests.
    pub errors: u64,
    /// Wall time of the measured phase.
    pub duration_s: f64,
    /// Requests per second.
    pub rps: f64,
    /// Latency percentiles of the successes, in microseconds.
    pub latency_us: LatencySummary,
    /// Client CPU per request (user plus system, all threads), in microseconds.
    pub client_cpu_us_per_req: f64,
    /// Runtime CPU per request over the measured phase (with `--runtime-pid`).
    pub runtime_cpu_us_per_req: Option<f64>,
    /// The first error, if any.
    pub first_error: Option<String>,
    /// Python version.
    #[serde(default)]
    pub python: Option<String>,
    /// Versions of the Python client packages.
    #[serde(default)]
    pub versions: BTreeMap<String, Option<String>>,
}

/// The arguments of one `pyhop.py` run (without the interpreter and script).
#[must_use]
pub fn pyhop_args(
    client: PyClient,
    socket: &Path,
    workload: PyWorkload,
    concurrency: usize,
    stop: crate::client::Stop,
    warmup: u64,
    runtime_pid: u32,
) -> Vec<String> {
    let mut args = vec![
        "--client".to_owned(),
        client.arg().to_owned(),
        "--uds".to_owned(),
        socket.display().to_string(),
        "--workload".to_owned(),
        workload.arg().to_owned(),
        "--concurrency".to_owned(),
        concurrency.to_string(),
    ];
    match stop {
        crate::client::Stop::Requests(n) => {
            args.extend(["--requests".to_owned(), n.to_string()]);
        }
        crate::client::Stop::Duration(d) => {
            args.extend(["--duration-s".to_owned(), format!("{}", d.as_secs_f64())]);
        }
    }
    args.extend([
        "--warmup".to_owned(),
        warmup.to_string(),
        "--runtime-pid".to_owned(),
        runtime_pid.to_string(),
    ]);
    args
}

/// Runs `pyhop.py` once with `args` and parses its JSON line.
///
/// # Errors
///
/// When the script fails or prints no JSON object.
pub fn run_pyhop(env: &PythonEnv, script: &Path, args: &[String]) -> anyhow::Result<PyHopRow> {
    let out = Command::new(&env.python)
        .arg(script)
        .args(args)
        .current_dir(&env.repo_root)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {}", script.display()))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        bail!(
            "pyhop.py {} failed ({}): {}",
            args.join(" "),
            out.status,
            stderr.trim()
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .with_context(|| format!("pyhop.py printed no JSON; stderr: {}", stderr.trim()))?;
    serde_json::from_str(line).with_context(|| format!("pyhop.py JSON not understood: {line}"))
}
