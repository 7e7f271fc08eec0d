//! The owner's loop: messages in, faults and commands handled, replies out; offline
//! refusal, stop, close and destroy.

use super::*;

/// How long an idle owner waits before zeroing the next batch of freed clusters.
const ZERO_PAUSE: Duration = Duration::from_millis(50);
/// How soon replies that found a channel's ring full are tried again.
const STALLED_RETRY: Duration = Duration::from_millis(1);

impl Owner {
    // ---- the loop ---------------------------------------------------------------------------

    /// Sends a reply to a channel's ring, or keeps it for the next loop when the ring is full.
    pub(crate) fn answer(&mut self, chan: &Arc<ChannelShared>, r: FaultReply) {
        if let Err(r) = chan.reply(r) {
            self.stalled.push((Arc::clone(chan), r));
        }
    }

    fn retry_stalled(&mut self) {
        let stalled = std::mem::take(&mut self.stalled);
        for (chan, r) in stalled {
            self.answer(&chan, r);
        }
    }

    /// Waits (without blocking the reactor) until there is something to do: a fault, a
    /// message, a stop, a drained request, or, with freed clusters to zero, `ZERO_PAUSE`.
    async fn next_work(&self) {
        let now = Instant::now();
        let zero_at = (self.offline.is_none() && !self.state.needs_zeroing.is_empty())
            .then_some(now + ZERO_PAUSE);
        let retry_at = (!self.stalled.is_empty()).then_some(now + STALLED_RETRY);
        let hub = Rc::clone(&self.disks.hub);
        poll_fn(|_| {
            let s = &self.shared;
            if s.kick.swap(false, Ordering::SeqCst)
                || !s.faults.is_empty()
                || s.stop.load(Ordering::SeqCst)
                || !self.inbox.borrow().is_empty()
            {
                return Poll::Ready(());
            }
            let now = Instant::now();
            for at in [zero_at, retry_at].into_iter().flatten() {
                if now >= at {
                    return Poll::Ready(());
                }
                hub.wake_at(at);
            }
            Poll::Pending
        })
        .await;
    }

    pub(crate) async fn run(mut self) {
        loop {
            self.retry_stalled();
            self.next_work().await;
            if self.shared.stop.load(Ordering::SeqCst) {
                return self.stop();
            }
            let rest: Vec<Msg> = self.inbox.borrow_mut().drain(..).collect();
            let mut faults = Vec::new();
            while faults.len() < crate::shared::FAULT_RING {
                match self.shared.faults.pop() {
                    Some(f) => faults.push(f),
                    None => break,
                }
            }
            self.disks.timeout =
                Duration::from_nanos(self.shared.member_timeout_ns.load(Ordering::Relaxed));
            if self.offline.is_some() {
                if self.refuse(faults, rest) {
                    return self.stop();
                }
                continue;
            }
            if !faults.is_empty() {
                let askers: Vec<_> = faults
                    .iter()
                    .map(|f| (Arc::clone(&f.chan), f.token))
                    .collect();
                let r = self.handle_faults(faults).await;
                self.check_hung();
                if let Err(e) = r {
                    // Nothing was answered yet: fail the held requests, keep serving.
                    log::error!("pool {}: fault handling failed: {e}", self.shared.name);
                    let result = Err(if self.offline.is_some() {
                        ReplyError::NotReady
                    } else {
                        ReplyError::Io(libc::EIO)
                    });
                    for (chan, token) in askers {
                        self.answer(&chan, FaultReply { token, result });
                    }
                }
            }
            for m in rest {
                match m {
                    Msg::Cmd(Cmd::Close, reply) => {
                        let r = self.close().await;
                        let _ = reply.send(r.map(|()| Reply::Done));
                        return self.stop();
                    }
                    Msg::Cmd(Cmd::Destroy { force }, reply) => {
                        let r = self.destroy(force).await;
                        let ok = r.is_ok();
                        let _ = reply.send(r.map(|()| Reply::Done));
                        if ok {
                            return self.stop();
                        }
                    }
                    Msg::Cmd(cmd, reply) => {
                        let r = if self.offline.is_some() {
                            Err(self.offline_err())
                        } else {
                            self.command(cmd).await
                        };
                        let r = r.map_err(|e| self.name_hung_member(e));
                        self.check_hung();
                        let _ = reply.send(r);
                    }
                    Msg::MemberError {
                        vol,
                        member,
                        errors,
                        error,
                    } => self.member_error(vol, member, errors, error),
                }
            }
            if self.offline.is_none() && !self.state.needs_zeroing.is_empty() {
                if let Err(e) = self.zero_some().await {
                    log::error!(
                        "pool {}: zeroing freed clusters failed: {e}",
                        self.shared.name
                    );
                }
            }
        }
    }

