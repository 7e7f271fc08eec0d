//! The read MT queue (figure 19): a read-ahead buffer keyed by block id. A request with sequence
//! number `s` is served from block `b0 + (s - s0)` wherever it sits in the buffer (the patent's
//! "B + D" by block distance, searched by block id so holes left by earlier out-of-order service
//! do not shift it), held if read-ahead has not reached it, and served blocks stay until the
//! issuer's window has moved past them so a lost reply can be served again (seed E15).

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{BlockId, MtQueueError, SeqNo, Session};

/// The answer to a read request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadAnswer {
    /// The block's data, to be sent back with the request's sequence number.
    Ready(Arc<Vec<u8>>),
    /// Not read from tape yet: hold the request until [`ReadQueue::fill`] supplies it.
    Held,
}

#[derive(Debug)]
struct Entry {
    data: Arc<Vec<u8>>,
    served: bool,
}

/// The read-ahead buffer of one drive session.
#[derive(Debug)]
pub struct ReadQueue {
    session: Session,
    /// The next block read-ahead will fetch from the drive.
    next_fill: BlockId,
    /// One past the last block of the stream, once known.
    end: Option<BlockId>,
    buffered: BTreeMap<BlockId, Entry>,
    /// Every block below this was served.
    floor: BlockId,
    /// Served blocks kept below the floor (the issuer's window).
    keep: u64,
    /// Read-ahead depth beyond the floor.
    depth: u64,
    /// Blocks above the floor served out of order (they raise the floor when it reaches them).
    served_above_floor: u64,
}

impl ReadQueue {
    /// `depth`: how far ahead of the lowest unserved block to read; `keep`: how many served
    /// blocks to retain for re-requests (at least the issuer's window).
    pub fn new(session: Session, depth: u64, keep: u64) -> ReadQueue {
        ReadQueue {
            session,
            next_fill: session.b0,
            end: None,
            buffered: BTreeMap::new(),
            floor: session.b0,
            keep,
            depth: depth.max(1),
            served_above_floor: 0,
        }
    }

    /// The next block read-ahead should fetch, if the buffer has room and the stream goes on.
    pub fn wants_fill(&self) -> Option<BlockId> {
        let room = self.next_fill.0 < self.floor.0 + self.depth;
        let more = self.end.is_none_or(|e| self.next_fill < e);
        (room && more).then_some(self.next_fill)
    }

    /// Read-ahead delivers the block [`ReadQueue::wants_fill`] named.
    pub fn fill(&mut self, block: BlockId, data: Vec<u8>) {
        debug_assert_eq!(block, self.next_fill, "read-ahead is sequential");
        self.buffered.insert(
            block,
            Entry {
                data: Arc::new(data),
                served: false,
            },
        );
        self.next_fill = BlockId(block.0 + 1);
    }

    /// The stream ends before `end` (read-ahead reached the end of the job on tape).
    pub fn set_end(&mut self, end: BlockId) {
        self.end = Some(end);
    }

    /// Receives a read request (steps 1900–1907).
    pub fn request(&mut self, seq: SeqNo, expected: BlockId) -> Result<ReadAnswer, MtQueueError> {
        let block = self.session.check(seq, expected)?;
        if let Some(end) = self.end {
            if block >= end {
                return Err(MtQueueError::PastEnd { block, end });
            }
        }
        let Some(e) = self.buffered.get_mut(&block) else {
            if block < self.floor {
                return Err(MtQueueError::Released { seq, block });
            }
            return Ok(ReadAnswer::Held);
        };
        let data = e.data.clone();
        if !e.served {
            e.served = true;
            if block == self.floor {
                self.advance_floor();
            } else {
                self.served_above_floor += 1;
            }
        }
        Ok(ReadAnswer::Ready(data))
    }

    fn advance_floor(&mut self) {
        self.floor = BlockId(self.floor.0 + 1);
        while self.buffered.get(&self.floor).is_some_and(|e| e.served) {
            self.floor = BlockId(self.floor.0 + 1);
            self.served_above_floor -= 1;
        }
        let keep_from = BlockId(self.floor.0.saturating_sub(self.keep));
        while let Some((&b, _)) = self.buffered.first_key_value() {
            if b >= keep_from {
                break;
            }
            self.buffered.remove(&b);
        }
    }

    pub fn buffered(&self) -> usize {
        self.buffered.len()
    }

    pub fn floor(&self) -> BlockId {
        self.floor
    }
}
