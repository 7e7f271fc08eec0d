//! The cache directory: which backing line each slot of the cache device holds, which of its
//! blocks are valid and dirty, and what the device's persisted copy of the directory says.
//! No I/O here; the engine does it.
//!
//! On-disk record per slot (32 bytes, little-endian): line (u64, `u64::MAX` for none),
//! dirty mask (u64), slot index (u32), CRC32C of the 20 bytes before (u32), 8 zero bytes.
//! Only dirty records matter at recovery: a clean slot starts cold after a restart. That
//! makes the one rule that keeps recovery correct simple: a slot whose *persisted* record is
//! dirty is never given to another line (see [`Table::alloc`]).

use std::collections::{BTreeSet, HashMap};

use crate::lru::Lru;

pub const RECORD_BYTES: usize = 32;
pub const NO_LINE: u64 = u64::MAX;

#[derive(Debug, Clone, Copy)]
pub struct Slot {
    pub line: u64,
    pub valid: u64,
    pub dirty: u64,
    /// The dirty mask the device's directory holds for this slot.
    pub persisted: u64,
    /// Order in which the slot became dirty (0: clean), for oldest-first write-back.
    pub dirty_seq: u64,
}

impl Slot {
    const EMPTY: Slot = Slot {
        line: NO_LINE,
        valid: 0,
        dirty: 0,
        persisted: 0,
        dirty_seq: 0,
    };
}

/// Blocks `[off, off + n)` of a line as a mask.
pub fn mask(off: u32, n: u32) -> u64 {
    debug_assert!(off + n <= 64 && n > 0);
    (u64::MAX >> (64 - n)) << off
}

#[derive(Debug)]
pub struct Table {
    pub slots: Vec<Slot>,
    map: HashMap<u64, u32>,
    free: Vec<u32>,
    lru: Lru,
    /// Slots dirty, by `dirty_seq`.
    dirty_order: BTreeSet<(u64, u32)>,
    seq: u64,
    dirty_blocks: u64,
    /// Directory blocks (of `records_per_block` records) changed since the last persist.
    changed: BTreeSet<u64>,
    records_per_block: u64,
    /// Dirty-since instants in ms (any clock), by `dirty_seq`, for the write-back lag.
    since: HashMap<u64, u64>,
}

impl Table {
    pub fn new(slots: u32, records_per_block: u64) -> Self {
        let n = slots as usize;
        Self {
            slots: vec![Slot::EMPTY; n],
            map: HashMap::new(),
            free: (0..slots).rev().collect(),
            lru: Lru::new(n, n * 3 / 4),
            dirty_order: BTreeSet::new(),
            seq: 0,
            dirty_blocks: 0,
            changed: BTreeSet::new(),
            records_per_block,
            since: HashMap::new(),
        }
    }

    pub fn lookup(&self, line: u64) -> Option<u32> {
        self.map.get(&line).copied()
    }

    pub fn touch(&mut self, slot: u32) {
        self.lru.touch(slot);
    }

    pub fn dirty_blocks(&self) -> u64 {
        self.dirty_blocks
    }

    pub fn cached_lines(&self) -> usize {
        self.map.len()
    }

    /// The dirty-since time of the oldest dirty slot.
    pub fn oldest_dirty_since(&self) -> Option<u64> {
        let (seq, _) = self.dirty_order.first()?;
        self.since.get(seq).copied()
    }

    fn changed(&mut self, slot: u32) {
        self.changed
            .insert(u64::from(slot) / self.records_per_block);
    }

    /// A slot for `line`: a free one, else the best LRU victim whose data is not needed
    /// (clean, and clean on the device too). `None`: every slot holds dirty data (write some
    /// back first). Returns the slot and the line evicted from it.
    pub fn alloc(&mut self, line: u64) -> Option<(u32, Option<u64>)> {
        debug_assert!(self.lookup(line).is_none());
        let (slot, evicted) = match self.free.pop() {
            Some(s) => (s, None),
            None => {
                let s = self.lru.victims().find(|&s| {
                    let st = &self.slots[s as usize];
                    st.dirty == 0 && st.persisted == 0
                })?;
                let old = self.slots[s as usize].line;
                self.map.remove(&old);
                self.lru.remove(s);
                (s, Some(old))
            }
        };
        self.slots[slot as usize] = Slot {
            line,
            ..Slot::EMPTY
        };
        self.map.insert(line, slot);
        self.lru.insert(slot);
        self.changed(slot);
        Some((slot, evicted))
    }

