//! End to end through the Python gateway (`python -m mcp_gateway serve`, one process per mode:
//! Python baseline, HTTP/JSON, gRPC) against the run's runtime and upstreams, and through the
//! edge modes (no gateway: a runtime of their own serves the public endpoint with
//! `--public-listen` and asks a Python core, `python -m mcp_gateway core`, for policy over gRPC
//! or HTTP/JSON on the core's Unix socket), driven by this program's MCP client over TCP (a
//! session per worker). Two layers: `gateway` (one uvicorn worker; the edge modes) and
//! `gateway-2-workers` (two workers, each session used on a connection other than the one that
//! opened it; no edge modes). Rows: one per workload, concurrency and mode, the mode order
//! rotating every round; requests of [`BIG_PAYLOAD_BYTES`] or more are capped in concurrency.
//!
//! Each edge mode runs twice: `edge-grpc` / `edge-http-json` with a core without plugins (no
//! hook), and `edge-grpc+hook` / `edge-http-json+hook` with a core whose deny-list registers a
//! `pre_invoke` hook on the called tools ([`HOOK_PLUGINS`]; the list is for a team the bench's
//! caller is not in, and its token has no `teams` claim, so the hook runs on every call and
//! never refuses). The `+hook` rows run only `--edge-hook-workloads`. In edge rows the
//! "gateway" CPU and RSS columns are the core's, the "runtime" columns the edge runtime's.
//! After the rounds, the layer measures the revocation latency of each edge mode without hooks
//! ([`measure_revocation`]).
//!
//! The gRPC mode also runs with the gateway's Prometheus metrics on (`grpc+metrics`, one
//! worker, `--gateway-metrics-workloads`): the report compares it with `grpc` round by round,
//! as the runtime's `http-json-metrics` with `http-json`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::{Value, json};

use super::{BIG_PAYLOAD_BYTES, Entry, Layer, measure_mcp};
use crate::bench::Config;
use crate::client::mcp::{Endpoint, McpWorker, Routes};
use crate::client::{CallError, Workload};
use crate::harness::{self, ChildGuard, RuntimeProcess};
use crate::proc::{CpuMeter, ProcTarget};
use crate::python::{self, GatewayMode, PythonEnv};
use crate::report::Revocation;
use crate::run::{Run, progress};

/// The plugin file of the `+hook` edge rows: a deny-list for a team nobody in the bench is in,
/// naming every tool the gateway workloads call, so the core registers a `pre_invoke` hook on
/// each and the runtime asks it on every call; the bench's caller (no `teams` claim) is never
/// refused.
pub const HOOK_PLUGINS: &str =
    r#"{"deny_tools": {"bench-nobody": ["echo", "everything_echo", "progress"]}}"#;

/// Suffix of the mode of an edge row with the hook.
pub const HOOK_SUFFIX: &str = "+hook";

/// Suffix of the mode of a gateway row with the gateway's Prometheus metrics on
/// (`MCP_GATEWAY_METRICS_LISTEN`): `grpc+metrics`, compared with `grpc` in the same rounds.
pub const METRICS_SUFFIX: &str = "+metrics";

/// Suffix of the mode of a row sent in MCP 2026-07-28 (no session): `grpc@2026`, compared
/// with `grpc` in the same rounds.
pub const SESSIONLESS_SUFFIX: &str = "@2026";

/// How long the edge runtime's public endpoint gets to answer `GET /health`.
const EDGE_START_TIMEOUT: Duration = Duration::from_secs(30);

/// How long one revocation may take before it counts as a failure.
const REVOCATION_BOUND: Duration = Duration::from_secs(5);

