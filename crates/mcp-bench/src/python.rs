//! The Python side of a run: the project's virtual environment and the gateway processes
//! (`python -m mcp_gateway serve`, one per mode); the Python-hop client `bench/pyhop.py` is
//! run by `layer/python_hop.rs`.
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

use crate::client::mcp;
use crate::harness::{self, ChildGuard};

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
        self.mint_token_for(secret, crate::client::SUBJECT_EMAIL, &["--admin"])
    }

    /// Mints an HS256 bearer token for subject `sub` with the gateway's `token` command and
    /// its extra arguments `claims` (`--admin`, `--public-only`, `--team T`).
    ///
    /// # Errors
    ///
    /// When the command fails.
    pub fn mint_token_for(
        &self,
        secret: &str,
        sub: &str,
        claims: &[&str],
    ) -> anyhow::Result<String> {
        let out = Command::new(&self.python)
            .args([
                "-m",
                "mcp_gateway",
                "token",
                "--sub",
                sub,
                "--ttl-s",
                "86400",
            ])
            .args(claims)
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
    /// `MCP_RUST_UDS`: HTTP/JSON over the runtime's Unix socket with the gateway's default
    /// client, aiohttp (`MCP_RUST_HTTP_CLIENT=aiohttp`).
    #[value(name = "http")]
    HttpJson,
    /// `MCP_RUST_UDS` with `MCP_RUST_HTTP_CLIENT=httpx`: HTTP/JSON with httpx, the client the
    /// ContextForge gateway uses.
    #[value(name = "http-httpx")]
    HttpJsonHttpx,
    /// `MCP_RUST_GRPC_UDS`: gRPC over the runtime's Unix socket (grpc.aio).
    Grpc,
    /// Edge: no gateway; the runtime serves the public endpoint (`--public-listen`) and asks
    /// the Python core (`python -m mcp_gateway core`) over gRPC on its Unix socket.
    #[value(name = "edge-grpc")]
    EdgeGrpc,
    /// Edge, asking the core over HTTP/JSON on its Unix socket.
    #[value(name = "edge-http")]
    EdgeHttpJson,
}

impl GatewayMode {
    /// Name in reports: `python`, `http-json` (aiohttp), `http-json-httpx`, `grpc`, `edge-grpc`
    /// or `edge-http-json`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Python => "python",
            Self::HttpJson => "http-json",
            Self::HttpJsonHttpx => "http-json-httpx",
            Self::Grpc => "grpc",
            Self::EdgeGrpc => "edge-grpc",
            Self::EdgeHttpJson => "edge-http-json",
        }
    }

    /// The gateway's `MCP_RUST_HTTP_CLIENT` in an HTTP/JSON mode.
    #[must_use]
    pub fn http_client(self) -> Option<&'static str> {
        match self {
            Self::HttpJson => Some("aiohttp"),
            Self::HttpJsonHttpx => Some("httpx"),
            _ => None,
        }
    }

    /// Whether the runtime serves the public endpoint itself (no gateway process).
    #[must_use]
    pub fn is_edge(self) -> bool {
        matches!(self, Self::EdgeGrpc | Self::EdgeHttpJson)
    }

    /// The runtime's `--core-transport` in an edge mode.
    #[must_use]
    pub fn core_transport(self) -> Option<&'static str> {
        match self {
            Self::EdgeGrpc => Some("grpc"),
            Self::EdgeHttpJson => Some("http"),
            _ => None,
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

/// The gateway's byte budgets in the benchmark, as [`crate::harness::BENCH_QUOTA_ARGS`] are the
/// runtime's: 4 GiB per subject and per worker, so `echo:16m` at concurrency 16 from one subject
/// measures the boundary, not refusals. The soak keeps the defaults.
pub const BENCH_GATEWAY_ENV: [(&str, &str); 2] = [
    ("MCP_GATEWAY_MAX_BYTES_PER_SUBJECT", "4294967296"),
    ("MCP_GATEWAY_MAX_BYTES_IN_FLIGHT", "4294967296"),
];

/// What a gateway process gets in its environment besides its mode's socket.
#[derive(Debug, Clone, Copy)]
pub struct GatewayEnv<'a> {
    /// `JWT_SECRET_KEY`.
    pub secret: &'a str,
    /// More variables (as [`BENCH_GATEWAY_ENV`]); empty for the defaults.
    pub extra: &'a [(&'a str, &'a str)],
    /// Added to the log file's name (`gateway-{mode}-{workers}w{tag}.log`), so that two
    /// gateways of one mode keep separate logs; empty for the usual one.
    pub tag: &'a str,
}

/// Starts `python -m mcp_gateway serve --workers N` in `mode` on a free loopback port with
/// `gateway_env`, and waits until its `GET /health` answers 200. `socket` is the runtime socket
/// of the mode (unused for Python).
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
    gateway_env: GatewayEnv<'_>,
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
    .env_remove("MCP_RUST_HTTP_CLIENT")
    .env("JWT_SECRET_KEY", gateway_env.secret)
    .env("MCP_RUNTIME_CATALOG", catalog)
    .envs(gateway_env.extra.iter().copied())
    .stdout(Stdio::null());
    let mut shown = format!(
        "JWT_SECRET_KEY=... MCP_RUNTIME_CATALOG={}",
        catalog.display()
    );
    for (name, value) in gateway_env.extra {
        shown.push_str(&format!(" {name}={value}"));
    }
    let var = match mode {
        GatewayMode::Python | GatewayMode::EdgeGrpc | GatewayMode::EdgeHttpJson => None,
        GatewayMode::HttpJson | GatewayMode::HttpJsonHttpx => Some("MCP_RUST_UDS"),
        GatewayMode::Grpc => Some("MCP_RUST_GRPC_UDS"),
    };
    if let Some(client) = mode.http_client() {
        cmd.env("MCP_RUST_HTTP_CLIENT", client);
        shown.push_str(&format!(" MCP_RUST_HTTP_CLIENT={client}"));
    }
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
    let log = dir.join(format!(
        "gateway-{}-{workers}w{}.log",
        mode.name(),
        gateway_env.tag
    ));
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

