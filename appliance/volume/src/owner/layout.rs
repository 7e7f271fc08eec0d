//! Creating a pool's on-disk layout and opening one (labels, checkpoint, log replay,
//! check).

use super::*;

pub(super) async fn create_layout(
    disks: &mut Disks,
    name: &str,
    opts: PoolOptions,
) -> Result<(Vec<MemberLabel>, State, Store), VolumeError> {
    crate::types::check_name(name).map_err(|reason| VolumeError::InvalidName {
        name: name.into(),
        reason,
    })?;
    let bs = disks.members[0].bs;
    let cs = opts.cluster_size;
    if !cluster_size_valid(cs, bs as u32) {
        return Err(VolumeError::InvalidConfig(format!(
            "cluster size {cs} must be a power of two from 64 KiB to 64 MiB and at least the block size {bs}"
        )));
    }
    for m in 0..disks.members.len() {
        if let Ok(Some(l)) = read_label(disks, m).await {
            return Err(VolumeError::InUse {
                device: disks.members[m].dev.name().into(),
                pool: l.pool_name,
            });
        }
    }
    let sizes: Vec<u64> = disks
        .members
        .iter()
        .map(|m| m.dev.num_blocks() * m.bs)
        .collect();
    let align = cs.min(1 << 20);
    let est: u64 = sizes
        .iter()
        .map(|s| s.saturating_sub(META_BLOCK as u64) / cs)
        .sum();
    let max_refs_est = est.max(1) * REFS_PER_CLUSTER;
    let slot = round_up_block(64 * 1024 + max_refs_est * 20 + est * 10).max(SLOT_FLOOR);
    let log = slot.clamp(LOG_FLOOR, LOG_CEIL);
    let meta_end = META_BLOCK as u64 + 2 * slot + log;
    let pool_uuid = random_uuid();
    let created = now_secs();
    let mut labels = Vec::new();
    let mut first = 0;
    let count = disks.members.len() as u32;
    for (i, &size) in sizes.iter().enumerate() {
        let data_start = if i == 0 { meta_end } else { META_BLOCK as u64 }.div_ceil(align) * align;
        let clusters = size.saturating_sub(data_start) / cs;
        if clusters == 0 {
            return Err(VolumeError::TooSmall {
                device: disks.members[i].dev.name().into(),
                size,
                needed: data_start + cs,
            });
        }
        let (slot_offset, slot_size, log_offset, log_size) = if i == 0 {
            (META_BLOCK as u64, slot, META_BLOCK as u64 + 2 * slot, log)
        } else {
            (0, 0, 0, 0)
        };
        labels.push(MemberLabel {
            pool_name: name.into(),
            pool_uuid,
            member_index: i as u32,
            member_count: count,
            member_uuid: random_uuid(),
            member_size: size,
            block_size: bs as u32,
            cluster_size: cs,
            data_start,
            data_clusters: clusters,
            first_cluster: first,
            slot_offset,
            slot_size,
            log_offset,
            log_size,
            max_refs: 0,
            created,
        });
        first += clusters;
    }
    if first > crate::entry::MAX_PCLUSTER {
        return Err(VolumeError::InvalidConfig(format!(
            "{first} clusters is too many; use larger clusters"
        )));
    }
    for l in &mut labels {
        l.max_refs = first * REFS_PER_CLUSTER;
    }
    // Free clusters always read zero: zero the whole data area once.
    for (m, l) in labels.iter().enumerate() {
        disks.zero(m, l.data_start, l.data_clusters * cs).await?;
    }
    disks.flush_all().await?;
    let state = State::new(cs, first);
    let store = Store::format(disks, &labels[0], &state).await?;
    // Labels last: a pool half-created is not a pool.
    for (m, l) in labels.iter().enumerate() {
        disks.write(m, 0, &l.encode()).await?;
    }
    disks.flush_all().await?;
    log::info!(
        "pool {name} created: {} members, {first} clusters of {cs} bytes",
        labels.len()
    );
    Ok((labels, state, store))
}

