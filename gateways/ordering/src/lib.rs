//! The ordering core of remote copy (seed 003), free of I/O so a
//! deterministic simulation can drive it.
//!
//! - [`Sequencer`] (primary side): one per sequence domain (a consistency
//!   group and one destination). It hands out gap-free sequence numbers
//!   and strictly increasing timestamps together, and the heartbeats that
//!   let an idle domain stop holding the group back.
//! - [`SendWindow`] (primary side): what was sent and not yet acknowledged,
//!   the receiver's credit window, retransmit deadlines; cumulative
//!   acknowledgements trim it.
//! - [`DomainReceiver`] (secondary side): deduplicates, buffers out-of-order
//!   records, tracks the gap-free prefix `h_d` and the domain's safe time
//!   `T_d` (the timestamp of `h_d`, raised by heartbeats once the records
//!   they cover are all in).
//! - [`GroupApplier`] (secondary side): the group's limit time
//!   `L = min_d T_d` (never moves back), and the next record to apply: the
//!   earliest-stamped ready record of any domain, only if it is at or
//!   before `L`.
//!
//! Why it is correct: timestamps are strictly increasing in sequence order
//! inside a domain and unique within the group (one group clock), so once
//! `h_d` is known every record of `d` stamped at or before `T_d` is in hand;
//! with `L = min_d T_d` the set of records stamped at or before `L` is
//! complete across the group, and applying it in timestamp order rebuilds
//! the primary's image at the instant `L`. Loss only stalls progress, it
//! never breaks the order.

#![forbid(unsafe_code)]

mod error;
mod receiver;
mod sender;
mod sequencer;

pub use error::OrderingError;
pub use ferrite_gateway_protocol::{DomainId, GroupId, SeqNo, Timestamp};
pub use receiver::{Applied, DomainReceiver, DomainState, GroupApplier, Offer};
pub use sender::SendWindow;
pub use sequencer::{Sequencer, Stamp};
