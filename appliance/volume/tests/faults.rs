//! Member faults: a hung member (the owner cannot answer) makes held writes fail NotReady after
//! the hold timeout, not never; the pool recovers when the member does.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::testdev::TestDev;
use common::*;
use ferrite_bdev::{BdevError, BlockDevice};
use ferrite_volume::{Pool, Provisioning};

const CB: u64 = CLUSTER / BS as u64;

/// Ends a stall when the test ends, even by a panic (the owner would hang the pool's drop).
struct Unstall(Arc<TestDev>);

impl Drop for Unstall {
    fn drop(&mut self) {
        self.0.set_stall(false);
    }
}

#[test]
fn held_write_times_out_when_the_owner_cannot_answer() {
    let dev = TestDev::new(malloc("hang-m0", 16), false);
    let pool = pool_over("hang", &[dev.as_bdev()]);
    let v = pool
        .create_volume("v", 8 * CLUSTER, Provisioning::Thin)
        .expect("volume");
    let _unstall = Unstall(Arc::clone(&dev));
    let mut ch = v.open_channel(&[]).expect("channel");
    write(&mut *ch, 0, &pattern(1, 512)).expect("first cluster");
    pool.set_hold_timeout(Duration::from_millis(300));

    // The member hangs: the owner blocks in the log write for the next allocation.
    dev.set_stall(true);
    let t0 = Instant::now();
    let r = write(&mut *ch, 2 * CB, &pattern(2, 512));
    let waited = t0.elapsed();
    assert!(matches!(r, Err(BdevError::NotReady(_))), "{r:?}");
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_secs(10),
        "held {waited:?}"
    );
    assert!(v.stats().held_time_max_ns >= 300_000_000);

    // The member comes back: the owner finishes, new writes to that cluster succeed.
    dev.set_stall(false);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match write(&mut *ch, 2 * CB, &pattern(3, 512)) {
            Ok(()) => break,
            Err(BdevError::NotReady(_)) if Instant::now() < deadline => {}
            Err(e) => panic!("write after recovery: {e}"),
        }
    }
    assert_eq!(read(&mut *ch, 2 * CB, 1).expect("read"), pattern(3, 512));
    assert_eq!(read(&mut *ch, 0, 1).expect("read"), pattern(1, 512));
    assert_clean(&pool);
    drop(ch);
    pool.close().expect("close");
    let pool = Pool::open(vec![dev.as_bdev()]).expect("reopen");
    assert_clean(&pool);
    let mut ch = pool
        .volume("v")
        .expect("v")
        .open_channel(&[])
        .expect("channel");
    assert_eq!(read(&mut *ch, 2 * CB, 1).expect("read"), pattern(3, 512));
    drop(ch);
    pool.close().expect("close");
}

fn write_fua(ch: &mut dyn ferrite_bdev::IoChannel, lba: u64, data: &[u8]) {
    let mut buf = ferrite_reactor::IoBuf::new(data.len());
    buf.set_len(data.len());
    buf.as_mut_slice().copy_from_slice(data);
    let kind = ferrite_bdev::IoKind::Write {
        lba,
        blocks: (data.len() / BS as usize) as u32,
        fua: true,
    };
    run(ch, ferrite_bdev::BdevIo::new(7, kind, Some(buf)))
        .1
        .expect("FUA write");
}

/// Crash: drop the pool without close (no checkpoint), lose every member's cache, reopen with
/// the members in reverse order. Returns the reopened pool and a channel to `v`.
fn crash(
    pool: Arc<Pool>,
    devs: &[Arc<TestDev>],
    expect_lost: bool,
) -> (Arc<Pool>, Box<dyn ferrite_bdev::IoChannel>) {
    drop(pool);
    let lost: usize = devs.iter().map(|d| d.crash()).sum();
    assert_eq!(lost > 0, expect_lost, "{lost} cached blocks lost");
    let pool = Pool::open(devs.iter().rev().map(TestDev::as_bdev).collect()).expect("replay");
    assert_clean(&pool);
    let ch = pool
        .volume("v")
        .expect("v")
        .open_channel(&[])
        .expect("channel");
    (pool, ch)
}

