//! Secondary side: gap-free prefixes, heartbeats, the limit time and the
//! apply order.

use std::collections::{BTreeMap, VecDeque};

use ferrite_gateway_protocol::{DomainId, SeqNo, Timestamp};

use crate::error::OrderingError;

/// Heartbeats kept while the records they cover are still missing.
const MAX_PENDING_HEARTBEATS: usize = 64;

/// What [`DomainReceiver::offer`] did with a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// New: stored (and the prefix may have grown).
    Accepted,
    /// Already held or already applied: dropped.
    Duplicate,
}

/// The part of a domain's receive state that must survive a restart
/// together with the secondary image: everything up to `applied` is in
/// the image, and `applied_ts` is its timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DomainState {
    /// Last applied sequence number.
    pub applied: SeqNo,
    /// Its timestamp.
    pub applied_ts: Timestamp,
}

/// The receive state of one sequence domain.
#[derive(Debug)]
pub struct DomainReceiver<R> {
    domain: DomainId,
    window: u64,
    state: DomainState,
    /// Highest h with every record up to h received.
    prefix: SeqNo,
    prefix_ts: Timestamp,
    /// Received, beyond the prefix.
    pending: BTreeMap<u64, (Timestamp, R)>,
    /// Within the prefix, not yet applied, in sequence (= timestamp) order.
    ready: VecDeque<(SeqNo, Timestamp, R)>,
    /// Safe time contributed by heartbeats whose records are all in.
    hb_ts: Timestamp,
    /// Heartbeats waiting for their records: last_seq -> ts.
    hb_pending: BTreeMap<u64, u64>,
    duplicates: u64,
}

impl<R> DomainReceiver<R> {
    /// A domain resumed at `state` (default: nothing applied), accepting
    /// records up to `window` beyond its prefix.
    pub fn new(domain: DomainId, state: DomainState, window: u64) -> DomainReceiver<R> {
        DomainReceiver {
            domain,
            window: window.max(1),
            state,
            prefix: state.applied,
            prefix_ts: state.applied_ts,
            pending: BTreeMap::new(),
            ready: VecDeque::new(),
            hb_ts: state.applied_ts,
            hb_pending: BTreeMap::new(),
            duplicates: 0,
        }
    }

    /// The domain.
    pub fn domain(&self) -> DomainId {
        self.domain
    }

    /// The cumulative acknowledgement: every record up to it is held.
    pub fn prefix(&self) -> SeqNo {
        self.prefix
    }

    /// The credit to give the sender: it may send up to this.
    pub fn window_end(&self) -> SeqNo {
        SeqNo(self.prefix.0 + self.window)
    }

    /// What is applied.
    pub fn state(&self) -> DomainState {
        self.state
    }

    /// Records held and not applied (ready and out of order).
    pub fn held(&self) -> usize {
        self.ready.len() + self.pending.len()
    }

