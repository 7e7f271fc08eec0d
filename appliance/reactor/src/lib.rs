//! Per-core poll-mode runtime.
#![allow(unsafe_code)] // none yet; io_uring-facing raw pointers are produced, not dereferenced.

pub mod buffer;

pub use buffer::{BufferPool, IoBuf, PoolStats, BUF_ALIGN};
