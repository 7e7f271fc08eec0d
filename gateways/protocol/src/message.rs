//! Typed messages and the checked frame codec.

use core::mem::size_of;
use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout};

use crate::error::{ProtocolError, Result};
use crate::ids::{DomainId, Epoch, GroupId, NodeId, Nsid, SeqNo, Timestamp};
use crate::wire::{
    AckWire, AuthOkWire, AuthProofWire, ControlWire, CreditWire, FrameHeader, HeartbeatWire,
    HelloWire, JournalPullWire, JournalStatusWire, JournalTrimWire, RecordWire, RefuseWire,
    HEADER_LEN, MAGIC, MAX_BODY, MAX_REASON, MAX_RECORD_DATA, MIN_VERSION, VERSION,
};

macro_rules! byte_enum {
    ($(#[$m:meta])* $name:ident : $t:ty { $($(#[$vm:meta])* $v:ident = $n:expr,)* }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($(#[$vm])* $v = $n,)* }

        impl $name {
            /// Every value, in wire order.
            pub const ALL: &'static [$name] = &[$($name::$v,)*];

            /// Decodes the wire value.
            pub fn from_wire(v: $t) -> Option<$name> {
                match v { $($n => Some($name::$v),)* _ => None }
            }

            /// The wire value.
            pub const fn wire(self) -> $t {
                self as $t
            }
        }
    };
}

byte_enum!(
    /// Message kinds (the header's `kind` byte).
    Kind: u8 {
        /// Opening frame with identity and challenge.
        Hello = 1,
        /// Answer to the peer's challenge.
        AuthProof = 2,
        /// Handshake accepted.
        AuthOk = 3,
        /// Refusal with a reason; the connection is closed after it.
        Refuse = 4,
        /// One journal record.
        Record = 5,
        /// Idle-domain heartbeat.
        Heartbeat = 6,
        /// Cumulative acknowledgement.
        Ack = 7,
        /// Receive window.
        Credit = 8,
        /// Group operation.
        Control = 9,
        /// Journal read request (gateway to appliance).
        JournalPull = 10,
        /// Journal trim (gateway to appliance).
        JournalTrim = 11,
        /// Journal state (appliance to gateway).
        JournalStatus = 12,
    }
);

byte_enum!(
    /// Role announced in `Hello`.
    Role: u8 {
        /// A `ferrited` journal endpoint.
        Appliance = 1,
        /// The replicator on the primary site.
        Primary = 2,
        /// The replicator on the secondary site.
        Secondary = 3,
    }
);

byte_enum!(
    /// What a record does to its LBA range.
    RecordOp: u8 {
        /// Write the data that follows.
        Write = 0,
        /// Write zeroes (no data on the wire).
        WriteZeroes = 1,
        /// Deallocate (no data on the wire; reads return zeroes).
        Deallocate = 2,
    }
);

byte_enum!(
    /// Why a peer refused.
    RefuseCode: u16 {
        /// The proof did not verify (wrong key).
        BadAuth = 1,
        /// The node id is not configured.
        UnknownPeer = 2,
        /// No common protocol version.
        Version = 3,
        /// The group does not exist on this side.
        UnknownGroup = 4,
        /// The epoch is older than this side's.
        StaleEpoch = 5,
        /// Malformed or unexpected frame.
        Protocol = 6,
        /// The journal is full.
        JournalFull = 7,
        /// The secondary namespace is smaller than the primary.
        TooSmall = 8,
        /// The process is shutting down.
        Shutdown = 9,
    }
);

byte_enum!(
    /// Group operations carried by `Control`.
    ControlOp: u16 {
        /// Stop shipping; the journal keeps growing.
        Pause = 1,
        /// Ship again.
        Resume = 2,
        /// Stop accepting new records and ship until acknowledged.
        Drain = 3,
        /// Ask for a `JournalStatus` / ack of every domain.
        Status = 4,
        /// The receiver takes over as primary at `arg` as the new epoch.
        Promote = 5,
        /// The receiver becomes secondary at epoch `arg`.
        Demote = 6,
    }
);

/// `Hello`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hello {
    /// Sender role.
    pub role: Role,
    /// Lowest version spoken.
    pub min_version: u8,
    /// Highest version spoken.
    pub max_version: u8,
    /// Sender identity.
    pub node: NodeId,
    /// Challenge.
    pub nonce: [u8; 32],
}

