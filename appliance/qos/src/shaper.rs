//! One reactor's token buckets. Only the owning reactor touches a [`Shaper`]; the only shared
//! writes are a bit set or cleared in a limit's active-reactor mask when this reactor starts or
//! stops serving it, and a counter bumped when an I/O has to wait.
//!
//! An I/O passes the buckets on its path in order (namespace, then host). At each it goes ahead
//! when every limit it draws on has tokens left (> 0) and nobody waits there in the same direction
//! (reads and writes queue apart, so a read limit never holds writes back), and is charged its
//! full cost, so a bucket may go into deficit by one I/O; otherwise it waits in that
//! bucket's FIFO. Tokens come back with elapsed time at each refill, capped at [`BURST`] worth.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::limits::LimitKind;
use crate::registry::{Entry, Table};

/// How often a reactor with waiting I/O refills its buckets (SPDK's QoS timeslice).
pub const TIMESLICE: Duration = Duration::from_millis(1);
/// Most time worth of tokens a bucket holds: an idle limit allows this much of a burst, and a
/// refill that comes late (a busy reactor) loses nothing up to this.
pub const BURST: Duration = Duration::from_millis(100);
/// A reactor that served no I/O of a limit for this long gives its share back.
const IDLE: Duration = Duration::from_millis(100);

/// What one I/O draws: one I/O and `bytes` in one direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cost {
    pub write: bool,
    pub bytes: u64,
}

/// The outcome of [`Shaper::admit`].
#[derive(Debug)]
pub enum Admit<T> {
    /// Within limits: go ahead now.
    Go(T),
    /// Waiting; [`Shaper::poll`] hands it out when tokens allow.
    Queued,
}

#[derive(Debug)]
struct Waiting<T> {
    item: T,
    cost: Cost,
    path: [Option<u32>; 2],
    stage: usize,
}

#[derive(Debug)]
enum Key {
    Bdev(String),
    Host(String),
}

#[derive(Debug)]
struct Bucket<T> {
    key: Key,
    entry: Arc<Entry>,
    tokens: [f64; 6],
    active: bool,
    last_used: Instant,
    /// Waiting reads, waiting writes.
    queue: [VecDeque<Waiting<T>>; 2],
}

impl<T> Bucket<T> {
    fn waiting(&self) -> usize {
        self.queue[0].len() + self.queue[1].len()
    }

    fn has_tokens(&self, cost: Cost) -> bool {
        LimitKind::ALL.into_iter().all(|k| {
            !k.applies(cost.write)
                || self.entry.limits.get(k).is_none()
                || self.tokens[k as usize] > 0.0
        })
    }

    fn charge(&mut self, cost: Cost) {
        for k in LimitKind::ALL {
            if k.applies(cost.write) && self.entry.limits.get(k).is_some() {
                self.tokens[k as usize] -= if k.is_bytes() { cost.bytes as f64 } else { 1.0 };
            }
        }
    }

    /// Adds `elapsed` worth of this reactor's share of every limit. An idle bucket holds at most
    /// [`BURST`] worth; one with I/O waiting keeps all the time that passed (up to a second), so
    /// a reactor that was descheduled for a while catches up instead of losing the time.
    fn refill(&mut self, elapsed: Duration) {
        let sharers = self.entry.active_reactors().max(1) as f64;
        let horizon = if self.waiting() > 0 {
            BURST.max(elapsed.min(Duration::from_secs(1)))
        } else {
            BURST
        };
        for (k, _) in self.entry.limits.iter() {
            let rate = self.entry.limits.rate(k).unwrap_or(0.0) / sharers;
            let t = &mut self.tokens[k as usize];
            *t = (*t + rate * elapsed.as_secs_f64()).min(rate * horizon.as_secs_f64());
        }
    }
}

/// A reactor's buckets and the I/O waiting in them.
#[derive(Debug)]
pub struct Shaper<T> {
    bit: u64,
    buckets: Vec<Bucket<T>>,
    last_refill: Option<Instant>,
    queued: usize,
}

