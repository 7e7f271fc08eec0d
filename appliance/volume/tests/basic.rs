//! End-to-end behaviour of pools and volumes through real channels.

mod common;

use std::sync::Arc;

use common::*;
use ferrite_bdev::{BdevError, BlockDevice, IoKind};
use ferrite_volume::{Pool, PoolOptions, Provisioning, VolumeError, VolumeKind};

#[test]
fn thin_write_read_snapshot_clone_reopen() {
    let (pool, dev) = small_pool("p1", 32);
    let v = pool
        .create_volume("v", 1 << 20, Provisioning::Thin)
        .expect("volume");
    assert_eq!(v.name(), "p1/v");
    assert!(v.capabilities().thin_provisioned && v.capabilities().copy);
    let mut ch = v.open_channel(&[]).expect("channel");
    assert_eq!(
        read(&mut *ch, 0, 8).expect("read"),
        vec![0; 4096],
        "unallocated reads zero"
    );
    let a = pattern(1, 8192);
    write(&mut *ch, 100, &a).expect("write faults and allocates");
    assert_eq!(read(&mut *ch, 100, 16).expect("read"), a);
    // Across a cluster boundary (cluster = 128 blocks).
    let b = pattern(2, 4096);
    write(&mut *ch, 124, &b).expect("spanning write");
    assert_eq!(read(&mut *ch, 124, 8).expect("read"), b);
    let s = pool.snapshot("v", "s").expect("snapshot");
    assert!(s.capabilities().read_only);
    let c = pattern(3, 4096);
    write(&mut *ch, 124, &c).expect("copy-on-write");
    let mut sch = s.open_channel(&[]).expect("snap channel");
    assert_eq!(
        read(&mut *sch, 124, 8).expect("snap read"),
        b,
        "snapshot keeps old data"
    );
    assert!(matches!(write(&mut *sch, 0, &c), Err(BdevError::ReadOnly)));
    assert!(v.stats().cow_copies >= 1);
    let cl = pool.clone_snapshot("s", "c").expect("clone");
    let mut cch = cl.open_channel(&[]).expect("clone channel");
    assert_eq!(read(&mut *cch, 124, 8).expect("clone read"), b);
    write(&mut *cch, 0, &c[..512]).expect("clone write");
    assert_eq!(cl.info().parent.as_deref(), Some("s"));
    assert_eq!(s.info().clones, vec!["c".to_string()]);
    assert_clean(&pool);
    drop((ch, sch, cch));
    pool.close().expect("close");
    assert!(matches!(v.open_channel(&[]), Err(BdevError::NotReady(_))));
    drop(pool);
    let pool = Pool::open(vec![dev]).expect("reopen");
    assert_clean(&pool);
    let v = pool.volume("v").expect("v back");
    let mut ch = v.open_channel(&[]).expect("channel");
    assert_eq!(read(&mut *ch, 124, 8).expect("read"), c);
    assert_eq!(read(&mut *ch, 100, 8).expect("read")[..], a[..4096]);
    let c2 = pool.volume("c").expect("clone back");
    assert_eq!(c2.info().kind, VolumeKind::Clone);
    drop(ch);
    pool.close().expect("close");
}

#[test]
fn unmap_write_zeroes_copy_and_resize() {
    let (pool, _dev) = small_pool("p2", 32);
    let v = pool
        .create_volume("v", 1 << 20, Provisioning::Thin)
        .expect("volume");
    let mut ch = v.open_channel(&[]).expect("channel");
    let a = pattern(5, 128 * 512);
    write(&mut *ch, 0, &a).expect("fill cluster 0");
    let before = pool.info().allocated_clusters;
    // Whole-cluster copy: metadata remap, shares the cluster.
    other(
        &mut *ch,
        IoKind::Copy {
            src_lba: 0,
            dst_lba: 256,
            blocks: 128,
        },
    )
    .expect("copy");
    assert_eq!(pool.info().allocated_clusters, before);
    assert_eq!(pool.info().shared_clusters, 1);
    assert_eq!(read(&mut *ch, 256, 128).expect("read"), a);
    // Writing either side copies first.
    write(&mut *ch, 0, &pattern(6, 512)).expect("cow");
    assert_eq!(read(&mut *ch, 256, 1).expect("read"), a[..512]);
    // Partial copy (emulated or offloaded) and partial write-zeroes.
    other(
        &mut *ch,
        IoKind::Copy {
            src_lba: 10,
            dst_lba: 300,
            blocks: 20,
        },
    )
    .expect("partial copy");
    assert_eq!(
        read(&mut *ch, 300, 20).expect("read"),
        a[10 * 512..30 * 512]
    );
    other(
        &mut *ch,
        IoKind::WriteZeroes {
            lba: 260,
            blocks: 4,
        },
    )
    .expect("wz");
    assert_eq!(read(&mut *ch, 260, 4).expect("read"), vec![0; 2048]);
    // Whole-cluster unmap frees it in metadata.
    other(
        &mut *ch,
        IoKind::Unmap {
            lba: 0,
            blocks: 128,
        },
    )
    .expect("unmap");
    assert_eq!(read(&mut *ch, 0, 128).expect("read"), vec![0; 128 * 512]);
    assert!(v.stats().metadata_ops >= 2);
    // Shrink refused while data lies beyond; forced works; grow.
    assert!(matches!(
        pool.resize_volume("v", 128 * 512, false),
        Err(VolumeError::HasData { .. })
    ));
    pool.resize_volume("v", 2 << 20, false).expect("grow");
    assert_eq!(v.num_blocks(), 4096);
    pool.resize_volume("v", 128 * 512, true)
        .expect("forced shrink");
    assert_eq!(v.num_blocks(), 128);
    assert!(matches!(
        read(&mut *ch, 200, 1),
        Err(BdevError::OutOfRange { .. })
    ));
    assert_clean(&pool);
    drop(ch);
}

