//! Result types of a run and their renderings: JSON (everything) and a Markdown table.
//!
//! A [`Row`] is one measured configuration, named by general keys (layer, transport, client,
//! workload, concurrency, payload bytes) so later layers (Python clients, the gateway end to
//! end, payload sweeps) add rows without changing the types. Each row keeps its per-round
//! [`Metrics`] and their median; a [`Comparison`] holds ratios computed per round pair.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::proc::MachineInfo;
use crate::stats::{LatencySummary, median, spread};

/// Version of the JSON layout below.
pub const SCHEMA: &str = "mcp-bench/1";

/// Everything one run measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// [`SCHEMA`].
    pub schema: String,
    /// Start of the run, seconds since the Unix epoch.
    pub started_unix_s: u64,
    /// The exact command line, program first.
    pub command_line: Vec<String>,
    /// Where it ran.
    pub machine: MachineInfo,
    /// Versions of the programs involved.
    pub versions: BTreeMap<String, String>,
    /// Run settings (rounds, stop rule, thread counts, ...), as given or defaulted.
    pub settings: BTreeMap<String, serde_json::Value>,
    /// The commands that started each process, by role (secrets elided).
    #[serde(default)]
    pub commands: BTreeMap<String, String>,
    /// What was skipped or failed, and why (a missing virtual environment, a failed row, ...).
    #[serde(default)]
    pub notes: Vec<String>,
    /// Measured rows, in first-measured order.
    pub rows: Vec<Row>,
    /// Ratios between paired rows.
    pub comparisons: Vec<Comparison>,
    /// Edge modes: time from a token's revocation at the core to the runtime's first 401
    /// for it, one entry per edge mode measured (absent in runs without edge modes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub revocations: Vec<Revocation>,
}

/// Revocation latency of one edge mode: each sample is the time from sending
/// `POST /admin/revoke` (the token's SHA-256) to the core's HTTP socket until the runtime
/// answers a request with that token (cached by an earlier call) with 401.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Revocation {
    /// The edge mode (`edge-grpc`, `edge-http-json`).
    pub mode: String,
    /// Each measured latency, in milliseconds, in measured order.
    pub samples_ms: Vec<f64>,
    /// Tries that did not end in a 401 within the bound, and why.
    pub failures: Vec<String>,
}

impl Revocation {
    /// The `q` quantile (0 to 1) of the samples by nearest rank, `None` without samples.
    #[must_use]
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        if self.samples_ms.is_empty() {
            return None;
        }
        let mut v = self.samples_ms.clone();
        v.sort_by(f64::total_cmp);
        let rank = (q * v.len() as f64).ceil() as usize;
        Some(v[rank.clamp(1, v.len()) - 1])
    }
}

/// What identifies a row.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RowKey {
    /// `floor` (raw socket), `runtime` (a Rust client straight to the runtime),
    /// `python-hop` (a Python client straight to the runtime), `gateway` (end to end).
    pub layer: String,
    /// `uds-stream`, `http-json` or `grpc`; for the gateway layer its mode (`python`,
    /// `http-json`, `grpc`).
    pub transport: String,
    /// The client implementation, e.g. `hyper` or `tonic`.
    pub client: String,
    /// What is sent, e.g. `ping-pong`, `ping`, `tools/list`.
    pub workload: String,
    /// Requests in flight (workers, each with its own connection unless the client says so).
    pub concurrency: usize,
    /// Request payload size in bytes (the JSON-RPC body, or the raw message for the floor).
    pub payload_bytes: usize,
}

impl RowKey {
    /// What the row compares as its mode: the client for the Python hop (all its clients share
    /// one transport per socket), else the transport (for the gateway layers, the mode).
    #[must_use]
    pub fn mode(&self) -> &str {
        if self.layer == "python-hop" {
            &self.client
        } else {
            &self.transport
        }
    }
}

