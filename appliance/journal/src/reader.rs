//! Reading committed records back, in sequence order, and trimming.

use std::collections::VecDeque;
use std::sync::Arc;

use ferrite_bdev::{IoChannel, IoKind};
use ferrite_gateway_protocol::{DomainId, Epoch, Nsid, RecordHeader, RecordOp, SeqNo, Timestamp};
use ferrite_reactor::IoBuf;
use zerocopy::FromBytes;

use crate::error::JournalError;
use crate::format::{RecordHeaderWire, RECORD_MAGIC};
use crate::journal::{now_ns, sync_io, Journal};

/// A record read back from the journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedRecord {
    /// Header as shipped (the timestamp is the shipped one).
    pub header: RecordHeader,
    /// Data (writes only).
    pub data: Vec<u8>,
}

/// A channel and buffer to read a journal with, owned by the thread that
/// uses it (channels stay on the thread that opened them).
pub struct ReadCtx {
    ch: Box<dyn IoChannel>,
    buf: Option<IoBuf>,
}

impl std::fmt::Debug for ReadCtx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadCtx").finish_non_exhaustive()
    }
}

impl ReadCtx {
    /// Opens a channel on the journal's device.
    pub fn open(journal: &Journal) -> Result<ReadCtx, JournalError> {
        let slot = (journal.slot_blocks() * journal.block_size()) as usize;
        Ok(ReadCtx {
            ch: journal.device().open_channel(&[])?,
            buf: Some(IoBuf::new(slot)),
        })
    }
}

/// The single reader of one journal (the stream endpoint holds it).
///
/// Timestamps: each record carries the wall clock read right after its
/// sequence number was reserved; concurrent writers may read the clock in
/// a different order than they reserved. The reader ships
/// `ts(seq) = max(raw(seq), ts(seq - 1) + 1)`, which is strictly increasing
/// in sequence order, deterministic (a retransmit carries the same value)
/// and continues across restarts from the trim point's timestamp kept in
/// the superblock.
pub struct JournalReader {
    journal: Arc<Journal>,
    /// Shipped timestamps and data lengths of records trimmed+1 ..= trimmed+len.
    ts: VecDeque<(u64, u32)>,
    domain: DomainId,
    epoch: Epoch,
    /// Acknowledged up to (at or past the persisted trim point).
    acked: u64,
    /// When the trim point was last persisted.
    last_persist: Option<std::time::Instant>,
}

/// Acknowledgements are persisted as the trim point at most this often (and at once when the
/// acknowledged records hold a quarter of the slots), so a steady stream of acknowledgements
/// does not put a synchronous superblock write in front of every pull.
pub const TRIM_PERSIST_INTERVAL: std::time::Duration = std::time::Duration::from_millis(10);

impl std::fmt::Debug for JournalReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JournalReader")
            .field("group", &self.journal.group())
            .field("known_ts", &self.ts.len())
            .finish()
    }
}

impl JournalReader {
    /// A reader of `journal`, stamping records with `domain` and `epoch`.
    pub fn new(journal: Arc<Journal>, domain: DomainId, epoch: Epoch) -> JournalReader {
        JournalReader {
            journal,
            ts: VecDeque::new(),
            domain,
            epoch,
            acked: 0,
            last_persist: None,
        }
    }

    /// The journal.
    pub fn journal(&self) -> &Arc<Journal> {
        &self.journal
    }

    fn read_slot(
        &mut self,
        cx: &mut ReadCtx,
        seq: u64,
        with_data: bool,
    ) -> Result<(RecordHeaderWire, Vec<u8>), JournalError> {
        let blocks = if with_data {
            self.journal.slot_blocks()
        } else {
            1
        };
        let buf = cx.buf.take().unwrap_or_else(|| {
            IoBuf::new((self.journal.slot_blocks() * self.journal.block_size()) as usize)
        });
        let dev = self.journal.device().clone();
        let buf = sync_io(
            &*dev,
            &mut *cx.ch,
            IoKind::Read {
                lba: self.journal.slot_lba(seq),
                blocks,
            },
            buf,
        )?;
        let damaged = |reason: String| JournalError::DamagedRecord { seq, reason };
        let h = RecordHeaderWire::read_from_prefix(buf.as_slice())
            .map_err(|_| damaged("short read".into()))?
            .0;
        let res = if h.magic != RECORD_MAGIC || h.header_crc.get() != h.compute_crc() {
            Err(damaged("bad header".into()))
        } else if h.seq.get() != seq {
            Err(damaged(format!("slot holds record {}", h.seq.get())))
        } else if with_data {
            let bs = self.journal.block_size() as usize;
            let len = h.data_len.get() as usize;
            match buf.as_slice().get(bs..bs + len) {
                Some(d) if crc32c::crc32c(d) == h.data_crc.get() => Ok((h, d.to_vec())),
                Some(_) => Err(damaged("data checksum mismatch".into())),
                None => Err(damaged(format!("data length {len} beyond the slot"))),
            }
        } else {
            Ok((h, Vec::new()))
        };
        cx.buf = Some(buf);
        res
    }

