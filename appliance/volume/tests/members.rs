//! Pools over several members: allocations spread over all of them, data found on the member
//! devices themselves, reopen with the members in another order, refusal of incomplete or
//! mixed member sets, and crash replay on a multi-member file pool.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::*;
use ferrite_bdev::{BlockDevice, IoKind};
use ferrite_volume::{Pool, PoolInfo, Provisioning, VolumeError};

const CB: u64 = CLUSTER / BS as u64;

/// The tag written at the start of virtual cluster `vc` (one block, recognisable on a member).
fn tag(vc: u64) -> Vec<u8> {
    let mut b = pattern(1000 + vc, BS as usize);
    b[..8].copy_from_slice(b"VCLUSTER");
    b[8..16].copy_from_slice(&vc.to_le_bytes());
    b
}

/// Scans every data cluster of every member; returns vc -> member index for each tag found.
fn find_tags(info: &PoolInfo, devs: &BTreeMap<String, Arc<dyn BlockDevice>>) -> BTreeMap<u64, u32> {
    let mut found = BTreeMap::new();
    for m in &info.members {
        let dev = &devs[&m.device];
        for c in 0..m.clusters {
            let lba = (m.data_start + c * CLUSTER) / u64::from(BS);
            let b = raw_read(&**dev, lba, 1);
            if &b[..8] == b"VCLUSTER" {
                let vc = u64::from_le_bytes(b[8..16].try_into().expect("8 bytes"));
                assert_eq!(b, tag(vc), "tag of vc {vc} on {} intact", m.device);
                assert!(
                    found.insert(vc, m.index).is_none(),
                    "vc {vc} found twice (second on {})",
                    m.device
                );
            }
        }
    }
    found
}

fn by_name(devs: &[Arc<dyn BlockDevice>]) -> BTreeMap<String, Arc<dyn BlockDevice>> {
    devs.iter()
        .map(|d| (d.name().to_owned(), Arc::clone(d)))
        .collect()
}

/// Writes tags to `vcs` clusters of a new volume and checks where they landed.
fn spread_and_reopen(name: &str, devs: Vec<Arc<dyn BlockDevice>>) {
    let n = devs.len();
    let pool = pool_over(name, &devs);
    let info = pool.info();
    assert_eq!(info.members.len(), n);
    assert_eq!(
        info.members.iter().map(|m| m.clusters).sum::<u64>(),
        info.total_clusters
    );
    let vcs = 4 * n as u64 + 1;
    let v = pool
        .create_volume("v", 64 * CLUSTER, Provisioning::Thin)
        .expect("volume");
    let mut ch = v.open_channel(&[]).expect("channel");
    for vc in 0..vcs {
        write(&mut *ch, vc * 2 * CB, &tag(vc)).expect("tag write");
    }
    // One spanning write across a cluster boundary: two new clusters.
    let span = pattern(7, 8 * BS as usize);
    write(&mut *ch, (2 * vcs) * CB - 4, &span).expect("spanning write");
    other(&mut *ch, IoKind::Flush).expect("flush");
    let info = pool.info();
    assert_eq!(
        info.allocated_clusters,
        vcs + 2,
        "one per tag, two for the spanning write"
    );
    assert_eq!(
        info.members
            .iter()
            .map(|m| m.allocated_clusters)
            .sum::<u64>(),
        info.allocated_clusters
    );
    for m in &info.members {
        assert!(
            m.allocated_clusters >= vcs / n as u64,
            "member {} holds {} clusters: {info:?}",
            m.device,
            m.allocated_clusters
        );
        assert_eq!(m.allocated_clusters + m.free_clusters, m.clusters);
    }
    let found = find_tags(&info, &by_name(&devs));
    assert_eq!(found.len() as u64, vcs, "every tag on exactly one member");
    for i in 0..n as u32 {
        assert!(found.values().any(|&m| m == i), "member {i} holds data");
    }
    drop(ch);
    drop(v);
    pool.close().expect("close");
    drop(pool);

    // Reopen with the members in another order (reversed, then rotated).
    for order in [
        devs.iter().rev().cloned().collect::<Vec<_>>(),
        devs[1..].iter().chain(&devs[..1]).cloned().collect(),
    ] {
        let pool = Pool::open(order).expect("reopen in another order");
        assert_clean(&pool);
        let info = pool.info();
        for (i, m) in info.members.iter().enumerate() {
            assert_eq!(m.index as usize, i);
            assert_eq!(m.device, devs[i].name(), "members back in label order");
        }
        let mut ch = pool
            .volume("v")
            .expect("v")
            .open_channel(&[])
            .expect("channel");
        for vc in 0..vcs {
            assert_eq!(read(&mut *ch, vc * 2 * CB, 1).expect("read"), tag(vc));
            assert_eq!(
                read(&mut *ch, vc * 2 * CB + 1, 1).expect("read"),
                vec![0; BS as usize],
                "rest of the cluster zero"
            );
        }
        assert_eq!(read(&mut *ch, (2 * vcs) * CB - 4, 8).expect("read"), span);
        // Allocation continues after a reopen.
        write(&mut *ch, (2 * vcs + 2) * CB, &pattern(9, 512)).expect("write after reopen");
        assert_eq!(
            read(&mut *ch, (2 * vcs + 2) * CB, 1).expect("read"),
            pattern(9, 512)
        );
        other(
            &mut *ch,
            IoKind::Unmap {
                lba: (2 * vcs + 2) * CB,
                blocks: CB,
            },
        )
        .expect("unmap");
        drop(ch);
        assert_clean(&pool);
        pool.close().expect("close");
    }
}

