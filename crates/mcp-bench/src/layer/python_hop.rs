//! Python clients straight to the runtime: `bench/pyhop.py` spawned once per row (httpx and
//! aiohttp over the HTTP/JSON socket, grpc.aio over the gRPC socket), its JSON row read back.
//! Rows: layer `python-hop`, one per workload, concurrency and client, the client order
//! rotating every round. Needs the virtual environment; without it the layer measures nothing
//! (the note says why).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context as _, bail};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Entry, Layer, per_request, rotated};
use crate::bench::Config;
use crate::client::{Stop, Workload};
use crate::proc::{CpuClock, CpuMeter, ProcTarget};
use crate::python::PythonEnv;
use crate::report::{Metrics, RowKey};
use crate::run::{Run, progress};
use crate::stats::LatencySummary;

/// The Python hop in the list of layers: grpc.aio / httpx and aiohttp / httpx.
pub const LAYER: Entry = Entry {
    name: "python-hop",
    start: |run| Ok(Box::new(PythonHop::start(run))),
    ratios: &[("grpc.aio", "httpx"), ("aiohttp", "httpx")],
};

/// The Python-hop layer's options.
#[derive(Debug, Clone, clap::Args)]
pub struct PythonHopArgs {
    /// Python-hop clients (`bench/pyhop.py --client`), comma separated, in first-round order.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "httpx,aiohttp,grpc"
    )]
    pub pyhop_clients: Vec<PyClient>,

    /// Python-hop workloads, comma separated.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "ping,echo1k")]
    pub pyhop_workloads: Vec<PyWorkload>,

    /// The Python-hop client script [default: REPO_ROOT/bench/pyhop.py].
    #[arg(long)]
    pub pyhop_script: Option<PathBuf>,

    /// Skip the Python-hop rows.
    #[arg(long)]
    pub no_python_hop: bool,
}

/// The Python-hop layer: the environment, the clients measured and the processes whose CPU
/// is read around each script run.
#[derive(Debug)]
struct PythonHop {
    env: Option<PythonEnv>,
    script: PathBuf,
    clients: Vec<PyClient>,
    meter: CpuMeter,
}

impl PythonHop {
    /// Probes the virtual environment (when a client is asked for) and checks the script.
    fn start(run: &mut Run<'_>) -> Self {
        let cfg = run.cfg;
        let mut clients = cfg.python_hop.pyhop_clients.clone();
        let script = (cfg.python_hop.pyhop_script.clone())
            .unwrap_or_else(|| cfg.programs.repo_root.join("bench/pyhop.py"));
        let env = if clients.is_empty() {
            None
        } else {
            run.python().cloned()
        };
        if let Some(env) = &env {
            if script.exists() {
                let args = pyhop_args(
                    PyClient::Httpx,
                    &run.runtime.http_socket,
                    PyWorkload::Ping,
                    1,
                    cfg.stop,
                    cfg.warmup,
                    run.runtime.guard.pid(),
                );
                run.commands.insert(
                    "pyhop".to_owned(),
                    format!(
                        "{} {} {}",
                        env.python.display(),
                        script.display(),
                        args.join(" ")
                    ),
                );
            } else {
                run.note(format!(
                    "python-hop layer skipped: {} does not exist",
                    script.display()
                ));
                clients.clear();
            }
        }
        let meter = CpuMeter::new(vec![
            (
                "runtime".to_owned(),
                ProcTarget::pid(run.runtime.guard.pid()),
            ),
            (
                "fixture".to_owned(),
                ProcTarget::pid(run.fixture.guard.pid()),
            ),
        ]);
        Self {
            env,
            script,
            clients,
            meter,
        }
    }
}

