//! The soak run (`make soak`, `mcp-soak`): mixed MCP traffic through the Python gateway in
//! each socket mode for a fixed time, at a fixed concurrency, watching for errors, latency
//! drift and memory growth.
//!
//! For each mode a fresh fixture upstream, runtime and gateway are started (so every mode
//! starts from the same idle state); `concurrency` workers, each with its own keep-alive
//! connection and MCP session, loop over a mix of requests ([`mix`]): `ping`, `tools/list`,
//! `tools/call echo` of 1 KiB and 64 KiB, a `tools/call progress` streamed as SSE, and every
//! 50th request a session opened and closed. Every window (30 s by default) prints and records
//! the requests, p50/p99, errors and the resident set size (`VmRSS`) of the gateway, the
//! runtime and the fixture.
//!
//! Targets (issue 6): zero errors; no process grows by more than 10% over the run after its
//! warm-up (`warmup`, 60 s by default: connection pools, buffers, allocator arenas and the
//! Python heap of `concurrency` connections filled). Growth is the median RSS of the windows
//! in the second half against the median of the windows between the warm-up and half time:
//! a process's RSS under this load swings by ±10% from one window to the next (allocator
//! caches, HTTP/2 buffers; measured: the gRPC runtime 24.6–29.3 MB over 10 minutes, the same
//! with `MALLOC_ARENA_MAX=2`), so two single samples cannot resolve 10%. The single samples
//! (idle before any traffic, end of warm-up, end of run) are reported too.
//!
//! With an abuser (`mcp-soak --abuser`, `make soak-abuse`; issue 13) each mode runs twice on
//! fresh processes: quiet, then with a second subject beside the normal traffic that takes
//! every resource one subject can hold ([`crate::client::abuse`]: sessions, GET streams,
//! in-flight calls beyond the per-subject caps, large results). Targets of the abused run: the
//! normal traffic has zero errors and its p99 (all its requests) is at most
//! [`ABUSE_P99_RATIO_TARGET`] times the quiet run's. The growth target is judged on the quiet
//! run only (the abuser's held sessions and large results are what the abused run's RSS
//! shows).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use crate::cli::Programs;
use crate::client::abuse::{self, AbuseCounts, AbuserConfig};
use crate::client::mcp::{Endpoint, McpWorker};
use crate::client::{ToolSet, Workload};
use crate::harness;
use crate::proc::{MachineInfo, ProcTarget};
use crate::python::{self, GatewayMode, PythonEnv};
use crate::stats::{Latencies, LatencySummary, median};

/// The largest growth of a process's RSS over the run after the warm-up that meets the
/// target, in percent (issue 6); see the module docs for how growth is measured.
pub const RSS_GROWTH_TARGET_PCT: f64 = 10.0;

/// The largest ratio of the normal traffic's p99 beside the abuser to its p99 in the quiet
/// run that meets the target (issue 13).
pub const ABUSE_P99_RATIO_TARGET: f64 = 2.0;

/// Longest wait for the abuser's ramp-up before the measured run starts anyway.
const ABUSER_RAMP_TIMEOUT: Duration = Duration::from_secs(120);

/// Subject of the abuser's token: another subject than the normal traffic's, with a
/// public-only token (`teams: []`, the least a token can hold).
pub const ABUSER_SUBJECT: &str = "abuser@example.com";

/// What to run.
#[derive(Debug, Clone)]
pub struct SoakConfig {
    /// The runtime (built with `grpc-uds`), the fixture, the repository and its `.venv`.
    pub programs: Programs,
    /// Gateway modes, one soak each, in this order.
    pub modes: Vec<GatewayMode>,
    /// Traffic time per mode.
    pub duration: Duration,
    /// Length of a reporting window.
    pub window: Duration,
    /// Traffic time before the RSS reference of the growth target is taken (rounded up to a
    /// whole window).
    pub warmup: Duration,
    /// Workers, each with its own connection and session.
    pub concurrency: usize,
    /// Run each mode quiet and then beside this abusive subject.
    pub abuser: Option<AbuserConfig>,
}

