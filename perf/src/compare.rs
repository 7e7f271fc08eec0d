//! `ferrite-perf compare`: the same workload against two targets, alternately,
//! several rounds; the ratio per round and its median hold on a noisy machine
//! where one long run of each would not.

use serde::Serialize;

use crate::config::PerfConfig;
use crate::engine;
use crate::error::PerfError;
use crate::stats::Summary;
use crate::target::TransportId;

/// One round: A and B back to back (order alternates per round).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Round {
    /// Round number, from 1.
    pub round: usize,
    /// Whether B ran first in this round.
    pub b_first: bool,
    /// Target A's results.
    pub a: Summary,
    /// Target B's results.
    pub b: Summary,
    /// A's IOPS over B's.
    pub ratio: f64,
}

/// All rounds and the median ratio.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CompareReport {
    /// Workload description.
    pub description: String,
    /// Target A.
    pub a: String,
    /// Target B.
    pub b: String,
    /// Every round.
    pub rounds: Vec<Round>,
    /// Median of the per-round ratios.
    pub median_ratio: f64,
}

/// Median of `v` (mean of the two middle values for an even count; 0 when empty).
pub fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let m = s.len() / 2;
    if s.len() % 2 == 1 {
        s[m]
    } else {
        (s[m - 1] + s[m]) / 2.0
    }
}

fn one(base: &PerfConfig, t: &TransportId) -> Result<Summary, PerfError> {
    let mut cfg = base.clone();
    cfg.targets = vec![t.clone()];
    let out = engine::run(&cfg)?;
    match out.error {
        Some(e) => Err(e),
        None => Ok(out.report.total),
    }
}

/// Runs `rounds` rounds of `base` against `a` and `b`; `on_round` sees each as it ends.
pub fn compare(
    base: &PerfConfig,
    a: &TransportId,
    b: &TransportId,
    rounds: usize,
    mut on_round: impl FnMut(&Round),
) -> Result<CompareReport, PerfError> {
    if rounds == 0 {
        return Err(PerfError::Config("--rounds must be at least 1".into()));
    }
    let mut out = Vec::with_capacity(rounds);
    for i in 0..rounds {
        let b_first = i % 2 == 1;
        let (ra, rb) = if b_first {
            let rb = one(base, b)?;
            (one(base, a)?, rb)
        } else {
            let ra = one(base, a)?;
            (ra, one(base, b)?)
        };
        let ratio = if rb.iops > 0.0 {
            ra.iops / rb.iops
        } else {
            0.0
        };
        let r = Round {
            round: i + 1,
            b_first,
            a: ra,
            b: rb,
            ratio,
        };
        on_round(&r);
        out.push(r);
    }
    let ratios: Vec<f64> = out.iter().map(|r| r.ratio).collect();
    Ok(CompareReport {
        description: base.describe(),
        a: a.to_string(),
        b: b.to_string(),
        median_ratio: median(&ratios),
        rounds: out,
    })
}

impl std::fmt::Display for Round {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "round {:>2}{}  A {:>10.0} IOPS {:>7.1} us avg   B {:>10.0} IOPS {:>7.1} us avg   A/B {:.3}",
            self.round,
            if self.b_first { " (B first)" } else { "          " },
            self.a.iops,
            self.a.latency_us.avg,
            self.b.iops,
            self.b.latency_us.avg,
            self.ratio
        )
    }
}

impl std::fmt::Display for CompareReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "compare: {}", self.description)?;
        writeln!(f, "A: {}", self.a)?;
        writeln!(f, "B: {}", self.b)?;
        for r in &self.rounds {
            writeln!(f, "{r}")?;
        }
        write!(
            f,
            "median A/B over {} round(s): {:.3}",
            self.rounds.len(),
            self.median_ratio
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(&[]), 0.0);
        assert_eq!(median(&[3.0]), 3.0);
        assert_eq!(median(&[5.0, 1.0, 3.0]), 3.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
    }
}
