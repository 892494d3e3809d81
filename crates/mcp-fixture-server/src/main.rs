//! `mcp-fixture-server`: the fixture as a process, for tests and benchmarks that spawn it.
//!
//! Binds the listener, prints `MCP_FIXTURE_URL=http://ADDR/mcp` as the only line on
//! stdout (so a parent process can read the port), logs to stderr, and exits cleanly on
//! SIGTERM or SIGINT.

use std::{
    io::{IsTerminal, Write},
    net::SocketAddr,
};

use anyhow::Context;
use clap::Parser;
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

/// Upstream MCP server (streamable HTTP) for tests and benchmarks.
#[derive(Debug, Parser)]
#[command(name = "mcp-fixture-server", version, about)]
struct Cli {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, env = "MCP_FIXTURE_LISTEN", default_value = "127.0.0.1:0")]
    listen: SocketAddr,

    /// Number of generated tools (gen_0000 ..) to expose besides the fixed ones.
    #[arg(long, env = "MCP_FIXTURE_GENERATED_TOOLS", default_value_t = 0)]
    generated_tools: usize,

    /// Also serve the conformance catalog (`test_*` tools, `test://` resources, `test_*`
    /// prompts) that the MCP conformance suite's server scenarios call.
    #[arg(long, env = "MCP_FIXTURE_CONFORMANCE")]
    conformance: bool,

    /// Also serve `add_tool {name}` and `remove_tool {name}`, which change the tool list at
    /// run time and send `notifications/tools/list_changed` to every session.
    #[arg(long, env = "MCP_FIXTURE_DYNAMIC_TOOLS")]
    dynamic_tools: bool,

    /// Answer 401 to every request without this header, `NAME=VALUE` (an upstream that needs
    /// credentials; give it through the environment to keep the value off the command line).
    #[arg(long, env = "MCP_FIXTURE_REQUIRE_HEADER", value_parser = name_value, hide_env_values = true)]
    require_header: Option<(String, String)>,

    /// Make each `resources/subscribe` wait this long (milliseconds) before it takes effect
    /// and is answered: a subscribe long enough on its way for its caller to leave meanwhile.
    #[arg(long, env = "MCP_FIXTURE_SUBSCRIBE_DELAY_MS", default_value_t = 0)]
    subscribe_delay_ms: u64,
}

fn name_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .filter(|(n, v)| !n.is_empty() && !v.is_empty())
        .map(|(n, v)| (n.to_owned(), v.to_owned()))
        .ok_or_else(|| "expected NAME=VALUE".to_owned())
}

/// Log filter used when `RUST_LOG` is not set.
const DEFAULT_LOG: &str = "info,rmcp=warn";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // rmcp logs every notification at info; keep it quiet by default so benchmark runs
    // do not pay for per-message logging. RUST_LOG overrides.
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();

    let listener = TcpListener::bind(cli.listen)
        .await
        .with_context(|| format!("cannot listen on {}", cli.listen))?;
    let addr = listener
        .local_addr()
        .context("cannot read the bound address")?;
    {
        let mut stdout = std::io::stdout().lock();
        writeln!(
            stdout,
            "MCP_FIXTURE_URL={}",
            mcp_fixture_server::mcp_url(addr)
        )?;
        stdout.flush()?;
    }

    let mut state = mcp_fixture_server::SharedState::new(cli.generated_tools);
    if cli.conformance {
        state = state.with_conformance();
    }
    if cli.dynamic_tools {
        state = state.with_dynamic_tools();
    }
    if cli.subscribe_delay_ms > 0 {
        state =
            state.with_subscribe_delay(std::time::Duration::from_millis(cli.subscribe_delay_ms));
    }
    if let Some((name, value)) = &cli.require_header {
        state = state.with_required_header(name, value);
    }
    mcp_fixture_server::serve_state(listener, state, shutdown_signal())
        .await
        .context("server failed")?;
    tracing::info!("stopped");
    Ok(())
}

/// Completes on the first SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot watch SIGTERM; only SIGINT stops the server");
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}
