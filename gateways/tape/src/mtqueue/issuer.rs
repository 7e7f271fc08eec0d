//! The issuer (figures 17–18): a sequence counter and a window of at most `m` requests in
//! flight, shared by the threads that send requests over several connections.

use std::collections::BTreeSet;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::SeqNo;

#[derive(Debug)]
struct State {
    next: u64,
    end: u64,
    in_flight: BTreeSet<u64>,
    acked: u64,
    closed: Option<String>,
}

/// Hands out sequence numbers `[first, end)` with at most `window` unacknowledged at a time.
#[derive(Debug)]
pub struct Issuer {
    window: usize,
    state: Mutex<State>,
    cv: Condvar,
}

impl Issuer {
    pub fn new(first: SeqNo, end: SeqNo, window: usize) -> Issuer {
        Issuer {
            window: window.max(1),
            state: Mutex::new(State {
                next: first.0,
                end: end.0,
                in_flight: BTreeSet::new(),
                acked: 0,
                closed: None,
            }),
            cv: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The next sequence number to send, waiting while the window is full (step 1803/1804).
    /// None when every number was issued or the issuer was closed; `Err` on timeout.
    pub fn acquire(&self, timeout: Duration) -> Result<Option<SeqNo>, String> {
        let deadline = Instant::now() + timeout;
        let mut s = self.lock();
        loop {
            if let Some(why) = &s.closed {
                return Err(why.clone());
            }
            if s.next >= s.end {
                return Ok(None);
            }
            if s.in_flight.len() < self.window {
                let seq = s.next;
                s.next += 1;
                s.in_flight.insert(seq);
                return Ok(Some(SeqNo(seq)));
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(format!(
                    "window of {} full for {timeout:?}: lowest unacknowledged {:?}",
                    self.window,
                    s.in_flight.first()
                ));
            }
            s = self
                .cv
                .wait_timeout(s, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// A completion carrying `seq` arrived (step 1805). A repeated acknowledgement is ignored.
    pub fn ack(&self, seq: SeqNo) -> bool {
        let mut s = self.lock();
        let fresh = s.in_flight.remove(&seq.0);
        if fresh {
            s.acked += 1;
            self.cv.notify_all();
        }
        fresh
    }

    /// Stops issuing (an error elsewhere); waiters get the reason.
    pub fn close(&self, why: &str) {
        self.lock().closed.get_or_insert_with(|| why.to_string());
        self.cv.notify_all();
    }

    pub fn in_flight(&self) -> usize {
        self.lock().in_flight.len()
    }

    pub fn acked(&self) -> u64 {
        self.lock().acked
    }

    /// Waits until every issued number was acknowledged (step 1806).
    pub fn wait_all_acked(&self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        let mut s = self.lock();
        loop {
            if let Some(why) = &s.closed {
                return Err(why.clone());
            }
            if s.in_flight.is_empty() && s.next >= s.end {
                return Ok(());
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(format!(
                    "{} requests unacknowledged after {timeout:?}",
                    s.in_flight.len()
                ));
            }
            s = self
                .cv
                .wait_timeout(s, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}