/// `AuthOk`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthOk {
    /// Chosen version.
    pub version: u8,
    /// Sender's epoch.
    pub epoch: Epoch,
}

/// `Refuse`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refuse<'a> {
    /// Machine-readable reason.
    pub code: RefuseCode,
    /// Human-readable reason (at most [`MAX_REASON`] bytes).
    pub reason: &'a str,
}

/// Everything about a record but its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    /// Consistency group.
    pub group: GroupId,
    /// Sequence domain.
    pub domain: DomainId,
    /// Epoch.
    pub epoch: Epoch,
    /// Sequence number (at least 1).
    pub seq: SeqNo,
    /// Group timestamp.
    pub ts: Timestamp,
    /// Namespace.
    pub nsid: Nsid,
    /// First LBA.
    pub slba: u64,
    /// Blocks (at least 1).
    pub nblocks: u32,
    /// Operation.
    pub op: RecordOp,
}

/// `Record`: a header and its data (empty unless `op` is `Write`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// Header.
    pub header: RecordHeader,
    /// Data.
    pub data: &'a [u8],
}

/// `Heartbeat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heartbeat {
    /// Group.
    pub group: GroupId,
    /// Domain.
    pub domain: DomainId,
    /// Epoch.
    pub epoch: Epoch,
    /// Timestamp read under the append ordering.
    pub ts: Timestamp,
    /// Highest sequence number appended at `ts`.
    pub last_seq: SeqNo,
}

/// `Ack`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    /// Group.
    pub group: GroupId,
    /// Domain.
    pub domain: DomainId,
    /// Epoch.
    pub epoch: Epoch,
    /// Cumulative: everything at or below is held.
    pub cum_seq: SeqNo,
    /// Durable at the receiver.
    pub durable: bool,
    /// Limit applied through at the receiver.
    pub applied_ts: Timestamp,
}

/// `Credit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Credit {
    /// Group.
    pub group: GroupId,
    /// Domain.
    pub domain: DomainId,
    /// Epoch.
    pub epoch: Epoch,
    /// Highest sequence number that may be sent.
    pub window_end: SeqNo,
}

/// `Control`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Control {
    /// Operation.
    pub op: ControlOp,
    /// Group.
    pub group: GroupId,
    /// Argument.
    pub arg: u64,
}

/// `JournalPull`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JournalPull {
    /// Group.
    pub group: GroupId,
    /// Domain.
    pub domain: DomainId,
    /// First sequence number wanted; 0: from the journal's trim point.
    pub from_seq: SeqNo,
    /// Record limit (at least 1).
    pub max_records: u32,
}

/// `JournalTrim`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JournalTrim {
    /// Group.
    pub group: GroupId,
    /// Domain.
    pub domain: DomainId,
    /// Free everything up to here.
    pub up_to_seq: SeqNo,
}

/// `JournalStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JournalStatus {
    /// Group.
    pub group: GroupId,
    /// Domain.
    pub domain: DomainId,
    /// Oldest held (0: empty).
    pub tail_seq: SeqNo,
    /// Newest appended (0: none).
    pub head_seq: SeqNo,
    /// Bytes in use.
    pub used_bytes: u64,
    /// Capacity.
    pub capacity: u64,
    /// The journal overflowed; the pair needs a resync.
    pub overflowed: bool,
}

