//! One benchmark run: start the processes, measure every row in interleaved rounds, stop
//! the processes, and assemble the [`Report`].
//!
//! Within a round the floor rows come first, then for each workload and concurrency the
//! transports one after the other; the transport order flips every round (HTTP, gRPC, then
//! gRPC, HTTP) so neither always runs on a warmer machine. Each row gets fresh connections,
//! a warm-up phase, then a measured phase bracketed by CPU samples of every process.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use serde_json::json;

use crate::client::{self, LoadResult, Stop, Worker, Workload};
use crate::floor;
use crate::harness::{self, RuntimeProcess};
use crate::proc::{CpuMeter, MachineInfo, ProcTarget};
use crate::python::{self, Gateway, GatewayMode, PyClient, PyWorkload, PythonEnv};
use crate::report::{Comparison, Metrics, Report, Row, RowKey, SCHEMA};

/// A boundary of the runtime a client can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, clap::ValueEnum)]
pub enum Transport {
    /// HTTP/1.1 + JSON over the HTTP/JSON socket (hyper client).
    #[value(name = "http")]
    HttpJson,
    /// gRPC `Invoke` over the gRPC socket (tonic client).
    Grpc,
    /// HTTP/1.1 + JSON to a second runtime process built without the `grpc-uds` feature
    /// (`--runtime-bin-nogrpc`): what the feature costs the default path when it is compiled in.
    #[value(name = "http-nogrpc")]
    HttpJsonNoGrpc,
}

impl Transport {
    /// Name in reports: `http-json` or `grpc`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::HttpJson => "http-json",
            Self::Grpc => "grpc",
            Self::HttpJsonNoGrpc => "http-json-nogrpc",
        }
    }
}

/// How gRPC workers share connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GrpcChannel {
    /// One channel (HTTP/2 connection) per worker, like the HTTP/1.1 client.
    PerWorker,
    /// One channel for all workers, multiplexed (what a gateway process would hold).
    Shared,
}

/// Everything a run needs to know.
#[derive(Debug, Clone)]
pub struct Config {
    /// The `mcp-runtime` binary (built with `grpc-uds`).
    pub runtime_bin: PathBuf,
    /// The `mcp-fixture-server` binary.
    pub fixture_bin: PathBuf,
    /// An `mcp-runtime` binary built without `grpc-uds`, for the zero-overhead rows.
    pub runtime_bin_nogrpc: Option<PathBuf>,
    /// Shell command starting `@modelcontextprotocol/server-everything` in streamable HTTP
    /// mode on `$PORT`; `None` skips the third-party rows.
    pub everything_cmd: Option<String>,
    /// Workloads sent straight to the upstream (no gateway, no runtime), the reference for
    /// the breakdown and the progress latency.
    pub direct_workloads: Vec<Workload>,
    /// Workloads of the two-worker gateway rows (sessions opened on one connection, used on
    /// another); empty skips them.
    pub workers_workloads: Vec<Workload>,
    /// When each measured phase ends.
    pub stop: Stop,
    /// Requests per row and round before measuring.
    pub warmup: u64,
    /// Rounds; each measures every row once.
    pub rounds: usize,
    /// Concurrency levels.
    pub concurrency: Vec<usize>,
    /// Workloads sent to the runtime.
    pub workloads: Vec<Workload>,
    /// Transports measured, in the order of even rounds.
    pub transports: Vec<Transport>,
    /// Message sizes of the kernel floor; empty skips it.
    pub floor_payloads: Vec<usize>,
    /// `--worker-threads` of the runtime; `None` keeps its default.
    pub runtime_worker_threads: Option<usize>,
    /// Tokio worker threads of the bench's own client runtime.
    pub client_worker_threads: usize,
    /// gRPC connection sharing.
    pub grpc_channel: GrpcChannel,
    /// `--generated-tools` of the fixture (a larger `tools/list`).
    pub fixture_generated_tools: usize,
    /// The command line, recorded in the report.
    pub command_line: Vec<String>,
    /// Measure the Rust client to runtime rows (layer 2).
    pub runtime_layer: bool,
    /// The virtual environment's interpreter (`.venv/bin/python`).
    pub python: PathBuf,
    /// The repository root (working directory of the Python processes).
    pub repo_root: PathBuf,
    /// `bench/pyhop.py`.
    pub pyhop_script: PathBuf,
    /// Python-hop clients (layer 3); empty skips the layer.
    pub pyhop_clients: Vec<PyClient>,
    /// Python-hop workloads.
    pub pyhop_workloads: Vec<PyWorkload>,
    /// Gateway modes (layer 4); empty skips the layer.
    pub gateway_modes: Vec<GatewayMode>,
    /// Workloads sent through the gateway.
    pub gateway_workloads: Vec<Workload>,
    /// Highest concurrency for gateway rows of 1 MiB or more (memory: every request in
    /// flight holds several copies of the payload in the gateway).
    pub big_payload_max_concurrency: usize,
}

/// Payloads from this size on are "big": fewer warm-up requests, capped concurrency.
const BIG_PAYLOAD_BYTES: usize = 1024 * 1024;