/// How long the core gets to serve on both sockets.
const CORE_START_TIMEOUT: Duration = Duration::from_secs(60);

/// A running Python core (`python -m mcp_gateway core`) serving the Core SPI on both of its
/// sockets (the edge runtime uses one; the admin routes are on the HTTP one).
#[derive(Debug)]
pub struct Core {
    /// The process.
    pub guard: ChildGuard,
    /// Its gRPC socket.
    pub grpc_socket: PathBuf,
    /// Its HTTP/JSON socket (Core SPI routes and `/admin/...`).
    pub http_socket: PathBuf,
    /// The command, environment first, for the report.
    pub command: String,
}

/// Starts the core named `name` (socket and log names) in `dir` with `JWT_SECRET_KEY=secret`
/// and the plugin file `plugins` (`--plugins`; `None`: no hook registered), and waits until
/// `GET /health` answers 200 on its HTTP socket and its gRPC socket file exists. With
/// `plugins`, it also checks that `GET /admin/stats` lists at least one hook.
///
/// # Errors
///
/// When the process cannot start, exits, is not serving in time, or registered no hook.
pub async fn start_core(
    env: &PythonEnv,
    name: &str,
    secret: &str,
    plugins: Option<&Path>,
    dir: &Path,
) -> anyhow::Result<Core> {
    let grpc_socket = dir.join(format!("{name}-grpc.sock"));
    let http_socket = dir.join(format!("{name}-http.sock"));
    let mut cmd = Command::new(&env.python);
    cmd.args([
        "-m",
        "mcp_gateway",
        "core",
        "--log-level",
        "warning",
        "--grpc-uds",
    ])
    .arg(&grpc_socket)
    .arg("--http-uds")
    .arg(&http_socket)
    .current_dir(&env.repo_root)
    .env_remove("MCP_CORE_PLUGINS_FILE")
    .env("JWT_SECRET_KEY", secret)
    .stdout(Stdio::null());
    if let Some(p) = plugins {
        cmd.arg("--plugins").arg(p);
    }
    let command = format!(
        "JWT_SECRET_KEY=... {} -m mcp_gateway core --log-level warning --grpc-uds {} --http-uds {}{}",
        env.python.display(),
        grpc_socket.display(),
        http_socket.display(),
        plugins.map_or_else(String::new, |p| format!(" --plugins {}", p.display()))
    );
    let mut guard = harness::spawn_logged(name, &mut cmd, dir.join(format!("{name}.log")))?;
    let deadline = Instant::now() + CORE_START_TIMEOUT;
    loop {
        guard.check_alive()?;
        if grpc_socket.exists()
            && let Ok((status, _)) = crate::client::http::get(&http_socket, "/health").await
            && status == 200
        {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "core {name} not serving after {CORE_START_TIMEOUT:?}; see {}",
                guard.log().display()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if plugins.is_some() {
        let (status, body) = crate::client::http::get(&http_socket, "/admin/stats").await?;
        let stats: serde_json::Value =
            serde_json::from_slice(&body).context("GET /admin/stats is not JSON")?;
        let hooks = stats["hooks"].as_array().map_or(0, Vec::len);
        if status != 200 || hooks == 0 {
            bail!("core {name} registered no hook (GET /admin/stats: {status} {stats})");
        }
    }
    Ok(Core {
        guard,
        grpc_socket,
        http_socket,
        command,
    })
}

/// Mints `n` tokens in one Python process, each for its own subject `revoke-I@example.com`
/// (administrator, no `teams` claim), with the SHA-256 the core's revocation takes
/// (`tokenSha256`): `(token, hex sha256)` pairs.
///
/// # Errors
///
/// When the script fails or prints something else.
pub fn mint_revocable_tokens(
    env: &PythonEnv,
    secret: &str,
    n: usize,
) -> anyhow::Result<Vec<(String, String)>> {
    const SCRIPT: &str = r#"
import hashlib, json, sys
from mcp_gateway._auth import mint_token
out = []
for i in range(int(sys.argv[1])):
    t = mint_token(sys.argv[2], f"revoke-{i}@example.com", is_admin=True, ttl_s=86400)
    out.append([t, hashlib.sha256(t.encode()).hexdigest()])
print(json.dumps(out))
"#;
    let out = Command::new(&env.python)
        .arg("-c")
        .arg(SCRIPT)
        .arg(n.to_string())
        .arg(secret)
        .current_dir(&env.repo_root)
        .stdin(Stdio::null())
        .output()
        .context("cannot run the token script")?;
    if !out.status.success() {
        bail!(
            "minting revocable tokens failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    serde_json::from_slice(&out.stdout).context("the token script printed no token list")
}