/// One measured configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row {
    /// What was measured.
    #[serde(flatten)]
    pub key: RowKey,
    /// Medians across rounds (sums for counts, maxima for peak RSS).
    pub summary: Metrics,
    /// One entry per round, in order.
    pub rounds: Vec<Metrics>,
}

/// Measurements of one row in one round, or their summary.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Metrics {
    /// Requests sent (successes plus errors).
    pub requests: u64,
    /// Requests that failed or were not answered with HTTP 200 and a JSON-RPC result.
    pub errors: u64,
    /// Wall time of the measured phase, in seconds.
    pub elapsed_s: f64,
    /// Requests per second.
    pub requests_per_s: f64,
    /// Latency percentiles of successful requests, in microseconds.
    pub latency_us: LatencySummary,
    /// For the `progress` workload: percentiles of the time from each progress notification's
    /// send in the upstream to its arrival at the client, in microseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notification_latency_us: Option<LatencySummary>,
    /// CPU time (user plus system) per request of each process, in microseconds, by process
    /// name (`gateway`, `runtime`, `fixture` (the upstream), `client`).
    pub cpu_us_per_request: BTreeMap<String, f64>,
    /// The clock each `cpu_us_per_request` figure came from, by process name: `schedstat`
    /// (per-thread nanoseconds), `ticks` (`/proc/PID/stat` clock ticks: no schedstat, or
    /// threads exited during the phase), `getrusage` (the Python client's own reading); in a
    /// summary, the distinct clocks of the rounds joined by `+`. Empty in runs before it was
    /// recorded (those used ticks).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub cpu_clock: BTreeMap<String, String>,
    /// Peak RSS of each process at the end of the phase, in KiB.
    pub peak_rss_kib: BTreeMap<String, u64>,
    /// Body size of a response, in bytes.
    pub response_bytes: usize,
}

impl Metrics {
    /// Medians of `rounds` (requests, errors and elapsed summed; peak RSS the maximum).
    #[must_use]
    pub fn summarize(rounds: &[Self]) -> Self {
        let med = |f: &dyn Fn(&Self) -> f64| {
            median(&rounds.iter().map(f).collect::<Vec<_>>()).unwrap_or(0.0)
        };
        let names: std::collections::BTreeSet<&String> = rounds
            .iter()
            .flat_map(|m| m.cpu_us_per_request.keys())
            .collect();
        let cpu = names
            .into_iter()
            .filter_map(|n| {
                let v: Vec<f64> = rounds
                    .iter()
                    .filter_map(|m| m.cpu_us_per_request.get(n).copied())
                    .collect();
                Some((n.clone(), median(&v)?))
            })
            .collect();
        let mut clocks: BTreeMap<String, std::collections::BTreeSet<&str>> = BTreeMap::new();
        for m in rounds {
            for (n, c) in &m.cpu_clock {
                clocks.entry(n.clone()).or_default().extend(c.split('+'));
            }
        }
        let cpu_clock = clocks
            .into_iter()
            .map(|(n, set)| (n, set.into_iter().collect::<Vec<_>>().join("+")))
            .collect();
        let mut rss = BTreeMap::new();
        for m in rounds {
            for (n, &v) in &m.peak_rss_kib {
                let e = rss.entry(n.clone()).or_insert(0);
                *e = v.max(*e);
            }
        }
        Self {
            requests: rounds.iter().map(|m| m.requests).sum(),
            errors: rounds.iter().map(|m| m.errors).sum(),
            elapsed_s: rounds.iter().map(|m| m.elapsed_s).sum(),
            requests_per_s: med(&|m| m.requests_per_s),
            latency_us: LatencySummary::median_of(
                &rounds.iter().map(|m| &m.latency_us).collect::<Vec<_>>(),
            ),
            notification_latency_us: {
                let n: Vec<&LatencySummary> = rounds
                    .iter()
                    .filter_map(|m| m.notification_latency_us.as_ref())
                    .collect();
                (!n.is_empty()).then(|| LatencySummary::median_of(&n))
            },
            cpu_us_per_request: cpu,
            cpu_clock,
            peak_rss_kib: rss,
            response_bytes: rounds.last().map_or(0, |m| m.response_bytes),
        }
    }
}