/// The processes of a run and the sessions opened on them, by scope.
struct Target {
    runtime: RuntimeProcess,
    /// The runtime built without `grpc-uds`, when measured.
    nogrpc: Option<RuntimeProcess>,
    sessions: HashMap<(Transport, Option<&'static str>), String>,
}

impl Target {
    /// The socket of `transport`.
    fn socket(&self, transport: Transport) -> anyhow::Result<&std::path::Path> {
        match transport {
            Transport::HttpJson => Ok(&self.runtime.http_socket),
            Transport::Grpc => self
                .runtime
                .grpc_socket
                .as_deref()
                .context("the runtime was started without its gRPC socket"),
            Transport::HttpJsonNoGrpc => Ok(&self
                .nogrpc
                .as_ref()
                .context("no runtime built without grpc-uds was given")?
                .http_socket),
        }
    }

    /// The session of `transport` in `scope`, opened on first use.
    async fn session(
        &mut self,
        transport: Transport,
        scope: Option<&'static str>,
    ) -> anyhow::Result<String> {
        if let Some(s) = self.sessions.get(&(transport, scope)) {
            return Ok(s.clone());
        }
        let socket = self.socket(transport)?.to_path_buf();
        let s = match transport {
            Transport::Grpc => client::grpc::initialize(&socket, scope).await?,
            _ => client::http::initialize(&socket, scope).await?,
        };
        self.sessions.insert((transport, scope), s.clone());
        Ok(s)
    }
}

/// Runs the benchmark described by `cfg`.
///
/// # Errors
///
/// When a process cannot be started, a session cannot be opened, the floor fails, or the
/// runtime dies during the run. Errors of single requests are counted, not returned.
pub fn run(cfg: &Config) -> anyhow::Result<Report> {
    let started_unix_s = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let machine = MachineInfo::collect();
    let dir = tempfile::Builder::new()
        .prefix("mcp-bench-")
        .tempdir()
        .context("cannot create a work directory")?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cfg.client_worker_threads.max(1))
        .enable_all()
        .build()
        .context("cannot start the client's async runtime")?;
    let mut notes: Vec<String> = Vec::new();
    let mut commands: BTreeMap<String, String> = BTreeMap::new();
    commands.insert("mcp-bench".to_owned(), cfg.command_line.join(" "));

    let generated = cfg.fixture_generated_tools.max(harness::TOOLS10.len() - 6);
    let mut fixture = harness::start_fixture(&cfg.fixture_bin, dir.path(), "fixture", generated)?;
    progress(format_args!(
        "fixture upstream at {} (pid {})",
        fixture.url,
        fixture.guard.pid()
    ));
    commands.insert(
        "fixture".to_owned(),
        format!(
            "{} --listen 127.0.0.1:0 --generated-tools {generated}",
            cfg.fixture_bin.display(),
        ),
    );
    let big = harness::start_fixture(&cfg.fixture_bin, dir.path(), "fixture-big", 500)?;
    commands.insert(
        "fixture-big".to_owned(),
        format!(
            "{} --listen 127.0.0.1:0 --generated-tools 500",
            cfg.fixture_bin.display(),
        ),
    );
    let everything = match &cfg.everything_cmd {
        Some(cmd) => match harness::start_command_upstream("server-everything", cmd, dir.path()) {
            Ok(f) => {
                progress(format_args!(
                    "server-everything at {} (pid {})",
                    f.url,
                    f.guard.pid()
                ));
                commands.insert("server-everything".to_owned(), format!("PORT=... {cmd}"));
                Some(f)
            }
            Err(e) => {
                note(
                    &mut notes,
                    format!("server-everything rows skipped: it did not start: {e:#}"),
                );
                None
            }
        },
        None => {
            if cfg.gateway_workloads.iter().any(|w| w.uses_everything()) {
                note(
                    &mut notes,
                    "server-everything rows skipped: no --everything-cmd given".to_owned(),
                );
            }
            None
        }
    };
    let catalog = harness::write_catalog(
        dir.path(),
        &harness::Upstreams {
            fixture: &fixture.url,
            big: Some(&big.url),
            everything: everything.as_ref().map(|f| f.url.as_str()),
        },
    )?;
    let want_grpc = cfg.transports.contains(&Transport::Grpc)
        || cfg.pyhop_clients.contains(&PyClient::Grpc)
        || cfg.gateway_modes.contains(&GatewayMode::Grpc);
    let runtime = rt.block_on(harness::start_runtime(
        &cfg.runtime_bin,
        dir.path(),
        "runtime",
        &catalog,
        cfg.runtime_worker_threads,
        want_grpc,
    ))?;
    progress(format_args!(
        "runtime ready (pid {}): {}",
        runtime.guard.pid(),
        runtime.health
    ));
    commands.insert("runtime".to_owned(), runtime.command.clone());
    let runtime_threads = ProcTarget::pid(runtime.guard.pid()).threads().ok();
    let mut transports = cfg.transports.clone();
    let nogrpc = match (
        &cfg.runtime_bin_nogrpc,
        transports.contains(&Transport::HttpJsonNoGrpc),
    ) {
        (Some(bin), true) => {
            let r = rt.block_on(harness::start_runtime(
                bin,
                dir.path(),
                "runtime-nogrpc",
                &catalog,
                cfg.runtime_worker_threads,
                false,
            ))?;
            progress(format_args!(
                "runtime built without grpc-uds ready (pid {})",
                r.guard.pid()
            ));
            commands.insert(
                "runtime (built without grpc-uds)".to_owned(),
                r.command.clone(),
            );
            Some(r)
        }
        (None, true) => {
            note(
                &mut notes,
                "http-json-nogrpc rows skipped: no --runtime-bin-nogrpc given".to_owned(),
            );
            transports.retain(|&t| t != Transport::HttpJsonNoGrpc);
            None
        }
        _ => None,
    };
    let mut target = Target {
        runtime,
        nogrpc,
        sessions: HashMap::new(),
    };
    let mut gateway_workloads = cfg.gateway_workloads.clone();
    if everything.is_none() {
        gateway_workloads.retain(|w| !w.uses_everything());
    }

