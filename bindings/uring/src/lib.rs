//! Ferrite's binding crate for the kernel interfaces std does not wrap: every `unsafe` block of
//! the workspace lives here (the other crates keep `unsafe_code = deny`).
//!
//! - [`raw`]: the unsafe primitives, each an `unsafe fn` whose contract is written down: pushing
//!   an io_uring submission entry and registering fixed buffers. The raw bindings themselves are
//!   the `io-uring` and `libc` crates (generated from the kernel and libc headers upstream).
//! - [`Ring`]: a safe io_uring wrapper that owns every buffer the kernel may touch (the buffer
//!   of each in-flight request, its zero buffer) and the record of the fixed buffers it
//!   registered, so no safe call can free memory the kernel still uses or issue a fixed-buffer
//!   operation on memory that is not the registered buffer.
//! - [`sys`]: safe wrappers of single system calls (eventfd, fallocate, statx, fstatfs,
//!   BLKSSZGET, FICLONERANGE, madvise).
#![allow(unsafe_code)]
#![deny(unsafe_op_in_unsafe_fn)]

pub mod raw;
mod ring;
pub mod sys;

pub use ring::{Completion, Refused, Request, Ring, RingStats, ZERO_BUF_BYTES};