    /// Duplicates dropped so far.
    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }

    /// `T_d`: every record of this domain stamped at or before it is held
    /// (or applied).
    pub fn safe_ts(&self) -> Timestamp {
        self.prefix_ts.max(self.hb_ts)
    }

    /// Offers a received record. Duplicates are dropped; a record beyond
    /// the window or out of timestamp order with its neighbours is
    /// refused (nothing is stored).
    pub fn offer(&mut self, seq: SeqNo, ts: Timestamp, item: R) -> Result<Offer, OrderingError> {
        if seq.0 == 0 {
            return Err(OrderingError::ZeroSeq {
                domain: self.domain,
            });
        }
        if seq <= self.prefix {
            self.duplicates += 1;
            return Ok(Offer::Duplicate);
        }
        if seq.0 - self.prefix.0 > self.window {
            return Err(OrderingError::OutOfWindow {
                domain: self.domain,
                seq,
                prefix: self.prefix,
                window: self.window,
            });
        }
        if let Some((first_ts, _)) = self.pending.get(&seq.0) {
            if *first_ts != ts {
                return Err(OrderingError::ConflictingDuplicate {
                    domain: self.domain,
                    seq,
                    ts,
                    first_ts: *first_ts,
                });
            }
            self.duplicates += 1;
            return Ok(Offer::Duplicate);
        }
        self.check_order(seq, ts)?;
        self.pending.insert(seq.0, (ts, item));
        self.advance();
        Ok(Offer::Accepted)
    }

    fn check_order(&self, seq: SeqNo, ts: Timestamp) -> Result<(), OrderingError> {
        let below = self
            .pending
            .range(..seq.0)
            .next_back()
            .map(|(s, (t, _))| (SeqNo(*s), *t))
            .unwrap_or((self.prefix, self.prefix_ts));
        if below.0 .0 != 0 && ts <= below.1 {
            return Err(self.order_error(seq, ts, below));
        }
        if let Some((s, (t, _))) = self.pending.range(seq.0 + 1..).next() {
            if ts >= *t {
                return Err(self.order_error(seq, ts, (SeqNo(*s), *t)));
            }
        }
        // A heartbeat promised nothing after `hb.last_seq` is stamped at or
        // before `hb.ts`.
        if let Some((_, hts)) = self.hb_pending.range(..seq.0).next_back() {
            if ts.0 <= *hts {
                return Err(self.order_error(seq, ts, (seq, Timestamp(*hts))));
            }
        }
        if seq > self.prefix && ts <= self.hb_ts && self.hb_ts > self.prefix_ts {
            return Err(self.order_error(seq, ts, (self.prefix, self.hb_ts)));
        }
        Ok(())
    }

    fn order_error(&self, seq: SeqNo, ts: Timestamp, other: (SeqNo, Timestamp)) -> OrderingError {
        OrderingError::TimestampOrder {
            domain: self.domain,
            seq,
            ts,
            other: other.0,
            other_ts: other.1,
        }
    }

    fn advance(&mut self) {
        while let Some((ts, item)) = self.pending.remove(&(self.prefix.0 + 1)) {
            self.prefix = self.prefix.next();
            self.prefix_ts = ts;
            self.ready.push_back((self.prefix, ts, item));
        }
        let covered = self.hb_pending.split_off(&(self.prefix.0 + 1));
        let usable = std::mem::replace(&mut self.hb_pending, covered);
        if let Some(ts) = usable.values().copied().max() {
            self.hb_ts = self.hb_ts.max(Timestamp(ts));
        }
    }

    /// A heartbeat `(ts, last_seq)`: every record of the domain stamped at
    /// or before `ts` has a sequence number at or below `last_seq`. Once
    /// the prefix reaches `last_seq`, `T_d` may advance to `ts` even though
    /// no new record arrives (an idle domain does not stall the group).
    pub fn heartbeat(&mut self, ts: Timestamp, last_seq: SeqNo) -> Result<(), OrderingError> {
        // A record above the promise and stamped at or before it breaks it.
        if let Some((s, (t, _))) = self.pending.range(last_seq.0 + 1..).next() {
            if *t <= ts {
                return Err(self.order_error(SeqNo(*s), *t, (last_seq, ts)));
            }
        }
        if last_seq <= self.prefix {
            if last_seq < self.prefix && ts >= self.prefix_ts {
                // The promise says nothing after last_seq is stamped this
                // early, but a held record after it is.
                return Err(self.order_error(self.prefix, self.prefix_ts, (last_seq, ts)));
            }
            self.hb_ts = self.hb_ts.max(ts);
        } else if seq_in_window(last_seq, self.prefix, self.window) {
            let e = self.hb_pending.entry(last_seq.0).or_insert(ts.0);
            *e = (*e).max(ts.0);
            while self.hb_pending.len() > MAX_PENDING_HEARTBEATS {
                self.hb_pending.pop_last();
            }
        }
        Ok(())
    }

    fn pop_ready(&mut self) -> Option<(SeqNo, Timestamp, R)> {
        let r = self.ready.pop_front()?;
        self.state = DomainState {
            applied: r.0,
            applied_ts: r.1,
        };
        Some(r)
    }

    fn ready_ts(&self) -> Option<Timestamp> {
        self.ready.front().map(|r| r.1)
    }
}

fn seq_in_window(seq: SeqNo, prefix: SeqNo, window: u64) -> bool {
    seq.0 - prefix.0 <= window
}

/// One record released for apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied<R> {
    /// Its domain.
    pub domain: DomainId,
    /// Its sequence number.
    pub seq: SeqNo,
    /// Its timestamp.
    pub ts: Timestamp,
    /// The record.
    pub item: R,
}

/// The secondary side of one consistency group: its domains (all of them,
/// known in advance: a domain that has not reported yet holds the group
/// back), the limit time, and the apply order.
#[derive(Debug)]
pub struct GroupApplier<R> {
    domains: Vec<DomainReceiver<R>>,
    limit: Timestamp,
}

impl<R> GroupApplier<R> {
    /// A group of `domains`, each resumed at its state, with `limit` the
    /// last limit reached (persisted; it never moves back).
    pub fn new(
        domains: impl IntoIterator<Item = (DomainId, DomainState)>,
        limit: Timestamp,
        window: u64,
    ) -> GroupApplier<R> {
        let mut domains: Vec<DomainReceiver<R>> = domains
            .into_iter()
            .map(|(d, s)| DomainReceiver::new(d, s, window))
            .collect();
        domains.sort_by_key(|d| d.domain);
        domains.dedup_by_key(|d| d.domain);
        GroupApplier { domains, limit }
    }

