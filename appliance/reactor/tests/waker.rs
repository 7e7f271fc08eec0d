//! `ReactorWaker` + `Task::has_pending_work`: a task that drains its own lock-free ring is
//! woken by producers on other threads without a message, and no push racing with the
//! reactor going to sleep is slept through (the reactor parks at once, for a minute: a lost
//! wake-up shows as a stall).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;
use ferrite_reactor::{IdlePolicy, PollStatus, Runtime, RuntimeConfig, Task, TaskContext};

const WAIT: Duration = Duration::from_secs(10);

/// Pops its ring; counts what it popped. When armed, it pushes one item itself right after
/// a poll drained the ring, without waking anyone: exactly a producer whose push lands after
/// the poll and whose wake finds the reactor not parked yet.
struct Drainer {
    ring: Arc<ArrayQueue<u64>>,
    popped: Arc<AtomicU64>,
    arm: Arc<AtomicBool>,
}

impl Task for Drainer {
    fn poll(&mut self, _cx: &mut TaskContext) -> PollStatus {
        let mut n = 0;
        while self.ring.pop().is_some() {
            n += 1;
        }
        self.popped.fetch_add(n, Ordering::SeqCst);
        if n == 0 && self.arm.swap(false, Ordering::SeqCst) {
            self.ring.push(u64::MAX).expect("room");
            return PollStatus::Idle;
        }
        PollStatus::from_busy(n > 0)
    }

    fn has_pending_work(&self) -> bool {
        !self.ring.is_empty()
    }
}

struct Setup {
    rt: Runtime,
    ring: Arc<ArrayQueue<u64>>,
    popped: Arc<AtomicU64>,
    arm: Arc<AtomicBool>,
    waker: ferrite_reactor::ReactorWaker,
}

/// One reactor that parks at once, for a minute, running a `Drainer`.
fn setup() -> Setup {
    let rt = Runtime::start(RuntimeConfig {
        idle: IdlePolicy::Park {
            after: Duration::ZERO,
            max: Duration::from_secs(60),
        },
        ..RuntimeConfig::testing(1)
    })
    .expect("start");
    let ring = Arc::new(ArrayQueue::new(8));
    let popped = Arc::new(AtomicU64::new(0));
    let arm = Arc::new(AtomicBool::new(false));
    let (r, p, a) = (Arc::clone(&ring), Arc::clone(&popped), Arc::clone(&arm));
    let (tx, rx) = std::sync::mpsc::channel();
    rt.spawn(0, "drainer", move |cx| {
        tx.send(cx.waker()).expect("waker out");
        Drainer {
            ring: r,
            popped: p,
            arm: a,
        }
    })
    .expect("spawn");
    let waker = rx.recv_timeout(WAIT).expect("task started");
    Setup {
        rt,
        ring,
        popped,
        arm,
        waker,
    }
}

fn wait_parked(rt: &Runtime) {
    let start = Instant::now();
    while !rt.stats()[0].parked {
        assert!(start.elapsed() < WAIT, "the reactor never parks");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn a_push_between_poll_and_park_is_not_slept_through() {
    let Setup {
        rt,
        popped,
        arm,
        waker,
        ..
    } = setup();
    wait_parked(&rt);
    arm.store(true, Ordering::SeqCst);
    waker.wake();
    let start = Instant::now();
    while popped.load(Ordering::SeqCst) < 1 {
        assert!(
            start.elapsed() < WAIT,
            "the reactor parked over a pending item (has_pending_work ignored)"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    rt.shutdown().expect("clean shutdown");
}

#[test]
fn pushes_on_a_task_ring_wake_a_parked_reactor_without_loss() {
    let Setup {
        rt,
        ring,
        popped,
        waker,
        ..
    } = setup();
    assert_eq!(waker.reactor_index(), 0);
    assert!(!waker.is_current(), "the test thread is no reactor");
    // One item at a time, each waited for: every push races the reactor's park.
    for i in 1..=500u64 {
        while ring.push(i).is_err() {
            std::thread::yield_now();
        }
        waker.wake();
        let start = Instant::now();
        while popped.load(Ordering::SeqCst) < i {
            assert!(
                start.elapsed() < WAIT,
                "push {i} slept through (lost wake-up)"
            );
            std::thread::yield_now();
        }
    }
    assert!(rt.stats()[0].parks > 0, "the test must exercise parking");
    rt.shutdown().expect("clean shutdown");
}