    // The Python layers need the virtual environment; without it they are skipped, with a note.
    let want_python = !cfg.pyhop_clients.is_empty() || !cfg.gateway_modes.is_empty();
    let pyenv = if want_python {
        match PythonEnv::probe(&cfg.python, &cfg.repo_root) {
            Ok(env) => Some(env),
            Err(e) => {
                note(
                    &mut notes,
                    format!("python-hop and gateway layers skipped: {e:#}"),
                );
                None
            }
        }
    } else {
        None
    };
    let mut pyhop_clients = cfg.pyhop_clients.clone();
    let mut gateway_modes = cfg.gateway_modes.clone();
    if target.runtime.grpc_socket.is_none() {
        if pyhop_clients.contains(&PyClient::Grpc) || gateway_modes.contains(&GatewayMode::Grpc) {
            note(
                &mut notes,
                "gRPC rows of the python-hop and gateway layers skipped: the runtime runs without its gRPC socket".to_owned(),
            );
        }
        pyhop_clients.retain(|&c| c != PyClient::Grpc);
        gateway_modes.retain(|&m| m != GatewayMode::Grpc);
    }
    if pyenv.is_some() && !pyhop_clients.is_empty() && !cfg.pyhop_script.exists() {
        note(
            &mut notes,
            format!(
                "python-hop layer skipped: {} does not exist",
                cfg.pyhop_script.display()
            ),
        );
        pyhop_clients.clear();
    }

    let mut gateways: Vec<Gateway> = Vec::new();
    let mut gateways2: Vec<Gateway> = Vec::new();
    let mut token = String::new();
    if let Some(env) = &pyenv
        && !gateway_modes.is_empty()
    {
        let secret = format!(
            "mcp-bench-{}-{}",
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
            std::process::id()
        );
        token = env.mint_token(&secret)?;
        commands.insert(
            "token".to_owned(),
            format!(
                "JWT_SECRET_KEY=... {} -m mcp_gateway token --sub {} --admin --ttl-s 86400",
                env.python.display(),
                client::SUBJECT_EMAIL
            ),
        );
        let worker_counts: &[usize] = if cfg.workers_workloads.is_empty() {
            &[1]
        } else {
            &[1, 2]
        };
        for &workers in worker_counts {
            for &mode in &gateway_modes {
                let socket = match mode {
                    GatewayMode::Python => None,
                    GatewayMode::HttpJson => Some(target.runtime.http_socket.as_path()),
                    GatewayMode::Grpc => target.runtime.grpc_socket.as_deref(),
                };
                let label = if workers == 1 {
                    format!("gateway {}", mode.name())
                } else {
                    format!("gateway {} ({workers} workers)", mode.name())
                };
                match rt.block_on(python::start_gateway(
                    env,
                    mode,
                    workers,
                    socket,
                    &target.runtime.catalog,
                    &secret,
                    dir.path(),
                )) {
                    Ok(g) => {
                        progress(format_args!(
                            "{label} ready on {} (pid {})",
                            g.addr,
                            g.guard.pid()
                        ));
                        commands.insert(label, g.command.clone());
                        if workers == 1 {
                            gateways.push(g);
                        } else {
                            gateways2.push(g);
                        }
                    }
                    Err(e) => note(&mut notes, format!("{label} skipped: {e:#}")),
                }
            }
        }
    }
    if let (Some(env), false) = (&pyenv, pyhop_clients.is_empty()) {
        commands.insert(
            "pyhop".to_owned(),
            format!(
                "{} {} {}",
                env.python.display(),
                cfg.pyhop_script.display(),
                python::pyhop_args(
                    PyClient::Httpx,
                    &target.runtime.http_socket,
                    PyWorkload::Ping,
                    1,
                    cfg.stop,
                    cfg.warmup,
                    target.runtime.guard.pid(),
                )
                .join(" ")
            ),
        );
    }

