//! The command line of `mcp-bench`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;

use crate::bench::{self, Config};
use crate::client::{Stop, Workload};
use crate::layer::python_hop::{PyClient, PyWorkload};
use crate::layer::runtime::{GrpcChannel, Transport};
use crate::python::GatewayMode;

/// Benchmarks of the MCP runtime and its boundaries, in four layers measured in interleaved
/// rounds: the kernel floor (raw Unix socket ping-pong); a Rust client calling the runtime
/// over HTTP/JSON and gRPC; Python clients (`bench/pyhop.py`: httpx, aiohttp, grpc.aio)
/// calling the runtime; and end to end through the Python gateway in its three modes
/// (Python baseline, HTTP/JSON, gRPC) with this program as the MCP load generator. Starts
/// the fixture upstream, the runtime and the gateways itself.
///
/// Prints progress on stderr and a Markdown table on stdout.
#[derive(Debug, Parser)]
#[command(name = "mcp-bench", version, about, long_about = None)]
pub struct Cli {
    /// The programs under test.
    #[command(flatten)]
    pub programs: ProgramArgs,

    /// An `mcp-runtime` binary built without `grpc-uds`: adds `http-nogrpc` runtime rows (the
    /// HTTP/JSON path of that build, measured beside the default build's).
    #[arg(long)]
    pub runtime_bin_nogrpc: Option<PathBuf>,

    /// Shell command that starts `@modelcontextprotocol/server-everything` in streamable HTTP
    /// mode on `$PORT` (`make node-deps` installs it; see mk/conformance.mk). Without it the
    /// `everything:` rows are skipped with a note.
    #[arg(long)]
    pub everything_cmd: Option<String>,

    /// Workloads sent straight to the fixture upstream (no gateway, no runtime), comma
    /// separated; the reference of the breakdown and of the progress notification latency.
    #[arg(long, value_delimiter = ',', default_value = "echo:1k,progress", value_parser = Workload::parse)]
    pub direct_workloads: Vec<Workload>,

    /// Workloads of the rows through gateways with two uvicorn workers, each session used on a
    /// connection other than the one that opened it; `none` skips them.
    #[arg(long, value_delimiter = ',', default_value = "echo:100", value_parser = parse_optional_workload)]
    pub workers_workloads: Vec<Option<Workload>>,

    /// Measured requests per row and round (over all workers).
    #[arg(long, default_value_t = 2000)]
    pub requests: u64,

    /// Measure each row for this many seconds per round instead of a request count.
    #[arg(long, conflicts_with = "requests")]
    pub duration: Option<f64>,

    /// Unmeasured requests per row and round before measuring, on the same connections.
    #[arg(long, default_value_t = 200)]
    pub warmup: u64,

    /// Rounds; every row is measured once per round and reported as the median.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,

    /// Concurrency levels (workers, each with its own connection), comma separated.
    #[arg(long, value_delimiter = ',', default_value = "1,16")]
    pub concurrency: Vec<usize>,

    /// Workloads sent to the runtime, comma separated: `ping`, `tools/list:10`,
    /// `tools/list:500`, `echo:BYTES`.
    #[arg(long, value_delimiter = ',', default_value = "ping,tools/list:10,tools/list:500,echo:1k", value_parser = Workload::parse)]
    pub workloads: Vec<Workload>,

    /// Transports, comma separated, in the order of the first round (later rounds rotate);
    /// `http-nogrpc` needs `--runtime-bin-nogrpc`.
    #[arg(long, value_delimiter = ',', default_value = "http,grpc,http-nogrpc")]
    pub transports: Vec<Transport>,

    /// Message sizes of the kernel floor rows, in bytes, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "64,65536")]
    pub floor_payloads: Vec<usize>,

    /// Skip the kernel floor rows.
    #[arg(long)]
    pub no_floor: bool,

    /// Write the whole report (machine, versions, command line, every round) as JSON here.
    #[arg(long)]
    pub json_out: Option<PathBuf>,

    /// Write the Markdown table here too.
    #[arg(long)]
    pub markdown_out: Option<PathBuf>,

    /// Tokio worker threads of the runtime (its `--worker-threads`) [default: its own].
    #[arg(long)]
    pub runtime_worker_threads: Option<usize>,

