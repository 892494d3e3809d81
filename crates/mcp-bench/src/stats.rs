//! Latency histograms and the small statistics the report needs.
//!
//! Latencies are recorded in nanoseconds (an HdrHistogram with three significant digits, so the
//! microsecond-scale kernel floor keeps its precision) and reported in microseconds.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Highest latency the histogram tracks; slower samples are clamped to it.
const MAX_TRACKED_NS: u64 = 120 * 1_000_000_000;

/// A latency histogram of one worker or one merged row.
#[derive(Debug, Clone)]
pub struct Latencies {
    hist: Histogram<u64>,
}

impl Default for Latencies {
    fn default() -> Self {
        Self::new()
    }
}

impl Latencies {
    /// An empty histogram (1 ns to 120 s, three significant digits).
    #[must_use]
    pub fn new() -> Self {
        let hist = Histogram::new_with_bounds(1, MAX_TRACKED_NS, 3)
            .expect("static histogram bounds are valid");
        Self { hist }
    }

    /// Records one round trip.
    pub fn record(&mut self, latency: Duration) {
        let ns = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        self.hist.saturating_record(ns.clamp(1, MAX_TRACKED_NS));
    }

    /// Adds every sample of `other`.
    pub fn merge(&mut self, other: &Self) {
        // Both histograms have the same bounds, so adding cannot fail.
        let _ = self.hist.add(&other.hist);
    }

    /// Number of samples.
    #[must_use]
    pub fn len(&self) -> u64 {
        self.hist.len()
    }

    /// Whether no sample was recorded.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.hist.is_empty()
    }

    /// Percentiles in microseconds; all zero when empty.
    #[must_use]
    pub fn summary(&self) -> LatencySummary {
        if self.hist.is_empty() {
            return LatencySummary::default();
        }
        let us = |ns: u64| ns as f64 / 1_000.0;
        LatencySummary {
            p50: us(self.hist.value_at_quantile(0.50)),
            p95: us(self.hist.value_at_quantile(0.95)),
            p99: us(self.hist.value_at_quantile(0.99)),
            max: us(self.hist.max()),
            mean: self.hist.mean() / 1_000.0,
        }
    }
}

/// Latency percentiles of a row, in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Slowest sample.
    pub max: f64,
    /// Arithmetic mean.
    pub mean: f64,
}

impl LatencySummary {
    /// Each percentile's median over `all` (zero when empty).
    #[must_use]
    pub fn median_of(all: &[&Self]) -> Self {
        let med = |f: fn(&Self) -> f64| {
            median(&all.iter().map(|s| f(s)).collect::<Vec<_>>()).unwrap_or(0.0)
        };
        Self {
            p50: med(|s| s.p50),
            p95: med(|s| s.p95),
            p99: med(|s| s.p99),
            max: med(|s| s.max),
            mean: med(|s| s.mean),
        }
    }
}

/// The median of `values` (mean of the two middle values for an even count); `None` when
/// empty. NaNs sort last.
#[must_use]
pub fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[mid]
    } else {
        f64::midpoint(v[mid - 1], v[mid])
    })
}

/// The smallest and largest of `values` (NaN ignored; `(NaN, NaN)` when there is none).
#[must_use]
pub fn spread(values: impl Iterator<Item = f64>) -> (f64, f64) {
    values
        .filter(|v| !v.is_nan())
        .fold((f64::NAN, f64::NAN), |(lo, hi), v| (lo.min(v), hi.max(v)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_ignores_nan() {
        let (lo, hi) = spread([2.0, f64::NAN, 0.5, 1.0].into_iter());
        assert_eq!((lo, hi), (0.5, 2.0));
        let (lo, hi) = spread(std::iter::empty());
        assert!(lo.is_nan() && hi.is_nan());
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
    }

    #[test]
    fn percentiles_in_microseconds() {
        let mut l = Latencies::new();
        for i in 1..=100u64 {
            l.record(Duration::from_micros(i));
        }
        let s = l.summary();
        assert!((s.p50 - 50.0).abs() < 0.1, "{s:?}");
        assert!((s.p99 - 99.0).abs() < 0.1, "{s:?}");
        let mut other = Latencies::new();
        other.record(Duration::from_millis(1));
        l.merge(&other);
        assert_eq!(l.len(), 101);
    }
}
