//! The mapping layer: pools of block devices holding thin volumes, snapshots and clones.
//!
//! A [`Pool`] spans member block devices; each [`Volume`] is a table of fixed power-of-two
//! clusters mapped onto the members and is itself a `BlockDevice` (`"<pool>/<volume>"`).
//! Physical clusters carry reference counts so snapshots and clones share them; a write to a
//! shared cluster copies it first.
//!
//! Structure:
//! - [`format`]: the member label, the binary codec, log-record and checkpoint frames;
//! - `state`: the metadata state and the `Op`s that change it (one deterministic `apply`);
//! - `store`: the metadata area on member 0 (checkpoint slots A/B and the log);
//! - `entry`: the lock-free data-path table the channels read;
//! - `owner`: the single metadata owner, a task on a reactor (faults, commands, zeroing,
//!   drains), with `exec` tying its async code to the reactor;
//! - `channel`: the per-reactor `IoChannel` of a volume.
#![deny(unsafe_code)]

mod channel;
mod clusterset;
mod commands;
mod diff;
mod disk;
pub mod entry;
mod error;
mod exec;
pub mod format;
mod info;
mod owner;
mod pool;
mod shared;
pub mod state;
mod store;
mod types;
mod volume;

pub use channel::{CHANNEL_DEPTH, HOLD_TIMEOUT};
pub use diff::{diff_tables, ChangedExtent, VolumeDiff};
pub use error::VolumeError;
pub use format::label::MemberLabel;
pub use info::{
    CheckReport, MemberInfo, PoolEvent, PoolInfo, PoolOptions, VolumeInfo, VolumeStats,
};
pub use pool::Pool;
pub use types::{
    check_name, cluster_size_valid, uuid_string, Provisioning, VolId, VolumeKind, DEFAULT_CLUSTER,
    MAX_CLUSTER, MIN_CLUSTER,
};
pub use volume::{Volume, MAX_TRANSFER};
