//! The channel's side of the conversation with the owner: holding requests and sending one
//! fault per cluster, taking the replies, expiring held requests, reporting member errors.

use super::*;

impl Core {
    /// Counts a failed member request (medium and device errors only) for the owner's event.
    /// The error path only: it may allocate.
    pub(super) fn note_member_error(&mut self, m: usize, e: &BdevError) {
        if !matches!(e, BdevError::Io(_)) {
            return;
        }
        let count = match self.unreported.take() {
            Some((um, n, _)) if um == m => n + 1,
            Some((um, n, last)) => {
                // Another member failed too: report the first one's count now.
                self.send_member_error(um, n, last);
                1
            }
            None => 1,
        };
        self.unreported = Some((m, count, e.to_string()));
        self.report_member_errors();
    }

    /// Sends the pending member error report unless one went out less than an interval ago.
    pub(super) fn report_member_errors(&mut self) {
        if self.unreported.is_none()
            || self
                .last_report
                .is_some_and(|t| t.elapsed() < ERROR_REPORT_INTERVAL)
        {
            return;
        }
        if let Some((m, n, last)) = self.unreported.take() {
            self.send_member_error(m, n, last);
        }
    }

    pub(super) fn send_member_error(&mut self, member: usize, errors: u64, error: String) {
        self.last_report = Some(Instant::now());
        // A full inbox drops this report (the reactor counts it); the next one carries the
        // count since.
        let _ = self.vol.pool.send(Msg::MemberError {
            vol: self.vol.id,
            member,
            errors,
            error,
        });
    }

    pub(super) fn flush_backlog(&mut self, members: &mut [Box<dyn IoChannel>]) {
        while let Some((m, io)) = self.backlog.pop_front() {
            match members[m].submit(io) {
                Ok(()) => {}
                Err((io, BdevError::QueueFull)) => {
                    self.backlog.push_front((m, io));
                    return;
                }
                Err((io, e)) => {
                    self.note_member_error(m, &e);
                    self.member_done(io, Err(e))
                }
            }
        }
    }

    pub(super) fn hold(&mut self, s: u32, wait: Wait) {
        let slot = &mut self.slots[s as usize];
        slot.wait = wait;
        if slot.held_since.is_none() {
            slot.held_since = Some(Instant::now());
            bump(&self.me.counters.faults, 1);
        }
        self.held.push(s);
    }

    pub(super) fn send_fault(&mut self, vc: u64, kind: FaultKind, token: u64) -> bool {
        let f = Fault {
            vol: self.vol.id,
            vc,
            kind,
            chan: Arc::clone(&self.me),
            token,
        };
        if !self.vol.pool.online.load(Ordering::Acquire) {
            return false;
        }
        if self.unsent.is_empty() {
            match self.vol.pool.faults.push(f) {
                Ok(()) => {
                    self.vol.pool.wake_owner();
                    return true;
                }
                Err(f) => self.unsent.push_back(f),
            }
        } else {
            self.unsent.push_back(f);
        }
        bump(&self.me.counters.fault_ring_full, 1);
        true
    }

    /// Sends the faults a full ring refused earlier, in order.
    pub(super) fn send_unsent(&mut self) {
        let mut sent = false;
        while let Some(f) = self.unsent.pop_front() {
            if let Err(f) = self.vol.pool.faults.push(f) {
                self.unsent.push_front(f);
                break;
            }
            sent = true;
        }
        if sent {
            self.vol.pool.wake_owner();
        }
    }

    /// Holds `s` until cluster `vc` is writable (one fault per cluster per channel).
    pub(super) fn fault_write(&mut self, s: u32, vc: u64) {
        if !self.outstanding.contains(&vc) {
            if !self.send_fault(vc, FaultKind::Write, vc) {
                self.finish(s, Err(BdevError::NotReady("pool offline")));
                return;
            }
            self.outstanding.push(vc);
        }
        self.hold(s, Wait::Cluster(vc));
    }

    pub(super) fn fault_meta(&mut self, s: u32, vc: u64, kind: FaultKind) {
        let token = META_TOKEN | u64::from(s);
        bump(&self.me.counters.metadata_ops, 1);
        if !self.send_fault(vc, kind, token) {
            self.finish(s, Err(BdevError::NotReady("pool offline")));
            return;
        }
        self.hold(s, Wait::Token(token));
    }

    /// Takes the owner's replies off the channel's ring (lock-free, no allocation).
    pub(super) fn take_replies(&mut self) {
        while let Some(r) = self.me.replies.pop() {
            if r.token & META_TOKEN == 0 {
                self.outstanding.retain(|&vc| vc != r.token);
            }
            let mut i = 0;
            while i < self.held.len() {
                let s = self.held[i];
                let slot = &mut self.slots[s as usize];
                let hit = match slot.wait {
                    Wait::Cluster(vc) => r.token & META_TOKEN == 0 && vc == r.token,
                    Wait::Token(t) => t == r.token,
                    Wait::None => false,
                };
                if !hit {
                    i += 1;
                    continue;
                }
                self.held.swap_remove(i);
                if let Some(t0) = slot.held_since.take() {
                    raise_max(
                        &self.me.counters.held_time_max_ns,
                        t0.elapsed().as_nanos() as u64,
                    );
                }
                let meta = matches!(slot.wait, Wait::Token(_));
                slot.wait = Wait::None;
                match r.result {
                    Ok(()) => {
                        if meta {
                            // The metadata op did the whole piece.
                            let kind = slot.io.as_ref().expect("busy slot").kind;
                            let cb = self.cb;
                            let (cur, blocks, num) = match kind {
                                IoKind::Copy {
                                    dst_lba, blocks, ..
                                } => (dst_lba + slot.cursor, blocks, u64::MAX),
                                IoKind::WriteZeroes { lba, blocks }
                                | IoKind::Unmap { lba, blocks } => {
                                    (lba + slot.cursor, blocks, u64::MAX)
                                }
                                _ => (0, 0, 0),
                            };
                            let _ = num;
                            let off = cur % cb;
                            slot.cursor += (cb - off).min(blocks - slot.cursor);
                        }
                        self.runnable.push_back(s);
                    }
                    Err(e) => self.finish(s, Err(e.to_bdev())),
                }
            }
        }
    }

    pub(super) fn expire_held(&mut self) {
        if self.held.is_empty() {
            return;
        }
        let offline = !self.vol.pool.online.load(Ordering::Acquire);
        let timeout = Duration::from_nanos(self.vol.pool.hold_timeout_ns.load(Ordering::Relaxed));
        let now = Instant::now();
        let mut i = 0;
        while i < self.held.len() {
            let s = self.held[i];
            let since = self.slots[s as usize].held_since.unwrap_or(now);
            if offline || now.duration_since(since) >= timeout {
                self.held.swap_remove(i);
                raise_max(
                    &self.me.counters.held_time_max_ns,
                    now.duration_since(since).as_nanos() as u64,
                );
                if let Wait::Cluster(vc) = self.slots[s as usize].wait {
                    if !self
                        .held
                        .iter()
                        .any(|&h| self.slots[h as usize].wait == Wait::Cluster(vc))
                    {
                        self.outstanding.retain(|&v| v != vc);
                    }
                }
                let why = if offline {
                    "pool offline"
                } else {
                    "volume metadata owner did not answer in time"
                };
                self.finish(s, Err(BdevError::NotReady(why)));
            } else {
                i += 1;
            }
        }
    }
}
