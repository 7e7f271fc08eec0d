//! The journaling block-device wrapper of a replicated namespace.

use std::collections::VecDeque;
use std::sync::Arc;

use ferrite_bdev::{BdevError, BdevIo, BlockDevice, Capabilities, ChannelStats, IoChannel, IoKind};
use ferrite_gateway_protocol::{Nsid, RecordOp};
use ferrite_reactor::IoBuf;
use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromZeros, IntoBytes};

use crate::error::JournalError;
use crate::format::{RecordHeaderWire, RECORD_MAGIC};
use crate::journal::{now_ns, Journal};
use crate::sync::Mode;

/// Requests one channel accepts before `QueueFull` (each holds one
/// preallocated staging buffer of a journal slot).
pub const JOURNAL_CHANNEL_DEPTH: usize = 64;
/// Attempts of one journal record write before the journal is declared
/// broken.
const JOURNAL_WRITE_ATTEMPTS: u8 = 3;
/// How long a write waits for journal space (the replicator trimming)
/// before it fails with `NoSpace`, in async mode. In sync mode (also degraded) the wait is the
/// group's sync timeout if shorter: a full journal there means the secondary stopped draining,
/// the condition that timeout is for, and a longer stall outlasts the host's command timeout
/// (which then aborts and resets instead of seeing a clear error).
pub const FULL_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// A replicated namespace: `inner` (the volume) with every modifying
/// request appended to `journal` before it completes.
///
/// Its name is `<inner>@journal`; the NVMe namespace is created on this
/// device instead of the volume. `nsid` is the namespace's id within the
/// group (carried in every record; the replicator maps it to the
/// secondary's namespace).
#[derive(Debug)]
pub struct JournaledBdev {
    name: String,
    inner: Arc<dyn BlockDevice>,
    journal: Arc<Journal>,
    nsid: Nsid,
}

impl JournaledBdev {
    /// Wraps `inner`; its block size must be the journal's.
    pub fn new(
        inner: Arc<dyn BlockDevice>,
        journal: Arc<Journal>,
        nsid: Nsid,
    ) -> Result<JournaledBdev, JournalError> {
        if inner.block_size() != journal.block_size() {
            return Err(JournalError::BlockSizeMismatch {
                namespace: inner.block_size(),
                journal: journal.block_size(),
            });
        }
        Ok(JournaledBdev {
            name: format!("{}@journal", inner.name()),
            inner,
            journal,
            nsid,
        })
    }

    /// The journal.
    pub fn journal(&self) -> &Arc<Journal> {
        &self.journal
    }

    /// The wrapped device.
    pub fn inner(&self) -> &Arc<dyn BlockDevice> {
        &self.inner
    }

    /// The namespace id within the group.
    pub fn nsid(&self) -> Nsid {
        self.nsid
    }
}

impl BlockDevice for JournaledBdev {
    fn name(&self) -> &str {
        &self.name
    }

    fn block_size(&self) -> u32 {
        self.inner.block_size()
    }

    fn num_blocks(&self) -> u64 {
        self.inner.num_blocks()
    }

    fn capabilities(&self) -> Capabilities {
        let mut c = self.inner.capabilities();
        // One record per write: a write never exceeds a slot.
        c.max_transfer_bytes = c.max_transfer_bytes.min(self.journal.slot_data_bytes());
        // Copy would change data without a record; callers emulate it.
        c.copy = false;
        c
    }

    fn uuid(&self) -> [u8; 16] {
        self.inner.uuid()
    }

    fn allocated_blocks(&self) -> Option<u64> {
        self.inner.allocated_blocks()
    }

