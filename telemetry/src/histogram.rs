//! A histogram with fixed bucket bounds, recorded with atomic adds only.

use crate::text;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Envoy's default histogram buckets, which Istio's stats filter uses for request
/// duration (milliseconds) and sizes (bytes).
pub const ENVOY_BUCKETS: &[f64] = &[
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0, 60000.0,
    300000.0, 600000.0, 1800000.0, 3600000.0,
];

/// Per-bucket counts (not cumulative: one add per value; summed when rendered), the count
/// and the sum. The sum is an `f64` kept as bits and added with a compare-exchange loop.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
    sum: AtomicU64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            buckets: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum: AtomicU64::new(0f64.to_bits()),
        }
    }

    /// With Envoy's default buckets.
    pub fn envoy() -> Histogram {
        Histogram::new(ENVOY_BUCKETS)
    }

    pub fn observe(&self, value: f64) {
        // Values above the last bound are only in the count (`+Inf`).
        if let Some(i) = self.bounds.iter().position(|&b| value <= b) {
            self.buckets[i].fetch_add(1, Relaxed);
        }
        self.count.fetch_add(1, Relaxed);
        let _ =
            self.sum.fetch_update(Relaxed, Relaxed, |bits| Some((f64::from_bits(bits) + value).to_bits()));
    }

    pub fn count(&self) -> u64 {
        self.count.load(Relaxed)
    }

    pub fn sum(&self) -> f64 {
        f64::from_bits(self.sum.load(Relaxed))
    }

    /// The `le` label values of these bounds, for [`Histogram::render_with`]: formatting
    /// the bounds once per scrape rather than once per series.
    pub fn le_labels(&self) -> Vec<String> {
        self.bounds.iter().map(f64::to_string).collect()
    }

    /// `name_bucket` (cumulative, `le` last), `name_sum` and `name_count` under `labels`
    /// (label text without braces; may be empty).
    pub fn render(&self, out: &mut String, name: &str, labels: &str) {
        self.render_with(out, name, labels, &self.le_labels());
    }

    /// [`Histogram::render`] with the `le` values from [`Histogram::le_labels`] of a
    /// histogram with the same bounds.
    pub fn render_with(&self, out: &mut String, name: &str, labels: &str, le: &[String]) {
        let mut cumulative = 0;
        for (le, n) in le.iter().zip(self.buckets.iter()) {
            cumulative += n.load(Relaxed);
            text::sample_u64(out, name, "_bucket", labels, Some(le), cumulative);
        }
        let count = self.count.load(Relaxed);
        text::sample_u64(out, name, "_bucket", labels, Some("+Inf"), count);
        let sum = self.sum();
        if sum.fract() == 0.0 && (0.0..u64::MAX as f64).contains(&sum) {
            text::sample_u64(out, name, "_sum", labels, None, sum as u64);
        } else {
            text::sample(out, &format!("{name}_sum"), labels, sum);
        }
        text::sample_u64(out, name, "_count", labels, None, count);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cumulative_buckets_inf_count_and_sum() {
        let h = Histogram::new(&[1.0, 10.0]);
        for v in [0.5, 3.0, 70.0] {
            h.observe(v);
        }
        let mut out = String::new();
        h.render(&mut out, "t", "a=\"b\"");
        assert_eq!(
            out,
            "t_bucket{a=\"b\",le=\"1\"} 1\nt_bucket{a=\"b\",le=\"10\"} 2\nt_bucket{a=\"b\",le=\"+Inf\"} 3\n\
             t_sum{a=\"b\"} 73.5\nt_count{a=\"b\"} 3\n"
        );
        let mut bare = String::new();
        Histogram::new(&[1.0]).render(&mut bare, "u", "");
        assert!(bare.starts_with("u_bucket{le=\"1\"} 0\n"), "{bare}");
        assert!(bare.contains("u_sum 0\n"), "{bare}");
    }
}
