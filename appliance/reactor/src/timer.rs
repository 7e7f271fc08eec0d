//! Deadline timers owned by one task.
//!
//! An indexed binary min-heap over a slab of slots: schedule, cancel and reschedule are
//! O(log n) and really remove the entry (a keep-alive timer re-armed on every command does not
//! pile up dead entries). Storage grows to the high-water mark and is then reused, so firing
//! and re-arming allocate nothing. Equal deadlines fire in scheduling order.

use std::time::Instant;

/// Identifies one scheduled timer. Stale ids (fired or cancelled) are recognised and ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimerId {
    slot: u32,
    generation: u32,
}

const NOT_IN_HEAP: u32 = u32::MAX;

#[derive(Debug)]
struct Slot<K> {
    deadline: Instant,
    /// Scheduling order, to break deadline ties deterministically.
    seq: u64,
    key: Option<K>,
    heap_pos: u32,
    generation: u32,
}

/// A set of pending deadlines, each carrying a key `K` handed back when it expires.
#[derive(Debug)]
pub struct Timers<K> {
    slots: Vec<Slot<K>>,
    free: Vec<u32>,
    heap: Vec<u32>,
    next_seq: u64,
}

impl<K> Default for Timers<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K> Timers<K> {
    pub fn new() -> Self {
        Self::with_capacity(0)
    }

    /// Pre-sizes storage for `n` simultaneous timers.
    pub fn with_capacity(n: usize) -> Self {
        Self {
            slots: Vec::with_capacity(n),
            free: Vec::with_capacity(n),
            heap: Vec::with_capacity(n),
            next_seq: 0,
        }
    }

    /// Number of pending timers.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// Arms a timer that expires at `deadline` with `key`.
    pub fn schedule(&mut self, deadline: Instant, key: K) -> TimerId {
        let seq = self.next_seq;
        self.next_seq += 1;
        let slot = match self.free.pop() {
            Some(slot) => {
                let s = &mut self.slots[slot as usize];
                s.deadline = deadline;
                s.seq = seq;
                s.key = Some(key);
                slot
            }
            None => {
                let slot = u32::try_from(self.slots.len())
                    .ok()
                    .filter(|&s| s != NOT_IN_HEAP)
                    .expect("fewer than 4 billion timers");
                self.slots.push(Slot {
                    deadline,
                    seq,
                    key: Some(key),
                    heap_pos: NOT_IN_HEAP,
                    generation: 0,
                });
                slot
            }
        };
        let pos = self.heap.len();
        self.heap.push(slot);
        self.slots[slot as usize].heap_pos = pos as u32;
        self.sift_up(pos);
        TimerId {
            slot,
            generation: self.slots[slot as usize].generation,
        }
    }

    /// Disarms a pending timer and returns its key; `None` if it already fired or was cancelled.
    pub fn cancel(&mut self, id: TimerId) -> Option<K> {
        let pos = self.live_pos(id)?;
        self.remove_at(pos);
        self.release(id.slot)
    }

    /// Moves a pending timer to a new deadline (keeps its key and id). Returns false if the
    /// timer is no longer pending.
    pub fn reschedule(&mut self, id: TimerId, deadline: Instant) -> bool {
        let Some(pos) = self.live_pos(id) else {
            return false;
        };
        let seq = self.next_seq;
        self.next_seq += 1;
        let s = &mut self.slots[id.slot as usize];
        s.deadline = deadline;
        s.seq = seq;
        self.restore(pos);
        true
    }

    /// Whether `id` is still pending.
    pub fn contains(&self, id: TimerId) -> bool {
        self.live_pos(id).is_some()
    }

    /// Deadline of a pending timer.
    pub fn deadline(&self, id: TimerId) -> Option<Instant> {
        self.live_pos(id)
            .map(|_| self.slots[id.slot as usize].deadline)
    }

    /// The earliest pending deadline (what to pass to `TaskContext::wake_at`).
    pub fn next_deadline(&self) -> Option<Instant> {
        self.heap
            .first()
            .map(|&slot| self.slots[slot as usize].deadline)
    }

    /// Removes every timer with `deadline <= now`, appending their keys to `out` in deadline
    /// order (ties in scheduling order). Returns how many expired.
    pub fn expired(&mut self, now: Instant, out: &mut Vec<K>) -> usize {
        let mut n = 0;
        while let Some(&slot) = self.heap.first() {
            if self.slots[slot as usize].deadline > now {
                break;
            }
            self.remove_at(0);
            if let Some(key) = self.release(slot) {
                out.push(key);
                n += 1;
            }
        }
        n
    }

    fn live_pos(&self, id: TimerId) -> Option<usize> {
        let s = self.slots.get(id.slot as usize)?;
        (s.generation == id.generation && s.heap_pos != NOT_IN_HEAP).then_some(s.heap_pos as usize)
    }

    /// Frees a slot that is already out of the heap; bumps the generation so old ids go stale.
    fn release(&mut self, slot: u32) -> Option<K> {
        let s = &mut self.slots[slot as usize];
        s.heap_pos = NOT_IN_HEAP;
        s.generation = s.generation.wrapping_add(1);
        self.free.push(slot);
        s.key.take()
    }

    fn less(&self, a: u32, b: u32) -> bool {
        let (a, b) = (&self.slots[a as usize], &self.slots[b as usize]);
        (a.deadline, a.seq) < (b.deadline, b.seq)
    }

    fn set(&mut self, pos: usize, slot: u32) {
        self.heap[pos] = slot;
        self.slots[slot as usize].heap_pos = pos as u32;
    }