impl<T> Shaper<T> {
    /// The shaper of reactor `reactor`.
    pub fn new(reactor: usize) -> Shaper<T> {
        Shaper {
            bit: 1u64 << (reactor % 64),
            buckets: Vec::new(),
            last_refill: None,
            queued: 0,
        }
    }

    /// No limit applies on this reactor.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    /// I/Os waiting for tokens.
    pub fn queued(&self) -> usize {
        self.queued
    }

    /// The bucket of bdev `name`, if it is limited.
    pub fn bdev_bucket(&self, name: &str) -> Option<u32> {
        self.buckets
            .iter()
            .position(|b| matches!(&b.key, Key::Bdev(n) if n == name))
            .map(|i| i as u32)
    }

    /// The bucket of host `nqn`, if it is limited.
    pub fn host_bucket(&self, nqn: &str) -> Option<u32> {
        self.buckets
            .iter()
            .position(|b| matches!(&b.key, Key::Host(n) if n == nqn))
            .map(|i| i as u32)
    }

    /// Adopts a new table of limits. Buckets of unchanged keys keep their tokens and queues; I/O
    /// waiting on a limit that was removed moves on (to its next bucket, or to `out`).
    pub fn sync(&mut self, table: &Table, now: Instant, out: &mut dyn FnMut(T)) {
        let fresh = |key: Key, entry: &Arc<Entry>| Bucket {
            key,
            entry: Arc::clone(entry),
            tokens: [0.0; 6],
            active: false,
            last_used: now,
            queue: [VecDeque::new(), VecDeque::new()],
        };
        let mut next: Vec<Bucket<T>> = table
            .bdevs
            .iter()
            .map(|(n, e)| fresh(Key::Bdev(n.clone()), e))
            .chain(
                table
                    .hosts
                    .iter()
                    .map(|(n, e)| fresh(Key::Host(n.clone()), e)),
            )
            .collect();
        for b in &mut next {
            b.refill(BURST);
        }
        let old = std::mem::take(&mut self.buckets);
        let mut map = Vec::with_capacity(old.len());
        let mut orphans = Vec::new();
        for mut b in old {
            if b.active {
                b.entry.active.fetch_and(!self.bit, Ordering::Relaxed);
            }
            let found = next.iter().position(|n| match (&n.key, &b.key) {
                (Key::Bdev(x), Key::Bdev(y)) | (Key::Host(x), Key::Host(y)) => x == y,
                _ => false,
            });
            map.push(found.map(|i| i as u32));
            match found {
                Some(i) => {
                    let n = &mut next[i];
                    if n.entry.limits == b.entry.limits {
                        n.tokens = b.tokens;
                    }
                    n.queue = std::mem::take(&mut b.queue);
                    if n.waiting() > 0 {
                        n.entry.active.fetch_or(self.bit, Ordering::Relaxed);
                        n.active = true;
                        n.last_used = now;
                    }
                }
                None => orphans.extend(b.queue.iter_mut().flat_map(|q| q.drain(..))),
            }
        }
        let remap = |w: &mut Waiting<T>| {
            for p in w.path.iter_mut() {
                *p = p.and_then(|i| map.get(i as usize).copied().flatten());
            }
        };
        for b in &mut next {
            b.queue.iter_mut().flatten().for_each(remap);
        }
        self.buckets = next;
        self.queued = self.buckets.iter().map(Bucket::waiting).sum();
        for mut w in orphans {
            remap(&mut w);
            w.stage += 1;
            if let Some(item) = self.advance(w, now) {
                out(item);
            }
        }
    }

    /// Lets an I/O with `cost` through the buckets on `path` (None: no limit at that stage), or
    /// queues it.
    pub fn admit(&mut self, now: Instant, path: [Option<u32>; 2], cost: Cost, item: T) -> Admit<T> {
        self.refill_if_due(now);
        match self.advance(
            Waiting {
                item,
                cost,
                path,
                stage: 0,
            },
            now,
        ) {
            Some(item) => Admit::Go(item),
            None => Admit::Queued,
        }
    }