#[test]
fn refusals_name_things() {
    let dev = malloc("r-m0", 32);
    let pool = Pool::create(
        "r",
        vec![Arc::clone(&dev)],
        PoolOptions {
            cluster_size: CLUSTER,
        },
    )
    .expect("pool");
    match Pool::create("r2", vec![Arc::clone(&dev)], PoolOptions::default()) {
        Err(VolumeError::InUse { pool, .. }) => assert_eq!(pool, "r"),
        other => panic!("expected InUse, got {other:?}"),
    }
    let tiny = malloc("tiny", 1);
    assert!(matches!(
        Pool::create(
            "t",
            vec![tiny],
            PoolOptions {
                cluster_size: 1 << 20
            }
        ),
        Err(VolumeError::TooSmall { .. })
    ));
    assert!(Pool::probe(&*dev).expect("probe").is_some());
    assert!(Pool::probe(&*malloc("blank", 1)).expect("probe").is_none());
    pool.create_volume("a", 1 << 20, Provisioning::Thin)
        .expect("a");
    assert!(matches!(
        pool.create_volume("a", 1 << 20, Provisioning::Thin),
        Err(VolumeError::Exists(_))
    ));
    assert!(matches!(
        pool.create_volume("b/c", 1 << 20, Provisioning::Thin),
        Err(VolumeError::InvalidName { .. })
    ));
    assert!(matches!(
        pool.create_volume("b", 1000, Provisioning::Thin),
        Err(VolumeError::InvalidSize { .. })
    ));
    assert!(matches!(
        pool.clone_snapshot("a", "x"),
        Err(VolumeError::NotASnapshot(_))
    ));
    assert!(matches!(
        pool.delete_volume("zz"),
        Err(VolumeError::NoSuchVolume(_))
    ));
    assert!(matches!(
        pool.create_volume("big", 1 << 30, Provisioning::Thick),
        Err(VolumeError::PoolFull { .. })
    ));
    let t = pool
        .create_volume("thick", 1 << 20, Provisioning::Thick)
        .expect("thick");
    assert_eq!(t.info().allocated_bytes, 1 << 20);
    assert!(matches!(
        pool.destroy(false),
        Err(VolumeError::NotEmpty { .. })
    ));
    pool.destroy(true).expect("destroy");
    assert!(Pool::probe(&*dev).expect("probe").is_none());
}

#[test]
fn damaged_labels_are_refused_without_writing() {
    let dev = malloc("d-m0", 32);
    let pool = Pool::create(
        "d",
        vec![Arc::clone(&dev)],
        PoolOptions {
            cluster_size: CLUSTER,
        },
    )
    .expect("pool");
    pool.close().expect("close");
    drop(pool);
    let mut ch = dev.open_channel(&[]).expect("raw channel");
    let mut label = read(&mut *ch, 0, 8).expect("label");
    label[300] ^= 0xff;
    write(&mut *ch, 0, &label).expect("corrupt");
    match Pool::open(vec![Arc::clone(&dev)]) {
        Err(VolumeError::DamagedLabel { reason, .. }) => {
            assert!(reason.contains("checksum"), "{reason}")
        }
        other => panic!("expected DamagedLabel, got {other:?}"),
    }
    assert!(Pool::probe(&*dev).is_err());
    match Pool::open(vec![malloc("blank2", 8)]) {
        Err(VolumeError::DamagedLabel { reason, .. }) => {
            assert!(reason.contains("not a pool member"))
        }
        other => panic!("expected DamagedLabel, got {other:?}"),
    }
}