/// One decoded message, borrowing variable parts from the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Message<'a> {
    /// See [`Hello`].
    Hello(Hello),
    /// MAC over the handshake transcript.
    AuthProof([u8; 32]),
    /// See [`AuthOk`].
    AuthOk(AuthOk),
    /// See [`Refuse`].
    Refuse(Refuse<'a>),
    /// See [`Record`].
    Record(Record<'a>),
    /// See [`Heartbeat`].
    Heartbeat(Heartbeat),
    /// See [`Ack`].
    Ack(Ack),
    /// See [`Credit`].
    Credit(Credit),
    /// See [`Control`].
    Control(Control),
    /// See [`JournalPull`].
    JournalPull(JournalPull),
    /// See [`JournalTrim`].
    JournalTrim(JournalTrim),
    /// See [`JournalStatus`].
    JournalStatus(JournalStatus),
}

fn fixed<T: FromBytes + KnownLayout + Immutable>(what: &'static str, body: &[u8]) -> Result<T> {
    if body.len() != size_of::<T>() {
        return Err(ProtocolError::BadBodyLength {
            what,
            expected: size_of::<T>(),
            got: body.len(),
        });
    }
    T::read_from_bytes(body).map_err(|_| ProtocolError::BadBodyLength {
        what,
        expected: size_of::<T>(),
        got: body.len(),
    })
}

fn zero(field: &'static str, v: u64) -> Result<()> {
    if v == 0 {
        Ok(())
    } else {
        Err(ProtocolError::InvalidField { field, value: v })
    }
}

fn nonzero_seq(field: &'static str, v: u64) -> Result<SeqNo> {
    if v == 0 {
        Err(ProtocolError::InvalidField { field, value: 0 })
    } else {
        Ok(SeqNo(v))
    }
}

/// Checks a frame header and returns the whole frame length (header plus
/// body) once enough bytes are there to know it; `Ok(None)` asks for more.
pub fn frame_len(buf: &[u8]) -> Result<Option<usize>> {
    let Some(hb) = buf.get(..HEADER_LEN) else {
        if buf.len() >= 4 && buf[..4] != MAGIC {
            return Err(bad_magic(buf));
        }
        return Ok(None);
    };
    let h = FrameHeader::read_from_bytes(hb).map_err(|_| ProtocolError::BadBodyLength {
        what: "header",
        expected: HEADER_LEN,
        got: hb.len(),
    })?;
    if h.magic != MAGIC {
        return Err(bad_magic(buf));
    }
    let computed = crc32c::crc32c(&hb[..20]);
    if computed != h.header_crc.get() {
        return Err(ProtocolError::HeaderChecksum {
            stored: h.header_crc.get(),
            computed,
        });
    }
    if !(MIN_VERSION..=VERSION).contains(&h.version) {
        return Err(ProtocolError::UnsupportedVersion {
            version: h.version,
            min: MIN_VERSION,
            max: VERSION,
        });
    }
    if Kind::from_wire(h.kind).is_none() {
        return Err(ProtocolError::UnknownKind { kind: h.kind });
    }
    zero("flags", u64::from(h.flags.get()))?;
    zero("header reserved", u64::from(h.reserved.get()))?;
    let len = h.body_len.get();
    if len > MAX_BODY {
        return Err(ProtocolError::BodyTooLong { len, max: MAX_BODY });
    }
    Ok(Some(HEADER_LEN + len as usize))
}

fn bad_magic(buf: &[u8]) -> ProtocolError {
    let mut found = [0u8; 4];
    let n = buf.len().min(4);
    found[..n].copy_from_slice(&buf[..n]);
    ProtocolError::BadMagic { found }
}

/// Decodes the first frame of `buf`. `Ok(None)`: incomplete, read more.
/// `Ok(Some((msg, n)))`: one message that used `n` bytes. Errors are fatal
/// for the connection (the stream cannot be resynchronised).
pub fn decode(buf: &[u8]) -> Result<Option<(Message<'_>, usize)>> {
    let Some(total) = frame_len(buf)? else {
        return Ok(None);
    };
    let Some(frame) = buf.get(..total) else {
        return Ok(None);
    };
    let (hb, body) = frame.split_at(HEADER_LEN);
    let h = FrameHeader::read_from_bytes(hb).map_err(|_| ProtocolError::BadBodyLength {
        what: "header",
        expected: HEADER_LEN,
        got: hb.len(),
    })?;
    let computed = crc32c::crc32c(body);
    if computed != h.body_crc.get() {
        return Err(ProtocolError::BodyChecksum {
            stored: h.body_crc.get(),
            computed,
        });
    }
    let kind = Kind::from_wire(h.kind).ok_or(ProtocolError::UnknownKind { kind: h.kind })?;
    Ok(Some((decode_body(kind, body)?, total)))
}

fn decode_body(kind: Kind, body: &[u8]) -> Result<Message<'_>> {
    Ok(match kind {
        Kind::Hello => {
            let w: HelloWire = fixed("Hello", body)?;
            let role = Role::from_wire(w.role).ok_or(ProtocolError::InvalidField {
                field: "role",
                value: u64::from(w.role),
            })?;
            if w.min_version == 0 || w.min_version > w.max_version {
                return Err(ProtocolError::InvalidField {
                    field: "min_version",
                    value: u64::from(w.min_version),
                });
            }
            zero(
                "Hello reserved",
                u64::from(w.reserved) | u64::from(w.reserved2.get()),
            )?;
            Message::Hello(Hello {
                role,
                min_version: w.min_version,
                max_version: w.max_version,
                node: NodeId(w.node_id.get()),
                nonce: w.nonce,
            })
        }
        Kind::AuthProof => Message::AuthProof(fixed::<AuthProofWire>("AuthProof", body)?.mac),
        Kind::AuthOk => {
            let w: AuthOkWire = fixed("AuthOk", body)?;
            if !(MIN_VERSION..=VERSION).contains(&w.version) {
                return Err(ProtocolError::UnsupportedVersion {
                    version: w.version,
                    min: MIN_VERSION,
                    max: VERSION,
                });
            }
            if w.reserved != [0; 7] {
                return Err(ProtocolError::InvalidField {
                    field: "AuthOk reserved",
                    value: 1,
                });
            }
            Message::AuthOk(AuthOk {
                version: w.version,
                epoch: Epoch(w.epoch.get()),
            })
        }
        Kind::Refuse => {
            let n = size_of::<RefuseWire>();
            let (fb, text) = split(body, n, "Refuse")?;
            let w: RefuseWire = fixed("Refuse", fb)?;
            let code = RefuseCode::from_wire(w.code.get()).ok_or(ProtocolError::InvalidField {
                field: "refuse code",
                value: u64::from(w.code.get()),
            })?;
            let len = usize::from(w.reason_len.get());
            if len > MAX_REASON {
                return Err(ProtocolError::TooLong {
                    field: "reason",
                    len,
                    max: MAX_REASON,
                });
            }
            if text.len() != len {
                return Err(ProtocolError::BadBodyLength {
                    what: "Refuse",
                    expected: n + len,
                    got: body.len(),
                });
            }
            let reason = core::str::from_utf8(text)
                .map_err(|_| ProtocolError::InvalidText { field: "reason" })?;
            Message::Refuse(Refuse { code, reason })
        }
        Kind::Record => Message::Record(decode_record(body)?),
        Kind::Heartbeat => {
            let w: HeartbeatWire = fixed("Heartbeat", body)?;
            zero("Heartbeat reserved", u64::from(w.reserved.get()))?;
            Message::Heartbeat(Heartbeat {
                group: GroupId(w.group.get()),
                domain: DomainId(w.domain.get()),
                epoch: Epoch(w.epoch.get()),
                ts: Timestamp(w.ts.get()),
                last_seq: SeqNo(w.last_seq.get()),
            })
        }
        Kind::Ack => {
            let w: AckWire = fixed("Ack", body)?;
            let flags = w.flags.get();
            if flags & !ACK_DURABLE != 0 {
                return Err(ProtocolError::InvalidField {
                    field: "Ack flags",
                    value: u64::from(flags),
                });
            }
            Message::Ack(Ack {
                group: GroupId(w.group.get()),
                domain: DomainId(w.domain.get()),
                epoch: Epoch(w.epoch.get()),
                cum_seq: SeqNo(w.cum_seq.get()),
                durable: flags & ACK_DURABLE != 0,
                applied_ts: Timestamp(w.applied_ts.get()),
            })
        }
        Kind::Credit => {
            let w: CreditWire = fixed("Credit", body)?;
            zero("Credit reserved", u64::from(w.reserved.get()))?;
            Message::Credit(Credit {
                group: GroupId(w.group.get()),
                domain: DomainId(w.domain.get()),
                epoch: Epoch(w.epoch.get()),
                window_end: SeqNo(w.window_end.get()),
            })
        }
        Kind::Control => {
            let w: ControlWire = fixed("Control", body)?;
            let op = ControlOp::from_wire(w.op.get()).ok_or(ProtocolError::InvalidField {
                field: "control op",
                value: u64::from(w.op.get()),
            })?;
            zero("Control reserved", u64::from(w.reserved.get()))?;
            Message::Control(Control {
                op,
                group: GroupId(w.group.get()),
                arg: w.arg.get(),
            })
        }
        Kind::JournalPull => {
            let w: JournalPullWire = fixed("JournalPull", body)?;
            if w.max_records.get() == 0 {
                return Err(ProtocolError::InvalidField {
                    field: "max_records",
                    value: 0,
                });
            }
            Message::JournalPull(JournalPull {
                group: GroupId(w.group.get()),
                domain: DomainId(w.domain.get()),
                from_seq: SeqNo(w.from_seq.get()),
                max_records: w.max_records.get(),
            })
        }
        Kind::JournalTrim => {
            let w: JournalTrimWire = fixed("JournalTrim", body)?;
            zero("JournalTrim reserved", u64::from(w.reserved.get()))?;
            Message::JournalTrim(JournalTrim {
                group: GroupId(w.group.get()),
                domain: DomainId(w.domain.get()),
                up_to_seq: SeqNo(w.up_to_seq.get()),
            })
        }
        Kind::JournalStatus => {
            let w: JournalStatusWire = fixed("JournalStatus", body)?;
            let flags = w.flags.get();
            if flags & !STATUS_OVERFLOWED != 0 {
                return Err(ProtocolError::InvalidField {
                    field: "JournalStatus flags",
                    value: u64::from(flags),
                });
            }
            if w.tail_seq.get() > w.head_seq.get() {
                return Err(ProtocolError::InvalidField {
                    field: "tail_seq",
                    value: w.tail_seq.get(),
                });
            }
            Message::JournalStatus(JournalStatus {
                group: GroupId(w.group.get()),
                domain: DomainId(w.domain.get()),
                tail_seq: SeqNo(w.tail_seq.get()),
                head_seq: SeqNo(w.head_seq.get()),
                used_bytes: w.used_bytes.get(),
                capacity: w.capacity.get(),
                overflowed: flags & STATUS_OVERFLOWED != 0,
            })
        }
    })
}

