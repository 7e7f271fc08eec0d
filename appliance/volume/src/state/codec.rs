//! The state's wire form: ops in log records, the whole state in checkpoints.

use super::*;

const STATE_VERSION: u8 = 1;

fn enc_rec(e: &mut Enc, r: &VolumeRec) {
    e.var(r.id.0);
    e.str(&r.name);
    e.u8(r.kind.code());
    e.var(r.size);
    e.var(r.parent.map_or(0, |p| p.0 + 1));
    e.var(r.origin.map_or(0, |p| p.0 + 1));
    e.u8(match r.prov {
        Provisioning::Thin => 0,
        Provisioning::Thick => 1,
    });
    e.fixed(&r.uuid);
    e.var(r.created);
}

fn dec_rec(d: &mut Dec) -> Result<VolumeRec, CodecError> {
    let opt = |v: u64| v.checked_sub(1).map(VolId);
    Ok(VolumeRec {
        id: VolId(d.var()?),
        name: d.str(MAX_NAME)?,
        kind: VolumeKind::from_code(d.u8()?)
            .ok_or_else(|| CodecError::Invalid("volume kind".into()))?,
        size: d.var()?,
        parent: opt(d.var()?),
        origin: opt(d.var()?),
        prov: match d.u8()? {
            0 => Provisioning::Thin,
            1 => Provisioning::Thick,
            v => return Err(CodecError::Invalid(format!("provisioning {v}"))),
        },
        uuid: d.fixed()?,
        created: d.var()?,
    })
}

pub fn encode_ops(ops: &[Op]) -> Vec<u8> {
    let mut e = Enc::new();
    e.var(ops.len() as u64);
    for op in ops {
        match op {
            Op::CreateVolume(r) => {
                e.u8(1);
                enc_rec(&mut e, r);
            }
            Op::MapCluster { vol, vc, pc } => {
                e.u8(2);
                e.var(vol.0);
                e.var(*vc);
                e.var(*pc);
            }
            Op::UnmapCluster { vol, vc } => {
                e.u8(3);
                e.var(vol.0);
                e.var(*vc);
            }
            Op::DeleteVolume { vol } => {
                e.u8(4);
                e.var(vol.0);
            }
            Op::Snapshot { src, rec } => {
                e.u8(5);
                e.var(src.0);
                enc_rec(&mut e, rec);
            }
            Op::Clone { snap, rec } => {
                e.u8(6);
                e.var(snap.0);
                enc_rec(&mut e, rec);
            }
            Op::Resize { vol, size } => {
                e.u8(7);
                e.var(vol.0);
                e.var(*size);
            }
            Op::Rename { vol, name } => {
                e.u8(8);
                e.var(vol.0);
                e.str(name);
            }
            Op::Revert { vol, snap } => {
                e.u8(9);
                e.var(vol.0);
                e.var(snap.0);
            }
            Op::Detach { vol } => {
                e.u8(10);
                e.var(vol.0);
            }
            Op::Reserve { clusters }
            | Op::Unreserve { clusters }
            | Op::ClustersZeroed { clusters } => {
                e.u8(match op {
                    Op::Reserve { .. } => 11,
                    Op::Unreserve { .. } => 12,
                    _ => 13,
                });
                let mut sorted = clusters.clone();
                sorted.sort_unstable();
                e.sorted_list(&sorted);
            }
        }
    }
    e.buf
}

pub fn decode_ops(bytes: &[u8]) -> Result<Vec<Op>, CodecError> {
    let mut d = Dec::new(bytes);
    let n = d.len(usize::MAX)?;
    let mut ops = Vec::with_capacity(n);
    for _ in 0..n {
        let tag = d.u8()?;
        let op = match tag {
            1 => Op::CreateVolume(dec_rec(&mut d)?),
            2 => Op::MapCluster {
                vol: VolId(d.var()?),
                vc: d.var()?,
                pc: d.var()?,
            },
            3 => Op::UnmapCluster {
                vol: VolId(d.var()?),
                vc: d.var()?,
            },
            4 => Op::DeleteVolume {
                vol: VolId(d.var()?),
            },
            5 => Op::Snapshot {
                src: VolId(d.var()?),
                rec: dec_rec(&mut d)?,
            },
            6 => Op::Clone {
                snap: VolId(d.var()?),
                rec: dec_rec(&mut d)?,
            },
            7 => Op::Resize {
                vol: VolId(d.var()?),
                size: d.var()?,
            },
            8 => Op::Rename {
                vol: VolId(d.var()?),
                name: d.str(MAX_NAME)?,
            },
            9 => Op::Revert {
                vol: VolId(d.var()?),
                snap: VolId(d.var()?),
            },
            10 => Op::Detach {
                vol: VolId(d.var()?),
            },
            11 => Op::Reserve {
                clusters: d.sorted_list()?,
            },
            12 => Op::Unreserve {
                clusters: d.sorted_list()?,
            },
            13 => Op::ClustersZeroed {
                clusters: d.sorted_list()?,
            },
            t => return Err(CodecError::Invalid(format!("op tag {t}"))),
        };
        ops.push(op);
    }
    d.finish()?;
    Ok(ops)
}

