//! A Rust client straight to the runtime over each adapter: hyper over the HTTP/JSON socket,
//! tonic over the gRPC socket, and hyper to a second runtime process built without the
//! `grpc-uds` feature (what compiling the adapter in costs the default path), and hyper to a
//! third runtime process of the default build with its metrics on (`--metrics-listen`: what
//! recording the Prometheus metrics costs the hot path), and hyper to a fourth with its
//! OpenTelemetry traces exported over OTLP/HTTP to a sink in this process (`OTEL_*`: what
//! tracing every request costs), and tonic to runtimes started with
//! other gRPC server settings (`--grpc-variant`: mode `grpc@NAME`, compared with `grpc`).
//! Rows: layer `runtime`, one per workload, concurrency and mode, the mode order rotating
//! every round; each row gets fresh connections on one session per mode and scope.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

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
        ("http-json-traced", "http-json"),
        ("http-json-sampled", "http-json"),
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
    /// the default build started with `--metrics-listen`; `http-traced` is HTTP/JSON to a
    /// runtime of the default build exporting its traces (`OTEL_EXPORTER_OTLP_ENDPOINT`), and
    /// `http-sampled` the same sampling 1% of the traces it starts.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "http,grpc,http-nogrpc,http-metrics,http-traced"
    )]
    pub transports: Vec<Transport>,

    /// An `mcp-runtime` binary built without `grpc-uds`: adds `http-nogrpc` runtime rows (the
    /// HTTP/JSON path of that build, measured beside the default build's).
    #[arg(long)]
    pub runtime_bin_nogrpc: Option<PathBuf>,

    /// gRPC connections: one channel per worker, or one shared by all workers.
    #[arg(long, value_enum, default_value = "per-worker")]
    pub grpc_channel: GrpcChannel,

    /// More gRPC rows, each `NAME=FLAGS`: tonic to a runtime of the default build started
    /// with the runtime flags FLAGS (split on spaces, e.g.
    /// `adaptive=--grpc-adaptive-window`), mode `grpc@NAME`, compared with `grpc` in the same
    /// rounds. The flag `client:shared-channel` is this client's, not the runtime's: all
    /// workers share one channel (one HTTP/2 connection); a variant with no runtime flags uses
    /// the runtime the `grpc` rows use. Repeatable.
    #[arg(long = "grpc-variant", value_parser = GrpcVariant::parse)]
    pub grpc_variants: Vec<GrpcVariant>,

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
    /// HTTP/1.1 + JSON to a runtime process of the default build with OpenTelemetry tracing
    /// on (`OTEL_EXPORTER_OTLP_ENDPOINT` set to a sink in the bench process, every request
    /// sampled, spans batched and exported over OTLP/HTTP): what tracing costs per request.
    /// A build without the `otel` feature exports nothing (the report says so).
    #[value(name = "http-traced")]
    HttpJsonTraced,
    /// As `http-traced`, but the runtime starts a trace for 1% of the requests
    /// (`OTEL_TRACES_SAMPLER=parentbased_traceidratio`, `OTEL_TRACES_SAMPLER_ARG=0.01`, the
    /// OpenTelemetry SDK environment variables): what an operator who samples pays.
    #[value(name = "http-sampled")]
    HttpJsonSampled,
}

impl Transport {
    /// Name in reports: `http-json`, `grpc`, `http-json-nogrpc`, `http-json-metrics` or
    /// `http-json-traced`, `http-json-sampled`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::HttpJson => "http-json",
            Self::Grpc => "grpc",
            Self::HttpJsonNoGrpc => "http-json-nogrpc",
            Self::HttpJsonMetrics => "http-json-metrics",
            Self::HttpJsonTraced => "http-json-traced",
            Self::HttpJsonSampled => "http-json-sampled",
        }
    }
}

/// A gRPC row variant (`--grpc-variant NAME=FLAGS`): other server settings, or the shared
/// channel on the client side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcVariant {
    /// The name after `grpc@` in the row's mode.
    pub name: String,
    /// Flags added to the runtime's command line (none: the `grpc` rows' runtime).
    pub runtime_flags: Vec<String>,
    /// How the workers share connections.
    pub channel: GrpcChannel,
}

impl GrpcVariant {
    /// The client flag that makes all workers share one channel.
    const SHARED: &'static str = "client:shared-channel";

