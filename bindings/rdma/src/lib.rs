//! RDMA verbs and the RDMA connection manager for NVMe/RDMA (`transport-rdma` and the host
//! library), the only place they are called from.
//!
//! - [`raw`]: the `rdma-sys` crate (bindgen output over `<infiniband/verbs.h>` and
//!   `<rdma/rdma_cma.h>`, generated at build time from the installed rdma-core headers, plus its
//!   hand-written inline verbs such as `ibv_post_send` and `ibv_poll_cq`).
//! - A safe wrapper with opaque handles: [`EventChannel`] (non-blocking, for a polling reactor),
//!   [`CmId`] (listen, accept/reject with private data, connect, disconnect), [`ProtectionDomain`],
//!   [`PoolRegistration`] (the memory regions of a reactor's buffer pool, registered once),
//!   [`CompletionQueue`] (polled without blocking) and [`QueuePair`].
//!
//! Soundness rule: memory the adapter may read or write is owned by the wrapper while a work
//! request can touch it. A [`QueuePair`] owns its receive and send rings and keeps each pool
//! buffer given to an RDMA READ/WRITE until the caller takes it back after the completion (or
//! the queue pair is destroyed, after which the adapter no longer touches any of it).
#![allow(unsafe_code)]
#![deny(unsafe_op_in_unsafe_fn)]

mod addr;
mod cm;
mod error;
mod notify;
mod verbs;

pub use rdma_sys as raw;

pub use cm::{CmEvent, CmEventKind, CmId, EventChannel};
pub use error::RdmaError;
pub use notify::CompletionChannel;
pub use verbs::{
    Access, CompletionQueue, Opcode, OwnedRegion, PoolRegistration, ProtectionDomain, QpCaps,
    QueuePair, RemoteBuf, WorkCompletion,
};