const ACK_DURABLE: u32 = 1;
const STATUS_OVERFLOWED: u32 = 1;

fn split<'a>(body: &'a [u8], n: usize, what: &'static str) -> Result<(&'a [u8], &'a [u8])> {
    if body.len() < n {
        return Err(ProtocolError::BadBodyLength {
            what,
            expected: n,
            got: body.len(),
        });
    }
    Ok(body.split_at(n))
}

fn decode_record(body: &[u8]) -> Result<Record<'_>> {
    let (fb, data) = split(body, size_of::<RecordWire>(), "Record")?;
    let w: RecordWire = fixed("Record", fb)?;
    let op = RecordOp::from_wire(w.op).ok_or(ProtocolError::InvalidField {
        field: "record op",
        value: u64::from(w.op),
    })?;
    if w.reserved != [0; 3] {
        return Err(ProtocolError::InvalidField {
            field: "Record reserved",
            value: 1,
        });
    }
    if data.len() != w.data_len.get() as usize {
        return Err(ProtocolError::BadBodyLength {
            what: "Record",
            expected: size_of::<RecordWire>() + w.data_len.get() as usize,
            got: body.len(),
        });
    }
    let header = RecordHeader {
        group: GroupId(w.group.get()),
        domain: DomainId(w.domain.get()),
        epoch: Epoch(w.epoch.get()),
        seq: nonzero_seq("seq", w.seq.get())?,
        ts: Timestamp(w.ts.get()),
        nsid: Nsid(w.nsid.get()),
        slba: w.slba.get(),
        nblocks: w.nblocks.get(),
        op,
    };
    header.check(data.len())?;
    let computed = crc32c::crc32c(data);
    if computed != w.data_crc.get() {
        return Err(ProtocolError::DataChecksum {
            stored: w.data_crc.get(),
            computed,
        });
    }
    Ok(Record { header, data })
}

