//! `mcp-soak`: the soak run of issue 6. See [`mcp_bench::soak`] for what it does and its
//! targets. Exits 1 when a target was missed (the report is written first), 2 on a usage
//! error.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use mcp_bench::cli;
use mcp_bench::client::abuse::AbuserConfig;
use mcp_bench::python::GatewayMode;
use mcp_bench::soak::{self, SoakConfig};

/// Mixed MCP traffic through the Python gateway in each socket mode for a fixed time; reports
/// errors, p50/p99 per window and the RSS of the gateway, the runtime and the fixture.
#[derive(Debug, Parser)]
#[command(name = "mcp-soak", version, about, long_about = None)]
struct Cli {
    /// Traffic time per mode, in seconds.
    #[arg(long, default_value_t = 600)]
    secs: u64,

    /// Length of a reporting window, in seconds.
    #[arg(long, default_value_t = 30)]
    window_secs: u64,

    /// Traffic time before the RSS reference of the growth target, in seconds.
    #[arg(long, default_value_t = 60)]
    warmup_secs: u64,

    /// Workers, each with its own connection and MCP session.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,

    /// Gateway modes, comma separated, in run order.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "http,grpc")]
    modes: Vec<GatewayMode>,

    /// The programs under test.
    #[command(flatten)]
    programs: cli::ProgramArgs,

    /// Write `soak.json` and `soak.md` into this directory (created if missing).
    #[arg(long)]
    out_dir: Option<PathBuf>,

    /// Run each mode twice: quiet, then beside an abusive subject (see `mcp_bench::soak`).
    #[arg(long)]
    abuser: bool,

    /// The abuser's sessions to open (more than the per-subject cap).
    #[arg(long, default_value_t = AbuserConfig::default().sessions, requires = "abuser")]
    abuser_sessions: usize,

    /// The abuser's GET streams to open.
    #[arg(long, default_value_t = AbuserConfig::default().streams, requires = "abuser")]
    abuser_streams: usize,

    /// The abuser's `sleep` calls to keep in flight.
    #[arg(long, default_value_t = AbuserConfig::default().inflight, requires = "abuser")]
    abuser_inflight: usize,

    /// The abuser's large `echo` calls to keep in flight.
    #[arg(long, default_value_t = AbuserConfig::default().large, requires = "abuser")]
    abuser_large: usize,

    /// Size of each of the abuser's large `echo` results, in bytes.
    #[arg(long, default_value_t = AbuserConfig::default().large_bytes, requires = "abuser")]
    abuser_large_bytes: usize,
}

fn run() -> anyhow::Result<bool> {
    let command_line: Vec<String> = std::env::args().collect();
    let cli = Cli::parse();
    anyhow::ensure!(cli.secs > 0, "--secs must be at least 1");
    anyhow::ensure!(cli.window_secs > 0, "--window-secs must be at least 1");
    anyhow::ensure!(cli.concurrency > 0, "--concurrency must be at least 1");
    let cfg = SoakConfig {
        programs: cli.programs.resolve()?,
        modes: cli.modes,
        duration: Duration::from_secs(cli.secs),
        window: Duration::from_secs(cli.window_secs),
        warmup: Duration::from_secs(cli.warmup_secs),
        concurrency: cli.concurrency,
        abuser: cli.abuser.then(|| AbuserConfig {
            sessions: cli.abuser_sessions,
            streams: cli.abuser_streams,
            inflight: cli.abuser_inflight,
            sleep_ms: AbuserConfig::default().sleep_ms,
            large: cli.abuser_large,
            large_bytes: cli.abuser_large_bytes,
        }),
    };
    let report = soak::run(&cfg, command_line)?;
    let markdown = report.to_markdown();
    if let Some(dir) = &cli.out_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let json = serde_json::to_string_pretty(&report).context("cannot encode the report")?;
        std::fs::write(dir.join("soak.json"), json + "\n")
            .with_context(|| format!("cannot write into {}", dir.display()))?;
        std::fs::write(dir.join("soak.md"), &markdown)
            .with_context(|| format!("cannot write into {}", dir.display()))?;
        eprintln!("mcp-soak: wrote {}", dir.display());
    }
    print!("{markdown}");
    Ok(report.met())
}

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("mcp-soak: a target was missed (see the report)");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("mcp-soak: {e:#}");
            ExitCode::FAILURE
        }
    }
}