impl State {
    /// Checkpoint payload: the volume table and the mapped entries; refcounts and the free set
    /// are derived when decoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Enc::new();
        e.u8(STATE_VERSION);
        e.var(self.cluster_size);
        e.var(self.total_clusters);
        e.var(self.next_id);
        e.var(self.volumes.len() as u64);
        for (id, rec) in &self.volumes {
            enc_rec(&mut e, rec);
            let t = self.table(*id);
            e.var(t.len() as u64);
            let mapped: Vec<(usize, u64)> = t
                .iter()
                .enumerate()
                .filter(|(_, &p)| p != NONE)
                .map(|(i, &p)| (i, p))
                .collect();
            e.var(mapped.len() as u64);
            let mut prev = 0;
            for (vc, pc) in mapped {
                e.var((vc - prev) as u64);
                e.var(pc);
                prev = vc;
            }
        }
        e.sorted_list(&self.needs_zeroing.iter().collect::<Vec<_>>());
        e.sorted_list(&self.reserved.iter().collect::<Vec<_>>());
        e.buf
    }

    /// Decodes a checkpoint of a pool of at most `max_clusters` clusters (refused before
    /// allocating anything bigger).
    pub fn decode(bytes: &[u8], max_clusters: u64) -> Result<State, CodecError> {
        let bad = |s: String| CodecError::Invalid(s);
        let mut d = Dec::new(bytes);
        let v = d.u8()?;
        if v != STATE_VERSION {
            return Err(bad(format!("state version {v}")));
        }
        let cluster_size = d.var()?;
        let total = d.var()?;
        if cluster_size == 0 || total > max_clusters {
            return Err(bad(format!("geometry {cluster_size} x {total}")));
        }
        let mut s = State::new(cluster_size, total);
        s.next_id = d.var()?;
        let nvol = d.len(usize::MAX)?;
        for _ in 0..nvol {
            let rec = dec_rec(&mut d)?;
            let len = d.var()?;
            if len != s.clusters_for(rec.size) || len > s.max_volume_clusters() {
                return Err(bad(format!("{}: table length {len}", rec.name)));
            }
            let mut t = vec![NONE; len as usize];
            let n = d.len(usize::MAX)?;
            let mut vc: u64 = 0;
            for i in 0..n {
                let delta = d.var()?;
                if i > 0 && delta == 0 {
                    return Err(bad("table entries out of order".into()));
                }
                vc = vc
                    .checked_add(delta)
                    .ok_or_else(|| bad("entry overflow".into()))?;
                let pc = d.var()?;
                if vc >= len || pc >= total {
                    return Err(bad(format!(
                        "{}: entry {vc} -> {pc} out of range",
                        rec.name
                    )));
                }
                t[vc as usize] = pc;
                if s.refcount[pc as usize] == 0 {
                    s.free.remove(pc);
                }
                s.take_ref(pc);
            }
            let id = rec.id;
            if s.volumes.insert(id, rec).is_some() {
                return Err(bad(format!("duplicate volume id {id}")));
            }
            s.tables.insert(id, t);
        }
        for (name, target) in [("needs-zeroing", 0), ("reserved", 1)] {
            for c in d.sorted_list()? {
                if c >= total || s.refcount[c as usize] != 0 || !s.free.remove(c) {
                    return Err(bad(format!("{name} cluster {c} invalid")));
                }
                if target == 0 {
                    s.needs_zeroing.insert(c);
                } else {
                    s.reserved.insert(c);
                }
            }
        }
        d.finish()?;
        Ok(s)
    }
}