    /// An operation that failed because a member did not answer says which member.
    fn name_hung_member(&self, e: VolumeError) -> VolumeError {
        let timed_out = matches!(&e, VolumeError::Io(ferrite_bdev::BdevError::Io(io))
            if io.raw_os_error() == Some(libc::ETIMEDOUT));
        match self.disks.members.iter().find(|m| m.hung) {
            Some(m) if timed_out => VolumeError::MemberTimeout {
                pool: self.shared.name.clone(),
                device: m.dev.name().to_owned(),
                timeout: self.disks.timeout,
            },
            _ => e,
        }
    }

    /// Raises (and logs) an event for failed member I/O reported by a channel.
    pub(crate) fn member_error(&mut self, vol: VolId, member: usize, errors: u64, error: String) {
        let device = self
            .shared
            .devs
            .get(member)
            .map_or_else(|| format!("member {member}"), |d| d.name().to_owned());
        let volume = self
            .state
            .volumes
            .get(&vol)
            .map_or_else(|| format!("volume {vol}"), |v| v.name.clone());
        self.shared.event(PoolEvent::MemberIoError {
            pool: self.shared.name.clone(),
            device,
            volume,
            errors,
            error,
        });
    }

    pub(crate) fn offline_err(&self) -> VolumeError {
        VolumeError::Offline {
            pool: self.shared.name.clone(),
        }
    }

    /// Answers what an offline pool cannot do (it still stops when told: dropping an
    /// offline pool must not hang).
    /// Returns true after a `close` (refused: no checkpoint of a pool that may disagree with
    /// its disks; the owner stops all the same).
    pub(crate) fn refuse(&mut self, faults: Vec<Fault>, rest: Vec<Msg>) -> bool {
        let mut stop = false;
        for f in faults {
            self.answer(
                &f.chan,
                FaultReply {
                    token: f.token,
                    result: Err(ReplyError::NotReady),
                },
            );
        }
        for m in rest {
            match m {
                Msg::Cmd(Cmd::Info, reply) => {
                    let _ = reply.send(Ok(Reply::Info(Box::new(self.info()))));
                }
                Msg::Cmd(Cmd::Close, reply) => {
                    let _ = reply.send(Err(self.offline_err()));
                    stop = true;
                }
                Msg::Cmd(_, reply) => {
                    let _ = reply.send(Err(self.offline_err()));
                }
                Msg::MemberError {
                    vol,
                    member,
                    errors,
                    error,
                } => self.member_error(vol, member, errors, error),
            }
        }
        stop
    }

    /// Stops serving: volumes return NotReady; queued faults are answered NotReady.
    pub(crate) fn stop(self) {
        self.shared.online.store(false, Ordering::Release);
        // A reply that does not fit is dropped: the channel's hold timeout fails the request
        // (the pool is offline anyway).
        while let Some(f) = self.shared.faults.pop() {
            let _ = f.chan.reply(FaultReply {
                token: f.token,
                result: Err(ReplyError::NotReady),
            });
        }
        // Messages still in the task's inbox are dropped with it: their callers see Offline.
        let rest: Vec<Msg> = self.inbox.borrow_mut().drain(..).collect();
        for m in rest {
            if let Msg::Cmd(_, reply) = m {
                let _ = reply.send(Err(self.offline_err()));
            }
        }
        log::info!("pool {}: owner stopped", self.shared.name);
    }

    pub(crate) async fn close(&mut self) -> Result<(), VolumeError> {
        while !self.state.needs_zeroing.is_empty() {
            self.zero_some().await?;
        }
        self.disks.flush_all().await?;
        self.store.checkpoint(&mut self.disks, &self.state).await?;
        log::info!(
            "pool {}: closed at seq {}",
            self.shared.name,
            self.store.seq
        );
        Ok(())
    }

    pub(crate) async fn destroy(&mut self, force: bool) -> Result<(), VolumeError> {
        if !force && !self.state.volumes.is_empty() {
            return Err(VolumeError::NotEmpty {
                pool: self.shared.name.clone(),
                volumes: self.state.volumes.len(),
            });
        }
        for vs in self.vols.values() {
            vs.deleted.store(true, Ordering::Release);
        }
        let all: BTreeSet<VolId> = self.vols.keys().copied().collect();
        self.drain(&all).await?;
        let zero = vec![0u8; META_BLOCK];
        for m in 0..self.disks.members.len() {
            self.disks.write(m, 0, &zero).await?;
            self.disks.flush(m).await?;
        }
        self.shared
            .volumes
            .write()
            .expect("volume registry lock")
            .clear();
        log::info!("pool {} destroyed", self.shared.name);
        Ok(())
    }
}
