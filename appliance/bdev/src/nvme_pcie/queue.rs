//! Queue arithmetic and entry layouts: submission ring tail, completion ring head and phase,
//! 64-byte commands and 16-byte completions. Pure code, so every wrap is unit-tested.

/// Size of a submission queue entry.
pub const SQE_BYTES: usize = 64;
/// Size of a completion queue entry.
pub const CQE_BYTES: usize = 16;

/// The host's view of a submission queue: it owns the tail, the controller reports the head
/// in each completion (CQE.SQHD).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SqRing {
    entries: u16,
    tail: u16,
    head: u16,
}

impl SqRing {
    pub fn new(entries: u16) -> SqRing {
        assert!(entries >= 2, "an NVMe queue has at least 2 entries");
        SqRing {
            entries,
            tail: 0,
            head: 0,
        }
    }

    /// One slot always stays empty: head == tail means empty.
    pub fn is_full(&self) -> bool {
        self.next(self.tail) == self.head
    }

    pub fn in_use(&self) -> u16 {
        (self.tail + self.entries - self.head) % self.entries
    }

    fn next(&self, i: u16) -> u16 {
        if i + 1 == self.entries {
            0
        } else {
            i + 1
        }
    }

    /// Claims the slot at the tail; returns its index and the new tail to ring the doorbell
    /// with. `None` when full.
    pub fn push(&mut self) -> Option<(u16, u16)> {
        if self.is_full() {
            return None;
        }
        let slot = self.tail;
        self.tail = self.next(self.tail);
        Some((slot, self.tail))
    }

    /// Records the controller's head pointer from a completion.
    pub fn set_head(&mut self, head: u16) {
        if head < self.entries {
            self.head = head;
        }
    }

    pub fn tail(&self) -> u16 {
        self.tail
    }
}

/// The host's view of a completion queue: head and the phase tag it expects next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CqRing {
    entries: u16,
    head: u16,
    phase: bool,
}

impl CqRing {
    /// A fresh queue: the controller writes phase 1 on its first pass (memory starts zeroed).
    pub fn new(entries: u16) -> CqRing {
        assert!(entries >= 2, "an NVMe queue has at least 2 entries");
        CqRing {
            entries,
            head: 0,
            phase: true,
        }
    }

    /// Byte offset of the entry at the head.
    pub fn head_offset(&self) -> usize {
        usize::from(self.head) * CQE_BYTES
    }

    /// Whether an entry whose status word is `dw3` is new (its phase matches the expected).
    pub fn is_new(&self, dw3: u32) -> bool {
        ((dw3 >> 16) & 1 == 1) == self.phase
    }

    /// Consumes the head entry; returns the new head for the doorbell. Wrapping flips the
    /// expected phase.
    pub fn advance(&mut self) -> u16 {
        self.head += 1;
        if self.head == self.entries {
            self.head = 0;
            self.phase = !self.phase;
        }
        self.head
    }

    pub fn phase(&self) -> bool {
        self.phase
    }
}

/// A submission queue entry under construction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Command {
    pub opcode: u8,
    pub cid: u16,
    pub nsid: u32,
    pub prp1: u64,
    pub prp2: u64,
    pub cdw10: u32,
    pub cdw11: u32,
    pub cdw12: u32,
    pub cdw13: u32,
    pub cdw14: u32,
    pub cdw15: u32,
}

impl Command {
    /// The 64 bytes the controller reads (PSDT 0: PRPs).
    pub fn encode(&self) -> [u8; SQE_BYTES] {
        let mut b = [0u8; SQE_BYTES];
        let dw0 = u32::from(self.opcode) | (u32::from(self.cid) << 16);
        b[0..4].copy_from_slice(&dw0.to_le_bytes());
        b[4..8].copy_from_slice(&self.nsid.to_le_bytes());
        b[24..32].copy_from_slice(&self.prp1.to_le_bytes());
        b[32..40].copy_from_slice(&self.prp2.to_le_bytes());
        for (i, dw) in [
            self.cdw10, self.cdw11, self.cdw12, self.cdw13, self.cdw14, self.cdw15,
        ]
        .into_iter()
        .enumerate()
        {
            b[40 + 4 * i..44 + 4 * i].copy_from_slice(&dw.to_le_bytes());
        }
        b
    }
}

/// A decoded completion queue entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Completion {
    /// Command-specific result (DW0).
    pub result: u32,
    pub sq_head: u16,
    pub sq_id: u16,
    pub cid: u16,
    /// Status field without the phase bit: SC in bits 7:0, SCT in 10:8, DNR bit 14.
    pub status: u16,
}