    /// Blocks of `mask` now hold valid data (read from the backing store).
    pub fn fill(&mut self, slot: u32, m: u64) {
        self.slots[slot as usize].valid |= m;
    }

    /// Blocks of `mask` were written by a host and are not on the backing store yet.
    pub fn write(&mut self, slot: u32, m: u64, now_ms: u64) {
        let st = &mut self.slots[slot as usize];
        st.valid |= m;
        let new = m & !st.dirty;
        if new == 0 {
            return;
        }
        if st.dirty == 0 {
            self.seq += 1;
            st.dirty_seq = self.seq;
            self.dirty_order.insert((self.seq, slot));
            self.since.insert(self.seq, now_ms);
        }
        st.dirty |= new;
        self.dirty_blocks += u64::from(new.count_ones());
        self.changed(slot);
    }

    /// Blocks of `mask` are on the backing store (written back, or overwritten there).
    pub fn clean(&mut self, slot: u32, m: u64) {
        let st = &mut self.slots[slot as usize];
        let gone = st.dirty & m;
        if gone == 0 {
            return;
        }
        st.dirty &= !gone;
        self.dirty_blocks -= u64::from(gone.count_ones());
        if st.dirty == 0 {
            self.dirty_order.remove(&(st.dirty_seq, slot));
            self.since.remove(&st.dirty_seq);
            st.dirty_seq = 0;
        }
        self.changed(slot);
    }

    /// Blocks of `mask` no longer hold the line's data (zeroed or unmapped on the backing
    /// store); the slot is freed when nothing of it is left and nothing needs it on disk.
    pub fn invalidate(&mut self, slot: u32, m: u64) {
        self.clean(slot, m);
        let st = &mut self.slots[slot as usize];
        st.valid &= !m;
        if st.valid == 0 && st.dirty == 0 && st.persisted == 0 {
            self.release(slot);
        }
    }

    fn release(&mut self, slot: u32) {
        let line = self.slots[slot as usize].line;
        self.map.remove(&line);
        self.lru.remove(slot);
        self.slots[slot as usize] = Slot::EMPTY;
        self.free.push(slot);
        self.changed(slot);
    }

    /// Up to `n` dirty slots, oldest first.
    pub fn oldest_dirty(&self, n: usize) -> Vec<u32> {
        self.dirty_order.iter().take(n).map(|&(_, s)| s).collect()
    }

    /// Slots holding lines in `[first, last]`.
    pub fn slots_in(&self, first: u64, last: u64) -> Vec<(u64, u32)> {
        if last - first < self.map.len() as u64 {
            (first..=last)
                .filter_map(|l| self.lookup(l).map(|s| (l, s)))
                .collect()
        } else {
            let mut v: Vec<(u64, u32)> = self
                .map
                .iter()
                .filter(|(&l, _)| (first..=last).contains(&l))
                .map(|(&l, &s)| (l, s))
                .collect();
            v.sort_unstable();
            v
        }
    }