    /// The shipped timestamp of committed record `seq`.
    fn shipped_ts(&mut self, cx: &mut ReadCtx, seq: u64) -> Result<u64, JournalError> {
        let trimmed = self.journal.trimmed();
        while (self.ts.len() as u64) < seq - trimmed {
            let s = trimmed + self.ts.len() as u64 + 1;
            let prev = self
                .ts
                .back()
                .map_or(self.journal.trimmed_ts(), |&(t, _)| t);
            let h = self.read_slot(cx, s, false)?.0;
            self.ts
                .push_back((h.raw_ts.get().max(prev + 1), h.data_len.get()));
        }
        Ok(self.ts[(seq - trimmed - 1) as usize].0)
    }

    fn check_range(&self, seq: u64) -> Result<(), JournalError> {
        let (trimmed, committed) = (self.journal.trimmed(), self.journal.committed());
        if seq <= trimmed || seq > committed {
            return Err(JournalError::NotInJournal {
                seq,
                trimmed,
                committed,
            });
        }
        Ok(())
    }

    /// Reads committed record `seq` (checked against its checksums).
    pub fn read(&mut self, cx: &mut ReadCtx, seq: u64) -> Result<OwnedRecord, JournalError> {
        self.check_range(seq)?;
        let ts = self.shipped_ts(cx, seq)?;
        let (h, data) = self.read_slot(cx, seq, true)?;
        let op = RecordOp::from_wire(h.op).ok_or_else(|| JournalError::DamagedRecord {
            seq,
            reason: format!("op {}", h.op),
        })?;
        Ok(OwnedRecord {
            header: RecordHeader {
                group: self.journal.group(),
                domain: self.domain,
                epoch: self.epoch,
                seq: SeqNo(seq),
                ts: Timestamp(ts),
                nsid: Nsid(h.nsid.get()),
                slba: h.slba.get(),
                nblocks: h.nblocks.get(),
                op,
            },
            data,
        })
    }

    /// A heartbeat promise `(ts, last_seq)`: every record stamped at or
    /// before `ts` has a sequence number at or below `last_seq`. The clock
    /// is read before the reservation counter, and a record's clock is
    /// read after its reservation, so later records are stamped after it.
    pub fn heartbeat(&mut self, cx: &mut ReadCtx) -> Result<(Timestamp, SeqNo), JournalError> {
        let t = now_ns().saturating_sub(1);
        let last = self.journal.reserved();
        let floor = if last > self.journal.trimmed() && last <= self.journal.committed() {
            self.shipped_ts(cx, last)?
        } else {
            self.journal.trimmed_ts()
        };
        Ok((Timestamp(t.max(floor)), SeqNo(last)))
    }

    /// Every record up to `seq` is acknowledged by the peer: sync writes up to it may complete
    /// at once, and the trim point (superblock, then the slots are free) is persisted when due
    /// ([`TRIM_PERSIST_INTERVAL`]; the first acknowledgement at once). An acknowledgement not
    /// persisted before a crash only means those records are shipped again; the secondary drops
    /// duplicates.
    pub fn trim(&mut self, cx: &mut ReadCtx, seq: u64) -> Result<(), JournalError> {
        let trimmed = self.journal.trimmed();
        let acked = self.acked.max(trimmed);
        if seq <= acked {
            return Ok(());
        }
        let committed = self.journal.committed();
        if seq > committed {
            return Err(JournalError::TrimBeyondCommitted { seq, committed });
        }
        self.shipped_ts(cx, seq)?;
        let bytes: u64 = self
            .ts
            .range((acked - trimmed) as usize..(seq - trimmed) as usize)
            .map(|&(_, len)| u64::from(len))
            .sum();
        self.journal.note_trimmed_bytes(bytes);
        self.acked = seq;
        // The secondary's durable acknowledgement: sync writes may complete now.
        self.journal.ack_remote(seq);
        self.persist_due(cx)
    }

    /// Persists the acknowledged point as the trim point if that is due (see [`Self::trim`]);
    /// the stream endpoint also calls it on every pull.
    pub fn persist_due(&mut self, cx: &mut ReadCtx) -> Result<(), JournalError> {
        let trimmed = self.journal.trimmed();
        let seq = self.acked;
        if seq <= trimmed {
            return Ok(());
        }
        let due = self
            .last_persist
            .is_none_or(|t| t.elapsed() >= TRIM_PERSIST_INTERVAL)
            || seq - trimmed >= (self.journal.stats().slots / 4).max(1);
        if !due {
            return Ok(());
        }
        let ts = self.shipped_ts(cx, seq)?;
        self.journal.persist_trim(&mut *cx.ch, seq, ts)?;
        self.ts.drain(..(seq - trimmed) as usize);
        self.last_persist = Some(std::time::Instant::now());
        Ok(())
    }
}