    /// The domains.
    pub fn domains(&self) -> &[DomainReceiver<R>] {
        &self.domains
    }

    /// One domain, to offer records and heartbeats to.
    pub fn domain_mut(
        &mut self,
        domain: DomainId,
    ) -> Result<&mut DomainReceiver<R>, OrderingError> {
        match self.domains.binary_search_by_key(&domain, |d| d.domain) {
            Ok(i) => Ok(&mut self.domains[i]),
            Err(_) => Err(OrderingError::UnknownDomain { domain }),
        }
    }

    /// The group's limit time `L = min_d T_d`, never lower than before.
    pub fn limit(&mut self) -> Timestamp {
        if let Some(l) = self.domains.iter().map(|d| d.safe_ts()).min() {
            self.limit = self.limit.max(l);
        }
        self.limit
    }

    /// The next record to apply: the earliest-stamped ready record of any
    /// domain, if it is stamped at or before the limit. Taking it marks it
    /// applied in its domain's [`DomainState`]; the caller writes it to
    /// the image before asking for the next one.
    pub fn next_to_apply(&mut self) -> Option<Applied<R>> {
        let limit = self.limit();
        let (i, ts) = self
            .domains
            .iter()
            .enumerate()
            .filter_map(|(i, d)| d.ready_ts().map(|t| (i, t)))
            .min_by_key(|(_, t)| *t)?;
        if ts > limit {
            return None;
        }
        let d = &mut self.domains[i];
        let domain = d.domain;
        let (seq, ts, item) = d.pop_ready()?;
        Some(Applied {
            domain,
            seq,
            ts,
            item,
        })
    }