impl Completion {
    pub fn decode(b: &[u8; CQE_BYTES]) -> Completion {
        let dw =
            |i: usize| u32::from_le_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]]);
        let dw2 = dw(2);
        let dw3 = dw(3);
        Completion {
            result: dw(0),
            sq_head: dw2 as u16,
            sq_id: (dw2 >> 16) as u16,
            cid: dw3 as u16,
            status: (dw3 >> 17) as u16,
        }
    }

    pub fn is_success(&self) -> bool {
        self.status & 0x7ff == 0
    }

    /// Status Code Type and Status Code.
    pub fn sct_sc(&self) -> (u8, u8) {
        (((self.status >> 8) & 7) as u8, self.status as u8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sq_fills_at_entries_minus_one_and_wraps() {
        let mut sq = SqRing::new(4);
        assert_eq!(sq.push(), Some((0, 1)));
        assert_eq!(sq.push(), Some((1, 2)));
        assert_eq!(sq.push(), Some((2, 3)));
        assert!(sq.is_full());
        assert_eq!(sq.push(), None);
        assert_eq!(sq.in_use(), 3);
        sq.set_head(2);
        assert_eq!(sq.in_use(), 1);
        assert_eq!(sq.push(), Some((3, 0)), "the tail doorbell wraps to 0");
        assert_eq!(sq.push(), Some((0, 1)));
        assert!(sq.is_full());
        sq.set_head(9); // out of range: ignored
        assert!(sq.is_full());
        sq.set_head(1);
        assert_eq!(sq.in_use(), 0);
    }

    #[test]
    fn cq_phase_flips_on_each_wrap() {
        let mut cq = CqRing::new(3);
        let with_phase = |p: bool| u32::from(p) << 16 | 0x1234;
        assert!(cq.is_new(with_phase(true)));
        assert!(
            !cq.is_new(with_phase(false)),
            "zeroed memory is not a completion"
        );
        assert_eq!(cq.advance(), 1);
        assert_eq!(cq.head_offset(), 16);
        assert_eq!(cq.advance(), 2);
        assert_eq!(cq.advance(), 0, "head doorbell wraps");
        assert!(!cq.phase());
        assert!(cq.is_new(with_phase(false)));
        assert!(
            !cq.is_new(with_phase(true)),
            "a stale entry of the last pass"
        );
        for _ in 0..3 {
            cq.advance();
        }
        assert!(cq.phase(), "second wrap flips back");
    }

    #[test]
    fn command_layout() {
        let c = Command {
            opcode: 0x02,
            cid: 0xbeef,
            nsid: 1,
            prp1: 0x1122_3344_5566_7788,
            prp2: 0x99aa_bbcc_ddee_ff00,
            cdw10: 0x10,
            cdw11: 0x11,
            cdw12: 0x12,
            cdw13: 0x13,
            cdw14: 0x14,
            cdw15: 0x15,
        };
        let b = c.encode();
        assert_eq!(&b[0..4], &[0x02, 0, 0xef, 0xbe]);
        assert_eq!(&b[4..8], &[1, 0, 0, 0]);
        assert_eq!(&b[8..24], &[0; 16], "CDW2-3 and MPTR stay zero");
        assert_eq!(
            u64::from_le_bytes(b[24..32].try_into().expect("8 bytes")),
            c.prp1
        );
        assert_eq!(
            u64::from_le_bytes(b[32..40].try_into().expect("8 bytes")),
            c.prp2
        );
        assert_eq!(b[40], 0x10);
        assert_eq!(b[60], 0x15);
    }

    #[test]
    fn completion_layout() {
        let mut b = [0u8; CQE_BYTES];
        b[0..4].copy_from_slice(&7u32.to_le_bytes());
        b[8..12].copy_from_slice(&((3u32 << 16) | 5).to_le_bytes());
        // cid 0x42, phase 1, SCT 0 SC 0x80 (LBA out of range), DNR.
        let status: u32 = 0x80 | (1 << 14);
        b[12..16].copy_from_slice(&(0x42 | (1 << 16) | (status << 17)).to_le_bytes());
        let c = Completion::decode(&b);
        assert_eq!((c.result, c.sq_head, c.sq_id, c.cid), (7, 5, 3, 0x42));
        assert!(!c.is_success());
        assert_eq!(c.sct_sc(), (0, 0x80));
        b[12..16].copy_from_slice(&(0x42u32 | (1 << 16)).to_le_bytes());
        assert!(Completion::decode(&b).is_success());
    }
}
