//! Shared state of one group's journal.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ferrite_bdev::{BdevIo, BlockDevice, IoChannel, IoKind};
use ferrite_gateway_protocol::GroupId;
use ferrite_reactor::IoBuf;
use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, FromZeros, IntoBytes};

use crate::error::JournalError;
use crate::format::{RecordHeaderWire, SuperblockWire, RECORD_MAGIC, SUPER_MAGIC, VERSION};
use crate::sync::{SyncCtl, SyncPolicy, SyncState, SyncStats};

/// Fewest slots a journal may have.
pub const MIN_SLOTS: u64 = 8;
/// How long a synchronous journal I/O (superblock, recovery scan) may take.
const SYNC_IO_TIMEOUT: Duration = Duration::from_secs(30);

/// Counters of a journal (every field only grows, except the gauges
/// `reserved`, `committed` and `trimmed`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JournalStats {
    /// Last sequence number reserved.
    pub reserved: u64,
    /// Every record up to this one is durable in the journal.
    pub committed: u64,
    /// Every record up to this one is trimmed.
    pub trimmed: u64,
    /// Slots.
    pub slots: u64,
    /// Data bytes per slot.
    pub slot_data_bytes: u64,
    /// Writes that found the journal full and had to wait for a trim.
    pub full_refusals: u64,
    /// Writes failed with No Space because the journal stayed full for their whole wait.
    pub full_failures: u64,
    /// Journal record writes that failed.
    pub write_errors: u64,
    /// Valid records found after a hole when the journal was opened (a crash
    /// with journal writes in flight): their ranges need a resync.
    pub lost_after_hole: u64,
}

/// One consistency group's journal on a block device.
#[derive(Debug)]
pub struct Journal {
    group: GroupId,
    dev: Arc<dyn BlockDevice>,
    block_size: u32,
    slot_blocks: u32,
    slots: u64,
    /// Last reserved sequence number.
    reserved: AtomicU64,
    /// Trimmed up to (persisted in the superblock by the reader).
    trimmed: AtomicU64,
    trimmed_ts: AtomicU64,
    /// Per slot: the sequence number whose journal write completed there.
    done: Box<[AtomicU64]>,
    /// Committed watermark (advanced lazily by `committed()`).
    committed: AtomicU64,
    full_refusals: AtomicU64,
    full_failures: AtomicU64,
    /// The journal filled and no slot was freed since (one alert per episode).
    full_alerted: AtomicBool,
    write_errors: AtomicU64,
    lost_after_hole: u64,
    broken: AtomicBool,
    /// Sync mode: what the secondary acknowledged and the lost-link policy.
    sync: SyncCtl,
    /// Data bytes of records appended (since open, plus those held at open) and trimmed
    /// (since open): their difference is the replication lag in bytes.
    appended_bytes: AtomicU64,
    trimmed_bytes: AtomicU64,
    /// Shipping paused (`replication_pause`): pulls get no records.
    paused: AtomicBool,
}

/// Wall-clock nanoseconds (the group clock's source).
pub(crate) fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

impl Journal {
    /// Writes a fresh journal for `group` on `dev` with slots of
    /// `slot_data_bytes` of data each (rounded up to blocks), then opens it.
    pub fn format(
        dev: Arc<dyn BlockDevice>,
        group: GroupId,
        slot_data_bytes: u32,
    ) -> Result<Arc<Journal>, JournalError> {
        let bs = dev.block_size();
        let slot_blocks = 1 + slot_data_bytes.div_ceil(bs).max(1);
        let slots = dev.num_blocks().saturating_sub(1) / u64::from(slot_blocks);
        if slots < MIN_SLOTS {
            return Err(JournalError::TooSmall {
                device: dev.name().to_string(),
                blocks: dev.num_blocks(),
                block_size: bs,
                slot_blocks,
                min_slots: MIN_SLOTS,
            });
        }
        let mut ch = dev.open_channel(&[])?;
        // Clear every slot header so records of an earlier journal never
        // look valid.
        let zero = IoBuf::new(bs as usize);
        let mut buf = zero;
        for i in 0..slots {
            buf.set_len(bs as usize);
            buf = sync_io(
                &*dev,
                &mut *ch,
                IoKind::Write {
                    lba: 1 + i * u64::from(slot_blocks),
                    blocks: 1,
                    fua: false,
                },
                buf,
            )?;
        }
        let mut sb = SuperblockWire::new_zeroed();
        sb.magic = SUPER_MAGIC;
        sb.version = U32::new(VERSION);
        sb.group = U32::new(group.0);
        sb.block_size = U32::new(bs);
        sb.slot_blocks = U32::new(slot_blocks);
        sb.slots = U64::new(slots);
        write_superblock(&*dev, &mut *ch, &mut sb)?;
        drop(ch);
        Journal::open(dev, group)
    }

