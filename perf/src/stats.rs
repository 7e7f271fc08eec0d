//! Counters of a run and their summary (what the table, JSON and SVG show).

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Latencies above this (ns) are clamped: a minute is already a failure.
const MAX_LATENCY_NS: u64 = 60_000_000_000;

/// Raw counters of one target (per thread, then merged).
#[derive(Debug, Clone)]
pub struct Counters {
    /// Reads completed.
    pub reads: u64,
    /// Writes completed.
    pub writes: u64,
    /// Bytes read.
    pub read_bytes: u64,
    /// Bytes written.
    pub write_bytes: u64,
    /// Blocks checked by verify.
    pub verified_blocks: u64,
    /// Completion latency in nanoseconds.
    pub latency_ns: Histogram<u64>,
    /// Completions per interval of the measured phase.
    pub per_interval: Vec<u64>,
}

impl Default for Counters {
    fn default() -> Counters {
        Counters {
            reads: 0,
            writes: 0,
            read_bytes: 0,
            write_bytes: 0,
            verified_blocks: 0,
            latency_ns: Histogram::new_with_bounds(1, MAX_LATENCY_NS, 3)
                .expect("static histogram bounds are valid"),
            per_interval: Vec::new(),
        }
    }
}

impl Counters {
    /// Records one completion `lat_ns` after submission, in interval `slot`.
    pub fn record(&mut self, write: bool, bytes: u64, lat_ns: u64, slot: usize) {
        if write {
            self.writes += 1;
            self.write_bytes += bytes;
        } else {
            self.reads += 1;
            self.read_bytes += bytes;
        }
        // Clamped into the bounds, so recording cannot fail.
        let _ = self.latency_ns.record(lat_ns.clamp(1, MAX_LATENCY_NS));
        if self.per_interval.len() <= slot {
            self.per_interval.resize(slot + 1, 0);
        }
        self.per_interval[slot] += 1;
    }

    /// Adds `o` into `self`.
    pub fn merge(&mut self, o: &Counters) {
        self.reads += o.reads;
        self.writes += o.writes;
        self.read_bytes += o.read_bytes;
        self.write_bytes += o.write_bytes;
        self.verified_blocks += o.verified_blocks;
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.latency_ns.add(&o.latency_ns);
        if self.per_interval.len() < o.per_interval.len() {
            self.per_interval.resize(o.per_interval.len(), 0);
        }
        for (a, b) in self.per_interval.iter_mut().zip(&o.per_interval) {
            *a += b;
        }
    }

    /// Operations completed.
    pub fn ops(&self) -> u64 {
        self.reads + self.writes
    }

    /// The summary over `elapsed` with samples `interval` wide.
    pub fn summary(&self, name: &str, elapsed: Duration, interval: Duration) -> Summary {
        let secs = elapsed.as_secs_f64().max(1e-9);
        let h = &self.latency_ns;
        let q = |p: f64| {
            if h.is_empty() {
                0.0
            } else {
                h.value_at_quantile(p) as f64 / 1000.0
            }
        };
        let iv = interval.as_secs_f64();
        Summary {
            name: name.to_owned(),
            ops: self.ops(),
            reads: self.reads,
            writes: self.writes,
            verified_blocks: self.verified_blocks,
            seconds: secs,
            iops: self.ops() as f64 / secs,
            mib_per_sec: (self.read_bytes + self.write_bytes) as f64 / (1024.0 * 1024.0) / secs,
            latency_us: Latency {
                avg: if h.is_empty() { 0.0 } else { h.mean() / 1000.0 },
                min: if h.is_empty() {
                    0.0
                } else {
                    h.min() as f64 / 1000.0
                },
                p50: q(0.50),
                p90: q(0.90),
                p99: q(0.99),
                p99_9: q(0.999),
                p99_99: q(0.9999),
                max: if h.is_empty() {
                    0.0
                } else {
                    h.max() as f64 / 1000.0
                },
            },
            interval_s: iv,
            iops_over_time: self.per_interval.iter().map(|&n| n as f64 / iv).collect(),
            histogram: histogram_buckets(h),
        }
    }
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Latency {
    /// Mean.
    pub avg: f64,
    /// Smallest.
    pub min: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p99_9: f64,
    /// 99.99th percentile.
    pub p99_99: f64,
    /// Largest.
    pub max: f64,
}

/// One histogram bucket: completions with latency up to `le_us`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Bucket {
    /// Upper bound in microseconds.
    pub le_us: f64,
    /// Completions in this bucket.
    pub count: u64,
}

/// Results of one target (or the total) of a run.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Summary {
    /// Transport ID, or "total".
    pub name: String,
    /// Operations completed in the measured phase.
    pub ops: u64,
    /// Reads among them.
    pub reads: u64,
    /// Writes among them.
    pub writes: u64,
    /// Blocks checked by verify.
    pub verified_blocks: u64,
    /// Length of the measured phase.
    pub seconds: f64,
    /// Operations per second.
    pub iops: f64,
    /// MiB per second, both directions.
    pub mib_per_sec: f64,
    /// Latency percentiles.
    pub latency_us: Latency,
    /// Width of an IOPS sample.
    pub interval_s: f64,
    /// IOPS per interval.
    pub iops_over_time: Vec<f64>,
    /// Log-spaced latency histogram.
    pub histogram: Vec<Bucket>,
}

/// Buckets at 4 per power of two (from 1 µs), empty ones at the ends dropped.
fn histogram_buckets(h: &Histogram<u64>) -> Vec<Bucket> {
    if h.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut lo = 0u64;
    let mut edge = 1000.0f64; // ns
    let max = h.max();
    while lo <= max {
        let hi = (edge as u64).max(lo);
        out.push(Bucket {
            le_us: hi as f64 / 1000.0,
            count: h.count_between(lo, hi),
        });
        lo = h.next_non_equivalent(hi);
        edge *= 2f64.powf(0.25);
    }
    let first = out.iter().position(|b| b.count > 0).unwrap_or(0);
    out.drain(..first);
    while out.last().is_some_and(|b| b.count == 0) {
        out.pop();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_adds_up() {
        let mut a = Counters::default();
        let mut b = Counters::default();
        for i in 0..1000u64 {
            a.record(false, 4096, 10_000 + i, (i / 500) as usize);
            b.record(true, 4096, 100_000, 0);
        }
        a.merge(&b);
        let s = a.summary("t", Duration::from_secs(2), Duration::from_secs(1));
        assert_eq!((s.ops, s.reads, s.writes), (2000, 1000, 1000));
        assert!((s.iops - 1000.0).abs() < 1e-6);
        assert_eq!(s.iops_over_time, vec![1500.0, 500.0]);
        assert!(
            s.latency_us.p50 >= 10.0 && s.latency_us.p50 <= 11.1,
            "{s:?}"
        );
        assert!((s.latency_us.max - 100.0).abs() < 0.2, "{s:?}");
        let total: u64 = s.histogram.iter().map(|b| b.count).sum();
        assert_eq!(total, 2000);
        assert!(s.histogram.windows(2).all(|w| w[0].le_us < w[1].le_us));
    }

    #[test]
    fn empty_summary_is_zero() {
        let s = Counters::default().summary("t", Duration::from_secs(1), Duration::from_secs(1));
        assert_eq!(s.ops, 0);
        assert_eq!(s.latency_us, Latency::default());
        assert!(s.histogram.is_empty());
    }
}
