//! NVMe, NVMe over Fabrics and NVMe/TCP wire formats for Ferrite.
//!
//! Encoding and decoding only, no I/O. Wire structures are `#[repr(C)]`
//! zerocopy types built from little-endian byte-order integers, so they
//! have no padding and no alignment requirement, and every one carries
//! size and offset assertions. Parsers of untrusted bytes return
//! [`NvmeError`] (or [`tcp::PduError`]) and never panic.
#![forbid(unsafe_code)]

pub mod admin;
pub mod command;
pub mod completion;
pub mod digest;
pub mod error;
pub mod fabrics;
pub mod identify;
pub mod io;
pub mod log;
pub mod nqn;
pub mod rdma;
pub mod status;
pub mod strings;
pub mod tcp;

pub use command::{opcode, Command, DataDirection, SglDescriptor};
pub use completion::Completion;
pub use error::NvmeError;
pub use status::Status;
