//! The owner's loop: messages in, faults and commands handled, replies out; offline
//! refusal, stop, close and destroy.

use super::*;

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

    pub(crate) fn run(mut self) {
        loop {
            self.retry_stalled();
            // Parked until a channel or a handle queues work (or 50 ms pass: zeroing).
            if !self.shared.kick.swap(false, Ordering::SeqCst) {
                std::thread::park_timeout(Duration::from_millis(50));
                self.shared.kick.store(false, Ordering::SeqCst);
            }
            let mut rest = Vec::new();
            loop {
                match self.rx.try_recv() {
                    Ok(m) => rest.push(m),
                    Err(mpsc::TryRecvError::Empty) => break,
                    Err(mpsc::TryRecvError::Disconnected) => return,
                }
            }
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
                let r = self.handle_faults(faults);
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
                        let r = self.close();
                        let _ = reply.send(r.map(|()| Reply::Done));
                        return self.stop();
                    }
                    Msg::Cmd(Cmd::Destroy { force }, reply) => {
                        let r = self.destroy(force);
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
                            self.command(cmd)
                        };
                        self.check_hung();
                        let _ = reply.send(r);
                    }
                    Msg::Stop => return self.stop(),
                    Msg::MemberError {
                        vol,
                        member,
                        errors,
                        error,
                    } => self.member_error(vol, member, errors, error),
                }
            }
            if self.offline.is_none() && !self.state.needs_zeroing.is_empty() {
                if let Err(e) = self.zero_some() {
                    log::error!(
                        "pool {}: zeroing freed clusters failed: {e}",
                        self.shared.name
                    );
                }
            }
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

    /// Answers what an offline pool cannot do; true when the pool is told to stop (dropping
    /// an offline pool must not hang).
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
                Msg::Cmd(_, reply) => {
                    let _ = reply.send(Err(self.offline_err()));
                }
                Msg::MemberError {
                    vol,
                    member,
                    errors,
                    error,
                } => self.member_error(vol, member, errors, error),
                Msg::Stop => stop = true,
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
        while let Ok(m) = self.rx.try_recv() {
            match m {
                Msg::Cmd(_, reply) => {
                    let _ = reply.send(Err(VolumeError::Offline {
                        pool: self.shared.name.clone(),
                    }));
                }
                Msg::Stop | Msg::MemberError { .. } => {}
            }
        }
        log::info!("pool {}: owner stopped", self.shared.name);
    }

    pub(crate) fn close(&mut self) -> Result<(), VolumeError> {
        while !self.state.needs_zeroing.is_empty() {
            self.zero_some()?;
        }
        self.disks.flush_all()?;
        self.store.checkpoint(&mut self.disks, &self.state)?;
        log::info!(
            "pool {}: closed at seq {}",
            self.shared.name,
            self.store.seq
        );
        Ok(())
    }

    pub(crate) fn destroy(&mut self, force: bool) -> Result<(), VolumeError> {
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
        self.drain(&all)?;
        let zero = vec![0u8; META_BLOCK];
        for m in 0..self.disks.members.len() {
            self.disks.write(m, 0, &zero)?;
            self.disks.flush(m)?;
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
