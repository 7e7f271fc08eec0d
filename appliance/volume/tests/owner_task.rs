//! The metadata owner as a task on a reactor it shares with other tasks: it never blocks that
//! reactor (member I/O and drains are awaited), a member that never answers (`error` backend,
//! `Pending`) fails the operation with a clear error within the member timeout, a failing
//! member fails it with the member's error, and in every case the pool and the runtime still
//! shut down.

mod common;

use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use ferrite_bdev::inject::{ErrorType, IoClass};
use ferrite_bdev::{BdevError, BdevIo, BlockDevice, ErrorBdev, IoChannel, IoKind};
use ferrite_reactor::{
    IoBuf, PollStatus, Runtime, RuntimeConfig, Task, TaskContext, TaskHandle, Timers,
};
use ferrite_volume::{Pool, PoolOptions, Provisioning, Volume};

const OWNER_REACTOR: usize = 1;
const TIMEOUT: Duration = Duration::from_millis(300);
/// Far beyond the timeout, far below "hangs": a loaded machine still meets it.
const BOUND: Duration = Duration::from_secs(20);

/// Counts the ticks of a 1 ms timer: proof that its reactor keeps running its loop.
struct Ticker {
    timers: Timers<()>,
    fired: Vec<()>,
    ticks: u64,
}

impl Task for Ticker {
    fn poll(&mut self, cx: &mut TaskContext) -> PollStatus {
        let n = self.timers.expired(cx.now(), &mut self.fired);
        for () in self.fired.drain(..) {
            self.ticks += 1;
            self.timers
                .schedule(cx.now() + Duration::from_millis(1), ());
        }
        if let Some(at) = self.timers.next_deadline() {
            cx.wake_at(at);
        }
        PollStatus::from_busy(n > 0)
    }
}

fn ticker(rt: &Runtime) -> TaskHandle<Ticker> {
    rt.spawn(OWNER_REACTOR, "ticker", |cx| {
        let mut timers = Timers::new();
        timers.schedule(cx.now(), ());
        Ticker {
            timers,
            fired: Vec::new(),
            ticks: 0,
        }
    })
    .expect("ticker")
}

fn ticks(t: &TaskHandle<Ticker>) -> u64 {
    t.call(|t, _| t.ticks, BOUND).expect("ticker answers")
}

/// A pool over one `error` bdev (over RAM), its owner on reactor 1 of a two-reactor runtime.
fn pool_on(rt: &Runtime, name: &str) -> (Arc<Pool>, Arc<ErrorBdev>) {
    let dev = Arc::new(ErrorBdev::new(name, malloc(&format!("{name}-base"), 16)).expect("error"));
    let pool = Pool::create_on(
        name,
        vec![Arc::clone(&dev) as Arc<dyn BlockDevice>],
        PoolOptions {
            cluster_size: CLUSTER,
        },
        rt.spawner(),
        OWNER_REACTOR,
    )
    .expect("pool");
    pool.set_member_timeout(TIMEOUT);
    (pool, dev)
}

/// Drops the pool, then stops the runtime, on another thread; fails if that hangs.
fn shut_down_within_bound(pool: Arc<Pool>, rt: Runtime) {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        drop(pool);
        let r = rt.shutdown();
        let _ = tx.send(r.map_err(|e| e.to_string()));
    });
    rx.recv_timeout(BOUND)
        .expect("pool and runtime shutdown hangs")
        .expect("runtime stops cleanly");
}

