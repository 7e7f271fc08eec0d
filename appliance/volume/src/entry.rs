//! Data-path cluster entries and the per-volume table of them, read lock-free by the channels.
//!
//! An entry is one `u64`: all-zero is *unallocated* (reads zero, writes fault), so a fresh
//! zeroed table is all unallocated.
//!
//! ```text
//! bit 63     VALID   maps a cluster
//! bit 62     SHARED  refcount > 1 (or a read-only volume): reads go to the cluster, writes fault
//! bit 61     ERROR   reads and writes fail fast; the low bits carry an errno
//! bits 48-55 generation (bumped by every publication, a debugging aid)
//! bits 0-47  physical cluster number (or the errno)
//! ```

use std::sync::atomic::{AtomicU64, Ordering};

const VALID: u64 = 1 << 63;
const SHARED: u64 = 1 << 62;
const ERROR: u64 = 1 << 61;
const GEN_SHIFT: u32 = 48;
const LOW: u64 = (1 << 48) - 1;

/// Largest physical cluster number an entry can carry.
pub const MAX_PCLUSTER: u64 = LOW;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryState {
    Unallocated,
    /// Exclusive: writes go straight to the cluster.
    Allocated(u64),
    Shared(u64),
    Error(u32),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry(pub u64);

impl Entry {
    pub const UNALLOCATED: Entry = Entry(0);

    pub fn new(state: EntryState, generation: u8) -> Entry {
        let g = u64::from(generation) << GEN_SHIFT;
        match state {
            EntryState::Unallocated => Entry(0),
            EntryState::Allocated(pc) => Entry(VALID | g | (pc & LOW)),
            EntryState::Shared(pc) => Entry(VALID | SHARED | g | (pc & LOW)),
            EntryState::Error(code) => Entry(VALID | ERROR | g | u64::from(code)),
        }
    }

    /// Decode precedence: not valid > error > shared.
    pub fn state(self) -> EntryState {
        if self.0 & VALID == 0 {
            EntryState::Unallocated
        } else if self.0 & ERROR != 0 {
            EntryState::Error((self.0 & LOW) as u32)
        } else if self.0 & SHARED != 0 {
            EntryState::Shared(self.0 & LOW)
        } else {
            EntryState::Allocated(self.0 & LOW)
        }
    }

    pub fn generation(self) -> u8 {
        (self.0 >> GEN_SHIFT) as u8
    }
}

/// One volume's entries plus its size. Replaced wholesale (resize, revert) by publishing a new
/// `Arc<MapTable>`; single entries are updated in place by the owner.
#[derive(Debug)]
pub struct MapTable {
    pub size_bytes: u64,
    pub num_blocks: u64,
    entries: Box<[AtomicU64]>,
}

impl MapTable {
    pub fn new(size_bytes: u64, block_size: u32, clusters: u64) -> Self {
        Self {
            size_bytes,
            num_blocks: size_bytes / u64::from(block_size),
            entries: (0..clusters).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    pub fn len(&self) -> u64 {
        self.entries.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Data path read (Acquire: pairs with the owner's Release publication).
    pub fn get(&self, vc: u64) -> Entry {
        self.entries
            .get(vc as usize)
            .map_or(Entry::UNALLOCATED, |e| Entry(e.load(Ordering::Acquire)))
    }

    /// Owner only.
    pub fn set(&self, vc: u64, e: Entry) {
        if let Some(slot) = self.entries.get(vc as usize) {
            slot.store(e.0, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_round_trips() {
        assert_eq!(Entry(0).state(), EntryState::Unallocated);
        for (s, g) in [
            (EntryState::Allocated(0), 0),
            (EntryState::Allocated(MAX_PCLUSTER), 255),
            (EntryState::Shared(12345), 7),
            (EntryState::Error(5), 1),
        ] {
            let e = Entry::new(s, g);
            assert_eq!(e.state(), s);
            assert_eq!(e.generation(), g);
            assert_ne!(e.0, 0, "a valid entry is never all-zero");
        }
        assert_eq!(Entry::new(EntryState::Unallocated, 9).0, 0);
        // Error wins over shared when both bits are set.
        assert_eq!(
            Entry(VALID | ERROR | SHARED | 5).state(),
            EntryState::Error(5)
        );
        let t = MapTable::new(3 << 20, 512, 3);
        assert_eq!(t.num_blocks, 6144);
        t.set(1, Entry::new(EntryState::Allocated(4), 1));
        assert_eq!(t.get(1).state(), EntryState::Allocated(4));
        assert_eq!(t.get(99).state(), EntryState::Unallocated);
    }
}
