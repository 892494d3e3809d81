//! What the rows of one run say: the targets checked one by one, the progress
//! notification latency, where the time of a 1 KiB `tools/call` goes, the cost of compiling
//! the gRPC adapter in, and the two-worker gateway. Everything here is derived from the rows
//! and ratios of the same [`Report`]; nothing is measured again.

use std::fmt::Write as _;

use serde_json::Value;

use crate::report::{Comparison, Report, Row, RowKey};
use crate::stats::{LatencySummary, spread};

/// `tools/call echo` with a 1 KiB text: the request size of the breakdown rows.
const ECHO_1K: &str = "tools/call echo";

/// How a target stands given the spread of its measure over the rounds: noise within that
/// spread cannot flip a verdict, because a target is only judged where the whole spread is on
/// one side of its threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verdict {
    /// The whole spread is on the good side of the threshold.
    Met,
    /// The spread crosses the threshold (or is unknown): neither met nor missed.
    Even,
    /// The whole spread is on the bad side of the threshold (or the rows cannot be compared).
    Missed,
}

impl Verdict {
    /// A target "at least `threshold`" against the spread `lo..=hi` of its rounds (e.g. a
    /// ratio's lowest and highest per-round value): met when `lo >= threshold`, missed when
    /// `hi < threshold`, even otherwise (also when either bound is NaN).
    #[must_use]
    pub fn at_least(lo: f64, hi: f64, threshold: f64) -> Self {
        if lo.is_nan() || hi.is_nan() {
            Self::Even
        } else if lo >= threshold {
            Self::Met
        } else if hi < threshold {
            Self::Missed
        } else {
            Self::Even
        }
    }

    /// A target "under `threshold`" against the spread `lo..=hi` of its rounds: met when
    /// `hi < threshold`, missed when `lo >= threshold`, even otherwise (also with a NaN bound).
    #[must_use]
    pub fn under(lo: f64, hi: f64, threshold: f64) -> Self {
        if lo.is_nan() || hi.is_nan() {
            Self::Even
        } else if hi < threshold {
            Self::Met
        } else if lo >= threshold {
            Self::Missed
        } else {
            Self::Even
        }
    }

    /// A target that must hold for every item: missed when any item is missed, else even when
    /// any is even, else met (also when there is no item).
    #[must_use]
    pub fn all(items: impl IntoIterator<Item = Self>) -> Self {
        items.into_iter().max().unwrap_or(Self::Met)
    }

    /// `**met**`, `**even**` or `**missed**`.
    #[must_use]
    pub fn markdown(self) -> &'static str {
        match self {
            Self::Met => "**met**",
            Self::Even => "**even**",
            Self::Missed => "**missed**",
        }
    }
}

/// The lowest and highest finite per-round req/s ratio of `c`.
/// The runtime's CPU-per-request ratio of `c`, two decimals, or "–" without one.
fn runtime_cpu(c: &Comparison) -> String {
    cpu_ratio(c, "runtime")
}

/// The median ratio of `process`'s CPU per request (`runtime`, `gateway`), `–` when not
/// measured.
fn cpu_ratio(c: &Comparison, process: &str) -> String {
    c.median
        .cpu_per_request
        .get(process)
        .map_or_else(|| "–".to_owned(), |v| format!("{v:.2}"))
}

/// The rows of a metrics-cost table: workload, concurrency, the req/s ratio with its lowest and
/// highest round, the p50 ratio, `process`'s CPU-per-request ratio, and the 0.97 target judged
/// on the spread.
fn cost_rows(out: &mut String, cmp: &[&Comparison], process: &str) {
    for c in cmp {
        let (lo, hi) = rps_spread(c);
        let _ = writeln!(
            out,
            "| {} | {} | {:.3} | {lo:.3} | {hi:.3} | {:.2} | {} | {} |",
            c.numerator.workload,
            c.numerator.concurrency,
            c.median.requests_per_s,
            c.median.p50,
            cpu_ratio(c, process),
            Verdict::at_least(lo, hi, 0.97).markdown(),
        );
    }
}

fn rps_spread(c: &Comparison) -> (f64, f64) {
    spread(
        c.rounds
            .iter()
            .map(|r| r.requests_per_s)
            .filter(|v| v.is_finite()),
    )
}

/// `c`'s median req/s ratio with the spread of its rounds: `0.80x (0.50–0.90)`, with
/// `decimals` digits.
fn rps_text(c: &Comparison, decimals: usize) -> String {
    let (lo, hi) = rps_spread(c);
    format!(
        "{:.decimals$}x ({lo:.decimals$}–{hi:.decimals$})",
        c.median.requests_per_s
    )
}

/// (mode, concurrency, added p50 µs, lowest and highest per-round added p50 µs).
type Added = (String, usize, f64, f64, f64);

impl Report {
    /// The row of `layer` whose mode (the client for the Python hop, else the transport) is
    /// `mode`, for `workload` at `concurrency`, with the request size `payload` when given.
    #[must_use]
    pub fn row(
        &self,
        layer: &str,
        mode: &str,
        workload: &str,
        payload: Option<usize>,
        concurrency: usize,
    ) -> Option<&Row> {
        self.rows.iter().find(|r| {
            let k = &r.key;
            k.layer == layer
                && k.mode() == mode
                && k.workload == workload
                && k.concurrency == concurrency
                && payload.is_none_or(|p| k.payload_bytes == p)
        })
    }

    fn comparisons_of(&self, layer: &str, num: &str, den: &str) -> Vec<&Comparison> {
        self.comparisons
            .iter()
            .filter(|c| {
                c.numerator.layer == layer
                    && c.numerator.mode() == num
                    && c.denominator.mode() == den
            })
            .collect()
    }

    /// Request size of the 1 KiB echo rows, from the rows themselves.
    fn echo_1k_payload(&self, layer: &str) -> Option<usize> {
        self.rows
            .iter()
            .filter(|r| r.key.layer == layer && r.key.workload == ECHO_1K)
            .map(|r| r.key.payload_bytes)
            .find(|&p| (1024..1024 + 256).contains(&p))
    }

    /// The derived sections as Markdown (empty sections are left out).
    #[must_use]
    pub fn analysis_markdown(&self) -> String {
        let mut out = String::new();
        self.targets(&mut out);
        self.progress_latency(&mut out);
        self.breakdown(&mut out);
        self.zero_overhead(&mut out);
        self.metrics_cost(&mut out);
        self.tracing_cost(&mut out);
        self.grpc_settings(&mut out);
        self.two_workers(&mut out);
        self.edge(&mut out);
        self.state(&mut out);
        out
    }

