//! Load against a real `ferrited`: 16 controllers x 4 I/O queues doing verified random reads
//! and writes of 4 KiB to 128 KiB at QD 8 per queue, from several threads, through the
//! `ferrite-perf` engine (`ferrite_perf::engine`). No error, no verify mismatch, every command
//! completes within 10 s, and the target's memory is the same after warm-up and at the end.
//!
//! `FERRITE_LOAD_SECS=300 cargo test -p ferrite-daemon --test load -- --nocapture` runs it for
//! minutes and prints the figures.

mod common;

use std::time::Duration;

use common::{free_port, ram_config_for, Ferrited, NQN};
use ferrite_perf::{engine, IoSize, PerfConfig, PerfReport, TransportId, Workload};

const CONTROLLERS: u16 = 16;
const QUEUES: u16 = 4;
const QUEUE_DEPTH: u16 = 8;
/// The stall bound: a command that takes longer fails the run.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_SECS: u64 = 20;
/// Warm-up phase before the memory baseline.
const WARM_UP: Duration = Duration::from_secs(3);
/// Allowed VmRSS growth from after the warm-up to the end.
const RSS_SLACK_KIB: u64 = 16 * 1024;

/// Namespace size: 64 verify regions (one per queue) of 1 MiB.
const NAMESPACE_MIB: usize = 64;

/// A RAM namespace of [`NAMESPACE_MIB`] (its pages become resident as they are first written).
fn load_config(port: u16) -> String {
    ram_config_for(NQN, port, &format!("{NAMESPACE_MIB}MiB"), &[])
}

fn seconds() -> u64 {
    std::env::var("FERRITE_LOAD_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|&s| s > 0)
        .unwrap_or(DEFAULT_SECS)
}

fn config(t: &Ferrited, duration: Duration, seed: u64) -> PerfConfig {
    let tid = TransportId {
        trtype: ferrite_host::Trtype::Tcp,
        addr: t.addr,
        subnqn: NQN.into(),
        hostnqn: None,
        nsid: 1,
    };
    let mut c = PerfConfig::new(vec![tid]);
    c.controllers = CONTROLLERS;
    c.qpairs = QUEUES;
    c.queue_depth = QUEUE_DEPTH;
    c.time = duration;
    c.io_size = IoSize {
        min: 4096,
        max: 128 * 1024,
    };
    c.workload = Workload::RandRw;
    c.rwmixread = 50;
    c.verify = true;
    // Four worker threads, two per core of this small machine (shared with the target).
    let ncpu = std::thread::available_parallelism().map_or(1, |n| n.get());
    c.cores = (0..4).map(|i| i % ncpu).collect();
    c.seed = seed;
    c.timeout = COMMAND_TIMEOUT;
    c
}

/// Runs one load phase in a thread so the caller can sample the target meanwhile.
fn phase(cfg: PerfConfig) -> std::thread::JoinHandle<PerfReport> {
    std::thread::spawn(move || {
        let outcome = engine::run(&cfg).unwrap_or_else(|e| panic!("load run failed: {e}"));
        if let Some(e) = outcome.error {
            panic!("load run failed: {e}\n{}", outcome.report);
        }
        outcome.report
    })
}

fn check(report: &PerfReport, what: &str) {
    eprintln!("{what}:\n{report}");
    let s = &report.total;
    assert!(
        s.reads > 0 && s.writes > 0,
        "{what}: both reads and writes ran"
    );
    assert!(s.verified_blocks > 0, "{what}: reads were verified");
    let l = &s.latency_us;
    assert!(
        l.max < COMMAND_TIMEOUT.as_secs_f64() * 1e6,
        "{what}: a command took {} us (avg {}, p50 {}, p99 {})",
        l.max,
        l.avg,
        l.p50,
        l.p99
    );
}

#[test]
fn sixteen_controllers_of_verified_random_io() {
    let mut t = Ferrited::start(&load_config(free_port()));
    let total = Duration::from_secs(seconds());
    // Touch every page of the RAM namespace first, so its memory is in the baseline.
    let mut c = t.connect(1);
    let zeroes = vec![0u8; 128 * 1024];
    for chunk in 0..(NAMESPACE_MIB * 8) as u64 {
        c.write(1, 1, chunk * 256, &zeroes, false)
            .expect("prefill the namespace");
    }
    c.disconnect();
    // Warm-up phase: every connection, pool buffer and allocator arena in use once, then the
    // memory baseline.
    let warm = phase(config(&t, WARM_UP, 0x10AD));
    let warm = warm.join().expect("warm-up thread");
    check(&warm, "warm-up");
    t.assert_alive("warm-up");
    let baseline = t.rss_kib();
    // The measured phase, sampling the target's memory as it runs.
    let main = phase(config(&t, total, 0x10AD_0001));
    let mut peak = baseline;
    while !main.is_finished() {
        std::thread::sleep(Duration::from_millis(500));
        if let Ok(Some(status)) = t.child.try_wait() {
            panic!(
                "ferrited exited under load: {status}\nlog:\n{}",
                t.log_text()
            );
        }
        peak = peak.max(t.rss_kib());
    }
    let report = main.join().expect("load thread");
    check(&report, "load");
    t.assert_alive("load");
    let end = t.rss_kib();
    eprintln!(
        "ferrited VmRSS: {baseline} KiB after warm-up, peak {peak} KiB, {end} KiB at the end \
         ({} s)",
        total.as_secs()
    );
    assert!(
        end <= baseline + RSS_SLACK_KIB && peak <= baseline + 2 * RSS_SLACK_KIB,
        "VmRSS grew: {baseline} KiB after warm-up, peak {peak} KiB, {end} KiB at the end"
    );
    let log = t.log_text();
    // Hosts leaving log warnings; protocol errors, errors and panics must not appear.
    for bad in [
        "ERROR",
        "terminating connection",
        "panicked",
        "keep-alive timeout expired",
    ] {
        assert!(
            !log.contains(bad),
            "{bad:?} in the target log under load:\n{log}"
        );
    }
    t.stop();
}