impl Layer for PythonHop {
    fn round(&mut self, run: &mut Run<'_>) -> anyhow::Result<()> {
        let cfg = run.cfg;
        let Some(env) = &self.env else {
            return Ok(());
        };
        for &workload in &cfg.python_hop.pyhop_workloads {
            for &c in &cfg.concurrency {
                for client in rotated(&self.clients, run.round) {
                    match measure(self, env, run, client, workload, c) {
                        Ok((key, m)) => run.record(key, m),
                        Err(e) => run.note(format!(
                            "{} python-hop {} {} c={c} failed: {e:#}",
                            run.tag(),
                            client.name(),
                            workload.arg()
                        )),
                    }
                    run.runtime.guard.check_alive()?;
                }
            }
        }
        Ok(())
    }

    fn settings(&self, cfg: &Config, settings: &mut BTreeMap<String, Value>) {
        settings.insert(
            "pyhop_clients".to_owned(),
            json!(self.clients.iter().map(|c| c.name()).collect::<Vec<_>>()),
        );
        // Without clients (--no-python-hop, or no Python) the layer measures nothing.
        let workloads: Vec<&str> = if self.clients.is_empty() {
            Vec::new()
        } else {
            cfg.python_hop
                .pyhop_workloads
                .iter()
                .map(|w| w.arg())
                .collect()
        };
        settings.insert("pyhop_workloads".to_owned(), json!(workloads));
    }
}

/// Measures one row: runs `pyhop.py` once. The runtime's CPU per request is the script's own
/// reading around its measured phase (`--runtime-pid`); the fixture's is read around the
/// whole script and divided by measured plus warm-up requests (an approximation: it also
/// counts the session set-up).
fn measure(
    hop: &PythonHop,
    env: &PythonEnv,
    run: &Run<'_>,
    client: PyClient,
    workload: PyWorkload,
    concurrency: usize,
) -> anyhow::Result<(RowKey, Metrics)> {
    let (cfg, meter) = (run.cfg, &hop.meter);
    let socket = match client {
        PyClient::Grpc => run
            .runtime
            .grpc_socket
            .as_deref()
            .context("no gRPC socket")?,
        _ => run.runtime.http_socket.as_path(),
    };
    let key = RowKey {
        layer: LAYER.name.to_owned(),
        transport: client.transport().to_owned(),
        client: client.name().to_owned(),
        workload: workload.workload().name().to_owned(),
        concurrency,
        payload_bytes: workload.workload().body(1).len(),
    };
    let args = pyhop_args(
        client,
        socket,
        workload,
        concurrency,
        cfg.stop,
        cfg.warmup,
        run.runtime.guard.pid(),
    );
    let before = meter.start();
    let row = run_pyhop(env, &hop.script, &args)?;
    let after = meter.sample();
    if let Some(e) = &row.first_error {
        progress(format_args!("  first error: {e}"));
    }
    let (mut cpu, mut cpu_clock) =
        per_request(meter.used(&before, &after), row.requests + cfg.warmup);
    if let Some(v) = row.runtime_cpu_us_per_req {
        // bench/pyhop.py reads the runtime's /proc/PID/stat ticks around its own phase.
        cpu.insert("runtime".to_owned(), v);
        cpu_clock.insert("runtime".to_owned(), CpuClock::Ticks.name().to_owned());
    }
    cpu.insert("client".to_owned(), row.client_cpu_us_per_req);
    cpu_clock.insert("client".to_owned(), "getrusage".to_owned());
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
            cpu_clock,
            peak_rss_kib: meter.peak_rss_kib(),
            response_bytes: 0,
        },
    ))
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
    pub fn workload(self) -> Workload {
        match self {
            Self::Ping => Workload::Ping,
            Self::Echo1k => Workload::Echo(1024),
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
}

/// The arguments of one `pyhop.py` run (without the interpreter and script).
#[must_use]
pub fn pyhop_args(
    client: PyClient,
    socket: &Path,
    workload: PyWorkload,
    concurrency: usize,
    stop: Stop,
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
        Stop::Requests(n) => {
            args.extend(["--requests".to_owned(), n.to_string()]);
        }
        Stop::Duration(d) => {
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
