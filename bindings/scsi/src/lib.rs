//! Linux SCSI bindings for the tape gateway.
//!
//! - [`raw`]: the kernel's `struct mtop`, `struct mtget`, `struct mtpos` (`linux/mtio.h`) and
//!   `struct sg_io_hdr` (`scsi/sg.h`) with their ioctl numbers, size and offset assertions.
//! - [`cdb`]: command descriptor blocks (SPC INQUIRY and TEST UNIT READY, SMC READ ELEMENT STATUS
//!   and MOVE MEDIUM) and parsers for what devices answer (standard INQUIRY data, element status
//!   pages with volume tags, sense data). The parsers take untrusted bytes and never panic.
//! - [`st`]: [`st::TapeDevice`], a safe handle on a non-rewinding tape node (`/dev/nstN`).
//! - [`sg`]: [`sg::SgDevice`], a safe handle on a SCSI generic node (`/dev/sgN`) running CDBs
//!   through `SG_IO`.
//!
//! `unsafe` is confined to the ioctl calls in `st` and `sg`; each carries a `// SAFETY:` note.
#![allow(unsafe_code)]

pub mod cdb;
pub mod error;
pub mod raw;
pub mod sg;
pub mod st;

pub use cdb::{ElementKind, ElementStatus, Inquiry, Sense, SenseKey};
pub use error::ScsiError;
pub use sg::SgDevice;
pub use st::{MtOp, TapeDevice, TapeStatus};
