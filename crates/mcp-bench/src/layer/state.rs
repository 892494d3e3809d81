//! The cost of shared state (issue 15): a Rust client over HTTP/JSON to the runtime with its
//! state in memory, to one replica on Redis, and to three replicas on one Redis with each
//! request sent to the next replica in turn (per-request round robin, as an HTTP balancer in
//! front of several pods would do). Rows: layer `state`, mode (the row's transport) `memory`,
//! `redis-1` or `redis-3`, one per workload (`--state-workloads`, by default a 1 KiB `echo`,
//! answered as JSON, and `progress`, an SSE stream whose every event is stored before it is
//! sent) and concurrency (`--state-concurrency`), the mode order rotating every round. The
//! ratios `redis-1 / memory`, `redis-3 / memory` and `redis-3 / redis-1` are the cost of the
//! shared store per request; the analysis lists them with the spread over rounds.
//!
//! Processes: a `redis-server` of the layer (no persistence, on a Unix socket in the run's
//! directory) and three runtimes of the layer started with `--state-url` (the `redis-1` rows
//! use the first); the `memory` rows use the run's own runtime (same binary and flags, no
//! `--state-url`). The runtime CPU of a `redis-3` row is the sum of the three replicas'; the
//! `redis` CPU column is Redis's. Without `redis-server` on the `PATH` the layer is skipped
//! with a note; `--no-state` skips it.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::{Entry, Layer, metrics, rotated};
use crate::bench::Config;
use crate::client::{self, Stop, Worker, Workload};
use crate::harness::{self, ChildGuard, RuntimeProcess};
use crate::proc::{CpuMeter, ProcTarget};
use crate::report::{Metrics, RowKey};
use crate::run::{Run, progress};

/// The state layer in the list of layers, with the cost of each shared store.
pub const LAYER: Entry = Entry {
    name: "state",
    start: |run| StateLayer::start(run),
    ratios: &[
        ("redis-1", "memory"),
        ("redis-3", "memory"),
        ("redis-3", "redis-1"),
    ],
};

/// Replicas of the `redis-3` rows.
const REPLICAS: usize = 3;

/// How long `redis-server` and the replicas get to answer.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The state layer's options.
#[derive(Debug, Clone, clap::Args)]
pub struct StateArgs {
    /// Workloads of the state layer (memory, one replica on Redis, three on Redis), comma
    /// separated: `echo:BYTES`, `progress`, `ping`, `tools/list:10`.
    #[arg(long, value_delimiter = ',', default_value = "echo:1k,progress", value_parser = Workload::parse)]
    pub state_workloads: Vec<Workload>,

    /// Concurrency levels of the state layer (its own, to keep the layer short).
    #[arg(long, value_delimiter = ',', default_value = "1,16")]
    pub state_concurrency: Vec<usize>,

    /// Skip the state layer (no Redis, no replicas are started).
    #[arg(long)]
    pub no_state: bool,
}

/// A mode of the layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Mode {
    /// The run's runtime, state in memory.
    Memory,
    /// One runtime on Redis.
    Redis1,
    /// Three runtimes on Redis, requests in turn.
    Redis3,
}

impl Mode {
    const ALL: [Self; 3] = [Self::Memory, Self::Redis1, Self::Redis3];

    fn name(self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Redis1 => "redis-1",
            Self::Redis3 => "redis-3",
        }
    }
}