    /// Records held in every domain, not yet applied.
    pub fn held(&self) -> usize {
        self.domains.iter().map(|d| d.held()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(h: u64, m: u64) -> Timestamp {
        Timestamp(h * 60 + m)
    }

    #[test]
    fn golden_gap_free_prefix_is_26_of_11_to_26_28_29() {
        // Seed 003 M10: "..., 11, 12, ..., 25, 26, 28, 29": 27 is missing,
        // so 26 is the prefix and its timestamp is T_d.
        let mut d = DomainReceiver::new(
            DomainId(1),
            DomainState {
                applied: SeqNo(10),
                applied_ts: Timestamp(100),
            },
            64,
        );
        for s in [
            29u64, 11, 28, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26,
        ] {
            assert_eq!(
                d.offer(SeqNo(s), Timestamp(100 + s), ()),
                Ok(Offer::Accepted)
            );
        }
        assert_eq!(d.prefix(), SeqNo(26));
        assert_eq!(d.safe_ts(), Timestamp(126));
        assert_eq!(d.offer(SeqNo(27), Timestamp(127), ()), Ok(Offer::Accepted));
        assert_eq!(d.prefix(), SeqNo(29));
    }

    #[test]
    fn the_prefix_not_the_longest_run() {
        // Seed 003 M10 interpretation: 5, 6, 8..=12 with 7 missing: 6 is safe.
        let mut d = DomainReceiver::new(
            DomainId(1),
            DomainState {
                applied: SeqNo(4),
                applied_ts: Timestamp(4),
            },
            64,
        );
        for s in [5u64, 6, 8, 9, 10, 11, 12] {
            d.offer(SeqNo(s), Timestamp(s), ()).expect("in order");
        }
        assert_eq!(d.prefix(), SeqNo(6));
        assert_eq!(d.safe_ts(), Timestamp(6));
    }

    #[test]
    fn golden_limit_10_01_applies_only_a() {
        // Seed 003 M12: A 10:00, B 10:02, C 10:04 held, limit 10:01: only A
        // is applied; B follows once the limit reaches 10:02.
        let mut g: GroupApplier<char> = GroupApplier::new(
            [
                (DomainId(1), DomainState::default()),
                (DomainId(2), DomainState::default()),
            ],
            Timestamp(0),
            64,
        );
        let d1 = g.domain_mut(DomainId(1)).expect("domain 1");
        d1.offer(SeqNo(1), ts(10, 0), 'A').expect("A");
        d1.offer(SeqNo(2), ts(10, 2), 'B').expect("B");
        d1.offer(SeqNo(3), ts(10, 4), 'C').expect("C");
        // Domain 2 is idle and promised nothing up to 10:01.
        g.domain_mut(DomainId(2))
            .expect("domain 2")
            .heartbeat(ts(10, 1), SeqNo(0))
            .expect("hb");
        assert_eq!(g.limit(), ts(10, 1));
        assert_eq!(g.next_to_apply().map(|a| a.item), Some('A'));
        assert_eq!(g.next_to_apply(), None);
        g.domain_mut(DomainId(2))
            .expect("domain 2")
            .heartbeat(ts(10, 2), SeqNo(0))
            .expect("hb");
        assert_eq!(g.next_to_apply().map(|a| a.item), Some('B'));
        assert_eq!(g.next_to_apply(), None);
    }

    #[test]
    fn master_takes_the_minimum_over_domains() {
        // Seed 003 M11: slaves report 10:03, 10:07, 10:01: the limit is 10:01.
        let mut g: GroupApplier<()> = GroupApplier::new(
            (1..=3).map(|d| (DomainId(d), DomainState::default())),
            Timestamp(0),
            64,
        );
        for (d, t) in [(1, ts(10, 3)), (2, ts(10, 7)), (3, ts(10, 1))] {
            g.domain_mut(DomainId(d))
                .expect("domain")
                .heartbeat(t, SeqNo(0))
                .expect("hb");
        }
        assert_eq!(g.limit(), ts(10, 1));
        assert!(g.domain_mut(DomainId(9)).is_err());
    }

    #[test]
    fn duplicates_window_and_order_violations() {
        let mut d = DomainReceiver::new(DomainId(3), DomainState::default(), 4);
        assert_eq!(d.offer(SeqNo(2), Timestamp(20), ()), Ok(Offer::Accepted));
        assert_eq!(d.offer(SeqNo(2), Timestamp(20), ()), Ok(Offer::Duplicate));
        assert!(matches!(
            d.offer(SeqNo(2), Timestamp(21), ()),
            Err(OrderingError::ConflictingDuplicate { .. })
        ));
        assert!(matches!(
            d.offer(SeqNo(5), Timestamp(50), ()),
            Err(OrderingError::OutOfWindow { .. })
        ));
        assert!(matches!(
            d.offer(SeqNo(3), Timestamp(20), ()),
            Err(OrderingError::TimestampOrder { .. })
        ));
        assert!(matches!(
            d.offer(SeqNo(1), Timestamp(25), ()),
            Err(OrderingError::TimestampOrder { .. })
        ));
        assert!(matches!(
            d.offer(SeqNo(0), Timestamp(1), ()),
            Err(OrderingError::ZeroSeq { .. })
        ));
        assert_eq!(d.offer(SeqNo(1), Timestamp(10), ()), Ok(Offer::Accepted));
        assert_eq!(d.offer(SeqNo(1), Timestamp(10), ()), Ok(Offer::Duplicate));
        assert_eq!(d.prefix(), SeqNo(2));
        assert_eq!(d.duplicates(), 2);
        assert_eq!(d.window_end(), SeqNo(6));
    }

    #[test]
    fn a_heartbeat_waits_for_the_records_it_covers() {
        let mut d: DomainReceiver<()> =
            DomainReceiver::new(DomainId(1), DomainState::default(), 64);
        d.heartbeat(Timestamp(100), SeqNo(2)).expect("hb");
        assert_eq!(d.safe_ts(), Timestamp(0));
        d.offer(SeqNo(2), Timestamp(50), ()).expect("2");
        assert_eq!(d.safe_ts(), Timestamp(0));
        // A record after the promise stamped before it is refused.
        assert!(d.offer(SeqNo(3), Timestamp(90), ()).is_err());
        d.offer(SeqNo(1), Timestamp(40), ()).expect("1");
        assert_eq!(d.safe_ts(), Timestamp(100));
        // A heartbeat contradicted by a held record is refused.
        assert!(d.heartbeat(Timestamp(60), SeqNo(1)).is_err());
    }

    #[test]
    fn the_limit_never_moves_back_and_resume_keeps_it() {
        let mut g: GroupApplier<()> = GroupApplier::new(
            [(
                DomainId(1),
                DomainState {
                    applied: SeqNo(5),
                    applied_ts: Timestamp(50),
                },
            )],
            Timestamp(70),
            8,
        );
        assert_eq!(g.limit(), Timestamp(70));
        assert_eq!(
            g.domain_mut(DomainId(1))
                .expect("d")
                .offer(SeqNo(5), Timestamp(50), ()),
            Ok(Offer::Duplicate)
        );
        g.domain_mut(DomainId(1))
            .expect("d")
            .offer(SeqNo(6), Timestamp(80), ())
            .expect("6");
        assert_eq!(g.limit(), Timestamp(80));
        assert_eq!(g.next_to_apply().map(|a| a.seq), Some(SeqNo(6)));
        assert_eq!(g.held(), 0);
    }
}
