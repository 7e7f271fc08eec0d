//! Ferrite's NVMe/TCP and NVMe/RDMA initiator.
//!
//! - [`QueuePair`]: a non-blocking queue pair over NVMe/TCP ([`TcpQueuePair`]) or
//!   NVMe/RDMA ([`RdmaQueuePair`]), sharing the command logic. Over TCP:
//!   (ICReq/ICResp, Fabrics Connect, in-capsule data, R2T/H2CData,
//!   C2HData reassembly, digests), no allocation per I/O in steady state.
//! - [`Controller`]: a blocking wrapper for tests and tools: connect, enable,
//!   Identify, admin and I/O commands, discovery, shutdown.
//! - [`RawConnection`]: a raw PDU client for malformed-input tests.
//!
//! ```no_run
//! use ferrite_host::{ConnectOptions, Controller, HostError};
//! use ferrite_nvme::Status;
//!
//! # fn main() -> Result<(), HostError> {
//! let addr = ([127, 0, 0, 1], 4420).into();
//! let mut opts = ConnectOptions::new(addr, "nqn.2026-01.io.ferrite:default");
//! opts.io_queues = 2;
//! opts.data_digest = true;
//! let mut c = Controller::connect(opts)?;
//! let data = vec![0xA5u8; 8 * 512];
//! c.write(1, 1, 0, &data, false)?;
//! let mut back = vec![0u8; data.len()];
//! c.read(2, 1, 0, 8, &mut back)?;
//! match c.read(1, 1, u64::MAX - 8, 8, &mut back) {
//!     Err(e) if e.status().map(Status::code) == Some(Status::LBA_OUT_OF_RANGE) => {}
//!     other => panic!("{other:?}"),
//! }
//! c.shutdown()?;
//! c.disconnect();
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

pub mod auth;
pub mod controller;
pub mod discovery;
pub mod error;
pub mod qpair;
pub mod raw;
pub mod types;

pub use auth::DhchapSecrets;
pub use controller::{ConnectOptions, Controller, IoData};
pub use discovery::DiscoveryEntry;
pub use error::{HostError, Result, Violation};
pub use qpair::{
    Completed, Data, QpState, QueuePair, QueuePairConfig, RdmaQueuePair, SglMode, TcpQueuePair,
    Trtype,
};
pub use raw::{RawConnection, RawEvent, RawPdu};
pub use types::{Cid, QueueId};

#[cfg(test)]
mod fake_target;
#[cfg(test)]
mod tests;
