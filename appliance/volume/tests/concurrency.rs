//! Faults from several channels at once: channels of one volume (on separate threads, or
//! polled round-robin from one thread) write the same unallocated and the same shared clusters
//! concurrently. Every write lands, each virtual cluster gets exactly one physical cluster
//! (one allocation, one copy-on-write), `check()` is clean and reads match.

mod common;

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::*;
use ferrite_bdev::{BdevError, BdevIo, BlockDevice, IoChannel, IoKind};
use ferrite_reactor::IoBuf;
use ferrite_volume::{Pool, Provisioning};

const CB: u64 = CLUSTER / BS as u64;
const CHANNELS: u64 = 3;
/// Blocks each channel writes per cluster per phase.
const SLICE: u64 = 8;

fn write_io(tag: u64, lba: u64, data: &[u8]) -> BdevIo {
    let mut buf = IoBuf::new(data.len());
    buf.set_len(data.len());
    buf.as_mut_slice().copy_from_slice(data);
    let kind = IoKind::Write {
        lba,
        blocks: (data.len() / BS as usize) as u32,
        fua: false,
    };
    BdevIo::new(tag, kind, Some(buf))
}

/// Where channel `t` writes in cluster `vc` during `phase`, and what.
fn slice(phase: u64, t: u64, vc: u64) -> (u64, Vec<u8>) {
    let lba = vc * CB + (phase * CHANNELS + t) * SLICE;
    (
        lba,
        pattern(
            phase * 1000 + t * 100 + vc,
            (SLICE * u64::from(BS)) as usize,
        ),
    )
}

fn ios(phase: u64, t: u64, clusters: std::ops::Range<u64>) -> Vec<BdevIo> {
    clusters
        .map(|vc| {
            let (lba, data) = slice(phase, t, vc);
            write_io(vc, lba, &data)
        })
        .collect()
}

/// Submits every request on `chans[i]` first, then polls the channels in turn until all
/// completed.
fn run_round_robin(chans: &mut [Box<dyn IoChannel>], batches: Vec<Vec<BdevIo>>) {
    let mut left = 0;
    for (ch, batch) in chans.iter_mut().zip(batches) {
        for io in batch {
            ch.submit(io).map_err(|(_, e)| e).expect("submit");
            left += 1;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut errors: Vec<BdevError> = Vec::new();
    while left > 0 {
        let mut n = 0;
        for ch in chans.iter_mut() {
            n += ch.poll(64, &mut |_, r| {
                if let Err(e) = r {
                    errors.push(e);
                }
            });
        }
        left -= n;
        if n == 0 {
            assert!(Instant::now() < deadline, "{left} writes never completed");
            std::thread::sleep(Duration::from_micros(50));
        }
    }
    assert!(errors.is_empty(), "writes failed: {errors:?}");
}

/// Runs `phase` on `CHANNELS` threads, each with its own channel, started together.
fn run_threads(v: &Arc<ferrite_volume::Volume>, phase: u64, clusters: std::ops::Range<u64>) {
    let start = Arc::new(Barrier::new(CHANNELS as usize));
    let threads: Vec<_> = (0..CHANNELS)
        .map(|t| {
            let v = Arc::clone(v);
            let start = Arc::clone(&start);
            let clusters = clusters.clone();
            std::thread::spawn(move || {
                let mut ch = [v.open_channel(&[]).expect("channel")];
                start.wait();
                run_round_robin(&mut ch, vec![ios(phase, t, clusters)]);
            })
        })
        .collect();
    for t in threads {
        t.join().expect("writer thread");
    }
}

/// The expected content of cluster `vc` after writes of `phases`.
fn expected(vc: u64, phases: &[u64]) -> Vec<u8> {
    let mut c = vec![0u8; CLUSTER as usize];
    for &phase in phases {
        for t in 0..CHANNELS {
            let (lba, data) = slice(phase, t, vc);
            c[((lba - vc * CB) * u64::from(BS)) as usize..][..data.len()].copy_from_slice(&data);
        }
    }
    c
}

fn verify(pool: &Pool, name: &str, clusters: std::ops::Range<u64>, phases: &[u64]) {
    let mut ch = pool
        .volume(name)
        .expect("volume")
        .open_channel(&[])
        .expect("channel");
    for vc in clusters {
        let got = read(&mut *ch, vc * CB, CB as u32).expect("read");
        assert!(got == expected(vc, phases), "{name} cluster {vc} differs");
    }
}

/// Phase 0 allocates `clusters` from every channel at once; a snapshot shares them; phase 1
/// copies them from every channel at once.
fn allocate_then_copy(threads: bool) {
    const N: u64 = 12;
    let (pool, _dev) = small_pool(if threads { "mt" } else { "rr" }, 32);
    let v = pool
        .create_volume("v", 2 * N * CLUSTER, Provisioning::Thin)
        .expect("volume");
    let drive = |phase: u64, clusters: std::ops::Range<u64>| {
        if threads {
            run_threads(&v, phase, clusters);
        } else {
            let mut chans: Vec<Box<dyn IoChannel>> = (0..CHANNELS)
                .map(|_| v.open_channel(&[]).expect("channel"))
                .collect();
            let batches = (0..CHANNELS)
                .map(|t| ios(phase, t, clusters.clone()))
                .collect();
            run_round_robin(&mut chans, batches);
        }
    };
    drive(0, 0..N);
    let info = pool.info();
    assert_eq!(info.allocated_clusters, N, "one allocation per cluster");
    assert_eq!(v.info().allocated_bytes, N * CLUSTER);
    assert!(v.stats().faults >= N, "the writes faulted");
    assert_clean(&pool);
    verify(&pool, "v", 0..N, &[0]);

    pool.snapshot("v", "s").expect("snapshot");
    assert_eq!(pool.info().shared_clusters, N);
    drive(1, 0..N);
    let info = pool.info();
    assert_eq!(
        info.allocated_clusters,
        2 * N,
        "one copy per shared cluster"
    );
    assert_eq!(info.shared_clusters, 0);
    assert_eq!(v.stats().cow_copies, N, "each cluster copied once");
    let vi = v.info();
    assert_eq!((vi.exclusive_bytes, vi.shared_bytes), (N * CLUSTER, 0));
    assert_clean(&pool);
    verify(&pool, "v", 0..N, &[0, 1]);
    verify(&pool, "s", 0..N, &[0]);

    // Both at once: new clusters and shared ones in the same burst.
    pool.delete_volume("s").expect("delete snapshot");
    pool.snapshot("v", "s2").expect("snapshot");
    drive(2, N / 2..N + N / 2);
    let info = pool.info();
    // v's N (now shared with s2) + N/2 copies + N/2 new; s's old copies were freed.
    assert_eq!(info.allocated_clusters, N + N / 2 + N / 2);
    assert_eq!(info.shared_clusters, N / 2);
    assert_eq!(v.stats().cow_copies, N + N / 2);
    assert_clean(&pool);
    verify(&pool, "v", 0..N / 2, &[0, 1]);
    verify(&pool, "v", N / 2..N, &[0, 1, 2]);
    verify(&pool, "v", N..N + N / 2, &[2]);
    verify(&pool, "s2", 0..N, &[0, 1]);
    pool.close().expect("close");
}

#[test]
fn concurrent_faults_from_threads() {
    for _ in 0..3 {
        allocate_then_copy(true);
    }
}

#[test]
fn concurrent_faults_round_robin_one_thread() {
    allocate_then_copy(false);
}
