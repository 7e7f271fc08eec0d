//! LocalExecutor: deterministic single-threaded driving of tasks with a manual clock.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferrite_reactor::{
    LocalExecutor, ManualClock, PollStatus, ReactorError, RuntimeConfig, SendError, Task,
    TaskContext, TaskHandle, Timers,
};

type Log = Arc<Mutex<Vec<String>>>;

fn push(log: &Log, line: String) {
    log.lock().expect("log lock").push(line);
}

/// Pings its peer on a timer; answers pings with pongs. Everything it does goes to the log.
struct Pinger {
    name: &'static str,
    peer: Option<TaskHandle<Pinger>>,
    timers: Timers<u32>,
    fired: Vec<u32>,
    log: Log,
    received: u32,
}

impl Pinger {
    fn new(name: &'static str, log: Log) -> Self {
        Self {
            name,
            peer: None,
            timers: Timers::new(),
            fired: Vec::new(),
            log,
            received: 0,
        }
    }

    fn on_ping(&mut self, n: u32, cx: &mut TaskContext, start: Instant) {
        self.received += 1;
        push(
            &self.log,
            format!(
                "{} r{} t{:?} got {n}",
                self.name,
                cx.reactor_index(),
                cx.now() - start
            ),
        );
    }
}

impl Task for Pinger {
    fn poll(&mut self, cx: &mut TaskContext) -> PollStatus {
        let n = self.timers.expired(cx.now(), &mut self.fired);
        for key in self.fired.drain(..) {
            if let Some(peer) = &self.peer {
                let name = self.name;
                let log = Arc::clone(&self.log);
                let _ = peer.send(move |p: &mut Pinger, cx| {
                    push(&log, format!("{name} -> {} ping {key}", p.name));
                    let start = cx.now() - Duration::from_millis(u64::from(key) * 7);
                    p.on_ping(key, cx, start);
                });
            }
        }
        if let Some(at) = self.timers.next_deadline() {
            cx.wake_at(at);
        }
        PollStatus::from_busy(n > 0)
    }
}

fn scenario() -> Vec<String> {
    let log: Log = Arc::default();
    let mut ex = LocalExecutor::new(3).expect("executor");
    let start = ex.now();
    let handles: Vec<TaskHandle<Pinger>> = ["a", "b", "c"]
        .into_iter()
        .enumerate()
        .map(|(i, name)| {
            let log = Arc::clone(&log);
            ex.spawn(i, name, move |_| Pinger::new(name, log))
                .expect("spawn")
        })
        .collect();
    for (i, h) in handles.iter().enumerate() {
        let peer = handles[(i + 1) % 3].clone();
        h.send(move |p, cx| {
            p.peer = Some(peer);
            for k in 1..=4u32 {
                p.timers
                    .schedule(cx.now() + Duration::from_millis(u64::from(k) * 7), k);
            }
        })
        .expect("send");
    }
    ex.run_until_idle(100);
    while ex.advance_to_next_wake(100) {
        let elapsed = ex.now() - start;
        push(&log, format!("clock {elapsed:?}"));
    }
    for h in &handles {
        assert_eq!(ex.with_task(h, |p, _| p.received), Some(4));
    }
    ex.shutdown(10).expect("shutdown");
    let out = log.lock().expect("log lock").clone();
    out
}

#[test]
fn replays_the_same_interleaving_every_time() {
    let first = scenario();
    assert!(first.len() > 20, "a non-trivial run: {first:#?}");
    for _ in 0..3 {
        assert_eq!(scenario(), first);
    }
    // Timers fire at their deadlines, in order, and time only moves when told.
    assert_eq!(first.iter().filter(|l| l.starts_with("clock")).count(), 4);
    assert!(first.iter().any(|l| l == "a -> b ping 1"));
    assert!(first.iter().any(|l| l == "c -> a ping 4"));
}

struct Idle;

impl Task for Idle {
    fn poll(&mut self, _cx: &mut TaskContext) -> PollStatus {
        PollStatus::Idle
    }
}

/// Busy for `left` polls.
struct Busy {
    left: u32,
}

impl Task for Busy {
    fn poll(&mut self, _cx: &mut TaskContext) -> PollStatus {
        if self.left > 0 {
            self.left -= 1;
            PollStatus::Busy
        } else {
            PollStatus::Idle
        }
    }
}

