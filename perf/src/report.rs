//! The report of a run: a readable table and a JSON document.

use std::fmt::{self, Write as _};
use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use crate::config::PerfConfig;
use crate::error::PerfError;
use crate::stats::{Counters, Summary};

/// Everything a run measured, plus what it was.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PerfReport {
    /// One line: workload, size, depth, qpairs, targets.
    pub description: String,
    /// Workload name.
    pub workload: String,
    /// Read percentage.
    pub read_pct: u8,
    /// Bytes per I/O (the largest when sizes are random).
    pub io_size: u32,
    /// Smallest I/O (equal to `io_size` unless sizes are random).
    pub io_size_min: u32,
    /// Queue depth per qpair.
    pub queue_depth: u16,
    /// Controllers per target.
    pub controllers: u16,
    /// Qpairs per controller.
    pub qpairs: u16,
    /// Load thread cores.
    pub cores: Vec<usize>,
    /// Warmup seconds.
    pub warmup_s: f64,
    /// Requested measured seconds.
    pub time_s: f64,
    /// IOPS cap.
    pub rate: Option<u64>,
    /// Verify on.
    pub verify: bool,
    /// Per target.
    pub targets: Vec<Summary>,
    /// All targets together.
    pub total: Summary,
    /// Why the run ended early (the numbers are then partial).
    pub error: Option<String>,
}

impl PerfReport {
    /// Builds the report from merged per-target counters.
    pub fn new(
        cfg: &PerfConfig,
        names: &[&str],
        per_target: &[Counters],
        elapsed: Duration,
        error: Option<&PerfError>,
    ) -> PerfReport {
        let mut total = Counters::default();
        let targets = names
            .iter()
            .zip(per_target)
            .map(|(n, c)| {
                total.merge(c);
                c.summary(n, elapsed, cfg.interval)
            })
            .collect();
        PerfReport {
            description: cfg.describe(),
            workload: cfg.workload.name().into(),
            read_pct: cfg.workload.read_pct(cfg.rwmixread),
            io_size: cfg.io_size.max,
            io_size_min: cfg.io_size.min,
            queue_depth: cfg.queue_depth,
            controllers: cfg.controllers,
            qpairs: cfg.qpairs,
            cores: cfg.cores.clone(),
            warmup_s: cfg.warmup.as_secs_f64(),
            time_s: cfg.time.as_secs_f64(),
            rate: cfg.rate,
            verify: cfg.verify,
            targets,
            total: total.summary("total", elapsed, cfg.interval),
            error: error.map(|e| e.to_string()),
        }
    }

    /// Writes the report as pretty JSON to `path`.
    pub fn write_json(&self, path: &Path) -> Result<(), PerfError> {
        let text = serde_json::to_string_pretty(self).map_err(|e| PerfError::Io {
            what: "encoding the JSON report".into(),
            source: e.into(),
        })?;
        std::fs::write(path, text + "\n").map_err(|source| PerfError::Io {
            what: format!("writing {}", path.display()),
            source,
        })
    }
}

/// Column headers of the table.
pub const TABLE_HEADER: &str =
    "IOPS        MiB/s     avg us    p50 us    p90 us    p99 us  p99.9 us p99.99 us    max us";

/// One table row for `s` (the numbers only).
pub fn table_row(s: &Summary) -> String {
    let l = &s.latency_us;
    let mut r = String::new();
    let _ = write!(
        r,
        "{:<11.0} {:<9.1} {:>6.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1}",
        s.iops, s.mib_per_sec, l.avg, l.p50, l.p90, l.p99, l.p99_9, l.p99_99, l.max
    );
    r
}

impl fmt::Display for PerfReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let partial = if self.error.is_some() {
            " (PARTIAL: the run failed)"
        } else {
            ""
        };
        writeln!(
            f,
            "{}, {:.2} s measured{partial}",
            self.description, self.total.seconds
        )?;
        let w = self
            .targets
            .iter()
            .map(|t| t.name.len())
            .max()
            .unwrap_or(5)
            .max(5);
        writeln!(f, "{:<w$}  {TABLE_HEADER}", "target")?;
        for t in &self.targets {
            writeln!(f, "{:<w$}  {}", t.name, table_row(t))?;
        }
        if self.targets.len() > 1 {
            writeln!(f, "{:<w$}  {}", "total", table_row(&self.total))?;
        }
        write!(
            f,
            "ops {} (reads {}, writes {})",
            self.total.ops, self.total.reads, self.total.writes
        )?;
        if self.verify {
            write!(f, ", verified blocks {}", self.total.verified_blocks)?;
        }
        if let Some(e) = &self.error {
            write!(f, "\nerror: {e}")?;
        }
        Ok(())
    }
}
