//! Crash replay: drop the pool without `close` (the owner stops with no checkpoint), damage the
//! log tail, reopen, and find every acknowledged and flushed write; `check()` clean. Also the
//! pool-full behaviour.

mod common;

use std::sync::Arc;

use common::*;
use ferrite_bdev::{BdevError, BlockDevice, FileBdev, IoKind};
use ferrite_volume::{Pool, PoolEvent, PoolOptions, Provisioning};

fn file_pool(dir: &std::path::Path) -> (Arc<Pool>, Arc<dyn BlockDevice>) {
    let dev: Arc<dyn BlockDevice> =
        Arc::new(FileBdev::create("f0", &dir.join("m0.img"), 32 << 20, BS).expect("file bdev"));
    let pool = Pool::create(
        "fp",
        vec![Arc::clone(&dev)],
        PoolOptions {
            cluster_size: CLUSTER,
        },
    )
    .expect("pool");
    (pool, dev)
}

#[test]
fn acknowledged_writes_survive_a_crash() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (pool, dev) = file_pool(dir.path());
    let v = pool
        .create_volume("v", 2 << 20, Provisioning::Thin)
        .expect("volume");
    let mut ch = v.open_channel(&[]).expect("channel");
    let mut expect = Vec::new();
    for i in 0..12u64 {
        let data = pattern(i, 4096);
        let lba = i * 300 % 4000;
        write(&mut *ch, lba, &data).expect("write");
        expect.push((lba, data));
        if i == 5 {
            pool.snapshot("v", "s").expect("snapshot");
        }
    }
    other(&mut *ch, IoKind::Flush).expect("flush");
    drop(ch);
    drop(v);
    drop(pool); // crash: no checkpoint
    let pool = Pool::open(vec![Arc::clone(&dev)]).expect("replay");
    assert_clean(&pool);
    let v = pool.volume("v").expect("v");
    let mut ch = v.open_channel(&[]).expect("channel");
    let mut model = vec![0u8; 2 << 20];
    for (lba, data) in &expect {
        model[*lba as usize * 512..][..data.len()].copy_from_slice(data);
    }
    assert_eq!(read(&mut *ch, 0, 4096).expect("read all"), model);
    assert!(pool.volume("s").is_some(), "the snapshot was logged");
    drop(ch);
    drop(pool);
}

#[test]
fn torn_log_tail_is_ignored() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (pool, dev) = file_pool(dir.path());
    let label = Pool::probe(&*dev).expect("probe").expect("member");
    let v = pool
        .create_volume("v", 1 << 20, Provisioning::Thin)
        .expect("volume");
    let mut ch = v.open_channel(&[]).expect("channel");
    write(&mut *ch, 0, &pattern(1, 512)).expect("first write");
    drop(ch);
    drop(v);
    drop(pool);
    // Garbage after the last record (a torn write of the next one) and a stale record copy.
    let mut raw = dev.open_channel(&[]).expect("raw channel");
    let log_lba = label.log_offset / 512;
    let mut found = None;
    for blk in 0..64u64 {
        let b = read(&mut *raw, log_lba + blk * 8, 8).expect("log block");
        if &b[0..4] != b"FVLG" {
            found = Some(blk);
            break;
        }
    }
    let end = found.expect("end of log within 64 blocks");
    let mut garbage = b"FVLG".to_vec();
    garbage.extend(pattern(9, 4092));
    write(&mut *raw, log_lba + end * 8, &garbage).expect("torn tail");
    drop(raw);
    let pool = Pool::open(vec![Arc::clone(&dev)]).expect("open with torn tail");
    assert_clean(&pool);
    let v = pool.volume("v").expect("v");
    let mut ch = v.open_channel(&[]).expect("channel");
    assert_eq!(read(&mut *ch, 0, 1).expect("read"), pattern(1, 512));
    // New records overwrite the torn tail and replay again.
    write(&mut *ch, 200, &pattern(2, 512)).expect("write after recovery");
    drop(ch);
    drop(v);
    drop(pool);
    let pool = Pool::open(vec![dev]).expect("reopen");
    assert_clean(&pool);
    let mut ch = pool
        .volume("v")
        .expect("v")
        .open_channel(&[])
        .expect("channel");
    assert_eq!(read(&mut *ch, 200, 1).expect("read"), pattern(2, 512));
}