/// Ratios `numerator / denominator` of two rows measured in the same rounds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Comparison {
    /// The row on top of the fraction (e.g. the gRPC row).
    pub numerator: RowKey,
    /// The row below (e.g. the HTTP/JSON row).
    pub denominator: RowKey,
    /// Median of the per-round ratios.
    pub median: Ratios,
    /// One entry per round in which both rows were measured.
    pub rounds: Vec<Ratios>,
}

/// Ratios of the main metrics of two rows in one round (or their medians).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Ratios {
    /// Requests per second.
    pub requests_per_s: f64,
    /// Median latency.
    pub p50: f64,
    /// 99th percentile latency.
    pub p99: f64,
    /// CPU per request, by process name present in both rows.
    pub cpu_per_request: BTreeMap<String, f64>,
}

impl Comparison {
    /// Ratios of `num` over `den`, round by round (rounds missing from either are skipped).
    #[must_use]
    pub fn between(num: &Row, den: &Row) -> Self {
        let rounds: Vec<Ratios> = num
            .rounds
            .iter()
            .zip(&den.rounds)
            .map(|(n, d)| Ratios {
                requests_per_s: ratio(n.requests_per_s, d.requests_per_s),
                p50: ratio(n.latency_us.p50, d.latency_us.p50),
                p99: ratio(n.latency_us.p99, d.latency_us.p99),
                cpu_per_request: n
                    .cpu_us_per_request
                    .iter()
                    .filter_map(|(k, &v)| {
                        Some((k.clone(), ratio(v, *d.cpu_us_per_request.get(k)?)))
                    })
                    .collect(),
            })
            .collect();
        let med = |f: &dyn Fn(&Ratios) -> f64| {
            let v: Vec<f64> = rounds.iter().map(f).filter(|x| x.is_finite()).collect();
            median(&v).unwrap_or(f64::NAN)
        };
        let names: std::collections::BTreeSet<&String> = rounds
            .iter()
            .flat_map(|r| r.cpu_per_request.keys())
            .collect();
        let cpu = names
            .into_iter()
            .map(|n| {
                (
                    n.clone(),
                    med(&|r| r.cpu_per_request.get(n).copied().unwrap_or(f64::NAN)),
                )
            })
            .collect();
        let median = Ratios {
            requests_per_s: med(&|r| r.requests_per_s),
            p50: med(&|r| r.p50),
            p99: med(&|r| r.p99),
            cpu_per_request: cpu,
        };
        Self {
            numerator: num.key.clone(),
            denominator: den.key.clone(),
            median,
            rounds,
        }
    }
}

/// `a / b`, NaN when `b` is zero (JSON writes NaN as `null`).
fn ratio(a: f64, b: f64) -> f64 {
    if b == 0.0 { f64::NAN } else { a / b }
}

fn cell(v: Option<f64>, decimals: usize) -> String {
    match v {
        Some(x) if x.is_finite() => format!("{x:.decimals$}"),
        _ => "–".to_owned(),
    }
}

/// Bytes as a short human size (`100 B`, `10 KiB`, `16 MiB`).
fn size(bytes: usize) -> String {
    if bytes >= 1024 * 1024 {
        format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
    } else if bytes >= 1024 {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    } else {
        format!("{bytes} B")
    }
}

/// A settings value as plain text: strings without quotes, arrays joined by `, `.
fn plain(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Array(a) => a.iter().map(plain).collect::<Vec<_>>().join(", "),
        other => other.to_string(),
    }
}

/// Escapes text for SVG.
fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