    /// Directory blocks to write, taking them out of the changed set.
    pub fn take_changed(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.changed).into_iter().collect()
    }

    /// Directory blocks whose write failed: written again by the next persist.
    pub fn requeue(&mut self, blocks: &[u64]) {
        self.changed.extend(blocks.iter().copied());
    }

    /// Encodes directory block `b` from the current state.
    pub fn encode_block(&self, b: u64, out: &mut [u8]) {
        out.fill(0);
        let first = b * self.records_per_block;
        for (i, rec) in out.chunks_exact_mut(RECORD_BYTES).enumerate() {
            let s = first + i as u64;
            let Some(st) = self.slots.get(s as usize) else {
                break;
            };
            encode_record(s as u32, st.line, st.dirty, rec);
        }
    }

    /// Directory block `b` (as encoded by `encode_block`) is now durable on the device.
    /// Slots freed meanwhile by a clean record becoming durable are not special: their
    /// persisted mask is simply what was encoded.
    pub fn persisted_block(&mut self, b: u64, encoded: &[u8]) {
        let first = b * self.records_per_block;
        for (i, rec) in encoded.chunks_exact(RECORD_BYTES).enumerate() {
            let s = (first + i as u64) as usize;
            if s >= self.slots.len() {
                break;
            }
            let dirty = decode_record(s as u32, rec).map_or(0, |(_, d)| d);
            self.slots[s].persisted = dirty;
        }
    }

    /// Loads the dirty records of a directory block read at recovery. Records that fail
    /// their check, name another slot, or a line beyond `lines` are ignored (logged).
    pub fn recover_block(&mut self, b: u64, data: &[u8], lines: u64, now_ms: u64) -> u64 {
        let first = b * self.records_per_block;
        let mut loaded = 0;
        for (i, rec) in data.chunks_exact(RECORD_BYTES).enumerate() {
            let s = first + i as u64;
            if s >= self.slots.len() as u64 {
                break;
            }
            let s = s as u32;
            let Some((line, dirty)) = decode_record(s, rec) else {
                if rec.iter().any(|&b| b != 0) {
                    log::warn!("cache directory: record of slot {s} fails its check, ignored");
                }
                continue;
            };
            if dirty == 0 || line == NO_LINE {
                continue;
            }
            if line >= lines || self.map.contains_key(&line) {
                log::warn!("cache directory: slot {s} names line {line}, ignored");
                continue;
            }
            self.free.retain(|&f| f != s);
            self.slots[s as usize] = Slot {
                line,
                ..Slot::EMPTY
            };
            self.map.insert(line, s);
            self.lru.insert(s);
            self.write(s, dirty, now_ms);
            self.slots[s as usize].persisted = dirty;
            loaded += 1;
        }
        self.changed.clear();
        loaded
    }
}

pub fn encode_record(slot: u32, line: u64, dirty: u64, out: &mut [u8]) {
    out[..8].copy_from_slice(&line.to_le_bytes());
    out[8..16].copy_from_slice(&dirty.to_le_bytes());
    out[16..20].copy_from_slice(&slot.to_le_bytes());
    let crc = crc32c::crc32c(&out[..20]);
    out[20..24].copy_from_slice(&crc.to_le_bytes());
    out[24..32].fill(0);
}

