//! The `remote` backend (SPDK's `bdev_nvme` over NVMe/TCP): every namespace of another
//! NVMe-oF target becomes a block device `<name>n<nsid>`, reached through the initiator in
//! `ferrite-host`.
//!
//! - [`RemoteController::attach`] connects the admin queue, reads Identify Controller and the
//!   active namespaces and makes one [`RemoteBdev`] per namespace. Unreachable address, wrong
//!   NQN, refused host, unusable block size: a typed [`RemoteError`] naming the problem.
//! - Each reactor's [`IoChannel`](ferrite_bdev::IoChannel) gets its own I/O queue pair. Queue
//!   pairs are connected by the controller's manager thread (never on a reactor) and handed to
//!   the channel through a mailbox.
//! - A path loss (a queue pair or the admin queue fails, a command outlives `io_timeout`) starts
//!   a reset: the manager reconnects every `reconnect_delay`; channels hold their I/O and
//!   resubmit it on the new queue pair. Past `ctrlr_loss_timeout` held and new I/O fails with
//!   an I/O error (`ENOTCONN`) until a reconnect succeeds: never a hang.
//! - Capabilities come from the remote's Identify (ONCS, VWC, MDTS, MSSRL/MCL): Write Zeroes,
//!   Deallocate and Copy are offloaded when the remote has them; Write Zeroes is emulated
//!   with zero writes otherwise, Deallocate and Copy are refused (`Unsupported`) so callers
//!   emulate them. FUA travels in the Write command.
//!
//! ```text
//!  attach --> Connected --path lost--> Resetting --reconnected--> Connected
//!                 ^                       | loss timeout
//!                 |                       v
//!                 +------reconnected-- Failed (I/O fails fast)
//!  any state --detach--> Detached
//! ```
#![forbid(unsafe_code)]

mod bdev;
mod channel;
mod controller;
mod error;
mod options;

pub use bdev::RemoteBdev;
pub use controller::{ControllerInfo, CtrlrState, NamespaceInfo, RemoteController};
pub use error::RemoteError;
pub use options::RemoteOptions;