/// The request mix: the `n`-th request of a worker (counting from 0).
#[must_use]
pub fn mix(n: u64) -> Workload {
    if n % 50 == 49 {
        return Workload::Session;
    }
    match n % 5 {
        0 => Workload::Ping,
        1 => Workload::Echo(1024),
        2 => Workload::ToolsList(ToolSet::Ten),
        3 => Workload::Echo(64 * 1024),
        _ => Workload::Progress,
    }
}

/// A workload's name in the report, with the size of an echo (`tools/call echo 64 KiB`).
fn label(workload: Workload) -> String {
    match workload {
        Workload::Echo(n) if n >= 1024 => format!("{} {} KiB", workload.name(), n / 1024),
        Workload::Echo(n) => format!("{} {n} B", workload.name()),
        _ => workload.name().to_owned(),
    }
}

/// One reporting window.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Window {
    /// Seconds since traffic started, at the window's end.
    pub t_s: f64,
    /// Requests completed in the window (successes and errors).
    pub requests: u64,
    /// Requests per second over the window.
    pub req_per_s: f64,
    /// Latencies of the window's successful requests, in microseconds.
    pub latency_us: LatencySummary,
    /// Errors in the window.
    pub errors: u64,
    /// `VmRSS` of each process at the window's end, in KiB.
    pub rss_kib: BTreeMap<String, u64>,
}

/// RSS of one process over the soak, in KiB.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RssGrowth {
    /// Before any traffic (sessions not yet opened).
    pub idle: u64,
    /// At the end of the warm-up (the first window ending at or after it).
    pub warm: u64,
    /// At the end of the run.
    pub end: u64,
    /// Median over the windows ending after the warm-up and before half time.
    pub first_half_median: u64,
    /// Median over the windows ending at half time or later.
    pub second_half_median: u64,
    /// `(second_half_median - first_half_median) / first_half_median`, in percent: the target.
    pub growth_pct: f64,
    /// `(end - warm) / warm`, in percent: the same from two single samples.
    pub sample_growth_pct: f64,
}

/// The soak of one gateway mode.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModeSoak {
    /// `python`, `http-json` or `grpc`.
    pub mode: String,
    /// Traffic time, in seconds.
    pub seconds: f64,
    /// Workers.
    pub concurrency: usize,
    /// Requests completed.
    pub requests: u64,
    /// Requests that failed (transport error, status other than 200, JSON-RPC error).
    pub errors: u64,
    /// Up to five distinct error messages, with their counts.
    pub error_kinds: BTreeMap<String, u64>,
    /// Latencies over the whole run by workload name, in microseconds.
    pub by_workload: BTreeMap<String, LatencySummary>,
    /// Latencies of every successful request of the run, in microseconds.
    pub latency_us: LatencySummary,
    /// What the abusive subject got, when the run had one.
    pub abuser: Option<AbuseCounts>,
    /// The windows, in order.
    pub windows: Vec<Window>,
    /// RSS of the gateway, the runtime (absent for the Python baseline) and the fixture.
    pub rss: BTreeMap<String, RssGrowth>,
}

impl ModeSoak {
    /// Whether the run met its targets: zero errors and, for a run without an abuser, no
    /// process grew by more than [`RSS_GROWTH_TARGET_PCT`] after the warm-up.
    #[must_use]
    pub fn met(&self) -> bool {
        self.errors == 0
            && (self.abuser.is_some()
                || self
                    .rss
                    .values()
                    .all(|g| g.growth_pct <= RSS_GROWTH_TARGET_PCT))
    }
}