    let meter = CpuMeter::new(vec![
        (
            "runtime".to_owned(),
            ProcTarget::pid(target.runtime.guard.pid()),
        ),
        ("fixture".to_owned(), ProcTarget::pid(fixture.guard.pid())),
        ("client".to_owned(), ProcTarget::this()),
    ]);
    let floor_meter = CpuMeter::new(vec![("client".to_owned(), ProcTarget::this())]);
    let backend_meter = CpuMeter::new(vec![
        (
            "runtime".to_owned(),
            ProcTarget::pid(target.runtime.guard.pid()),
        ),
        ("fixture".to_owned(), ProcTarget::pid(fixture.guard.pid())),
    ]);

    let mut order: Vec<RowKey> = Vec::new();
    let mut rounds: HashMap<RowKey, Vec<Metrics>> = HashMap::new();
    let mut record = |key: RowKey, m: Metrics| {
        if !rounds.contains_key(&key) {
            order.push(key.clone());
        }
        rounds.entry(key).or_default().push(m);
    };

    for round in 0..cfg.rounds {
        let tag = format!("[round {}/{}]", round + 1, cfg.rounds);
        for &payload in &cfg.floor_payloads {
            for &c in &cfg.concurrency {
                let key = RowKey {
                    layer: "floor".to_owned(),
                    transport: "uds-stream".to_owned(),
                    client: "std threads".to_owned(),
                    workload: "ping-pong".to_owned(),
                    concurrency: c,
                    payload_bytes: payload,
                };
                floor::run(payload, c, Stop::Requests(cfg.warmup))
                    .context("kernel floor warm-up")?;
                let before = floor_meter.start();
                let result = floor::run(payload, c, cfg.stop).context("kernel floor")?;
                let m = metrics(&result, &floor_meter, &before);
                progress(format_args!("{tag} {}", line(&key, &m)));
                record(key, m);
            }
        }
        if cfg.runtime_layer {
            for &workload in &cfg.workloads {
                for &c in &cfg.concurrency {
                    for t in rotated(&transports, round) {
                        let meter = match (t, &target.nogrpc) {
                            (Transport::HttpJsonNoGrpc, Some(r)) => &CpuMeter::new(vec![
                                ("runtime".to_owned(), ProcTarget::pid(r.guard.pid())),
                                ("fixture".to_owned(), ProcTarget::pid(fixture.guard.pid())),
                                ("client".to_owned(), ProcTarget::this()),
                            ]),
                            _ => &meter,
                        };
                        let (key, m) =
                            rt.block_on(measure_runtime(cfg, &mut target, meter, t, workload, c))?;
                        target.runtime.guard.check_alive()?;
                        progress(format_args!("{tag} {}", line(&key, &m)));
                        record(key, m);
                    }
                }
            }
        }
        if let Some(env) = &pyenv {
            for &workload in &cfg.pyhop_workloads {
                for &c in &cfg.concurrency {
                    for client in rotated(&pyhop_clients, round) {
                        match measure_pyhop(cfg, env, &target, &backend_meter, client, workload, c)
                        {
                            Ok((key, m)) => {
                                progress(format_args!("{tag} {}", line(&key, &m)));
                                record(key, m);
                            }
                            Err(e) => note(
                                &mut notes,
                                format!(
                                    "{tag} python-hop {} {} c={c} failed: {e:#}",
                                    client.name(),
                                    workload.arg()
                                ),
                            ),
                        }
                        target.runtime.guard.check_alive()?;
                    }
                }
            }
        }
        // Straight to the upstream: the reference of the breakdown and the progress latency.
        let upstream_addr = |url: &str| -> anyhow::Result<std::net::SocketAddr> {
            let hostport = url
                .strip_prefix("http://")
                .and_then(|r| r.split('/').next())
                .with_context(|| format!("unexpected upstream URL {url}"))?;
            hostport
                .parse()
                .with_context(|| format!("unexpected upstream address {hostport}"))
        };
        for &workload in &cfg.direct_workloads {
            for &c in &cfg.concurrency {
                let meter = CpuMeter::new(vec![
                    ("fixture".to_owned(), ProcTarget::pid(fixture.guard.pid())),
                    ("client".to_owned(), ProcTarget::this()),
                ]);
                let endpoint = client::mcp::Endpoint::upstream(upstream_addr(&fixture.url)?);
                match rt.block_on(measure_mcp(
                    cfg,
                    &endpoint,
                    ("direct", "upstream", false),
                    &meter,
                    workload,
                    c,
                )) {
                    Ok((key, m)) => {
                        progress(format_args!("{tag} {}", line(&key, &m)));
                        record(key, m);
                    }
                    Err(e) => note(
                        &mut notes,
                        format!("{tag} direct {} c={c} failed: {e:#}", workload.name()),
                    ),
                }
                fixture.guard.check_alive()?;
            }
        }
        // End to end through the gateways (one worker each), then through the two-worker
        // gateways with each session used on a connection other than the one that opened it.
        let phases: [(&str, &Vec<Workload>, &mut Vec<Gateway>, bool); 2] = [
            ("gateway", &gateway_workloads, &mut gateways, false),
            (
                "gateway-2-workers",
                &cfg.workers_workloads,
                &mut gateways2,
                true,
            ),
        ];
        for (layer, workloads, gws, split) in phases {
            for &workload in workloads {
                for &c in &cfg.concurrency {
                    let payload = workload.body(1).len();
                    if payload >= BIG_PAYLOAD_BYTES && c > cfg.big_payload_max_concurrency {
                        continue;
                    }
                    let upstream_pid = match (&everything, workload.uses_everything()) {
                        (Some(e), true) => e.guard.pid(),
                        _ => fixture.guard.pid(),
                    };
                    let n = gws.len();
                    for i in 0..n {
                        let g = &mut gws[(i + round) % n];
                        let meter = CpuMeter::new(vec![
                            ("gateway".to_owned(), ProcTarget::tree(g.guard.pid())),
                            (
                                "runtime".to_owned(),
                                ProcTarget::pid(target.runtime.guard.pid()),
                            ),
                            ("fixture".to_owned(), ProcTarget::pid(upstream_pid)),
                            ("client".to_owned(), ProcTarget::this()),
                        ]);
                        let endpoint = client::mcp::Endpoint::new(g.addr, &token)?;
                        match rt.block_on(measure_mcp(
                            cfg,
                            &endpoint,
                            (layer, g.mode.name(), split),
                            &meter,
                            workload,
                            c,
                        )) {
                            Ok((key, m)) => {
                                progress(format_args!("{tag} {}", line(&key, &m)));
                                record(key, m);
                            }
                            Err(e) => note(
                                &mut notes,
                                format!(
                                    "{tag} {layer} {} {} {} B c={c} failed: {e:#}",
                                    g.mode.name(),
                                    workload.name(),
                                    payload
                                ),
                            ),
                        }
                        g.guard.check_alive()?;
                        target.runtime.guard.check_alive()?;
                    }
                }
            }
        }
    }
    fixture.guard.check_alive()?;
    for w in gateway_workloads
        .iter()
        .filter(|w| w.body(1).len() >= BIG_PAYLOAD_BYTES)
    {
        let skipped: Vec<String> = cfg
            .concurrency
            .iter()
            .filter(|&&c| c > cfg.big_payload_max_concurrency)
            .map(ToString::to_string)
            .collect();
        if !skipped.is_empty() && !gateways.is_empty() {
            notes.push(format!(
                "gateway {} {} B not run at concurrency {} (big payloads are capped at {})",
                w.name(),
                w.body(1).len(),
                skipped.join(","),
                cfg.big_payload_max_concurrency
            ));
        }
    }

