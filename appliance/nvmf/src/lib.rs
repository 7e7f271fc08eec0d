//! NVMe-oF semantics, all in one place: subsystems, namespaces, controllers, the admin, Fabrics
//! and I/O command sets, discovery and access control.
//!
//! Transports (`transport-tcp`) move bytes and hand each command capsule to a per-reactor
//! [`PollGroup`]; every NVMe status a host sees is chosen here. Configuration lives in a
//! [`Target`] and is published to the reactors as immutable snapshots (`arc-swap`), so the I/O
//! path reads it without locks; controller state that only the admin path touches sits behind a
//! mutex.
#![forbid(unsafe_code)]

mod admin;
mod admin_result;
mod ana;
mod auth;
mod bdev_status;
mod controller;
mod copy;
mod copy_job;
mod error;
mod error_log;
mod fabrics;
mod identify;
mod io;
mod logpage;
mod ns_stats;
mod observe;
mod poll_group;
mod qos_gate;
mod request;
mod resv;
mod resv_abort;
mod resv_cmd;
mod subsystem;
mod target;
mod transport;

pub use ana::{ANACAP, ANATT_SECONDS, MAX_ANA_GROUP};
pub use auth::CONNECT_AUTHREQ_ATR;
pub use controller::{AsyncEvent, Controller, ControllerInfo, HealthCounters};
pub use error::NvmfError;
pub use ns_stats::{bucket_bounds_ns, NamespaceCounters, NamespaceStats, LATENCY_BUCKETS};
pub use observe::ControllerSnapshot;
pub use poll_group::{ConnId, Exec, GroupEvent, PollGroup, PollGroupStats};
pub use request::{plan_data, DataPlan, Request, Response, TransportLimits};
pub use resv::{NsReservation, ResvState, ResvType};
pub use subsystem::{AnaState, AnaTable, DhchapHost, Listener, Namespace, Subsystem, Trtype};
pub use target::{NamespaceParams, SubsystemParams, Target, TargetConfig, TargetOptions};
pub use transport::{
    dispatch_events, reap_released, QueuePair, QueuePairs, Routing, StartTransport, Transport,
    TransportError,
};

/// Highest namespace id a subsystem may use (and Identify Controller NN).
pub const MAX_NSID: u32 = 1024;
/// Entries in an I/O submission queue we accept (CAP.MQES + 1).
pub const MAX_QUEUE_ENTRIES: u16 = 128;
/// Entries in the admin submission queue we accept.
pub const MAX_ADMIN_QUEUE_ENTRIES: u16 = 32;
/// Command slots per queue pair, preallocated when the connection arrives: the largest queue a
/// host may have plus headroom for AERs. A transport numbers its commands `0..MAX_COMMAND_SLOTS`.
pub const MAX_COMMAND_SLOTS: usize = MAX_QUEUE_ENTRIES as usize + 8;
/// I/O queues a controller may have.
pub const MAX_IO_QUEUES: u16 = 64;
/// Maximum data transfer: 2^MDTS pages of 4 KiB = 128 KiB, the size of a large pool buffer.
pub const MDTS: u8 = 5;
pub const MAX_TRANSFER_BYTES: u32 = 4096 << MDTS;
/// In-capsule data accepted on every queue (IOCCSZ = (64 + this) / 16).
pub const IN_CAPSULE_DATA_BYTES: u32 = 8192;
/// Asynchronous Event Requests a controller holds at once (AERL + 1).
pub const MAX_AERS: usize = 4;
/// Error log entries kept per controller (ELPE + 1).
pub const ERROR_LOG_ENTRIES: usize = 64;
/// Firmware revision reported in Identify and the firmware slot log.
pub const FIRMWARE_REVISION: &str = concat!("fe", env!("CARGO_PKG_VERSION"));