/// One mode's normal traffic quiet and beside the abuser.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AbuseComparison {
    /// `python`, `http-json` or `grpc`.
    pub mode: String,
    /// p99 of the normal traffic in the quiet run, in microseconds.
    pub quiet_p99_us: f64,
    /// p99 of the normal traffic beside the abuser, in microseconds.
    pub abused_p99_us: f64,
    /// `abused_p99_us / quiet_p99_us`.
    pub p99_ratio: f64,
    /// Errors of the normal traffic beside the abuser.
    pub abused_errors: u64,
}

impl AbuseComparison {
    /// Whether the abused run met its targets: zero errors, p99 ratio at most
    /// [`ABUSE_P99_RATIO_TARGET`].
    #[must_use]
    pub fn met(&self) -> bool {
        self.abused_errors == 0 && self.p99_ratio <= ABUSE_P99_RATIO_TARGET
    }
}

/// The whole soak: one entry per mode.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SoakReport {
    /// When the run started, Unix seconds.
    pub started_unix_s: u64,
    /// The machine.
    pub machine: MachineInfo,
    /// The command line.
    pub command_line: Vec<String>,
    /// The warm-up of the growth target, in seconds.
    pub warmup_s: f64,
    /// The modes, in run order (with an abuser: each mode's quiet run, then its abused run).
    pub modes: Vec<ModeSoak>,
    /// With an abuser: each mode's comparison of its two runs.
    pub abuse: Vec<AbuseComparison>,
}

/// What the workers share.
#[derive(Default)]
struct Shared {
    window: Latencies,
    all: Latencies,
    window_requests: u64,
    window_errors: u64,
    by_workload: BTreeMap<String, Latencies>,
    requests: u64,
    errors: u64,
    error_kinds: BTreeMap<String, u64>,
}

impl Shared {
    fn record(&mut self, workload: Workload, latency: Duration, error: Option<String>) {
        self.requests += 1;
        self.window_requests += 1;
        match error {
            None => {
                self.window.record(latency);
                self.all.record(latency);
                self.by_workload
                    .entry(label(workload))
                    .or_default()
                    .record(latency);
            }
            Some(e) => {
                self.errors += 1;
                self.window_errors += 1;
                let kinds = self.error_kinds.len();
                if let Some(n) = self.error_kinds.get_mut(&e) {
                    *n += 1;
                } else if kinds < 5 {
                    self.error_kinds.insert(e, 1);
                }
            }
        }
    }
}

fn rss_of(procs: &[(String, ProcTarget)]) -> BTreeMap<String, u64> {
    procs
        .iter()
        .map(|(name, p)| (name.clone(), p.rss_kib().unwrap_or(0)))
        .collect()
}

fn progress(msg: std::fmt::Arguments<'_>) {
    eprintln!("mcp-soak: {msg}");
}