    fn targets(&self, out: &mut String) {
        let mut lines: Vec<String> = Vec::new();
        let verdict = |ok: bool| if ok { "**met**" } else { "**missed**" };

        let e2e = self.comparisons_of("gateway", "grpc", "http-json");
        if !e2e.is_empty() {
            let worst = e2e
                .iter()
                .filter(|c| c.median.requests_per_s.is_finite())
                .min_by(|a, b| a.median.requests_per_s.total_cmp(&b.median.requests_per_s));
            if let Some(w) = worst {
                let judged: Vec<(Verdict, &&Comparison)> = e2e
                    .iter()
                    .map(|c| {
                        let (lo, hi) = rps_spread(c);
                        (Verdict::at_least(lo, hi, 1.0), c)
                    })
                    .collect();
                let list = |v: Verdict| -> Vec<String> {
                    judged
                        .iter()
                        .filter(|(j, _)| *j == v)
                        .map(|(_, c)| {
                            format!(
                                "{} {} B c={} ({})",
                                c.numerator.workload,
                                c.numerator.payload_bytes,
                                c.numerator.concurrency,
                                rps_text(c, 2)
                            )
                        })
                        .collect()
                };
                let (missed, even) = (list(Verdict::Missed), list(Verdict::Even));
                let mut tail = String::new();
                if !missed.is_empty() {
                    let _ = write!(tail, "; every round below 1: {}", missed.join(", "));
                }
                if !even.is_empty() {
                    let _ = write!(tail, "; rounds on both sides of 1: {}", even.join(", "));
                }
                lines.push(format!(
                    "gRPC at least matches HTTP/JSON end to end at every concurrency and payload: {}; lowest gRPC / HTTP/JSON req/s ratio {} ({} {} B c={}) over {} row pairs{tail}",
                    Verdict::all(judged.iter().map(|(v, _)| *v)).markdown(),
                    rps_text(w, 2),
                    w.numerator.workload,
                    w.numerator.payload_bytes,
                    w.numerator.concurrency,
                    e2e.len(),
                ));
            }
        }

        let hop: Vec<&Comparison> = self
            .comparisons_of("python-hop", "grpc.aio", "httpx")
            .into_iter()
            .filter(|c| c.numerator.concurrency == 16)
            .collect();
        if !hop.is_empty() {
            let v = Verdict::all(hop.iter().map(|c| {
                let (lo, hi) = rps_spread(c);
                Verdict::at_least(lo, hi, 2.0)
            }));
            let each: Vec<String> = hop
                .iter()
                .map(|c| format!("{} {}", c.numerator.workload, rps_text(c, 1)))
                .collect();
            lines.push(format!(
                "grpc.aio beats httpx by at least 2x at concurrency 16 on the Python hop: {}; {}",
                v.markdown(),
                each.join(", ")
            ));
        }

        let mut sidecar = Vec::new();
        for mode in ["http-json", "grpc"] {
            for c in self.comparisons_of("gateway", mode, "python") {
                if c.numerator.concurrency == 16 && c.numerator.workload == ECHO_1K {
                    sidecar.push((mode, c));
                }
            }
        }
        if !sidecar.is_empty() {
            // A row with errors counts its failures as answers: its ratio says nothing.
            let errors = |k: &crate::report::RowKey| {
                self.rows
                    .iter()
                    .find(|r| &r.key == k)
                    .map_or(0, |r| r.summary.errors)
            };
            let clean: Vec<&(&str, &Comparison)> = sidecar
                .iter()
                .filter(|(_, c)| errors(&c.numerator) == 0 && errors(&c.denominator) == 0)
                .collect();
            let v = Verdict::all(clean.iter().map(|(_, c)| {
                let (lo, hi) = rps_spread(c);
                Verdict::at_least(lo, hi, 2.0)
            }));
            let each: Vec<String> = sidecar
                .iter()
                .map(|(m, c)| {
                    let (en, ed) = (errors(&c.numerator), errors(&c.denominator));
                    if en + ed > 0 {
                        format!(
                            "{m} {} B not comparable ({en} errors in {m}, {ed} in python)",
                            c.numerator.payload_bytes
                        )
                    } else {
                        format!("{m} {} B {}", c.numerator.payload_bytes, rps_text(c, 2))
                    }
                })
                .collect();
            lines.push(format!(
                "the Rust-sidecar modes serve tools/call echo at least 2x the Python baseline's req/s at concurrency 16: {}; {}",
                v.markdown(),
                each.join(", ")
            ));
        }

        let big: Vec<&Row> = self
            .rows
            .iter()
            .filter(|r| {
                r.key.layer == "gateway"
                    && r.key.workload == ECHO_1K
                    && r.key.payload_bytes >= 16 * 1024 * 1024
            })
            .collect();
        if big.is_empty() {
            lines.push(
                "a 16 MiB result completes on every path without error: not measured in this run (BENCH_PROFILE=full measures it)".to_owned(),
            );
        } else {
            let ok = big
                .iter()
                .all(|r| r.summary.errors == 0 && r.summary.requests > 0);
            let each: Vec<String> = big
                .iter()
                .map(|r| {
                    format!(
                        "{} c={}: {} requests, {} errors",
                        r.key.transport, r.key.concurrency, r.summary.requests, r.summary.errors
                    )
                })
                .collect();
            lines.push(format!(
                "a 16 MiB result completes on every path without error: {}; {}",
                verdict(ok),
                each.join("; ")
            ));
        }

        let added = self.progress_added();
        let mut levels: Vec<usize> = added.iter().map(|a| a.1).collect();
        levels.sort_unstable();
        levels.dedup();
        for c in levels {
            // The target is about the gateway plus the boundary: the two proxied socket modes
            // (the edge modes are listed, not judged).
            let socket: Vec<&Added> = added
                .iter()
                .filter(|a| a.1 == c && (a.0 == "http-json" || a.0 == "grpc"))
                .collect();
            if socket.is_empty() {
                continue;
            }
            let v = Verdict::all(socket.iter().map(|a| Verdict::under(a.3, a.4, 1000.0)));
            let each: Vec<String> = added
                .iter()
                .filter(|a| a.1 == c)
                .map(|(m, _, a, lo, hi)| format!("{m} {a:.0} µs ({lo:.0}–{hi:.0})"))
                .collect();
            lines.push(format!(
                "the gateway plus boundary add under 1 ms p50 to each progress notification, concurrency {c}: {} (socket modes); added p50 over the direct path (range over rounds): {}",
                v.markdown(),
                each.join(", ")
            ));
        }
        self.edge_targets(&mut lines);
        if !lines.is_empty() {
            out.push_str("\n### Targets\n\n");
            for l in lines {
                let _ = writeln!(out, "- {l}");
            }
        }
    }

    /// Errors of the row with `key` (0 when there is none).
    fn errors_of(&self, key: &RowKey) -> u64 {
        self.rows
            .iter()
            .find(|r| &r.key == key)
            .map_or(0, |r| r.summary.errors)
    }