    /// Parses `NAME=FLAGS`.
    ///
    /// # Errors
    ///
    /// Without `=`, with an empty name or one other than letters, digits, `-` and `_`, or
    /// with a `client:` flag other than `client:shared-channel`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (name, flags) = s
            .split_once('=')
            .ok_or_else(|| format!("`{s}` is not NAME=FLAGS"))?;
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(format!(
                "variant name `{name}`: letters, digits, `-` and `_` only"
            ));
        }
        let mut channel = GrpcChannel::PerWorker;
        let mut runtime_flags = Vec::new();
        for flag in flags.split_whitespace() {
            if flag == Self::SHARED {
                channel = GrpcChannel::Shared;
            } else if flag.starts_with("client:") {
                return Err(format!(
                    "unknown client flag `{flag}` (only `{}`)",
                    Self::SHARED
                ));
            } else {
                runtime_flags.push(flag.to_owned());
            }
        }
        Ok(Self {
            name: name.to_owned(),
            runtime_flags,
            channel,
        })
    }

    /// The row's mode: `grpc@NAME`.
    #[must_use]
    pub fn mode(&self) -> String {
        format!("grpc@{}", self.name)
    }

    /// The flags as given, for the report's settings.
    #[must_use]
    pub fn flags(&self) -> String {
        let mut f = self.runtime_flags.clone();
        if self.channel == GrpcChannel::Shared {
            f.push(Self::SHARED.to_owned());
        }
        f.join(" ")
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
/// its meter) when measured, the gRPC variants with their runtimes, and the sessions opened
/// so far.
#[derive(Debug)]
struct RuntimeLayer {
    transports: Vec<Transport>,
    meter: CpuMeter,
    nogrpc: Option<(RuntimeProcess, CpuMeter)>,
    /// The runtime with `--metrics-listen`, when its rows are measured.
    with_metrics: Option<(RuntimeProcess, CpuMeter)>,
    /// The runtimes exporting their traces (`http-traced`, `http-sampled`), and the sink
    /// they export to, when their rows are measured.
    traced: Vec<(Transport, RuntimeProcess, CpuMeter)>,
    sink: Option<harness::OtlpSink>,
    /// Each `--grpc-variant` with its own runtime (none when it has no runtime flags).
    variants: Vec<(GrpcVariant, Option<(RuntimeProcess, CpuMeter)>)>,
    sessions: Sessions,
}

/// The session of each mode and scope, opened on first use.
type Sessions = HashMap<(String, Option<&'static str>), String>;

/// One mode of the layer's rows: a transport, or a gRPC variant (its index).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Transport(Transport),
    Variant(usize),
}

/// What a row is measured with: its mode's name, client and connections.
#[derive(Debug)]
struct RowSpec {
    mode: String,
    /// `None` for HTTP/JSON (hyper), else how the tonic workers share channels.
    grpc: Option<GrpcChannel>,
}

impl RowSpec {
    fn client(&self) -> &'static str {
        match self.grpc {
            None => "hyper",
            Some(GrpcChannel::PerWorker) => "tonic",
            Some(GrpcChannel::Shared) => "tonic (shared channel)",
        }
    }
}