pub(super) async fn open_layout(
    disks: &mut Disks,
) -> Result<(Vec<MemberLabel>, State, Store), VolumeError> {
    let mut labels = Vec::new();
    for m in 0..disks.members.len() {
        let dev = Arc::clone(&disks.members[m].dev);
        let device = dev.name().to_owned();
        let size = dev.num_blocks() * u64::from(dev.block_size());
        let l = match read_label(disks, m).await? {
            Some(l) => l,
            None => {
                return Err(VolumeError::DamagedLabel {
                    device,
                    reason: LabelError::NotAMember.to_string(),
                })
            }
        };
        if l.member_size > size {
            return Err(VolumeError::DamagedLabel {
                device,
                reason: format!(
                    "size mismatch: label says {} bytes, device has {size}",
                    l.member_size
                ),
            });
        }
        if l.block_size != dev.block_size() {
            return Err(VolumeError::DamagedLabel {
                device,
                reason: format!(
                    "block size mismatch: label {}, device {}",
                    l.block_size,
                    dev.block_size()
                ),
            });
        }
        labels.push((l, m));
    }
    let pool = labels[0].0.pool_name.clone();
    let bad = |reason: String| VolumeError::BadMembers {
        pool: pool.clone(),
        reason,
    };
    let uuid = labels[0].0.pool_uuid;
    let dev_of = |m: usize| disks.members[m].dev.name().to_owned();
    if let Some((l, m)) = labels.iter().find(|(l, _)| l.pool_uuid != uuid) {
        let (l0, m0) = &labels[0];
        return Err(bad(format!(
            "{} belongs to pool {} ({}), {} to pool {} ({})",
            dev_of(*m),
            l.pool_name,
            crate::uuid_string(&l.pool_uuid),
            dev_of(*m0),
            l0.pool_name,
            crate::uuid_string(&l0.pool_uuid)
        )));
    }
    let count = labels[0].0.member_count as usize;
    if let Some((l, m)) = labels
        .iter()
        .find(|(l, _)| l.member_count as usize != count)
    {
        return Err(bad(format!(
            "{} says the pool has {} members, {} says {count}",
            dev_of(*m),
            l.member_count,
            dev_of(labels[0].1)
        )));
    }
    labels.sort_by_key(|(l, _)| l.member_index);
    for w in labels.windows(2) {
        if w[0].0.member_index == w[1].0.member_index {
            let (a, b) = (dev_of(w[0].1), dev_of(w[1].1));
            let what = if Arc::ptr_eq(&disks.members[w[0].1].dev, &disks.members[w[1].1].dev) {
                format!("device {a} is given twice")
            } else {
                format!("{a} and {b} both carry member {}", w[0].0.member_index)
            };
            return Err(bad(what));
        }
    }
    let have: BTreeSet<u32> = labels.iter().map(|(l, _)| l.member_index).collect();
    if let Some((l, m)) = labels
        .iter()
        .find(|(l, _)| l.member_index as usize >= count)
    {
        return Err(bad(format!(
            "{} carries member index {} of a {count}-member pool",
            dev_of(*m),
            l.member_index
        )));
    }
    let missing: Vec<u32> = (0..count as u32).filter(|i| !have.contains(i)).collect();
    if !missing.is_empty() {
        let given: Vec<String> = labels
            .iter()
            .map(|(l, m)| format!("{} is member {}", dev_of(*m), l.member_index))
            .collect();
        return Err(bad(format!(
            "member(s) {missing:?} of {count} missing ({})",
            given.join(", ")
        )));
    }
    // Reorder the member channels to label order.
    let order: Vec<usize> = labels.iter().map(|(_, m)| *m).collect();
    let mut slots: Vec<Option<crate::disk::Member>> = disks.members.drain(..).map(Some).collect();
    for m in order {
        disks
            .members
            .push(slots[m].take().expect("each member once"));
    }
    let labels: Vec<MemberLabel> = labels.into_iter().map(|(l, _)| l).collect();
    let total: u64 = labels.iter().map(|l| l.data_clusters).sum();
    let loaded = Store::load(disks, &labels[0], total).await?;
    let st = &loaded.state;
    if st.total_clusters != total || st.cluster_size != labels[0].cluster_size {
        return Err(VolumeError::Metadata {
            pool,
            reason: format!(
                "state has {} clusters of {}, labels say {total} of {}",
                st.total_clusters, st.cluster_size, labels[0].cluster_size
            ),
        });
    }
    let errors = st.check();
    if !errors.is_empty() {
        return Err(VolumeError::Inconsistent { pool, errors });
    }
    Ok((labels, loaded.state, loaded.store))
}
