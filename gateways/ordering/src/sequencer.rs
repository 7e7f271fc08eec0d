//! Primary side: sequence numbers and group timestamps.

use ferrite_gateway_protocol::{DomainId, SeqNo, Timestamp};

/// A sequence number and timestamp handed out together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Sequence number (first is 1).
    pub seq: SeqNo,
    /// Timestamp, strictly greater than every earlier stamp or heartbeat
    /// of the domain.
    pub ts: Timestamp,
}

/// One sequence domain's counter and clock (seed 003, Fig. 4: one per
/// consistency group and destination).
///
/// `stamp(now)` returns `max(now, last + 1)`, so timestamps follow the
/// supplied clock but never repeat or go back, even if the clock does.
/// Several domains of one group share the clock source, which must be
/// common to them (one appliance's monotonic clock, or a
/// synchronised one across appliances).
#[derive(Debug, Clone)]
pub struct Sequencer {
    domain: DomainId,
    last_seq: SeqNo,
    last_ts: Timestamp,
}

impl Sequencer {
    /// A fresh domain: the first stamp is sequence number 1.
    pub fn new(domain: DomainId) -> Sequencer {
        Sequencer::resume(domain, SeqNo(0), Timestamp(0))
    }

    /// A domain restored from its journal: the next stamp follows
    /// `last_seq` and is later than `last_ts`.
    pub fn resume(domain: DomainId, last_seq: SeqNo, last_ts: Timestamp) -> Sequencer {
        Sequencer {
            domain,
            last_seq,
            last_ts,
        }
    }

    /// The domain.
    pub fn domain(&self) -> DomainId {
        self.domain
    }

    /// The last sequence number handed out (0: none).
    pub fn last_seq(&self) -> SeqNo {
        self.last_seq
    }

    /// The last timestamp handed out (by a stamp or a heartbeat).
    pub fn last_ts(&self) -> Timestamp {
        self.last_ts
    }

    /// Numbers the next record.
    pub fn stamp(&mut self, now: Timestamp) -> Stamp {
        self.last_seq = self.last_seq.next();
        self.last_ts = Timestamp(now.0.max(self.last_ts.0 + 1));
        Stamp {
            seq: self.last_seq,
            ts: self.last_ts,
        }
    }

    /// A heartbeat promise `(ts, last_seq)`: every record of this domain
    /// stamped at or before `ts` has a sequence number at or below
    /// `last_seq`. Later stamps are strictly after `ts`.
    pub fn heartbeat(&mut self, now: Timestamp) -> Stamp {
        self.last_ts = Timestamp(now.0.max(self.last_ts.0));
        Stamp {
            seq: self.last_seq,
            ts: self.last_ts,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_are_gap_free_and_strictly_increasing_even_if_the_clock_goes_back() {
        let mut s = Sequencer::new(DomainId(1));
        let a = s.stamp(Timestamp(100));
        let b = s.stamp(Timestamp(100));
        let c = s.stamp(Timestamp(50));
        let d = s.stamp(Timestamp(500));
        assert_eq!(
            (a.seq, b.seq, c.seq, d.seq),
            (SeqNo(1), SeqNo(2), SeqNo(3), SeqNo(4))
        );
        assert_eq!(
            (a.ts, b.ts, c.ts, d.ts),
            (
                Timestamp(100),
                Timestamp(101),
                Timestamp(102),
                Timestamp(500)
            )
        );
    }

    #[test]
    fn a_heartbeat_pushes_later_stamps_past_it() {
        let mut s = Sequencer::resume(DomainId(2), SeqNo(7), Timestamp(70));
        let hb = s.heartbeat(Timestamp(90));
        assert_eq!(
            hb,
            Stamp {
                seq: SeqNo(7),
                ts: Timestamp(90)
            }
        );
        let next = s.stamp(Timestamp(90));
        assert_eq!(
            next,
            Stamp {
                seq: SeqNo(8),
                ts: Timestamp(91)
            }
        );
        // A heartbeat with an older clock keeps the promise already made.
        assert_eq!(s.heartbeat(Timestamp(10)).ts, Timestamp(91));
    }
}