impl RuntimeLayer {
    /// Starts the runtime built without `grpc-uds` when its rows are asked for and its binary
    /// is given (else drops those rows, with a note), the runtime with metrics, and one
    /// runtime per gRPC variant with runtime flags.
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
        let tracing: Vec<Transport> = [Transport::HttpJsonTraced, Transport::HttpJsonSampled]
            .into_iter()
            .filter(|t| transports.contains(t))
            .collect();
        let sink = if tracing.is_empty() {
            None
        } else {
            Some(run.rt.block_on(harness::start_otlp_sink())?)
        };
        let mut traced = Vec::new();
        for (t, sink) in tracing.iter().filter_map(|t| Some((t, sink.as_ref()?))) {
            let mut env = vec![
                ("OTEL_EXPORTER_OTLP_ENDPOINT", sink.endpoint.as_str()),
                ("OTEL_SERVICE_NAME", "mcp-runtime-bench"),
            ];
            if *t == Transport::HttpJsonSampled {
                env.extend([
                    ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
                    ("OTEL_TRACES_SAMPLER_ARG", "0.01"),
                ]);
            }
            let r = run.rt.block_on(harness::start_runtime_with(
                &cfg.programs.runtime_bin,
                run.dir(),
                &format!("runtime-{}", t.name()),
                &run.runtime.catalog,
                cfg.runtime_worker_threads,
                &harness::Launch {
                    grpc: false,
                    args: &harness::BENCH_QUOTA_ARGS,
                    env: &env,
                },
            ))?;
            progress(format_args!(
                "runtime for {} exporting traces to {} ready (pid {})",
                t.name(),
                sink.endpoint,
                r.guard.pid()
            ));
            run.commands
                .insert(format!("runtime ({})", t.name()), r.command.clone());
            traced.push((*t, r));
        }
        let mut variants = Vec::with_capacity(cfg.runtime.grpc_variants.len());
        for v in &cfg.runtime.grpc_variants {
            let process = if v.runtime_flags.is_empty() {
                None
            } else {
                let mut args: Vec<&str> = harness::BENCH_QUOTA_ARGS.to_vec();
                args.extend(v.runtime_flags.iter().map(String::as_str));
                let r = run.rt.block_on(harness::start_runtime(
                    &cfg.programs.runtime_bin,
                    run.dir(),
                    &format!("runtime-grpc-{}", v.name),
                    &run.runtime.catalog,
                    cfg.runtime_worker_threads,
                    true,
                    &args,
                ))?;
                progress(format_args!(
                    "runtime for {} ({}) ready (pid {})",
                    v.mode(),
                    v.flags(),
                    r.guard.pid()
                ));
                run.commands
                    .insert(format!("runtime ({})", v.mode()), r.command.clone());
                Some(r)
            };
            variants.push((v.clone(), process));
        }
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
        let with_meter = |r: RuntimeProcess| {
            let m = meter_of(&r);
            (r, m)
        };
        Ok(Self {
            transports,
            meter: meter_of(&run.runtime),
            nogrpc: nogrpc.map(with_meter),
            with_metrics: with_metrics.map(with_meter),
            traced: traced
                .into_iter()
                .map(|(t, r)| {
                    let m = meter_of(&r);
                    (t, r, m)
                })
                .collect(),
            sink,
            variants: variants
                .into_iter()
                .map(|(v, r)| (v, r.map(with_meter)))
                .collect(),
            sessions: HashMap::new(),
        })
    }

    /// The layer's modes in the order of the first round: the transports, then the variants.
    fn modes(&self) -> Vec<Mode> {
        self.transports
            .iter()
            .map(|&t| Mode::Transport(t))
            .chain((0..self.variants.len()).map(Mode::Variant))
            .collect()
    }

    /// The row spec of `mode` and the runtime (with its meter) it is measured against.
    fn target<'a>(
        &'a self,
        shared: &'a RuntimeProcess,
        mode: Mode,
        channel: GrpcChannel,
    ) -> anyhow::Result<(RowSpec, &'a RuntimeProcess, &'a CpuMeter)> {
        let main = (shared, &self.meter);
        let (spec, (runtime, meter)) = match mode {
            Mode::Transport(t) => {
                let target = match t {
                    Transport::HttpJsonNoGrpc => self
                        .nogrpc
                        .as_ref()
                        .map(|(r, m)| (r, m))
                        .context("no runtime built without grpc-uds was given")?,
                    Transport::HttpJsonMetrics => self
                        .with_metrics
                        .as_ref()
                        .map(|(r, m)| (r, m))
                        .context("no runtime with metrics was started")?,
                    Transport::HttpJsonTraced | Transport::HttpJsonSampled => self
                        .traced
                        .iter()
                        .find(|(traced, _, _)| *traced == t)
                        .map(|(_, r, m)| (r, m))
                        .context("no runtime with tracing was started")?,
                    _ => main,
                };
                let grpc = (t == Transport::Grpc).then_some(channel);
                (
                    RowSpec {
                        mode: t.name().to_owned(),
                        grpc,
                    },
                    target,
                )
            }
            Mode::Variant(i) => {
                let (v, process) = &self.variants[i];
                (
                    RowSpec {
                        mode: v.mode(),
                        grpc: Some(v.channel),
                    },
                    process.as_ref().map_or(main, |(r, m)| (r, m)),
                )
            }
        };
        Ok((spec, runtime, meter))
    }
}