    fn open_channel(
        &self,
        buffers: &[&ferrite_bdev::PoolRegions],
    ) -> Result<Box<dyn IoChannel>, BdevError> {
        let inner = self.inner.open_channel(buffers)?;
        let journal_ch = self.journal.device().open_channel(&[])?;
        let slot_bytes = (self.journal.slot_blocks() * self.journal.block_size()) as usize;
        let ops = (0..JOURNAL_CHANNEL_DEPTH)
            .map(|_| Op {
                io: None,
                tag: 0,
                staging: Some(IoBuf::new(slot_bytes)),
                seq: 0,
                parts: 0,
                attempts: 0,
                journal_kind: None,
                err: None,
                record: None,
                waiting_since: None,
                sync_since: None,
            })
            .collect();
        Ok(Box::new(JournalChannel {
            journal: self.journal.clone(),
            nsid: self.nsid,
            block_size: self.inner.block_size(),
            inner_num_blocks: self.inner.num_blocks(),
            volatile: self.journal.device().capabilities().volatile_write_cache,
            inner,
            journal_ch,
            ops,
            free: (0..JOURNAL_CHANNEL_DEPTH as u16).rev().collect(),
            retry_inner: VecDeque::with_capacity(JOURNAL_CHANNEL_DEPTH),
            retry_journal: VecDeque::with_capacity(JOURNAL_CHANNEL_DEPTH),
            finished: VecDeque::with_capacity(JOURNAL_CHANNEL_DEPTH),
            waiting: VecDeque::with_capacity(JOURNAL_CHANNEL_DEPTH),
            sync_wait: VecDeque::with_capacity(JOURNAL_CHANNEL_DEPTH),
            stats: ChannelStats::default(),
        }))
    }
}

#[derive(Debug)]
struct Op {
    io: Option<BdevIo>,
    /// The caller's tag while the request is with the inner channel.
    tag: u64,
    staging: Option<IoBuf>,
    seq: u64,
    parts: u8,
    attempts: u8,
    journal_kind: Option<IoKind>,
    err: Option<BdevError>,
    /// A modifying request waiting for its sequence number.
    record: Option<(RecordOp, u64, u64)>,
    /// Since when it waits for journal space.
    waiting_since: Option<std::time::Instant>,
    /// Sync mode: since when the completed request waits for the secondary's ack.
    sync_since: Option<std::time::Instant>,
}

struct JournalChannel {
    journal: Arc<Journal>,
    nsid: Nsid,
    block_size: u32,
    inner_num_blocks: u64,
    volatile: bool,
    inner: Box<dyn IoChannel>,
    journal_ch: Box<dyn IoChannel>,
    ops: Box<[Op]>,
    free: Vec<u16>,
    /// Requests the inner channel refused with QueueFull (op index).
    retry_inner: VecDeque<u16>,
    /// Journal writes refused with QueueFull or failed (op index).
    retry_journal: VecDeque<u16>,
    /// Ops whose every part completed, handed back by the next poll.
    finished: VecDeque<u16>,
    /// Modifying requests waiting for journal space, in arrival order.
    waiting: VecDeque<u16>,
    /// Sync mode: completed records waiting for the secondary's acknowledgement.
    sync_wait: VecDeque<u16>,
    stats: ChannelStats,
}

fn record_of(kind: &IoKind) -> Option<(RecordOp, u64, u64)> {
    match *kind {
        IoKind::Write { lba, blocks, .. } => Some((RecordOp::Write, lba, u64::from(blocks))),
        IoKind::WriteZeroes { lba, blocks } => Some((RecordOp::WriteZeroes, lba, blocks)),
        IoKind::Unmap { lba, blocks } => Some((RecordOp::Deallocate, lba, blocks)),
        IoKind::Read { .. } | IoKind::Flush | IoKind::Copy { .. } => None,
    }
}

