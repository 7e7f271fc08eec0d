//! Property test: random operations through real channels against an in-memory model of every
//! volume's bytes; `pool.check()` clean after each case (and after every reopen).

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use common::*;
use ferrite_bdev::{BlockDevice, IoChannel, IoKind};
use ferrite_volume::{Pool, Provisioning, VolumeKind};
use proptest::prelude::*;

const VOL_BLOCKS: u64 = 640; // 5 clusters of 128 blocks

#[derive(Debug, Clone)]
enum Step {
    Write {
        vol: u8,
        lba: u64,
        blocks: u64,
        seed: u64,
    },
    Read {
        vol: u8,
        lba: u64,
        blocks: u64,
    },
    Zero {
        vol: u8,
        lba: u64,
        blocks: u64,
        unmap: bool,
    },
    Copy {
        vol: u8,
        src: u64,
        dst: u64,
        blocks: u64,
    },
    Snapshot {
        vol: u8,
    },
    Clone {
        snap: u8,
    },
    Resize {
        vol: u8,
        clusters: u64,
    },
    Revert {
        vol: u8,
        snap: u8,
    },
    Inflate {
        vol: u8,
    },
    Delete {
        vol: u8,
    },
    Reopen,
}

fn step() -> impl Strategy<Value = Step> {
    let lba = 0..VOL_BLOCKS;
    prop_oneof![
        6 => (any::<u8>(), lba.clone(), 1..300u64, any::<u64>()).prop_map(|(vol, lba, blocks, seed)| Step::Write { vol, lba, blocks, seed }),
        3 => (any::<u8>(), lba.clone(), 1..300u64).prop_map(|(vol, lba, blocks)| Step::Read { vol, lba, blocks }),
        2 => (any::<u8>(), lba.clone(), 1..300u64, any::<bool>()).prop_map(|(vol, lba, blocks, unmap)| Step::Zero { vol, lba, blocks, unmap }),
        2 => (any::<u8>(), lba.clone(), lba.clone(), 1..300u64).prop_map(|(vol, src, dst, blocks)| Step::Copy { vol, src, dst, blocks }),
        2 => any::<u8>().prop_map(|vol| Step::Snapshot { vol }),
        1 => any::<u8>().prop_map(|snap| Step::Clone { snap }),
        1 => (any::<u8>(), 1..8u64).prop_map(|(vol, clusters)| Step::Resize { vol, clusters }),
        1 => (any::<u8>(), any::<u8>()).prop_map(|(vol, snap)| Step::Revert { vol, snap }),
        1 => any::<u8>().prop_map(|vol| Step::Inflate { vol }),
        1 => any::<u8>().prop_map(|vol| Step::Delete { vol }),
        1 => Just(Step::Reopen),
    ]
}

struct Model {
    images: HashMap<String, Vec<u8>>,
    kinds: HashMap<String, VolumeKind>,
    next: u32,
}

impl Model {
    fn names(&self, want: impl Fn(VolumeKind) -> bool) -> Vec<String> {
        let mut v: Vec<String> = self
            .kinds
            .iter()
            .filter(|(_, k)| want(**k))
            .map(|(n, _)| n.clone())
            .collect();
        v.sort();
        v
    }

    fn pick(&self, i: u8, want: impl Fn(VolumeKind) -> bool) -> Option<String> {
        let v = self.names(want);
        (!v.is_empty()).then(|| v[i as usize % v.len()].clone())
    }
}

fn channel(pool: &Pool, name: &str) -> Box<dyn IoChannel> {
    pool.volume(name)
        .expect("volume exists")
        .open_channel(&[])
        .expect("channel")
}

