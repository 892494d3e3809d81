//! The command line of `mcp-bench`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;

use crate::bench::{self, Config};
use crate::client::Stop;
use crate::layer::floor::FloorArgs;
use crate::layer::gateway::GatewayArgs;
use crate::layer::python_hop::PythonHopArgs;
use crate::layer::runtime::RuntimeArgs;
use crate::layer::state::StateArgs;
use crate::layer::upstream::UpstreamArgs;
use crate::report::Report;

/// Benchmarks of the MCP runtime and its boundaries, in layers measured in interleaved
/// rounds: the kernel floor (raw Unix socket ping-pong); a Rust client calling the runtime
/// over HTTP/JSON and gRPC; Python clients (`bench/pyhop.py`: httpx, aiohttp, grpc.aio)
/// calling the runtime; this program's MCP client straight to the upstream; and end to end
/// through the Python gateway in its three proxied modes (Python baseline, HTTP/JSON, gRPC)
/// and through the edge modes (the runtime serves the public endpoint and asks the Python core
/// over gRPC or HTTP/JSON, without and with a pre-invoke hook), with this program as the MCP
/// load generator. Starts the fixture upstream, the runtime and the
/// gateways itself. Each layer's options are its own `clap::Args` in `layer/`.
///
/// Prints progress on stderr and a Markdown table on stdout.
#[derive(Debug, Parser)]
#[command(name = "mcp-bench", version, about, long_about = None)]
pub struct Cli {
    /// The programs under test.
    #[command(flatten)]
    pub programs: ProgramArgs,

    /// Shell command that starts `@modelcontextprotocol/server-everything` in streamable HTTP
    /// mode on `$PORT` (`make node-deps` installs it; see mk/conformance.mk). Without it the
    /// `everything:` rows are skipped with a note.
    #[arg(long)]
    pub everything_cmd: Option<String>,

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

    /// Generated tools the fixture exposes besides its fixed ones (a larger `tools/list`).
    #[arg(long, default_value_t = 0)]
    pub fixture_generated_tools: usize,

    /// The floor layer.
    #[command(flatten)]
    pub floor: FloorArgs,

    /// The runtime layer.
    #[command(flatten)]
    pub runtime: RuntimeArgs,

    /// The Python-hop layer.
    #[command(flatten)]
    pub python_hop: PythonHopArgs,

    /// The state layer (memory, one and three replicas on Redis).
    #[command(flatten)]
    pub state: StateArgs,

    /// The direct-to-upstream layer.
    #[command(flatten)]
    pub upstream: UpstreamArgs,

    /// The gateway layers.
    #[command(flatten)]
    pub gateway: GatewayArgs,

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
        anyhow::ensure!(
            self.state.state_concurrency.iter().all(|&c| c > 0),
            "--state-concurrency levels must be at least 1"
        );
        let programs = self.programs.resolve()?;
        // A layer's `--no-...` flag empties the lists it measures (its other options stay,
        // for the settings of the report).
        let mut floor = self.floor;
        if floor.no_floor {
            floor.floor_payloads.clear();
        }
        let mut python_hop = self.python_hop;
        if python_hop.no_python_hop {
            python_hop.pyhop_clients.clear();
        }
        let mut gateway = self.gateway;
        if gateway.no_gateway {
            gateway.gateway_modes.clear();
            gateway.workers_workloads.clear();
        }
        let mut runtime = self.runtime;
        let mut upstream = self.upstream;
        // ContextForge beside the proxied modes only: every other layer and the edge modes off.
        if gateway.contextforge_only {
            floor.floor_payloads.clear();
            python_hop.pyhop_clients.clear();
            runtime.no_runtime = true;
            upstream.direct_workloads.clear();
            gateway.workers_workloads.clear();
            gateway.gateway_modes.retain(|m| !m.is_edge());
        }
        gateway.workers_workloads.retain(Option::is_some);
        Ok(Config {
            programs,
            everything_cmd: self.everything_cmd.filter(|c| !c.trim().is_empty()),
            stop,
            warmup: self.warmup,
            rounds: self.rounds,
            concurrency: self.concurrency,
            runtime_worker_threads: self.runtime_worker_threads,
            client_worker_threads: self.client_worker_threads,
            fixture_generated_tools: self.fixture_generated_tools,
            command_line,
            floor,
            runtime,
            python_hop,
            state: self.state,
            upstream,
            gateway,
        })
    }
}

/// Reads an earlier run's `results.json` for `--render`; the ratios are derived from the rows
/// and recomputed (JSON keeps a NaN ratio as null).
///
/// # Errors
///
/// When the file cannot be read or is not an `mcp-bench` report.
pub fn read_results(path: &Path) -> anyhow::Result<Report> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut value: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    if let Some(obj) = value.as_object_mut() {
        obj.insert("comparisons".to_owned(), serde_json::json!([]));
    }
    let mut report: Report = serde_json::from_value(value)
        .with_context(|| format!("{} is not an mcp-bench report", path.display()))?;
    report.comparisons = bench::compare(&report.rows);
    Ok(report)
}

/// The files `--out-dir` receives, in write order: `results.json`, one SVG per layer,
/// `report.md` (linking the SVGs).
///
/// # Errors
///
/// When the report cannot be encoded as JSON.
pub fn out_dir_files(report: &Report) -> anyhow::Result<Vec<(String, String)>> {
    let json = serde_json::to_string_pretty(report).context("cannot encode the report")?;
    let mut files = vec![("results.json".to_owned(), json + "\n")];
    let svgs = report.to_svgs();
    let plots: Vec<String> = svgs.iter().map(|(name, _)| name.clone()).collect();
    files.extend(svgs);
    files.push(("report.md".to_owned(), report.to_full_markdown(&plots)));
    Ok(files)
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
        Some(path) => read_results(path)?,
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
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        for (name, text) in out_dir_files(&report)? {
            let path = dir.join(name);
            std::fs::write(&path, text)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        eprintln!("mcp-bench: wrote {}", dir.display());
    }
    print!("{markdown}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The committed reference runs (`bench/results/reference`, and the gRPC settings sweep,
    /// the gateway's metrics, the runtime's tracing and the 2026 era in its subdirectories)
    /// render again to exactly their committed files: the data layout
    /// and the report code have not changed what a run says. After a change to the report
    /// code, render them again (`mcp-bench --render DIR/results.json --out-dir DIR`).
    #[test]
    fn the_reference_run_renders_to_its_committed_files() {
        let reference = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bench/results/reference");
        for dir in [
            reference.clone(),
            reference.join("grpc-settings"),
            reference.join("gateway-metrics"),
            reference.join("tracing"),
            reference.join("era2026"),
        ] {
            let report = read_results(&dir.join("results.json")).unwrap();
            let files = out_dir_files(&report).unwrap();
            assert!(files.len() >= 2, "{files:?}");
            for (name, text) in files {
                let committed = std::fs::read_to_string(dir.join(&name)).unwrap();
                assert!(
                    text == committed,
                    "{}/{name} differs from the committed run (re-render it with --render)",
                    dir.display()
                );
            }
        }
    }
}