impl JournalChannel {
    /// Fills the op's staging buffer with the record (header block + data)
    /// and returns the journal write.
    fn stage(
        &mut self,
        idx: usize,
        op: RecordOp,
        slba: u64,
        nblocks: u64,
    ) -> Result<IoKind, BdevError> {
        let seq = self.ops[idx].seq;
        let bs = self.block_size as usize;
        let data: &[u8] = match (op, &self.ops[idx].io) {
            (RecordOp::Write, Some(BdevIo { buf: Some(b), .. })) => {
                let n = nblocks as usize * bs;
                b.as_slice().get(..n).ok_or(BdevError::BufferTooSmall {
                    needed: n,
                    available: b.len(),
                })?
            }
            _ => &[],
        };
        let nblocks32 = u32::try_from(nblocks).map_err(|_| BdevError::TransferTooLarge {
            bytes: nblocks * bs as u64,
            max: self.journal.slot_data_bytes(),
        })?;
        let mut h = RecordHeaderWire::new_zeroed();
        h.magic = RECORD_MAGIC;
        h.op = op.wire();
        h.group = U32::new(self.journal.group().0);
        h.nsid = U32::new(self.nsid.0);
        h.seq = U64::new(seq);
        h.raw_ts = U64::new(now_ns());
        h.slba = U64::new(slba);
        h.nblocks = U32::new(nblocks32);
        h.data_len = U32::new(data.len() as u32);
        h.data_crc = U32::new(crc32c::crc32c(data));
        self.journal.note_appended_bytes(data.len() as u64);
        h.header_crc = U32::new(h.compute_crc());
        let staging = self.ops[idx]
            .staging
            .as_mut()
            .expect("an idle op holds its staging buffer");
        let total = bs + data.len();
        staging.set_len(total);
        let s = staging.as_mut_slice();
        s[..bs].fill(0);
        s[..64].copy_from_slice(h.as_bytes());
        s[bs..total].copy_from_slice(data);
        Ok(IoKind::Write {
            lba: self.journal.slot_lba(seq),
            blocks: (total / bs) as u32,
            fua: self.volatile,
        })
    }

    fn submit_journal(&mut self, idx: usize) {
        let kind = self.ops[idx].journal_kind.expect("journal write staged");
        let buf = self.ops[idx].staging.take();
        match self.journal_ch.submit(BdevIo::new(idx as u64, kind, buf)) {
            Ok(()) => {}
            Err((back, _)) => {
                self.ops[idx].staging = back.buf;
                self.retry_journal.push_back(idx as u16);
            }
        }
    }

    fn submit_inner(&mut self, idx: usize) {
        let Some(mut io) = self.ops[idx].io.take() else {
            return;
        };
        io.tag = idx as u64;
        if let Err((back, e)) = self.inner.submit(io) {
            self.ops[idx].io = Some(back);
            if matches!(e, BdevError::QueueFull) {
                self.retry_inner.push_back(idx as u16);
            } else {
                finish_part(&mut self.ops[idx], idx, &mut self.finished, Err(e));
            }
        }
    }

    /// Numbers the op's record (one compare-and-swap; after it the record
    /// must be written) and submits both writes. False: the journal is full.
    fn start_record(&mut self, idx: usize) -> bool {
        let Some((op, lba, blocks)) = self.ops[idx].record else {
            return true;
        };
        let Some(seq) = self.journal.reserve() else {
            return false;
        };
        self.ops[idx].record = None;
        self.ops[idx].seq = seq;
        match self.stage(idx, op, lba, blocks) {
            Ok(kind) => {
                self.ops[idx].journal_kind = Some(kind);
                self.submit_journal(idx);
            }
            Err(e) => {
                // Checked at submit, so this does not happen; if it does, the
                // journal stops rather than ship something invented.
                self.journal.mark_failed(seq);
                finish_part(&mut self.ops[idx], idx, &mut self.finished, Err(e));
            }
        }
        self.submit_inner(idx);
        true
    }

    /// How long a write may wait for journal space (see [`FULL_WAIT`]).
    fn full_wait(&self) -> std::time::Duration {
        let sync = self.journal.sync_ctl();
        if sync.policy().mode == Mode::Sync {
            sync.timeout().min(FULL_WAIT)
        } else {
            FULL_WAIT
        }
    }

