//! Wire messages of Ferrite's gateways, version 1.
//!
//! One frame format serves both links:
//!
//! - **appliance <-> gateway** (the journal stream endpoint of `ferrited`,
//!   a Unix socket): the replicator sends `Hello`, then `JournalPull` /
//!   `JournalTrim`; the appliance answers with `Record`, `Heartbeat` and
//!   `JournalStatus` frames.
//! - **gateway <-> gateway** (TCP, later RDMA): `Hello` / `AuthProof` /
//!   `AuthOk` handshake, then the primary sends `Record` and `Heartbeat`
//!   frames on any of its connections; the secondary answers with
//!   cumulative `Ack` and `Credit` frames. `Control` carries group
//!   operations (pause, resume, drain, promote, demote), `Refuse` a reason
//!   before the connection is closed.
//!
//! Every frame is a 24-byte [`wire::FrameHeader`] (magic `FRGW`, version,
//! kind, body length, CRC32C of the body, CRC32C of the header) and a body.
//! Bodies are fixed little-endian structures ([`wire`]), followed for
//! `Record` by the data and for `Refuse` by a UTF-8 reason. Frames are
//! self-describing: any connection can carry any frame, so reordering
//! across connections is handled by sequence numbers, never by the link.
//!
//! Parsing is checked: [`decode`] refuses bad magic, unknown versions and
//! kinds, checksum mismatches, wrong lengths, non-zero reserved fields and
//! values out of range, with a [`ProtocolError`] naming the problem.
//! Encoding never allocates ([`Message::encode_into`],
//! [`Record::encode_prefix`] for vectored sends of record data).
//!
//! Sequence numbers start at 1 per (group, domain); 0 means none. Record
//! timestamps are strictly increasing within a domain. A heartbeat
//! `(ts, last_seq)` promises that every record of its domain stamped at or
//! before `ts` has a sequence number at or below `last_seq`.

#![forbid(unsafe_code)]

pub mod error;
pub mod ids;
mod message;
pub mod wire;

pub use error::{ProtocolError, Result};
pub use ids::{DomainId, Epoch, GroupId, NodeId, Nsid, SeqNo, Timestamp};
pub use message::{
    decode, frame_len, Ack, AuthOk, Control, ControlOp, Credit, Heartbeat, Hello, JournalPull,
    JournalStatus, JournalTrim, Kind, Message, Record, RecordHeader, RecordOp, Refuse, RefuseCode,
    Role, RECORD_PREFIX_LEN,
};

#[cfg(test)]
mod tests;