/// The gateway with one worker in the list of layers: gRPC / HTTP/JSON (each client),
/// HTTP/JSON aiohttp / httpx, gRPC / Python baseline, HTTP/JSON / Python baseline, the edge
/// modes against gRPC and each other.
pub const ONE_WORKER: Entry = Entry {
    name: "gateway",
    start: |run| Ok(Box::new(GatewayLayer::start(run, 1)?)),
    ratios: &[
        ("grpc", "http-json"),
        ("grpc", "http-json-httpx"),
        ("http-json", "http-json-httpx"),
        ("grpc", "python"),
        ("http-json", "python"),
        ("edge-grpc", "grpc"),
        ("edge-http-json", "grpc"),
        ("edge-grpc", "edge-http-json"),
        ("edge-grpc+hook", "edge-http-json+hook"),
        ("edge-grpc+hook", "edge-grpc"),
        ("edge-http-json+hook", "edge-http-json"),
        ("grpc+metrics", "grpc"),
        ("python", CONTEXTFORGE),
        ("http-json", CONTEXTFORGE),
        ("http-json-httpx", CONTEXTFORGE),
        ("grpc", CONTEXTFORGE),
        ("edge-grpc", CONTEXTFORGE),
        ("edge-http-json", CONTEXTFORGE),
        ("python", CONTEXTFORGE_STATEFUL),
        ("http-json", CONTEXTFORGE_STATEFUL),
        ("http-json-httpx", CONTEXTFORGE_STATEFUL),
        ("grpc", CONTEXTFORGE_STATEFUL),
        ("edge-grpc", CONTEXTFORGE_STATEFUL),
        ("edge-http-json", CONTEXTFORGE_STATEFUL),
        (CONTEXTFORGE_STATEFUL, CONTEXTFORGE),
    ],
};

/// Mode of the rows through ContextForge with its default, stateless streamable HTTP.
pub const CONTEXTFORGE: &str = "contextforge";

/// Mode of the rows through ContextForge with `USE_STATEFUL_SESSIONS=true`.
pub const CONTEXTFORGE_STATEFUL: &str = "contextforge-stateful";

/// How long `bench/contextforge.py` gets to start ContextForge and register the upstreams
/// (its first start migrates a fresh SQLite database: about a minute on a busy machine).
const CONTEXTFORGE_START_TIMEOUT: Duration = Duration::from_secs(360);

/// ContextForge's streamable-HTTP session setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ContextForgeMode {
    /// The default (`USE_STATEFUL_SESSIONS=false`): no session id, no event store.
    Stateless,
    /// `USE_STATEFUL_SESSIONS=true`.
    Stateful,
}

impl ContextForgeMode {
    /// The rows' mode.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Stateless => CONTEXTFORGE,
            Self::Stateful => CONTEXTFORGE_STATEFUL,
        }
    }
}

/// The gateway with two workers in the list of layers (no ratios: the Python baseline's
/// sessions live in one worker, so most of its requests fail there).
pub const TWO_WORKERS: Entry = Entry {
    name: "gateway-2-workers",
    start: |run| Ok(Box::new(GatewayLayer::start(run, 2)?)),
    ratios: &[],
};

