//! The MT queue (seed 003, figures 16–21): per drive, requests carry a stream sequence number
//! and the block id they expect; the queue orders them by block id so that data arriving out of
//! order over several connections lands on tape in exact block order, and a restore answers
//! requests in any order from a read-ahead buffer.
//!
//! - [`Session`]: the fixed affine map `block = b0 + (seq - s0)` agreed when a stream opens
//!   (the seed's section 4.8; it replaces the patent's counter re-derived from the head block,
//!   whose naive `N + 1` update serves the wrong block after out-of-order service).
//! - [`WriteQueue`]: the write reorder buffer (figure 20): duplicates acknowledged again and
//!   dropped, blocks handed to the drive only across the gap-free run from the flush cursor.
//! - [`ReadQueue`]: the read-ahead buffer (figure 19): requests served by block id, held when
//!   the block is not read yet, served blocks kept while the issuer's window may ask again.
//! - [`Issuer`]: the requester side (figures 17–18): sequence counter and a window of at most
//!   `m` requests in flight.
//! - [`DriveQueue`]: a [`WriteQueue`] shared between connection threads and the one thread
//!   that feeds the drive, with the drive-idle accounting.
//!
//! The queues are plain state machines without I/O or locks, so tests drive them directly.

mod drive;
mod issuer;
mod read;
mod write;

pub use drive::{DriveQueue, DriveQueueStats, WriterError};
pub use issuer::Issuer;
pub use read::{ReadAnswer, ReadQueue};
pub use write::{AckPolicy, Offer, WriteQueue, WriteStats};

use std::fmt;

use serde::{Deserialize, Serialize};

/// A stream sequence number (64 bits: never wraps in practice, seed E11).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SeqNo(pub u64);

/// A block id within a stream (for a backup job: the job's data block number).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct BlockId(pub u64);

impl fmt::Display for SeqNo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "seq {}", self.0)
    }
}

impl fmt::Display for BlockId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "block {}", self.0)
    }
}

/// The mapping fixed when a stream opens: sequence number `s0` is block `b0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub b0: BlockId,
    pub s0: SeqNo,
}

impl Session {
    pub fn new(b0: BlockId, s0: SeqNo) -> Session {
        Session { b0, s0 }
    }

    /// The block a sequence number stands for.
    pub fn block_of(&self, seq: SeqNo) -> Result<BlockId, MtQueueError> {
        let d = seq
            .0
            .checked_sub(self.s0.0)
            .ok_or(MtQueueError::BeforeSession { seq, s0: self.s0 })?;
        self.b0
            .0
            .checked_add(d)
            .map(BlockId)
            .ok_or(MtQueueError::BeforeSession { seq, s0: self.s0 })
    }

    /// The sequence number of a block (inverse of [`Session::block_of`]).
    pub fn seq_of(&self, block: BlockId) -> Option<SeqNo> {
        block.0.checked_sub(self.b0.0).map(|d| SeqNo(self.s0.0 + d))
    }

    /// Checks a request's explicit block id against the map (figure 21: both travel, and a
    /// mismatch means requests of another stream got mixed in, seed E19).
    pub fn check(&self, seq: SeqNo, expected: BlockId) -> Result<BlockId, MtQueueError> {
        let block = self.block_of(seq)?;
        if block != expected {
            return Err(MtQueueError::BlockMismatch {
                seq,
                expected,
                mapped: block,
            });
        }
        Ok(block)
    }
}

/// What the MT queue refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MtQueueError {
    #[error("{seq} precedes the stream's first sequence number {s0}")]
    BeforeSession { seq: SeqNo, s0: SeqNo },
    #[error(
        "{seq} says {expected} but the stream maps it to {mapped}: requests of another stream?"
    )]
    BlockMismatch {
        seq: SeqNo,
        expected: BlockId,
        mapped: BlockId,
    },
    #[error("{block} is {distance} blocks past the flush cursor; the window holds {window}")]
    WindowExceeded {
        block: BlockId,
        distance: u64,
        window: u64,
    },
    #[error("{block} arrived twice with different data ({seq}): the stream is corrupt")]
    ConflictingDuplicate { seq: SeqNo, block: BlockId },
    #[error("{block} was served and released long ago ({seq}): the issuer's window moved past it")]
    Released { seq: SeqNo, block: BlockId },
    #[error("{block} is past the end of the stream ({end} blocks)")]
    PastEnd { block: BlockId, end: BlockId },
    #[error("the queue was closed: {0}")]
    Closed(String),
}

#[cfg(test)]
mod tests;