impl RecordHeader {
    /// Checks the header's own invariants against a data length: nsid and
    /// block count non-zero, the LBA range does not wrap, data only for
    /// writes, a whole number of power-of-two blocks of 512..=65536 bytes.
    pub fn check(&self, data_len: usize) -> Result<()> {
        if self.nsid.0 == 0 || self.nsid.0 == u32::MAX {
            return Err(ProtocolError::InvalidField {
                field: "nsid",
                value: u64::from(self.nsid.0),
            });
        }
        if self.seq.0 == 0 {
            return Err(ProtocolError::InvalidField {
                field: "seq",
                value: 0,
            });
        }
        if self.nblocks == 0 || self.slba.checked_add(u64::from(self.nblocks)).is_none() {
            return Err(ProtocolError::InvalidField {
                field: "nblocks",
                value: u64::from(self.nblocks),
            });
        }
        if data_len > MAX_RECORD_DATA as usize {
            return Err(ProtocolError::TooLong {
                field: "record data",
                len: data_len,
                max: MAX_RECORD_DATA as usize,
            });
        }
        match self.op {
            RecordOp::Write => {
                let bs = data_len / self.nblocks as usize;
                if data_len % self.nblocks as usize != 0
                    || !bs.is_power_of_two()
                    || !(512..=65536).contains(&bs)
                {
                    return Err(ProtocolError::InvalidField {
                        field: "data_len",
                        value: data_len as u64,
                    });
                }
            }
            RecordOp::WriteZeroes | RecordOp::Deallocate => zero("data_len", data_len as u64)?,
        }
        Ok(())
    }

