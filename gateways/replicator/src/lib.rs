//! `ferrite-replicator`: ordered remote copy of one consistency group between two appliances.
//!
//! - **Primary** ([`primary`]): one `mio` event loop. It pulls records from the primary
//!   `ferrited`'s journal stream endpoint (a Unix socket), keeps the ones not yet acknowledged,
//!   and ships them over several TCP connections to the secondary replicator at once,
//!   pipelined and within the secondary's credit, with retransmit on timeout and on a cut
//!   connection ([`ferrite_ordering::SendWindow`]). A cumulative acknowledgement trims the
//!   journal. Heartbeats from the journal are forwarded so an idle group keeps advancing.
//! - **Secondary** ([`secondary`]): one `mio` event loop accepting the primary's connections.
//!   Records are deduplicated and buffered per domain ([`ferrite_ordering::GroupApplier`]);
//!   those at or before the limit time go in timestamp order to an applier thread that writes
//!   them to the secondary `ferrited` over NVMe/TCP (the host library), flushes and records the
//!   applied point in a state file. The secondary image is therefore always a consistent
//!   prefix of the primary's writes. A record is acknowledged once the receive log
//!   ([`recv_log`], group commit: one `fdatasync` for everything that arrived meanwhile) holds
//!   it and every record before it; after a restart the log's records are applied first.
//!
//! The peer link is sealed with a pre-shared key when `psk_file` is set ([`ferrite_link_crypto`]).
//! A new pair's initial copy ([`resync`]) runs in the primary before the first record ships.
//! Failback's delta resync uses the `diverged` and `copy` subcommands; the role changes
//! themselves are ferrited's `replication_switchover|failover|failback` methods.
//! Not yet: a dirty-bitmap resync after a full journal, cascade.

#![forbid(unsafe_code)]

pub mod config;
mod conn;
pub mod primary;
pub mod recv_log;
pub mod resync;
pub mod secondary;
mod state_file;
pub mod status;

pub use config::{Config, Role};