    /// The edge mode's targets (issue 14), as ratios between rows of this run: each edge mode
    /// without hooks against the runtime layer's Rust-client (hyper, HTTP/JSON) row of the same
    /// workload, size and concurrency (at least 0.75x) and against the proxied gRPC mode on
    /// `tools/call echo` at concurrency 16 (at least 3x); with the hook, gRPC against HTTP/JSON
    /// callbacks (reported, no target).
    fn edge_targets(&self, lines: &mut Vec<String>) {
        let label =
            |k: &RowKey| format!("{} {} B c={}", k.workload, k.payload_bytes, k.concurrency);
        for mode in ["edge-grpc", "edge-http-json"] {
            let rows: Vec<&Row> = self
                .rows
                .iter()
                .filter(|r| r.key.layer == "gateway" && r.key.transport == mode)
                .collect();
            if rows.is_empty() {
                continue;
            }
            let (mut each, mut missing, mut verdicts) = (Vec::new(), Vec::new(), Vec::new());
            for r in &rows {
                let k = &r.key;
                let Some(rt) = self.row(
                    "runtime",
                    "http-json",
                    &k.workload,
                    Some(k.payload_bytes),
                    k.concurrency,
                ) else {
                    missing.push(label(k));
                    continue;
                };
                let (en, ed) = (self.errors_of(k), self.errors_of(&rt.key));
                if en + ed > 0 {
                    verdicts.push(Verdict::Missed);
                    each.push(format!(
                        "{} not comparable ({en} errors in {mode}, {ed} in the runtime row)",
                        label(k)
                    ));
                    continue;
                }
                let c = Comparison::between(r, rt);
                let (lo, hi) = rps_spread(&c);
                verdicts.push(Verdict::at_least(lo, hi, 0.75));
                each.push(format!(
                    "{} {} ({:.0} / {:.0} req/s)",
                    label(k),
                    rps_text(&c, 2),
                    r.summary.requests_per_s,
                    rt.summary.requests_per_s
                ));
            }
            let no_match = if missing.is_empty() {
                String::new()
            } else {
                format!(
                    "; the runtime layer has no matching row for {}",
                    missing.join(", ")
                )
            };
            if each.is_empty() {
                lines.push(format!(
                    "{mode} without hooks serves at least 0.75x the runtime layer's Rust-client row: not measured (the runtime layer has no row of the same workload, size and concurrency){no_match}"
                ));
            } else {
                lines.push(format!(
                    "{mode} without hooks serves at least 0.75x the req/s of the runtime layer's Rust-client row (hyper, HTTP/JSON over its Unix socket) of the same workload, size and concurrency: {}; {}{no_match}",
                    Verdict::all(verdicts).markdown(),
                    each.join(", ")
                ));
            }

            let vs_grpc: Vec<&Comparison> = self
                .comparisons_of("gateway", mode, "grpc")
                .into_iter()
                .filter(|c| c.numerator.workload == ECHO_1K && c.numerator.concurrency == 16)
                .collect();
            if vs_grpc.is_empty() {
                lines.push(format!(
                    "{mode} without hooks serves at least 3x the proxied gRPC mode on tools/call echo at concurrency 16: not measured (no pair of rows in this run)"
                ));
            } else {
                let mut verdicts = Vec::new();
                let each: Vec<String> = vs_grpc
                    .iter()
                    .map(|c| {
                        let (en, ed) =
                            (self.errors_of(&c.numerator), self.errors_of(&c.denominator));
                        if en + ed > 0 {
                            verdicts.push(Verdict::Missed);
                            format!(
                                "{} B not comparable ({en} errors in {mode}, {ed} in grpc)",
                                c.numerator.payload_bytes
                            )
                        } else {
                            let (lo, hi) = rps_spread(c);
                            verdicts.push(Verdict::at_least(lo, hi, 3.0));
                            format!("{} B {}", c.numerator.payload_bytes, rps_text(c, 2))
                        }
                    })
                    .collect();
                lines.push(format!(
                    "{mode} without hooks serves at least 3x the proxied gRPC mode's req/s on tools/call echo at concurrency 16: {}; {}",
                    Verdict::all(verdicts).markdown(),
                    each.join(", ")
                ));
            }
        }
        let hooked = self.comparisons_of("gateway", "edge-grpc+hook", "edge-http-json+hook");
        if !hooked.is_empty() {
            let each: Vec<String> = hooked
                .iter()
                .map(|c| {
                    format!(
                        "{}: req/s {}, core CPU per call {:.2}x",
                        label(&c.numerator),
                        rps_text(c, 2),
                        c.median
                            .cpu_per_request
                            .get("gateway")
                            .copied()
                            .unwrap_or(f64::NAN)
                    )
                })
                .collect();
            lines.push(format!(
                "with a pre-invoke hook on the called tool, edge-grpc over edge-http-json (gRPC against HTTP/JSON callbacks; reported, no target): {}",
                each.join("; ")
            ));
        }
    }

