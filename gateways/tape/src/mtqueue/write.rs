//! The write MT queue (figure 20): a reorder buffer keyed by block id in place of the patent's
//! doubly-linked list, with a flush cursor that only moves across gap-free runs.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{BlockId, MtQueueError, SeqNo, Session};

/// When a write is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AckPolicy {
    /// When the block is in the queue (the patent's step 2009: in the controller's cache).
    Staged,
    /// When the block was handed to the drive (what a backup job uses: the source may be
    /// released only for data the drive has).
    OnTape,
}

/// What became of an offered block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// New data, now queued. `ack` is the sequence number to acknowledge now, if the policy
    /// acknowledges at staging.
    Queued { ack: Option<SeqNo> },
    /// A block the queue already has (queued or already written): acknowledge again if `ack`,
    /// drop the data.
    Duplicate { ack: Option<SeqNo> },
}

/// Counters of one write queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteStats {
    pub offered: u64,
    pub duplicates: u64,
    /// Blocks that arrived ahead of the flush cursor (a gap before them).
    pub out_of_order: u64,
    pub written: u64,
    pub max_queued: u64,
}

#[derive(Debug)]
struct Pending {
    seq: SeqNo,
    data: Vec<u8>,
}

/// The reorder buffer of one drive session.
#[derive(Debug)]
pub struct WriteQueue {
    session: Session,
    /// The next block the drive must get.
    cursor: BlockId,
    /// The block handed to the drive and not yet confirmed, if any.
    in_flight: Option<(BlockId, SeqNo, u32)>,
    pending: BTreeMap<BlockId, Pending>,
    window: u64,
    policy: AckPolicy,
    stats: WriteStats,
}

impl WriteQueue {
    /// A queue whose flush cursor starts at the session's first block, accepting blocks up to
    /// `window` ahead of the cursor.
    pub fn new(session: Session, window: u64, policy: AckPolicy) -> WriteQueue {
        WriteQueue {
            session,
            cursor: session.b0,
            in_flight: None,
            pending: BTreeMap::new(),
            window: window.max(1),
            policy,
            stats: WriteStats::default(),
        }
    }

    /// Resumes a stream whose blocks before `cursor` are already on tape.
    pub fn resume_at(
        session: Session,
        cursor: BlockId,
        window: u64,
        policy: AckPolicy,
    ) -> WriteQueue {
        WriteQueue {
            cursor,
            ..WriteQueue::new(session, window, policy)
        }
    }

    pub fn session(&self) -> Session {
        self.session
    }

    pub fn cursor(&self) -> BlockId {
        self.cursor
    }

    pub fn queued(&self) -> usize {
        self.pending.len()
    }

    pub fn stats(&self) -> WriteStats {
        self.stats
    }

    /// Receives a write request (steps 2000–2009).
    pub fn offer(
        &mut self,
        seq: SeqNo,
        expected: BlockId,
        data: Vec<u8>,
    ) -> Result<Offer, MtQueueError> {
        let block = self.session.check(seq, expected)?;
        self.stats.offered += 1;
        let staged_ack = (self.policy == AckPolicy::Staged).then_some(seq);
        if block < self.cursor {
            // Below the flush cursor: on tape already (seed E17). Acknowledge again.
            self.stats.duplicates += 1;
            return Ok(Offer::Duplicate { ack: Some(seq) });
        }
        if let Some((b, _, crc)) = self.in_flight {
            if b == block {
                if crc32c::crc32c(&data) != crc {
                    return Err(MtQueueError::ConflictingDuplicate { seq, block });
                }
                self.stats.duplicates += 1;
                return Ok(Offer::Duplicate { ack: staged_ack });
            }
        }
        if let Some(p) = self.pending.get(&block) {
            if p.data != data {
                return Err(MtQueueError::ConflictingDuplicate { seq, block });
            }
            self.stats.duplicates += 1;
            return Ok(Offer::Duplicate { ack: staged_ack });
        }
        let distance = block.0 - self.cursor.0;
        if distance >= self.window {
            return Err(MtQueueError::WindowExceeded {
                block,
                distance,
                window: self.window,
            });
        }
        if block != self.cursor {
            self.stats.out_of_order += 1;
        }
        self.pending.insert(block, Pending { seq, data });
        self.stats.max_queued = self.stats.max_queued.max(self.pending.len() as u64);
        Ok(Offer::Queued { ack: staged_ack })
    }

    /// Whether a block is within the window (or below the cursor: a duplicate).
    pub fn fits(&self, block: BlockId) -> bool {
        block.0 < self.cursor.0 + self.window
    }

    /// Whether the block at the flush cursor is queued (the drive has work).
    pub fn next_ready(&self) -> bool {
        self.in_flight.is_none() && self.pending.contains_key(&self.cursor)
    }

    /// Takes the block at the flush cursor for the drive, if it is there: the only way data
    /// leaves the queue, so the drive sees exactly the gap-free run in block order.
    pub fn take_next(&mut self) -> Option<(BlockId, SeqNo, Vec<u8>)> {
        if self.in_flight.is_some() {
            return None;
        }
        let p = self.pending.remove(&self.cursor)?;
        self.in_flight = Some((self.cursor, p.seq, crc32c::crc32c(&p.data)));
        Some((self.cursor, p.seq, p.data))
    }

    /// The drive wrote the block taken last: the cursor moves on. Returns the sequence number
    /// to acknowledge now under [`AckPolicy::OnTape`].
    pub fn written(&mut self) -> Option<SeqNo> {
        let (block, seq, _) = self.in_flight.take()?;
        self.cursor = BlockId(block.0 + 1);
        self.stats.written += 1;
        (self.policy == AckPolicy::OnTape).then_some(seq)
    }

    /// The drive refused the block taken last: it goes back to the head of the queue.
    pub fn unwritten(&mut self, data: Vec<u8>) {
        if let Some((block, seq, _)) = self.in_flight.take() {
            self.pending.insert(block, Pending { seq, data });
        }
    }

    /// Blocks queued behind a gap (for status: how far ahead arrivals are).
    pub fn highest_queued(&self) -> Option<BlockId> {
        self.pending.keys().next_back().copied()
    }
}