    /// Tokio worker threads of this client.
    #[arg(long, default_value_t = 1)]
    pub client_worker_threads: usize,

    /// gRPC connections: one channel per worker, or one shared by all workers.
    #[arg(long, value_enum, default_value = "per-worker")]
    pub grpc_channel: GrpcChannel,

    /// Generated tools the fixture exposes besides its fixed ones (a larger `tools/list`).
    #[arg(long, default_value_t = 0)]
    pub fixture_generated_tools: usize,

    /// Skip the Rust client to runtime rows.
    #[arg(long)]
    pub no_runtime: bool,

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

    /// Skip the Python-hop rows.
    #[arg(long)]
    pub no_python_hop: bool,

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

    /// Skip the end-to-end gateway rows.
    #[arg(long)]
    pub no_gateway: bool,

    /// Highest concurrency of gateway rows with a request of 1 MiB or more.
    #[arg(long, default_value_t = 16)]
    pub big_payload_max_concurrency: usize,

    /// The Python-hop client script [default: REPO_ROOT/bench/pyhop.py].
    #[arg(long)]
    pub pyhop_script: Option<PathBuf>,

    /// Write `results.json`, `report.md` and one SVG plot per layer into this directory
    /// (created if missing).
    #[arg(long)]
    pub out_dir: Option<PathBuf>,

    /// Measure nothing: read this `results.json` of an earlier run and render it again
    /// (`report.md`, the SVGs, the summary on stdout) with this version's report code.
    #[arg(long)]
    pub render: Option<PathBuf>,
}

/// Where the programs under test are (`mcp-bench` and `mcp-soak` take the same options).
#[derive(Debug, clap::Args)]
pub struct ProgramArgs {
    /// The `mcp-runtime` binary, built with `--features grpc-uds` [default: next to this
    /// executable].
    #[arg(long)]
    pub runtime_bin: Option<PathBuf>,

    /// The `mcp-fixture-server` binary [default: next to this executable].
    #[arg(long)]
    pub fixture_bin: Option<PathBuf>,

    /// The repository root: working directory of the Python processes [default: the source
    /// tree this binary was built from].
    #[arg(long)]
    pub repo_root: Option<PathBuf>,

    /// The virtual environment's interpreter [default: REPO_ROOT/.venv/bin/python].
    #[arg(long)]
    pub python: Option<PathBuf>,
}

/// The programs under test, defaults applied.
#[derive(Debug, Clone)]
pub struct Programs {
    /// `mcp-runtime`, built with `grpc-uds`.
    pub runtime_bin: PathBuf,
    /// `mcp-fixture-server`.
    pub fixture_bin: PathBuf,
    /// The repository root (working directory of the Python processes).
    pub repo_root: PathBuf,
    /// The virtual environment's interpreter (`.venv/bin/python`).
    pub python: PathBuf,
}

