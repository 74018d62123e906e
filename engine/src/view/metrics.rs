//! Prometheus text exposition: counters, gauges and fixed-bucket histograms.

use std::collections::BTreeMap;
use std::fmt::Write;

/// Bucket bounds (seconds) of stage durations.
pub const STAGE_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];
/// Bucket bounds (seconds) of freeze windows (VSS: 10 s commit hold, 60 s writer limit).
pub const FREEZE_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
/// Bucket bounds (seconds) of event log appends.
pub const APPEND_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0,
];

/// A cumulative histogram with fixed bounds (seconds).
#[derive(Clone, Debug, PartialEq)]
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            counts: vec![0; bounds.len()],
            sum: 0.0,
            count: 0,
        }
    }

    pub fn observe(&mut self, secs: f64) {
        for (i, b) in self.bounds.iter().enumerate() {
            if secs <= *b {
                self.counts[i] += 1;
            }
        }
        self.sum += secs;
        self.count += 1;
    }

    /// Its counts per bucket, sum and count (a checkpoint keeps them).
    pub fn parts(&self) -> (&[u64], f64, u64) {
        (&self.counts, self.sum, self.count)
    }

    /// A histogram of `bounds` with these counts (`None`: as many counts as bounds they are not).
    pub fn from_parts(bounds: &'static [f64], counts: Vec<u64>, sum: f64, count: u64) -> Option<Self> {
        (counts.len() == bounds.len()).then_some(Histogram {
            bounds,
            counts,
            sum,
            count,
        })
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    /// Writes `name_bucket`, `name_sum`, `name_count` lines with `labels` (`k="v",…` or empty).
    pub fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {c}");
        }
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}", self.count);
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum);
        let _ = writeln!(out, "{name}_count{braces} {}", self.count);
    }
}

/// Writes the `# HELP` and `# TYPE` lines of one metric family.
pub fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Escapes a label value (backslash, quote, newline).
pub fn label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// One histogram family keyed by its label string.
pub type Family = BTreeMap<String, Histogram>;

pub fn render_family(out: &mut String, name: &str, help: &str, fam: &Family) {
    header(out, name, "histogram", help);
    for (labels, h) in fam {
        h.render(out, name, labels);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative() {
        let mut h = Histogram::new(&[0.1, 1.0]);
        h.observe(0.05);
        h.observe(0.5);
        h.observe(5.0);
        let mut s = String::new();
        h.render(&mut s, "x", "t=\"a\"");
        assert!(s.contains("x_bucket{t=\"a\",le=\"0.1\"} 1\n"), "{s}");
        assert!(s.contains("x_bucket{t=\"a\",le=\"1\"} 2\n"), "{s}");
        assert!(s.contains("x_bucket{t=\"a\",le=\"+Inf\"} 3\n"), "{s}");
        assert!(s.contains("x_count{t=\"a\"} 3\n"), "{s}");
    }
}
