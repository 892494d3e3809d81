//! One benchmark run: start the shared processes and every layer, measure every layer's rows
//! in interleaved rounds, stop the processes, and assemble the [`Report`].
//!
//! Within a round the layers come in the order of [`LAYERS`], and within a layer the modes
//! (transports, clients, gateway modes) one after the other, their order rotating every round
//! so none always runs on a warmer machine. Each row gets fresh connections, a warm-up phase,
//! then a measured phase bracketed by CPU samples of every process.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::cli::Programs;
use crate::client::Stop;
use crate::harness;
use crate::layer::floor::FloorArgs;
use crate::layer::gateway::GatewayArgs;
use crate::layer::python_hop::PythonHopArgs;
use crate::layer::runtime::RuntimeArgs;
use crate::layer::state::StateArgs;
use crate::layer::upstream::UpstreamArgs;
use crate::layer::{LAYERS, Layer};
use crate::proc::MachineInfo;
use crate::report::{Comparison, Report, Row, SCHEMA};
use crate::run::Run;

/// Everything a run needs to know.
#[derive(Debug, Clone)]
pub struct Config {
    /// The runtime (built with `grpc-uds`), the fixture, the repository and its `.venv`.
    pub programs: Programs,
    /// Shell command starting `@modelcontextprotocol/server-everything` in streamable HTTP
    /// mode on `$PORT`; `None` skips the third-party rows.
    pub everything_cmd: Option<String>,
    /// When each measured phase ends.
    pub stop: Stop,
    /// Requests per row and round before measuring.
    pub warmup: u64,
    /// Rounds; each measures every row once.
    pub rounds: usize,
    /// Concurrency levels.
    pub concurrency: Vec<usize>,
    /// `--worker-threads` of the runtime; `None` keeps its default.
    pub runtime_worker_threads: Option<usize>,
    /// Tokio worker threads of the bench's own client runtime.
    pub client_worker_threads: usize,
    /// `--generated-tools` of the fixture (a larger `tools/list`).
    pub fixture_generated_tools: usize,
    /// The command line, recorded in the report.
    pub command_line: Vec<String>,
    /// The floor layer's options (`--no-floor` applied: no payloads).
    pub floor: FloorArgs,
    /// The runtime layer's options.
    pub runtime: RuntimeArgs,
    /// The Python-hop layer's options (`--no-python-hop` applied: no clients).
    pub python_hop: PythonHopArgs,
    /// The state layer's options (`--no-state` skips it).
    pub state: StateArgs,
    /// The direct-to-upstream layer's options.
    pub upstream: UpstreamArgs,
    /// The gateway layers' options (`--no-gateway` applied: no modes and no two-worker
    /// workloads; `none` removed from those).
    pub gateway: GatewayArgs,
}

/// Runs the benchmark described by `cfg`.
///
/// # Errors
///
/// When a process cannot be started, a session cannot be opened, the floor fails, or a
/// process under test dies during the run. Errors of single requests are counted, not
/// returned.
pub fn run(cfg: &Config) -> anyhow::Result<Report> {
    let started_unix_s = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let machine = MachineInfo::collect();
    let mut run = Run::start(cfg)?;
    let mut layers = Vec::with_capacity(LAYERS.len());
    for entry in LAYERS {
        layers.push((entry.start)(&mut run)?);
    }
    for round in 0..cfg.rounds {
        run.round = round;
        for layer in &mut layers {
            layer.round(&mut run)?;
        }
    }
    run.fixture.guard.check_alive()?;
    for layer in &layers {
        layer.finish(&mut run);
    }
    let rows = run.take_rows();
    let comparisons = compare(&rows);

    let versions = versions(cfg, &run);
    let settings = settings(cfg, &run, &machine, &layers);

    // Stop the layers' processes (the gateways first), then the shared ones: the runtime
    // before the upstreams it holds connections to.
    while let Some(layer) = layers.pop() {
        drop(layer);
    }
    let notes = std::mem::take(&mut run.notes);
    let revocations = std::mem::take(&mut run.revocations);
    let commands = std::mem::take(&mut run.commands);
    drop(run);
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
        revocations,
    })
}

