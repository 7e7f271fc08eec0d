//! Faults from the channels: coalesced per (volume, cluster, kind), resolved together
//! (allocation, copy-on-write, metadata unmap/remap), logged in one record, answered.

use super::*;

impl Owner {
    pub(crate) fn handle_faults(&mut self, faults: Vec<Fault>) -> Result<(), VolumeError> {
        // Coalesce: one resolution per (volume, cluster, kind), answered to every asker.
        let mut groups: BTreeMap<(VolId, u64, FaultKind), Vec<Fault>> = BTreeMap::new();
        for f in faults {
            groups.entry((f.vol, f.vc, f.kind)).or_default().push(f);
        }
        let mut results: BTreeMap<(VolId, u64, FaultKind), Result<(), ReplyError>> =
            BTreeMap::new();
        let mut ops = Vec::new();
        let mut cows = Vec::new();
        let mut publish = Vec::new();
        let mut drain = BTreeSet::new();
        let mut full_for = None;
        for &(vol, vc, kind) in groups.keys() {
            let key = (vol, vc, kind);
            let Some(rec) = self.state.volumes.get(&vol) else {
                results.insert(key, Err(ReplyError::NotReady));
                continue;
            };
            let len = self.state.table(vol).len() as u64;
            if rec.kind == VolumeKind::Snapshot {
                results.insert(key, Err(ReplyError::ReadOnly));
                continue;
            }
            if vc >= len {
                // Shrunk meanwhile: the retry reports the range error.
                results.insert(key, Ok(()));
                continue;
            }
            let pc = self.state.table(vol)[vc as usize];
            match kind {
                FaultKind::Write => {
                    if pc == NONE {
                        match self.take_free()? {
                            Some(new) => {
                                let op = Op::MapCluster { vol, vc, pc: new };
                                self.apply(std::slice::from_ref(&op))?;
                                ops.push(op);
                                publish.push((vol, vc));
                                results.insert(key, Ok(()));
                            }
                            None => {
                                full_for.get_or_insert(vol);
                                results.insert(key, Err(ReplyError::NoSpace));
                            }
                        }
                    } else if self.state.is_shared(pc) {
                        cows.push((vol, vc));
                    } else {
                        // Stale entry (the last sharer went): just republish.
                        publish.push((vol, vc));
                        results.insert(key, Ok(()));
                    }
                }
                FaultKind::Unmap => {
                    if pc != NONE {
                        let op = Op::UnmapCluster { vol, vc };
                        self.apply(std::slice::from_ref(&op))?;
                        ops.push(op);
                        drain.insert(vol);
                    }
                    results.insert(key, Ok(()));
                }
                FaultKind::CopyFrom(src) => {
                    let spc = self
                        .state
                        .table(vol)
                        .get(src as usize)
                        .copied()
                        .unwrap_or(NONE);
                    let op = if spc == NONE {
                        (pc != NONE).then_some(Op::UnmapCluster { vol, vc })
                    } else if spc == pc {
                        None
                    } else if self.state.refs < self.max_refs {
                        Some(Op::MapCluster { vol, vc, pc: spc })
                    } else {
                        // No room to record one more reference: emulate in the channel.
                        None
                    };
                    if let Some(op) = op {
                        self.apply(std::slice::from_ref(&op))?;
                        ops.push(op);
                        drain.insert(vol);
                    }
                    results.insert(key, Ok(()));
                }
            }
        }
        let (cow_ops, no_room) = self.copy_on_write(&cows)?;
        for &(vol, vc) in &cows {
            let ok = !no_room.contains(&(vol, vc));
            if !ok {
                full_for.get_or_insert(vol);
            }
            publish.push((vol, vc));
            results.insert(
                (vol, vc, FaultKind::Write),
                if ok { Ok(()) } else { Err(ReplyError::NoSpace) },
            );
        }
        ops.extend(cow_ops);
        self.log(&ops)?;
        for (vol, vc) in publish {
            self.publish_entry(vol, vc);
        }
        // Metadata unmaps/remaps change entries other than the faulting one (sharing).
        let ids: Vec<VolId> = drain.iter().copied().collect();
        for id in ids {
            self.publish_volume(id);
        }
        if !drain.is_empty() {
            self.drain(&drain)?;
        }
        if let Some(vol) = full_for {
            let volume = self
                .state
                .volumes
                .get(&vol)
                .map_or_else(String::new, |v| v.name.clone());
            self.shared.event(PoolEvent::PoolFull {
                pool: self.shared.name.clone(),
                volume,
            });
        }
        self.space_check();
        for (key, fs) in groups {
            let result = results
                .get(&key)
                .copied()
                .unwrap_or(Err(ReplyError::NotReady));
            for f in fs {
                self.answer(
                    &f.chan,
                    FaultReply {
                        token: f.token,
                        result,
                    },
                );
            }
        }
        Ok(())
    }
}
