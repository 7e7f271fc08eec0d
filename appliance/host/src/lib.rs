//! Ferrite's NVMe/TCP initiator.
//!
//! - [`QueuePair`]: a non-blocking queue-pair engine for poll loops
//!   (ICReq/ICResp, Fabrics Connect, in-capsule data, R2T/H2CData,
//!   C2HData reassembly, digests), no allocation per I/O in steady state.
//! - [`Controller`]: a blocking wrapper for tests and tools: connect, enable,
//!   Identify, admin and I/O commands, discovery, shutdown.
//! - [`RawConnection`]: a raw PDU client for malformed-input tests.
//! - [`load`]: the engine of the `ferrite-load` load client.
#![forbid(unsafe_code)]

pub mod controller;
pub mod discovery;
pub mod error;
pub mod load;
pub mod qpair;
pub mod raw;
pub mod types;

pub use controller::{ConnectOptions, Controller, IoData};
pub use discovery::DiscoveryEntry;
pub use error::{HostError, Result, Violation};
pub use qpair::{Completed, Data, QpState, QueuePair, QueuePairConfig, SglMode};
pub use raw::{RawConnection, RawEvent, RawPdu};
pub use types::{Cid, QueueId};

#[cfg(test)]
mod fake_target;
#[cfg(test)]
mod tests;
