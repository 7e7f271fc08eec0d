//! Errors of a perf run. Each names the target (and queue) it happened on.

use ferrite_host::HostError;
use thiserror::Error;

use crate::verify::Mismatch;

/// Why a run failed or could not start.
#[derive(Debug, Error)]
pub enum PerfError {
    /// The command line or configuration cannot run.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Connecting to a target failed.
    #[error("connecting to {target}: {source}")]
    Connect {
        /// The target's transport ID.
        target: String,
        /// The host library's error.
        source: HostError,
    },
    /// The connection broke or misbehaved during the run.
    #[error("{target}, queue {qid}: {source}")]
    Host {
        /// The target's transport ID.
        target: String,
        /// Queue (0: admin).
        qid: u16,
        /// The host library's error.
        source: HostError,
    },
    /// A command completed with an error status.
    #[error("{target}, queue {qid}: {op} at LBA {lba} failed: {status}")]
    IoFailed {
        /// The target's transport ID.
        target: String,
        /// Queue.
        qid: u16,
        /// "read" or "write".
        op: &'static str,
        /// First LBA of the I/O.
        lba: u64,
        /// The NVMe status.
        status: ferrite_nvme::Status,
    },
    /// Verify found wrong data.
    #[error("{target}, queue {qid}: {mismatch}")]
    Verify {
        /// The target's transport ID.
        target: String,
        /// Queue.
        qid: u16,
        /// What was wrong, with the LBA.
        mismatch: Mismatch,
    },
    /// A load thread could not start, be pinned, or panicked.
    #[error("load thread: {0}")]
    Worker(String),
    /// Local I/O (output files, sockets of `limit`).
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
}

impl PerfError {
    /// True when the data itself was wrong (as opposed to a failed transport).
    pub fn is_verify_failure(&self) -> bool {
        matches!(self, PerfError::Verify { .. })
    }
}
