//! What the layers of one run share ([`Run`]): the configuration, the client's async
//! runtime, the processes every layer measures against (the fixture upstreams and the
//! runtime), the Python environment, and what the report collects (rows in first-measured
//! order with their rounds, notes, commands).

use std::collections::{BTreeMap, HashMap};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context as _;

use crate::bench::Config;
use crate::client;
use crate::harness::{self, Fixture, RuntimeProcess};
use crate::layer::python_hop::PyClient;
use crate::layer::runtime::Transport;
use crate::proc::ProcTarget;
use crate::python::{GatewayMode, PythonEnv};
use crate::report::{Metrics, Row, RowKey};

/// What the layers of a run share: the configuration, the client's async runtime, the
/// processes every layer measures against, the Python environment, and what the report
/// collects (rows, notes, commands).
///
/// Fields drop in declaration order: the runtime before the upstreams it holds connections
/// to, the work directory last.
#[derive(Debug)]
pub struct Run<'a> {
    /// The run's configuration.
    pub cfg: &'a Config,
    /// The runtime under test (built with `grpc-uds`).
    pub runtime: RuntimeProcess,
    /// The fixture upstream of every row but `tools/list (500 tools)` and server-everything's.
    pub fixture: Fixture,
    /// The second fixture, with 500 generated tools.
    pub big: Fixture,
    /// `@modelcontextprotocol/server-everything`, when it was asked for and started.
    pub everything: Option<Fixture>,
    /// Threads of the runtime right after its start.
    pub runtime_threads: Option<u64>,
    /// The round being measured (from 0).
    pub round: usize,
    /// What was skipped or failed, in order.
    pub notes: Vec<String>,
    /// The command of every process, by role.
    pub commands: BTreeMap<String, String>,
    /// Revocation latency of the edge modes (measured by the gateway layer after its rounds).
    pub revocations: Vec<crate::report::Revocation>,
    python: Option<Option<PythonEnv>>,
    gateway_auth: Option<(String, String)>,
    order: Vec<RowKey>,
    rounds: HashMap<RowKey, Vec<Metrics>>,
    /// The client's async runtime.
    pub rt: tokio::runtime::Runtime,
    dir: tempfile::TempDir,
}

impl<'a> Run<'a> {
    /// Starts the shared processes: the fixture, the 500-tool fixture, server-everything
    /// when a command is given, and the runtime serving all of them (with its gRPC socket
    /// when a layer uses it).
    ///
    /// # Errors
    ///
    /// When a fixture or the runtime cannot be started (server-everything only adds a note).
    pub fn start(cfg: &'a Config) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("mcp-bench-")
            .tempdir()
            .context("cannot create a work directory")?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cfg.client_worker_threads.max(1))
            .enable_all()
            .build()
            .context("cannot start the client's async runtime")?;
        let mut notes: Vec<String> = Vec::new();
        let mut commands: BTreeMap<String, String> = BTreeMap::new();
        commands.insert("mcp-bench".to_owned(), cfg.command_line.join(" "));

