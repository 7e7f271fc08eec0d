//! `ferrite-tape`: snapshots and journals to tape libraries, in exact block order.
//!
//! - [`mtqueue`]: the per-drive MT queue (seed 003, figures 16–21).
#![forbid(unsafe_code)]

pub mod mtqueue;