#[test]
fn many_records_checkpoint_and_replay() {
    let (pool, dev) = small_pool("cp", 48);
    let v = pool
        .create_volume("v", 16 << 20, Provisioning::Thin)
        .expect("volume");
    let mut ch = v.open_channel(&[]).expect("channel");
    // Each first write of a cluster is one log record; 2 MiB of log holds ~500.
    for c in 0..256u64 {
        write(&mut *ch, c * 128, &pattern(c, 512)).expect("write");
        if c % 64 == 63 {
            other(
                &mut *ch,
                IoKind::Unmap {
                    lba: (c - 1) * 128,
                    blocks: 128,
                },
            )
            .expect("unmap");
        }
    }
    drop(ch);
    drop(v);
    let seq = pool.info().log_seq;
    assert!(seq > 256);
    drop(pool);
    let pool = Pool::open(vec![dev]).expect("replay");
    assert_clean(&pool);
    let mut ch = pool
        .volume("v")
        .expect("v")
        .open_channel(&[])
        .expect("channel");
    for c in 0..256u64 {
        let want = if c % 64 == 62 {
            vec![0; 512]
        } else {
            pattern(c, 512)
        };
        assert_eq!(
            read(&mut *ch, c * 128, 1).expect("read"),
            want,
            "cluster {c}"
        );
    }
}

#[test]
fn pool_full_then_space_freed() {
    let (pool, _dev) = small_pool("full", 12);
    pool.set_space_warning(50);
    let total = pool.info().total_clusters;
    let keep = pool
        .create_volume("keep", 2 * CLUSTER, Provisioning::Thin)
        .expect("keep");
    let mut kch = keep.open_channel(&[]).expect("channel");
    write(&mut *kch, 0, &pattern(77, 4096)).expect("keep data");
    let big = pool
        .create_volume("big", 4 * total * CLUSTER, Provisioning::Thin)
        .expect("overcommitted");
    assert!(pool.info().overcommit_ratio > 1.0);
    let mut ch = big.open_channel(&[]).expect("channel");
    let mut written = 0;
    let err = loop {
        match write(&mut *ch, written * 128, &pattern(written, 512)) {
            Ok(()) => written += 1,
            Err(e) => break e,
        }
    };
    assert!(matches!(err, BdevError::NoSpace), "{err:?}");
    let events = pool.take_events();
    assert!(
        events
            .iter()
            .any(|e| matches!(e, PoolEvent::SpaceWarning { .. })),
        "{events:?}"
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, PoolEvent::PoolFull { .. })),
        "{events:?}"
    );
    // Already-allocated clusters still take writes; other volumes are intact.
    write(&mut *ch, 0, &pattern(5, 512)).expect("overwrite allocated");
    assert_eq!(read(&mut *kch, 0, 8).expect("read"), pattern(77, 4096));
    // Free space by deleting a snapshot that pinned overwritten clusters, then a volume.
    pool.snapshot("keep", "ks").expect("snapshot");
    assert!(matches!(
        write(&mut *kch, 0, &pattern(78, 512)),
        Err(BdevError::NoSpace)
    ));
    pool.delete_volume("ks").expect("delete snapshot");
    write(&mut *kch, 0, &pattern(78, 512)).expect("exclusive again after the snapshot went");
    drop(kch);
    drop(keep);
    pool.delete_volume("keep").expect("delete volume");
    write(&mut *ch, written * 128, &pattern(1, 512)).expect("space again");
    assert_clean(&pool);
}