/// The layer's processes and the session of each mode (opened on first use).
#[derive(Debug)]
struct StateLayer {
    replicas: Vec<RuntimeProcess>,
    redis: ChildGuard,
    sessions: HashMap<(Mode, Option<&'static str>), String>,
}

/// Nothing to measure (`--no-state`, no workload or no concurrency level).
#[derive(Debug)]
struct Skipped;

impl Layer for Skipped {
    fn round(&mut self, _run: &mut Run<'_>) -> anyhow::Result<()> {
        Ok(())
    }
}

impl StateLayer {
    /// Starts Redis and the replicas, or skips the layer (with a note when `redis-server` is
    /// missing).
    fn start(run: &mut Run<'_>) -> anyhow::Result<Box<dyn Layer>> {
        let cfg = &run.cfg.state;
        if cfg.no_state || cfg.state_workloads.is_empty() || cfg.state_concurrency.is_empty() {
            return Ok(Box::new(Skipped));
        }
        let Some(server) = which("redis-server") else {
            run.note(
                "state rows skipped: redis-server not found (Debian package redis-server)"
                    .to_owned(),
            );
            return Ok(Box::new(Skipped));
        };
        let dir = run.dir().to_path_buf();
        let socket = dir.join("redis.sock");
        let mut cmd = Command::new(&server);
        cmd.args(["--port", "0", "--save", "", "--appendonly", "no"])
            .arg("--unixsocket")
            .arg(&socket)
            .args(["--unixsocketperm", "700"])
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::null());
        let command = std::iter::once(cmd.get_program())
            .chain(cmd.get_args())
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ");
        let mut redis = harness::spawn_logged("redis-server", &mut cmd, dir.join("redis.log"))?;
        run.rt.block_on(wait_redis(&socket, &mut redis))?;
        run.commands
            .insert("redis (state layer)".to_owned(), command);
        let url = format!("unix://{}", socket.display());
        let mut args: Vec<&str> = harness::BENCH_QUOTA_ARGS.to_vec();
        args.extend(["--state-url", &url]);
        let mut replicas = Vec::with_capacity(REPLICAS);
        for i in 0..REPLICAS {
            let r = run.rt.block_on(harness::start_runtime(
                &run.cfg.programs.runtime_bin,
                &dir,
                &format!("replica-{}", i + 1),
                &run.runtime.catalog,
                run.cfg.runtime_worker_threads,
                false,
                &args,
            ))?;
            if i == 0 {
                run.commands.insert(
                    "runtime replica (state layer)".to_owned(),
                    r.command.clone(),
                );
            }
            replicas.push(r);
        }
        run.rt
            .block_on(wait_reachable(&replicas))
            .context("the replicas' state store")?;
        progress(format_args!(
            "state layer: redis-server (pid {}) and {REPLICAS} replicas ready",
            redis.pid()
        ));
        Ok(Box::new(Self {
            replicas,
            redis,
            sessions: HashMap::new(),
        }))
    }

    /// The runtimes of `mode` (the run's own for memory).
    fn targets<'r>(&'r self, run: &'r Run<'_>, mode: Mode) -> Vec<&'r RuntimeProcess> {
        match mode {
            Mode::Memory => vec![&run.runtime],
            Mode::Redis1 => vec![&self.replicas[0]],
            Mode::Redis3 => self.replicas.iter().collect(),
        }
    }

    /// The meter of `mode`'s row: its runtimes (`runtime`, `runtime-2`, ... summed into
    /// `runtime` by [`merge_runtimes`]), Redis (not for memory), the fixture and this client.
    fn meter(&self, run: &Run<'_>, mode: Mode) -> CpuMeter {
        let mut targets: Vec<(String, ProcTarget)> = self
            .targets(run, mode)
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let name = if i == 0 {
                    "runtime".to_owned()
                } else {
                    format!("runtime-{}", i + 1)
                };
                (name, ProcTarget::pid(r.guard.pid()))
            })
            .collect();
        if mode != Mode::Memory {
            targets.push(("redis".to_owned(), ProcTarget::pid(self.redis.pid())));
        }
        targets.push((
            "fixture".to_owned(),
            ProcTarget::pid(run.fixture.guard.pid()),
        ));
        targets.push(("client".to_owned(), ProcTarget::this()));
        CpuMeter::new(targets)
    }
}

/// `name` on the `PATH`, when there.
fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