    /// Starts waiting requests while there is space; fails those that
    /// waited longer than [`Self::full_wait`].
    fn start_waiting(&mut self) {
        let full_wait = self.full_wait();
        while let Some(&i) = self.waiting.front() {
            let i = i as usize;
            if self.start_record(i) {
                self.waiting.pop_front();
                continue;
            }
            if self.ops[i]
                .waiting_since
                .is_some_and(|t| t.elapsed() >= full_wait)
            {
                self.waiting.pop_front();
                self.journal.note_full_failure();
                let o = &mut self.ops[i];
                o.record = None;
                o.err = Some(BdevError::NoSpace);
                o.parts = 0;
                self.finished.push_back(i as u16);
                continue;
            }
            break;
        }
    }

    /// Moves sync-waiting requests the secondary acknowledged (or whose wait is overdue, by
    /// the lost-link policy) to `finished`.
    fn release_synced(&mut self) {
        let sync = self.journal.sync_ctl();
        let timeout = sync.timeout();
        for _ in 0..self.sync_wait.len() {
            let Some(i) = self.sync_wait.pop_front() else {
                break;
            };
            let op = &mut self.ops[i as usize];
            if sync.must_wait(op.seq) {
                if op.sync_since.is_none_or(|t| t.elapsed() < timeout) {
                    self.sync_wait.push_back(i);
                    continue;
                }
                let (r, degraded) = sync.overdue(self.journal.reserved());
                if degraded {
                    log::warn!(
                        "ALERT journal of group {}: no acknowledgement of record {} from the secondary in {timeout:?}; \
                         sync replication degraded to async until the secondary catches up",
                        self.journal.group(),
                        op.seq
                    );
                }
                if let Err(e) = r {
                    op.err = Some(e);
                }
            }
            self.finished.push_back(i);
        }
    }

    fn inner_blocks(&self) -> u64 {
        self.inner_num_blocks
    }

    /// Checks a modifying request before a sequence number is spent on it.
    fn check(&self, io: &BdevIo, lba: u64, blocks: u64) -> Result<(), BdevError> {
        let num_blocks = self.inner_blocks();
        if lba.checked_add(blocks).is_none_or(|e| e > num_blocks) {
            return Err(BdevError::OutOfRange {
                lba,
                blocks,
                num_blocks,
            });
        }
        if let IoKind::Write { .. } = io.kind {
            let bytes = blocks * u64::from(self.block_size);
            if bytes > u64::from(self.journal.slot_data_bytes()) {
                return Err(BdevError::TransferTooLarge {
                    bytes,
                    max: self.journal.slot_data_bytes(),
                });
            }
            let available = io.buf.as_ref().map_or(0, |b| b.len());
            if (available as u64) < bytes {
                return Err(BdevError::BufferTooSmall {
                    needed: bytes as usize,
                    available,
                });
            }
        }
        Ok(())
    }
}

fn finish_part(op: &mut Op, idx: usize, finished: &mut VecDeque<u16>, r: Result<(), BdevError>) {
    if let Err(e) = r {
        op.err.get_or_insert(e);
    }
    op.parts -= 1;
    if op.parts == 0 {
        finished.push_back(idx as u16);
    }
}

