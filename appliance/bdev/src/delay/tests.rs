use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrite_reactor::IoBuf;

use super::*;
use crate::MallocBdev;

fn dev(l: Latencies) -> DelayBdev {
    let base: Arc<dyn BlockDevice> = Arc::new(MallocBdev::new("m0", 64, 512).expect("malloc bdev"));
    DelayBdev::new("d0", base, l).expect("delay bdev")
}

/// Submits and waits (bounded by a deadline) for the completion; returns the time it took.
fn timed(ch: &mut dyn IoChannel, io: BdevIo) -> Duration {
    let start = Instant::now();
    ch.submit(io).map_err(|(_, e)| e).expect("submitted");
    let mut got = false;
    while !got {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "completion within 10 s"
        );
        ch.poll(8, &mut |_, r| {
            r.expect("served");
            got = true;
        });
    }
    start.elapsed()
}

fn read() -> BdevIo {
    BdevIo::new(1, IoKind::Read { lba: 0, blocks: 1 }, Some(IoBuf::new(512)))
}

#[test]
fn completions_wait_at_least_the_latency() {
    let d = dev(Latencies {
        avg_read_us: 20_000,
        p99_read_us: 20_000,
        avg_write_us: 0,
        p99_write_us: 0,
    });
    let mut ch = d.open_channel(&[]).expect("channel");
    assert!(timed(&mut *ch, read()) >= Duration::from_millis(20));
    d.update(LatencyType::AvgRead, 0).expect("valid");
    d.update(LatencyType::P99Read, 0).expect("valid");
    // A flush is a "write" kind: no latency configured.
    let _ = timed(&mut *ch, BdevIo::new(2, IoKind::Flush, None));
    assert_eq!(d.latencies(), Latencies::default());
}

#[test]
fn one_in_a_hundred_gets_the_tail() {
    let d = dev(Latencies {
        avg_read_us: 1,
        p99_read_us: 30_000,
        avg_write_us: 2,
        p99_write_us: 40_000,
    });
    let mut ch = DelayChannel {
        base: d.stacked.base.open_channel(&[]).expect("base channel"),
        shared: Arc::clone(&d.shared),
        held: VecDeque::new(),
        reaped: VecDeque::new(),
        count: [0; 2],
        stats: ChannelStats::default(),
    };
    let r = IoKind::Read { lba: 0, blocks: 1 };
    let reads: Vec<Duration> = (0..200).map(|_| ch.latency(&r)).collect();
    let tail: Vec<usize> = (0..200)
        .filter(|&i| reads[i] == Duration::from_millis(30))
        .collect();
    assert_eq!(tail, [99, 199]);
    assert!(
        reads
            .iter()
            .filter(|&&l| l == Duration::from_micros(1))
            .count()
            == 198
    );
    // Writes count separately.
    assert_eq!(ch.latency(&IoKind::Flush), Duration::from_micros(2));
    // And the tail is really held: the 100th read of a fresh channel waits >= 30 ms.
    let mut ch = d.open_channel(&[]).expect("channel");
    let times: Vec<Duration> = (0..100).map(|_| timed(&mut *ch, read())).collect();
    assert!(times[99] >= Duration::from_millis(30));
}

#[test]
fn invalid_latencies_are_refused() {
    let base: Arc<dyn BlockDevice> = Arc::new(MallocBdev::new("m0", 64, 512).expect("malloc bdev"));
    let bad = Latencies {
        avg_read_us: 10,
        p99_read_us: 5,
        ..Latencies::default()
    };
    // Refused at creation over RPC (`validate`), accepted by `new` as `update` can reach it
    // and a saved configuration must reopen.
    assert!(bad.validate().is_err());
    assert!(DelayBdev::new("d0", Arc::clone(&base), bad).is_ok());
    let too_long = Latencies {
        avg_write_us: MAX_LATENCY_US + 1,
        p99_write_us: MAX_LATENCY_US + 1,
        ..Latencies::default()
    };
    assert!(DelayBdev::new("d1", Arc::clone(&base), too_long).is_err());
    assert!(
        DelayBdev::new("m0", base, Latencies::default()).is_err(),
        "named as its base"
    );
    assert!("p50_read".parse::<LatencyType>().is_err());
    assert_eq!(
        "p99_write".parse::<LatencyType>().ok(),
        Some(LatencyType::P99Write)
    );
    let d = dev(Latencies::default());
    assert!(d.update(LatencyType::AvgWrite, MAX_LATENCY_US + 1).is_err());
}
