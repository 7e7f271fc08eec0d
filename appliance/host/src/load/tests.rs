//! Load client runs against the fake target.

use std::time::Duration;

use super::*;
use crate::fake_target::{FakeConfig, FakeTarget};

fn cfg(t: &FakeTarget) -> LoadConfig {
    let mut c = LoadConfig::new(t.addr, "nqn.2024-01.io.ferrite:load");
    c.duration = Duration::from_millis(300);
    c.timeout = Duration::from_secs(5);
    c
}

#[test]
fn sizes_parse() {
    assert_eq!(SizeSpec::parse("4k").expect("ok"), SizeSpec::Fixed(4096));
    assert_eq!(SizeSpec::parse("1m").expect("ok"), SizeSpec::Fixed(1 << 20));
    assert_eq!(
        SizeSpec::parse("4k..128k").expect("ok"),
        SizeSpec::Random {
            min: 4096,
            max: 131_072
        }
    );
    assert!(SizeSpec::parse("128k..4k").is_err());
    assert!(SizeSpec::parse("0").is_err());
    assert!(SizeSpec::parse("lots").is_err());
}

#[test]
fn mixed_verified_load_runs_clean() {
    let t = FakeTarget::start(FakeConfig {
        blocks: 16384,
        in_capsule: 8192,
        r2t_chunk: 16 * 1024,
        ..FakeConfig::default()
    });
    let mut c = cfg(&t);
    c.controllers = 2;
    c.queues = 2;
    c.queue_depth = 8;
    c.size = SizeSpec::parse("4k..32k").expect("size");
    c.read_pct = 50;
    c.verify = true;
    c.cores = vec![0];
    let r = run(&c).expect("clean run");
    assert!(r.stats.writes > 0 && r.stats.reads > 0, "{r}");
    assert!(r.stats.verified_blocks > 0, "{r}");
    assert_eq!(
        r.stats.latency_ns.len(),
        r.stats.reads + r.stats.writes,
        "one latency sample per I/O"
    );
    let text = r.to_string();
    assert!(text.contains("IOPS") && text.contains("p99"), "{text}");
}

#[test]
fn misdirected_data_is_reported_with_its_lba() {
    let t = FakeTarget::start(FakeConfig::default());
    {
        // Every block claims to be the block after it.
        let mut disk = t.disk();
        stamp(&mut disk[..], 512, 1, 99);
    }
    let mut c = cfg(&t);
    c.verify = true;
    c.read_pct = 100;
    let err = run(&c).expect_err("mismatch");
    match &err {
        LoadError::Verify { mismatch, .. } => {
            assert_eq!(mismatch.kind, MismatchKind::WrongLba);
            assert_eq!(mismatch.found_lba, Some(mismatch.lba + 1));
        }
        other => panic!("unexpected {other}"),
    }
    assert!(err.to_string().contains("LBA"), "{err}");
}

#[test]
fn io_errors_stop_the_run() {
    let t = FakeTarget::start(FakeConfig::default());
    let mut c = cfg(&t);
    c.nsid = 2;
    // Namespace 2 does not exist: Identify fails at connect.
    assert!(matches!(run(&c), Err(LoadError::Connect { .. })));
    let mut c = cfg(&t);
    c.size = SizeSpec::Fixed(1000);
    assert!(matches!(run(&c), Err(LoadError::Config(_))));
}
