//! Threaded runtime behaviour: messages, calls, parking, accounting, shutdown.

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use ferrite_reactor::{
    CoreList, IdlePolicy, PollStatus, ReactorError, Runtime, RuntimeConfig, SendError, Task,
    TaskContext, TaskHandle,
};

const WAIT: Duration = Duration::from_secs(5);

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < WAIT, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Parks right away and for long: a reply within `WAIT` proves a wake-up, not a timeout.
fn parking_config(reactors: usize) -> RuntimeConfig {
    RuntimeConfig {
        idle: IdlePolicy::Park {
            after: Duration::ZERO,
            max: Duration::from_secs(60),
        },
        ..RuntimeConfig::testing(reactors)
    }
}

#[derive(Default)]
struct Recorder {
    seen: Vec<(u32, u32)>,
}

impl Task for Recorder {
    fn poll(&mut self, _cx: &mut TaskContext) -> PollStatus {
        PollStatus::Idle
    }
}

#[test]
fn handles_are_send_sync_clone_and_tasks_may_hold_non_send_state() {
    fn assert_send_sync<T: Send + Sync + Clone>() {}
    assert_send_sync::<TaskHandle<Recorder>>();
    assert_send_sync::<ferrite_reactor::Spawner>();

    struct Local(std::rc::Rc<u32>);
    impl Task for Local {
        fn poll(&mut self, _cx: &mut TaskContext) -> PollStatus {
            PollStatus::Idle
        }
    }
    assert_send_sync::<TaskHandle<Local>>();
    let rt = Runtime::start(RuntimeConfig::testing(1)).expect("start");
    let h = rt
        .spawn(0, "local", |_| Local(std::rc::Rc::new(7)))
        .expect("spawn");
    assert_eq!(h.call(|s, _| *s.0, WAIT), Ok(7));
    rt.shutdown().expect("clean shutdown");
}

#[test]
fn messages_from_each_sender_run_in_order() {
    let rt = Runtime::start(RuntimeConfig::testing(1)).expect("start");
    let h = rt.spawn(0, "rec", |_| Recorder::default()).expect("spawn");
    const N: u32 = 2000;
    let senders: Vec<_> = (0..3u32)
        .map(|sender| {
            let h = h.clone();
            std::thread::spawn(move || {
                for seq in 0..N {
                    loop {
                        match h.send(move |s: &mut Recorder, _| s.seen.push((sender, seq))) {
                            Ok(()) => break,
                            Err(SendError::Full) => std::thread::yield_now(),
                            Err(e) => panic!("send failed: {e}"),
                        }
                    }
                }
            })
        })
        .collect();
    for s in senders {
        s.join().expect("sender thread");
    }
    let seen = h
        .call(|s, _| std::mem::take(&mut s.seen), WAIT)
        .expect("call");
    assert_eq!(seen.len(), 3 * N as usize);
    for sender in 0..3 {
        let mine: Vec<u32> = seen
            .iter()
            .filter(|(s, _)| *s == sender)
            .map(|&(_, q)| q)
            .collect();
        assert_eq!(
            mine,
            (0..N).collect::<Vec<_>>(),
            "sender {sender} reordered"
        );
    }
    // Stats are published at the end of the iteration that ran the call.
    wait_until("message count", || rt.stats()[0].messages > 3 * N as u64);
    rt.shutdown().expect("clean shutdown");
}