/// Waits until the owner's reactor publishes `n` live tasks (stats lag an iteration).
fn wait_tasks(rt: &Runtime, n: u64) {
    let started = Instant::now();
    while rt.stats()[OWNER_REACTOR].tasks != n {
        assert!(
            started.elapsed() < BOUND,
            "reactor {OWNER_REACTOR}: {} tasks, not {n}",
            rt.stats()[OWNER_REACTOR].tasks
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn the_owner_is_a_task_on_the_chosen_reactor() {
    let rt = Runtime::start(RuntimeConfig::testing(2)).expect("runtime");
    let before = rt.stats()[OWNER_REACTOR].tasks;
    let (pool, _dev) = pool_on(&rt, "placed");
    assert_eq!(pool.owner_reactor(), OWNER_REACTOR);
    wait_tasks(&rt, before + 1);
    let v = pool
        .create_volume("v", 1 << 20, Provisioning::Thin)
        .expect("volume");
    let mut ch = v.open_channel(&[]).expect("channel");
    write(&mut *ch, 0, &pattern(1, 4096)).expect("write");
    assert_eq!(read(&mut *ch, 0, 8).expect("read"), pattern(1, 4096));
    drop(ch);
    drop(v);
    pool.close().expect("close");
    wait_tasks(&rt, before);
    shut_down_within_bound(pool, rt);
}

#[test]
fn a_member_that_never_answers_fails_the_operation_without_blocking_the_reactor() {
    let rt = Runtime::start(RuntimeConfig::testing(2)).expect("runtime");
    let t = ticker(&rt);
    let (pool, dev) = pool_on(&rt, "hung");
    let v = pool
        .create_volume("v", 1 << 20, Provisioning::Thin)
        .expect("volume");
    let mut ch = v.open_channel(&[]).expect("channel");
    write(&mut *ch, 0, &pattern(2, 4096)).expect("write while the member answers");
    drop(ch);
    // Flushes and log writes are held forever from here on.
    dev.inject(&IoClass::ALL, ErrorType::Pending, u64::MAX);
    let ticks_before = ticks(&t);
    let started = Instant::now();
    let err = pool
        .snapshot("v", "s")
        .expect_err("the member does not answer");
    let took = started.elapsed();
    let ticked = ticks(&t) - ticks_before;
    assert!(took >= TIMEOUT && took < BOUND, "{took:?}: {err}");
    let text = err.to_string();
    assert!(
        text.contains("did not answer") && text.contains("hung"),
        "names the cause and the pool: {text}"
    );
    // The reactor the owner runs on kept ticking while the owner waited for the member
    // (a 1 ms timer; a quarter of the ticks is plenty on a loaded machine).
    assert!(
        ticked >= TIMEOUT.as_millis() as u64 / 4,
        "{ticked} ticks in {took:?}"
    );
    assert!(!pool.is_online());
    drop(v);
    shut_down_within_bound(pool, rt);
}

#[test]
fn a_failing_member_fails_the_operation_and_the_pool_still_reopens() {
    let rt = Runtime::start(RuntimeConfig::testing(2)).expect("runtime");
    let (pool, dev) = pool_on(&rt, "failing");
    pool.create_volume("v", 1 << 20, Provisioning::Thin)
        .expect("volume");
    dev.inject(&[IoClass::Write], ErrorType::Failure, 1);
    let err = pool
        .create_volume("w", 1 << 20, Provisioning::Thin)
        .expect_err("its log record cannot be written");
    assert!(
        err.to_string().contains("metadata write failed"),
        "names the failure: {err}"
    );
    assert!(!pool.is_online());
    let (tx, rx) = mpsc::channel();
    let closing = Arc::clone(&pool);
    std::thread::spawn(move || {
        let _ = tx.send(closing.close().map_err(|e| e.to_string()));
    });
    let closed = rx
        .recv_timeout(BOUND)
        .expect("close of an offline pool hangs");
    assert!(closed.is_err(), "an offline pool writes no checkpoint");
    drop(pool);
    dev.clear(&IoClass::ALL);
    // The log has what was acknowledged: v, not w.
    let pool = Pool::open_on(
        vec![Arc::clone(&dev) as Arc<dyn BlockDevice>],
        rt.spawner(),
        OWNER_REACTOR,
    )
    .expect("reopen");
    assert!(pool.volume("v").is_some() && pool.volume("w").is_none());
    assert_clean(&pool);
    pool.close().expect("close");
    shut_down_within_bound(pool, rt);
}

/// Writes `clusters` clusters of its volume, one request at a time, from a task on the
/// owner's reactor: each first write faults to the owner on the same reactor.
struct Writer {
    ch: Box<dyn IoChannel>,
    next: u64,
    clusters: u64,
    in_flight: bool,
    buf: Option<IoBuf>,
    errors: Vec<String>,
}

impl Task for Writer {
    fn poll(&mut self, _cx: &mut TaskContext) -> PollStatus {
        let mut busy = false;
        busy |= self.ch.poll(4, &mut |io, r| {
            if let Err(e) = r {
                self.errors.push(e.to_string());
            }
            self.buf = io.buf;
            self.in_flight = false;
        }) > 0;
        if !self.in_flight && self.next < self.clusters {
            let mut buf = self.buf.take().expect("buffer back");
            buf.as_mut_slice().fill(self.next as u8 + 1);
            let kind = IoKind::Write {
                lba: self.next * (CLUSTER / u64::from(BS)),
                blocks: 8,
                fua: false,
            };
            match self.ch.submit(BdevIo::new(self.next, kind, Some(buf))) {
                Ok(()) => {
                    self.in_flight = true;
                    self.next += 1;
                }
                Err((io, BdevError::QueueFull)) => self.buf = io.buf,
                Err((_, e)) => panic!("write refused: {e}"),
            }
            busy = true;
        }
        PollStatus::from_busy(busy || self.in_flight)
    }
}

fn writer(rt: &Runtime, v: &Arc<Volume>, clusters: u64) -> TaskHandle<Writer> {
    let v = Arc::clone(v);
    rt.spawn(OWNER_REACTOR, "writer", move |_| {
        let mut buf = IoBuf::new(4096);
        buf.set_len(4096);
        Writer {
            ch: v.open_channel(&[]).expect("channel"),
            next: 0,
            clusters,
            in_flight: false,
            buf: Some(buf),
            errors: Vec::new(),
        }
    })
    .expect("writer")
}

#[test]
fn faults_and_drains_from_a_channel_on_the_owners_own_reactor() {
    let rt = Runtime::start(RuntimeConfig::testing(2)).expect("runtime");
    let (pool, _dev) = pool_on(&rt, "sameplace");
    let v = pool
        .create_volume("v", 64 * CLUSTER, Provisioning::Thin)
        .expect("volume");
    let w = writer(&rt, &v, 64);
    // Snapshots while the writer runs: each drains the volume, and the writer's next writes
    // copy on write. The owner waits for the writer's requests on the reactor they share.
    let started = Instant::now();
    for i in 0..4 {
        pool.snapshot("v", &format!("s{i}")).expect("snapshot");
    }
    loop {
        let (done, errors) = w
            .call(
                |w, _| (w.next == w.clusters && !w.in_flight, w.errors.clone()),
                BOUND,
            )
            .expect("writer answers");
        assert!(errors.is_empty(), "{errors:?}");
        if done {
            break;
        }
        assert!(started.elapsed() < BOUND, "the writer stalls");
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut ch = v.open_channel(&[]).expect("channel");
    for c in 0..64u64 {
        let got = read(&mut *ch, c * (CLUSTER / u64::from(BS)), 8).expect("read");
        assert!(got.iter().all(|&b| b == c as u8 + 1), "cluster {c}");
    }
    drop(ch);
    assert_clean(&pool);
    drop(v);
    pool.close().expect("close");
    shut_down_within_bound(pool, rt);
}