/// `(line, dirty)` of a record written for `slot`; `None` when it fails its check.
pub fn decode_record(slot: u32, rec: &[u8]) -> Option<(u64, u64)> {
    let crc = u32::from_le_bytes(rec[20..24].try_into().ok()?);
    if crc32c::crc32c(&rec[..20]) != crc {
        return None;
    }
    if u32::from_le_bytes(rec[16..20].try_into().ok()?) != slot {
        return None;
    }
    let line = u64::from_le_bytes(rec[..8].try_into().ok()?);
    let dirty = u64::from_le_bytes(rec[8..16].try_into().ok()?);
    Some((line, dirty))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks() {
        assert_eq!(mask(0, 1), 1);
        assert_eq!(mask(3, 2), 0b11000);
        assert_eq!(mask(0, 64), u64::MAX);
        assert_eq!(mask(63, 1), 1 << 63);
    }

    #[test]
    fn dirty_accounting_and_order() {
        let mut t = Table::new(4, 16);
        let (a, _) = t.alloc(10).expect("free slot");
        let (b, _) = t.alloc(20).expect("free slot");
        t.write(b, mask(0, 2), 5);
        t.write(a, mask(0, 8), 7);
        t.write(b, mask(1, 2), 9); // one new block
        assert_eq!(t.dirty_blocks(), 11);
        assert_eq!(t.oldest_dirty(10), [b, a]);
        assert_eq!(t.oldest_dirty_since(), Some(5));
        t.clean(b, mask(0, 3));
        assert_eq!(t.dirty_blocks(), 8);
        assert_eq!(t.oldest_dirty(10), [a]);
        assert_eq!(t.oldest_dirty_since(), Some(7));
        t.clean(a, u64::MAX);
        assert_eq!(t.dirty_blocks(), 0);
        assert_eq!(t.oldest_dirty_since(), None);
    }

    #[test]
    fn dirty_slots_are_never_evicted() {
        let mut t = Table::new(2, 16);
        let (a, _) = t.alloc(1).expect("free");
        let (b, _) = t.alloc(2).expect("free");
        t.write(a, 1, 0);
        // b is clean: it is the victim even though a is older.
        assert_eq!(t.alloc(3), Some((b, Some(2))));
        t.write(b, 1, 0);
        assert_eq!(t.alloc(4), None, "both dirty");
        // Written back in memory but still dirty on the device: not yet reusable.
        t.slots[a as usize].persisted = 1;
        t.clean(a, 1);
        assert_eq!(t.alloc(4), None, "a's device record is still dirty");
        t.slots[a as usize].persisted = 0;
        assert_eq!(t.alloc(4), Some((a, Some(1))));
        assert_eq!(t.lookup(1), None);
        assert_eq!(t.lookup(4), Some(a));
    }

    #[test]
    fn directory_round_trip_recovers_dirty_slots_only() {
        let mut t = Table::new(8, 4);
        let (a, _) = t.alloc(100).expect("free");
        let (b, _) = t.alloc(200).expect("free");
        let (c, _) = t.alloc(300).expect("free");
        t.write(a, 0b1010, 1);
        t.fill(b, u64::MAX); // clean
        t.write(c, 1, 2);
        let blocks = t.take_changed();
        assert_eq!(blocks, [0]);
        let mut buf = vec![0u8; 4 * RECORD_BYTES];
        t.encode_block(0, &mut buf);
        t.persisted_block(0, &buf);
        assert_eq!(t.slots[a as usize].persisted, 0b1010);
        assert_eq!(t.slots[b as usize].persisted, 0);
        // Corrupt c's record: it must be ignored.
        buf[c as usize * RECORD_BYTES] ^= 0xff;
        let mut r = Table::new(8, 4);
        assert_eq!(r.recover_block(0, &buf, 1000, 50), 1);
        assert_eq!(r.lookup(100), Some(a));
        assert_eq!(r.lookup(200), None);
        assert_eq!(r.lookup(300), None);
        assert_eq!(r.dirty_blocks(), 2);
        assert_eq!(r.slots[a as usize].persisted, 0b1010);
        // A line beyond the device is refused.
        let mut small = Table::new(8, 4);
        assert_eq!(small.recover_block(0, &buf, 100, 0), 0);
        // The recovered slot is not handed out again.
        for l in 0..7 {
            let (s, _) = r.alloc(1000 + l).expect("7 free slots");
            assert_ne!(s, a);
        }
        // Full: the next line evicts a clean slot, never the dirty one.
        let (s, evicted) = r.alloc(2000).expect("a clean victim");
        assert_ne!(s, a);
        assert_eq!(evicted, Some(1000));
    }

    #[test]
    fn records_check_slot_and_crc() {
        let mut rec = [0u8; RECORD_BYTES];
        encode_record(7, 42, 3, &mut rec);
        assert_eq!(decode_record(7, &rec), Some((42, 3)));
        assert_eq!(decode_record(8, &rec), None);
        rec[9] ^= 1;
        assert_eq!(decode_record(7, &rec), None);
        assert_eq!(decode_record(0, &[0u8; RECORD_BYTES]), None);
    }

    #[test]
    fn invalidate_frees_unneeded_slots() {
        let mut t = Table::new(2, 16);
        let (a, _) = t.alloc(5).expect("free");
        t.write(a, mask(0, 4), 0);
        t.invalidate(a, mask(0, 2));
        assert_eq!(t.lookup(5), Some(a));
        assert_eq!(t.dirty_blocks(), 2);
        t.invalidate(a, mask(2, 2));
        assert_eq!(t.lookup(5), None);
        assert_eq!(t.dirty_blocks(), 0);
    }
}