    /// From `w.stage` on: charge each bucket with tokens and nobody waiting, or queue at the
    /// first that has not. Returns the item when it passed every bucket.
    fn advance(&mut self, mut w: Waiting<T>, now: Instant) -> Option<T> {
        while w.stage < w.path.len() {
            let Some(b) = w.path[w.stage].and_then(|i| self.buckets.get_mut(i as usize)) else {
                w.stage += 1;
                continue;
            };
            b.last_used = now;
            if !b.active {
                b.active = true;
                b.entry.active.fetch_or(self.bit, Ordering::Relaxed);
            }
            let dir = usize::from(w.cost.write);
            if !b.queue[dir].is_empty() || !b.has_tokens(w.cost) {
                b.entry.delayed.fetch_add(1, Ordering::Relaxed);
                b.queue[dir].push_back(w);
                self.queued += 1;
                return None;
            }
            b.charge(w.cost);
            w.stage += 1;
        }
        Some(w.item)
    }

    fn refill_if_due(&mut self, now: Instant) -> bool {
        let last = *self.last_refill.get_or_insert(now);
        let elapsed = now.saturating_duration_since(last);
        if elapsed < TIMESLICE {
            return false;
        }
        self.last_refill = Some(now);
        for b in &mut self.buckets {
            if b.active && b.waiting() == 0 && now.saturating_duration_since(b.last_used) > IDLE {
                b.active = false;
                b.entry.active.fetch_and(!self.bit, Ordering::Relaxed);
            }
            b.refill(elapsed);
        }
        true
    }

    /// The timed poller: refills when a timeslice has passed and hands out the waiting I/Os the
    /// tokens allow, oldest first. Returns whether any went out. Cheap when nothing waits.
    pub fn poll(&mut self, now: Instant, out: &mut dyn FnMut(T)) -> bool {
        if self.queued == 0 {
            return false;
        }
        // `admit` may have refilled since the last poll: drain whether or not this call did.
        self.refill_if_due(now);
        let mut released = false;
        for i in 0..self.buckets.len() {
            // Reads and writes alternate while tokens last.
            let mut dir = 0;
            let mut blocked = [false; 2];
            while !(blocked[0] && blocked[1]) {
                dir ^= 1;
                let b = &mut self.buckets[i];
                let go = b.queue[dir].front().is_some_and(|h| b.has_tokens(h.cost));
                if !go {
                    blocked[dir] = true;
                    continue;
                }
                blocked = [false; 2];
                let mut w = b.queue[dir].pop_front().expect("front exists");
                b.charge(w.cost);
                b.last_used = now;
                self.queued -= 1;
                w.stage += 1;
                if let Some(item) = self.advance(w, now) {
                    out(item);
                    released = true;
                }
            }
        }
        released
    }

    /// When [`Shaper::poll`] next has work: the next timeslice while I/O waits.
    pub fn next_deadline(&self) -> Option<Instant> {
        if self.queued == 0 {
            return None;
        }
        self.last_refill.map(|t| t + TIMESLICE)
    }

    /// Removes every waiting item `doomed` picks (a closed connection) and hands it to `out`.
    pub fn purge(&mut self, mut doomed: impl FnMut(&T) -> bool, out: &mut dyn FnMut(T)) {
        for q in self.buckets.iter_mut().flat_map(|b| b.queue.iter_mut()) {
            let mut kept = VecDeque::with_capacity(q.len());
            for w in q.drain(..) {
                if doomed(&w.item) {
                    out(w.item);
                } else {
                    kept.push_back(w);
                }
            }
            *q = kept;
        }
        self.queued = self.buckets.iter().map(Bucket::waiting).sum();
    }
}

impl<T> Drop for Shaper<T> {
    fn drop(&mut self) {
        for b in &self.buckets {
            if b.active {
                b.entry.active.fetch_and(!self.bit, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests;