    /// The block size implied by `data_len` (writes only).
    pub fn block_size(&self, data_len: usize) -> Option<usize> {
        (self.op == RecordOp::Write && self.nblocks != 0).then(|| data_len / self.nblocks as usize)
    }
}

fn put_header(kind: Kind, body_len: usize, body_crc: u32, out: &mut [u8]) {
    let mut h = FrameHeader::new_zeroed();
    h.magic = MAGIC;
    h.version = VERSION;
    h.kind = kind.wire();
    h.body_len = U32::new(body_len as u32);
    h.body_crc = U32::new(body_crc);
    let crc = crc32c::crc32c(&h.as_bytes()[..20]);
    h.header_crc = U32::new(crc);
    out[..HEADER_LEN].copy_from_slice(h.as_bytes());
}

fn ensure(needed: usize, out: &[u8]) -> Result<()> {
    if out.len() < needed {
        Err(ProtocolError::BufferTooSmall {
            needed,
            got: out.len(),
        })
    } else {
        Ok(())
    }
}

/// Encodes a frame with a fixed body.
fn put_fixed<T: IntoBytes + Immutable>(kind: Kind, body: &T, out: &mut [u8]) -> Result<usize> {
    let b = body.as_bytes();
    ensure(HEADER_LEN + b.len(), out)?;
    put_header(kind, b.len(), crc32c::crc32c(b), out);
    out[HEADER_LEN..HEADER_LEN + b.len()].copy_from_slice(b);
    Ok(HEADER_LEN + b.len())
}

/// Bytes of a record frame before its data: the frame header and the fixed
/// record body.
pub const RECORD_PREFIX_LEN: usize = HEADER_LEN + size_of::<RecordWire>();

