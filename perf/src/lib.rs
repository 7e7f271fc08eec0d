//! `ferrite-perf`, Ferrite's benchmark harness: NVMe/TCP load against one or
//! more targets ([`engine::run`]), a readable table, JSON and SVG reports
//! ([`report`], [`svg`]), the TCP ceiling for the same traffic shape
//! ([`limit`]), alternating A/B comparisons ([`compare`]) and the
//! write-generation oracle behind `--verify` ([`verify`]). It is the one load
//! engine of the project: tests that need load use [`engine::run`].
//!
//! ```no_run
//! use ferrite_perf::{engine, PerfConfig, Workload};
//!
//! # fn main() -> Result<(), ferrite_perf::PerfError> {
//! let tid = "trtype:tcp traddr:127.0.0.1 trsvcid:4420 subnqn:nqn.2026-01.io.ferrite:default";
//! let mut cfg = PerfConfig::new(vec![tid.parse()?]);
//! cfg.workload = Workload::RandWrite;
//! cfg.verify = true;
//! let outcome = engine::run(&cfg)?;
//! println!("{}", outcome.report);
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

pub mod compare;
pub mod config;
pub mod engine;
pub mod error;
pub mod limit;
pub mod report;
pub mod stats;
pub mod svg;
pub mod target;
pub mod verify;

pub use config::{IoSize, PerfConfig, Workload};
pub use engine::Outcome;
pub use error::PerfError;
pub use report::PerfReport;
pub use target::TransportId;
