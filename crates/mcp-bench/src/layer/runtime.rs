//! A Rust client straight to the runtime over each adapter: hyper over the HTTP/JSON socket,
//! tonic over the gRPC socket, and hyper to a second runtime process built without the
//! `grpc-uds` feature (what compiling the adapter in costs the default path), and hyper to a
//! third runtime process of the default build with its metrics on (`--metrics-listen`: what
//! recording the Prometheus metrics costs the hot path). Rows: layer
//! `runtime`, one per workload, concurrency and transport, the transport order rotating every
//! round; each row gets fresh connections on one session per transport and scope.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde_json::{Value, json};

use super::{Entry, Layer, metrics, rotated};
use crate::bench::Config;
use crate::client::{self, Stop, Worker, Workload};
use crate::harness::{self, RuntimeProcess};
use crate::proc::{CpuMeter, ProcTarget};
use crate::report::{Metrics, RowKey};
use crate::run::{Run, progress};

/// The runtime layer in the list of layers: gRPC / HTTP/JSON, and HTTP/JSON of the `grpc-uds`
/// build / of the build without it.
pub const LAYER: Entry = Entry {
    name: "runtime",
    start: |run| Ok(Box::new(RuntimeLayer::start(run)?)),
    ratios: &[
        ("grpc", "http-json"),
        ("http-json", "http-json-nogrpc"),
        ("http-json-metrics", "http-json"),
    ],
};

/// The runtime layer's options.
#[derive(Debug, Clone, clap::Args)]
pub struct RuntimeArgs {
    /// Workloads sent to the runtime, comma separated: `ping`, `tools/list:10`,
    /// `tools/list:500`, `echo:BYTES`.
    #[arg(long, value_delimiter = ',', default_value = "ping,tools/list:10,tools/list:500,echo:1k", value_parser = Workload::parse)]
    pub workloads: Vec<Workload>,

    /// Transports, comma separated, in the order of the first round (later rounds rotate);
    /// `http-nogrpc` needs `--runtime-bin-nogrpc`; `http-metrics` is HTTP/JSON to a runtime of
    /// the default build started with `--metrics-listen`.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "http,grpc,http-nogrpc,http-metrics"
    )]
    pub transports: Vec<Transport>,

    /// An `mcp-runtime` binary built without `grpc-uds`: adds `http-nogrpc` runtime rows (the
    /// HTTP/JSON path of that build, measured beside the default build's).
    #[arg(long)]
    pub runtime_bin_nogrpc: Option<PathBuf>,

    /// gRPC connections: one channel per worker, or one shared by all workers.
    #[arg(long, value_enum, default_value = "per-worker")]
    pub grpc_channel: GrpcChannel,

    /// Skip the Rust client to runtime rows.
    #[arg(long)]
    pub no_runtime: bool,
}

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
    /// HTTP/1.1 + JSON to a second runtime process of the default build with its Prometheus
    /// metrics on (`--metrics-listen`): what recording them costs per request.
    #[value(name = "http-metrics")]
    HttpJsonMetrics,
}