impl IoChannel for JournalChannel {
    fn submit(&mut self, io: BdevIo) -> Result<(), (BdevIo, BdevError)> {
        if let IoKind::Copy { .. } = io.kind {
            self.stats.rejected += 1;
            return Err((io, BdevError::Unsupported("copy on a replicated namespace")));
        }
        let record = record_of(&io.kind);
        if let Some((_, lba, blocks)) = record {
            if let Err(e) = self.check(&io, lba, blocks) {
                self.stats.rejected += 1;
                return Err((io, e));
            }
        }
        let Some(idx) = self.free.pop() else {
            self.stats.queue_full += 1;
            return Err((io, BdevError::QueueFull));
        };
        let idx = idx as usize;
        let Some((op, lba, blocks)) = record else {
            let o = &mut self.ops[idx];
            o.tag = io.tag;
            o.io = Some(io);
            o.err = None;
            o.parts = 1;
            o.journal_kind = None;
            self.stats.submitted += 1;
            self.submit_inner(idx);
            return Ok(());
        };
        let o = &mut self.ops[idx];
        o.tag = io.tag;
        o.io = Some(io);
        o.err = None;
        o.attempts = 0;
        o.journal_kind = None;
        o.parts = 2;
        o.record = Some((op, lba, blocks));
        o.waiting_since = None;
        self.stats.submitted += 1;
        // Arrival order: nothing overtakes a request waiting for space.
        if !self.waiting.is_empty() || !self.start_record(idx) {
            self.journal.note_full(self.full_wait());
            self.ops[idx].waiting_since = Some(std::time::Instant::now());
            self.waiting.push_back(idx as u16);
        }
        Ok(())
    }

    fn poll(&mut self, max: usize, done: &mut dyn FnMut(BdevIo, Result<(), BdevError>)) -> usize {
        if !self.waiting.is_empty() {
            self.start_waiting();
        }
        for _ in 0..self.retry_journal.len() {
            let Some(i) = self.retry_journal.pop_front() else {
                break;
            };
            self.submit_journal(i as usize);
        }
        for _ in 0..self.retry_inner.len() {
            let Some(i) = self.retry_inner.pop_front() else {
                break;
            };
            self.submit_inner(i as usize);
        }
        {
            let ops = &mut self.ops;
            let finished = &mut self.finished;
            let retry = &mut self.retry_journal;
            let journal = &self.journal;
            self.journal_ch.poll(JOURNAL_CHANNEL_DEPTH, &mut |io, r| {
                let idx = io.tag as usize;
                let op = &mut ops[idx];
                op.staging = io.buf;
                match r {
                    Ok(()) => {
                        journal.mark_done(op.seq);
                        finish_part(op, idx, finished, Ok(()));
                    }
                    Err(e) => {
                        op.attempts += 1;
                        if op.attempts < JOURNAL_WRITE_ATTEMPTS && e.is_retryable() {
                            retry.push_back(idx as u16);
                        } else {
                            journal.mark_failed(op.seq);
                            finish_part(op, idx, finished, Err(e));
                        }
                    }
                }
            });
            let ops = &mut self.ops;
            let finished = &mut self.finished;
            self.inner.poll(JOURNAL_CHANNEL_DEPTH, &mut |io, r| {
                let idx = io.tag as usize;
                let op = &mut ops[idx];
                op.io = Some(io);
                finish_part(op, idx, finished, r);
            });
        }
        if !self.sync_wait.is_empty() {
            self.release_synced();
        }
        let mut n = 0;
        while n < max {
            let Some(idx) = self.finished.pop_front() else {
                break;
            };
            let op = &mut self.ops[idx as usize];
            if op.io.is_none() {
                continue;
            }
            // Sync mode: a journaled write completes once the secondary holds its record.
            if op.sync_since.take().is_none()
                && op.err.is_none()
                && op.journal_kind.is_some()
                && self.journal.sync_ctl().must_wait(op.seq)
            {
                self.journal.sync_ctl().note_wait();
                op.sync_since = Some(std::time::Instant::now());
                self.sync_wait.push_back(idx);
                continue;
            }
            let Some(mut io) = op.io.take() else {
                continue;
            };
            io.tag = op.tag;
            let r = match op.err.take() {
                Some(e) => {
                    self.stats.failed += 1;
                    Err(e)
                }
                None => Ok(()),
            };
            self.free.push(idx);
            self.stats.completed += 1;
            n += 1;
            done(io, r);
        }
        n
    }

    fn in_flight(&self) -> usize {
        JOURNAL_CHANNEL_DEPTH - self.free.len()
    }

    fn stats(&self) -> ChannelStats {
        self.stats
    }
}