    fn remove_at(&mut self, pos: usize) {
        let last = self.heap.len() - 1;
        self.heap.swap(pos, last);
        self.heap.pop();
        if pos < self.heap.len() {
            let moved = self.heap[pos];
            self.set(pos, moved);
            self.restore(pos);
        }
    }

    fn restore(&mut self, pos: usize) {
        if pos > 0 && self.less(self.heap[pos], self.heap[(pos - 1) / 2]) {
            self.sift_up(pos);
        } else {
            self.sift_down(pos);
        }
    }

    fn sift_up(&mut self, mut pos: usize) {
        let slot = self.heap[pos];
        while pos > 0 {
            let parent = (pos - 1) / 2;
            if !self.less(slot, self.heap[parent]) {
                break;
            }
            let p = self.heap[parent];
            self.set(pos, p);
            pos = parent;
        }
        self.set(pos, slot);
    }

    fn sift_down(&mut self, mut pos: usize) {
        let slot = self.heap[pos];
        let len = self.heap.len();
        loop {
            let left = 2 * pos + 1;
            if left >= len {
                break;
            }
            let right = left + 1;
            let child = if right < len && self.less(self.heap[right], self.heap[left]) {
                right
            } else {
                left
            };
            if !self.less(self.heap[child], slot) {
                break;
            }
            let c = self.heap[child];
            self.set(pos, c);
            pos = child;
        }
        self.set(pos, slot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn fires_in_deadline_order_with_fifo_ties() {
        let t0 = Instant::now();
        let mut timers = Timers::new();
        for (d, k) in [(30, "c"), (10, "a"), (20, "b1"), (20, "b2"), (40, "d")] {
            timers.schedule(t0 + ms(d), k);
        }
        assert_eq!(timers.next_deadline(), Some(t0 + ms(10)));
        let mut out = Vec::new();
        assert_eq!(timers.expired(t0 + ms(5), &mut out), 0);
        assert_eq!(timers.expired(t0 + ms(20), &mut out), 3);
        assert_eq!(out, vec!["a", "b1", "b2"]);
        out.clear();
        assert_eq!(timers.expired(t0 + ms(100), &mut out), 2);
        assert_eq!(out, vec!["c", "d"]);
        assert!(timers.is_empty());
        assert_eq!(timers.next_deadline(), None);
    }

    #[test]
    fn cancel_and_reschedule() {
        let t0 = Instant::now();
        let mut timers = Timers::new();
        let a = timers.schedule(t0 + ms(10), 'a');
        let b = timers.schedule(t0 + ms(20), 'b');
        let c = timers.schedule(t0 + ms(30), 'c');
        assert_eq!(timers.cancel(a), Some('a'));
        assert_eq!(timers.cancel(a), None, "second cancel is a no-op");
        assert!(!timers.contains(a));
        assert!(timers.reschedule(c, t0 + ms(5)));
        assert_eq!(timers.deadline(c), Some(t0 + ms(5)));
        assert_eq!(timers.next_deadline(), Some(t0 + ms(5)));
        // The freed slot is reused, but the stale id must not touch the new timer.
        let d = timers.schedule(t0 + ms(1), 'd');
        assert_eq!(timers.cancel(a), None);
        assert!(!timers.reschedule(a, t0));
        let mut out = Vec::new();
        timers.expired(t0 + ms(100), &mut out);
        assert_eq!(out, vec!['d', 'c', 'b']);
        assert_eq!(timers.cancel(b), None, "fired timers cannot be cancelled");
        assert!(!timers.contains(d));
    }

    #[test]
    fn matches_a_sorted_oracle_under_churn() {
        // Deterministic pseudo-random schedule/cancel/reschedule mix against a naive oracle.
        let t0 = Instant::now();
        let mut timers = Timers::new();
        let mut oracle: Vec<(u64, u64, u32)> = Vec::new(); // (deadline ms, seq, key)
        let mut ids = Vec::new();
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut rnd = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let mut seq = 0;
        for key in 0..2000u32 {
            match rnd(4) {
                0 | 1 => {
                    let d = rnd(500);
                    ids.push((timers.schedule(t0 + ms(d), key), key));
                    oracle.push((d, seq, key));
                    seq += 1;
                }
                2 if !ids.is_empty() => {
                    let (id, k) = ids.swap_remove(rnd(ids.len() as u64) as usize);
                    let expect = oracle
                        .iter()
                        .position(|e| e.2 == k)
                        .map(|i| oracle.remove(i).2);
                    assert_eq!(timers.cancel(id), expect);
                }
                3 if !ids.is_empty() => {
                    let (id, k) = ids[rnd(ids.len() as u64) as usize];
                    let d = rnd(500);
                    if let Some(e) = oracle.iter_mut().find(|e| e.2 == k) {
                        *e = (d, seq, k);
                        seq += 1;
                        assert!(timers.reschedule(id, t0 + ms(d)));
                    }
                }
                _ => {
                    let now = rnd(500);
                    oracle.sort_unstable();
                    let fired: Vec<u32> = oracle
                        .iter()
                        .take_while(|e| e.0 <= now)
                        .map(|e| e.2)
                        .collect();
                    oracle.retain(|e| e.0 > now);
                    let mut out = Vec::new();
                    timers.expired(t0 + ms(now), &mut out);
                    assert_eq!(out, fired);
                }
            }
            assert_eq!(timers.len(), oracle.len());
            assert_eq!(
                timers.next_deadline(),
                oracle.iter().map(|e| t0 + ms(e.0)).min()
            );
        }
    }
}