impl Report {
    /// The rows and comparisons as Markdown tables, with a header naming the machine, the
    /// versions, the settings, the commands and the notes.
    #[must_use]
    pub fn to_markdown(&self) -> String {
        let mut out = String::new();
        let m = &self.machine;
        let _ = writeln!(
            out,
            "## mcp-bench\n\nWhere to look: the verdicts are in the \"Targets\" section after the tables; what each layer, mode and row measures is in `bench/README.md`; what the runs add up to is in `docs/findings.md`. A short run on a busy machine moves ratios by 10-30% from round to round: a target judged on one such run is a hint, not a finding. Rows with errors are named in the sections after the tables (the Python baseline behind two gateway workers fails by design: its sessions live in one worker).\n\n{} CPUs ({}), Linux {}; {}; medians across rounds; latency and CPU in µs, peak RSS in MiB; `upstream` is the fixture server, except rows marked (server-everything).\n",
            m.nproc,
            m.cpu_model,
            m.kernel,
            self.settings_header(),
        );
        for line in [self.workloads_header(), Some(self.cpu_clock_header())]
            .into_iter()
            .flatten()
        {
            let _ = writeln!(out, "{line}\n");
        }
        if !self.command_line.is_empty() {
            let _ = writeln!(out, "Command line: `{}`\n", self.command_line.join(" "));
        }
        out.push_str(
            "| layer | mode | client | workload | conc | req B | resp B | req/s | p50 | p95 | p99 | max | errors | CPU/req client | gateway | runtime | upstream | RSS gateway | runtime | upstream |\n",
        );
        out.push_str(
            "|---|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n",
        );
        let mib = |s: &Metrics, k: &str| s.peak_rss_kib.get(k).map(|&v| v as f64 / 1024.0);
        for r in &self.rows {
            let s = &r.summary;
            let k = &r.key;
            let cpu = |name: &str| cell(s.cpu_us_per_request.get(name).copied(), 1);
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                k.layer,
                k.transport,
                k.client,
                k.workload,
                k.concurrency,
                k.payload_bytes,
                s.response_bytes,
                cell(Some(s.requests_per_s), 0),
                cell(Some(s.latency_us.p50), 1),
                cell(Some(s.latency_us.p95), 1),
                cell(Some(s.latency_us.p99), 1),
                cell(Some(s.latency_us.max), 1),
                s.errors,
                cpu("client"),
                cpu("gateway"),
                cpu("runtime"),
                cpu("fixture"),
                cell(mib(s, "gateway"), 1),
                cell(mib(s, "runtime"), 1),
                cell(mib(s, "fixture"), 1),
            );
        }
        if !self.comparisons.is_empty() {
            out.push_str(
                "\n### Ratios (median of per-round ratios, req/s with the lowest and highest of its rounds; req/s above 1 means the first is faster)\n\n| layer | ratio | workload | req B | conc | req/s | p50 | p99 | gateway CPU/req | runtime CPU/req | client CPU/req |\n|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|\n",
            );
            for c in &self.comparisons {
                let r = &c.median;
                let (lo, hi) = spread(
                    c.rounds
                        .iter()
                        .map(|r| r.requests_per_s)
                        .filter(|v| v.is_finite()),
                );
                let mut rps = if lo.is_nan() {
                    cell(Some(r.requests_per_s), 2)
                } else {
                    format!("{} ({lo:.2}–{hi:.2})", cell(Some(r.requests_per_s), 2))
                };
                let errors = self.errors_in(&c.numerator) + self.errors_in(&c.denominator);
                if errors > 0 {
                    let _ = write!(rps, " — {errors} errors, not comparable");
                }
                let _ = writeln!(
                    out,
                    "| {} | {} / {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                    c.numerator.layer,
                    c.numerator.mode(),
                    c.denominator.mode(),
                    c.numerator.workload,
                    c.numerator.payload_bytes,
                    c.numerator.concurrency,
                    rps,
                    cell(Some(r.p50), 2),
                    cell(Some(r.p99), 2),
                    cell(r.cpu_per_request.get("gateway").copied(), 2),
                    cell(r.cpu_per_request.get("runtime").copied(), 2),
                    cell(r.cpu_per_request.get("client").copied(), 2),
                );
            }
        }
        out.push_str(&self.analysis_markdown());
        if !self.notes.is_empty() {
            out.push_str("\n### Notes\n\n");
            for n in &self.notes {
                let _ = writeln!(out, "- {n}");
            }
        }
        out
    }

    /// The run's rounds, stop rule, warm-up and concurrency levels as recorded in `settings`
    /// (the command line's values, defaults applied; `?` for what the run did not record),
    /// with the caps the layers apply to progress rows and rows of 1 MiB and more.
    fn settings_header(&self) -> String {
        let get = |k: &str| self.settings.get(k);
        let text = |v: Option<&serde_json::Value>| v.map_or_else(|| "?".to_owned(), plain);
        let stop = if let Some(d) = get("duration_s_per_round") {
            format!(
                "each row measured for {} s per round (`--duration`)",
                plain(d)
            )
        } else if let Some(n) = get("requests_per_round") {
            format!(
                "each row measured for {} requests per round (`--requests`; rows of 1 MiB and more at most 8 per worker)",
                plain(n)
            )
        } else {
            "each row measured for ? per round".to_owned()
        };
        format!(
            "{} rounds (`--rounds`); {stop} after {} warm-up requests (`--warmup`; progress rows at most 2 per worker, rows of 1 MiB and more at most 1 per worker); concurrency {} (`--concurrency`)",
            text(get("rounds")),
            text(get("warmup_requests")),
            text(get("concurrency")),
        )
    }

    /// Each layer's workloads (and modes or clients) as recorded in `settings`; `None` when
    /// the run recorded none. Layers whose lists are empty measured nothing and are left out.
    fn workloads_header(&self) -> Option<String> {
        let list = |k: &str| {
            self.settings
                .get(k)
                .filter(|v| v.as_array().is_some_and(|a| !a.is_empty()))
                .map(plain)
        };
        let mut parts = Vec::new();
        for (key, label, with) in [
            ("floor_payloads", "floor payloads (B)", None),
            ("workloads", "runtime", None),
            ("pyhop_workloads", "Python hop", Some("pyhop_clients")),
            ("direct_workloads", "direct to the upstream", None),
            ("gateway_workloads", "gateway", Some("gateway_modes")),
            ("state_workloads", "state", Some("state_concurrency")),
        ] {
            if let Some(w) = list(key) {
                match with.and_then(list) {
                    Some(m) => parts.push(format!("{label} ({m}): {w}")),
                    None => parts.push(format!("{label}: {w}")),
                }
            }
        }
        (!parts.is_empty()).then(|| format!("Workloads: {}.", parts.join("; ")))
    }

    /// Which clocks the CPU-per-request figures came from, with how many figures (row and
    /// process) each; runs that recorded no clock used `/proc/PID/stat` ticks.
    fn cpu_clock_header(&self) -> String {
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for r in &self.rows {
            for c in r.summary.cpu_clock.values() {
                *counts.entry(c.as_str()).or_default() += 1;
            }
        }
        if counts.is_empty() {
            return format!(
                "CPU per request: `/proc/PID/stat` clock ticks ({} per second; this run did not record its clocks).",
                self.machine.clock_ticks_per_second
            );
        }
        let each: Vec<String> = counts.iter().map(|(c, n)| format!("{c} {n}")).collect();
        format!(
            "CPU per request, figures (row × process) by clock: {}. `schedstat` is per-thread nanoseconds (`/proc/PID/task/TID/schedstat`); `ticks` is `/proc/PID/stat` in clock ticks ({} per second), used where schedstat is not kept or threads exited during the phase; `getrusage` is the Python client's own reading; `a+b`: rounds differed.",
            each.join(", "),
            self.machine.clock_ticks_per_second
        )
    }

    /// Errors of the row with `key`, 0 when there is none.
    fn errors_in(&self, key: &RowKey) -> u64 {
        self.rows
            .iter()
            .find(|r| &r.key == key)
            .map_or(0, |r| r.summary.errors)
    }

    /// The full Markdown report: [`Report::to_markdown`] plus the machine, versions, settings
    /// and the exact commands, and links to the plots.
    #[must_use]
    pub fn to_full_markdown(&self, plots: &[String]) -> String {
        let mut out = self.to_markdown();
        for p in plots {
            let _ = writeln!(out, "\n![{p}]({p})");
        }
        out.push_str("\n### Machine\n\n");
        let m = &self.machine;
        let _ = writeln!(
            out,
            "- CPUs: {}\n- CPU model: {}\n- kernel: {}\n- clock ticks per second: {}",
            m.nproc, m.cpu_model, m.kernel, m.clock_ticks_per_second
        );
        out.push_str("\n### Versions\n\n");
        for (k, v) in &self.versions {
            let _ = writeln!(out, "- {k}: {v}");
        }
        out.push_str("\n### Settings\n\n");
        for (k, v) in &self.settings {
            let _ = writeln!(out, "- {k}: {v}");
        }
        out.push_str("\n### Commands\n\n");
        for (k, v) in &self.commands {
            let _ = writeln!(out, "- {k}: `{v}`");
        }
        out
    }

    /// One SVG bar chart of requests/s per layer that has rows (`(file name, SVG text)`),
    /// one bar per row in measured order, labelled by mode, workload, size and concurrency.
    #[must_use]
    pub fn to_svgs(&self) -> Vec<(String, String)> {
        let mut layers: Vec<&str> = Vec::new();
        for r in &self.rows {
            if !layers.contains(&r.key.layer.as_str()) {
                layers.push(&r.key.layer);
            }
        }
        layers
            .into_iter()
            .map(|layer| {
                let mut rows: Vec<&Row> =
                    self.rows.iter().filter(|r| r.key.layer == layer).collect();
                rows.sort_by(|a, b| {
                    (&a.key.workload, a.key.payload_bytes, a.key.concurrency).cmp(&(
                        &b.key.workload,
                        b.key.payload_bytes,
                        b.key.concurrency,
                    ))
                });
                (format!("{layer}.svg"), bar_chart(layer, &rows))
            })
            .collect()
    }
}

