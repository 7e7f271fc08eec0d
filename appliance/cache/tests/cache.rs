//! A cached volume over malloc devices against an in-memory oracle: every mode, eviction,
//! throttling, and a power cut of the cache device with recovery.

use std::sync::Arc;

use ferrite_bdev::{BdevError, BdevIo, BlockDevice, IoChannel, IoKind, MallocBdev, PowerCutBdev};
use ferrite_cache::{CacheBdev, CacheOptions, FlushTarget, Schedule, WritePolicy};
use ferrite_reactor::IoBuf;
use rand::{Rng, SeedableRng};

const BS: usize = 512;

fn run(ch: &mut dyn IoChannel, io: BdevIo) -> (BdevIo, Result<(), BdevError>) {
    if let Err((io, e)) = ch.submit(io) {
        return (io, Err(e));
    }
    let mut out = None;
    for _ in 0..2_000_000 {
        ch.poll(1, &mut |io, r| out = Some((io, r)));
        if let Some(o) = out.take() {
            return o;
        }
        std::thread::sleep(std::time::Duration::from_micros(50));
    }
    panic!("request never completed");
}

fn read(ch: &mut dyn IoChannel, lba: u64, blocks: u32) -> Vec<u8> {
    let io = BdevIo::new(
        1,
        IoKind::Read { lba, blocks },
        Some(IoBuf::new(blocks as usize * BS)),
    );
    let (io, r) = run(ch, io);
    r.expect("read");
    io.buf.expect("buffer").as_slice().to_vec()
}

fn write(ch: &mut dyn IoChannel, lba: u64, data: &[u8], fua: bool) {
    let mut buf = IoBuf::new(data.len());
    buf.set_len(data.len());
    buf.as_mut_slice().copy_from_slice(data);
    let kind = IoKind::Write {
        lba,
        blocks: (data.len() / BS) as u32,
        fua,
    };
    run(ch, BdevIo::new(2, kind, Some(buf))).1.expect("write");
}

fn flush(ch: &mut dyn IoChannel) {
    run(ch, BdevIo::new(3, IoKind::Flush, None))
        .1
        .expect("flush");
}

fn malloc(name: &str, blocks: u64) -> Arc<dyn BlockDevice> {
    Arc::new(MallocBdev::new(name, blocks, BS as u32).expect("malloc"))
}

fn opts(policy: &str) -> CacheOptions {
    CacheOptions {
        policy: policy.parse().expect("policy"),
        ..CacheOptions::default()
    }
}

/// Random reads, writes, flushes and zeroes against an oracle; returns the oracle.
fn exercise(dev: &CacheBdev, seed: u64, ops: usize) -> Vec<u8> {
    let blocks = dev.num_blocks();
    let mut oracle = vec![0u8; blocks as usize * BS];
    let mut ch = dev.open_channel(&[]).expect("channel");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for i in 0..ops {
        let n = rng.gen_range(1..=24u32);
        // Mostly a hot region, sometimes anywhere (misses and evictions).
        let hi = if rng.gen_bool(0.7) {
            blocks / 8
        } else {
            blocks
        };
        let lba = rng.gen_range(0..hi - u64::from(n));
        let r = lba as usize * BS..(lba as usize + n as usize) * BS;
        match rng.gen_range(0..10) {
            0..=4 => assert_eq!(
                read(&mut *ch, lba, n),
                oracle[r.clone()],
                "op {i} read {lba}+{n}"
            ),
            5..=7 => {
                let data: Vec<u8> = (0..r.len()).map(|_| rng.gen()).collect();
                write(&mut *ch, lba, &data, rng.gen_bool(0.1));
                oracle[r].copy_from_slice(&data);
            }
            8 => flush(&mut *ch),
            _ => {
                let kind = IoKind::WriteZeroes {
                    lba,
                    blocks: u64::from(n),
                };
                run(&mut *ch, BdevIo::new(4, kind, None)).1.expect("zeroes");
                oracle[r].fill(0);
            }
        }
    }
    oracle
}

fn backing_content(dev: &Arc<dyn BlockDevice>) -> Vec<u8> {
    let mut ch = dev.open_channel(&[]).expect("channel");
    let n = dev.num_blocks();
    let mut out = Vec::new();
    let mut lba = 0;
    while lba < n {
        let k = (n - lba).min(128) as u32;
        out.extend(read(&mut *ch, lba, k));
        lba += u64::from(k);
    }
    out
}

