//! Faults from the channels: coalesced per (volume, cluster, kind), resolved together
//! (allocation, copy-on-write, metadata unmap/remap), logged in one record, answered.

use super::*;

type Key = (VolId, u64, FaultKind);

/// What one group commit decides before it is logged.
#[derive(Default)]
struct Batch {
    results: BTreeMap<Key, Result<(), ReplyError>>,
    ops: Vec<Op>,
    /// Shared clusters to copy before they are written.
    cows: Vec<VolCluster>,
    publish: Vec<VolCluster>,
    /// Volumes whose entries change beyond the faulting one (drained before answering).
    drain: BTreeSet<VolId>,
    full_for: Option<VolId>,
}

impl Owner {
    pub(crate) async fn handle_faults(&mut self, faults: Vec<Fault>) -> Result<(), VolumeError> {
        // Coalesce: one resolution per (volume, cluster, kind), answered to every asker.
        let mut groups: BTreeMap<Key, Vec<Fault>> = BTreeMap::new();
        for f in faults {
            groups.entry((f.vol, f.vc, f.kind)).or_default().push(f);
        }
        let mut b = Batch::default();
        for &key in groups.keys() {
            self.resolve(&mut b, key).await?;
        }
        self.commit_batch(&mut b).await?;
        for (key, fs) in groups {
            let result = b
                .results
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

    /// Decides one coalesced fault (applied to the state, not logged yet).
    async fn resolve(&mut self, b: &mut Batch, key: Key) -> Result<(), VolumeError> {
        let (vol, vc, kind) = key;
        let Some(rec) = self.state.volumes.get(&vol) else {
            b.results.insert(key, Err(ReplyError::NotReady));
            return Ok(());
        };
        if rec.kind == VolumeKind::Snapshot {
            b.results.insert(key, Err(ReplyError::ReadOnly));
            return Ok(());
        }
        if vc >= self.state.table(vol).len() as u64 {
            // Shrunk meanwhile: the retry reports the range error.
            b.results.insert(key, Ok(()));
            return Ok(());
        }
        let pc = self.state.table(vol)[vc as usize];
        match kind {
            FaultKind::Write => return self.resolve_write(b, key, pc).await,
            FaultKind::Unmap => {
                if pc != NONE {
                    self.apply_into(b, Op::UnmapCluster { vol, vc })?;
                }
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
                } else if spc == pc || self.state.refs >= self.max_refs {
                    // Already shared, or no room to record one more reference: the channel
                    // emulates the copy.
                    None
                } else {
                    Some(Op::MapCluster { vol, vc, pc: spc })
                };
                if let Some(op) = op {
                    self.apply_into(b, op)?;
                }
            }
        }
        b.results.insert(key, Ok(()));
        Ok(())
    }

    /// A metadata unmap or remap: applied, logged with the batch, its volume drained.
    fn apply_into(&mut self, b: &mut Batch, op: Op) -> Result<(), VolumeError> {
        self.apply(std::slice::from_ref(&op))?;
        if let Op::UnmapCluster { vol, .. } | Op::MapCluster { vol, .. } = op {
            b.drain.insert(vol);
        }
        b.ops.push(op);
        Ok(())
    }

    /// A write needs cluster `pc` (NONE: unallocated) of the key's volume writable.
    async fn resolve_write(&mut self, b: &mut Batch, key: Key, pc: u64) -> Result<(), VolumeError> {
        let (vol, vc, _) = key;
        if pc == NONE {
            match self.take_free().await? {
                Some(new) => {
                    let op = Op::MapCluster { vol, vc, pc: new };
                    self.apply(std::slice::from_ref(&op))?;
                    b.ops.push(op);
                    b.publish.push((vol, vc));
                    b.results.insert(key, Ok(()));
                }
                None => {
                    b.full_for.get_or_insert(vol);
                    b.results.insert(key, Err(ReplyError::NoSpace));
                }
            }
        } else if self.state.is_shared(pc) {
            b.cows.push((vol, vc));
        } else {
            // Stale entry (the last sharer went): just republish.
            b.publish.push((vol, vc));
            b.results.insert(key, Ok(()));
        }
        Ok(())
    }

    /// Copies the shared clusters, logs the batch in one record, publishes and drains.
    async fn commit_batch(&mut self, b: &mut Batch) -> Result<(), VolumeError> {
        let (cow_ops, no_room) = self.copy_on_write(&b.cows).await?;
        for &(vol, vc) in &b.cows {
            let ok = !no_room.contains(&(vol, vc));
            if !ok {
                b.full_for.get_or_insert(vol);
            }
            b.publish.push((vol, vc));
            b.results.insert(
                (vol, vc, FaultKind::Write),
                if ok { Ok(()) } else { Err(ReplyError::NoSpace) },
            );
        }
        b.ops.extend(cow_ops);
        self.log(&b.ops).await?;
        for &(vol, vc) in &b.publish {
            self.publish_entry(vol, vc);
        }
        // Metadata unmaps/remaps change entries other than the faulting one (sharing).
        for &id in &b.drain {
            self.publish_volume(id);
        }
        if !b.drain.is_empty() {
            self.drain(&b.drain).await?;
        }
        if let Some(vol) = b.full_for {
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
        Ok(())
    }
}