    /// Opens the journal on `dev`, checking it belongs to `group`, and
    /// recovers the committed records after the trim point.
    pub fn open(dev: Arc<dyn BlockDevice>, group: GroupId) -> Result<Arc<Journal>, JournalError> {
        let bs = dev.block_size();
        let mut ch = dev.open_channel(&[])?;
        let buf = sync_io(
            &*dev,
            &mut *ch,
            IoKind::Read { lba: 0, blocks: 1 },
            IoBuf::new(bs as usize),
        )?;
        let bad = |reason: String| JournalError::BadSuperblock {
            device: dev.name().to_string(),
            reason,
        };
        let sb = SuperblockWire::read_from_prefix(buf.as_slice())
            .map_err(|_| bad("short read".into()))?
            .0;
        if sb.magic != SUPER_MAGIC {
            return Err(bad(format!("magic {:02x?}", sb.magic)));
        }
        if sb.crc.get() != sb.compute_crc() {
            return Err(bad("checksum mismatch".into()));
        }
        if sb.version.get() != VERSION {
            return Err(bad(format!("version {}", sb.version.get())));
        }
        if sb.block_size.get() != bs {
            return Err(bad(format!(
                "formatted with {}-byte blocks, device has {bs}",
                sb.block_size.get()
            )));
        }
        let (slot_blocks, slots) = (sb.slot_blocks.get(), sb.slots.get());
        if slot_blocks < 2
            || slots < MIN_SLOTS
            || 1 + slots * u64::from(slot_blocks) > dev.num_blocks()
        {
            return Err(bad(format!(
                "{slots} slots of {slot_blocks} blocks do not fit"
            )));
        }
        if sb.group.get() != group.0 {
            return Err(JournalError::WrongGroup {
                device: dev.name().to_string(),
                found: sb.group.get(),
                expected: group.0,
            });
        }
        let trimmed = sb.trimmed.get();
        // Recovery: read every slot header; the committed prefix continues
        // from the trim point; valid records beyond a hole are counted.
        let mut found: Vec<(u64, u32)> = Vec::new();
        let mut buf = buf;
        for i in 0..slots {
            buf = sync_io(
                &*dev,
                &mut *ch,
                IoKind::Read {
                    lba: 1 + i * u64::from(slot_blocks),
                    blocks: 1,
                },
                buf,
            )?;
            if let Ok((h, _)) = RecordHeaderWire::read_from_prefix(buf.as_slice()) {
                let seq = h.seq.get();
                if h.magic == RECORD_MAGIC
                    && h.header_crc.get() == h.compute_crc()
                    && seq > trimmed
                    && (seq - 1) % slots == i
                {
                    found.push((seq, h.data_len.get()));
                }
            }
        }
        found.sort_unstable();
        let (mut head, mut held_bytes) = (trimmed, 0u64);
        for &(s, len) in &found {
            if s == head + 1 {
                head = s;
                held_bytes += u64::from(len);
            }
        }
        let lost = found.iter().filter(|&&(s, _)| s > head).count() as u64;
        if lost > 0 {
            log::warn!(
                "journal {} (group {}): {lost} records after a hole at {} are dropped; their ranges need a resync",
                dev.name(),
                group,
                head + 1
            );
        }
        let done: Box<[AtomicU64]> = (0..slots).map(|_| AtomicU64::new(0)).collect();
        for s in trimmed + 1..=head {
            done[((s - 1) % slots) as usize].store(s, Ordering::Relaxed);
        }
        log::info!(
            "journal {} (group {group}): {slots} slots of {} data bytes, records {}..={head} committed",
            dev.name(),
            (slot_blocks - 1) * bs,
            trimmed + 1
        );
        Ok(Arc::new(Journal {
            group,
            block_size: bs,
            slot_blocks,
            slots,
            reserved: AtomicU64::new(head),
            trimmed: AtomicU64::new(trimmed),
            trimmed_ts: AtomicU64::new(sb.trimmed_ts.get()),
            done,
            committed: AtomicU64::new(head),
            full_refusals: AtomicU64::new(0),
            full_failures: AtomicU64::new(0),
            full_alerted: AtomicBool::new(false),
            write_errors: AtomicU64::new(0),
            lost_after_hole: lost,
            broken: AtomicBool::new(false),
            sync: SyncCtl::new(trimmed),
            appended_bytes: AtomicU64::new(held_bytes),
            trimmed_bytes: AtomicU64::new(0),
            paused: AtomicBool::new(false),
            dev,
        }))
    }