    let rows: Vec<Row> = order
        .into_iter()
        .map(|key| {
            let r = rounds.remove(&key).unwrap_or_default();
            Row {
                key,
                summary: Metrics::summarize(&r),
                rounds: r,
            }
        })
        .collect();
    let comparisons = compare(&rows);

    let mut versions = BTreeMap::new();
    versions.insert("mcp-bench".to_owned(), env!("CARGO_PKG_VERSION").to_owned());
    versions.insert(
        "mcp-runtime".to_owned(),
        harness::version_of(&cfg.runtime_bin),
    );
    versions.insert(
        "mcp-fixture-server".to_owned(),
        harness::version_of(&cfg.fixture_bin),
    );
    let health = &target.runtime.health;
    if let Some(v) = health.get("contract_version").and_then(|v| v.as_str()) {
        versions.insert("contract".to_owned(), v.to_owned());
    }
    if let Some(f) = health.get("features").and_then(|v| v.as_array()) {
        let names: Vec<&str> = f.iter().filter_map(|v| v.as_str()).collect();
        versions.insert("runtime features".to_owned(), names.join(","));
    }
    if let Some(env) = &pyenv {
        for (k, v) in &env.versions {
            versions.insert(format!("python: {k}"), v.clone());
        }
    }

    let mut settings = BTreeMap::new();
    settings.insert("rounds".to_owned(), json!(cfg.rounds));
    match cfg.stop {
        Stop::Requests(n) => settings.insert("requests_per_round".to_owned(), json!(n)),
        Stop::Duration(d) => {
            settings.insert("duration_s_per_round".to_owned(), json!(d.as_secs_f64()))
        }
    };
    settings.insert("warmup_requests".to_owned(), json!(cfg.warmup));
    settings.insert("concurrency".to_owned(), json!(cfg.concurrency));
    settings.insert(
        "workloads".to_owned(),
        json!(cfg.workloads.iter().map(|w| w.name()).collect::<Vec<_>>()),
    );
    settings.insert("floor_payloads".to_owned(), json!(cfg.floor_payloads));
    settings.insert(
        "runtime_worker_threads".to_owned(),
        json!(cfg.runtime_worker_threads),
    );
    settings.insert(
        "runtime_worker_threads_effective".to_owned(),
        json!(cfg.runtime_worker_threads.unwrap_or(machine.nproc)),
    );
    settings.insert(
        "runtime_threads_at_start".to_owned(),
        json!(runtime_threads),
    );
    settings.insert(
        "client_worker_threads".to_owned(),
        json!(cfg.client_worker_threads),
    );
    settings.insert(
        "grpc_channel".to_owned(),
        json!(format!("{:?}", cfg.grpc_channel)),
    );
    settings.insert(
        "fixture_generated_tools".to_owned(),
        json!(cfg.fixture_generated_tools),
    );
    settings.insert(
        "pyhop_clients".to_owned(),
        json!(pyhop_clients.iter().map(|c| c.name()).collect::<Vec<_>>()),
    );
    settings.insert(
        "pyhop_workloads".to_owned(),
        json!(
            cfg.pyhop_workloads
                .iter()
                .map(|w| w.arg())
                .collect::<Vec<_>>()
        ),
    );
    settings.insert(
        "gateway_modes".to_owned(),
        json!(gateways.iter().map(|g| g.mode.name()).collect::<Vec<_>>()),
    );
    settings.insert(
        "gateway_workloads".to_owned(),
        json!(
            cfg.gateway_workloads
                .iter()
                .map(|w| format!("{} ({} B request)", w.name(), w.body(1).len()))
                .collect::<Vec<_>>()
        ),
    );
    settings.insert(
        "upstream".to_owned(),
        json!(if everything.is_some() {
            "mcp-fixture-server for every row except `tools/call echo (server-everything)` (@modelcontextprotocol/server-everything) and `tools/list (500 tools)` (a second mcp-fixture-server process with 500 generated tools)"
        } else {
            "mcp-fixture-server for every row (`tools/list (500 tools)`: a second process with 500 generated tools); no third-party upstream in this run"
        }),
    );
    settings.insert("builds".to_owned(), build_info(cfg));