impl Record<'_> {
    /// Writes the frame header and fixed body for this record into `out`
    /// (at least [`RECORD_PREFIX_LEN`] bytes); the caller sends `data`
    /// after it (vectored write, no copy of the data).
    pub fn encode_prefix(&self, out: &mut [u8]) -> Result<usize> {
        self.header.check(self.data.len())?;
        ensure(RECORD_PREFIX_LEN, out)?;
        let h = &self.header;
        let w = RecordWire {
            group: U32::new(h.group.0),
            nsid: U32::new(h.nsid.0),
            domain: U64::new(h.domain.0),
            epoch: U64::new(h.epoch.0),
            seq: U64::new(h.seq.0),
            ts: U64::new(h.ts.0),
            slba: U64::new(h.slba),
            nblocks: U32::new(h.nblocks),
            data_len: U32::new(self.data.len() as u32),
            data_crc: U32::new(crc32c::crc32c(self.data)),
            op: h.op.wire(),
            reserved: [0; 3],
        };
        let fb = w.as_bytes();
        let body_crc = crc32c::crc32c_append(crc32c::crc32c(fb), self.data);
        put_header(Kind::Record, fb.len() + self.data.len(), body_crc, out);
        out[HEADER_LEN..RECORD_PREFIX_LEN].copy_from_slice(fb);
        Ok(RECORD_PREFIX_LEN)
    }
}

