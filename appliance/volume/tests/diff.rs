//! `Pool::diff`: the extents an incremental backup reads, checked against the data itself.

mod common;

use common::*;
use ferrite_bdev::{BlockDevice, IoKind};
use ferrite_volume::{ChangedExtent, Provisioning, VolumeError};

/// Blocks per cluster (64 KiB clusters of 512-byte blocks).
const CB: u64 = CLUSTER / BS as u64;

fn ext(vc: u64, clusters: u64, zero: bool) -> ChangedExtent {
    ChangedExtent {
        lba: vc * CB,
        blocks: clusters * CB,
        zero,
    }
}

fn cluster(seed: u64) -> Vec<u8> {
    pattern(seed, CLUSTER as usize)
}

#[test]
fn diff_lists_exactly_the_clusters_that_changed() {
    let (pool, _dev) = small_pool("pd", 32);
    let v = pool
        .create_volume("v", 16 * CLUSTER, Provisioning::Thin)
        .expect("volume");
    let mut ch = v.open_channel(&[]).expect("channel");
    for vc in [0, 1, 2, 5] {
        write(&mut *ch, vc * CB, &cluster(vc)).expect("write");
    }
    let s1 = pool.snapshot("v", "s1").expect("s1");
    write(&mut *ch, CB, &cluster(11)).expect("copy-on-write");
    write(&mut *ch, 7 * CB, &cluster(17)).expect("new cluster");
    other(
        &mut *ch,
        IoKind::Unmap {
            lba: 5 * CB,
            blocks: CB,
        },
    )
    .expect("deallocate");
    let s2 = pool.snapshot("v", "s2").expect("s2");
    let d = pool.diff("s1", "s2").expect("diff");
    assert_eq!(
        d.extents,
        vec![ext(1, 1, false), ext(5, 1, true), ext(7, 1, false)]
    );
    assert_eq!(
        (d.changed_bytes, d.zero_bytes, d.size_bytes),
        (2 * CLUSTER, CLUSTER, 16 * CLUSTER)
    );

    // Oracle: every cluster outside the diff reads the same in both snapshots.
    let mut c1 = s1.open_channel(&[]).expect("s1 channel");
    let mut c2 = s2.open_channel(&[]).expect("s2 channel");
    for vc in 0..16 {
        let a = read(&mut *c1, vc * CB, CB as u32).expect("read s1");
        let b = read(&mut *c2, vc * CB, CB as u32).expect("read s2");
        let listed = d
            .extents
            .iter()
            .any(|e| (e.lba..e.lba + e.blocks).contains(&(vc * CB)));
        assert_eq!(a != b, listed, "cluster {vc}");
    }

    // Against the live volume: its writes since s2, and since s1 (runs merge).
    write(&mut *ch, 2 * CB, &cluster(22)).expect("write");
    assert_eq!(
        pool.diff("s2", "v").expect("diff").extents,
        vec![ext(2, 1, false)]
    );
    assert_eq!(
        pool.diff("s1", "v").expect("diff").extents,
        vec![ext(1, 2, false), ext(5, 1, true), ext(7, 1, false)]
    );
    assert!(pool.diff("s2", "s2").expect("diff").extents.is_empty());

    // A grown volume: the new clusters past the base's end read zero until written.
    drop(ch);
    pool.resize_volume("v", 18 * CLUSTER, false).expect("grow");
    let d = pool.diff("s2", "v").expect("diff");
    assert_eq!(
        d.extents,
        vec![ext(2, 1, false), ext(16, 2, true)],
        "past the base's end"
    );

    assert!(matches!(
        pool.diff("v", "s1"),
        Err(VolumeError::NotASnapshot(_))
    ));
    assert!(matches!(
        pool.diff("nope", "v"),
        Err(VolumeError::NoSuchVolume(_))
    ));
    assert_clean(&pool);
}