    // Stop the gateways, then the runtimes, then the upstreams they hold connections to.
    drop(gateways);
    drop(gateways2);
    drop(target);
    drop(fixture);
    drop(big);
    drop(everything);
    Ok(Report {
        schema: SCHEMA.to_owned(),
        started_unix_s,
        command_line: cfg.command_line.clone(),
        machine,
        versions,
        settings,
        commands,
        notes,
        rows,
        comparisons,
    })
}

/// Binary size and the number of distinct crates in the normal dependency tree
/// (`cargo tree -e normal`) of the benchmarked runtime build and, when given, the build
/// without `grpc-uds`. The counts need `cargo` and the source tree; without them they are
/// left out.
fn build_info(cfg: &Config) -> serde_json::Value {
    let deps = |features: &[&str]| -> Option<usize> {
        let out = std::process::Command::new("cargo")
            .args([
                "tree",
                "-p",
                "mcp-runtime",
                "-e",
                "normal",
                "--prefix",
                "none",
            ])
            .args(features)
            .current_dir(&cfg.repo_root)
            .stderr(std::process::Stdio::null())
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        let text = String::from_utf8(out.stdout).ok()?;
        let set: std::collections::BTreeSet<&str> = text
            .lines()
            .map(|l| l.trim_end_matches(" (*)").trim())
            .filter(|l| !l.is_empty())
            .collect();
        Some(set.len())
    };
    let size = |p: &std::path::Path| std::fs::metadata(p).ok().map(|m| m.len());
    // Size without symbols and debug info (`strip` on a copy), when binutils are there.
    let stripped = |p: &std::path::Path| -> Option<u64> {
        let dir = tempfile::tempdir().ok()?;
        let copy = dir.path().join("stripped");
        std::fs::copy(p, &copy).ok()?;
        let ok = std::process::Command::new("strip")
            .arg(&copy)
            .stderr(std::process::Stdio::null())
            .status()
            .ok()?
            .success();
        if ok { size(&copy) } else { None }
    };
    let mut b = serde_json::Map::new();
    b.insert(
        "with grpc-uds".to_owned(),
        json!({
            "binary": cfg.runtime_bin.display().to_string(),
            "binary_bytes": size(&cfg.runtime_bin),
            "stripped_bytes": stripped(&cfg.runtime_bin),
            "dependencies": deps(&["--features", "grpc-uds"]),
        }),
    );
    b.insert(
        "without grpc-uds (default)".to_owned(),
        json!({
            "binary": cfg.runtime_bin_nogrpc.as_ref().map(|p| p.display().to_string()),
            "binary_bytes": cfg.runtime_bin_nogrpc.as_deref().and_then(size),
            "stripped_bytes": cfg.runtime_bin_nogrpc.as_deref().and_then(stripped),
            "dependencies": deps(&[]),
        }),
    );
    serde_json::Value::Object(b)
}

/// `items` rotated left by `round` (A B C, B C A, C A B, ...), so no mode always runs first.
fn rotated<T: Copy>(items: &[T], round: usize) -> Vec<T> {
    if items.is_empty() {
        return Vec::new();
    }
    let k = round % items.len();
    items[k..].iter().chain(&items[..k]).copied().collect()
}

/// Adds a note to the report and prints it.
fn note(notes: &mut Vec<String>, text: String) {
    progress(format_args!("note: {text}"));
    notes.push(text);
}

