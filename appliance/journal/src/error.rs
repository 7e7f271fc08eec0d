//! Errors of the journal.

use ferrite_bdev::BdevError;
use thiserror::Error;

/// What went wrong with a journal.
#[derive(Debug, Error)]
pub enum JournalError {
    /// The device is too small for the requested layout.
    #[error("journal device {device} has {blocks} blocks of {block_size} bytes: too small for one superblock and {min_slots} record slots of {slot_blocks} blocks")]
    TooSmall {
        /// Device name.
        device: String,
        /// Its blocks.
        blocks: u64,
        /// Its block size.
        block_size: u32,
        /// Blocks per slot.
        slot_blocks: u32,
        /// Fewest slots accepted.
        min_slots: u64,
    },
    /// The device holds no journal (or a damaged superblock).
    #[error("{device} holds no valid journal superblock: {reason}")]
    BadSuperblock {
        /// Device name.
        device: String,
        /// What is wrong.
        reason: String,
    },
    /// The journal belongs to another group.
    #[error("journal on {device} belongs to group {found}, not {expected}")]
    WrongGroup {
        /// Device name.
        device: String,
        /// Group found on the device.
        found: u32,
        /// Group asked for.
        expected: u32,
    },
    /// The replicated namespace and the journal disagree on block size.
    #[error("namespace block size {namespace} differs from the journal's {journal}")]
    BlockSizeMismatch {
        /// Namespace block size.
        namespace: u32,
        /// Journal block size.
        journal: u32,
    },
    /// A record is not (or no longer) in the journal.
    #[error(
        "record {seq} is not in the journal (trimmed up to {trimmed}, committed up to {committed})"
    )]
    NotInJournal {
        /// Asked for.
        seq: u64,
        /// Trimmed up to.
        trimmed: u64,
        /// Committed up to.
        committed: u64,
    },
    /// A record slot does not hold the record it should.
    #[error("journal slot for record {seq} is damaged: {reason}")]
    DamagedRecord {
        /// Sequence number.
        seq: u64,
        /// What is wrong.
        reason: String,
    },
    /// Trim beyond what is committed.
    #[error("cannot trim to {seq}: only {committed} records are committed")]
    TrimBeyondCommitted {
        /// Asked for.
        seq: u64,
        /// Committed up to.
        committed: u64,
    },
    /// Device I/O failed.
    #[error("journal I/O: {0}")]
    Io(#[from] BdevError),
    /// A synchronous journal I/O did not complete in time.
    #[error("journal I/O on {device} did not complete within {secs} s")]
    Timeout {
        /// Device name.
        device: String,
        /// Seconds waited.
        secs: u64,
    },
}
