//! Primary side: the send window of one domain.

use std::collections::BTreeMap;

use ferrite_gateway_protocol::{DomainId, SeqNo};

use crate::error::OrderingError;

/// What the sender of one domain has in flight.
///
/// Records are sent without waiting for each other (pipelined, over any
/// number of connections). A record is sendable while its sequence number
/// is within the receiver's credit (`window_end`); it stays in flight until
/// a cumulative acknowledgement covers it and is sent again when its
/// retransmit deadline passes (loss, a cut connection). The window holds
/// only sequence numbers and deadlines: the data stays in the journal.
#[derive(Debug, Clone)]
pub struct SendWindow {
    domain: DomainId,
    acked: SeqNo,
    window_end: SeqNo,
    next_new: SeqNo,
    /// seq -> retransmit deadline (ns).
    inflight: BTreeMap<u64, u64>,
    rto_ns: u64,
    retransmits: u64,
}

impl SendWindow {
    /// A window starting after `acked` (what the receiver already
    /// acknowledged) with an initial credit up to `window_end` and a
    /// retransmit timeout.
    pub fn new(domain: DomainId, acked: SeqNo, window_end: SeqNo, rto_ns: u64) -> SendWindow {
        SendWindow {
            domain,
            acked,
            window_end: window_end.max(acked),
            next_new: acked.next(),
            inflight: BTreeMap::new(),
            rto_ns,
            retransmits: 0,
        }
    }

    /// Highest cumulatively acknowledged sequence number.
    pub fn acked(&self) -> SeqNo {
        self.acked
    }

    /// The next sequence number never sent yet.
    pub fn next_new(&self) -> SeqNo {
        self.next_new
    }

    /// Records sent and not acknowledged.
    pub fn in_flight(&self) -> usize {
        self.inflight.len()
    }

    /// Records sent again after their deadline.
    pub fn retransmits(&self) -> u64 {
        self.retransmits
    }

    /// Whether a new record `next_new()` may be sent now (within credit).
    pub fn can_send_new(&self) -> bool {
        self.next_new <= self.window_end
    }

    /// Marks `next_new()` as sent at `now`; returns it.
    pub fn send_new(&mut self, now: u64) -> Option<SeqNo> {
        if !self.can_send_new() {
            return None;
        }
        let seq = self.next_new;
        self.inflight.insert(seq.0, now.saturating_add(self.rto_ns));
        self.next_new = seq.next();
        Some(seq)
    }

    /// The in-flight records whose deadline passed at `now`, oldest first,
    /// at most `max`; each gets a new deadline (the caller sends them
    /// again).
    pub fn due(&mut self, now: u64, max: usize, out: &mut Vec<SeqNo>) {
        for (seq, deadline) in self.inflight.iter_mut() {
            if out.len() >= max {
                break;
            }
            if *deadline <= now {
                *deadline = now.saturating_add(self.rto_ns);
                self.retransmits += 1;
                out.push(SeqNo(*seq));
            }
        }
    }

    /// Everything in flight is due again (a connection was cut).
    pub fn resend_all(&mut self, now: u64) {
        for deadline in self.inflight.values_mut() {
            *deadline = now;
        }
    }

    /// A cumulative acknowledgement: every record up to `cum` is held by
    /// the receiver. Returns how many records it newly covers. Old or
    /// repeated acknowledgements are harmless; one beyond what was sent
    /// is an error.
    pub fn on_ack(&mut self, cum: SeqNo) -> Result<u64, OrderingError> {
        if cum.0 >= self.next_new.0 {
            return Err(OrderingError::AckBeyondSent {
                domain: self.domain,
                acked: cum,
                last: SeqNo(self.next_new.0 - 1),
            });
        }
        if cum <= self.acked {
            return Ok(0);
        }
        let newly = cum.0 - self.acked.0;
        self.acked = cum;
        let keep = self.inflight.split_off(&(cum.0 + 1));
        self.inflight = keep;
        self.window_end = self.window_end.max(cum);
        Ok(newly)
    }

    /// The receiver's credit: it accepts sequence numbers up to
    /// `window_end` (never shrinks).
    pub fn on_credit(&mut self, window_end: SeqNo) {
        self.window_end = self.window_end.max(window_end);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credit_limits_new_sends_and_acks_trim() {
        let mut w = SendWindow::new(DomainId(1), SeqNo(0), SeqNo(3), 100);
        assert_eq!(w.send_new(0), Some(SeqNo(1)));
        assert_eq!(w.send_new(0), Some(SeqNo(2)));
        assert_eq!(w.send_new(0), Some(SeqNo(3)));
        assert_eq!(w.send_new(0), None);
        assert_eq!(w.on_ack(SeqNo(2)), Ok(2));
        assert_eq!(w.on_ack(SeqNo(1)), Ok(0));
        assert_eq!(w.in_flight(), 1);
        assert!(w.on_ack(SeqNo(4)).is_err());
        w.on_credit(SeqNo(5));
        assert_eq!(w.send_new(10), Some(SeqNo(4)));
    }

    #[test]
    fn lost_records_come_due_after_the_timeout() {
        let mut w = SendWindow::new(DomainId(1), SeqNo(10), SeqNo(100), 100);
        w.send_new(0);
        w.send_new(50);
        let mut due = Vec::new();
        w.due(99, 10, &mut due);
        assert!(due.is_empty());
        w.due(100, 10, &mut due);
        assert_eq!(due, vec![SeqNo(11)]);
        due.clear();
        w.resend_all(120);
        w.due(120, 10, &mut due);
        assert_eq!(due, vec![SeqNo(11), SeqNo(12)]);
        assert_eq!(w.retransmits(), 3);
    }
}