/// Measures one row against `runtime`: fresh workers, warm-up, then the measured phase.
async fn measure(
    cfg: &Config,
    sessions: &mut Sessions,
    (runtime, meter): (&RuntimeProcess, &CpuMeter),
    spec: RowSpec,
    workload: Workload,
    concurrency: usize,
) -> anyhow::Result<(RowKey, Metrics)> {
    let key = RowKey {
        layer: LAYER.name.to_owned(),
        transport: spec.mode.clone(),
        client: spec.client().to_owned(),
        workload: workload.name().to_owned(),
        concurrency,
        payload_bytes: workload.body(1).len(),
    };
    let socket = if spec.grpc.is_some() {
        runtime
            .grpc_socket
            .as_deref()
            .context("the runtime was started without its gRPC socket")?
    } else {
        &runtime.http_socket
    };
    let session_key = (spec.mode.clone(), workload.scope());
    let session = match sessions.get(&session_key) {
        Some(s) => s.clone(),
        None => {
            let s = match spec.grpc {
                Some(_) => client::grpc::initialize(socket, workload.scope()).await?,
                None => client::http::initialize(socket, workload.scope()).await?,
            };
            sessions.insert(session_key, s.clone());
            s
        }
    };
    let mut workers = Vec::with_capacity(concurrency);
    let shared = match spec.grpc {
        Some(GrpcChannel::Shared) => Some(client::grpc::connect(socket).await?),
        _ => None,
    };
    for _ in 0..concurrency.max(1) {
        workers.push(match spec.grpc {
            None => Worker::Http(client::http::HttpWorker::connect(socket, &session).await?),
            Some(_) => {
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

impl Layer for RuntimeLayer {
    fn round(&mut self, run: &mut Run<'_>) -> anyhow::Result<()> {
        let cfg = run.cfg;
        if cfg.runtime.no_runtime {
            return Ok(());
        }
        for &workload in &cfg.runtime.workloads {
            for &c in &cfg.concurrency {
                for mode in rotated(&self.modes(), run.round) {
                    let mut sessions = std::mem::take(&mut self.sessions);
                    let (spec, runtime, meter) =
                        self.target(&run.runtime, mode, cfg.runtime.grpc_channel)?;
                    let measured = run.rt.block_on(measure(
                        cfg,
                        &mut sessions,
                        (runtime, meter),
                        spec,
                        workload,
                        c,
                    ));
                    self.sessions = sessions;
                    let (key, m) = measured?;
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
        if !cfg.runtime.grpc_variants.is_empty() {
            let variants: BTreeMap<String, String> = cfg
                .runtime
                .grpc_variants
                .iter()
                .map(|v| (v.mode(), v.flags()))
                .collect();
            settings.insert("grpc_variants".to_owned(), json!(variants));
        }
        if let Some(sink) = &self.sink {
            use std::sync::atomic::Ordering;
            // Spans still batched in the runtime when the rounds end are not counted.
            settings.insert(
                "otlp_sink".to_owned(),
                json!({
                    "export_requests": sink.requests.load(Ordering::Relaxed),
                    "bytes": sink.bytes.load(Ordering::Relaxed),
                }),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grpc_variant_is_a_name_and_runtime_flags_with_client_flags_apart() {
        let v = GrpcVariant::parse(
            "windows=--grpc-initial-stream-window-size 65535  client:shared-channel",
        )
        .unwrap();
        assert_eq!(v.name, "windows");
        assert_eq!(
            v.runtime_flags,
            ["--grpc-initial-stream-window-size", "65535"]
        );
        assert_eq!(v.channel, GrpcChannel::Shared);
        assert_eq!(v.mode(), "grpc@windows");
        assert_eq!(
            v.flags(),
            "--grpc-initial-stream-window-size 65535 client:shared-channel"
        );
        let plain = GrpcVariant::parse("default=").unwrap();
        assert!(plain.runtime_flags.is_empty());
        assert_eq!(plain.channel, GrpcChannel::PerWorker);
    }

    #[test]
    fn a_bad_grpc_variant_is_refused_with_the_reason() {
        for (spec, reason) in [
            ("--grpc-adaptive-window", "is not NAME=FLAGS"),
            ("=--grpc-adaptive-window", "letters, digits"),
            ("a@b=--grpc-adaptive-window", "letters, digits"),
            (
                "x=client:one-channel",
                "unknown client flag `client:one-channel`",
            ),
        ] {
            let err = GrpcVariant::parse(spec).unwrap_err();
            assert!(err.contains(reason), "{spec}: {err}");
        }
    }
}