#[test]
fn two_member_malloc_pool_mixed_sizes() {
    spread_and_reopen("two", vec![malloc("two-a", 12), malloc("two-b", 6)]);
}

#[test]
fn three_member_file_pool_mixed_sizes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let devs = vec![
        file(dir.path(), "three-a", 10),
        file(dir.path(), "three-b", 3),
        file(dir.path(), "three-c", 5),
    ];
    spread_and_reopen("three", devs);
}

fn bad_members(r: Result<Arc<Pool>, VolumeError>) -> String {
    match r {
        Err(e @ VolumeError::BadMembers { .. }) => e.to_string(),
        Err(e) => panic!("expected BadMembers, got {e}"),
        Ok(_) => panic!("expected BadMembers, the pool opened"),
    }
}

#[test]
fn open_refuses_missing_duplicated_and_foreign_members() {
    let a: Vec<Arc<dyn BlockDevice>> = (0..3).map(|i| malloc(&format!("a{i}"), 6)).collect();
    let b: Vec<Arc<dyn BlockDevice>> = (0..2).map(|i| malloc(&format!("b{i}"), 6)).collect();
    let pa = pool_over("pa", &a);
    let v = pa
        .create_volume("v", 8 * CLUSTER, Provisioning::Thin)
        .expect("volume");
    let mut ch = v.open_channel(&[]).expect("channel");
    for vc in 0..6 {
        write(&mut *ch, vc * CB, &tag(vc)).expect("write");
    }
    drop((ch, v));
    pa.close().expect("close");
    drop(pa);
    pool_over("pb", &b).close().expect("close pb");
    let labels: Vec<Vec<u8>> = a.iter().map(|d| raw_read(&**d, 0, 8)).collect();

    let msg = bad_members(Pool::open(vec![a[0].clone(), a[2].clone()]));
    assert!(msg.contains("[1]") && msg.contains("missing"), "{msg}");
    assert!(msg.contains("a0") && msg.contains("a2"), "{msg}");
    let msg = bad_members(Pool::open(vec![a[2].clone(), a[1].clone()]));
    assert!(msg.contains("[0]") && msg.contains("missing"), "{msg}");

    let msg = bad_members(Pool::open(vec![
        a[0].clone(),
        a[1].clone(),
        a[1].clone(),
        a[2].clone(),
    ]));
    assert!(msg.contains("a1") && msg.contains("twice"), "{msg}");

    // A copy of member 1's label on another device (a cloned disk).
    let copy = malloc("a1-copy", 6);
    raw_write(&*copy, 0, &labels[1]);
    let msg = bad_members(Pool::open(vec![
        a[0].clone(),
        a[1].clone(),
        copy.clone(),
        a[2].clone(),
    ]));
    assert!(
        msg.contains("a1") && msg.contains("a1-copy") && msg.contains("member 1"),
        "{msg}"
    );

    let msg = bad_members(Pool::open(vec![a[0].clone(), a[1].clone(), b[1].clone()]));
    assert!(
        msg.contains("b1") && msg.contains("pool pb") && msg.contains("pool pa"),
        "{msg}"
    );
    let msg = bad_members(Pool::open(vec![
        b[0].clone(),
        a[0].clone(),
        a[1].clone(),
        a[2].clone(),
    ]));
    assert!(msg.contains("b0") || msg.contains("a0"), "{msg}");
    assert!(msg.contains("pool pb") && msg.contains("pool pa"), "{msg}");

    // A blank device in the set is named too.
    match Pool::open(vec![a[0].clone(), malloc("blank", 6), a[2].clone()]) {
        Err(VolumeError::DamagedLabel { device, reason }) => {
            assert_eq!(device, "blank");
            assert!(reason.contains("not a pool member"), "{reason}");
        }
        other => panic!("expected DamagedLabel, got {other:?}"),
    }

    // The refusals wrote nothing: labels unchanged, the right set opens and reads back.
    for (d, l) in a.iter().zip(&labels) {
        assert_eq!(&raw_read(&**d, 0, 8), l, "label of {} untouched", d.name());
    }
    let pa = Pool::open(vec![a[1].clone(), a[2].clone(), a[0].clone()]).expect("full set opens");
    assert_clean(&pa);
    let mut ch = pa
        .volume("v")
        .expect("v")
        .open_channel(&[])
        .expect("channel");
    for vc in 0..6 {
        assert_eq!(read(&mut *ch, vc * CB, 1).expect("read"), tag(vc));
    }
    drop(ch);
    pa.close().expect("close");
}