/// The gateway layers' options.
#[derive(Debug, Clone, clap::Args)]
pub struct GatewayArgs {
    /// Gateway modes, comma separated, in first-round order: the proxied modes `python`,
    /// `http` (HTTP/JSON with the gateway's default client, aiohttp), `http-httpx` (HTTP/JSON
    /// with httpx), `grpc`, and the edge modes `edge-grpc`, `edge-http` (the runtime serves the
    /// public endpoint and asks the core over gRPC or HTTP/JSON; each also runs with a
    /// pre-invoke hook, see `--edge-hook-workloads`). The two-worker rows skip the edge modes
    /// and `http-httpx`.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "python,http,http-httpx,grpc,edge-grpc,edge-http"
    )]
    pub gateway_modes: Vec<GatewayMode>,

    /// Workloads of the edge rows with a pre-invoke hook on the called tool (`edge-grpc+hook`,
    /// `edge-http-json+hook`); `none` skips those rows.
    #[arg(long, value_delimiter = ',', default_value = "echo:100,echo:1k,echo:10k", value_parser = parse_optional_workload)]
    pub edge_hook_workloads: Vec<Option<Workload>>,

    /// Workloads of the `grpc+metrics` rows: the gRPC mode's gateway with its Prometheus
    /// metrics on (`MCP_GATEWAY_METRICS_LISTEN`), beside the `grpc` rows in the same rounds
    /// (the report's "Cost of the gateway's metrics"); only those also in
    /// `--gateway-workloads` run; `none` skips them.
    #[arg(long, value_delimiter = ',', default_value = "echo:1k", value_parser = parse_optional_workload)]
    pub gateway_metrics_workloads: Vec<Option<Workload>>,

    /// Workloads sent also in MCP 2026-07-28 (no session; `_meta` and the `Mcp-Method` /
    /// `Mcp-Name` headers on every request) through each mode of this project without a hook
    /// or metrics: rows `MODE@2026`, compared with `MODE` in the same rounds (the cost of the
    /// stateless era against the session era); only `echo:BYTES`, `everything:BYTES` and
    /// `tools/list` exist there, and only those also in `--gateway-workloads` run; `none`
    /// skips them.
    #[arg(long = "gateway-2026-workloads", value_delimiter = ',', default_value = "echo:1k", value_parser = parse_optional_workload)]
    pub gateway_2026_workloads: Vec<Option<Workload>>,

    /// Revocations measured per edge mode without hooks after the rounds (0: none).
    #[arg(long, default_value_t = 50)]
    pub revocations: usize,

    /// Workloads sent through the gateway, comma separated: `ping`, `tools/list:10`,
    /// `tools/list:500`, `progress`, `session`, `echo:BYTES`, `everything:BYTES` (`k`/`m`
    /// suffixes for KiB/MiB).
    #[arg(long, value_delimiter = ',', default_value = "ping,echo:100,echo:1k,echo:10k,tools/list:10,tools/list:500,progress,everything:100,session", value_parser = Workload::parse)]
    pub gateway_workloads: Vec<Workload>,

    /// Workloads of the rows through gateways with two uvicorn workers, each session used on a
    /// connection other than the one that opened it; `none` skips them.
    #[arg(long, value_delimiter = ',', default_value = "echo:100", value_parser = parse_optional_workload)]
    pub workers_workloads: Vec<Option<Workload>>,

    /// Highest concurrency of gateway rows with a request of 1 MiB or more.
    #[arg(long, default_value_t = 16)]
    pub big_payload_max_concurrency: usize,

    /// Skip the end-to-end gateway rows.
    #[arg(long)]
    pub no_gateway: bool,

    /// Python of ContextForge's own venv (`make contextforge`:
    /// `target/contextforge-venv/bin/python`): adds the `contextforge` rows of the gateway layer
    /// (ContextForge started by `bench/contextforge.py` in front of the run's fixtures, driven
    /// through its `/servers/<id>/mcp`). Without it those rows are left out.
    #[arg(long)]
    pub contextforge_python: Option<PathBuf>,

    /// ContextForge's session settings, one set of rows each: `stateless` (mode
    /// `contextforge`), `stateful` (`contextforge-stateful`).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "stateless,stateful"
    )]
    pub contextforge_modes: Vec<ContextForgeMode>,

    /// Workloads of the ContextForge rows (its virtual servers expose the fixture's 10 tools
    /// and the big fixture's 500; server-everything is not registered, and ContextForge
    /// answers `tools/call` as JSON, so no progress is relayed).
    #[arg(long, value_delimiter = ',', default_value = "ping,echo:100,echo:1k,echo:10k,tools/list:10,tools/list:500", value_parser = Workload::parse)]
    pub contextforge_workloads: Vec<Workload>,

    /// Measure ContextForge and the proxied gateway modes only: no floor, runtime,
    /// Python-hop, direct or two-worker rows and no edge modes (needs
    /// `--contextforge-python`).
    #[arg(long, requires = "contextforge_python")]
    pub contextforge_only: bool,
}

/// What a row's requests go to: a gateway (proxied modes, in front of the run's runtime) or
/// an edge runtime with its core.
#[derive(Debug)]
struct Target {
    /// The row's mode: `python`, `http-json`, `grpc`, `edge-grpc`, `edge-grpc+hook`, ...
    name: String,
    /// The public endpoint.
    addr: SocketAddr,
    /// The gateway (proxied modes) or the core (edge modes): the "gateway" columns.
    front: ChildGuard,
    /// The edge mode's own runtime; `None`: the run's runtime (proxied modes).
    edge_runtime: Option<RuntimeProcess>,
    /// The core's HTTP/JSON socket (edge modes): its admin routes.
    core_http: Option<PathBuf>,
    /// Only these workloads (the `+hook` and ContextForge rows); `None`: every workload of the
    /// layer.
    only: Option<Vec<Workload>>,
    /// A foreign gateway's endpoint (ContextForge: its token, paths and tool names); `None`:
    /// this project's, with the layer's token.
    foreign: Option<Endpoint>,
}

impl Target {
    fn runs(&self, w: Workload) -> bool {
        self.only.as_ref().is_none_or(|o| o.contains(&w))
    }
}

/// One gateway per mode with `workers` uvicorn workers (with one worker, also the edge modes),
/// and the workloads sent through them.
#[derive(Debug)]
struct GatewayLayer {
    workers: usize,
    workloads: Vec<Workload>,
    targets: Vec<Target>,
    token: String,
    /// What `bench/contextforge.py` set for each ContextForge mode (the report's settings).
    contextforge_settings: BTreeMap<String, Value>,
}

