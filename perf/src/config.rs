//! What a run does: targets, workload, shape, duration, options.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use crate::error::PerfError;
use crate::target::TransportId;

/// The access pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// Random reads.
    RandRead,
    /// Random writes.
    RandWrite,
    /// Sequential reads.
    Read,
    /// Sequential writes.
    Write,
    /// Random reads and writes, `--rwmixread` percent reads.
    RandRw,
}

impl Workload {
    /// Random offsets (as opposed to sequential).
    pub fn is_random(self) -> bool {
        matches!(
            self,
            Workload::RandRead | Workload::RandWrite | Workload::RandRw
        )
    }

    /// Percentage of reads, given `--rwmixread` for the mixed workload.
    pub fn read_pct(self, rwmixread: u8) -> u8 {
        match self {
            Workload::RandRead | Workload::Read => 100,
            Workload::RandWrite | Workload::Write => 0,
            Workload::RandRw => rwmixread,
        }
    }

    /// The name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Workload::RandRead => "randread",
            Workload::RandWrite => "randwrite",
            Workload::Read => "read",
            Workload::Write => "write",
            Workload::RandRw => "randrw",
        }
    }
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Workload {
    type Err = PerfError;

    fn from_str(s: &str) -> Result<Workload, PerfError> {
        Ok(match s {
            "randread" => Workload::RandRead,
            "randwrite" => Workload::RandWrite,
            "read" => Workload::Read,
            "write" => Workload::Write,
            "randrw" => Workload::RandRw,
            _ => {
                return Err(PerfError::Config(format!(
                    "unknown workload {s:?} (randread, randwrite, read, write, randrw)"
                )))
            }
        })
    }
}

/// Parses "4k", "128k", "1m", "4096" into bytes.
pub fn parse_size(s: &str) -> Result<u32, PerfError> {
    let t = s.trim().to_ascii_lowercase();
    let t = t.strip_suffix('b').unwrap_or(&t);
    let t = t.strip_suffix('i').unwrap_or(t);
    let (num, mul) = match t.strip_suffix('k') {
        Some(n) => (n, 1024),
        None => match t.strip_suffix('m') {
            Some(n) => (n, 1024 * 1024),
            None => (t, 1),
        },
    };
    num.parse::<u32>()
        .ok()
        .and_then(|n| n.checked_mul(mul))
        .filter(|&n| n > 0)
        .ok_or_else(|| PerfError::Config(format!("bad size {s:?}")))
}

/// Bytes per I/O: fixed (`min == max`) or uniformly random in `min..=max`
/// (at 4 KiB granularity when the block size allows).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IoSize {
    /// Smallest I/O.
    pub min: u32,
    /// Largest I/O.
    pub max: u32,
}

impl IoSize {
    /// Always `n` bytes.
    pub fn fixed(n: u32) -> IoSize {
        IoSize { min: n, max: n }
    }

    /// Parses "4k" (fixed) or "4k..128k" (random in the range).
    pub fn parse(s: &str) -> Result<IoSize, PerfError> {
        match s.split_once("..") {
            Some((a, b)) => {
                let (min, max) = (parse_size(a)?, parse_size(b)?);
                if min > max {
                    return Err(PerfError::Config(format!(
                        "--io-size range {s:?} is reversed"
                    )));
                }
                Ok(IoSize { min, max })
            }
            None => Ok(IoSize::fixed(parse_size(s)?)),
        }
    }

    /// True when every I/O has the same size.
    pub fn is_fixed(self) -> bool {
        self.min == self.max
    }
}

impl fmt::Display for IoSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_fixed() {
            f.write_str(&human_size(self.max))
        } else {
            write!(f, "{}..{}", human_size(self.min), human_size(self.max))
        }
    }
}

/// One run.
#[derive(Debug, Clone)]
pub struct PerfConfig {
    /// Targets; each gets `qpairs` connections.
    pub targets: Vec<TransportId>,
    /// Access pattern.
    pub workload: Workload,
    /// Read percentage of `randrw`.
    pub rwmixread: u8,
    /// Bytes per I/O.
    pub io_size: IoSize,
    /// Commands outstanding per queue pair.
    pub queue_depth: u16,
    /// Controllers (NVMe-oF associations) per target.
    pub controllers: u16,
    /// I/O queue pairs (connections) per controller.
    pub qpairs: u16,
    /// Cores for the load threads, one pinned thread each (empty: one unpinned thread).
    pub cores: Vec<usize>,
    /// Measured time.
    pub time: Duration,
    /// Unmeasured time before it.
    pub warmup: Duration,
    /// Total IOPS cap over all threads (None: as fast as possible).
    pub rate: Option<u64>,
    /// Stamp writes with LBA and generation; check every read.
    pub verify: bool,
    /// Use only the first this many bytes of each namespace.
    pub span_bytes: Option<u64>,
    /// Header digests.
    pub header_digest: bool,
    /// Data digests.
    pub data_digest: bool,
    /// Connect and command timeout; an I/O outstanding this long fails the run.
    pub timeout: Duration,
    /// Width of one IOPS-over-time sample.
    pub interval: Duration,
    /// Print a progress line on stderr once per second.
    pub progress: bool,
    /// Random seed.
    pub seed: u64,
    /// Set from outside (SIGINT) to end the run early; the results so far are reported.
    pub interrupt: Option<Arc<AtomicBool>>,
}

