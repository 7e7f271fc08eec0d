//! The replication journal of a consistency group (DESIGN "Remote copy").
//!
//! - [`format`]: the on-device layout: a superblock (block 0) and a ring of
//!   fixed-size record slots, each a header block followed by the data.
//! - [`Journal`]: the shared state of one group's journal: the sequence
//!   counter, the trim point and per-slot completion marks, all atomics.
//!   Appending reserves a sequence number (and its slot) with one
//!   compare-and-swap: no lock, no allocation.
//! - [`JournaledBdev`]: a `BlockDevice` wrapper for a replicated namespace.
//!   Every write (and write-zeroes/unmap) is stamped and written to the
//!   journal at the same time as to the volume; the host's request
//!   completes only when both are done. Reads and flushes pass through.
//! - [`JournalReader`]: reads committed records back in sequence order
//!   (checked, timestamps made strictly increasing in sequence order) and
//!   trims; [`endpoint`] serves it on a Unix socket in the gateway protocol.
//!
//! - [`sync`](SyncPolicy): in sync mode a write completes only once the
//!   secondary acknowledged its record (the trim the replicator sends), with
//!   a lost-link policy: fail the write, or degrade to async until the
//!   secondary catches up.
//!
//! When the journal is full, writes wait in arrival order for a trim (the
//! replicator catching up) and fail with `BdevError::NoSpace` after
//! [`FULL_WAIT`]; nothing is lost from the journal. The
//! delta-resync fallback is not implemented yet.

#![forbid(unsafe_code)]

mod channel;
pub mod endpoint;
mod error;
pub mod format;
mod journal;
mod reader;
mod sync;

pub use channel::{JournaledBdev, FULL_WAIT, JOURNAL_CHANNEL_DEPTH};
pub use error::JournalError;
pub use journal::{Journal, JournalStats};
pub use reader::{JournalReader, OwnedRecord, ReadCtx, TRIM_PERSIST_INTERVAL};
pub use sync::{
    LinkPolicy, Mode, SyncPolicy, SyncState, SyncStats, CATCHUP_SLACK, DEFAULT_SYNC_TIMEOUT,
};