#[test]
fn accounting_is_exact_with_a_manual_clock() {
    let mut ex = LocalExecutor::new(1).expect("executor");
    ex.spawn(0, "busy", |_| Busy { left: 3 }).expect("spawn");
    let ms = Duration::from_millis(1);
    // Iteration 1 accepts the spawn and polls (busy); the time until the next iteration is
    // charged to it.
    for _ in 0..4 {
        ex.run_once();
        ex.advance(ms);
    }
    // Iterations 1-3 are busy (three busy polls), 4 is idle; each iteration is charged the
    // time until the next one.
    ex.run_once();
    let s = ex.stats()[0];
    assert_eq!(s.iterations, 5);
    assert_eq!(s.busy_ns, 3_000_000, "{s:?}");
    assert_eq!(s.idle_ns, 1_000_000, "{s:?}");
    for _ in 0..3 {
        ex.advance(ms);
        ex.run_once();
    }
    let s = ex.stats()[0];
    assert_eq!((s.busy_ns, s.idle_ns), (3_000_000, 4_000_000));
    assert_eq!(s.parks, 0, "a local executor never parks");
    assert!((s.load() - 3.0 / 7.0).abs() < 1e-9);
}

#[test]
fn full_inbox_counts_and_recovers() {
    let cfg = RuntimeConfig {
        inbox_capacity: 3,
        ..RuntimeConfig::testing(1)
    };
    let mut ex = LocalExecutor::with_config(cfg, ManualClock::new()).expect("executor");
    let h = ex.spawn(0, "idle", |_| Idle).expect("spawn");
    for _ in 0..3 {
        h.send(|_, _| {}).expect("room");
    }
    assert_eq!(h.pending(), 3);
    assert_eq!(h.send(|_, _| {}), Err(SendError::Full));
    assert_eq!((h.full_count(), ex.stats()[0].inbox_full), (1, 1));
    ex.run_once();
    assert_eq!(h.pending(), 0);
    assert_eq!(ex.stats()[0].messages, 3);
    h.send(|_, _| {}).expect("room again");
}

#[test]
fn messages_are_bounded_per_poll_for_fairness() {
    let cfg = RuntimeConfig {
        messages_per_poll: 2,
        ..RuntimeConfig::testing(1)
    };
    let mut ex = LocalExecutor::with_config(cfg, ManualClock::new()).expect("executor");
    let h = ex.spawn(0, "idle", |_| Idle).expect("spawn");
    for _ in 0..5 {
        h.send(|_, _| {}).expect("room");
    }
    ex.run_once();
    assert_eq!(h.pending(), 3);
    assert_eq!(
        ex.run_until_idle(10),
        3,
        "2 + 1 messages, then an idle pass"
    );
    assert_eq!(h.pending(), 0);
}

#[test]
fn call_inside_the_local_executor_would_deadlock() {
    let mut ex = LocalExecutor::new(2).expect("executor");
    let a = ex.spawn(0, "a", |_| Idle).expect("spawn");
    let b = ex.spawn(1, "b", |_| Idle).expect("spawn");
    ex.run_once();
    let result = ex.with_task(&a, |_, _| b.call(|_, _| 1, Duration::from_secs(1)));
    assert_eq!(result, Some(Err(SendError::WouldDeadlock)));
}

#[test]
fn buffers_come_from_the_best_fitting_pool_and_go_back() {
    let mut ex = LocalExecutor::new(1).expect("executor");
    let h = ex.spawn(0, "idle", |_| Idle).expect("spawn");
    ex.run_once();
    ex.with_task(&h, |_, cx| {
        let small = cx.small_pool().buf_size();
        let large = cx.large_pool().buf_size();
        let free =
            |cx: &mut TaskContext| (cx.small_pool().stats().free, cx.large_pool().stats().free);
        let (s0, l0) = free(cx);
        let a = cx.get_buffer(512).expect("small buffer");
        assert_eq!(a.capacity(), small);
        assert!(a.is_empty());
        let b = cx.get_buffer(small + 1).expect("large buffer");
        assert_eq!(b.capacity(), large);
        assert!(cx.get_buffer(large + 1).is_none(), "too big for any pool");
        assert_eq!(free(cx), (s0 - 1, l0 - 1));
        cx.put_buffer(a);
        cx.put_buffer(b);
        assert_eq!(free(cx), (s0, l0));
        // Exhaustion does not fall back to the large pool.
        let all: Vec<_> = (0..s0).map(|_| cx.get_buffer(1).expect("free")).collect();
        assert!(cx.get_buffer(1).is_none());
        assert_eq!(free(cx), (0, l0));
        for buf in all {
            cx.put_buffer(buf);
        }
    })
    .expect("task present");
}

