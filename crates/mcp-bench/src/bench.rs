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
use crate::report::{Comparison, Metrics, Report, Row, RowKey, SCHEMA};

/// A boundary of the runtime a client can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, clap::ValueEnum)]
pub enum Transport {
    /// HTTP/1.1 + JSON over the HTTP/JSON socket (hyper client).
    #[value(name = "http")]
    HttpJson,
    /// gRPC `Invoke` over the gRPC socket (tonic client).
    Grpc,
}

impl Transport {
    /// Name in reports: `http-json` or `grpc`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::HttpJson => "http-json",
            Self::Grpc => "grpc",
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
}

/// The processes of a run and the sessions opened on them.
struct Target {
    runtime: RuntimeProcess,
    http_session: String,
    /// Socket and session of the gRPC adapter, when measured.
    grpc: Option<(PathBuf, String)>,
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

    let mut fixture =
        harness::start_fixture(&cfg.fixture_bin, dir.path(), cfg.fixture_generated_tools)?;
    progress(format_args!(
        "fixture upstream at {} (pid {})",
        fixture.url,
        fixture.guard.pid()
    ));
    let want_grpc = cfg.transports.contains(&Transport::Grpc);
    let runtime = rt.block_on(harness::start_runtime(
        &cfg.runtime_bin,
        dir.path(),
        &fixture.url,
        cfg.runtime_worker_threads,
        want_grpc,
    ))?;
    progress(format_args!(
        "runtime ready (pid {}): {}",
        runtime.guard.pid(),
        runtime.health
    ));
    let (http_session, grpc) = rt.block_on(async {
        let h = client::http::initialize(&runtime.http_socket).await?;
        let g = match &runtime.grpc_socket {
            Some(path) => Some((path.clone(), client::grpc::initialize(path).await?)),
            None => None,
        };
        anyhow::Ok((h, g))
    })?;
    let mut target = Target {
        runtime,
        http_session,
        grpc,
    };

    let meter = CpuMeter::new(vec![
        (
            "runtime".to_owned(),
            ProcTarget::pid(target.runtime.guard.pid()),
        ),
        ("fixture".to_owned(), ProcTarget::pid(fixture.guard.pid())),
        ("client".to_owned(), ProcTarget::this()),
    ]);
    let floor_meter = CpuMeter::new(vec![("client".to_owned(), ProcTarget::this())]);

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
                let before = floor_meter.sample();
                let result = floor::run(payload, c, cfg.stop).context("kernel floor")?;
                let m = metrics(&result, &floor_meter, &before);
                progress(format_args!("{tag} {}", line(&key, &m)));
                record(key, m);
            }
        }
        for &workload in &cfg.workloads {
            for &c in &cfg.concurrency {
                let mut transports = cfg.transports.clone();
                if round % 2 == 1 {
                    transports.reverse();
                }
                for t in transports {
                    let (key, m) =
                        rt.block_on(measure_runtime(cfg, &target, &meter, t, workload, c))?;
                    target.runtime.guard.check_alive()?;
                    progress(format_args!("{tag} {}", line(&key, &m)));
                    record(key, m);
                }
            }
        }
    }
    fixture.guard.check_alive()?;

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
        json!(cfg.workloads.iter().map(|w| w.method()).collect::<Vec<_>>()),
    );
    settings.insert("floor_payloads".to_owned(), json!(cfg.floor_payloads));
    settings.insert(
        "runtime_worker_threads".to_owned(),
        json!(cfg.runtime_worker_threads),
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

    // Stop the runtime before the fixture it holds connections to; the guards would do it
    // in the reverse order of declaration anyway, this makes it explicit.
    drop(target);
    drop(fixture);
    Ok(Report {
        schema: SCHEMA.to_owned(),
        started_unix_s,
        command_line: cfg.command_line.clone(),
        machine,
        versions,
        settings,
        rows,
        comparisons,
    })
}

/// Measures one runtime row: fresh workers, warm-up, then the measured phase.
async fn measure_runtime(
    cfg: &Config,
    target: &Target,
    meter: &CpuMeter,
    transport: Transport,
    workload: Workload,
    concurrency: usize,
) -> anyhow::Result<(RowKey, Metrics)> {
    let client = match (transport, cfg.grpc_channel) {
        (Transport::HttpJson, _) => "hyper",
        (Transport::Grpc, GrpcChannel::PerWorker) => "tonic",
        (Transport::Grpc, GrpcChannel::Shared) => "tonic (shared channel)",
    };
    let key = RowKey {
        layer: "runtime".to_owned(),
        transport: transport.name().to_owned(),
        client: client.to_owned(),
        workload: workload.method().to_owned(),
        concurrency,
        payload_bytes: workload.body(1).len(),
    };
    let mut workers = Vec::with_capacity(concurrency);
    let grpc = match (transport, &target.grpc) {
        (Transport::Grpc, Some((socket, session))) => Some((socket.as_path(), session.as_str())),
        (Transport::Grpc, None) => anyhow::bail!("the runtime was started without its gRPC socket"),
        (Transport::HttpJson, _) => None,
    };
    let shared = match (grpc, cfg.grpc_channel) {
        (Some((socket, _)), GrpcChannel::Shared) => Some(client::grpc::connect(socket).await?),
        _ => None,
    };
    for _ in 0..concurrency.max(1) {
        workers.push(match transport {
            Transport::HttpJson => Worker::Http(
                client::http::HttpWorker::connect(
                    &target.runtime.http_socket,
                    &target.http_session,
                )
                .await?,
            ),
            Transport::Grpc => {
                let (socket, session) = grpc.context("no gRPC socket")?;
                let channel = match &shared {
                    Some(ch) => ch.clone(),
                    None => client::grpc::connect(socket).await?,
                };
                Worker::Grpc(client::grpc::GrpcWorker::new(channel, session))
            }
        });
    }
    let (_, workers) = client::drive(workers, workload, Stop::Requests(cfg.warmup)).await;
    let before = meter.sample();
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
        cpu_us_per_request: meter
            .used(before, &after)
            .into_iter()
            .map(|(k, d)| (k, per_request(d)))
            .collect(),
        peak_rss_kib: meter.peak_rss_kib(),
        response_bytes: result.response_bytes,
    }
}

/// gRPC over HTTP/JSON for every runtime workload and concurrency measured with both.
fn compare(rows: &[Row]) -> Vec<Comparison> {
    rows.iter()
        .filter(|r| r.key.layer == "runtime" && r.key.transport == Transport::Grpc.name())
        .filter_map(|g| {
            let h = rows.iter().find(|h| {
                h.key.layer == g.key.layer
                    && h.key.transport == Transport::HttpJson.name()
                    && h.key.workload == g.key.workload
                    && h.key.concurrency == g.key.concurrency
            })?;
            Some(Comparison::between(g, h))
        })
        .collect()
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
        "{} {}/{} {} c={} {} B: {:.0} req/s, p50 {:.1} µs, p99 {:.1} µs, errors {}, CPU/req runtime {} µs, client {} µs",
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
        cpu("runtime"),
        cpu("client"),
    )
}