#[test]
fn crash_and_replay_on_a_three_member_file_pool() {
    let dir = tempfile::tempdir().expect("tempdir");
    let devs = vec![
        file(dir.path(), "c0", 8),
        file(dir.path(), "c1", 2),
        file(dir.path(), "c2", 4),
    ];
    let pool = pool_over("crashy", &devs);
    let v = pool
        .create_volume("v", 40 * CLUSTER, Provisioning::Thin)
        .expect("volume");
    let mut ch = v.open_channel(&[]).expect("channel");
    let mut model = vec![0u8; (40 * CLUSTER) as usize];
    fn put(model: &mut [u8], ch: &mut dyn ferrite_bdev::IoChannel, lba: u64, data: &[u8]) {
        write(ch, lba, data).expect("write");
        model[lba as usize * BS as usize..][..data.len()].copy_from_slice(data);
    }
    for vc in 0..12u64 {
        put(&mut model, &mut *ch, vc * CB + vc, &pattern(vc, 2048));
    }
    pool.snapshot("v", "s").expect("snapshot");
    let snap_image = model.clone();
    for vc in (0..12u64).step_by(3) {
        put(&mut model, &mut *ch, vc * CB + 100, &pattern(50 + vc, 1024)); // copy-on-write
    }
    put(&mut model, &mut *ch, 20 * CB - 2, &pattern(99, 4096)); // spanning, two new clusters
    other(&mut *ch, IoKind::Flush).expect("flush");
    let allocated = pool.info().allocated_clusters;
    let spread = pool.info().members;
    assert!(
        spread.iter().all(|m| m.allocated_clusters > 0),
        "{spread:?}"
    );
    drop(ch);
    drop(v);
    drop(pool); // crash: no checkpoint, the log replays
    let pool = Pool::open(vec![devs[2].clone(), devs[0].clone(), devs[1].clone()]).expect("replay");
    assert_clean(&pool);
    assert_eq!(pool.info().allocated_clusters, allocated);
    let mut ch = pool
        .volume("v")
        .expect("v")
        .open_channel(&[])
        .expect("channel");
    assert_eq!(read(&mut *ch, 0, 4096).expect("read"), model[..4096 * 512]);
    assert_eq!(
        read(&mut *ch, 4096, 40 * CB as u32 - 4096).expect("read"),
        model[4096 * 512..]
    );
    let mut sch = pool
        .volume("s")
        .expect("s")
        .open_channel(&[])
        .expect("channel");
    assert_eq!(
        read(&mut *sch, 0, 20 * CB as u32).expect("read"),
        snap_image[..(20 * CLUSTER) as usize]
    );
    drop((ch, sch));
    pool.close().expect("close");
}