/// Spawns a child on another reactor from inside a task.
struct Parent {
    child: Option<TaskHandle<Busy>>,
}

impl Task for Parent {
    fn poll(&mut self, cx: &mut TaskContext) -> PollStatus {
        if self.child.is_none() {
            let target = (cx.reactor_index() + 1) % cx.spawner().reactor_count();
            self.child = Some(
                cx.spawner()
                    .spawn(target, "child", |_| Busy { left: 1 })
                    .expect("spawn child"),
            );
            return PollStatus::Busy;
        }
        PollStatus::Idle
    }
}

#[test]
fn tasks_spawn_tasks_on_other_reactors() {
    let mut ex = LocalExecutor::new(2).expect("executor");
    let p = ex
        .spawn(0, "parent", |_| Parent { child: None })
        .expect("spawn");
    ex.run_until_idle(10);
    assert_eq!((ex.task_count(0), ex.task_count(1)), (1, 1));
    let child = ex
        .with_task(&p, |p, _| p.child.clone())
        .flatten()
        .expect("child spawned");
    assert_eq!(child.reactor_index(), 1);
    assert_eq!(ex.with_task(&child, |c, _| c.left), Some(0));
    assert!(matches!(
        ex.spawn(5, "x", |_| Idle),
        Err(ReactorError::NoSuchReactor { index: 5, count: 2 })
    ));
}

/// Stops itself from inside a message.
#[test]
fn stop_from_a_message_drops_later_messages() {
    let mut ex = LocalExecutor::new(1).expect("executor");
    let h = ex.spawn(0, "idle", |_| Idle).expect("spawn");
    let ran = Arc::new(Mutex::new(0));
    let r = Arc::clone(&ran);
    h.send(move |_, cx| {
        *r.lock().expect("lock") += 1;
        cx.request_stop();
    })
    .expect("send");
    let r = Arc::clone(&ran);
    h.send(move |_, _| *r.lock().expect("lock") += 10)
        .expect("send");
    ex.run_until_idle(10);
    assert_eq!(*ran.lock().expect("lock"), 1);
    assert!(h.is_closed());
    assert_eq!(ex.task_count(0), 0);
    assert_eq!(h.send(|_, _| {}), Err(SendError::Closed));
}

struct SlowStop {
    polls_after_shutdown: Option<u32>,
}

impl Task for SlowStop {
    fn poll(&mut self, _cx: &mut TaskContext) -> PollStatus {
        if let Some(n) = &mut self.polls_after_shutdown {
            *n += 1;
        }
        PollStatus::Idle
    }
    fn on_shutdown(&mut self, _cx: &mut TaskContext) {
        assert!(
            self.polls_after_shutdown.is_none(),
            "on_shutdown called twice"
        );
        self.polls_after_shutdown = Some(0);
    }
    fn is_finished(&self) -> bool {
        self.polls_after_shutdown.is_some_and(|n| n >= 2)
    }
}

#[test]
fn local_shutdown_waits_for_tasks_and_is_bounded() {
    let ex = LocalExecutor::new(1).expect("executor");
    let h = ex
        .spawn(0, "slow", |_| SlowStop {
            polls_after_shutdown: None,
        })
        .expect("spawn");
    let mut ex = ex;
    ex.run_once();
    ex.shutdown(5).expect("finishes after two polls");
    assert!(h.is_closed());

    let mut ex = LocalExecutor::new(1).expect("executor");
    ex.spawn(0, "slow", |_| SlowStop {
        polls_after_shutdown: None,
    })
    .expect("spawn");
    ex.run_once();
    assert!(matches!(
        ex.shutdown(1),
        Err(ReactorError::ShutdownTimeout {
            index: 0,
            pending: 1
        })
    ));
}

#[test]
fn wakeup_fds_register_and_unregister() {
    use std::os::fd::AsFd;
    let (a, _b) = std::os::unix::net::UnixStream::pair().expect("socketpair");
    let mut ex = LocalExecutor::new(1).expect("executor");
    let h = ex.spawn(0, "idle", |_| Idle).expect("spawn");
    ex.run_once();
    ex.with_task(&h, |_, cx| {
        cx.register_wakeup_fd(a.as_fd()).expect("register");
        assert!(
            cx.register_wakeup_fd(a.as_fd()).is_err(),
            "twice is an error"
        );
    });
    assert_eq!(ex.registered_fds(0), 1);
    ex.with_task(&h, |_, cx| {
        cx.unregister_wakeup_fd(a.as_fd()).expect("unregister")
    });
    assert_eq!(ex.registered_fds(0), 0);
}
