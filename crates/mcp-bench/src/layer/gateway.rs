//! End to end through the Python gateway (`python -m mcp_gateway serve`, one process per mode:
//! Python baseline, HTTP/JSON, gRPC) against the run's runtime and upstreams, driven by this
//! program's MCP client over TCP (a session per worker). Two layers: `gateway` (one uvicorn
//! worker) and `gateway-2-workers` (two workers, each session used on a connection other than
//! the one that opened it). Rows: one per workload, concurrency and mode, the mode order
//! rotating every round; requests of [`BIG_PAYLOAD_BYTES`] or more are capped in concurrency.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::{BIG_PAYLOAD_BYTES, Entry, Layer, measure_mcp};
use crate::bench::Config;
use crate::client::Workload;
use crate::client::mcp::Endpoint;
use crate::proc::{CpuMeter, ProcTarget};
use crate::python::{self, Gateway, GatewayMode};
use crate::run::{Run, progress};

/// The gateway with one worker in the list of layers: gRPC / HTTP/JSON, gRPC / Python
/// baseline, HTTP/JSON / Python baseline.
pub const ONE_WORKER: Entry = Entry {
    name: "gateway",
    start: |run| Ok(Box::new(GatewayLayer::start(run, 1)?)),
    ratios: &[
        ("grpc", "http-json"),
        ("grpc", "python"),
        ("http-json", "python"),
    ],
};

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
    /// Gateway modes, comma separated, in first-round order.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "python,http,grpc"
    )]
    pub gateway_modes: Vec<GatewayMode>,

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
}

/// One gateway per mode with `workers` uvicorn workers, and the workloads sent through them.
#[derive(Debug)]
struct GatewayLayer {
    workers: usize,
    workloads: Vec<Workload>,
    gateways: Vec<Gateway>,
    token: String,
}

impl GatewayLayer {
    /// Starts a gateway of `workers` workers in each mode (a mode that does not start is
    /// skipped with a note); none without the virtual environment or without workloads.
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
            gateways: Vec::new(),
            token: String::new(),
        };
        if cfg.gateway.gateway_modes.is_empty() || (workers > 1 && layer.workloads.is_empty()) {
            return Ok(layer);
        }
        let Some(env) = run.python().cloned() else {
            return Ok(layer);
        };
        let (secret, token) = run.gateway_auth(&env)?;
        layer.token = token;
        for &mode in &cfg.gateway.gateway_modes {
            let socket = match mode {
                GatewayMode::Python => None,
                GatewayMode::HttpJson => Some(run.runtime.http_socket.as_path()),
                GatewayMode::Grpc => run.runtime.grpc_socket.as_deref(),
            };
            let label = if workers == 1 {
                format!("gateway {}", mode.name())
            } else {
                format!("gateway {} ({workers} workers)", mode.name())
            };
            match run.rt.block_on(python::start_gateway(
                &env,
                mode,
                workers,
                socket,
                &run.runtime.catalog,
                python::GatewayEnv {
                    secret: &secret,
                    extra: &python::BENCH_GATEWAY_ENV,
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
                    layer.gateways.push(g);
                }
                Err(e) => run.note(format!("{label} skipped: {e:#}")),
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

impl Layer for GatewayLayer {
    fn round(&mut self, run: &mut Run<'_>) -> anyhow::Result<()> {
        let cfg = run.cfg;
        let layer = self.name();
        // Behind several workers, a session is used on another connection than its own.
        let split = self.workers > 1;
        for &workload in &self.workloads {
            for &c in &cfg.concurrency {
                let payload = workload.body(1).len();
                if payload >= BIG_PAYLOAD_BYTES && c > cfg.gateway.big_payload_max_concurrency {
                    continue;
                }
                let upstream_pid = match (&run.everything, workload.uses_everything()) {
                    (Some(e), true) => e.guard.pid(),
                    _ => run.fixture.guard.pid(),
                };
                let n = self.gateways.len();
                for i in 0..n {
                    let g = &mut self.gateways[(i + run.round) % n];
                    let meter = CpuMeter::new(vec![
                        ("gateway".to_owned(), ProcTarget::tree(g.guard.pid())),
                        (
                            "runtime".to_owned(),
                            ProcTarget::pid(run.runtime.guard.pid()),
                        ),
                        ("fixture".to_owned(), ProcTarget::pid(upstream_pid)),
                        ("client".to_owned(), ProcTarget::this()),
                    ]);
                    let endpoint = Endpoint::new(g.addr, &self.token)?;
                    match run.rt.block_on(measure_mcp(
                        cfg,
                        &endpoint,
                        (layer, g.mode.name(), split),
                        &meter,
                        workload,
                        c,
                    )) {
                        Ok((key, m)) => run.record(key, m),
                        Err(e) => run.note(format!(
                            "{} {layer} {} {} {} B c={c} failed: {e:#}",
                            run.tag(),
                            g.mode.name(),
                            workload.name(),
                            payload
                        )),
                    }
                    g.guard.check_alive()?;
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
            json!(
                self.gateways
                    .iter()
                    .map(|g| g.mode.name())
                    .collect::<Vec<_>>()
            ),
        );
        settings.insert(
            "gateway_workloads".to_owned(),
            json!(
                cfg.gateway
                    .gateway_workloads
                    .iter()
                    .map(|w| format!("{} ({} B request)", w.name(), w.body(1).len()))
                    .collect::<Vec<_>>()
            ),
        );
    }

    fn finish(&self, run: &mut Run<'_>) {
        // The cap is stated once, for the one-worker rows (the two-worker rows are small).
        if self.workers > 1 || self.gateways.is_empty() {
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
    }
}

/// A workload, or `none`.
fn parse_optional_workload(s: &str) -> Result<Option<Workload>, String> {
    if s == "none" {
        Ok(None)
    } else {
        Workload::parse(s).map(Some)
    }
}
