//! `ferrite-tape`: snapshots and journals to tape libraries, in exact block order.
//!
//! - [`mtqueue`]: the per-drive MT queue (seed 003, figures 16–21).
//! - [`format`]: the self-describing on-tape format (docs/tape-format.md).
//! - [`catalog`]: the SQLite catalog of cartridges, jobs and parts.
#![forbid(unsafe_code)]

pub mod catalog;
pub mod format;
pub mod mtqueue;