/// `members` MiB sizes: one member, or several (reopened with the members in reverse order).
fn run_case(steps: Vec<Step>, members: &[u64]) -> Result<(), TestCaseError> {
    let mut devs: Vec<Arc<dyn BlockDevice>> = members
        .iter()
        .enumerate()
        .map(|(i, &mib)| malloc(&format!("model-m{i}"), mib))
        .collect();
    let mut pool = Pool::create(
        "model",
        devs.clone(),
        ferrite_volume::PoolOptions {
            cluster_size: CLUSTER,
        },
    )
    .expect("pool");
    let bs = BS as usize;
    let mut m = Model {
        images: HashMap::new(),
        kinds: HashMap::new(),
        next: 0,
    };
    pool.create_volume("v0", VOL_BLOCKS * 512, Provisioning::Thin)
        .expect("v0");
    m.images
        .insert("v0".into(), vec![0; VOL_BLOCKS as usize * bs]);
    m.kinds.insert("v0".into(), VolumeKind::Volume);
    let writable = |k: VolumeKind| k != VolumeKind::Snapshot;
    for st in steps {
        match st {
            Step::Write {
                vol,
                lba,
                blocks,
                seed,
            } => {
                let Some(n) = m.pick(vol, writable) else {
                    continue;
                };
                let img = m.images.get_mut(&n).expect("image");
                let total = (img.len() / bs) as u64;
                let (lba, blocks) = (lba % total, blocks.min(total - lba % total));
                let data = pattern(seed, blocks as usize * bs);
                let mut ch = channel(&pool, &n);
                match write(&mut *ch, lba, &data) {
                    Ok(()) => img[lba as usize * bs..][..data.len()].copy_from_slice(&data),
                    Err(ferrite_bdev::BdevError::NoSpace) => {}
                    Err(e) => {
                        return Err(TestCaseError::fail(format!(
                            "write {n} {lba}+{blocks}: {e}"
                        )))
                    }
                }
            }
            Step::Read { vol, lba, blocks } => {
                let Some(n) = m.pick(vol, |_| true) else {
                    continue;
                };
                let img = &m.images[&n];
                let total = (img.len() / bs) as u64;
                let (lba, blocks) = (lba % total, blocks.min(total - lba % total));
                let mut ch = channel(&pool, &n);
                let got = read(&mut *ch, lba, blocks as u32)
                    .map_err(|e| TestCaseError::fail(format!("read: {e}")))?;
                prop_assert!(
                    got == img[lba as usize * bs..][..blocks as usize * bs],
                    "read {} {}+{} differs",
                    n,
                    lba,
                    blocks
                );
            }
            Step::Zero {
                vol,
                lba,
                blocks,
                unmap,
            } => {
                let Some(n) = m.pick(vol, writable) else {
                    continue;
                };
                let img = m.images.get_mut(&n).expect("image");
                let total = (img.len() / bs) as u64;
                let (lba, blocks) = (lba % total, blocks.min(total - lba % total));
                let kind = if unmap {
                    IoKind::Unmap { lba, blocks }
                } else {
                    IoKind::WriteZeroes { lba, blocks }
                };
                let mut ch = channel(&pool, &n);
                match other(&mut *ch, kind) {
                    Ok(()) => img[lba as usize * bs..][..blocks as usize * bs].fill(0),
                    Err(ferrite_bdev::BdevError::NoSpace) => {}
                    Err(e) => return Err(TestCaseError::fail(format!("zero: {e}"))),
                }
            }
            Step::Copy {
                vol,
                src,
                dst,
                blocks,
            } => {
                let Some(n) = m.pick(vol, writable) else {
                    continue;
                };
                let img = m.images.get_mut(&n).expect("image");
                let total = (img.len() / bs) as u64;
                let (src, dst) = (src % total, dst % total);
                let blocks = blocks.min(total - src).min(total - dst);
                // Overlapping copies are undefined: skip them.
                if src < dst + blocks && dst < src + blocks {
                    continue;
                }
                let mut ch = channel(&pool, &n);
                match other(
                    &mut *ch,
                    IoKind::Copy {
                        src_lba: src,
                        dst_lba: dst,
                        blocks,
                    },
                ) {
                    Ok(()) => {
                        let s = img[src as usize * bs..][..blocks as usize * bs].to_vec();
                        img[dst as usize * bs..][..s.len()].copy_from_slice(&s);
                    }
                    Err(ferrite_bdev::BdevError::NoSpace) => {}
                    Err(e) => return Err(TestCaseError::fail(format!("copy: {e}"))),
                }
            }
            Step::Snapshot { vol } => {
                let Some(n) = m.pick(vol, writable) else {
                    continue;
                };
                m.next += 1;
                let s = format!("s{}", m.next);
                if pool.snapshot(&n, &s).is_ok() {
                    let img = m.images[&n].clone();
                    m.images.insert(s.clone(), img);
                    m.kinds.insert(s, VolumeKind::Snapshot);
                }
            }
            Step::Clone { snap } => {
                let Some(s) = m.pick(snap, |k| k == VolumeKind::Snapshot) else {
                    continue;
                };
                m.next += 1;
                let c = format!("c{}", m.next);
                pool.clone_snapshot(&s, &c).expect("clone");
                let img = m.images[&s].clone();
                m.images.insert(c.clone(), img);
                m.kinds.insert(c, VolumeKind::Clone);
            }
            Step::Resize { vol, clusters } => {
                let Some(n) = m.pick(vol, writable) else {
                    continue;
                };
                let size = clusters * CLUSTER;
                pool.resize_volume(&n, size, true).expect("resize");
                m.images
                    .get_mut(&n)
                    .expect("image")
                    .resize(size as usize, 0);
            }
            Step::Revert { vol, snap } => {
                let (Some(n), Some(s)) = (
                    m.pick(vol, writable),
                    m.pick(snap, |k| k == VolumeKind::Snapshot),
                ) else {
                    continue;
                };
                pool.revert_volume(&n, &s).expect("revert");
                let img = m.images[&s].clone();
                m.images.insert(n, img);
            }
            Step::Inflate { vol } => {
                let Some(n) = m.pick(vol, |k| k == VolumeKind::Clone) else {
                    continue;
                };
                if pool.volume(&n).expect("exists").info().kind != VolumeKind::Clone {
                    continue;
                }
                match pool.inflate_volume(&n) {
                    Ok(()) | Err(ferrite_volume::VolumeError::PoolFull { .. }) => {}
                    Err(e) => return Err(TestCaseError::fail(format!("inflate: {e}"))),
                }
            }
            Step::Delete { vol } => {
                let Some(n) = m.pick(vol, |_| true) else {
                    continue;
                };
                pool.delete_volume(&n).expect("delete");
                m.images.remove(&n);
                m.kinds.remove(&n);
            }
            Step::Reopen => {
                pool.close().expect("close");
                drop(pool);
                devs.reverse();
                pool = Pool::open(devs.clone()).expect("reopen");
                let r = pool.check().expect("check");
                prop_assert!(r.errors.is_empty(), "after reopen: {:?}", r.errors);
            }
        }
    }
    let r = pool.check().expect("check");
    prop_assert!(r.errors.is_empty(), "check: {:?}", r.errors);
    // Every image reads back whole.
    for (n, img) in &m.images {
        let mut ch = channel(&pool, n);
        let v = pool.volume(n).expect("volume");
        prop_assert_eq!(v.num_blocks() as usize * bs, img.len());
        for (i, chunk) in img.chunks(128 * bs).enumerate() {
            let got = read(&mut *ch, i as u64 * 128, (chunk.len() / bs) as u32)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert!(got == chunk, "final read of {} cluster {} differs", n, i);
        }
    }
    pool.close().expect("close");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn volumes_match_the_model(steps in proptest::collection::vec(step(), 1..40)) {
        run_case(steps, &[24])?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    /// The same model on a two-member pool (mixed sizes): allocations alternate members.
    #[test]
    fn two_member_pool_matches_the_model(steps in proptest::collection::vec(step(), 1..40)) {
        run_case(steps, &[14, 8])?;
    }
}
