//! The steady-state reactor loop does not touch the allocator: tasks polling, timers firing and
//! re-arming, buffers taken and returned, wake_at requests. (One test per binary: the
//! allocation counter is process-wide.)

use std::alloc::System;
use std::time::Duration;

use ferrite_reactor::{LocalExecutor, PollStatus, Task, TaskContext, TimerId, Timers};
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// A busy-ish task: periodic timers, a keep-alive re-armed every poll, buffer churn.
struct Worker {
    timers: Timers<u32>,
    fired: Vec<u32>,
    keep_alive: Option<TimerId>,
    fires: u64,
    polls: u64,
}

impl Task for Worker {
    fn poll(&mut self, cx: &mut TaskContext) -> PollStatus {
        self.polls += 1;
        let now = cx.now();
        let n = self.timers.expired(now, &mut self.fired);
        for key in self.fired.drain(..) {
            self.fires += 1;
            self.timers
                .schedule(now + Duration::from_micros(u64::from(key) * 150), key);
        }
        let ka = now + Duration::from_secs(5);
        match self.keep_alive {
            Some(id) if self.timers.reschedule(id, ka) => {}
            _ => self.keep_alive = Some(self.timers.schedule(ka, 0)),
        }
        if let Some(at) = self.timers.next_deadline() {
            cx.wake_at(at);
        }
        let small = cx.get_buffer(4096);
        let large = cx.get_buffer(64 * 1024);
        if let Some(mut b) = small {
            b.set_len(512);
            b.as_mut_slice()[0] = 1;
            cx.put_buffer(b);
        }
        if let Some(b) = large {
            cx.put_buffer(b);
        }
        PollStatus::from_busy(n > 0 || self.polls % 3 == 0)
    }
}

#[test]
fn steady_state_iterations_do_not_allocate() {
    let mut ex = LocalExecutor::new(2).expect("executor");
    let handles: Vec<_> = (0..4)
        .map(|i| {
            ex.spawn(i % 2, "worker", |cx| {
                let mut timers = Timers::with_capacity(16);
                for key in 1..=8 {
                    timers.schedule(cx.now(), key);
                }
                Worker {
                    timers,
                    fired: Vec::with_capacity(16),
                    keep_alive: None,
                    fires: 0,
                    polls: 0,
                }
            })
            .expect("spawn")
        })
        .collect();
    // Warm up: spawns, first timers, storage at its high-water mark.
    for _ in 0..2000 {
        ex.run_once();
        ex.advance(Duration::from_micros(100));
    }
    let region = Region::new(GLOBAL);
    for _ in 0..20_000 {
        ex.run_once();
        ex.advance(Duration::from_micros(100));
    }
    let change = region.change();
    let fires: u64 = handles
        .iter()
        .map(|h| ex.with_task(h, |w, _| w.fires).expect("task alive"))
        .sum();
    assert!(fires > 10_000, "timers really fired: {fires}");
    assert_eq!(
        (change.allocations, change.reallocations),
        (0, 0),
        "steady state allocated: {change:?}"
    );
}
