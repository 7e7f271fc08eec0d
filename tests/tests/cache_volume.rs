//! Cached volumes through the real daemon (issue 14 item 3): `ferrite-perf --verify` on a
//! cached volume in each write policy; `kill -9` of ferrited while it writes back, restart,
//! every block checked against the oracle (then drained and checked on the backing file);
//! a cache that fills delays writers and drops nothing.

use std::net::SocketAddr;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use ferrite_e2e::ferrited;
use ferrite_e2e::managed::ManagedFerrited;
use ferrite_host::{ConnectOptions, Controller};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

const NQN: &str = "nqn.2026-01.io.ferrite:cache";
const BLOCK: usize = 4096;

/// `ferrite.toml` with a file bdev `back{i}` (the backing store, `backing` big) and a file
/// bdev `fast{i}` (the cache device, `cache` big) per policy, and a cached volume `cached{i}`
/// exported as NSID i+1. `delay_us`: a delay bdev between the cache and the backing file
/// (a slow remote).
fn config(
    dir: &Path,
    data: &Path,
    policies: &[&str],
    backing: &str,
    cache: &str,
    delay_us: u64,
) -> PathBuf {
    let mut text = String::from("cores = \"0\"\n");
    let mut ns = String::new();
    for (i, policy) in policies.iter().enumerate() {
        let back = data.join(format!("back{i}.img"));
        let fast = data.join(format!("fast{i}.img"));
        text += &format!(
            "[[bdev]]\nname = \"back{i}\"\nkind = \"file\"\npath = {:?}\nsize = \"{backing}\"\nblock_size = 4096\n\
             [[bdev]]\nname = \"fast{i}\"\nkind = \"file\"\npath = {:?}\nsize = \"{cache}\"\nblock_size = 4096\n",
            back.display().to_string(),
            fast.display().to_string()
        );
        let mut base = format!("back{i}");
        if delay_us > 0 {
            text += &format!(
                "[[bdev]]\nname = \"slow{i}\"\nkind = \"delay\"\nbase = \"back{i}\"\n\
                 [bdev.latency]\navg_write_us = {delay_us}\np99_write_us = {delay_us}\n"
            );
            base = format!("slow{i}");
        }
        text += &format!(
            "[[bdev]]\nname = \"cached{i}\"\nkind = \"cache\"\nbase = \"{base}\"\n\
             [bdev.cache]\ndevice = \"fast{i}\"\nwrite_policy = \"{policy}\"\n"
        );
        ns += &format!(
            "[[subsystem.namespaces]]\nnsid = {}\nbdev = \"cached{i}\"\n",
            i + 1
        );
    }
    text += &format!("[[subsystem]]\nnqn = \"{NQN}\"\nallow_any_host = true\n{ns}");
    let path = dir.join("ferrite.toml");
    std::fs::write(&path, text).expect("write ferrite.toml");
    path
}

fn perf_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .expect("target directory")
        .join("ferrite-perf");
    assert!(
        bin.is_file(),
        "{} is missing: run `cargo build --workspace --bins` first (the tests README command)",
        bin.display()
    );
    bin
}

fn connect(addr: SocketAddr) -> Controller {
    let mut opts = ConnectOptions::new(addr, NQN);
    opts.timeout = Duration::from_secs(30);
    opts.kato_ms = 0;
    Controller::connect(opts).expect("connect")
}

