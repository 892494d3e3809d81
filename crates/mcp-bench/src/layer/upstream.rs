//! This program's MCP client straight to the fixture upstream, no gateway and no runtime: the
//! reference of the breakdown and of the progress notification latency. Rows: layer `direct`,
//! transport `upstream`, one per workload and concurrency.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use anyhow::Context as _;
use serde_json::{Value, json};

use super::{Entry, Layer, measure_mcp};
use crate::client::Workload;
use crate::client::mcp::Endpoint;
use crate::proc::{CpuMeter, ProcTarget};
use crate::run::Run;

/// Straight to the upstream in the list of layers (no ratios).
pub const LAYER: Entry = Entry {
    name: "direct",
    start: |_| Ok(Box::new(Upstream)),
    ratios: &[],
};

/// The direct-to-upstream layer's options.
#[derive(Debug, Clone, clap::Args)]
pub struct UpstreamArgs {
    /// Workloads sent straight to the fixture upstream (no gateway, no runtime), comma
    /// separated; the reference of the breakdown and of the progress notification latency.
    #[arg(long, value_delimiter = ',', default_value = "echo:1k,progress", value_parser = Workload::parse)]
    pub direct_workloads: Vec<Workload>,

    /// Skip the straight-to-upstream rows.
    #[arg(long)]
    pub no_direct: bool,
}

/// The workloads measured: none with `--no-direct`.
fn workloads(cfg: &crate::bench::Config) -> &[Workload] {
    if cfg.upstream.no_direct {
        &[]
    } else {
        &cfg.upstream.direct_workloads
    }
}

/// The layer: everything it needs is in the [`Run`].
#[derive(Debug)]
struct Upstream;

impl Layer for Upstream {
    fn settings(&self, cfg: &crate::bench::Config, settings: &mut BTreeMap<String, Value>) {
        settings.insert(
            "direct_workloads".to_owned(),
            json!(workloads(cfg).iter().map(|w| w.name()).collect::<Vec<_>>()),
        );
    }

    fn round(&mut self, run: &mut Run<'_>) -> anyhow::Result<()> {
        let cfg = run.cfg;
        for &workload in workloads(cfg) {
            for &c in &cfg.concurrency {
                let meter = CpuMeter::new(vec![
                    (
                        "fixture".to_owned(),
                        ProcTarget::pid(run.fixture.guard.pid()),
                    ),
                    ("client".to_owned(), ProcTarget::this()),
                ]);
                let endpoint = Endpoint::upstream(address(&run.fixture.url)?);
                match run.rt.block_on(measure_mcp(
                    cfg,
                    &endpoint,
                    (LAYER.name, "upstream", false),
                    &meter,
                    workload,
                    c,
                )) {
                    Ok((key, m)) => run.record(key, m),
                    Err(e) => run.note(format!(
                        "{} direct {} c={c} failed: {e:#}",
                        run.tag(),
                        workload.name()
                    )),
                }
                run.fixture.guard.check_alive()?;
            }
        }
        Ok(())
    }
}

/// The `HOST:PORT` of an upstream's `http://HOST:PORT/...` URL.
fn address(url: &str) -> anyhow::Result<SocketAddr> {
    let hostport = url
        .strip_prefix("http://")
        .and_then(|r| r.split('/').next())
        .with_context(|| format!("unexpected upstream URL {url}"))?;
    hostport
        .parse()
        .with_context(|| format!("unexpected upstream address {hostport}"))
}