    /// The group.
    pub fn group(&self) -> GroupId {
        self.group
    }

    /// The journal device.
    pub fn device(&self) -> &Arc<dyn BlockDevice> {
        &self.dev
    }

    /// Block size.
    pub fn block_size(&self) -> u32 {
        self.block_size
    }

    /// Data bytes one record can hold.
    pub fn slot_data_bytes(&self) -> u32 {
        (self.slot_blocks - 1) * self.block_size
    }

    pub(crate) fn slot_blocks(&self) -> u32 {
        self.slot_blocks
    }

    /// First LBA of the slot of `seq`.
    pub(crate) fn slot_lba(&self, seq: u64) -> u64 {
        1 + ((seq - 1) % self.slots) * u64::from(self.slot_blocks)
    }

    /// Reserves the next sequence number if a slot is free: one
    /// compare-and-swap, no lock. `None`: the journal is full (or broken).
    pub(crate) fn reserve(&self) -> Option<u64> {
        if self.broken.load(Ordering::Relaxed) {
            return None;
        }
        let mut cur = self.reserved.load(Ordering::Relaxed);
        loop {
            if cur - self.trimmed.load(Ordering::Acquire) >= self.slots {
                return None;
            }
            match self.reserved.compare_exchange_weak(
                cur,
                cur + 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some(cur + 1),
                Err(now) => cur = now,
            }
        }
    }

    /// A write found the journal full (it waits for a trim, at most `wait`). The first one of
    /// an episode raises an alert: every slot holds a record the secondary has not
    /// acknowledged, so host writes stall until it drains them.
    pub(crate) fn note_full(&self, wait: Duration) {
        self.full_refusals.fetch_add(1, Ordering::Relaxed);
        if !self.full_alerted.swap(true, Ordering::Relaxed) {
            log::warn!(
                "ALERT journal of group {}: full ({} records not acknowledged by the secondary, {}); \
                 writes wait up to {wait:?} for it to drain, then fail with No Space",
                self.group,
                self.reserved().saturating_sub(self.trimmed()),
                self.sync.state().as_str(),
            );
        }
    }

    /// A write failed because the journal stayed full for its whole wait.
    pub(crate) fn note_full_failure(&self) {
        self.full_failures.fetch_add(1, Ordering::Relaxed);
        log::warn!(
            "journal of group {}: a write failed with No Space, the journal stayed full \
             ({} state); the secondary must drain it (is its replicator running?)",
            self.group,
            self.sync.state().as_str(),
        );
    }