impl ProgramArgs {
    /// The paths given, or their defaults.
    ///
    /// # Errors
    ///
    /// When the running executable (next to which the binaries are by default) cannot be
    /// located.
    pub fn resolve(self) -> anyhow::Result<Programs> {
        let repo_root = self.repo_root.unwrap_or_else(default_repo_root);
        Ok(Programs {
            runtime_bin: match self.runtime_bin {
                Some(p) => p,
                None => sibling("mcp-runtime")?,
            },
            fixture_bin: match self.fixture_bin {
                Some(p) => p,
                None => sibling("mcp-fixture-server")?,
            },
            python: self
                .python
                .unwrap_or_else(|| repo_root.join(".venv/bin/python")),
            repo_root,
        })
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

/// A binary next to the running executable (how cargo lays out a workspace's binaries).
///
/// # Errors
///
/// When the running executable cannot be located.
pub fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot locate the running executable")?;
    let dir = exe.parent().unwrap_or_else(|| Path::new("."));
    Ok(dir.join(name))
}

/// The source tree this binary was built from (the default repository root).
#[must_use]
pub fn default_repo_root() -> PathBuf {
    let built = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    built.canonicalize().unwrap_or(built)
}

impl Cli {
    /// The run configuration; `command_line` is recorded in the report.
    ///
    /// # Errors
    ///
    /// When default binary paths cannot be derived or a value is out of range.
    pub fn into_config(self, command_line: Vec<String>) -> anyhow::Result<Config> {
        let stop = match self.duration {
            Some(s) if s > 0.0 && s.is_finite() => Stop::Duration(Duration::from_secs_f64(s)),
            Some(s) => anyhow::bail!("--duration must be a positive number of seconds, not {s}"),
            None => Stop::Requests(self.requests),
        };
        anyhow::ensure!(self.rounds > 0, "--rounds must be at least 1");
        anyhow::ensure!(
            self.concurrency.iter().all(|&c| c > 0),
            "--concurrency levels must be at least 1"
        );
        let programs = self.programs.resolve()?;
        Ok(Config {
            runtime_bin_nogrpc: self.runtime_bin_nogrpc,
            everything_cmd: self.everything_cmd.filter(|c| !c.trim().is_empty()),
            direct_workloads: self.direct_workloads,
            workers_workloads: if self.no_gateway {
                Vec::new()
            } else {
                self.workers_workloads.into_iter().flatten().collect()
            },
            stop,
            warmup: self.warmup,
            rounds: self.rounds,
            concurrency: self.concurrency,
            workloads: self.workloads,
            transports: self.transports,
            floor_payloads: if self.no_floor {
                Vec::new()
            } else {
                self.floor_payloads
            },
            runtime_worker_threads: self.runtime_worker_threads,
            client_worker_threads: self.client_worker_threads,
            grpc_channel: self.grpc_channel,
            fixture_generated_tools: self.fixture_generated_tools,
            command_line,
            runtime_layer: !self.no_runtime,
            pyhop_script: self
                .pyhop_script
                .unwrap_or_else(|| programs.repo_root.join("bench/pyhop.py")),
            programs,
            pyhop_clients: if self.no_python_hop {
                Vec::new()
            } else {
                self.pyhop_clients
            },
            pyhop_workloads: self.pyhop_workloads,
            gateway_modes: if self.no_gateway {
                Vec::new()
            } else {
                self.gateway_modes
            },
            gateway_workloads: self.gateway_workloads,
            big_payload_max_concurrency: self.big_payload_max_concurrency,
        })
    }
}

/// Parses the command line, runs the benchmark, writes the outputs.
///
/// # Errors
///
/// When the run fails or an output file cannot be written.
pub fn main() -> anyhow::Result<()> {
    let command_line: Vec<String> = std::env::args().collect();
    let cli = Cli::parse();
    let json_out = cli.json_out.clone();
    let markdown_out = cli.markdown_out.clone();
    let out_dir = cli.out_dir.clone();
    let report = match &cli.render {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            // Ratios are derived from the rows and recomputed (JSON keeps a NaN ratio as null).
            let mut value: serde_json::Value = serde_json::from_str(&text)
                .with_context(|| format!("{} is not JSON", path.display()))?;
            if let Some(obj) = value.as_object_mut() {
                obj.insert("comparisons".to_owned(), serde_json::json!([]));
            }
            let mut report: crate::report::Report = serde_json::from_value(value)
                .with_context(|| format!("{} is not an mcp-bench report", path.display()))?;
            report.comparisons = bench::compare(&report.rows);
            report
        }
        None => bench::run(&cli.into_config(command_line)?)?,
    };
    let markdown = report.to_markdown();
    if let Some(path) = json_out {
        let json = serde_json::to_string_pretty(&report).context("cannot encode the report")?;
        std::fs::write(&path, json + "\n")
            .with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!("mcp-bench: wrote {}", path.display());
    }
    if let Some(path) = markdown_out {
        std::fs::write(&path, &markdown)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if let Some(dir) = out_dir {
        let write = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))
        };
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let json = serde_json::to_string_pretty(&report).context("cannot encode the report")?;
        write("results.json", &(json + "\n"))?;
        let mut plots = Vec::new();
        for (name, svg) in report.to_svgs() {
            write(&name, &svg)?;
            plots.push(name);
        }
        write("report.md", &report.to_full_markdown(&plots))?;
        eprintln!("mcp-bench: wrote {}", dir.display());
    }
    print!("{markdown}");
    Ok(())
}
