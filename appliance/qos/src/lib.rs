//! Quality of service: limits on I/O rates per namespace (by bdev, SPDK's `bdev_set_qos_limit`)
//! and per host NQN, enforced by every reactor on its own without locks.
//!
//! The control plane writes limits into a [`Registry`] (published as an immutable snapshot, like
//! the target configuration). Each reactor keeps a [`Shaper`]: one token bucket per limited
//! namespace or host, refilled every [`TIMESLICE`] by the reactor's poll. A limit is split between
//! the reactors currently serving that namespace or host (SPDK splits a limit into per-timeslice
//! quotas; here the split is also across cores, counted in a per-limit bitmask of active
//! reactors). An I/O over its limit waits in the bucket's queue until tokens come back; it is
//! never failed.
#![forbid(unsafe_code)]

mod limits;
mod registry;
mod shaper;

pub use limits::{LimitKind, LimitUpdate, Limits, QosError, MIB};
pub use registry::{Entry, Registry, Table};
pub use shaper::{Admit, Cost, Shaper, BURST, TIMESLICE};