    /// The journal write of `seq` completed.
    pub(crate) fn mark_done(&self, seq: u64) {
        self.done[((seq - 1) % self.slots) as usize].store(seq, Ordering::Release);
    }

    /// The journal write of `seq` failed for good: the journal stops
    /// accepting records (the committed prefix cannot pass the hole).
    pub(crate) fn mark_failed(&self, seq: u64) {
        self.write_errors.fetch_add(1, Ordering::Relaxed);
        if !self.broken.swap(true, Ordering::Relaxed) {
            log::error!(
                "journal {} (group {}): record {seq} could not be written; the journal stops",
                self.dev.name(),
                self.group
            );
        }
    }

    /// Every record up to the returned one is durable in the journal.
    pub fn committed(&self) -> u64 {
        let mut c = self.committed.load(Ordering::Acquire);
        let start = c;
        let reserved = self.reserved.load(Ordering::Acquire);
        while c < reserved && self.done[(c % self.slots) as usize].load(Ordering::Acquire) == c + 1
        {
            c += 1;
        }
        if c != start {
            self.committed.fetch_max(c, Ordering::AcqRel);
        }
        c
    }

    /// Last reserved sequence number.
    pub fn reserved(&self) -> u64 {
        self.reserved.load(Ordering::Acquire)
    }

    /// Trimmed up to.
    pub fn trimmed(&self) -> u64 {
        self.trimmed.load(Ordering::Acquire)
    }

    pub(crate) fn trimmed_ts(&self) -> u64 {
        self.trimmed_ts.load(Ordering::Acquire)
    }

    /// Whether a journal write failed (the journal refuses new records).
    pub fn is_broken(&self) -> bool {
        self.broken.load(Ordering::Relaxed)
    }

    /// Persists a new trim point (superblock write, FUA) and frees the
    /// slots up to it. Called by the single reader.
    pub(crate) fn persist_trim(
        &self,
        ch: &mut dyn IoChannel,
        seq: u64,
        ts: u64,
    ) -> Result<(), JournalError> {
        let mut sb = SuperblockWire::new_zeroed();
        sb.magic = SUPER_MAGIC;
        sb.version = U32::new(VERSION);
        sb.group = U32::new(self.group.0);
        sb.block_size = U32::new(self.block_size);
        sb.slot_blocks = U32::new(self.slot_blocks);
        sb.slots = U64::new(self.slots);
        sb.trimmed = U64::new(seq);
        sb.trimmed_ts = U64::new(ts);
        write_superblock(&*self.dev, ch, &mut sb)?;
        self.trimmed_ts.store(ts, Ordering::Release);
        self.trimmed.store(seq, Ordering::Release);
        // Slots are free again: a later full journal is a new episode with its own alert.
        self.full_alerted.store(false, Ordering::Relaxed);
        Ok(())
    }

    /// Sets the group's replication mode and lost-link policy (takes effect for writes that
    /// complete from now on).
    pub fn set_sync_policy(&self, p: SyncPolicy) {
        self.sync.set(p, self.reserved());
        log::info!(
            "journal of group {}: {:?} mode, lost link: {:?}, timeout {:?} ({})",
            self.group,
            p.mode,
            p.link_policy,
            p.timeout,
            self.sync.state().as_str()
        );
    }

    /// The group's replication mode and lost-link policy.
    pub fn sync_policy(&self) -> SyncPolicy {
        self.sync.policy()
    }

    /// Async, sync, or sync degraded to async.
    pub fn sync_state(&self) -> SyncState {
        self.sync.state()
    }

    /// Counters of sync mode.
    pub fn sync_stats(&self) -> SyncStats {
        self.sync.stats()
    }

    /// The secondary holds every record up to `seq` durably (the replicator's cumulative
    /// acknowledgement): sync writes up to it may complete.
    pub fn ack_remote(&self, seq: u64) {
        if self.sync.ack(seq, self.reserved()) {
            log::warn!(
                "journal of group {}: the secondary caught up (record {seq}); writes are synchronous again",
                self.group
            );
        }
    }

