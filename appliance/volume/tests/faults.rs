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