impl Transport {
    /// Name in reports: `http-json`, `grpc` or `http-json-nogrpc`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::HttpJson => "http-json",
            Self::Grpc => "grpc",
            Self::HttpJsonNoGrpc => "http-json-nogrpc",
            Self::HttpJsonMetrics => "http-json-metrics",
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

/// The runtime layer: the transports measured, the runtime built without `grpc-uds` (with
/// its meter) when measured, and the sessions opened so far.
#[derive(Debug)]
struct RuntimeLayer {
    transports: Vec<Transport>,
    meter: CpuMeter,
    nogrpc: Option<(RuntimeProcess, CpuMeter)>,
    /// The runtime with `--metrics-listen`, when its rows are measured.
    with_metrics: Option<(RuntimeProcess, CpuMeter)>,
    sessions: Sessions,
}

/// The session of each transport and scope, opened on first use.
type Sessions = HashMap<(Transport, Option<&'static str>), String>;

impl RuntimeLayer {
    /// Starts the runtime built without `grpc-uds` when its rows are asked for and its binary
    /// is given (else drops those rows, with a note).
    fn start(run: &mut Run<'_>) -> anyhow::Result<Self> {
        let cfg = run.cfg;
        let mut transports = cfg.runtime.transports.clone();
        let nogrpc = match (
            &cfg.runtime.runtime_bin_nogrpc,
            transports.contains(&Transport::HttpJsonNoGrpc),
        ) {
            (Some(bin), true) => {
                let r = run.rt.block_on(harness::start_runtime(
                    bin,
                    run.dir(),
                    "runtime-nogrpc",
                    &run.runtime.catalog,
                    cfg.runtime_worker_threads,
                    false,
                    &harness::BENCH_QUOTA_ARGS,
                ))?;
                progress(format_args!(
                    "runtime built without grpc-uds ready (pid {})",
                    r.guard.pid()
                ));
                run.commands.insert(
                    "runtime (built without grpc-uds)".to_owned(),
                    r.command.clone(),
                );
                Some(r)
            }
            (None, true) => {
                run.note("http-json-nogrpc rows skipped: no --runtime-bin-nogrpc given".to_owned());
                transports.retain(|&t| t != Transport::HttpJsonNoGrpc);
                None
            }
            _ => None,
        };
        let with_metrics = if transports.contains(&Transport::HttpJsonMetrics) {
            // A port free now, for the metrics listener (which refuses port 0).
            let port = std::net::TcpListener::bind("127.0.0.1:0")?
                .local_addr()?
                .port();
            let listen = format!("127.0.0.1:{port}");
            let mut args: Vec<&str> = harness::BENCH_QUOTA_ARGS.to_vec();
            args.extend(["--metrics-listen", &listen]);
            let r = run.rt.block_on(harness::start_runtime(
                &cfg.programs.runtime_bin,
                run.dir(),
                "runtime-metrics",
                &run.runtime.catalog,
                cfg.runtime_worker_threads,
                false,
                &args,
            ))?;
            progress(format_args!(
                "runtime with --metrics-listen {listen} ready (pid {})",
                r.guard.pid()
            ));
            run.commands
                .insert("runtime (metrics on)".to_owned(), r.command.clone());
            Some(r)
        } else {
            None
        };
        let meter_of = |runtime: &RuntimeProcess| {
            CpuMeter::new(vec![
                ("runtime".to_owned(), ProcTarget::pid(runtime.guard.pid())),
                (
                    "fixture".to_owned(),
                    ProcTarget::pid(run.fixture.guard.pid()),
                ),
                ("client".to_owned(), ProcTarget::this()),
            ])
        };
        Ok(Self {
            transports,
            meter: meter_of(&run.runtime),
            nogrpc: nogrpc.map(|r| {
                let m = meter_of(&r);
                (r, m)
            }),
            with_metrics: with_metrics.map(|r| {
                let m = meter_of(&r);
                (r, m)
            }),
            sessions: HashMap::new(),
        })
    }
}

/// Measures one row against `runtime`: fresh workers, warm-up, then the measured phase.
async fn measure(
    cfg: &Config,
    sessions: &mut Sessions,
    (runtime, meter): (&RuntimeProcess, &CpuMeter),
    transport: Transport,
    workload: Workload,
    concurrency: usize,
) -> anyhow::Result<(RowKey, Metrics)> {
    let client = match (transport, cfg.runtime.grpc_channel) {
        (Transport::HttpJson | Transport::HttpJsonNoGrpc | Transport::HttpJsonMetrics, _) => {
            "hyper"
        }
        (Transport::Grpc, GrpcChannel::PerWorker) => "tonic",
        (Transport::Grpc, GrpcChannel::Shared) => "tonic (shared channel)",
    };
    let key = RowKey {
        layer: LAYER.name.to_owned(),
        transport: transport.name().to_owned(),
        client: client.to_owned(),
        workload: workload.name().to_owned(),
        concurrency,
        payload_bytes: workload.body(1).len(),
    };
    let socket = socket(runtime, transport)?;
    let session = match sessions.get(&(transport, workload.scope())) {
        Some(s) => s.clone(),
        None => {
            let s = match transport {
                Transport::Grpc => client::grpc::initialize(socket, workload.scope()).await?,
                _ => client::http::initialize(socket, workload.scope()).await?,
            };
            sessions.insert((transport, workload.scope()), s.clone());
            s
        }
    };
    let mut workers = Vec::with_capacity(concurrency);
    let shared = match (transport, cfg.runtime.grpc_channel) {
        (Transport::Grpc, GrpcChannel::Shared) => Some(client::grpc::connect(socket).await?),
        _ => None,
    };
    for _ in 0..concurrency.max(1) {
        workers.push(match transport {
            Transport::HttpJson | Transport::HttpJsonNoGrpc | Transport::HttpJsonMetrics => {
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

/// The socket of `transport` on `runtime`.
fn socket(runtime: &RuntimeProcess, transport: Transport) -> anyhow::Result<&Path> {
    match transport {
        Transport::Grpc => runtime
            .grpc_socket
            .as_deref()
            .context("the runtime was started without its gRPC socket"),
        _ => Ok(&runtime.http_socket),
    }
}

impl Layer for RuntimeLayer {
    fn round(&mut self, run: &mut Run<'_>) -> anyhow::Result<()> {
        let cfg = run.cfg;
        if cfg.runtime.no_runtime {
            return Ok(());
        }
        for &workload in &cfg.runtime.workloads {
            for &c in &cfg.concurrency {
                for t in rotated(&self.transports, run.round) {
                    let target = match t {
                        Transport::HttpJsonNoGrpc => {
                            let (r, m) = self
                                .nogrpc
                                .as_ref()
                                .context("no runtime built without grpc-uds was given")?;
                            (r, m)
                        }
                        Transport::HttpJsonMetrics => {
                            let (r, m) = self
                                .with_metrics
                                .as_ref()
                                .context("no runtime with metrics was started")?;
                            (r, m)
                        }
                        _ => (&run.runtime, &self.meter),
                    };
                    let (key, m) = run.rt.block_on(measure(
                        cfg,
                        &mut self.sessions,
                        target,
                        t,
                        workload,
                        c,
                    ))?;
                    run.runtime.guard.check_alive()?;
                    run.record(key, m);
                }
            }
        }
        Ok(())
    }

    fn settings(&self, cfg: &Config, settings: &mut BTreeMap<String, Value>) {
        // With --no-runtime the layer measures nothing: no workloads, whatever the list says.
        let workloads: Vec<&str> = if cfg.runtime.no_runtime {
            Vec::new()
        } else {
            cfg.runtime.workloads.iter().map(|w| w.name()).collect()
        };
        settings.insert("workloads".to_owned(), json!(workloads));
        settings.insert(
            "grpc_channel".to_owned(),
            json!(format!("{:?}", cfg.runtime.grpc_channel)),
        );
    }
}