#[test]
fn full_inbox_is_backpressure_with_a_counter() {
    let rt = Runtime::start(RuntimeConfig {
        inbox_capacity: 4,
        ..RuntimeConfig::testing(1)
    })
    .expect("start");
    let h = rt.spawn(0, "rec", |_| Recorder::default()).expect("spawn");
    // Block the reactor inside a message so the inbox fills up.
    let (entered_tx, entered_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    h.send(move |_, _| {
        entered_tx.send(()).expect("test waits");
        release_rx.recv_timeout(WAIT).expect("released");
    })
    .expect("first send");
    entered_rx
        .recv_timeout(WAIT)
        .expect("reactor entered the message");
    for i in 0..4 {
        h.send(move |s: &mut Recorder, _| s.seen.push((0, i)))
            .expect("room in the inbox");
    }
    assert_eq!(h.send(|_, _| {}), Err(SendError::Full));
    assert_eq!(h.send(|_, _| {}), Err(SendError::Full));
    assert!(SendError::Full.is_retryable());
    assert_eq!(h.full_count(), 2);
    assert_eq!(rt.stats()[0].inbox_full, 2);
    release_tx.send(()).expect("reactor waits");
    wait_until("the inbox to drain", || h.pending() == 0);
    let seen = h.call(|s, _| s.seen.clone(), WAIT).expect("inbox drained");
    assert_eq!(seen, vec![(0, 0), (0, 1), (0, 2), (0, 3)]);
    rt.shutdown().expect("clean shutdown");
}

struct Relay {
    peer: Option<TaskHandle<Recorder>>,
}

impl Task for Relay {
    fn poll(&mut self, _cx: &mut TaskContext) -> PollStatus {
        PollStatus::Idle
    }
}

#[test]
fn call_round_trips_across_reactors_and_refuses_self_deadlock() {
    let rt = Runtime::start(RuntimeConfig::testing(2)).expect("start");
    let b = rt.spawn(1, "b", |_| Recorder::default()).expect("spawn b");
    let b2 = b.clone();
    let a = rt
        .spawn(0, "a", move |_| Relay { peer: Some(b2) })
        .expect("spawn a");
    assert_eq!(a.reactor_index(), 0);
    assert_eq!(b.reactor_index(), 1);
    // Control thread -> reactor 0 -> (blocking call) reactor 1 -> back.
    let got = a
        .call(
            |relay, cx| {
                let peer = relay.peer.as_ref().expect("peer set");
                let from = cx.reactor_index();
                peer.call(
                    move |rec, cx| {
                        rec.seen.push((from as u32, 1));
                        cx.reactor_index() * 10 + rec.seen.len()
                    },
                    WAIT,
                )
            },
            WAIT,
        )
        .expect("outer call");
    assert_eq!(got, Ok(11));
    // A call into the reactor one is running on would wait for itself.
    let a2 = a.clone();
    let nested = a
        .call(move |_, _| a2.call(|_, _| 1, WAIT), WAIT)
        .expect("outer call");
    assert_eq!(nested, Err(SendError::WouldDeadlock));
    rt.shutdown().expect("clean shutdown");
}

#[test]
fn spawn_on_a_missing_reactor_is_an_error() {
    let rt = Runtime::start(RuntimeConfig::testing(1)).expect("start");
    let err = rt
        .spawn(3, "x", |_| Recorder::default())
        .expect_err("no reactor 3");
    assert!(matches!(
        err,
        ReactorError::NoSuchReactor { index: 3, count: 1 }
    ));
    rt.shutdown().expect("clean shutdown");
}

#[test]
fn parked_reactor_is_woken_by_send() {
    let rt = Runtime::start(parking_config(2)).expect("start");
    let h = rt.spawn(1, "rec", |_| Recorder::default()).expect("spawn");
    for round in 0..5u32 {
        wait_until("reactor 1 to park", || rt.stats()[1].parked);
        let start = Instant::now();
        assert_eq!(h.call(move |_, _| round, WAIT), Ok(round));
        log::info!("woken in {:?}", start.elapsed());
    }
    assert!(rt.stats()[1].parks >= 5);
    rt.shutdown().expect("clean shutdown");
}

#[test]
fn no_lost_wakeups_under_racing_sends() {
    // Every call races the reactor going to sleep (it parks at once when idle, for a minute):
    // a lost wake-up shows as a Timeout.
    let rt = Runtime::start(parking_config(2)).expect("start");
    let handles: Vec<_> = (0..2)
        .map(|i| rt.spawn(i, "rec", |_| Recorder::default()).expect("spawn"))
        .collect();
    let threads: Vec<_> = (0..2u32)
        .map(|t| {
            let hs = handles.clone();
            std::thread::spawn(move || {
                for i in 0..1500u32 {
                    let h = &hs[(i as usize + t as usize) % hs.len()];
                    assert_eq!(h.call(move |_, _| i, WAIT), Ok(i), "lost wake-up");
                    if i % 7 == 0 {
                        std::thread::sleep(Duration::from_micros(50));
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("caller thread");
    }
    let parks: u64 = rt.stats().iter().map(|s| s.parks).sum();
    assert!(parks > 0, "the test must exercise parking");
    rt.shutdown().expect("clean shutdown");
}

/// Reads a socket when woken; registers it as its wakeup fd.
struct SocketReader {
    sock: UnixStream,
    got: mpsc::Sender<Vec<u8>>,
}

impl Task for SocketReader {
    fn poll(&mut self, _cx: &mut TaskContext) -> PollStatus {
        let mut buf = [0u8; 64];
        match self.sock.read(&mut buf) {
            Ok(n) if n > 0 => {
                let _ = self.got.send(buf[..n].to_vec());
                PollStatus::Busy
            }
            _ => PollStatus::Idle,
        }
    }
}

#[test]
fn parked_reactor_is_woken_by_a_registered_fd() {
    let rt = Runtime::start(parking_config(1)).expect("start");
    let (ours, theirs) = UnixStream::pair().expect("socketpair");
    theirs.set_nonblocking(true).expect("nonblocking");
    let (tx, rx) = mpsc::channel();
    let (reg_tx, reg_rx) = mpsc::channel();
    rt.spawn(0, "reader", move |cx| {
        reg_tx
            .send(
                cx.register_wakeup_fd(theirs.as_fd())
                    .map_err(|e| e.to_string()),
            )
            .expect("test waits");
        SocketReader {
            sock: theirs,
            got: tx,
        }
    })
    .expect("spawn");
    reg_rx
        .recv_timeout(WAIT)
        .expect("init ran")
        .expect("registered");
    let mut ours = ours;
    for msg in [&b"one"[..], b"two"] {
        wait_until("reactor to park", || rt.stats()[0].parked);
        ours.write_all(msg).expect("write");
        assert_eq!(rx.recv_timeout(WAIT).expect("woken by fd"), msg);
    }
    rt.shutdown().expect("clean shutdown");
}

/// Asks to be woken at a deadline and reports when it sees it pass.
struct Alarm {
    at: Instant,
    fired: Option<mpsc::Sender<Instant>>,
}

impl Task for Alarm {
    fn poll(&mut self, cx: &mut TaskContext) -> PollStatus {
        if cx.now() >= self.at {
            if let Some(tx) = self.fired.take() {
                let _ = tx.send(cx.now());
            }
        } else {
            cx.wake_at(self.at);
        }
        PollStatus::Idle
    }
}

#[test]
fn park_ends_at_the_earliest_wake_at() {
    let rt = Runtime::start(parking_config(1)).expect("start");
    let (tx, rx) = mpsc::channel();
    let at = Instant::now() + Duration::from_millis(30);
    rt.spawn(0, "alarm", move |_| Alarm {
        at,
        fired: Some(tx),
    })
    .expect("spawn");
    let fired = rx
        .recv_timeout(WAIT)
        .expect("woke for the deadline, not the 60 s max");
    assert!(fired >= at);
    assert!(rt.stats()[0].parks >= 1);
    rt.shutdown().expect("clean shutdown");
}

/// Busy while `busy_polls` lasts.
struct Burner {
    busy_polls: u32,
}

impl Task for Burner {
    fn poll(&mut self, _cx: &mut TaskContext) -> PollStatus {
        if self.busy_polls > 0 {
            self.busy_polls -= 1;
            std::thread::sleep(Duration::from_micros(100));
            PollStatus::Busy
        } else {
            PollStatus::Idle
        }
    }
}

#[test]
fn busy_and_idle_time_move_in_the_right_direction() {
    let rt = Runtime::start(RuntimeConfig::testing(1)).expect("start");
    wait_until("some idle time", || rt.stats()[0].idle_ns > 0);
    let before = rt.stats()[0];
    let h = rt
        .spawn(0, "burner", |_| Burner { busy_polls: 100 })
        .expect("spawn");
    wait_until("the burn to end", || {
        h.call(|b, _| b.busy_polls, WAIT) == Ok(0)
    });
    let mid = rt.stats()[0];
    assert!(
        mid.busy_ns >= before.busy_ns + 100 * 100_000,
        "100 busy polls of >= 100 us: {before:?} -> {mid:?}"
    );
    wait_until("idle time to grow", || rt.stats()[0].idle_ns > mid.idle_ns);
    let after = rt.stats()[0];
    assert!(after.iterations > before.iterations);
    assert!(after.load() > 0.0 && after.load() < 1.0);
    assert_eq!(after.tasks, 1);
    rt.shutdown().expect("clean shutdown");
}

#[test]
fn poll_policy_never_parks() {
    let rt = Runtime::start(RuntimeConfig {
        idle: IdlePolicy::Poll,
        ..RuntimeConfig::testing(1)
    })
    .expect("start");
    let h = rt.spawn(0, "rec", |_| Recorder::default()).expect("spawn");
    assert_eq!(h.call(|_, _| 5, WAIT), Ok(5));
    wait_until("many idle iterations", || rt.stats()[0].iterations > 1000);
    assert_eq!(rt.stats()[0].parks, 0);
    rt.shutdown().expect("clean shutdown");
}

/// Finishes a few polls after `on_shutdown`; counts calls and drops.
struct Graceful {
    shutdowns: Arc<AtomicUsize>,
    drops: Arc<AtomicUsize>,
    polls_left: Option<u32>,
}

impl Task for Graceful {
    fn poll(&mut self, _cx: &mut TaskContext) -> PollStatus {
        match &mut self.polls_left {
            Some(n) if *n > 0 => {
                *n -= 1;
                PollStatus::Busy
            }
            _ => PollStatus::Idle,
        }
    }

    fn on_shutdown(&mut self, _cx: &mut TaskContext) {
        self.shutdowns.fetch_add(1, Ordering::SeqCst);
        self.polls_left = Some(3);
    }

    fn is_finished(&self) -> bool {
        self.polls_left == Some(0)
    }
}

impl Drop for Graceful {
    fn drop(&mut self) {
        self.drops.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn shutdown_runs_on_shutdown_once_waits_for_finish_and_joins() {
    let rt = Runtime::start(parking_config(2)).expect("start");
    let shutdowns = Arc::new(AtomicUsize::new(0));
    let drops = Arc::new(AtomicUsize::new(0));
    let mut handles = Vec::new();
    for i in 0..4 {
        let (s, d) = (Arc::clone(&shutdowns), Arc::clone(&drops));
        handles.push(
            rt.spawn(i % 2, "graceful", move |_| Graceful {
                shutdowns: s,
                drops: d,
                polls_left: None,
            })
            .expect("spawn"),
        );
    }
    for h in &handles {
        h.call(|_, _| (), WAIT).expect("task running");
    }
    wait_until("both reactors to park", || {
        rt.stats().iter().all(|s| s.parked)
    });
    rt.shutdown().expect("clean shutdown");
    assert_eq!(
        shutdowns.load(Ordering::SeqCst),
        4,
        "on_shutdown once per task"
    );
    assert_eq!(drops.load(Ordering::SeqCst), 4, "tasks dropped");
    for h in &handles {
        assert!(h.is_closed());
        assert_eq!(h.send(|_, _| {}), Err(SendError::Closed));
    }
}

struct Stubborn;

impl Task for Stubborn {
    fn poll(&mut self, _cx: &mut TaskContext) -> PollStatus {
        PollStatus::Idle
    }
    fn is_finished(&self) -> bool {
        false
    }
}

#[test]
fn shutdown_is_bounded_when_a_task_never_finishes() {
    let rt = Runtime::start(RuntimeConfig {
        shutdown_timeout: Duration::from_millis(50),
        ..RuntimeConfig::testing(2)
    })
    .expect("start");
    let h = rt.spawn(1, "stubborn", |_| Stubborn).expect("spawn");
    h.call(|_, _| (), WAIT).expect("running");
    let start = Instant::now();
    let err = rt.shutdown().expect_err("times out");
    assert!(
        matches!(
            err,
            ReactorError::ShutdownTimeout {
                index: 1,
                pending: 1
            }
        ),
        "{err}"
    );
    assert!(start.elapsed() < WAIT);
    assert!(h.is_closed());
}

struct StopAfter {
    left: u32,
}

impl Task for StopAfter {
    fn poll(&mut self, cx: &mut TaskContext) -> PollStatus {
        if self.left == 0 {
            cx.request_stop();
        }
        PollStatus::Idle
    }
}

#[test]
fn request_stop_removes_the_task_and_closes_its_inbox() {
    let rt = Runtime::start(RuntimeConfig::testing(1)).expect("start");
    let h = rt
        .spawn(0, "stopper", |_| StopAfter { left: 1 })
        .expect("spawn");
    assert_eq!(h.call(|_, _| 1, WAIT), Ok(1));
    h.send(|s, _| s.left = 0).expect("send");
    wait_until("task to stop", || h.is_closed());
    assert_eq!(h.call(|_, _| 1, WAIT), Err(SendError::Closed));
    wait_until("task count to drop", || rt.stats()[0].tasks == 0);
    rt.shutdown().expect("clean shutdown");
}

#[test]
fn pinning_to_a_missing_core_fails_start_cleanly() {
    let err = Runtime::start(RuntimeConfig {
        cores: "0,1000".parse::<CoreList>().expect("valid list"),
        pin: true,
        ..RuntimeConfig::testing(1)
    })
    .expect_err("core 1000 does not exist here");
    assert!(matches!(err, ReactorError::Pin { index: 1, .. }), "{err}");
}

#[test]
fn invalid_config_is_refused() {
    let err = Runtime::start(RuntimeConfig {
        inbox_capacity: 0,
        ..RuntimeConfig::testing(1)
    })
    .expect_err("zero inbox");
    assert!(matches!(err, ReactorError::Config(_)));
}

struct Panicker;

impl Task for Panicker {
    fn poll(&mut self, _cx: &mut TaskContext) -> PollStatus {
        PollStatus::Idle
    }
}

#[test]
fn a_panicking_reactor_is_reported_and_its_tasks_close() {
    let rt = Runtime::start(RuntimeConfig::testing(1)).expect("start");
    let h = rt.spawn(0, "panicker", |_| Panicker).expect("spawn");
    let _ = h.send(|_, _| panic!("deliberate test panic"));
    wait_until("the inbox to close", || h.is_closed());
    assert!(matches!(
        rt.spawn(0, "late", |_| Panicker),
        Err(ReactorError::ReactorGone { index: 0 })
    ));
    let err = rt.shutdown().expect_err("reactor 0 panicked");
    assert!(matches!(err, ReactorError::Panicked { index: 0 }), "{err}");
}

struct Counter(Arc<std::sync::atomic::AtomicU64>);

impl Task for Counter {
    fn poll(&mut self, _cx: &mut TaskContext) -> PollStatus {
        PollStatus::Idle
    }
}

#[test]
fn no_lost_wakeups_when_sends_hit_the_end_of_an_iteration() {
    // The sender spins for each message's effect and sends the next at once, so sends land
    // while the reactor is between "inbox empty" and "blocked in epoll".
    let rt = Runtime::start(parking_config(1)).expect("start");
    let count = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let c = Arc::clone(&count);
    let h = rt.spawn(0, "counter", move |_| Counter(c)).expect("spawn");
    for i in 0..5000u64 {
        h.send(|s, _| {
            s.0.fetch_add(1, Ordering::SeqCst);
        })
        .expect("send");
        let start = Instant::now();
        let mut spins = 0u32;
        while count.load(Ordering::SeqCst) <= i {
            std::hint::spin_loop();
            spins += 1;
            if spins % 1024 == 0 {
                assert!(
                    start.elapsed() < WAIT,
                    "message {i} never ran: lost wake-up"
                );
                std::thread::yield_now();
            }
        }
    }
    assert!(rt.stats()[0].parks > 0, "the test must exercise parking");
    rt.shutdown().expect("clean shutdown");
}