/// Soaks one gateway mode: starts its processes, drives the mix, stops them.
///
/// # Errors
///
/// When a process cannot be started or a worker cannot open its session. Errors of single
/// requests are counted, not returned.
pub async fn soak_mode(
    cfg: &SoakConfig,
    env: &PythonEnv,
    mode: GatewayMode,
    abuser: Option<AbuserConfig>,
) -> anyhow::Result<ModeSoak> {
    let dir = tempfile::Builder::new()
        .prefix("mcp-soak-")
        .tempdir()
        .context("cannot create a work directory")?;
    let fixture = harness::start_fixture(
        &cfg.programs.fixture_bin,
        dir.path(),
        "fixture",
        harness::TOOLS10.len() - 6,
    )?;
    let catalog = harness::write_catalog(
        dir.path(),
        &harness::Upstreams {
            fixture: &fixture.url,
            big: None,
            everything: None,
        },
    )?;
    let runtime = match mode {
        GatewayMode::Python => None,
        _ => Some(
            harness::start_runtime(
                &cfg.programs.runtime_bin,
                dir.path(),
                "runtime",
                &catalog,
                None,
                mode == GatewayMode::Grpc,
                &[],
            )
            .await?,
        ),
    };
    let socket = runtime.as_ref().and_then(|r| match mode {
        GatewayMode::Grpc => r.grpc_socket.clone(),
        _ => Some(r.http_socket.clone()),
    });
    let secret = format!(
        "mcp-soak-{}",
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    );
    let gateway = python::start_gateway(
        env,
        mode,
        1,
        socket.as_deref(),
        &catalog,
        python::GatewayEnv {
            secret: &secret,
            extra: &[],
            tag: "",
        },
        dir.path(),
    )
    .await?;
    let token = env.mint_token(&secret)?;
    let endpoint = Endpoint::new(gateway.addr, &token)?;
    let mut procs = vec![("gateway".to_owned(), ProcTarget::tree(gateway.guard.pid()))];
    if let Some(r) = &runtime {
        procs.push(("runtime".to_owned(), ProcTarget::pid(r.guard.pid())));
    }
    procs.push(("fixture".to_owned(), ProcTarget::pid(fixture.guard.pid())));
    progress(format_args!(
        "[{}] gateway on {} (pid {}), {} workers for {:?}",
        mode.name(),
        gateway.addr,
        gateway.guard.pid(),
        cfg.concurrency,
        cfg.duration
    ));

    let idle = rss_of(&procs);
    // The abuser runs on a thread and async runtime of its own, so its large results do not
    // delay the normal workers' client side.
    let abuser_stop = Arc::new(AtomicBool::new(false));
    let (ramped_tx, ramped) = tokio::sync::oneshot::channel();
    let abuser_thread = match abuser {
        None => {
            drop(ramped_tx);
            None
        }
        Some(a) => {
            let token = env.mint_token_for(&secret, ABUSER_SUBJECT, &["--public-only"])?;
            let endpoint = Endpoint::new(gateway.addr, &token)?;
            let stop = Arc::clone(&abuser_stop);
            progress(format_args!(
                "[{}] abuser {ABUSER_SUBJECT}: {a:?}",
                mode.name()
            ));
            Some(
                std::thread::Builder::new()
                    .name("abuser".to_owned())
                    .spawn(move || {
                        tokio::runtime::Builder::new_current_thread()
                            .enable_all()
                            .build()
                            .map(|rt| rt.block_on(abuse::run(endpoint, a, stop, ramped_tx)))
                    })
                    .context("cannot start the abuser's thread")?,
            )
        }
    };
    let mut workers = Vec::with_capacity(cfg.concurrency);
    for _ in 0..cfg.concurrency {
        workers.push(McpWorker::connect(&endpoint, None).await?);
    }
    // The measured run starts once the abuser holds what it could get.
    if abuser_thread.is_some() {
        match tokio::time::timeout(ABUSER_RAMP_TIMEOUT, ramped).await {
            Ok(Ok(ramp)) => progress(format_args!(
                "[{}] abuser ramped up in {:.1} s",
                mode.name(),
                ramp.as_secs_f64()
            )),
            Ok(Err(_)) => anyhow::bail!("the abuser ended before its ramp-up"),
            Err(_) => progress(format_args!(
                "[{}] abuser still ramping up after {} s; measuring anyway",
                mode.name(),
                ABUSER_RAMP_TIMEOUT.as_secs()
            )),
        }
    }
    let shared = Arc::new(Mutex::new(Shared::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let tasks: Vec<_> = workers
        .into_iter()
        .enumerate()
        .map(|(i, mut w)| {
            let shared = Arc::clone(&shared);
            let stop = Arc::clone(&stop);
            tokio::spawn(async move {
                // Workers start at different points of the mix, so every kind of request is
                // in flight at any moment.
                let mut n = i as u64;
                while !stop.load(Ordering::Relaxed) {
                    let workload = mix(n);
                    n += 1;
                    let t0 = Instant::now();
                    let outcome = w.call(workload).await;
                    let dt = t0.elapsed();
                    let error = outcome.err().map(|e| e.to_string());
                    shared
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .record(workload, dt, error);
                }
                w.close().await;
            })
        })
        .collect();

    let end = started + cfg.duration;
    let mut windows = Vec::new();
    let mut last = started;
    while Instant::now() < end {
        tokio::time::sleep(
            cfg.window
                .min(end.saturating_duration_since(Instant::now())),
        )
        .await;
        let now = Instant::now();
        let (lat, requests, errors) = {
            let mut s = shared
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let lat = std::mem::take(&mut s.window).summary();
            let r = (lat, s.window_requests, s.window_errors);
            s.window_requests = 0;
            s.window_errors = 0;
            r
        };
        let rss = rss_of(&procs);
        let w = Window {
            t_s: (now - started).as_secs_f64(),
            requests,
            req_per_s: requests as f64 / (now - last).as_secs_f64().max(1e-9),
            latency_us: lat,
            errors,
            rss_kib: rss,
        };
        last = now;
        progress(format_args!(
            "[{}] t={:>5.0}s {:>7.0} req/s p50={:>7.2}ms p99={:>8.2}ms errors={} rss {}",
            mode.name(),
            w.t_s,
            w.req_per_s,
            w.latency_us.p50 / 1000.0,
            w.latency_us.p99 / 1000.0,
            w.errors,
            w.rss_kib
                .iter()
                .map(|(k, v)| format!("{k}={:.1}MB", *v as f64 / 1024.0))
                .collect::<Vec<_>>()
                .join(" ")
        ));
        windows.push(w);
    }
    stop.store(true, Ordering::Relaxed);
    abuser_stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.context("a soak worker panicked")?;
    }
    let abuser = match abuser_thread {
        None => None,
        Some(t) => {
            let counts = tokio::task::spawn_blocking(move || t.join())
                .await
                .context("cannot wait for the abuser")?
                .map_err(|_| anyhow::anyhow!("the abuser panicked"))?
                .context("cannot start the abuser's async runtime")?;
            progress(format_args!("[{}] abuser got {counts:?}", mode.name()));
            Some(counts)
        }
    };
    let seconds = started.elapsed().as_secs_f64();
    let end_rss = rss_of(&procs);
    let rss = rss_growth(
        &windows,
        &idle,
        &end_rss,
        cfg.warmup.as_secs_f64(),
        cfg.duration.as_secs_f64(),
    );
    let shared = Arc::try_unwrap(shared)
        .ok()
        .context("soak workers still hold the statistics")?
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    Ok(ModeSoak {
        mode: mode.name().to_owned(),
        seconds,
        concurrency: cfg.concurrency,
        requests: shared.requests,
        errors: shared.errors,
        error_kinds: shared.error_kinds,
        by_workload: shared
            .by_workload
            .iter()
            .map(|(k, v)| (k.clone(), v.summary()))
            .collect(),
        latency_us: shared.all.summary(),
        abuser,
        windows,
        rss,
    })
}

/// The RSS figures of every process of `end` (KiB by name) from the windows of a run of
/// `duration_s` seconds with a warm-up of `warmup_s` seconds; `idle` is the reading before
/// any traffic. A half without windows falls back to the nearest single sample.
#[must_use]
pub fn rss_growth(
    windows: &[Window],
    idle: &BTreeMap<String, u64>,
    end: &BTreeMap<String, u64>,
    warmup_s: f64,
    duration_s: f64,
) -> BTreeMap<String, RssGrowth> {
    // A window's end time is a little late (the sleep overshoots); half a second of slack.
    let after = |w: &Window, t: f64| w.t_s + 0.5 >= t;
    let warm_window = windows.iter().find(|w| after(w, warmup_s));
    let half_s = duration_s / 2.0;
    let pct = |from: u64, to: u64| (to as f64 - from as f64) * 100.0 / (from.max(1) as f64);
    end.iter()
        .map(|(name, &end)| {
            let of = |w: &Window| w.rss_kib.get(name).copied().unwrap_or(0);
            let warm = warm_window.map_or(end, of);
            let median_of = |ws: Vec<&Window>, fallback: u64| {
                let v: Vec<f64> = ws.into_iter().map(|w| of(w) as f64).collect();
                median(&v).map_or(fallback, |m| m.round() as u64)
            };
            let first = median_of(
                windows
                    .iter()
                    .filter(|w| after(w, warmup_s) && !after(w, half_s))
                    .collect(),
                warm,
            );
            let second = median_of(windows.iter().filter(|w| after(w, half_s)).collect(), end);
            (
                name.clone(),
                RssGrowth {
                    idle: idle.get(name).copied().unwrap_or(0),
                    warm,
                    end,
                    first_half_median: first,
                    second_half_median: second,
                    growth_pct: pct(first, second),
                    sample_growth_pct: pct(warm, end),
                },
            )
        })
        .collect()
}

/// Runs the soak of every mode in `cfg`, one after the other.
///
/// # Errors
///
/// When the Python environment is unusable or a mode's processes cannot be started.
pub fn run(cfg: &SoakConfig, command_line: Vec<String>) -> anyhow::Result<SoakReport> {
    let started_unix_s = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let env = PythonEnv::probe(&cfg.programs.python, &cfg.programs.repo_root)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("cannot start the client's async runtime")?;
    let mut modes = Vec::new();
    let mut abuse = Vec::new();
    let verdict = |met: bool| if met { "targets met" } else { "TARGETS MISSED" };
    for &mode in &cfg.modes {
        let runs = if cfg.abuser.is_some() {
            vec![None, cfg.abuser]
        } else {
            vec![None]
        };
        for abuser in runs {
            let m = rt.block_on(soak_mode(cfg, &env, mode, abuser))?;
            progress(format_args!(
                "[{}{}] {} requests, {} errors, p99 {:.2} ms; {}",
                m.mode,
                if abuser.is_some() { " + abuser" } else { "" },
                m.requests,
                m.errors,
                m.latency_us.p99 / 1000.0,
                verdict(m.met())
            ));
            modes.push(m);
        }
        if let [.., quiet, abused] = modes.as_slice()
            && abused.abuser.is_some()
        {
            let c = AbuseComparison {
                mode: abused.mode.clone(),
                quiet_p99_us: quiet.latency_us.p99,
                abused_p99_us: abused.latency_us.p99,
                p99_ratio: abused.latency_us.p99 / quiet.latency_us.p99.max(1e-9),
                abused_errors: abused.errors,
            };
            progress(format_args!(
                "[{}] beside the abuser: p99 {:.2} ms vs {:.2} ms quiet ({:.2}x), {} errors; {}",
                c.mode,
                c.abused_p99_us / 1000.0,
                c.quiet_p99_us / 1000.0,
                c.p99_ratio,
                c.abused_errors,
                verdict(c.met())
            ));
            abuse.push(c);
        }
    }
    Ok(SoakReport {
        started_unix_s,
        machine: MachineInfo::collect(),
        command_line,
        warmup_s: cfg.warmup.as_secs_f64(),
        modes,
        abuse,
    })
}

impl ModeSoak {
    /// The run's name in the report: the mode, `+ abuser` for an abused run.
    fn run_name(&self) -> String {
        if self.abuser.is_some() {
            format!("{} + abuser", self.mode)
        } else {
            self.mode.clone()
        }
    }
}

fn mb(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

impl SoakReport {
    /// Whether every mode met the targets.
    #[must_use]
    pub fn met(&self) -> bool {
        self.modes.iter().all(ModeSoak::met) && self.abuse.iter().all(AbuseComparison::met)
    }

    /// The report as Markdown: a summary table (requests, errors, RSS per process with its
    /// growth), latency by workload, then every window of every mode.
    #[must_use]
    pub fn to_markdown(&self) -> String {
        let mut out = String::new();
        out.push_str("# Soak run\n\n");
        out.push_str(&format!(
            "Command: `{}`; machine: {} CPUs, {}.\n\n",
            self.command_line.join(" "),
            self.machine.nproc,
            self.machine.cpu_model
        ));
        out.push_str(&format!(
            "Targets: zero errors; RSS growth at most {RSS_GROWTH_TARGET_PCT:.0}% for every \
             process: the median RSS of the windows in the second half against the median of \
             the windows between the warm-up ({:.0} s of traffic) and half time (single \
             samples swing by about 10% from window to window). Single samples: idle before \
             any traffic, warm at the end of the warm-up, end of the run.\n\n",
            self.warmup_s
        ));
        out.push_str(
            "| mode | seconds | concurrency | requests | req/s | errors | process | RSS idle MB | RSS warm MB | RSS end MB | median 1st half MB | median 2nd half MB | growth | end vs warm | targets |\n\
             |---|--:|--:|--:|--:|--:|---|--:|--:|--:|--:|--:|--:|--:|---|\n",
        );
        for m in &self.modes {
            for (i, (name, g)) in m.rss.iter().enumerate() {
                let head = if i == 0 {
                    format!(
                        "| {} | {:.0} | {} | {} | {:.0} | {} ",
                        m.run_name(),
                        m.seconds,
                        m.concurrency,
                        m.requests,
                        m.requests as f64 / m.seconds.max(1e-9),
                        m.errors
                    )
                } else {
                    "| | | | | | ".to_owned()
                };
                let verdict = if i == 0 {
                    if m.met() { "met" } else { "**missed**" }
                } else {
                    ""
                };
                out.push_str(&format!(
                    "{head}| {name} | {} | {} | {} | {} | {} | {:+.1}% | {:+.1}% | {verdict} |\n",
                    mb(g.idle),
                    mb(g.warm),
                    mb(g.end),
                    mb(g.first_half_median),
                    mb(g.second_half_median),
                    g.growth_pct,
                    g.sample_growth_pct
                ));
            }
        }
        if !self.abuse.is_empty() {
            out.push_str(&format!(
                "\n## Beside an abusive subject\n\nTargets: the normal traffic has zero errors \
                 and its p99 (all requests) is at most {ABUSE_P99_RATIO_TARGET:.0}x the quiet \
                 run's.\n\n| mode | p99 quiet ms | p99 beside the abuser ms | ratio | errors | targets |\n|---|--:|--:|--:|--:|---|\n"
            ));
            for c in &self.abuse {
                out.push_str(&format!(
                    "| {} | {:.2} | {:.2} | {:.2} | {} | {} |\n",
                    c.mode,
                    c.quiet_p99_us / 1000.0,
                    c.abused_p99_us / 1000.0,
                    c.p99_ratio,
                    c.abused_errors,
                    if c.met() { "met" } else { "**missed**" }
                ));
            }
            out.push_str(
                "\nWhat the abuser got (refused: 429 or 503 from a limit):\n\n\
                 | mode | sessions held / refused | streams held / refused / ended early | sleep calls ok / refused | large echo ok / refused | failed | ramp-up s |\n\
                 |---|--:|--:|--:|--:|--:|--:|\n",
            );
            for m in &self.modes {
                if let Some(a) = &m.abuser {
                    out.push_str(&format!(
                        "| {} | {} / {} | {} / {} / {} | {} / {} | {} / {} | {} | {:.1} |\n",
                        m.mode,
                        a.sessions_opened,
                        a.sessions_refused,
                        a.streams_opened,
                        a.streams_refused,
                        a.streams_ended_early,
                        a.sleep_ok,
                        a.sleep_refused,
                        a.large_ok,
                        a.large_refused,
                        a.failed,
                        a.ramp_ms as f64 / 1000.0
                    ));
                }
            }
            for m in &self.modes {
                if let Some(a) = m.abuser.as_ref().filter(|a| !a.failure_kinds.is_empty()) {
                    out.push_str(&format!("\nThe abuser's failures in {}:\n\n", m.mode));
                    for (e, n) in &a.failure_kinds {
                        out.push_str(&format!("- {n} × {e}\n"));
                    }
                }
            }
        }
        for m in &self.modes {
            out.push_str(&format!("\n## {}\n\n", m.run_name()));
            if !m.error_kinds.is_empty() {
                out.push_str("Errors (up to five kinds):\n\n");
                for (e, n) in &m.error_kinds {
                    out.push_str(&format!("- {n} × {e}\n"));
                }
                out.push('\n');
            }
            out.push_str("| workload | p50 ms | p99 ms | max ms |\n|---|--:|--:|--:|\n");
            for (name, l) in &m.by_workload {
                out.push_str(&format!(
                    "| {name} | {:.2} | {:.2} | {:.1} |\n",
                    l.p50 / 1000.0,
                    l.p99 / 1000.0,
                    l.max / 1000.0
                ));
            }
            let names: Vec<&String> = m.rss.keys().collect();
            out.push_str("\n| t s | req/s | p50 ms | p99 ms | errors |");
            for n in &names {
                out.push_str(&format!(" {n} MB |"));
            }
            out.push_str("\n|--:|--:|--:|--:|--:|");
            out.push_str(&"--:|".repeat(names.len()));
            out.push('\n');
            for w in &m.windows {
                out.push_str(&format!(
                    "| {:.0} | {:.0} | {:.2} | {:.2} | {} |",
                    w.t_s,
                    w.req_per_s,
                    w.latency_us.p50 / 1000.0,
                    w.latency_us.p99 / 1000.0,
                    w.errors
                ));
                for n in &names {
                    out.push_str(&format!(
                        " {} |",
                        mb(w.rss_kib.get(*n).copied().unwrap_or(0))
                    ));
                }
                out.push('\n');
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mix_has_every_kind_and_a_session_every_fiftieth() {
        let first: Vec<Workload> = (0..50).map(mix).collect();
        assert_eq!(first[49], Workload::Session);
        assert_eq!(first.iter().filter(|w| **w == Workload::Session).count(), 1);
        for w in [
            Workload::Ping,
            Workload::Echo(1024),
            Workload::Echo(64 * 1024),
            Workload::ToolsList(ToolSet::Ten),
            Workload::Progress,
        ] {
            assert!(first.contains(&w), "{w:?} missing from the mix");
        }
    }

    fn window(t_s: f64, rss: u64) -> Window {
        Window {
            t_s,
            requests: 0,
            req_per_s: 0.0,
            latency_us: LatencySummary::default(),
            errors: 0,
            rss_kib: BTreeMap::from([("runtime".to_owned(), rss)]),
        }
    }

    #[test]
    fn growth_compares_the_medians_of_the_two_halves_after_the_warm_up() {
        // 30 s windows over 240 s, warm-up 60 s: the first half's windows end at 60 and 90 s
        // (120 s is half time and belongs to the second half).
        let rss = [10, 20, 24, 30, 22, 28, 26, 27];
        let windows: Vec<Window> = rss
            .iter()
            .enumerate()
            .map(|(i, &r)| window(30.0 * (i + 1) as f64 + 0.01, r))
            .collect();
        let idle = BTreeMap::from([("runtime".to_owned(), 5)]);
        let end = BTreeMap::from([("runtime".to_owned(), 27)]);
        let g = &rss_growth(&windows, &idle, &end, 60.0, 240.0)["runtime"];
        assert_eq!((g.idle, g.warm, g.end), (5, 20, 27));
        assert_eq!(g.first_half_median, 22); // median of 20 and 24
        assert_eq!(g.second_half_median, 27); // median of 30, 22, 28, 26, 27
        assert!((g.growth_pct - 500.0 / 22.0).abs() < 1e-9, "{g:?}");
        assert!((g.sample_growth_pct - 35.0).abs() < 1e-9, "{g:?}");
    }
}