impl PerfConfig {
    /// 4 KiB randread, QD 32, one controller with one qpair per target, 10 s, no warmup.
    pub fn new(targets: Vec<TransportId>) -> PerfConfig {
        PerfConfig {
            targets,
            workload: Workload::RandRead,
            rwmixread: 50,
            io_size: IoSize::fixed(4096),
            queue_depth: 32,
            controllers: 1,
            qpairs: 1,
            cores: Vec::new(),
            time: Duration::from_secs(10),
            warmup: Duration::ZERO,
            rate: None,
            verify: false,
            span_bytes: None,
            header_digest: false,
            data_digest: false,
            timeout: Duration::from_secs(10),
            interval: Duration::from_secs(1),
            progress: false,
            seed: 0x5EED,
            interrupt: None,
        }
    }

    /// Checks what can be checked before connecting.
    pub fn validate(&self) -> Result<(), PerfError> {
        let bad = |m: &str| Err(PerfError::Config(m.into()));
        if self.targets.is_empty() {
            return bad("no target (-r 'trtype:tcp traddr:... trsvcid:... subnqn:...')");
        }
        if self.queue_depth == 0 || self.qpairs == 0 || self.controllers == 0 {
            return bad("--queue-depth, --qpairs and --controllers must be at least 1");
        }
        if self.rwmixread > 100 {
            return bad("--rwmixread is a percentage (0..=100)");
        }
        if self.time.is_zero() {
            return bad("--time must be positive");
        }
        if self.rate == Some(0) {
            return bad("--rate must be positive");
        }
        if self.interval.is_zero() {
            return bad("--interval must be positive");
        }
        Ok(())
    }

    /// The one-line description used in reports.
    pub fn describe(&self) -> String {
        let mut s = format!(
            "{} {} QD {} x {} qpair(s)",
            self.workload, self.io_size, self.queue_depth, self.qpairs,
        );
        if self.controllers > 1 {
            s += &format!(" x {} controllers", self.controllers);
        }
        s += &format!(" x {} target(s)", self.targets.len());
        if self.workload == Workload::RandRw {
            s += &format!(", {}% reads", self.rwmixread);
        }
        if let Some(r) = self.rate {
            s += &format!(", capped at {r} IOPS");
        }
        if self.verify {
            s += ", verify";
        }
        s
    }
}

/// "4 KiB", "128 KiB", "1 MiB", or bytes.
pub fn human_size(n: u32) -> String {
    if n % (1 << 20) == 0 {
        format!("{} MiB", n >> 20)
    } else if n % 1024 == 0 {
        format!("{} KiB", n >> 10)
    } else {
        format!("{n} B")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_workloads_parse() {
        assert_eq!(parse_size("4k").expect("4k"), 4096);
        assert_eq!(parse_size("128KiB").expect("128KiB"), 128 * 1024);
        assert_eq!(parse_size("1m").expect("1m"), 1 << 20);
        assert_eq!(parse_size("512").expect("512"), 512);
        assert!(parse_size("0").is_err() && parse_size("x").is_err());
        assert_eq!("randrw".parse::<Workload>().expect("w").read_pct(70), 70);
        assert_eq!(Workload::Write.read_pct(70), 0);
        assert!(!Workload::Read.is_random());
        assert!("randomread".parse::<Workload>().is_err());
        assert_eq!(human_size(131072), "128 KiB");
        assert_eq!(IoSize::parse("4k").expect("4k"), IoSize::fixed(4096));
        let r = IoSize::parse("4k..128k").expect("range");
        assert_eq!((r.min, r.max), (4096, 131_072));
        assert_eq!(r.to_string(), "4 KiB..128 KiB");
        assert!(IoSize::parse("128k..4k").is_err() && IoSize::parse("4k..").is_err());
    }

    #[test]
    fn validation_names_the_flag() {
        let mut c = PerfConfig::new(Vec::new());
        assert!(c.validate().is_err());
        c.targets
            .push("traddr:127.0.0.1 subnqn:n".parse().expect("tid"));
        c.validate().expect("defaults are valid");
        c.rwmixread = 101;
        let e = c.validate().expect_err("bad mix");
        assert!(e.to_string().contains("--rwmixread"), "{e}");
    }
}