/// The versions of the programs involved: this one, the runtime (and its contract and
/// features, from its health answer), the fixture, the Python packages when probed.
fn versions(cfg: &Config, run: &Run<'_>) -> BTreeMap<String, String> {
    let mut versions = BTreeMap::new();
    versions.insert("mcp-bench".to_owned(), env!("CARGO_PKG_VERSION").to_owned());
    versions.insert(
        "mcp-runtime".to_owned(),
        harness::version_of(&cfg.programs.runtime_bin),
    );
    versions.insert(
        "mcp-fixture-server".to_owned(),
        harness::version_of(&cfg.programs.fixture_bin),
    );
    let health = &run.runtime.health;
    if let Some(v) = health.get("contract_version").and_then(|v| v.as_str()) {
        versions.insert("contract".to_owned(), v.to_owned());
    }
    if let Some(f) = health.get("features").and_then(|v| v.as_array()) {
        let names: Vec<&str> = f.iter().filter_map(|v| v.as_str()).collect();
        versions.insert("runtime features".to_owned(), names.join(","));
    }
    if let Some(env) = run.python_probed() {
        for (k, v) in &env.versions {
            versions.insert(format!("python: {k}"), v.clone());
        }
    }
    versions
}

/// The settings of the run: the general ones, then each layer's.
fn settings(
    cfg: &Config,
    run: &Run<'_>,
    machine: &MachineInfo,
    layers: &[Box<dyn Layer>],
) -> BTreeMap<String, Value> {
    let upstream = if run.everything.is_some() {
        "mcp-fixture-server for every row except `tools/call echo (server-everything)` (@modelcontextprotocol/server-everything) and `tools/list (500 tools)` (a second mcp-fixture-server process with 500 generated tools)"
    } else {
        "mcp-fixture-server for every row (`tools/list (500 tools)`: a second process with 500 generated tools); no third-party upstream in this run"
    };
    let mut settings = command_line_settings(cfg);
    let more: BTreeMap<String, Value> = [
        (
            "runtime_worker_threads_effective",
            json!(cfg.runtime_worker_threads.unwrap_or(machine.nproc)),
        ),
        ("runtime_threads_at_start", json!(run.runtime_threads)),
        (
            "runtime_quota_args",
            json!(crate::harness::BENCH_QUOTA_ARGS.join(" ")),
        ),
        ("upstream", json!(upstream)),
        ("builds", build_info(cfg)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    settings.extend(more);
    for layer in layers {
        layer.settings(cfg, &mut settings);
    }
    settings
}

/// The general settings taken from the command line as parsed into `cfg` (defaults applied):
/// rounds, the stop rule (`requests_per_round` or `duration_s_per_round`, in seconds),
/// `warmup_requests`, the `concurrency` levels and the thread and tool counts.
#[must_use]
pub fn command_line_settings(cfg: &Config) -> BTreeMap<String, Value> {
    let stop = match cfg.stop {
        Stop::Requests(n) => ("requests_per_round", json!(n)),
        Stop::Duration(d) => ("duration_s_per_round", json!(d.as_secs_f64())),
    };
    [
        ("rounds", json!(cfg.rounds)),
        stop,
        ("warmup_requests", json!(cfg.warmup)),
        ("concurrency", json!(cfg.concurrency)),
        ("runtime_worker_threads", json!(cfg.runtime_worker_threads)),
        ("client_worker_threads", json!(cfg.client_worker_threads)),
        (
            "fixture_generated_tools",
            json!(cfg.fixture_generated_tools),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// The ratios the layers declare in [`LAYERS`], each computed round by round between rows of
/// the same layer, workload, payload and concurrency:
///
/// - runtime: gRPC / HTTP/JSON (Rust clients), and HTTP/JSON of the `grpc-uds` build / of the
///   build without it;
/// - python-hop: grpc.aio / httpx and aiohttp / httpx;
/// - gateway: gRPC / HTTP/JSON, gRPC / Python baseline, HTTP/JSON / Python baseline, and for
///   the edge modes: each over the proxied gRPC mode, gRPC over HTTP/JSON callbacks (without
///   and with the hook), and each with the hook over itself without; each of our proxied and
///   edge modes over ContextForge (stateless and stateful), and its stateful over stateless;
///
/// and in any layer, a variant of a mode (`MODE@NAME`, such as the runtime layer's
/// `grpc@adaptive-window`) over the mode itself.
#[must_use]
pub fn compare(rows: &[Row]) -> Vec<Comparison> {
    let mut out = Vec::new();
    let pairs = LAYERS
        .iter()
        .flat_map(|l| l.ratios.iter().map(|&(n, d)| (l.name, n, d)));
    let denominator = |n: &Row, layer: &str, den: &str| {
        rows.iter().find(|d| {
            d.key.layer == layer
                && d.key.mode() == den
                && d.key.workload == n.key.workload
                && d.key.concurrency == n.key.concurrency
                && d.key.payload_bytes == n.key.payload_bytes
        })
    };
    for (layer, num, den) in pairs {
        for n in rows
            .iter()
            .filter(|r| r.key.layer == layer && r.key.mode() == num)
        {
            if let Some(d) = denominator(n, layer, den) {
                out.push(Comparison::between(n, d));
            }
        }
    }
    for n in rows {
        let mode = n.key.mode();
        if let Some((base, _)) = mode.split_once('@')
            && let Some(d) = denominator(n, &n.key.layer, base)
        {
            out.push(Comparison::between(n, d));
        }
    }
    out
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
            .current_dir(&cfg.programs.repo_root)
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
            "binary": cfg.programs.runtime_bin.display().to_string(),
            "binary_bytes": size(&cfg.programs.runtime_bin),
            "stripped_bytes": stripped(&cfg.programs.runtime_bin),
            "dependencies": deps(&["--features", "grpc-uds"]),
        }),
    );
    b.insert(
        "without grpc-uds (default)".to_owned(),
        json!({
            "binary": cfg.runtime.runtime_bin_nogrpc.as_ref().map(|p| p.display().to_string()),
            "binary_bytes": cfg.runtime.runtime_bin_nogrpc.as_deref().and_then(size),
            "stripped_bytes": cfg.runtime.runtime_bin_nogrpc.as_deref().and_then(stripped),
            "dependencies": deps(&[]),
        }),
    );
    serde_json::Value::Object(b)
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::cli::Cli;

    fn header(args: &[&str]) -> String {
        let cli = Cli::try_parse_from(
            ["mcp-bench", "--runtime-bin", "rt", "--fixture-bin", "fx"]
                .iter()
                .chain(args),
        )
        .unwrap();
        let cfg = cli
            .into_config(args.iter().map(ToString::to_string).collect())
            .unwrap();
        Report {
            schema: SCHEMA.into(),
            started_unix_s: 0,
            command_line: cfg.command_line.clone(),
            machine: MachineInfo::collect(),
            versions: BTreeMap::new(),
            settings: command_line_settings(&cfg),
            commands: BTreeMap::new(),
            notes: vec![],
            rows: vec![],
            comparisons: vec![],
            revocations: vec![],
        }
        .to_markdown()
    }

    /// The report's header states the rounds, stop rule, warm-up and concurrency the command
    /// line gave, not the defaults.
    #[test]
    fn the_header_states_the_command_line_settings() {
        let md = header(&[
            "--duration",
            "2.5",
            "--rounds",
            "5",
            "--warmup",
            "50",
            "--concurrency",
            "4,8",
        ]);
        assert!(
            md.contains("5 rounds (`--rounds`); each row measured for 2.5 s per round (`--duration`) after 50 warm-up requests"),
            "{md}"
        );
        assert!(md.contains("concurrency 4, 8 (`--concurrency`)"), "{md}");
        assert!(
            md.contains("Command line: `--duration 2.5 --rounds 5 --warmup 50 --concurrency 4,8`"),
            "{md}"
        );
        let md = header(&["--requests", "300"]);
        assert!(
            md.contains("3 rounds (`--rounds`); each row measured for 300 requests per round (`--requests`; rows of 1 MiB and more at most 8 per worker) after 200 warm-up requests"),
            "{md}"
        );
        assert!(md.contains("concurrency 1, 16 (`--concurrency`)"), "{md}");
    }
}