/// Waits until Redis answers `PING` on `socket`.
async fn wait_redis(socket: &Path, redis: &mut ChildGuard) -> anyhow::Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        redis.check_alive()?;
        if let Ok(mut s) = tokio::net::UnixStream::connect(socket).await {
            let mut buf = [0u8; 7];
            if s.write_all(b"PING\r\n").await.is_ok()
                && s.read_exact(&mut buf).await.is_ok()
                && &buf == b"+PONG\r\n"
            {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!(
                "redis-server did not answer on {} in {START_TIMEOUT:?}",
                socket.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until every replica's `/health` reports its store reachable.
async fn wait_reachable(replicas: &[RuntimeProcess]) -> anyhow::Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    for r in replicas {
        loop {
            let (_, body) = client::http::get(&r.http_socket, "/health").await?;
            let health: Value = serde_json::from_slice(&body).context("GET /health")?;
            if health["state_store"]["reachable"] == json!(true) {
                break;
            }
            if Instant::now() > deadline {
                bail!("a replica's state store is not reachable after {START_TIMEOUT:?}: {health}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(())
}

/// Sums the CPU of `runtime-N` into `runtime` (the replicas of a `redis-3` row).
fn merge_runtimes(m: &mut Metrics) {
    let extra: Vec<String> = m
        .cpu_us_per_request
        .keys()
        .filter(|k| k.starts_with("runtime-"))
        .cloned()
        .collect();
    for k in extra {
        if let Some(v) = m.cpu_us_per_request.remove(&k) {
            *m.cpu_us_per_request
                .entry("runtime".to_owned())
                .or_default() += v;
        }
        if let Some(c) = m.cpu_clock.remove(&k) {
            let e = m.cpu_clock.entry("runtime".to_owned()).or_default();
            let mut set: std::collections::BTreeSet<&str> =
                e.split('+').filter(|s| !s.is_empty()).collect();
            set.extend(c.split('+'));
            *e = set.into_iter().collect::<Vec<_>>().join("+");
        }
        if let Some(v) = m.peak_rss_kib.remove(&k) {
            let rss = m.peak_rss_kib.entry("runtime".to_owned()).or_default();
            *rss = (*rss).max(v);
        }
    }
}

/// Measures one row: fresh workers (for `redis-3`, each with a connection to every replica,
/// starting at a different one), warm-up, then the measured phase.
async fn measure(
    cfg: &Config,
    session: &str,
    runtimes: &[&RuntimeProcess],
    (mode, meter): (Mode, &CpuMeter),
    workload: Workload,
    concurrency: usize,
) -> anyhow::Result<(RowKey, Metrics)> {
    let key = RowKey {
        layer: LAYER.name.to_owned(),
        transport: mode.name().to_owned(),
        client: if runtimes.len() > 1 {
            "hyper, each request to the next replica".to_owned()
        } else {
            "hyper".to_owned()
        },
        workload: workload.name().to_owned(),
        concurrency,
        payload_bytes: workload.body(1).len(),
    };
    let mut workers = Vec::with_capacity(concurrency);
    for i in 0..concurrency.max(1) {
        if runtimes.len() == 1 {
            let w = client::http::HttpWorker::connect(&runtimes[0].http_socket, session).await?;
            workers.push(Worker::Http(w));
        } else {
            let mut each = Vec::with_capacity(runtimes.len());
            for r in rotated(runtimes, i) {
                each.push(client::http::HttpWorker::connect(&r.http_socket, session).await?);
            }
            workers.push(Worker::HttpRoundRobin(client::http::RoundRobin::new(each)));
        }
    }
    let warmup = if workload == Workload::Progress {
        cfg.warmup.min(2 * concurrency as u64)
    } else {
        cfg.warmup
    };
    let (_, workers) = client::drive(workers, workload, Stop::Requests(warmup)).await;
    let before = meter.start();
    let (result, workers) = client::drive(workers, workload, cfg.stop).await;
    let mut m = metrics(&result, meter, &before);
    merge_runtimes(&mut m);
    drop(workers);
    Ok((key, m))
}

impl Layer for StateLayer {
    fn round(&mut self, run: &mut Run<'_>) -> anyhow::Result<()> {
        let cfg = run.cfg;
        for &workload in &cfg.state.state_workloads {
            for &c in &cfg.state.state_concurrency {
                for mode in rotated(&Mode::ALL, run.round) {
                    let session = match self.sessions.get(&(mode, workload.scope())) {
                        Some(s) => s.clone(),
                        None => {
                            let first = self.targets(run, mode)[0].http_socket.clone();
                            let s = run
                                .rt
                                .block_on(client::http::initialize(&first, workload.scope()))?;
                            self.sessions.insert((mode, workload.scope()), s.clone());
                            s
                        }
                    };
                    let runtimes = self.targets(run, mode);
                    let meter = self.meter(run, mode);
                    let (key, m) = run.rt.block_on(measure(
                        cfg,
                        &session,
                        &runtimes,
                        (mode, &meter),
                        workload,
                        c,
                    ))?;
                    run.record(key, m);
                }
                run.runtime.guard.check_alive()?;
                self.redis.check_alive()?;
                for r in &mut self.replicas {
                    r.guard.check_alive()?;
                }
            }
        }
        Ok(())
    }

    fn settings(&self, cfg: &Config, settings: &mut BTreeMap<String, Value>) {
        settings.insert(
            "state_workloads".to_owned(),
            json!(
                cfg.state
                    .state_workloads
                    .iter()
                    .map(|w| w.name())
                    .collect::<Vec<_>>()
            ),
        );
        settings.insert(
            "state_concurrency".to_owned(),
            json!(cfg.state.state_concurrency),
        );
        settings.insert("state_replicas".to_owned(), json!(REPLICAS));
    }
}