    /// The edge modes: what their columns mean, and the revocation latency.
    fn edge(&self, out: &mut String) {
        let edge_rows = self
            .rows
            .iter()
            .any(|r| r.key.layer == "gateway" && r.key.transport.starts_with("edge-"));
        if !edge_rows && self.revocations.is_empty() {
            return;
        }
        out.push_str("\n### Edge mode\n\nIn the `edge-*` rows there is no gateway: a runtime of their own serves the public endpoint (`--public-listen`) and asks the Python core (`python -m mcp_gateway core`) for each caller and hook over the core's Unix socket, on gRPC (`edge-grpc`) or HTTP/JSON (`edge-http-json`). Their \"gateway\" CPU and RSS columns are the core's process, their \"runtime\" columns the edge runtime's. `+hook` rows run against a core whose deny-list registers a `pre_invoke` hook on the called tool (for a team the bench's caller is not in: the hook is asked on every call and never refuses); the other edge rows' core has no plugin.\n");
        if self.revocations.is_empty() {
            out.push_str("\nRevocation latency: not measured in this run.\n");
            return;
        }
        out.push_str("\nRevocation latency: each sample is one fresh token that opened a session and made a call (its caller cached by the runtime), then was revoked by its SHA-256 with `POST /admin/revoke` on the core's HTTP socket; the sample is the time from sending that request to the runtime's first 401 for the token, while the session sends `ping` back to back (ms).\n\n| mode | samples | p50 | p99 | max | failures |\n|---|--:|--:|--:|--:|--:|\n");
        let f = |v: Option<f64>| v.map_or_else(|| "–".to_owned(), |v| format!("{v:.2}"));
        for r in &self.revocations {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} |",
                r.mode,
                r.samples_ms.len(),
                f(r.quantile_ms(0.5)),
                f(r.quantile_ms(0.99)),
                f(r.quantile_ms(1.0)),
                r.failures.len()
            );
        }
        for r in &self.revocations {
            for e in r.failures.iter().take(3) {
                let _ = writeln!(out, "\n- {} failure: {e}", r.mode);
            }
        }
    }

    /// Notification latency of the progress row straight to the upstream at `concurrency`.
    fn direct_progress(&self, concurrency: usize) -> Option<LatencySummary> {
        self.row(
            "direct",
            "upstream",
            "tools/call progress",
            None,
            concurrency,
        )
        .and_then(|d| d.summary.notification_latency_us)
    }

    /// (mode, concurrency, p50 added over the direct row in µs, and the lowest and highest
    /// per-round added p50 (round `i` of the row minus round `i` of the direct row)) for each
    /// gateway progress row.
    fn progress_added(&self) -> Vec<Added> {
        let mut v = Vec::new();
        for r in self
            .rows
            .iter()
            .filter(|r| r.key.layer == "gateway" && r.key.workload == "tools/call progress")
        {
            let direct = self.direct_progress(r.key.concurrency);
            if let (Some(n), Some(d)) = (r.summary.notification_latency_us, direct) {
                let direct_rounds = self
                    .row(
                        "direct",
                        "upstream",
                        "tools/call progress",
                        None,
                        r.key.concurrency,
                    )
                    .map(|d| d.rounds.as_slice())
                    .unwrap_or_default();
                let (lo, hi) = spread(r.rounds.iter().zip(direct_rounds).filter_map(|(a, b)| {
                    Some(a.notification_latency_us?.p50 - b.notification_latency_us?.p50)
                }));
                v.push((
                    r.key.transport.clone(),
                    r.key.concurrency,
                    n.p50 - d.p50,
                    lo,
                    hi,
                ));
            }
        }
        v
    }

    fn progress_latency(&self, out: &mut String) {
        let rows: Vec<&Row> = self
            .rows
            .iter()
            .filter(|r| r.summary.notification_latency_us.is_some())
            .collect();
        if rows.is_empty() {
            return;
        }
        out.push_str(
            "\n### Progress notification latency\n\nTime from the fixture sending each progress notification (stamped in its message) to its arrival at the load generator, µs, median across rounds. `direct` is the load generator talking to the fixture itself; `added` is a row's p50 minus the direct p50 at the same concurrency.\n\n| path | conc | notifications p50 | p95 | p99 | max | added p50 |\n|---|--:|--:|--:|--:|--:|--:|\n",
        );
        for r in rows {
            let n = r.summary.notification_latency_us.unwrap_or_default();
            let direct = self.direct_progress(r.key.concurrency);
            let added = match (r.key.layer.as_str(), direct) {
                ("direct", _) | (_, None) => "–".to_owned(),
                (_, Some(d)) => format!("{:.0}", n.p50 - d.p50),
            };
            let path = if r.key.layer == "direct" {
                "direct (no gateway)".to_owned()
            } else {
                format!("gateway {}", r.key.transport)
            };
            let _ = writeln!(
                out,
                "| {path} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {added} |",
                r.key.concurrency, n.p50, n.p95, n.p99, n.max
            );
        }
    }

    fn breakdown(&self, out: &mut String) {
        let p50 = |r: Option<&Row>| r.map(|r| r.summary.latency_us.p50);
        let direct = p50(self.row("direct", "upstream", ECHO_1K, None, 1));
        let Some(d) = direct else {
            return;
        };
        let gw_payload = self.echo_1k_payload("gateway");
        let rt_payload = self.echo_1k_payload("runtime");
        let hop_payload = self.echo_1k_payload("python-hop");
        let mut text = String::new();
        text.push_str(
            "\n### Where the time goes: `tools/call echo` 1 KiB at concurrency 1\n\nMedian latencies of the chain, each measured alone in this run, and the legs as their differences (µs): `upstream` is the load generator calling the fixture directly; `runtime + boundary` is the Rust client through the runtime minus that; `Python client` is the Python hop (the gateway's client library calling the runtime) minus the Rust client; `client to gateway + gateway` is the end-to-end row minus the Python hop. The CPU columns are the end-to-end row's CPU per request of each process (at concurrency 1 they are on the critical path).\n\n| mode | end to end p50 | upstream | runtime + boundary | Python client | client to gateway + gateway | CPU gateway | CPU runtime | CPU upstream | CPU load generator |\n|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n",
        );
        let mut any = false;
        // Runs before the gateway had two HTTP/JSON clients measured `http-json` with httpx.
        let http_json_client = if self
            .row("gateway", "http-json-httpx", ECHO_1K, gw_payload, 1)
            .is_some()
        {
            "aiohttp"
        } else {
            "httpx"
        };
        for (mode, transport, pyclient) in [
            ("python", None, None),
            ("http-json", Some("http-json"), Some(http_json_client)),
            ("http-json-httpx", Some("http-json"), Some("httpx")),
            ("grpc", Some("grpc"), Some("grpc.aio")),
        ] {
            let Some(e2e_row) = self.row("gateway", mode, ECHO_1K, gw_payload, 1) else {
                continue;
            };
            any = true;
            let e = e2e_row.summary.latency_us.p50;
            let cpu = |k: &str| {
                e2e_row
                    .summary
                    .cpu_us_per_request
                    .get(k)
                    .map_or_else(|| "–".to_owned(), |v| format!("{v:.0}"))
            };
            let r = transport.and_then(|t| p50(self.row("runtime", t, ECHO_1K, rt_payload, 1)));
            let p = pyclient.and_then(|c| p50(self.row("python-hop", c, ECHO_1K, hop_payload, 1)));
            let f = |v: Option<f64>| v.map_or_else(|| "–".to_owned(), |v| format!("{v:.0}"));
            let (leg_rt, leg_py, leg_gw) = match (r, p) {
                (Some(r), Some(p)) => (Some(r - d), Some(p - r), Some(e - p)),
                _ => (None, None, Some(e - d)),
            };
            let _ = writeln!(
                text,
                "| {mode} | {e:.0} | {d:.0} | {} | {} | {} | {} | {} | {} | {} |",
                f(leg_rt),
                f(leg_py),
                f(leg_gw),
                cpu("gateway"),
                cpu("runtime"),
                cpu("fixture"),
                cpu("client"),
            );
        }
        if any {
            text.push_str("\nFor the Python baseline there is no runtime and no boundary: everything above the upstream round trip is the gateway with its in-process MCP runtime and the SDK's client to the upstream.\n");
            out.push_str(&text);
        }
    }

    fn zero_overhead(&self, out: &mut String) {
        let cmp = self.comparisons_of("runtime", "http-json", "http-json-nogrpc");
        let builds = self.settings.get("builds");
        if cmp.is_empty() && builds.is_none() {
            return;
        }
        out.push_str("\n### Zero overhead when disabled\n\nThe HTTP/JSON path of the runtime built with `grpc-uds` (the benchmarked binary) over the same path of a build without it, measured in the same rounds (median of per-round ratios, req/s with their lowest and highest; 1.00 is no difference).\n\n| workload | conc | req/s (min–max) | p50 | runtime CPU/req |\n|---|--:|--:|--:|--:|\n");
        for c in cmp {
            let (lo, hi) = rps_spread(c);
            let _ = writeln!(
                out,
                "| {} | {} | {:.2} ({lo:.2}–{hi:.2}) | {:.2} | {} |",
                c.numerator.workload,
                c.numerator.concurrency,
                c.median.requests_per_s,
                c.median.p50,
                runtime_cpu(c),
            );
        }
        if let Some(serde_json::Value::Object(b)) = builds {
            out.push_str("\n| build | binary bytes | stripped bytes | crates in the normal dependency tree |\n|---|--:|--:|--:|\n");
            for (name, v) in b {
                let _ = writeln!(
                    out,
                    "| {name} | {} | {} | {} |",
                    v.get("binary_bytes")
                        .map_or_else(|| "–".to_owned(), ToString::to_string),
                    v.get("stripped_bytes")
                        .map_or_else(|| "–".to_owned(), ToString::to_string),
                    v.get("dependencies")
                        .map_or_else(|| "–".to_owned(), ToString::to_string),
                );
            }
        }
    }

    /// The state layer: each mode's rows with the spread of req/s over rounds, then the
    /// ratios to the in-memory store (medians of the per-round ratios, with their range).
    fn state(&self, out: &mut String) {
        let rows: Vec<&Row> = self
            .rows
            .iter()
            .filter(|r| r.key.layer == "state")
            .collect();
        if rows.is_empty() {
            return;
        }
        out.push_str("\n### Shared state: memory, one replica on Redis, three replicas on Redis\n\nA Rust client over HTTP/JSON to the runtime with its state in memory (`memory`), to one runtime on Redis (`redis-1`) and to three runtimes on one Redis with each request sent to the next replica (`redis-3`, one session used on all three). `echo` is answered as JSON (Redis is touched only to check the session, usually served from the replica's cache); `progress` is an SSE stream whose every event is stored in Redis before it is sent. Runtime CPU of `redis-3` is the three replicas' sum; Redis CPU is the `redis-server` process.\n\n| mode | workload | conc | req/s (min–max over rounds) | p50 µs | runtime CPU/req µs | Redis CPU/req µs |\n|---|---|--:|--:|--:|--:|--:|\n");
        let cpu = |r: &Row, k: &str| {
            r.summary
                .cpu_us_per_request
                .get(k)
                .map_or_else(|| "–".to_owned(), |v| format!("{v:.0}"))
        };
        for r in &rows {
            let (lo, hi) = spread(r.rounds.iter().map(|m| m.requests_per_s));
            let _ = writeln!(
                out,
                "| {} | {} | {} | {:.0} ({lo:.0}–{hi:.0}) | {:.0} | {} | {} |",
                r.key.transport,
                r.key.workload,
                r.key.concurrency,
                r.summary.requests_per_s,
                r.summary.latency_us.p50,
                cpu(r, "runtime"),
                cpu(r, "redis"),
            );
        }
        let pairs = [
            ("redis-1", "memory"),
            ("redis-3", "memory"),
            ("redis-3", "redis-1"),
        ];
        let any = pairs
            .iter()
            .any(|(n, d)| !self.comparisons_of("state", n, d).is_empty());
        if !any {
            return;
        }
        out.push_str("\nRatios (median of the per-round ratios, range over rounds; req/s below 1 means the shared store is slower):\n\n| ratio | workload | conc | req/s | p50 | runtime CPU/req |\n|---|---|--:|--:|--:|--:|\n");
        for (n, d) in pairs {
            for c in self.comparisons_of("state", n, d) {
                let (lo, hi) = spread(c.rounds.iter().map(|r| r.requests_per_s));
                let cpu = c
                    .median
                    .cpu_per_request
                    .get("runtime")
                    .map_or_else(|| "–".to_owned(), |v| format!("{v:.2}x"));
                let _ = writeln!(
                    out,
                    "| {n} / {d} | {} | {} | {:.2}x ({lo:.2}–{hi:.2}) | {:.2}x | {cpu} |",
                    c.numerator.workload,
                    c.numerator.concurrency,
                    c.median.requests_per_s,
                    c.median.p50,
                );
            }
        }
    }

    /// The runtime with its Prometheus metrics on (`--metrics-listen`) over the same build
    /// with them off, and the gRPC mode's gateway with its metrics on
    /// (`MCP_GATEWAY_METRICS_LISTEN`, mode `grpc+metrics`) over `grpc`, each measured in the
    /// same rounds (issue 18's target: under 3% of req/s).
    fn metrics_cost(&self, out: &mut String) {
        self.runtime_metrics_cost(out);
        let cmp = self.comparisons_of("gateway", "grpc+metrics", "grpc");
        if cmp.is_empty() {
            return;
        }
        out.push_str("\n### Cost of the gateway's metrics\n\nEnd to end through the gateway in gRPC mode started with `MCP_GATEWAY_METRICS_LISTEN` (every request counted and timed in its Prometheus metrics) over the same gateway without it, against the same runtime, measured in the same rounds (median of per-round ratios, with their lowest and highest; 1.00 is no difference; the gateway's CPU per request is the steadier measure on a busy machine; target: req/s at least 0.97, judged on the lowest and highest: **met** when both are at least 0.97, **missed** when both are below, **even** otherwise).\n\n| workload | conc | req/s | min | max | p50 | gateway CPU/req | target |\n|---|--:|--:|--:|--:|--:|--:|---|\n");
        cost_rows(out, &cmp, "gateway");
    }

    fn runtime_metrics_cost(&self, out: &mut String) {
        let cmp = self.comparisons_of("runtime", "http-json-metrics", "http-json");
        if cmp.is_empty() {
            return;
        }
        out.push_str("\n### Cost of the metrics\n\nThe HTTP/JSON path of a runtime started with `--metrics-listen` (every request counted and timed in the Prometheus metrics) over the same binary without it, measured in the same rounds (median of per-round ratios, with their lowest and highest; 1.00 is no difference; target: req/s at least 0.97, judged on the lowest and highest: **met** when both are at least 0.97, **missed** when both are below, **even** otherwise).\n\n| workload | conc | req/s | min | max | p50 | runtime CPU/req | target |\n|---|--:|--:|--:|--:|--:|--:|---|\n");
        cost_rows(out, &cmp, "runtime");
    }

    /// Runtimes exporting OpenTelemetry traces (`OTEL_*` set) over the same binary with
    /// tracing off, measured in the same rounds: one tracing every request (mode
    /// `http-json-traced`), one sampling 1% (`http-json-sampled`). Issue 18 sets a target for
    /// the metrics only (3% of req/s); the same target is applied here.
    fn tracing_cost(&self, out: &mut String) {
        let kinds = [
            ("http-json-traced", "Every request traced"),
            (
                "http-json-sampled",
                "1% of requests traced (`OTEL_TRACES_SAMPLER=parentbased_traceidratio`, `OTEL_TRACES_SAMPLER_ARG=0.01`)",
            ),
        ];
        let tables: Vec<(&str, Vec<&Comparison>)> = kinds
            .iter()
            .map(|&(mode, title)| (title, self.comparisons_of("runtime", mode, "http-json")))
            .filter(|(_, cmp)| !cmp.is_empty())
            .collect();
        if tables.is_empty() {
            return;
        }
        let sink = self.settings.get("otlp_sink");
        let received = match (
            sink.and_then(|s| s.get("export_requests")).and_then(Value::as_u64),
            sink.and_then(|s| s.get("bytes")).and_then(Value::as_u64),
        ) {
            (Some(0), _) => " The sink received no export: this runtime binary exports nothing (built without the `otel` feature?), so these rows measure tracing off.".to_owned(),
            (Some(n), Some(b)) => format!(" The sink received {n} export requests ({:.1} MiB of spans) by the end of the rounds.", b as f64 / 1_048_576.0),
            _ => String::new(),
        };
        let _ = write!(
            out,
            "\n### Cost of tracing\n\nThe HTTP/JSON path of a runtime exporting OpenTelemetry traces (`OTEL_EXPORTER_OTLP_ENDPOINT` set: a server span per request and a client span per upstream call, batched and sent over OTLP/HTTP to a sink in the bench process that keeps nothing) over the same binary with tracing off, measured in the same rounds (median of per-round ratios, with their lowest and highest; 1.00 is no difference; target: req/s at least 0.97, judged on the lowest and highest: **met** when both are at least 0.97, **missed** when both are below, **even** otherwise).{received}\n"
        );
        for (title, cmp) in tables {
            let _ = write!(
                out,
                "\n{title}:\n\n| workload | conc | req/s | min | max | p50 | runtime CPU/req | target |\n|---|--:|--:|--:|--:|--:|--:|---|\n"
            );
            cost_rows(out, &cmp, "runtime");
        }
    }

    /// Each gRPC variant of the runtime layer (`grpc@NAME`: other server settings, or the
    /// client's shared channel) over the `grpc` rows, measured in the same rounds (issue 19,
    /// item 3). The variant named `control` is tonic's defaults in a runtime process of its
    /// own: how far a variant moves with no setting changed. With a control, a variant is
    /// faster only when its lowest round is above the control's highest (slower: its highest
    /// below the control's lowest); without one, against 1.
    fn grpc_settings(&self, out: &mut String) {
        let cmp: Vec<&Comparison> = self
            .comparisons
            .iter()
            .filter(|c| {
                c.numerator.layer == "runtime"
                    && c.numerator.mode().starts_with("grpc@")
                    && c.denominator.mode() == "grpc"
            })
            .collect();
        if cmp.is_empty() {
            return;
        }
        let flags = self.settings.get("grpc_variants");
        out.push_str("\n### gRPC server settings\n\nThe runtime's gRPC adapter served with other HTTP/2 and tonic settings (a runtime process of the same build per variant, started with the flags shown) or reached by all workers over one shared channel, over the `grpc` rows (tonic's defaults, one channel per worker), measured in the same rounds: median of per-round ratios with the lowest and highest; req/s above 1 and CPU below 1 mean the variant is cheaper. `control` changes no setting (tonic's defaults in a process of its own): its spread is what a variant moves by chance. **faster** when every round's req/s ratio is above the control's highest (without a control: above 1), **slower** when every one is below the control's lowest (below 1), even otherwise.\n\n| variant | flags | workload | conc | req/s | min | max | p50 | runtime CPU/req | effect |\n|---|---|---|--:|--:|--:|--:|--:|--:|---|\n");
        let control = |c: &Comparison| {
            cmp.iter()
                .find(|k| {
                    k.numerator.mode() == "grpc@control"
                        && k.numerator.workload == c.numerator.workload
                        && k.numerator.concurrency == c.numerator.concurrency
                        && k.numerator.payload_bytes == c.numerator.payload_bytes
                })
                .map_or((1.0, 1.0), |k| rps_spread(k))
        };
        for &c in &cmp {
            let mode = c.numerator.mode();
            let (lo, hi) = rps_spread(c);
            let (control_lo, control_hi) = control(c);
            let effect = if mode == "grpc@control" {
                "(control)"
            } else if lo > control_hi {
                "**faster**"
            } else if hi < control_lo {
                "**slower**"
            } else {
                "even"
            };
            let f = flags
                .and_then(|v| v.get(mode))
                .and_then(Value::as_str)
                .map_or_else(|| "–".to_owned(), |f| format!("`{f}`"));
            let _ = writeln!(
                out,
                "| {} | {f} | {} {} B | {} | {:.3} | {lo:.3} | {hi:.3} | {:.2} | {} | {effect} |",
                mode.trim_start_matches("grpc@"),
                c.numerator.workload,
                c.numerator.payload_bytes,
                c.numerator.concurrency,
                c.median.requests_per_s,
                c.median.p50,
                runtime_cpu(c),
            );
        }
    }

    fn two_workers(&self, out: &mut String) {
        let rows: Vec<&Row> = self
            .rows
            .iter()
            .filter(|r| r.key.layer == "gateway-2-workers")
            .collect();
        if rows.is_empty() {
            return;
        }
        out.push_str("\n### Gateway with two uvicorn workers\n\nOne runtime behind a gateway started with `--workers 2`; each load-generator worker opens its session on one connection and sends every request on another, so the kernel may hand the two connections to different gateway workers. An error here is a request whose session the serving worker did not know (404); req/s counts answered requests, errors included.\n\n| mode | workload | conc | req/s | p50 µs | requests | errors | error share |\n|---|---|--:|--:|--:|--:|--:|--:|\n");
        for r in rows {
            let s = &r.summary;
            let share = if s.requests == 0 {
                0.0
            } else {
                s.errors as f64 / s.requests as f64
            };
            let _ = writeln!(
                out,
                "| {} | {} {} B | {} | {:.0} | {} | {} | {} | {:.0}% |",
                r.key.transport,
                r.key.workload,
                r.key.payload_bytes,
                r.key.concurrency,
                s.requests_per_s,
                if s.errors == s.requests {
                    "–".to_owned()
                } else {
                    format!("{:.0}", s.latency_us.p50)
                },
                s.requests,
                s.errors,
                share * 100.0
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::proc::MachineInfo;
    use crate::report::{Metrics, Revocation, SCHEMA};

    fn row(layer: &str, mode: &str, workload: &str, c: usize, rps: &[f64], core_cpu: f64) -> Row {
        let rounds: Vec<Metrics> = rps
            .iter()
            .map(|&r| Metrics {
                requests: 100,
                requests_per_s: r,
                cpu_us_per_request: [("gateway".to_owned(), core_cpu)].into(),
                ..Metrics::default()
            })
            .collect();
        Row {
            key: RowKey {
                layer: layer.into(),
                transport: mode.into(),
                client: "hyper".into(),
                workload: workload.into(),
                concurrency: c,
                payload_bytes: 1119,
            },
            summary: Metrics::summarize(&rounds),
            rounds,
        }
    }

    fn report(rows: Vec<Row>, revocations: Vec<Revocation>) -> Report {
        Report {
            schema: SCHEMA.into(),
            started_unix_s: 0,
            command_line: vec![],
            machine: MachineInfo::collect(),
            versions: BTreeMap::new(),
            settings: BTreeMap::new(),
            commands: BTreeMap::new(),
            notes: vec![],
            comparisons: crate::bench::compare(&rows),
            rows,
            revocations,
        }
    }

    /// A `grpc@NAME` row is compared with the `grpc` row of its workload and concurrency (and
    /// nothing else), and its effect is judged on the spread of its rounds.
    #[test]
    fn grpc_variants_are_compared_with_grpc_and_judged_on_their_spread() {
        let rows = vec![
            row("runtime", "grpc", "ping", 1, &[1000.0, 1000.0, 1000.0], 0.0),
            row(
                "runtime",
                "grpc",
                "ping",
                16,
                &[1000.0, 1000.0, 1000.0],
                0.0,
            ),
            row("runtime", "http-json", "ping", 1, &[2000.0; 3], 0.0),
            row(
                "runtime",
                "grpc@a",
                "ping",
                1,
                &[1100.0, 1050.0, 1200.0],
                0.0,
            ),
            row(
                "runtime",
                "grpc@a",
                "ping",
                16,
                &[900.0, 1100.0, 1000.0],
                0.0,
            ),
            row("runtime", "grpc@b", "ping", 1, &[900.0, 950.0, 800.0], 0.0),
        ];
        let mut r = report(rows, vec![]);
        r.settings.insert(
            "grpc_variants".into(),
            serde_json::json!({"grpc@a": "--grpc-adaptive-window"}),
        );
        let variants: Vec<(&str, &str, usize)> = r
            .comparisons
            .iter()
            .filter(|c| c.numerator.mode().contains('@'))
            .map(|c| {
                (
                    c.numerator.mode(),
                    c.denominator.mode(),
                    c.numerator.concurrency,
                )
            })
            .collect();
        assert_eq!(
            variants,
            [
                ("grpc@a", "grpc", 1),
                ("grpc@a", "grpc", 16),
                ("grpc@b", "grpc", 1)
            ]
        );
        let md = r.analysis_markdown();
        assert!(
            md.contains(
                "| a | `--grpc-adaptive-window` | ping 1119 B | 1 | 1.100 | 1.050 | 1.200 |"
            ),
            "{md}"
        );
        assert!(md.contains("| **faster** |"), "{md}");
        assert!(md.contains("| a | `--grpc-adaptive-window` | ping 1119 B | 16 | 1.000 | 0.900 | 1.100 | NaN | – | even |"), "{md}");
        assert!(
            md.contains("| b | – | ping 1119 B | 1 | 0.900 | 0.800 | 0.950 |"),
            "{md}"
        );
        assert!(md.contains("| **slower** |"), "{md}");
    }

    /// With a `control` variant (no setting changed), a variant is judged against the
    /// control's spread, not against 1.
    #[test]
    fn grpc_variants_are_judged_against_the_control_when_there_is_one() {
        let rows = vec![
            row("runtime", "grpc", "ping", 1, &[1000.0; 3], 0.0),
            row(
                "runtime",
                "grpc@control",
                "ping",
                1,
                &[950.0, 1100.0, 1150.0],
                0.0,
            ),
            row(
                "runtime",
                "grpc@a",
                "ping",
                1,
                &[1100.0, 1120.0, 1140.0],
                0.0,
            ),
            row(
                "runtime",
                "grpc@b",
                "ping",
                1,
                &[1160.0, 1200.0, 1300.0],
                0.0,
            ),
            row("runtime", "grpc@c", "ping", 1, &[900.0, 920.0, 940.0], 0.0),
        ];
        let md = report(rows, vec![]).analysis_markdown();
        let effect = |name: &str| {
            md.lines()
                .find(|l| l.starts_with(&format!("| {name} |")))
                .and_then(|l| l.trim_end_matches(" |").rsplit("| ").next())
                .unwrap_or_default()
                .to_owned()
        };
        assert_eq!(effect("control"), "(control)", "{md}");
        assert_eq!(effect("a"), "even", "{md}");
        assert_eq!(effect("b"), "**faster**", "{md}");
        assert_eq!(effect("c"), "**slower**", "{md}");
    }

    #[test]
    fn edge_targets_are_ratios_within_the_run() {
        let rows = vec![
            row(
                "runtime",
                "http-json",
                ECHO_1K,
                16,
                &[4000.0, 4000.0, 4000.0],
                0.0,
            ),
            row(
                "gateway",
                "grpc",
                ECHO_1K,
                16,
                &[1000.0, 1000.0, 1000.0],
                500.0,
            ),
            row(
                "gateway",
                "edge-grpc",
                ECHO_1K,
                16,
                &[3600.0, 3200.0, 2000.0],
                50.0,
            ),
            row(
                "gateway",
                "edge-grpc",
                "ping",
                1,
                &[9000.0, 9000.0, 9000.0],
                50.0,
            ),
            row(
                "gateway",
                "edge-http-json",
                ECHO_1K,
                16,
                &[2000.0, 2000.0, 2000.0],
                80.0,
            ),
            row(
                "gateway",
                "edge-grpc+hook",
                ECHO_1K,
                16,
                &[2000.0, 2000.0, 2000.0],
                100.0,
            ),
            row(
                "gateway",
                "edge-http-json+hook",
                ECHO_1K,
                16,
                &[1000.0, 1000.0, 1000.0],
                200.0,
            ),
        ];
        let revocation = Revocation {
            mode: "edge-grpc".into(),
            samples_ms: (1..=50).map(f64::from).collect(),
            failures: vec![],
        };
        let md = report(rows, vec![revocation]).analysis_markdown();
        // Per-round ratios 0.9, 0.8, 0.5 against the runtime row: median 0.8, but the rounds
        // lie on both sides of 0.75, so the target is neither met nor missed.
        assert!(
            md.contains("edge-grpc without hooks serves at least 0.75x the req/s of the runtime layer's Rust-client row (hyper, HTTP/JSON over its Unix socket) of the same workload, size and concurrency: **even**; tools/call echo 1119 B c=16 0.80x (0.50–0.90) (3200 / 4000 req/s)"),
            "{md}"
        );
        assert!(
            md.contains("the runtime layer has no matching row for ping 1119 B c=1"),
            "{md}"
        );
        assert!(
            md.contains("edge-grpc without hooks serves at least 3x the proxied gRPC mode's req/s on tools/call echo at concurrency 16: **even**; 1119 B 3.20x (2.00–3.60)"),
            "{md}"
        );
        assert!(md.contains("edge-http-json without hooks serves at least 0.75x the req/s of the runtime layer's Rust-client row (hyper, HTTP/JSON over its Unix socket) of the same workload, size and concurrency: **missed**; tools/call echo 1119 B c=16 0.50x (0.50–0.50)"), "{md}");
        assert!(
            md.contains(
                "tools/call echo 1119 B c=16: req/s 2.00x (2.00–2.00), core CPU per call 0.50x"
            ),
            "{md}"
        );
        assert!(
            md.contains("| edge-grpc | 50 | 25.00 | 50.00 | 50.00 | 0 |"),
            "{md}"
        );
    }

    #[test]
    fn a_target_is_met_only_when_every_round_is_on_the_good_side() {
        let rows = vec![
            row("runtime", "http-json", ECHO_1K, 16, &[4000.0; 3], 0.0),
            row("gateway", "grpc", ECHO_1K, 16, &[1000.0; 3], 500.0),
            // 0.90, 0.85, 0.80 of the runtime row; 3.6, 3.4, 3.2 of gRPC.
            row(
                "gateway",
                "edge-grpc",
                ECHO_1K,
                16,
                &[3600.0, 3400.0, 3200.0],
                50.0,
            ),
            // 0.74, 0.70, 0.60 of the runtime row: every round below 0.75.
            row(
                "gateway",
                "edge-http-json",
                ECHO_1K,
                16,
                &[2960.0, 2800.0, 2400.0],
                50.0,
            ),
        ];
        let md = report(rows, vec![]).analysis_markdown();
        assert!(
            md.contains("edge-grpc without hooks serves at least 0.75x the req/s of the runtime layer's Rust-client row (hyper, HTTP/JSON over its Unix socket) of the same workload, size and concurrency: **met**; tools/call echo 1119 B c=16 0.85x (0.80–0.90)"),
            "{md}"
        );
        assert!(
            md.contains("edge-grpc without hooks serves at least 3x the proxied gRPC mode's req/s on tools/call echo at concurrency 16: **met**; 1119 B 3.40x (3.20–3.60)"),
            "{md}"
        );
        assert!(
            md.contains("edge-http-json without hooks serves at least 0.75x the req/s of the runtime layer's Rust-client row (hyper, HTTP/JSON over its Unix socket) of the same workload, size and concurrency: **missed**; tools/call echo 1119 B c=16 0.70x (0.60–0.74)"),
            "{md}"
        );
    }

    #[test]
    fn end_to_end_ratios_straddling_one_are_even() {
        let rows = vec![
            row("gateway", "http-json", ECHO_1K, 1, &[1000.0; 3], 0.0),
            row("gateway", "grpc", ECHO_1K, 1, &[950.0, 1020.0, 1100.0], 0.0),
            row("gateway", "http-json", ECHO_1K, 16, &[1000.0; 3], 0.0),
            row(
                "gateway",
                "grpc",
                ECHO_1K,
                16,
                &[1200.0, 1300.0, 1250.0],
                0.0,
            ),
        ];
        let md = report(rows, vec![]).analysis_markdown();
        assert!(
            md.contains("gRPC at least matches HTTP/JSON end to end at every concurrency and payload: **even**; lowest gRPC / HTTP/JSON req/s ratio 1.02x (0.95–1.10) (tools/call echo 1119 B c=1) over 2 row pairs; rounds on both sides of 1: tools/call echo 1119 B c=1 (1.02x (0.95–1.10))"),
            "{md}"
        );
        // One pair wholly below 1 makes it missed, whatever the others say.
        let rows = vec![
            row("gateway", "http-json", ECHO_1K, 1, &[1000.0; 3], 0.0),
            row("gateway", "grpc", ECHO_1K, 1, &[950.0, 1020.0, 1100.0], 0.0),
            row("gateway", "http-json", ECHO_1K, 16, &[1000.0; 3], 0.0),
            row("gateway", "grpc", ECHO_1K, 16, &[800.0, 900.0, 850.0], 0.0),
        ];
        let md = report(rows, vec![]).analysis_markdown();
        assert!(
            md.contains("end to end at every concurrency and payload: **missed**; lowest gRPC / HTTP/JSON req/s ratio 0.85x (0.80–0.90) (tools/call echo 1119 B c=16) over 2 row pairs; every round below 1: tools/call echo 1119 B c=16 (0.85x (0.80–0.90)); rounds on both sides of 1: tools/call echo 1119 B c=1"),
            "{md}"
        );
    }

    #[test]
    fn the_tracing_cost_has_its_table_and_says_what_the_sink_received() {
        let rows = vec![
            row("runtime", "http-json", "ping", 16, &[1000.0; 3], 10.0),
            row(
                "runtime",
                "http-json-traced",
                "ping",
                16,
                &[900.0, 880.0, 950.0],
                10.0,
            ),
        ];
        let mut rows = rows;
        rows.extend([
            row("runtime", "http-json", "ping", 1, &[1000.0; 3], 10.0),
            row(
                "runtime",
                "http-json-sampled",
                "ping",
                1,
                &[990.0, 980.0, 1000.0],
                10.0,
            ),
        ]);
        let mut r = report(rows.clone(), vec![]);
        r.settings.insert(
            "otlp_sink".into(),
            serde_json::json!({"export_requests": 12, "bytes": 3 * 1_048_576}),
        );
        let md = r.analysis_markdown();
        assert!(md.contains("### Cost of tracing"), "{md}");
        assert!(
            md.contains("| ping | 16 | 0.900 | 0.880 | 0.950 | NaN | – | **missed** |"),
            "{md}"
        );
        assert!(md.contains("12 export requests (3.0 MiB"), "{md}");
        assert!(md.contains("1% of requests traced"), "{md}");
        assert!(
            md.contains("| ping | 1 | 0.990 | 0.980 | 1.000 | NaN | – | **met** |"),
            "{md}"
        );
        let mut off = report(rows, vec![]);
        off.settings.insert(
            "otlp_sink".into(),
            serde_json::json!({"export_requests": 0, "bytes": 0}),
        );
        assert!(
            off.analysis_markdown().contains("received no export"),
            "a build without tracing is named"
        );
    }

    #[test]
    fn the_metrics_cost_is_judged_on_its_spread() {
        let rows = vec![
            row("runtime", "http-json", "ping", 16, &[1000.0; 3], 10.0),
            row(
                "runtime",
                "http-json-metrics",
                "ping",
                16,
                &[990.0, 960.0, 1000.0],
                10.0,
            ),
            row("runtime", "http-json", "ping", 1, &[1000.0; 3], 10.0),
            row(
                "runtime",
                "http-json-metrics",
                "ping",
                1,
                &[980.0, 975.0, 990.0],
                10.0,
            ),
        ];
        let md = report(rows, vec![]).analysis_markdown();
        assert!(
            md.contains("| ping | 16 | 0.990 | 0.960 | 1.000 | NaN | – | **even** |"),
            "{md}"
        );
        assert!(
            md.contains("| ping | 1 | 0.980 | 0.975 | 0.990 | NaN | – | **met** |"),
            "{md}"
        );
        assert!(!md.contains("gateway's metrics"), "no gateway rows: {md}");
    }

    #[test]
    fn the_gateway_metrics_cost_has_a_table_of_its_own() {
        let rows = vec![
            row("gateway", "grpc", "echo", 16, &[1000.0; 3], 10.0),
            row(
                "gateway",
                "grpc+metrics",
                "echo",
                16,
                &[950.0, 940.0, 960.0],
                10.0,
            ),
        ];
        let md = report(rows, vec![]).analysis_markdown();
        assert!(md.contains("### Cost of the gateway's metrics"), "{md}");
        assert!(
            md.contains("| echo | 16 | 0.950 | 0.940 | 0.960 | NaN | 1.00 | **missed** |"),
            "{md}"
        );
        assert!(
            !md.contains("### Cost of the metrics\n"),
            "no runtime rows: {md}"
        );
    }

    #[test]
    fn verdicts_from_spreads() {
        assert_eq!(Verdict::at_least(0.8, 0.9, 0.75), Verdict::Met);
        assert_eq!(Verdict::at_least(0.75, 0.9, 0.75), Verdict::Met);
        assert_eq!(Verdict::at_least(0.7, 0.9, 0.75), Verdict::Even);
        assert_eq!(Verdict::at_least(0.6, 0.74, 0.75), Verdict::Missed);
        assert_eq!(Verdict::at_least(f64::NAN, f64::NAN, 0.75), Verdict::Even);
        assert_eq!(Verdict::under(500.0, 900.0, 1000.0), Verdict::Met);
        assert_eq!(Verdict::under(900.0, 1000.0, 1000.0), Verdict::Even);
        assert_eq!(Verdict::under(1000.0, 1200.0, 1000.0), Verdict::Missed);
        assert_eq!(Verdict::all([]), Verdict::Met);
        assert_eq!(Verdict::all([Verdict::Met, Verdict::Even]), Verdict::Even);
        assert_eq!(
            Verdict::all([Verdict::Even, Verdict::Missed, Verdict::Met]),
            Verdict::Missed
        );
        assert_eq!(Verdict::Even.markdown(), "**even**");
    }

    #[test]
    fn a_run_without_edge_rows_has_no_edge_section() {
        let rows = vec![row("gateway", "grpc", ECHO_1K, 16, &[1000.0], 500.0)];
        let md = report(rows, vec![]).analysis_markdown();
        assert!(!md.contains("edge"), "{md}");
    }
}
