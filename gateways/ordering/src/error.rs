//! Errors of the ordering core.

use ferrite_gateway_protocol::{DomainId, SeqNo, Timestamp};
use thiserror::Error;

/// Why a record, heartbeat or acknowledgement was refused. None of these
/// is applied; the peer (or the journal) is wrong and the link should be
/// reset.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum OrderingError {
    /// Sequence number 0 is never used.
    #[error("sequence number 0 in domain {domain}")]
    ZeroSeq {
        /// Domain.
        domain: DomainId,
    },
    /// The record lies beyond the receive window (the sender ignored the
    /// credit it was given).
    #[error(
        "record {seq} of domain {domain} is beyond the window (prefix {prefix}, window {window})"
    )]
    OutOfWindow {
        /// Domain.
        domain: DomainId,
        /// Offending sequence number.
        seq: SeqNo,
        /// Current gap-free prefix.
        prefix: SeqNo,
        /// Window size in records.
        window: u64,
    },
    /// Timestamps do not increase with sequence numbers.
    #[error("record {seq} of domain {domain} stamped {ts} breaks timestamp order next to record {other} stamped {other_ts}")]
    TimestampOrder {
        /// Domain.
        domain: DomainId,
        /// Offending sequence number.
        seq: SeqNo,
        /// Its timestamp.
        ts: Timestamp,
        /// The neighbour it conflicts with.
        other: SeqNo,
        /// The neighbour's timestamp.
        other_ts: Timestamp,
    },
    /// A duplicate sequence number came with a different timestamp.
    #[error("record {seq} of domain {domain} arrived again with timestamp {ts}, first seen with {first_ts}")]
    ConflictingDuplicate {
        /// Domain.
        domain: DomainId,
        /// Sequence number.
        seq: SeqNo,
        /// Timestamp of the copy.
        ts: Timestamp,
        /// Timestamp first seen.
        first_ts: Timestamp,
    },
    /// The domain is not part of the group.
    #[error("domain {domain} is not part of this group")]
    UnknownDomain {
        /// Domain.
        domain: DomainId,
    },
    /// An acknowledgement covers records that were never handed out.
    #[error("acknowledgement of {acked} in domain {domain} but only {last} were sent")]
    AckBeyondSent {
        /// Domain.
        domain: DomainId,
        /// Acknowledged sequence number.
        acked: SeqNo,
        /// Last sequence number handed to the window.
        last: SeqNo,
    },
}