/// Members with a volatile write cache (lost by a crash): a FUA write to a freshly allocated
/// cluster, a FUA write into a copy-on-write copy, and a plain write followed by a Flush each
/// survive a crash that comes right after them (nothing else flushes in between); a plain
/// write without Flush is lost (the control: the cache simulation bites).
#[test]
fn fua_and_flushed_writes_survive_a_crash_with_volatile_caches() {
    let dir = tempfile::tempdir().expect("tempdir");
    let devs = [
        TestDev::new(file(dir.path(), "wc0", 10), true),
        TestDev::new(file(dir.path(), "wc1", 6), true),
    ];
    let bdevs: Vec<Arc<dyn BlockDevice>> = devs.iter().map(TestDev::as_bdev).collect();
    let mut pool = pool_over("wc", &bdevs);
    let v = pool
        .create_volume("v", 16 * CLUSTER, Provisioning::Thin)
        .expect("volume");
    assert!(v.capabilities().volatile_write_cache);
    let mut ch = v.open_channel(&[]).expect("channel");
    drop(v);

    // FUA to fresh clusters, each the last write before a crash (allocations alternate
    // members, so both members are covered).
    for vc in 0..2u64 {
        write_fua(&mut *ch, vc * CB + 3, &pattern(vc, 1024));
        assert!(devs.iter().all(|d| d.dirty_blocks() == 0));
        drop(ch);
        (pool, ch) = crash(pool, &devs, false);
        for w in 0..=vc {
            let got = read(&mut *ch, w * CB + 3, 2).expect("read");
            assert!(got == pattern(w, 1024), "FUA write to cluster {w} lost");
        }
    }
    let per_member: Vec<u64> = pool
        .info()
        .members
        .iter()
        .map(|m| m.allocated_clusters)
        .collect();
    assert_eq!(per_member, vec![1, 1]);

    // Plain writes to fresh clusters (both members), then a Flush of the volume.
    write(&mut *ch, 2 * CB, &pattern(3, 4096)).expect("write");
    write(&mut *ch, 3 * CB + 64, &pattern(4, 4096)).expect("write");
    assert!(
        devs.iter().any(|d| d.dirty_blocks() > 0),
        "the cache holds them"
    );
    other(&mut *ch, ferrite_bdev::IoKind::Flush).expect("flush");
    drop(ch);
    (pool, ch) = crash(pool, &devs, false);
    assert!(
        read(&mut *ch, 2 * CB, 8).expect("read") == pattern(3, 4096),
        "flushed"
    );
    assert!(
        read(&mut *ch, 3 * CB + 64, 8).expect("read") == pattern(4, 4096),
        "flushed"
    );

    // Copy-on-write of a shared cluster, FUA into the copy.
    pool.snapshot("v", "s").expect("snapshot");
    write_fua(&mut *ch, CB + 100, &pattern(5, 512));
    drop(ch);
    (pool, ch) = crash(pool, &devs, false);
    let c1 = read(&mut *ch, CB, CB as u32).expect("read");
    assert!(
        c1[100 * 512..][..512] == pattern(5, 512),
        "FUA into a copy lost"
    );
    let mut sch = pool
        .volume("s")
        .expect("s")
        .open_channel(&[])
        .expect("channel");
    let mut want = read(&mut *sch, CB, CB as u32).expect("read");
    assert!(
        want[100 * 512..][..512] == vec![0; 512],
        "the snapshot kept the old data"
    );
    assert!(want[3 * 512..][..1024] == pattern(1, 1024));
    want[100 * 512..][..512].copy_from_slice(&pattern(5, 512));
    assert!(c1 == want, "the copy carried the rest of the cluster");
    drop(sch);

    // Control: a plain write with neither FUA nor Flush is lost by the crash.
    write(&mut *ch, 4 * CB, &pattern(6, 512)).expect("unflushed write");
    drop(ch);
    let (pool, mut ch) = crash(pool, &devs, true);
    assert!(
        read(&mut *ch, 4 * CB, 1).expect("read") == vec![0; 512],
        "lost, reads zero"
    );
    drop(ch);
    pool.close().expect("close");
}

/// Fast-path member errors fail the requests with the member's error and reach the owner as
/// a rate-limited `MemberIoError` event naming the device and volume; nothing is remapped.
#[test]
fn fast_path_member_errors_raise_an_event() {
    let dev = TestDev::new(malloc("eio-m0", 16), false);
    let pool = pool_over("eio", &[dev.as_bdev()]);
    let v = pool
        .create_volume("v", 8 * CLUSTER, Provisioning::Thin)
        .expect("volume");
    let mut ch = v.open_channel(&[]).expect("channel");
    write(&mut *ch, 0, &pattern(1, 4096)).expect("write");
    let allocated = pool.info().allocated_clusters;
    let _ = pool.take_events();
    // Data area fails; the label and the metadata area in front of it do not.
    dev.fail_from(pool.info().members[0].data_start / u64::from(BS));
    for _ in 0..10 {
        assert!(matches!(read(&mut *ch, 0, 8), Err(BdevError::Io(_))));
    }
    assert!(matches!(
        write(&mut *ch, 8, &pattern(2, 512)),
        Err(BdevError::Io(_))
    ));
    assert_eq!(dev.failed(), 11);
    // Reads of unallocated clusters need no member I/O.
    assert_eq!(read(&mut *ch, 4 * CB, 1).expect("zeroes"), vec![0; 512]);
    // Within the interval the rest waits; after it, the next poll reports the count.
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(read(&mut *ch, 4 * CB, 1).expect("zeroes"), vec![0; 512]);
    let mut events = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    let reported = |ev: &[ferrite_volume::PoolEvent]| -> u64 {
        ev.iter()
            .map(|e| match e {
                ferrite_volume::PoolEvent::MemberIoError {
                    device,
                    volume,
                    errors,
                    error,
                    ..
                } => {
                    assert_eq!((device.as_str(), volume.as_str()), ("eio-m0", "v"));
                    assert!(!error.is_empty());
                    *errors
                }
                other => panic!("unexpected event {other:?}"),
            })
            .sum()
    };
    while reported(&events) < 11 {
        assert!(Instant::now() < deadline, "events so far: {events:?}");
        std::thread::sleep(Duration::from_millis(10));
        events.extend(pool.take_events());
    }
    assert_eq!(reported(&events), 11);
    assert!(events.len() <= 3, "rate-limited: {events:?}");
    // Nothing was remapped or marked: the data is back once the member is.
    dev.fail_from(u64::MAX);
    assert_eq!(read(&mut *ch, 0, 8).expect("read"), pattern(1, 4096));
    assert_eq!(pool.info().allocated_clusters, allocated);
    assert_clean(&pool);
    drop(ch);
    pool.close().expect("close");
}