    /// Data bytes of records not yet acknowledged by the secondary.
    pub fn lag_bytes(&self) -> u64 {
        self.appended_bytes
            .load(Ordering::Relaxed)
            .saturating_sub(self.trimmed_bytes.load(Ordering::Relaxed))
    }

    /// Data bytes acknowledged by the secondary since the journal was opened.
    pub fn trimmed_bytes(&self) -> u64 {
        self.trimmed_bytes.load(Ordering::Relaxed)
    }

    /// Timestamp (ns since the epoch) of the last record the secondary acknowledged (0: none
    /// yet).
    pub fn acked_ts(&self) -> u64 {
        self.trimmed_ts()
    }

    pub(crate) fn note_appended_bytes(&self, bytes: u64) {
        self.appended_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    pub(crate) fn note_trimmed_bytes(&self, bytes: u64) {
        self.trimmed_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Pauses or resumes shipping: while paused the stream endpoint answers pulls without
    /// records (writes are still journaled; in sync mode they wait, then follow the lost-link
    /// policy).
    pub fn set_paused(&self, paused: bool) {
        self.paused.store(paused, Ordering::Release);
    }

    /// Whether shipping is paused.
    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::Acquire)
    }

    pub(crate) fn sync_ctl(&self) -> &SyncCtl {
        &self.sync
    }

    /// Counters.
    pub fn stats(&self) -> JournalStats {
        JournalStats {
            reserved: self.reserved(),
            committed: self.committed(),
            trimmed: self.trimmed(),
            slots: self.slots,
            slot_data_bytes: u64::from(self.slot_data_bytes()),
            full_refusals: self.full_refusals.load(Ordering::Relaxed),
            full_failures: self.full_failures.load(Ordering::Relaxed),
            write_errors: self.write_errors.load(Ordering::Relaxed),
            lost_after_hole: self.lost_after_hole,
        }
    }
}

fn write_superblock(
    dev: &dyn BlockDevice,
    ch: &mut dyn IoChannel,
    sb: &mut SuperblockWire,
) -> Result<(), JournalError> {
    sb.crc = U32::new(sb.compute_crc());
    let bs = dev.block_size() as usize;
    let mut buf = IoBuf::new(bs);
    buf.set_len(bs);
    buf.as_mut_slice().fill(0);
    buf.as_mut_slice()[..64].copy_from_slice(sb.as_bytes());
    sync_io(
        dev,
        ch,
        IoKind::Write {
            lba: 0,
            blocks: 1,
            fua: true,
        },
        buf,
    )?;
    Ok(())
}

/// Submits one request and polls the channel until it completes (off the
/// reactors: format, open, trim, the reader).
pub(crate) fn sync_io(
    dev: &dyn BlockDevice,
    ch: &mut dyn IoChannel,
    kind: IoKind,
    buf: IoBuf,
) -> Result<IoBuf, JournalError> {
    let mut io = BdevIo::new(0, kind, Some(buf));
    let deadline = Instant::now() + SYNC_IO_TIMEOUT;
    loop {
        match ch.submit(io) {
            Ok(()) => break,
            Err((back, e)) if e.is_retryable() && Instant::now() < deadline => {
                io = back;
                ch.poll(16, &mut |_, _| {});
                std::thread::yield_now();
            }
            Err((_, e)) => return Err(e.into()),
        }
    }
    let mut result = None;
    while result.is_none() {
        ch.poll(1, &mut |io, r| result = Some((io, r)));
        if result.is_none() {
            if Instant::now() >= deadline {
                return Err(JournalError::Timeout {
                    device: dev.name().to_string(),
                    secs: SYNC_IO_TIMEOUT.as_secs(),
                });
            }
            std::thread::yield_now();
        }
    }
    let (io, r) = result.expect("loop exits with a result");
    r?;
    Ok(io
        .buf
        .unwrap_or_else(|| IoBuf::new(dev.block_size() as usize)))
}