/// Measures one Python-hop row: runs `pyhop.py` once. The runtime's CPU per request is the
/// script's own reading around its measured phase (`--runtime-pid`); the fixture's is read
/// around the whole script and divided by measured plus warm-up requests (an approximation:
/// it also counts the session set-up).
fn measure_pyhop(
    cfg: &Config,
    env: &PythonEnv,
    target: &Target,
    meter: &CpuMeter,
    client: PyClient,
    workload: PyWorkload,
    concurrency: usize,
) -> anyhow::Result<(RowKey, Metrics)> {
    let socket = match client {
        PyClient::Grpc => target
            .runtime
            .grpc_socket
            .as_deref()
            .context("no gRPC socket")?,
        _ => target.runtime.http_socket.as_path(),
    };
    let key = RowKey {
        layer: "python-hop".to_owned(),
        transport: client.transport().to_owned(),
        client: client.name().to_owned(),
        workload: workload.workload().name().to_owned(),
        concurrency,
        payload_bytes: workload.workload().body(1).len(),
    };
    let args = python::pyhop_args(
        client,
        socket,
        workload,
        concurrency,
        cfg.stop,
        cfg.warmup,
        target.runtime.guard.pid(),
    );
    let before = meter.start();
    let row = python::run_pyhop(env, &cfg.pyhop_script, &args)?;
    let after = meter.sample();
    if let Some(e) = &row.first_error {
        progress(format_args!("  first error: {e}"));
    }
    let counted = row.requests + cfg.warmup;
    let mut cpu: BTreeMap<String, f64> = meter
        .used(&before, &after)
        .into_iter()
        .map(|(k, d)| {
            let v = if counted == 0 {
                0.0
            } else {
                d.as_secs_f64() * 1e6 / counted as f64
            };
            (k, v)
        })
        .collect();
    if let Some(v) = row.runtime_cpu_us_per_req {
        cpu.insert("runtime".to_owned(), v);
    }
    cpu.insert("client".to_owned(), row.client_cpu_us_per_req);
    Ok((
        key,
        Metrics {
            requests: row.requests,
            errors: row.errors,
            elapsed_s: row.duration_s,
            requests_per_s: row.rps,
            latency_us: row.latency_us,
            notification_latency_us: None,
            cpu_us_per_request: cpu,
            peak_rss_kib: meter.peak_rss_kib(),
            response_bytes: 0,
        },
    ))
}

/// Measures one MCP row over TCP: through a gateway, or straight to an upstream. `row` is
/// (layer, transport or mode, split); with `split` each worker opens its session on one
/// connection and sends its requests on another. Each worker connects and opens its own
/// session, warms up, then the measured phase; the sessions are closed afterwards.
async fn measure_mcp(
    cfg: &Config,
    endpoint: &client::mcp::Endpoint,
    row: (&str, &str, bool),
    meter: &CpuMeter,
    workload: Workload,
    concurrency: usize,
) -> anyhow::Result<(RowKey, Metrics)> {
    let (layer, transport, split) = row;
    let payload = workload.body(1).len();
    let key = RowKey {
        layer: layer.to_owned(),
        transport: transport.to_owned(),
        client: if split {
            "hyper (TCP), session opened on another connection".to_owned()
        } else {
            "hyper (TCP)".to_owned()
        },
        workload: workload.name().to_owned(),
        concurrency,
        payload_bytes: payload,
    };
    let big = payload >= BIG_PAYLOAD_BYTES;
    let mut workers = Vec::with_capacity(concurrency);
    for _ in 0..concurrency.max(1) {
        let w = if split {
            client::mcp::McpWorker::connect_split(endpoint, workload.scope()).await?
        } else {
            client::mcp::McpWorker::connect(endpoint, workload.scope()).await?
        };
        workers.push(Worker::Mcp(w));
    }
    let warmup = if big {
        cfg.warmup.min(concurrency as u64)
    } else if workload == Workload::Progress {
        cfg.warmup.min(2 * concurrency as u64)
    } else {
        cfg.warmup
    };
    let stop = match cfg.stop {
        Stop::Requests(n) if big => Stop::Requests(n.min(8 * concurrency as u64)),
        s => s,
    };
    let (_, workers) = client::drive(workers, workload, Stop::Requests(warmup)).await;
    let before = meter.start();
    let (result, workers) = client::drive(workers, workload, stop).await;
    let m = metrics(&result, meter, &before);
    for w in workers {
        if let Worker::Mcp(w) = w {
            w.close().await;
        }
    }
    Ok((key, m))
}