/// A horizontal bar chart of the rows' median requests/s. A row with errors (failed or
/// non-200 answers counted as requests) is drawn as failed: a hatched red bar labelled with its
/// error count, and it does not set the scale, so it never looks like the fastest.
fn bar_chart(layer: &str, rows: &[&Row]) -> String {
    const BAR: usize = 18;
    const LABEL_W: usize = 380;
    const PLOT_W: usize = 420;
    let clean_max = rows
        .iter()
        .filter(|r| r.summary.errors == 0)
        .map(|r| r.summary.requests_per_s)
        .fold(0.0_f64, f64::max);
    let max = if clean_max > 0.0 {
        clean_max
    } else {
        rows.iter()
            .map(|r| r.summary.requests_per_s)
            .fold(0.0_f64, f64::max)
    }
    .max(1.0);
    let any_failed = rows.iter().any(|r| r.summary.errors > 0);
    let height = 40 + rows.len() * (BAR + 6) + 10;
    let width = LABEL_W + PLOT_W + 90;
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">
<text x="10" y="20" font-size="14" font-weight="bold">{} — requests/s (median of rounds)</text>
"#,
        xml(layer)
    );
    if any_failed {
        svg.push_str(r##"<defs><pattern id="failed" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)"><rect width="6" height="6" fill="#fde0e0"/><line x1="0" y1="0" x2="0" y2="6" stroke="#c0392b" stroke-width="3"/></pattern></defs>
"##);
    }
    let palette = |mode: &str| match mode {
        "grpc" | "grpc.aio" => "#2a9d8f",
        "http-json" | "httpx" | "hyper" => "#e76f51",
        "aiohttp" | "http-json-httpx" => "#f4a261",
        "python" => "#264653",
        _ => "#8d99ae",
    };
    for (i, r) in rows.iter().enumerate() {
        let y = 34 + i * (BAR + 6);
        let k = &r.key;
        let mode = k.mode();
        let label = format!(
            "{mode} · {} {} · c={}",
            k.workload,
            size(k.payload_bytes),
            k.concurrency
        );
        let rps = r.summary.requests_per_s;
        let w = (rps / max * PLOT_W as f64)
            .round()
            .clamp(1.0, PLOT_W as f64);
        let errors = r.summary.errors;
        let (fill, stroke, value) = if errors > 0 {
            (
                "url(#failed)".to_owned(),
                r##" stroke="#c0392b""##,
                format!("{rps:.0} · failed: {errors} errors"),
            )
        } else {
            (
                palette(if k.layer == "python-hop" {
                    &k.client
                } else {
                    &k.transport
                })
                .to_owned(),
                "",
                format!("{rps:.0}"),
            )
        };
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{}" text-anchor="end">{}</text><rect x="{}" y="{y}" width="{w}" height="{BAR}" fill="{fill}"{stroke}/><text x="{}" y="{}"{}>{}</text>"#,
            LABEL_W - 6,
            y + BAR - 5,
            xml(&label),
            LABEL_W,
            LABEL_W as f64 + w + 4.0,
            y + BAR - 5,
            if errors > 0 {
                r##" fill="#c0392b""##
            } else {
                ""
            },
            xml(&value),
        );
    }
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Markdown report of `rows` and `comparisons` with `settings`, everything else empty.
    fn markdown_of(
        rows: Vec<Row>,
        comparisons: Vec<Comparison>,
        settings: BTreeMap<String, serde_json::Value>,
    ) -> String {
        Report {
            schema: SCHEMA.into(),
            started_unix_s: 0,
            command_line: vec![],
            machine: MachineInfo::collect(),
            versions: BTreeMap::new(),
            settings,
            commands: BTreeMap::new(),
            notes: vec![],
            rows,
            comparisons,
            revocations: vec![],
        }
        .to_markdown()
    }

    fn metrics(rps: f64, cpu: f64) -> Metrics {
        Metrics {
            requests: 10,
            requests_per_s: rps,
            cpu_us_per_request: [("runtime".to_owned(), cpu)].into(),
            ..Metrics::default()
        }
    }

    fn row(transport: &str, rounds: Vec<Metrics>) -> Row {
        Row {
            key: RowKey {
                layer: "runtime".into(),
                transport: transport.into(),
                client: "c".into(),
                workload: "ping".into(),
                concurrency: 1,
                payload_bytes: 40,
            },
            summary: Metrics::summarize(&rounds),
            rounds,
        }
    }

    #[test]
    fn summaries_and_ratios_are_medians() {
        let http = row(
            "http-json",
            vec![
                metrics(100.0, 10.0),
                metrics(200.0, 20.0),
                metrics(300.0, 30.0),
            ],
        );
        let grpc = row(
            "grpc",
            vec![
                metrics(50.0, 20.0),
                metrics(400.0, 20.0),
                metrics(150.0, 30.0),
            ],
        );
        assert_eq!(http.summary.requests, 30);
        assert!((http.summary.requests_per_s - 200.0).abs() < 1e-9);
        let c = Comparison::between(&grpc, &http);
        // Per-round rps ratios 0.5, 2.0, 0.5 -> median 0.5 (not 250/200).
        assert!((c.median.requests_per_s - 0.5).abs() < 1e-9);
        assert!((c.median.cpu_per_request["runtime"] - 1.0).abs() < 1e-9);
        let md = markdown_of(vec![http, grpc], vec![c], BTreeMap::new());
        assert!(
            md.contains("| runtime | grpc / http-json | ping | 40 | 1 |"),
            "{md}"
        );
    }

    #[test]
    fn rows_with_errors_are_drawn_as_failed() {
        let clean = row("http-json", vec![metrics(100.0, 1.0)]);
        let mut failed = row("grpc", vec![metrics(400.0, 1.0)]);
        failed.rounds[0].errors = 7;
        failed.summary = Metrics::summarize(&failed.rounds);
        let svg = bar_chart("runtime", &[&clean, &failed]);
        // The clean row sets the scale: the full plot width, though the failed row counted
        // more answers per second.
        assert!(
            svg.contains(r##"width="420" height="18" fill="#e76f51"/>"##),
            "{svg}"
        );
        assert!(svg.contains(r#"<pattern id="failed""#), "{svg}");
        assert!(
            svg.contains(r##"width="420" height="18" fill="url(#failed)" stroke="#c0392b"/>"##),
            "{svg}"
        );
        assert!(svg.contains("400 · failed: 7 errors</text>"), "{svg}");
        // Without errors, no pattern and no failure label.
        let svg = bar_chart("runtime", &[&clean]);
        assert!(!svg.contains("failed"), "{svg}");

        let c = Comparison::between(&failed, &clean);
        let md = markdown_of(vec![clean, failed], vec![c], BTreeMap::new());
        assert!(
            md.contains("| 4.00 (4.00–4.00) — 7 errors, not comparable |"),
            "{md}"
        );
    }

    #[test]
    fn the_header_lists_workloads_and_cpu_clocks() {
        let mut a = metrics(100.0, 1.0);
        a.cpu_clock = [("runtime".to_owned(), "schedstat".to_owned())].into();
        let mut b = metrics(100.0, 1.0);
        b.cpu_clock = [("runtime".to_owned(), "ticks".to_owned())].into();
        let mixed = row("http-json", vec![a.clone(), b]);
        assert_eq!(mixed.summary.cpu_clock["runtime"], "schedstat+ticks");
        let fine = row("grpc", vec![a]);
        let settings = [
            ("workloads", serde_json::json!(["ping"])),
            ("gateway_workloads", serde_json::json!([])),
            ("pyhop_workloads", serde_json::json!(["ping", "echo1k"])),
            ("pyhop_clients", serde_json::json!(["httpx"])),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let md = markdown_of(vec![mixed, fine], vec![], settings);
        assert!(
            md.contains("Workloads: runtime: ping; Python hop (httpx): ping, echo1k.\n"),
            "{md}"
        );
        assert!(!md.contains("gateway:"), "{md}");
        assert!(
            md.contains(
                "CPU per request, figures (row × process) by clock: schedstat 1, schedstat+ticks 1."
            ),
            "{md}"
        );
        assert!(md.contains("? rounds (`--rounds`)"), "{md}");
    }

    #[test]
    fn the_reference_run_summarises_to_its_own_summaries() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../bench/results/reference/results.json"
        );
        let mut value: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        // JSON keeps a NaN ratio as null; the ratios are not what is checked here.
        value["comparisons"] = serde_json::json!([]);
        let report: Report = serde_json::from_value(value).unwrap();
        assert!(!report.rows.is_empty());
        for r in &report.rows {
            let mut again = Metrics::summarize(&r.rounds);
            // A sum of parsed floats may differ in the last place (serde_json's parser).
            assert!(
                (again.elapsed_s - r.summary.elapsed_s).abs() < 1e-9,
                "{:?}",
                r.key
            );
            again.elapsed_s = r.summary.elapsed_s;
            assert_eq!(
                serde_json::to_value(again).unwrap(),
                serde_json::to_value(&r.summary).unwrap(),
                "{:?}",
                r.key
            );
        }
    }
}
