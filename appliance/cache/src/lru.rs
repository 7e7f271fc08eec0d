//! Eviction order: a segmented LRU. A line enters the probation segment; a second access
//! promotes it to the protected segment (at most `protected_cap` lines, the oldest of which
//! falls back to probation). Victims come from probation first, so one pass over cold data
//! (a scan, a backup reading the volume once) never pushes out the lines in use.

use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Segment {
    Probation,
    Protected,
}

#[derive(Debug)]
pub struct Lru {
    tick: u64,
    probation: BTreeMap<u64, u32>,
    protected: BTreeMap<u64, u32>,
    /// Per slot: its segment and its key there.
    pos: Vec<Option<(Segment, u64)>>,
    protected_cap: usize,
}

impl Lru {
    /// For `slots` slots; `protected_cap` of them at most in the protected segment.
    pub fn new(slots: usize, protected_cap: usize) -> Self {
        Self {
            tick: 0,
            probation: BTreeMap::new(),
            protected: BTreeMap::new(),
            pos: vec![None; slots],
            protected_cap,
        }
    }

    fn next(&mut self) -> u64 {
        self.tick += 1;
        self.tick
    }

    fn put(&mut self, slot: u32, seg: Segment) {
        let t = self.next();
        match seg {
            Segment::Probation => self.probation.insert(t, slot),
            Segment::Protected => self.protected.insert(t, slot),
        };
        self.pos[slot as usize] = Some((seg, t));
    }

    /// Forgets a slot (freed or about to be reused).
    pub fn remove(&mut self, slot: u32) {
        match self.pos[slot as usize].take() {
            Some((Segment::Probation, t)) => {
                self.probation.remove(&t);
            }
            Some((Segment::Protected, t)) => {
                self.protected.remove(&t);
            }
            None => {}
        }
    }

    /// A newly filled slot: most recent in probation.
    pub fn insert(&mut self, slot: u32) {
        self.remove(slot);
        self.put(slot, Segment::Probation);
    }

    /// An access to a cached slot: promoted (or refreshed) in the protected segment.
    pub fn touch(&mut self, slot: u32) {
        if self.pos[slot as usize].is_none() {
            return self.insert(slot);
        }
        self.remove(slot);
        self.put(slot, Segment::Protected);
        while self.protected.len() > self.protected_cap {
            let (_, demoted) = self.protected.pop_first().expect("over the cap");
            self.pos[demoted as usize] = None;
            self.put(demoted, Segment::Probation);
        }
    }

    /// Candidates for eviction, best first: probation oldest first, then protected.
    pub fn victims(&self) -> impl Iterator<Item = u32> + '_ {
        self.probation
            .values()
            .chain(self.protected.values())
            .copied()
    }

    #[cfg(test)]
    pub fn protected_len(&self) -> usize {
        self.protected.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oldest_probation_goes_first() {
        let mut l = Lru::new(4, 2);
        for s in 0..4 {
            l.insert(s);
        }
        assert_eq!(l.victims().collect::<Vec<_>>(), [0, 1, 2, 3]);
        l.remove(1);
        assert_eq!(l.victims().collect::<Vec<_>>(), [0, 2, 3]);
    }

    #[test]
    fn hot_lines_survive_a_scan() {
        let mut l = Lru::new(8, 4);
        // Two hot lines, accessed twice.
        for s in [0, 1] {
            l.insert(s);
            l.touch(s);
        }
        // A scan fills the rest once.
        for s in 2..8 {
            l.insert(s);
        }
        let order: Vec<u32> = l.victims().collect();
        assert_eq!(order, [2, 3, 4, 5, 6, 7, 0, 1]);
        assert_eq!(l.protected_len(), 2);
    }

    #[test]
    fn protected_is_capped() {
        let mut l = Lru::new(4, 2);
        for s in 0..4 {
            l.insert(s);
            l.touch(s);
        }
        // 0 and 1 were demoted to probation when 2 and 3 were promoted.
        assert_eq!(l.protected_len(), 2);
        assert_eq!(l.victims().collect::<Vec<_>>(), [0, 1, 2, 3]);
        l.touch(0);
        assert_eq!(l.victims().collect::<Vec<_>>(), [1, 2, 3, 0]);
    }
}