impl GatewayLayer {
    /// Starts a gateway of `workers` workers in each mode (a mode that does not start is
    /// skipped with a note); with one worker, an edge runtime and core for each edge mode, and
    /// one more of each with the hook; none without the virtual environment or without
    /// workloads.
    fn start(run: &mut Run<'_>, workers: usize) -> anyhow::Result<Self> {
        let cfg = run.cfg;
        let workloads = if workers == 1 {
            let mut w = cfg.gateway.gateway_workloads.clone();
            if run.everything.is_none() {
                w.retain(|w| !w.uses_everything());
            }
            w
        } else {
            cfg.gateway
                .workers_workloads
                .iter()
                .flatten()
                .copied()
                .collect()
        };
        let mut layer = Self {
            workers,
            workloads,
            targets: Vec::new(),
            token: String::new(),
            contextforge_settings: BTreeMap::new(),
        };
        let contextforge = workers == 1 && cfg.gateway.contextforge_python.is_some();
        if (cfg.gateway.gateway_modes.is_empty() && !contextforge)
            || (workers > 1 && layer.workloads.is_empty())
        {
            return Ok(layer);
        }
        let Some(env) = run.python().cloned() else {
            return Ok(layer);
        };
        let (secret, token) = run.gateway_auth(&env)?;
        layer.token = token;
        let hook_workloads: Vec<Workload> = cfg
            .gateway
            .edge_hook_workloads
            .iter()
            .flatten()
            .copied()
            .filter(|w| run.everything.is_some() || !w.uses_everything())
            .collect();
        let metrics_workloads: Vec<Workload> = cfg
            .gateway
            .gateway_metrics_workloads
            .iter()
            .flatten()
            .copied()
            .filter(|w| layer.workloads.contains(w))
            .collect();
        for &mode in &cfg.gateway.gateway_modes {
            if workers > 1 && mode == GatewayMode::HttpJsonHttpx {
                continue;
            }
            if mode.is_edge() {
                if workers > 1 {
                    continue;
                }
                let mut variants = vec![(false, None)];
                if !hook_workloads.is_empty() {
                    variants.push((true, Some(hook_workloads.clone())));
                }
                for (hook, only) in variants {
                    let name = if hook {
                        format!("{}{HOOK_SUFFIX}", mode.name())
                    } else {
                        mode.name().to_owned()
                    };
                    match start_edge(run, &env, &secret, mode, &name, hook) {
                        Ok(t) => {
                            layer.targets.push(Target { only, ..t });
                        }
                        Err(e) => run.note(format!("gateway {name} skipped: {e:#}")),
                    }
                }
                continue;
            }
            let socket: Option<PathBuf> = match mode {
                GatewayMode::HttpJson | GatewayMode::HttpJsonHttpx => {
                    Some(run.runtime.http_socket.clone())
                }
                GatewayMode::Grpc => run.runtime.grpc_socket.clone(),
                _ => None,
            };
            // The gRPC mode runs twice with one worker: as usual, and with its Prometheus
            // metrics on (`grpc+metrics`, the `--gateway-metrics-workloads` only).
            let mut variants = vec![(false, None)];
            if workers == 1 && mode == GatewayMode::Grpc && !metrics_workloads.is_empty() {
                variants.push((true, Some(metrics_workloads.clone())));
            }
            for (metrics, only) in variants {
                let name = if metrics {
                    format!("{}{METRICS_SUFFIX}", mode.name())
                } else {
                    mode.name().to_owned()
                };
                let label = if workers == 1 {
                    format!("gateway {name}")
                } else {
                    format!("gateway {name} ({workers} workers)")
                };
                let mut extra: Vec<(&str, &str)> = python::BENCH_GATEWAY_ENV.to_vec();
                let listen;
                if metrics {
                    let l = std::net::TcpListener::bind("127.0.0.1:0")
                        .context("cannot bind a loopback port")?;
                    listen = l.local_addr()?.to_string();
                    drop(l);
                    extra.push(("MCP_GATEWAY_METRICS_LISTEN", &listen));
                }
                match run.rt.block_on(python::start_gateway(
                    &env,
                    mode,
                    workers,
                    socket.as_deref(),
                    &run.runtime.catalog,
                    python::GatewayEnv {
                        secret: &secret,
                        extra: &extra,
                        tag: if metrics { "-metrics" } else { "" },
                    },
                    run.dir(),
                )) {
                    Ok(g) => {
                        progress(format_args!(
                            "{label} ready on {} (pid {})",
                            g.addr,
                            g.guard.pid()
                        ));
                        run.commands.insert(label, g.command.clone());
                        layer.targets.push(Target {
                            name,
                            addr: g.addr,
                            front: g.guard,
                            edge_runtime: None,
                            core_http: None,
                            only,
                            foreign: None,
                        });
                    }
                    Err(e) => run.note(format!("{label} skipped: {e:#}")),
                }
            }
        }
        if let (true, Some(cf_python)) = (contextforge, &cfg.gateway.contextforge_python) {
            for &mode in &cfg.gateway.contextforge_modes {
                match start_contextforge(run, &env, cf_python, mode) {
                    Ok((t, settings)) => {
                        layer
                            .contextforge_settings
                            .insert(mode.name().to_owned(), settings);
                        layer.targets.push(t);
                    }
                    Err(e) => run.note(format!("gateway {} skipped: {e:#}", mode.name())),
                }
            }
        }
        Ok(layer)
    }