impl Message<'_> {
    /// The kind of this message.
    pub fn kind(&self) -> Kind {
        match self {
            Message::Hello(_) => Kind::Hello,
            Message::AuthProof(_) => Kind::AuthProof,
            Message::AuthOk(_) => Kind::AuthOk,
            Message::Refuse(_) => Kind::Refuse,
            Message::Record(_) => Kind::Record,
            Message::Heartbeat(_) => Kind::Heartbeat,
            Message::Ack(_) => Kind::Ack,
            Message::Credit(_) => Kind::Credit,
            Message::Control(_) => Kind::Control,
            Message::JournalPull(_) => Kind::JournalPull,
            Message::JournalTrim(_) => Kind::JournalTrim,
            Message::JournalStatus(_) => Kind::JournalStatus,
        }
    }

    /// Length of the encoded frame.
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN
            + match self {
                Message::Hello(_) => size_of::<HelloWire>(),
                Message::AuthProof(_) => size_of::<AuthProofWire>(),
                Message::AuthOk(_) => size_of::<AuthOkWire>(),
                Message::Refuse(r) => size_of::<RefuseWire>() + r.reason.len(),
                Message::Record(r) => size_of::<RecordWire>() + r.data.len(),
                Message::Heartbeat(_) => size_of::<HeartbeatWire>(),
                Message::Ack(_) => size_of::<AckWire>(),
                Message::Credit(_) => size_of::<CreditWire>(),
                Message::Control(_) => size_of::<ControlWire>(),
                Message::JournalPull(_) => size_of::<JournalPullWire>(),
                Message::JournalTrim(_) => size_of::<JournalTrimWire>(),
                Message::JournalStatus(_) => size_of::<JournalStatusWire>(),
            }
    }

    /// Encodes into `out` without allocating; returns the bytes written.
    pub fn encode_into(&self, out: &mut [u8]) -> Result<usize> {
        match *self {
            Message::Hello(h) => put_fixed(
                Kind::Hello,
                &HelloWire {
                    role: h.role.wire(),
                    min_version: h.min_version,
                    max_version: h.max_version,
                    reserved: 0,
                    reserved2: U32::ZERO,
                    node_id: U64::new(h.node.0),
                    nonce: h.nonce,
                },
                out,
            ),
            Message::AuthProof(mac) => put_fixed(Kind::AuthProof, &AuthProofWire { mac }, out),
            Message::AuthOk(a) => put_fixed(
                Kind::AuthOk,
                &AuthOkWire {
                    version: a.version,
                    reserved: [0; 7],
                    epoch: U64::new(a.epoch.0),
                },
                out,
            ),
            Message::Refuse(r) => {
                if r.reason.len() > MAX_REASON {
                    return Err(ProtocolError::TooLong {
                        field: "reason",
                        len: r.reason.len(),
                        max: MAX_REASON,
                    });
                }
                let w = RefuseWire {
                    code: U16::new(r.code.wire()),
                    reason_len: U16::new(r.reason.len() as u16),
                };
                let n = HEADER_LEN + size_of::<RefuseWire>() + r.reason.len();
                ensure(n, out)?;
                let crc = crc32c::crc32c_append(crc32c::crc32c(w.as_bytes()), r.reason.as_bytes());
                put_header(Kind::Refuse, n - HEADER_LEN, crc, out);
                let fb_end = HEADER_LEN + size_of::<RefuseWire>();
                out[HEADER_LEN..fb_end].copy_from_slice(w.as_bytes());
                out[fb_end..n].copy_from_slice(r.reason.as_bytes());
                Ok(n)
            }
            Message::Record(r) => {
                let n = RECORD_PREFIX_LEN + r.data.len();
                ensure(n, out)?;
                r.encode_prefix(out)?;
                out[RECORD_PREFIX_LEN..n].copy_from_slice(r.data);
                Ok(n)
            }
            Message::Heartbeat(h) => put_fixed(
                Kind::Heartbeat,
                &HeartbeatWire {
                    group: U32::new(h.group.0),
                    reserved: U32::ZERO,
                    domain: U64::new(h.domain.0),
                    epoch: U64::new(h.epoch.0),
                    ts: U64::new(h.ts.0),
                    last_seq: U64::new(h.last_seq.0),
                },
                out,
            ),
            Message::Ack(a) => put_fixed(
                Kind::Ack,
                &AckWire {
                    group: U32::new(a.group.0),
                    flags: U32::new(if a.durable { ACK_DURABLE } else { 0 }),
                    domain: U64::new(a.domain.0),
                    epoch: U64::new(a.epoch.0),
                    cum_seq: U64::new(a.cum_seq.0),
                    applied_ts: U64::new(a.applied_ts.0),
                },
                out,
            ),
            Message::Credit(c) => put_fixed(
                Kind::Credit,
                &CreditWire {
                    group: U32::new(c.group.0),
                    reserved: U32::ZERO,
                    domain: U64::new(c.domain.0),
                    epoch: U64::new(c.epoch.0),
                    window_end: U64::new(c.window_end.0),
                },
                out,
            ),
            Message::Control(c) => put_fixed(
                Kind::Control,
                &ControlWire {
                    op: U16::new(c.op.wire()),
                    reserved: U16::ZERO,
                    group: U32::new(c.group.0),
                    arg: U64::new(c.arg),
                },
                out,
            ),
            Message::JournalPull(p) => {
                if p.max_records == 0 {
                    return Err(ProtocolError::InvalidField {
                        field: "max_records",
                        value: 0,
                    });
                }
                put_fixed(
                    Kind::JournalPull,
                    &JournalPullWire {
                        group: U32::new(p.group.0),
                        max_records: U32::new(p.max_records),
                        domain: U64::new(p.domain.0),
                        from_seq: U64::new(p.from_seq.0),
                    },
                    out,
                )
            }
            Message::JournalTrim(t) => put_fixed(
                Kind::JournalTrim,
                &JournalTrimWire {
                    group: U32::new(t.group.0),
                    reserved: U32::ZERO,
                    domain: U64::new(t.domain.0),
                    up_to_seq: U64::new(t.up_to_seq.0),
                },
                out,
            ),
            Message::JournalStatus(s) => {
                if s.tail_seq > s.head_seq {
                    return Err(ProtocolError::InvalidField {
                        field: "tail_seq",
                        value: s.tail_seq.0,
                    });
                }
                put_fixed(
                    Kind::JournalStatus,
                    &JournalStatusWire {
                        group: U32::new(s.group.0),
                        flags: U32::new(if s.overflowed { STATUS_OVERFLOWED } else { 0 }),
                        domain: U64::new(s.domain.0),
                        tail_seq: U64::new(s.tail_seq.0),
                        head_seq: U64::new(s.head_seq.0),
                        used_bytes: U64::new(s.used_bytes),
                        capacity: U64::new(s.capacity),
                    },
                    out,
                )
            }
        }
    }

    /// Appends the encoded frame to `out` (convenience for control paths).
    pub fn encode_to_vec(&self, out: &mut Vec<u8>) -> Result<usize> {
        let start = out.len();
        out.resize(start + self.encoded_len(), 0);
        match self.encode_into(&mut out[start..]) {
            Ok(n) => Ok(n),
            Err(e) => {
                out.truncate(start);
                Err(e)
            }
        }
    }
}