/// Measures one runtime row: fresh workers, warm-up, then the measured phase.
async fn measure_runtime(
    cfg: &Config,
    target: &mut Target,
    meter: &CpuMeter,
    transport: Transport,
    workload: Workload,
    concurrency: usize,
) -> anyhow::Result<(RowKey, Metrics)> {
    let client = match (transport, cfg.grpc_channel) {
        (Transport::HttpJson | Transport::HttpJsonNoGrpc, _) => "hyper",
        (Transport::Grpc, GrpcChannel::PerWorker) => "tonic",
        (Transport::Grpc, GrpcChannel::Shared) => "tonic (shared channel)",
    };
    let key = RowKey {
        layer: "runtime".to_owned(),
        transport: transport.name().to_owned(),
        client: client.to_owned(),
        workload: workload.name().to_owned(),
        concurrency,
        payload_bytes: workload.body(1).len(),
    };
    let session = target.session(transport, workload.scope()).await?;
    let socket = target.socket(transport)?;
    let mut workers = Vec::with_capacity(concurrency);
    let shared = match (transport, cfg.grpc_channel) {
        (Transport::Grpc, GrpcChannel::Shared) => Some(client::grpc::connect(socket).await?),
        _ => None,
    };
    for _ in 0..concurrency.max(1) {
        workers.push(match transport {
            Transport::HttpJson | Transport::HttpJsonNoGrpc => {
                Worker::Http(client::http::HttpWorker::connect(socket, &session).await?)
            }
            Transport::Grpc => {
                let channel = match &shared {
                    Some(ch) => ch.clone(),
                    None => client::grpc::connect(socket).await?,
                };
                Worker::Grpc(client::grpc::GrpcWorker::new(channel, &session))
            }
        });
    }
    let (_, workers) = client::drive(workers, workload, Stop::Requests(cfg.warmup)).await;
    let before = meter.start();
    let (result, workers) = client::drive(workers, workload, cfg.stop).await;
    let m = metrics(&result, meter, &before);
    drop(workers);
    Ok((key, m))
}

/// Turns a phase's result and the CPU used since `before` into row metrics.
fn metrics(result: &LoadResult, meter: &CpuMeter, before: &crate::proc::CpuSample) -> Metrics {
    let after = meter.sample();
    let per_request = |d: Duration| {
        if result.requests == 0 {
            0.0
        } else {
            d.as_secs_f64() * 1e6 / result.requests as f64
        }
    };
    let elapsed = result.elapsed.as_secs_f64();
    if let Some(e) = &result.first_error {
        progress(format_args!("  first error: {e}"));
    }
    Metrics {
        requests: result.requests,
        errors: result.errors,
        elapsed_s: elapsed,
        requests_per_s: if elapsed > 0.0 {
            result.requests as f64 / elapsed
        } else {
            0.0
        },
        latency_us: result.latencies.summary(),
        notification_latency_us: (!result.notifications.is_empty())
            .then(|| result.notifications.summary()),
        cpu_us_per_request: meter
            .used(before, &after)
            .into_iter()
            .map(|(k, d)| (k, per_request(d)))
            .collect(),
        peak_rss_kib: meter.peak_rss_kib(),
        response_bytes: result.response_bytes,
    }
}

/// The ratios the report shows, each computed round by round between rows of the same layer,
/// workload, payload and concurrency:
///
/// - runtime: gRPC / HTTP/JSON (Rust clients), and HTTP/JSON of the `grpc-uds` build / of the
///   build without it;
/// - python-hop: grpc.aio / httpx and aiohttp / httpx;
/// - gateway: gRPC / HTTP/JSON, gRPC / Python baseline, HTTP/JSON / Python baseline.
#[must_use]
pub fn compare(rows: &[Row]) -> Vec<Comparison> {
    // (layer, numerator, denominator), by mode: the client for the Python hop, else the
    // transport (for the gateway, its mode).
    const PAIRS: &[(&str, &str, &str)] = &[
        ("runtime", "grpc", "http-json"),
        ("runtime", "http-json", "http-json-nogrpc"),
        ("python-hop", "grpc.aio", "httpx"),
        ("python-hop", "aiohttp", "httpx"),
        ("gateway", "grpc", "http-json"),
        ("gateway", "grpc", "python"),
        ("gateway", "http-json", "python"),
    ];
    let mut out = Vec::new();
    for &(layer, num, den) in PAIRS {
        for n in rows
            .iter()
            .filter(|r| r.key.layer == layer && r.key.mode() == num)
        {
            if let Some(d) = rows.iter().find(|d| {
                d.key.layer == layer
                    && d.key.mode() == den
                    && d.key.workload == n.key.workload
                    && d.key.concurrency == n.key.concurrency
                    && d.key.payload_bytes == n.key.payload_bytes
            }) {
                out.push(Comparison::between(n, d));
            }
        }
    }
    out
}

/// One progress line on stderr.
fn progress(args: std::fmt::Arguments<'_>) {
    eprintln!("mcp-bench: {args}");
}

fn line(key: &RowKey, m: &Metrics) -> String {
    let cpu = |name: &str| {
        m.cpu_us_per_request
            .get(name)
            .map_or_else(|| "–".to_owned(), |v| format!("{v:.1}"))
    };
    format!(
        "{} {}/{} {} c={} {} B: {:.0} req/s, p50 {:.1} µs, p99 {:.1} µs, errors {}, CPU/req gateway {} µs, runtime {} µs, upstream {} µs, client {} µs",
        key.layer,
        key.transport,
        key.client,
        key.workload,
        key.concurrency,
        key.payload_bytes,
        m.requests_per_s,
        m.latency_us.p50,
        m.latency_us.p99,
        m.errors,
        cpu("gateway"),
        cpu("runtime"),
        cpu("fixture"),
        cpu("client"),
    )
}
