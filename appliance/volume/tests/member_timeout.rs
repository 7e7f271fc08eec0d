//! A member that never answers (a `delay` bdev with an hour of latency) fails the pool cleanly
//! within the member timeout: the operation that needed it returns an error, the pool goes
//! offline, and dropping it does not hang.

mod common;

use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use common::*;
use ferrite_bdev::delay::{LatencyType, MAX_LATENCY_US};
use ferrite_bdev::{BdevIo, BlockDevice, DelayBdev, IoKind};
use ferrite_reactor::IoBuf;
use ferrite_volume::{Pool, Provisioning};

const TIMEOUT: Duration = Duration::from_millis(300);
/// Far beyond the timeout, far below "hangs": a loaded machine still meets it.
const BOUND: Duration = Duration::from_secs(20);

fn slow_pool(name: &str) -> (Arc<Pool>, Arc<DelayBdev>) {
    let dev = Arc::new(
        DelayBdev::new(
            name,
            malloc(&format!("{name}-base"), 16),
            Default::default(),
        )
        .expect("delay bdev"),
    );
    let pool = pool_over(name, &[Arc::clone(&dev) as Arc<dyn BlockDevice>]);
    pool.set_member_timeout(TIMEOUT);
    (pool, dev)
}

fn stop_answering(dev: &DelayBdev) {
    for t in LatencyType::ALL {
        dev.update(t, MAX_LATENCY_US).expect("latency");
    }
}

/// Drops the pool on another thread; fails if that does not finish in time.
fn drop_within_bound(pool: Arc<Pool>) {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        drop(pool);
        let _ = tx.send(());
    });
    rx.recv_timeout(BOUND).expect("dropping the pool hangs");
}

#[test]
fn an_owner_request_without_answer_takes_the_pool_offline() {
    let (pool, dev) = slow_pool("noanswer");
    let v = pool
        .create_volume("v", 1 << 20, Provisioning::Thin)
        .expect("volume");
    let mut ch = v.open_channel(&[]).expect("channel");
    write(&mut *ch, 0, &pattern(1, 4096)).expect("write while the member answers");
    drop(ch);
    stop_answering(&dev);
    // The snapshot flushes the member and writes the log: neither is answered.
    let t = Instant::now();
    let err = pool
        .snapshot("v", "s")
        .expect_err("the member does not answer");
    assert!(t.elapsed() < BOUND, "{:?}", t.elapsed());
    assert!(t.elapsed() >= TIMEOUT, "failed before the deadline: {err}");
    assert!(!pool.is_online(), "offline after {err}");
    let again = pool.create_volume("w", 1 << 20, Provisioning::Thin);
    assert!(
        again
            .as_ref()
            .is_err_and(|e| e.to_string().contains("offline")),
        "{again:?}"
    );
    drop(v);
    drop_within_bound(pool);
}

#[test]
fn a_data_request_without_answer_fails_the_drain() {
    let (pool, dev) = slow_pool("nodrain");
    let v = pool
        .create_volume("v", 1 << 20, Provisioning::Thin)
        .expect("volume");
    let mut ch = v.open_channel(&[]).expect("channel");
    write(&mut *ch, 0, &pattern(2, 4096)).expect("allocates the cluster");
    stop_answering(&dev);
    // A write to the mapped cluster goes straight to the member, which keeps it.
    let mut buf = IoBuf::new(4096);
    buf.set_len(4096);
    let kind = IoKind::Write {
        lba: 0,
        blocks: 8,
        fua: false,
    };
    ch.submit(BdevIo::new(9, kind, Some(buf)))
        .map_err(|(_, e)| e)
        .expect("submitted");
    ch.poll(8, &mut |_, r| panic!("completed without an answer: {r:?}"));
    // Deleting the volume must drain that write first: it never completes.
    let t = Instant::now();
    let err = pool
        .delete_volume("v")
        .expect_err("the drain cannot finish");
    assert!(t.elapsed() < BOUND, "{:?}", t.elapsed());
    assert!(err.to_string().contains("still in flight"), "{err}");
    assert!(!pool.is_online());
    drop(ch);
    drop(v);
    drop_within_bound(pool);
}