#[test]
fn every_mode_matches_the_oracle_and_reaches_the_backing_store() {
    for (i, policy) in [
        "write_through",
        "immediate",
        "interval:200ms",
        "window:00:00-23:59",
        "interval:1h",
    ]
    .into_iter()
    .enumerate()
    {
        let backing = malloc("backing", 8192);
        // 64 lines of 8 blocks: far smaller than the volume, so lines are evicted.
        let cache = malloc("cache", 1 + 2 + 64 * 8);
        let dev =
            CacheBdev::open("cached", Arc::clone(&backing), cache, opts(policy)).expect("open");
        assert_eq!(
            dev.capabilities().volatile_write_cache,
            policy != "write_through",
            "{policy}"
        );
        let oracle = exercise(&dev, i as u64, 3000);
        let s = dev.stats();
        assert!(s.read_hits > 0 && s.read_misses > 0, "{policy}: {s:?}");
        assert!(s.evictions > 0, "{policy}: {s:?}");
        dev.drain().expect("drain");
        assert_eq!(dev.stats().dirty_bytes, 0, "{policy}: dirty after drain");
        assert!(
            backing_content(&backing) == oracle,
            "{policy}: backing differs after drain"
        );
    }
}

#[test]
fn writers_are_throttled_not_failed_when_the_cache_fills() {
    let backing = malloc("backing", 4096);
    let cache = malloc("cache", 1 + 1 + 16 * 8);
    let o = CacheOptions {
        dirty_limit_percent: 25,
        ..opts("interval:1h")
    };
    let dev = CacheBdev::open("cached", Arc::clone(&backing), cache, o).expect("open");
    let mut ch = dev.open_channel(&[]).expect("channel");
    let mut oracle = vec![0u8; 4096 * BS];
    // Four times the cache's capacity, all dirty, nothing scheduled to write it back.
    for lba in (0..4 * 16 * 8).step_by(8) {
        let data: Vec<u8> = (0..8 * BS).map(|b| (b as u64 ^ lba) as u8).collect();
        write(&mut *ch, lba, &data, false);
        oracle[lba as usize * BS..(lba as usize + 8) * BS].copy_from_slice(&data);
        assert!(
            dev.stats().dirty_bytes <= 4 * 8 * BS as u64,
            "over the limit"
        );
    }
    let s = dev.stats();
    assert!(s.throttled_writes > 0, "{s:?}");
    assert!(s.written_back_bytes > 0, "{s:?}");
    assert_eq!(read(&mut *ch, 0, 128), oracle[..128 * BS]);
    dev.drain().expect("drain");
    assert!(backing_content(&backing) == oracle);
}

#[test]
fn a_power_cut_keeps_every_flushed_write_and_resumes_write_back() {
    for seed in 0..4u64 {
        let backing = malloc("backing", 4096);
        let cache_base = malloc("cache-base", 1 + 4 + 100 * 8);
        let cut = Arc::new(PowerCutBdev::new("cache", Arc::clone(&cache_base)).expect("cut"));
        let o = CacheOptions {
            line_size: 8 * BS as u32,
            ..opts("interval:1h")
        };
        let dev = CacheBdev::open("cached", Arc::clone(&backing), Arc::clone(&cut) as _, o)
            .expect("open");
        let mut ch = dev.open_channel(&[]).expect("channel");
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut flushed = vec![0u8; 4096 * BS];
        // Per block, the versions written since the last flush: any of them may survive.
        let mut since_flush: std::collections::HashMap<usize, Vec<Vec<u8>>> = Default::default();
        let mut newest = flushed.clone();
        for round in 0..20 {
            for _ in 0..10 {
                let n = rng.gen_range(1..16u32);
                let lba = rng.gen_range(0..400 - u64::from(n));
                let data: Vec<u8> = (0..n as usize * BS).map(|_| rng.gen()).collect();
                write(&mut *ch, lba, &data, false);
                newest[lba as usize * BS..][..data.len()].copy_from_slice(&data);
                for (i, blk) in data.chunks(BS).enumerate() {
                    since_flush
                        .entry(lba as usize + i)
                        .or_default()
                        .push(blk.to_vec());
                }
            }
            if round < 19 {
                flush(&mut *ch);
                flushed.clone_from(&newest);
                since_flush.clear();
            }
        }
        assert!(dev.stats().dirty_bytes > 0);
        cut.cut();
        drop(ch);
        drop(dev);
        cut.restore(seed).expect("restore");
        let dev = CacheBdev::open("cached", Arc::clone(&backing), Arc::clone(&cut) as _, o)
            .expect("reopen");
        assert!(dev.stats().dirty_bytes > 0, "dirty lines recovered");
        let mut ch = dev.open_channel(&[]).expect("channel");
        let got = read(&mut *ch, 0, 512);
        for b in 0..512 {
            let r = b * BS..(b + 1) * BS;
            let later = since_flush.get(&b).map_or(&[][..], Vec::as_slice);
            assert!(
                got[r.clone()] == flushed[r.clone()]
                    || later.iter().any(|v| got[r.clone()] == v[..]),
                "seed {seed}: block {b} holds neither the flushed data nor a later write"
            );
        }
        // Write-back resumes: drained, the backing store holds what the volume reads.
        drop(ch);
        dev.drain().expect("drain");
        assert!(backing_content(&backing)[..512 * BS] == got[..]);
    }
}

