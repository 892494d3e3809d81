//! The layers of the benchmark behind one interface.
//!
//! A layer is one way of reaching the runtime (or what it stands in for): the kernel floor,
//! a Rust client straight to the runtime, a Python client straight to it, an MCP client
//! straight to the upstream, the gateway end to end. Each is a [`Layer`] in a file of its
//! own under `layer/`, entered in [`LAYERS`] with the ratios its rows form. A run starts the
//! shared processes ([`Run::start`]), then each layer in list order (which may start
//! processes of its own), then measures every layer once per round in list order, so rows
//! appear in the report in that order. Adding a layer is adding its file, its `mod` line and
//! one line to [`LAYERS`] (plus its options in `cli.rs` and [`Config`]). This module also
//! holds what measuring a row takes in more than one layer: [`metrics`], [`per_request`],
//! [`measure_mcp`], [`rotated`].

pub mod floor;
pub mod gateway;
pub mod python_hop;
pub mod runtime;
pub mod state;
pub mod upstream;

use std::collections::BTreeMap;

use serde_json::Value;

use crate::bench::Config;
use crate::client::{self, LoadResult, Stop, Worker, Workload};
use crate::proc::{CpuMeter, CpuSample, CpuUsed};
use crate::report::{Metrics, RowKey};
use crate::run::{Run, progress};

/// One layer of the benchmark, started for a run.
pub trait Layer {
    /// Measures each of the layer's rows once (round [`Run::round`]) and records them with
    /// [`Run::record`]; a row that fails without the run being broken is a [`Run::note`].
    ///
    /// # Errors
    ///
    /// When the run cannot go on (a process under test died, a session cannot be opened).
    fn round(&mut self, run: &mut Run<'_>) -> anyhow::Result<()>;

    /// Adds the layer's settings to the report's.
    fn settings(&self, _cfg: &Config, _settings: &mut BTreeMap<String, Value>) {}

    /// After the last round: notes about rows the layer left out.
    fn finish(&self, _run: &mut Run<'_>) {}
}

/// A ratio the report computes between two rows of a layer that differ only in their mode
/// ([`RowKey::mode`]): `(numerator mode, denominator mode)`.
pub type Ratio = (&'static str, &'static str);

/// How a layer enters a run.
#[derive(Debug, Clone, Copy)]
pub struct Entry {
    /// The layer's name in its rows ([`RowKey::layer`]).
    pub name: &'static str,
    /// Starts the layer (and its own processes) once the shared processes run.
    pub start: fn(&mut Run<'_>) -> anyhow::Result<Box<dyn Layer>>,
    /// The ratios between its rows.
    pub ratios: &'static [Ratio],
}

/// Every layer, in the order each round measures them.
pub const LAYERS: &[Entry] = &[
    floor::LAYER,
    runtime::LAYER,
    state::LAYER,
    python_hop::LAYER,
    upstream::LAYER,
    gateway::ONE_WORKER,
    gateway::TWO_WORKERS,
];

/// Payloads from this size on are "big": fewer warm-up requests, capped concurrency.
pub const BIG_PAYLOAD_BYTES: usize = 1024 * 1024;

/// `items` rotated left by `round` (A B C, B C A, C A B, ...), so no mode always runs first.
#[must_use]
pub fn rotated<T: Copy>(items: &[T], round: usize) -> Vec<T> {
    if items.is_empty() {
        return Vec::new();
    }
    let k = round % items.len();
    items[k..].iter().chain(&items[..k]).copied().collect()
}

/// Turns a phase's result and the CPU used since `before` into row metrics.
#[must_use]
pub fn metrics(result: &LoadResult, meter: &CpuMeter, before: &CpuSample) -> Metrics {
    let after = meter.sample();
    let (cpu, cpu_clock) = per_request(meter.used(before, &after), result.requests);
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
        cpu_us_per_request: cpu,
        cpu_clock,
        peak_rss_kib: meter.peak_rss_kib(),
        response_bytes: result.response_bytes,
    }
}

/// CPU time of each process divided by `requests`, in microseconds (0 without requests),
/// and the name of the clock each came from ([`crate::proc::CpuClock::name`]), both by
/// process name.
#[must_use]
pub fn per_request(
    used: BTreeMap<String, CpuUsed>,
    requests: u64,
) -> (BTreeMap<String, f64>, BTreeMap<String, String>) {
    let clocks = used
        .iter()
        .map(|(k, u)| (k.clone(), u.clock.name().to_owned()))
        .collect();
    let cpu = used
        .into_iter()
        .map(|(k, u)| {
            let v = if requests == 0 {
                0.0
            } else {
                u.time.as_secs_f64() * 1e6 / requests as f64
            };
            (k, v)
        })
        .collect();
    (cpu, clocks)
}

/// Measures one MCP row over TCP: through a gateway, or straight to an upstream. `row` is
/// (layer, transport or mode, split); with `split` each worker opens its session on one
/// connection and sends its requests on another. Each worker connects and opens its own
/// session, warms up, then the measured phase; the sessions are closed afterwards.
///
/// # Errors
///
/// When a worker cannot connect or open its session.
pub async fn measure_mcp(
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