    /// The layer's name in the rows.
    fn name(&self) -> &'static str {
        if self.workers == 1 {
            ONE_WORKER.name
        } else {
            TWO_WORKERS.name
        }
    }
}

/// Starts the core of edge row mode `name` (with [`HOOK_PLUGINS`] when `hook`) and a runtime
/// of its own serving the run's catalog on a free loopback port (`--public-listen`), asking
/// that core over `mode`'s transport; waits until the public `GET /health` answers 200.
fn start_edge(
    run: &mut Run<'_>,
    env: &PythonEnv,
    secret: &str,
    mode: GatewayMode,
    name: &str,
    hook: bool,
) -> anyhow::Result<Target> {
    let cfg = run.cfg;
    let dir = run.dir().to_owned();
    let slug = name.replace('+', "-");
    let plugins = if hook {
        let p = dir.join(format!("{slug}-plugins.json"));
        std::fs::write(&p, HOOK_PLUGINS)
            .with_context(|| format!("cannot write {}", p.display()))?;
        Some(p)
    } else {
        None
    };
    let core = run.rt.block_on(python::start_core(
        env,
        &format!("core-{slug}"),
        secret,
        plugins.as_deref(),
        &dir,
    ))?;
    let transport = mode.core_transport().context("not an edge mode")?;
    let core_socket = if mode == GatewayMode::EdgeGrpc {
        &core.grpc_socket
    } else {
        &core.http_socket
    };
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("cannot bind a loopback port")?;
    let port = l.local_addr()?.port();
    drop(l);
    let mut args: Vec<String> = harness::BENCH_QUOTA_ARGS
        .iter()
        .map(|&a| a.to_owned())
        .collect();
    args.extend([
        "--public-listen".to_owned(),
        format!("127.0.0.1:{port}"),
        "--core-uds".to_owned(),
        core_socket.display().to_string(),
        "--core-transport".to_owned(),
        transport.to_owned(),
    ]);
    let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut runtime = run.rt.block_on(harness::start_runtime(
        &cfg.programs.runtime_bin,
        &dir,
        &format!("runtime-{slug}"),
        &run.runtime.catalog,
        cfg.runtime_worker_threads,
        false,
        &arg_refs,
    ))?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + EDGE_START_TIMEOUT;
    loop {
        runtime.guard.check_alive()?;
        if let Ok(status) = run
            .rt
            .block_on(crate::client::mcp::get_status(addr, "/health"))
            && status == 200
        {
            break;
        }
        if Instant::now() > deadline {
            anyhow::bail!(
                "edge runtime not healthy on {addr} after {EDGE_START_TIMEOUT:?}; see {}",
                runtime.guard.log().display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    progress(format_args!(
        "gateway {name} ready on {addr} (runtime pid {}, core pid {})",
        runtime.guard.pid(),
        core.guard.pid()
    ));
    run.commands
        .insert(format!("gateway {name}: core"), core.command.clone());
    run.commands
        .insert(format!("gateway {name}: runtime"), runtime.command.clone());
    Ok(Target {
        name: name.to_owned(),
        addr,
        front: core.guard,
        edge_runtime: Some(runtime),
        core_http: Some(core.http_socket),
        only: None,
        foreign: None,
    })
}

/// Starts ContextForge in `mode` through `bench/contextforge.py` (run by ContextForge's own
/// Python `cf_python`) in front of the run's fixture (virtual server `tools10`, tools
/// `fixture-<name>`) and big fixture (`tools500`); waits for the launcher's JSON line. The
/// target's "gateway" columns are the launcher's process tree (ContextForge's uvicorn and the
/// idle launcher); the "runtime" columns stay the run's runtime, which these rows do not use.
/// Returns the target and the settings the launcher reports.
fn start_contextforge(
    run: &mut Run<'_>,
    env: &PythonEnv,
    cf_python: &std::path::Path,
    mode: ContextForgeMode,
) -> anyhow::Result<(Target, Value)> {
    let name = mode.name();
    let dir = run.dir().to_owned();
    let script = env.repo_root.join("bench/contextforge.py");
    let out = dir.join(format!("{name}.json"));
    let stdout =
        std::fs::File::create(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let mut cmd = std::process::Command::new(cf_python);
    cmd.arg(&script)
        .arg("--contextforge-python")
        .arg(cf_python)
        .arg("--upstream")
        .arg(format!("tools10={}", run.fixture.url))
        .arg("--upstream")
        .arg(format!("tools500={}", run.big.url))
        .arg("--generated-only")
        .arg("tools500")
        .current_dir(&dir)
        .stdout(stdout);
    if mode == ContextForgeMode::Stateful {
        cmd.arg("--stateful");
    }
    let command = format!(
        "{} {} --contextforge-python {} --upstream tools10=FIXTURE_URL --upstream tools500=BIG_FIXTURE_URL --generated-only tools500{}",
        cf_python.display(),
        script.display(),
        cf_python.display(),
        if mode == ContextForgeMode::Stateful {
            " --stateful"
        } else {
            ""
        }
    );
    let mut guard = harness::spawn_logged(name, &mut cmd, dir.join(format!("{name}.log")))?;
    let deadline = Instant::now() + CONTEXTFORGE_START_TIMEOUT;
    let info: Value = loop {
        guard.check_alive()?;
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        if let Some(line) = text.lines().next()
            && text.contains('\n')
        {
            break serde_json::from_str(line)
                .with_context(|| format!("{name}: the launcher's line is not JSON: {line}"))?;
        }
        if Instant::now() > deadline {
            anyhow::bail!(
                "{name} not ready after {CONTEXTFORGE_START_TIMEOUT:?}; see {}",
                guard.log().display()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let port = info["port"]
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .context("launcher: no port")?;
    let token = info["token"].as_str().context("launcher: no token")?;
    let path = |server: &str| {
        info["servers"][server]["mcp_path"]
            .as_str()
            .map(str::to_owned)
            .with_context(|| format!("launcher: no virtual server {server}"))
    };
    let ten = path("tools10")?;
    let routes = Routes {
        default_path: ten.clone(),
        scoped: BTreeMap::from([
            ("tools10".to_owned(), ten),
            ("tools500".to_owned(), path("tools500")?),
        ]),
        tool_prefix: info["tool_prefix"].as_str().unwrap_or_default().to_owned(),
    };
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    progress(format_args!(
        "gateway {name} ready on {addr} (launcher pid {}, ContextForge pid {})",
        guard.pid(),
        info["pid"]
    ));
    run.commands.insert(format!("gateway {name}"), command);
    run.commands.insert(
        format!("gateway {name}: ContextForge"),
        info["command"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default(),
    );
    let settings = json!({
        "environment (secrets from init_secrets left out)": info["settings"],
        "tool_prefix": info["tool_prefix"],
        "virtual_servers": info["servers"],
    });
    let t = Target {
        name: name.to_owned(),
        addr,
        front: guard,
        edge_runtime: None,
        core_http: None,
        only: Some(run.cfg.gateway.contextforge_workloads.clone()),
        foreign: Some(Endpoint::foreign(addr, token, routes)?),
    };
    Ok((t, settings))
}

impl Layer for GatewayLayer {
    fn round(&mut self, run: &mut Run<'_>) -> anyhow::Result<()> {
        let cfg = run.cfg;
        let layer = self.name();
        // Behind several workers, a session is used on another connection than its own.
        let split = self.workers > 1;
        let mut workloads = self.workloads.clone();
        for t in &self.targets {
            for w in t.only.iter().flatten() {
                if !workloads.contains(w) {
                    workloads.push(*w);
                }
            }
        }
        for &workload in &workloads {
            for &c in &cfg.concurrency {
                let payload = workload.body(1).len();
                if payload >= BIG_PAYLOAD_BYTES && c > cfg.gateway.big_payload_max_concurrency {
                    continue;
                }
                let upstream_pid = match (&run.everything, workload.uses_everything()) {
                    (Some(e), true) => e.guard.pid(),
                    _ => run.fixture.guard.pid(),
                };
                let listed = self.workloads.contains(&workload);
                // Each target in the session era, and the plain modes of this project also
                // in MCP 2026-07-28 (`MODE@2026`) for `--gateway-2026-workloads`.
                let sessionless = self.workers == 1
                    && listed
                    && workload.sessionless()
                    && cfg.gateway.gateway_2026_workloads.contains(&Some(workload));
                let chosen: Vec<(usize, bool)> = (0..self.targets.len())
                    .flat_map(|i| [(i, false), (i, true)])
                    .filter(|&(i, era2026)| {
                        let t = &self.targets[i];
                        if era2026 {
                            sessionless && t.foreign.is_none() && t.only.is_none()
                        } else {
                            t.runs(workload) && (listed || t.only.is_some())
                        }
                    })
                    .collect();
                let n = chosen.len();
                for i in 0..n {
                    let (index, era2026) = chosen[(i + run.round) % n];
                    let t = &mut self.targets[index];
                    let mode = if era2026 {
                        format!("{}{SESSIONLESS_SUFFIX}", t.name)
                    } else {
                        t.name.clone()
                    };
                    let runtime_pid = t
                        .edge_runtime
                        .as_ref()
                        .map_or_else(|| run.runtime.guard.pid(), |r| r.guard.pid());
                    let meter = CpuMeter::new(vec![
                        ("gateway".to_owned(), ProcTarget::tree(t.front.pid())),
                        ("runtime".to_owned(), ProcTarget::pid(runtime_pid)),
                        ("fixture".to_owned(), ProcTarget::pid(upstream_pid)),
                        ("client".to_owned(), ProcTarget::this()),
                    ]);
                    let endpoint = match &t.foreign {
                        Some(e) => e.clone(),
                        None if era2026 => Endpoint::new(t.addr, &self.token)?.sessionless(),
                        None => Endpoint::new(t.addr, &self.token)?,
                    };
                    match run.rt.block_on(measure_mcp(
                        cfg,
                        &endpoint,
                        (layer, &mode, split),
                        &meter,
                        workload,
                        c,
                    )) {
                        Ok((key, m)) => run.record(key, m),
                        Err(e) => run.note(format!(
                            "{} {layer} {} {} {} B c={c} failed: {e:#}",
                            run.tag(),
                            mode,
                            workload.name(),
                            payload
                        )),
                    }
                    t.front.check_alive()?;
                    if let Some(r) = &mut t.edge_runtime {
                        r.guard.check_alive()?;
                    }
                    run.runtime.guard.check_alive()?;
                }
            }
        }
        Ok(())
    }

    fn settings(&self, cfg: &Config, settings: &mut BTreeMap<String, Value>) {
        if self.workers > 1 {
            return;
        }
        settings.insert(
            "gateway_modes".to_owned(),
            json!(self.targets.iter().map(|t| &t.name).collect::<Vec<_>>()),
        );
        // Without modes (--no-gateway) the layer measures nothing: no workloads.
        let workloads: Vec<String> = if self.targets.is_empty() {
            Vec::new()
        } else {
            cfg.gateway
                .gateway_workloads
                .iter()
                .map(|w| format!("{} ({} B request)", w.name(), w.body(1).len()))
                .collect()
        };
        settings.insert("gateway_workloads".to_owned(), json!(workloads));
        if self.targets.iter().any(|t| t.edge_runtime.is_some()) {
            settings.insert(
                "edge_hook_workloads".to_owned(),
                json!(
                    cfg.gateway
                        .edge_hook_workloads
                        .iter()
                        .flatten()
                        .map(|w| format!("{} ({} B request)", w.name(), w.body(1).len()))
                        .collect::<Vec<_>>()
                ),
            );
            settings.insert("edge_hook_plugins".to_owned(), json!(HOOK_PLUGINS));
        }
        if !self.contextforge_settings.is_empty() {
            settings.insert(
                "contextforge".to_owned(),
                json!({
                    "modes": self.contextforge_settings,
                    "workloads": cfg
                        .gateway
                        .contextforge_workloads
                        .iter()
                        .map(|w| format!("{} ({} B request)", w.name(), w.body(1).len()))
                        .collect::<Vec<_>>(),
                }),
            );
        }
    }

    fn finish(&self, run: &mut Run<'_>) {
        // The cap is stated once, for the one-worker rows (the two-worker rows are small).
        if self.workers > 1 || self.targets.is_empty() {
            return;
        }
        let cfg = run.cfg;
        for w in self
            .workloads
            .iter()
            .filter(|w| w.body(1).len() >= BIG_PAYLOAD_BYTES)
        {
            let skipped: Vec<String> = cfg
                .concurrency
                .iter()
                .filter(|&&c| c > cfg.gateway.big_payload_max_concurrency)
                .map(ToString::to_string)
                .collect();
            if !skipped.is_empty() {
                run.notes.push(format!(
                    "gateway {} {} B not run at concurrency {} (big payloads are capped at {})",
                    w.name(),
                    w.body(1).len(),
                    skipped.join(","),
                    cfg.gateway.big_payload_max_concurrency
                ));
            }
        }
        if cfg.gateway.revocations == 0 {
            return;
        }
        let Some(env) = run.python_probed().cloned() else {
            return;
        };
        for t in &self.targets {
            let Some(core_http) = &t.core_http else {
                continue;
            };
            if t.only.is_some() {
                continue;
            }
            match measure_revocation(run, &env, t.addr, core_http, &t.name) {
                Ok(r) => {
                    progress(format_args!(
                        "revocation {}: {} samples, p50 {} ms, p99 {} ms, {} failures",
                        r.mode,
                        r.samples_ms.len(),
                        r.quantile_ms(0.5)
                            .map_or("–".to_owned(), |v| format!("{v:.2}")),
                        r.quantile_ms(0.99)
                            .map_or("–".to_owned(), |v| format!("{v:.2}")),
                        r.failures.len()
                    ));
                    run.revocations.push(r);
                }
                Err(e) => run.note(format!(
                    "revocation latency of {} not measured: {e:#}",
                    t.name
                )),
            }
        }
    }
}

/// Revocation latency of the edge mode at `addr`: `--revocations` times, a fresh token (its own
/// subject) opens a session and makes one call (the runtime caches its caller), then the
/// token's SHA-256 is revoked with `POST /admin/revoke` on the core's HTTP socket and the
/// session sends `ping` back to back until the runtime answers 401; a sample is the time from
/// sending the revocation to that 401.
///
/// # Errors
///
/// When the tokens cannot be minted.
fn measure_revocation(
    run: &mut Run<'_>,
    env: &PythonEnv,
    addr: SocketAddr,
    core_http: &std::path::Path,
    mode: &str,
) -> anyhow::Result<Revocation> {
    let (secret, _) = run.gateway_auth(env)?;
    let tokens = python::mint_revocable_tokens(env, &secret, run.cfg.gateway.revocations)?;
    let mut out = Revocation {
        mode: mode.to_owned(),
        ..Revocation::default()
    };
    for (i, (token, sha)) in tokens.iter().enumerate() {
        let one = run.rt.block_on(async {
            let endpoint = Endpoint::new(addr, token)?;
            let mut w = McpWorker::connect(&endpoint, None).await?;
            w.call(Workload::Ping)
                .await
                .map_err(|e| anyhow::anyhow!("ping before the revocation: {e}"))?;
            let body = json!({ "tokenSha256": sha }).to_string();
            let t0 = Instant::now();
            let (status, answer) =
                crate::client::http::post_json(core_http, "/admin/revoke", body).await?;
            if status != 200 {
                anyhow::bail!(
                    "POST /admin/revoke: {status} {}",
                    String::from_utf8_lossy(&answer)
                );
            }
            loop {
                match w.call(Workload::Ping).await {
                    Err(CallError::Status(401)) => return Ok(t0.elapsed()),
                    Ok(_) => {}
                    Err(e) => anyhow::bail!("after the revocation: {e}"),
                }
                if t0.elapsed() > REVOCATION_BOUND {
                    anyhow::bail!("still served {REVOCATION_BOUND:?} after the revocation");
                }
            }
        });
        match one {
            Ok(d) => out.samples_ms.push(d.as_secs_f64() * 1e3),
            Err(e) => out.failures.push(format!("#{i}: {e:#}")),
        }
    }
    Ok(out)
}

/// A workload, or `none`.
fn parse_optional_workload(s: &str) -> Result<Option<Workload>, String> {
    if s == "none" {
        Ok(None)
    } else {
        Workload::parse(s).map(Some)
    }
}