        let generated = cfg.fixture_generated_tools.max(harness::TOOLS10.len() - 6);
        let fixture =
            harness::start_fixture(&cfg.programs.fixture_bin, dir.path(), "fixture", generated)?;
        progress(format_args!(
            "fixture upstream at {} (pid {})",
            fixture.url,
            fixture.guard.pid()
        ));
        commands.insert(
            "fixture".to_owned(),
            format!(
                "{} --listen 127.0.0.1:0 --generated-tools {generated}",
                cfg.programs.fixture_bin.display(),
            ),
        );
        let big =
            harness::start_fixture(&cfg.programs.fixture_bin, dir.path(), "fixture-big", 500)?;
        commands.insert(
            "fixture-big".to_owned(),
            format!(
                "{} --listen 127.0.0.1:0 --generated-tools 500",
                cfg.programs.fixture_bin.display(),
            ),
        );
        let everything = match &cfg.everything_cmd {
            Some(cmd) => {
                match harness::start_command_upstream("server-everything", cmd, dir.path()) {
                    Ok(f) => {
                        progress(format_args!(
                            "server-everything at {} (pid {})",
                            f.url,
                            f.guard.pid()
                        ));
                        commands.insert("server-everything".to_owned(), format!("PORT=... {cmd}"));
                        Some(f)
                    }
                    Err(e) => {
                        note(
                            &mut notes,
                            format!("server-everything rows skipped: it did not start: {e:#}"),
                        );
                        None
                    }
                }
            }
            None => {
                if cfg
                    .gateway
                    .gateway_workloads
                    .iter()
                    .any(|w| w.uses_everything())
                {
                    note(
                        &mut notes,
                        "server-everything rows skipped: no --everything-cmd given".to_owned(),
                    );
                }
                None
            }
        };
        let catalog = harness::write_catalog(
            dir.path(),
            &harness::Upstreams {
                fixture: &fixture.url,
                big: Some(&big.url),
                everything: everything.as_ref().map(|f| f.url.as_str()),
            },
        )?;
        let want_grpc = cfg.runtime.transports.contains(&Transport::Grpc)
            || cfg.python_hop.pyhop_clients.contains(&PyClient::Grpc)
            || cfg.gateway.gateway_modes.contains(&GatewayMode::Grpc);
        let runtime = rt.block_on(harness::start_runtime(
            &cfg.programs.runtime_bin,
            dir.path(),
            "runtime",
            &catalog,
            cfg.runtime_worker_threads,
            want_grpc,
            &harness::BENCH_QUOTA_ARGS,
        ))?;
        progress(format_args!(
            "runtime ready (pid {}): {}",
            runtime.guard.pid(),
            runtime.health
        ));
        commands.insert("runtime".to_owned(), runtime.command.clone());
        let runtime_threads = ProcTarget::pid(runtime.guard.pid()).threads().ok();
        Ok(Self {
            cfg,
            runtime,
            fixture,
            big,
            everything,
            runtime_threads,
            round: 0,
            notes,
            commands,
            revocations: Vec::new(),
            python: None,
            gateway_auth: None,
            order: Vec::new(),
            rounds: HashMap::new(),
            rt,
            dir,
        })
    }

    /// The run's work directory (sockets, catalog, logs).
    #[must_use]
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// The virtual environment, probed on first use; `None` (with a note, once) when it is
    /// not usable, and the Python layers are skipped.
    pub fn python(&mut self) -> Option<&PythonEnv> {
        if self.python.is_none() {
            let env =
                match PythonEnv::probe(&self.cfg.programs.python, &self.cfg.programs.repo_root) {
                    Ok(env) => Some(env),
                    Err(e) => {
                        self.note(format!("python-hop and gateway layers skipped: {e:#}"));
                        None
                    }
                };
            self.python = Some(env);
        }
        self.python.as_ref().and_then(Option::as_ref)
    }

    /// The environment if it was probed and usable (no probe here).
    #[must_use]
    pub fn python_probed(&self) -> Option<&PythonEnv> {
        self.python.as_ref().and_then(Option::as_ref)
    }

    /// The gateways' JWT secret and a token it signs, minted on first use (every gateway of
    /// the run shares them).
    ///
    /// # Errors
    ///
    /// When the gateway's `token` command fails.
    pub fn gateway_auth(&mut self, env: &PythonEnv) -> anyhow::Result<(String, String)> {
        if let Some(auth) = &self.gateway_auth {
            return Ok(auth.clone());
        }
        let secret = format!(
            "mcp-bench-{}-{}",
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
            std::process::id()
        );
        let token = env.mint_token(&secret)?;
        self.commands.insert(
            "token".to_owned(),
            format!(
                "JWT_SECRET_KEY=... {} -m mcp_gateway token --sub {} --admin --ttl-s 86400",
                env.python.display(),
                client::SUBJECT_EMAIL
            ),
        );
        let auth = (secret, token);
        self.gateway_auth = Some(auth.clone());
        Ok(auth)
    }

    /// `[round N/M]`, the prefix of the progress lines.
    #[must_use]
    pub fn tag(&self) -> String {
        format!("[round {}/{}]", self.round + 1, self.cfg.rounds)
    }

    /// Records one row's metrics of this round and prints its progress line.
    pub fn record(&mut self, key: RowKey, m: Metrics) {
        progress(format_args!("{} {}", self.tag(), line(&key, &m)));
        if !self.rounds.contains_key(&key) {
            self.order.push(key.clone());
        }
        self.rounds.entry(key).or_default().push(m);
    }

    /// Adds a note to the report and prints it.
    pub fn note(&mut self, text: String) {
        note(&mut self.notes, text);
    }

    /// The rows measured, in first-measured order, each with its rounds and their summary.
    pub fn take_rows(&mut self) -> Vec<Row> {
        std::mem::take(&mut self.order)
            .into_iter()
            .map(|key| {
                let r = self.rounds.remove(&key).unwrap_or_default();
                Row {
                    key,
                    summary: Metrics::summarize(&r),
                    rounds: r,
                }
            })
            .collect()
    }
}

/// Adds a note to `notes` and prints it.
fn note(notes: &mut Vec<String>, text: String) {
    progress(format_args!("note: {text}"));
    notes.push(text);
}

/// One progress line on stderr.
pub fn progress(args: std::fmt::Arguments<'_>) {
    eprintln!("mcp-bench: {args}");
}

/// The progress line of a measured row.
fn line(key: &RowKey, m: &Metrics) -> String {
    let cpu = |name: &str| {
        m.cpu_us_per_request
            .get(name)
            .map_or_else(|| "–".to_owned(), |v| format!("{v:.1}"))
    };
    format!(
        "{} {}/{} {} c={} {} B: {:.0} req/s, p50 {:.1} µs, p99 {:.1} µs, errors {}, CPU/req gateway {} µs, runtime {} µs, upstream {} µs, client {} µs",
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
        cpu("gateway"),
        cpu("runtime"),
        cpu("fixture"),
        cpu("client"),
    )
}
