//! `ferrite-tape`: snapshots and journals to tape libraries, in exact block order.
//!
//! - [`mtqueue`]: the per-drive MT queue (seed 003, figures 16–21).
//! - [`format`]: the self-describing on-tape format (docs/tape-format.md).
//! - [`catalog`]: the SQLite catalog of cartridges, jobs and parts.
//! - [`tapeio`]: mounting, labels, choosing a cartridge, locating a job's file.
//! - [`incremental`]: changed extents from ferrited, job chains; [`journal`]: replication
//!   journal archives and point-in-time replay.
//! - [`backup`], [`restore`]: the jobs (and `scan`), reading and writing namespaces over
//!   NVMe/TCP through [`source`].
#![forbid(unsafe_code)]

pub mod backup;
pub mod catalog;
mod error;
pub mod format;
pub mod gateway;
pub mod incremental;
pub mod journal;
pub mod mtqueue;
pub mod restore;
pub mod server;
pub mod source;
pub mod tapeio;

pub use error::TapeError;

#[cfg(test)]
mod gateway_tests;
#[cfg(test)]
mod jobs_tests;