#[test]
fn a_cache_of_another_volume_is_refused_unless_formatted() {
    let backing = malloc("backing", 2048);
    let cache = malloc("cache", 1 + 2 + 50 * 8);
    let dev = CacheBdev::open(
        "cached",
        Arc::clone(&backing),
        Arc::clone(&cache),
        opts("interval:1h"),
    )
    .expect("open");
    let mut ch = dev.open_channel(&[]).expect("channel");
    write(&mut *ch, 0, &[7u8; BS], true);
    drop(ch);
    drop(dev);
    let other = malloc("other", 4096);
    let e = CacheBdev::open(
        "cached",
        Arc::clone(&other),
        Arc::clone(&cache),
        opts("immediate"),
    )
    .expect_err("refused");
    assert!(e.to_string().contains("format=true"), "{e}");
    // The right backing device gets its dirty block back.
    let dev = CacheBdev::open(
        "cached",
        Arc::clone(&backing),
        Arc::clone(&cache),
        opts("immediate"),
    )
    .expect("reopen");
    dev.drain().expect("drain");
    assert_eq!(backing_content(&backing)[..BS], [7u8; BS]);
    drop(dev);
    let forced = CacheOptions {
        format: true,
        ..opts("immediate")
    };
    CacheBdev::open("cached", other, cache, forced).expect("formatted");
}

#[test]
fn bad_configurations_are_refused() {
    let backing = malloc("backing", 2048);
    let cache = malloc("cache", 1024);
    let bad = |o: CacheOptions| {
        CacheBdev::open("c", Arc::clone(&backing), Arc::clone(&cache), o)
            .expect_err("refused")
            .to_string()
    };
    assert!(bad(CacheOptions {
        line_size: 1000,
        ..CacheOptions::default()
    })
    .contains("line size"));
    assert!(bad(CacheOptions {
        line_size: 65 * 512,
        ..CacheOptions::default()
    })
    .contains("line size"));
    assert!(bad(CacheOptions {
        dirty_limit_percent: 95,
        ..CacheOptions::default()
    })
    .contains("dirty limit"));
    let big: Arc<dyn BlockDevice> = Arc::new(MallocBdev::new("big", 100, 4096).expect("malloc"));
    let e =
        CacheBdev::open("c", Arc::clone(&backing), big, CacheOptions::default()).expect_err("bs");
    assert!(e.to_string().contains("4096-byte blocks"), "{e}");
    let e = CacheBdev::open(
        "backing",
        Arc::clone(&backing),
        cache,
        CacheOptions::default(),
    )
    .expect_err("same name");
    assert!(e.to_string().contains("three different"), "{e}");
    let tiny = malloc("tiny", 10);
    let e = CacheBdev::open("c", backing, tiny, CacheOptions::default()).expect_err("tiny");
    assert!(e.to_string().contains("fewer than 2 lines"), "{e}");
    assert_eq!(
        "window:02:00-04:00".parse::<WritePolicy>(),
        Ok(WritePolicy::WriteBack(Schedule::Window {
            start_min: 120,
            end_min: 240
        }))
    );
    assert_eq!("backing".parse::<FlushTarget>(), Ok(FlushTarget::Backing));
}

#[test]
fn flush_to_backing_drains_on_every_flush() {
    let backing = malloc("backing", 2048);
    let cache = malloc("cache", 1 + 2 + 60 * 8);
    let o = CacheOptions {
        flush: FlushTarget::Backing,
        ..opts("interval:1h")
    };
    let dev = CacheBdev::open("cached", Arc::clone(&backing), cache, o).expect("open");
    let mut ch = dev.open_channel(&[]).expect("channel");
    write(&mut *ch, 100, &[9u8; 4 * BS], false);
    assert_eq!(dev.stats().dirty_bytes, 4 * BS as u64);
    flush(&mut *ch);
    assert_eq!(dev.stats().dirty_bytes, 0);
    assert_eq!(backing_content(&backing)[100 * BS..104 * BS], [9u8; 4 * BS]);
}