#[test]
fn perf_verify_on_a_cached_volume_in_each_policy() {
    let data = ferrited::data_dir().expect("data directory");
    let dir = tempfile::tempdir().expect("control directory");
    let now = ferrite_cache::policy::utc_minute_now();
    // A window that is open now (it must write back during the run).
    let window = format!(
        "window:{:02}:{:02}-{:02}:{:02}",
        now / 60,
        now % 60,
        (now + 30) % 1440 / 60,
        (now + 30) % 60
    );
    let policies = ["write_through", "immediate", "interval:1s", window.as_str()];
    let cfg = config(dir.path(), data.path(), &policies, "32MiB", "8MiB", 0);
    let port = ferrited::free_port().expect("port");
    let mut target = ManagedFerrited::start(dir.path(), port, Some(&cfg)).expect("ferrited starts");
    for (i, policy) in policies.iter().enumerate() {
        let tid = format!(
            "trtype:tcp traddr:127.0.0.1 trsvcid:{port} subnqn:{NQN} ns:{}",
            i + 1
        );
        // Random writes, then the same sequential reads twice (the second run hits). The span
        // (1024 lines) fits in the cache (2031 lines): over the whole volume a fast machine
        // reads past the cache's size in one second and the second pass finds nothing left.
        for w in ["randwrite", "read", "read"] {
            let out = Command::new(perf_binary())
                .args(["-r", &tid, "-w", w, "-t", "1", "--warmup", "0", "-q", "8"])
                .args(["--span", "4m"])
                .args([
                    "--rwmixread",
                    "60",
                    "--verify",
                    "--timeout",
                    "20",
                    "--no-progress",
                ])
                .output()
                .expect("run ferrite-perf");
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "{policy} {w}: {text}\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let got = target.call("bdev_cache_get", json!({"name": format!("cached{i}")}));
        let stats = &got[0]["stats"];
        assert!(
            stats["read_hits"].as_u64().unwrap_or(0) > 0,
            "{policy}: {got}"
        );
        if *policy != "write_through" {
            // Write-back: hosts must see a volatile write cache (they then send Flush).
            assert_eq!(got[0]["volatile_write_cache"], json!(true), "{policy}");
        }
    }
    // Every write-back policy got its data to the backing store (interval and window on their
    // own, immediate too), or drains on request.
    for i in 0..policies.len() {
        target.call("bdev_cache_flush", json!({"name": format!("cached{i}")}));
        let got = target.call("bdev_cache_get", json!({"name": format!("cached{i}")}));
        assert_eq!(got[0]["stats"]["dirty_bytes"], json!(0), "{got}");
    }
    let stats = target.call("stats_get", json!(null));
    assert_eq!(stats["caches"].as_array().map(Vec::len), Some(4), "{stats}");
    target.stop().expect("clean stop");
}

/// The content of block `lba` at generation `g` (0: zeroes).
fn pattern(lba: u64, g: u64) -> Vec<u8> {
    if g == 0 {
        return vec![0; BLOCK];
    }
    let mut v = vec![0u8; BLOCK];
    for (i, c) in v.chunks_mut(8).enumerate() {
        c.copy_from_slice(&(lba.wrapping_mul(0x9e37_79b9) ^ g ^ (i as u64) << 40).to_le_bytes());
    }
    v
}

#[test]
fn kill9_during_write_back_loses_no_flushed_write() {
    let data = ferrited::data_dir().expect("data directory");
    let dir = tempfile::tempdir().expect("control directory");
    // A slow backing store (2 ms per write) and a write-back every second, so that dirty data
    // is waiting or being written back at the kill.
    let cfg = config(
        dir.path(),
        data.path(),
        &["interval:1s"],
        "16MiB",
        "8MiB",
        2000,
    );
    let port = ferrited::free_port().expect("port");
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut target = ManagedFerrited::start(dir.path(), port, Some(&cfg)).expect("ferrited starts");
    let blocks = 1024u64;
    // Per block: the generation at the last flush and those written since.
    let mut durable = vec![0u64; blocks as usize];
    let mut since: Vec<Vec<u64>> = vec![Vec::new(); blocks as usize];
    let mut rng = StdRng::seed_from_u64(14);
    let mut dirty_at_kill = 0;
    for round in 1..=3u64 {
        let mut ctrl = connect(addr);
        let mut g = round << 32;
        let deadline = Instant::now() + Duration::from_millis(1200);
        while Instant::now() < deadline {
            g += 1;
            let lba = rng.gen_range(0..blocks - 4);
            let n = rng.gen_range(1..=4u64);
            let mut buf = Vec::new();
            for b in lba..lba + n {
                buf.extend(pattern(b, g));
                since[b as usize].push(g);
            }
            ctrl.write(1, 1, lba, &buf, false).expect("write");
            if rng.gen_ratio(1, 3) {
                ctrl.flush(1, 1).expect("flush");
                for b in 0..blocks as usize {
                    if let Some(&last) = since[b].last() {
                        durable[b] = last;
                        since[b].clear();
                    }
                }
            }
        }
        let lag = target.call("bdev_cache_get", json!({"name": "cached0"}));
        dirty_at_kill += lag[0]["stats"]["dirty_bytes"].as_u64().unwrap_or(0);
        drop(ctrl);
        target.kill9();
        target.restart().expect("restart after kill -9");
        let mut ctrl = connect(addr);
        let mut buf = vec![0u8; BLOCK];
        for b in 0..blocks {
            ctrl.read(1, 1, b, 1, &mut buf).expect("read");
            let ok = buf == pattern(b, durable[b as usize])
                || since[b as usize].iter().any(|&g| buf == pattern(b, g));
            assert!(ok, "round {round}: block {b} lost its flushed write");
            // What is there now is the baseline of the next round.
            let found = std::iter::once(durable[b as usize])
                .chain(since[b as usize].iter().copied())
                .find(|&g| buf == pattern(b, g))
                .expect("checked");
            durable[b as usize] = found;
            since[b as usize].clear();
        }
    }
    assert!(
        dirty_at_kill > 0,
        "no kill happened with data left to write back"
    );
    // Write-back resumed after the restarts: drained, the backing file holds the oracle.
    target.call("bdev_cache_flush", json!({"name": "cached0"}));
    target.stop().expect("clean stop");
    let file = std::fs::File::open(data.path().join("back0.img")).expect("backing file");
    let mut buf = vec![0u8; BLOCK];
    for b in 0..blocks {
        file.read_exact_at(&mut buf, b * BLOCK as u64)
            .expect("read backing");
        assert!(
            buf == pattern(b, durable[b as usize]),
            "backing block {b} differs from the volume"
        );
    }
}

#[test]
fn a_full_cache_delays_writers_and_drops_nothing() {
    let data = ferrited::data_dir().expect("data directory");
    let dir = tempfile::tempdir().expect("control directory");
    // 1 MiB of cache (about 250 lines) under 8 MiB of writes, nothing scheduled to write back.
    let cfg = config(
        dir.path(),
        data.path(),
        &["interval:1h"],
        "16MiB",
        "1MiB",
        0,
    );
    let port = ferrited::free_port().expect("port");
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut target = ManagedFerrited::start(dir.path(), port, Some(&cfg)).expect("ferrited starts");
    let mut ctrl = connect(addr);
    let blocks = 2048u64;
    for lba in (0..blocks).step_by(8) {
        let buf: Vec<u8> = (lba..lba + 8).flat_map(|b| pattern(b, 7)).collect();
        ctrl.write(1, 1, lba, &buf, false)
            .expect("a throttled write still succeeds");
    }
    let got = target.call("bdev_cache_get", json!({"name": "cached0"}));
    let s = &got[0]["stats"];
    assert!(s["throttled_writes"].as_u64().unwrap_or(0) > 0, "{got}");
    assert!(s["written_back_bytes"].as_u64().unwrap_or(0) > 0, "{got}");
    let mut buf = vec![0u8; BLOCK];
    for b in 0..blocks {
        ctrl.read(1, 1, b, 1, &mut buf).expect("read");
        assert!(buf == pattern(b, 7), "block {b} was dropped");
    }
    drop(ctrl);
    target.stop().expect("clean stop");
}
