//! malloc and null backends.

mod common;

use std::sync::Arc;

use common::*;
use ferrite_bdev::{BdevError, BdevIo, BlockDevice, IoChannel, IoKind, MallocBdev, NullBdev};
use ferrite_reactor::{BufferPool, IoBuf};
use proptest::prelude::*;
use rand::{rngs::StdRng, Rng, SeedableRng};

#[test]
fn describes_itself() {
    let dev = MallocBdev::new("m0", 2048, 512).expect("create");
    assert_eq!(dev.name(), "m0");
    assert_eq!(dev.block_size(), 512);
    assert_eq!(dev.num_blocks(), 2048);
    let caps = dev.capabilities();
    assert!(caps.write_zeroes && caps.unmap && !caps.volatile_write_cache);
    assert!(caps.max_transfer_bytes >= 128 * 1024);
    let other = MallocBdev::new("m1", 8, 4096).expect("create");
    assert_ne!(dev.uuid(), other.uuid(), "random UUIDs differ");
    assert_eq!(other.with_uuid([7; 16]).uuid(), [7; 16]);
    assert!(matches!(
        MallocBdev::new("bad", 8, 520),
        Err(BdevError::InvalidConfig(_))
    ));
    assert!(matches!(
        MallocBdev::new("bad", 0, 512),
        Err(BdevError::InvalidConfig(_))
    ));
}

#[test]
fn random_patterns_read_back() {
    for bs in [512u32, 4096] {
        let dev = MallocBdev::new("m", 4096, bs).expect("create");
        let mut ch = dev.open_channel(&[]).expect("channel");
        let mut rng = StdRng::seed_from_u64(u64::from(bs));
        let mut written = Vec::new();
        for i in 0..200 {
            let blocks = rng.gen_range(1..=64u32);
            let lba = rng.gen_range(0..=dev.num_blocks() - u64::from(blocks));
            let data = pattern(i, blocks as usize * bs as usize);
            write(ch.as_mut(), bs, lba, &data, i % 3 == 0);
            assert_eq!(read(ch.as_mut(), bs, lba, blocks), data);
            written.push((lba, data));
        }
        // The last write of each block wins; check the last one fully.
        let (lba, data) = written.last().expect("wrote something");
        assert_eq!(
            &read(ch.as_mut(), bs, *lba, (data.len() / bs as usize) as u32),
            data
        );
    }
}

#[test]
fn completions_only_come_from_poll() {
    let dev = MallocBdev::new("m", 64, 512).expect("create");
    let mut ch = dev.open_channel(&[]).expect("channel");
    let mut buf = IoBuf::new(512);
    buf.set_len(512);
    let io = BdevIo::new(
        42,
        IoKind::Write {
            lba: 3,
            blocks: 1,
            fua: true,
        },
        Some(buf),
    );
    ch.submit(io).expect("accepted");
    ch.submit(BdevIo::new(43, IoKind::Flush, None))
        .expect("accepted");
    assert_eq!(ch.in_flight(), 2);
    let mut tags = Vec::new();
    assert_eq!(
        ch.poll(1, &mut |io, r| {
            r.expect("ok");
            tags.push(io.tag);
            assert!(io.buf.is_some(), "the write's buffer comes back");
        }),
        1
    );
    assert_eq!(ch.poll(8, &mut |io, _| tags.push(io.tag)), 1);
    assert_eq!(tags, vec![42, 43]);
    assert_eq!(ch.in_flight(), 0);
    let stats = ch.stats();
    assert_eq!((stats.submitted, stats.completed, stats.failed), (2, 2, 0));
}

#[test]
fn write_zeroes_and_unmap_read_back_zero() {
    let dev = MallocBdev::new("m", 256, 512).expect("create");
    let mut ch = dev.open_channel(&[]).expect("channel");
    let data = pattern(5, 256 * 512);
    for chunk in 0..4u64 {
        let part = &data[(chunk * 64 * 512) as usize..((chunk + 1) * 64 * 512) as usize];
        write(ch.as_mut(), 512, chunk * 64, part, false);
    }
    simple(
        ch.as_mut(),
        IoKind::WriteZeroes {
            lba: 10,
            blocks: 20,
        },
    )
    .expect("zeroes");
    simple(
        ch.as_mut(),
        IoKind::Unmap {
            lba: 100,
            blocks: 56,
        },
    )
    .expect("unmap");
    let got = read(ch.as_mut(), 512, 0, 256);
    for (i, (g, d)) in got.chunks(512).zip(data.chunks(512)).enumerate() {
        let zeroed = (10..30).contains(&i) || (100..156).contains(&i);
        if zeroed {
            assert!(g.iter().all(|&b| b == 0), "block {i} zeroed");
        } else {
            assert_eq!(g, d, "block {i} kept");
        }
    }
}

#[test]
fn invalid_requests_are_handed_back() {
    let dev = MallocBdev::new("m", 100, 512).expect("create");
    let mut ch = dev.open_channel(&[]).expect("channel");
    let read_io = |tag, lba, blocks, cap| {
        BdevIo::new(tag, IoKind::Read { lba, blocks }, Some(IoBuf::new(cap)))
    };
    let (io, e) = ch
        .submit(read_io(1, 99, 2, 1024))
        .expect_err("past the end");
    assert_eq!(io.tag, 1);
    assert!(io.buf.is_some(), "the buffer comes back");
    assert!(matches!(
        e,
        BdevError::OutOfRange {
            lba: 99,
            blocks: 2,
            num_blocks: 100
        }
    ));
    let (_, e) = ch
        .submit(read_io(2, 0, 16, 4096))
        .expect_err("buffer too small");
    assert!(matches!(
        e,
        BdevError::BufferTooSmall {
            needed: 8192,
            available: 4096
        }
    ));
    let (_, e) = ch
        .submit(BdevIo::new(
            3,
            IoKind::Write {
                lba: 0,
                blocks: 1,
                fua: false,
            },
            None,
        ))
        .expect_err("no buffer");
    assert!(matches!(e, BdevError::BufferTooSmall { available: 0, .. }));
    let (_, e) = ch
        .submit(BdevIo::new(
            4,
            IoKind::WriteZeroes {
                lba: 1,
                blocks: u64::MAX,
            },
            None,
        ))
        .expect_err("overflowing range");
    assert!(matches!(e, BdevError::OutOfRange { .. }));
    let big = MallocBdev::new("big", 1 << 16, 4096).expect("create");
    let mut bch = big.open_channel(&[]).expect("channel");
    let max = big.capabilities().max_transfer_bytes;
    let blocks = max / 4096 + 1;
    let (_, e) = bch
        .submit(read_io(5, 0, blocks, (blocks * 4096) as usize))
        .expect_err("too large");
    assert!(matches!(e, BdevError::TransferTooLarge { .. }));
    assert_eq!(ch.in_flight(), 0);
    assert_eq!(ch.stats().rejected, 4);
}

#[test]
fn queue_full_hands_back() {
    let dev = MallocBdev::new("m", 64, 512)
        .expect("create")
        .with_queue_depth(4);
    let mut ch = dev.open_channel(&[]).expect("channel");
    for tag in 0..4 {
        ch.submit(BdevIo::new(tag, IoKind::Flush, None))
            .expect("fits");
    }
    let (io, e) = ch
        .submit(BdevIo::new(9, IoKind::Flush, None))
        .expect_err("full");
    assert_eq!(io.tag, 9);
    assert!(matches!(e, BdevError::QueueFull) && e.is_retryable());
    assert_eq!(reap(ch.as_mut(), 4).len(), 4);
    ch.submit(io).expect("room again after poll");
    assert_eq!(reap(ch.as_mut(), 1).len(), 1);
    assert_eq!(ch.stats().queue_full, 1);
}

#[test]
fn pooled_buffers_work() {
    let dev = MallocBdev::new("m", 64, 4096).expect("create");
    let mut pool = BufferPool::new(4, 16 * 1024);
    let mut ch = dev.open_channel(&[pool.regions()]).expect("channel");
    let mut buf = pool.get().expect("free buffer");
    buf.set_len(16 * 1024);
    buf.as_mut_slice().copy_from_slice(&pattern(3, 16 * 1024));
    let (io, r) = run(
        ch.as_mut(),
        BdevIo::new(
            1,
            IoKind::Write {
                lba: 8,
                blocks: 4,
                fua: false,
            },
            Some(buf),
        ),
    );
    r.expect("write");
    pool.put(io.buf.expect("buffer back"));
    assert_eq!(read(ch.as_mut(), 4096, 8, 4), pattern(3, 16 * 1024));
    assert_eq!(pool.stats().free, 4);
}

#[test]
fn two_channels_on_two_threads_share_memory() {
    let dev = Arc::new(MallocBdev::new("m", 8192, 512).expect("create"));
    let threads: Vec<_> = (0..2u64)
        .map(|t| {
            let dev = Arc::clone(&dev);
            std::thread::spawn(move || {
                let mut ch = dev.open_channel(&[]).expect("channel");
                let base = t * 4096;
                let mut rng = StdRng::seed_from_u64(t);
                for i in 0..300u64 {
                    let blocks = rng.gen_range(1..=32u32);
                    let lba = base + rng.gen_range(0..=4096 - u64::from(blocks));
                    let data = pattern(t << 32 | i, blocks as usize * 512);
                    write(ch.as_mut(), 512, lba, &data, false);
                    assert_eq!(read(ch.as_mut(), 512, lba, blocks), data);
                }
                // A final known image of this thread's half.
                for chunk in 0..8u64 {
                    let data = pattern(1000 + t * 8 + chunk, 512 * 512);
                    write(ch.as_mut(), 512, base + chunk * 512, &data, false);
                }
                // Overlapping writes to a shared block: torn data is legal, UB is not.
                for i in 0..100u64 {
                    write(ch.as_mut(), 512, 8191, &pattern(i + t, 512), false);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("writer thread");
    }
    let mut ch = dev.open_channel(&[]).expect("channel");
    for t in 0..2u64 {
        for chunk in 0..8u64 {
            let lba = t * 4096 + chunk * 512;
            let blocks = if lba + 512 > 8191 { 511 } else { 512 };
            let expect = pattern(1000 + t * 8 + chunk, 512 * 512);
            assert!(
                read(ch.as_mut(), 512, lba, blocks) == expect[..blocks as usize * 512],
                "thread {t} chunk {chunk} seen from a third channel"
            );
        }
    }
}

/// The memory is allocated zeroed and mapped lazily: a large device costs little until written.
#[test]
fn large_device_is_lazily_backed() {
    fn rss_bytes() -> u64 {
        let statm = std::fs::read_to_string("/proc/self/statm").expect("statm");
        let pages: u64 = statm
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("resident pages");
        pages * 4096
    }
    let before = rss_bytes();
    let dev = MallocBdev::new("big", 4 << 20, 1024).expect("4 GiB device"); // 4 GiB
    let mut ch = dev.open_channel(&[]).expect("channel");
    write(ch.as_mut(), 1024, (4 << 20) - 1, &pattern(1, 1024), false);
    assert!(read(ch.as_mut(), 1024, 0, 64).iter().all(|&b| b == 0));
    simple(
        ch.as_mut(),
        IoKind::WriteZeroes {
            lba: 0,
            blocks: 1 << 20,
        },
    )
    .expect("zeroes");
    let grown = rss_bytes().saturating_sub(before);
    assert!(grown < 512 << 20, "resident memory grew by {grown} bytes");
}

#[test]
fn null_reads_zeroes_and_discards_writes() {
    let dev = NullBdev::new("n", 1 << 30, 4096).expect("create");
    assert_eq!(dev.num_blocks(), 1 << 30);
    let mut ch = dev.open_channel(&[]).expect("channel");
    write(ch.as_mut(), 4096, 5, &pattern(9, 8192), true);
    let mut buf = IoBuf::new(8192);
    buf.spare_mut().fill(0xff);
    let (io, r) = run(
        ch.as_mut(),
        BdevIo::new(1, IoKind::Read { lba: 5, blocks: 2 }, Some(buf)),
    );
    r.expect("read");
    let buf = io.buf.expect("buffer back");
    assert_eq!(buf.len(), 8192);
    assert!(buf.as_slice().iter().all(|&b| b == 0));
    simple(ch.as_mut(), IoKind::Flush).expect("flush");
    simple(
        ch.as_mut(),
        IoKind::Unmap {
            lba: 0,
            blocks: 1 << 30,
        },
    )
    .expect("unmap");
    let (_, e) = ch
        .submit(BdevIo::new(
            2,
            IoKind::Read {
                lba: 1 << 30,
                blocks: 1,
            },
            Some(IoBuf::new(4096)),
        ))
        .expect_err("out of range");
    assert!(matches!(e, BdevError::OutOfRange { .. }));
    let dev = NullBdev::new("n", 16, 512)
        .expect("create")
        .with_queue_depth(2);
    let mut ch = dev.open_channel(&[]).expect("channel");
    ch.submit(BdevIo::new(1, IoKind::Flush, None))
        .expect("fits");
    ch.submit(BdevIo::new(2, IoKind::Flush, None))
        .expect("fits");
    let (_, e) = ch
        .submit(BdevIo::new(3, IoKind::Flush, None))
        .expect_err("full");
    assert!(matches!(e, BdevError::QueueFull));
    assert_eq!(reap(ch.as_mut(), 2).len(), 2);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn malloc_matches_model(ops in ops_strategy(64, 16), big_blocks in any::<bool>()) {
        let bs = if big_blocks { 4096 } else { 512 };
        let dev = MallocBdev::new("m", 64, bs).expect("create");
        check_against_model(&dev, &ops);
    }
}

/// Trait objects are usable as the NVMe-oF layer will hold them.
#[test]
fn usable_as_trait_objects() {
    let devs: Vec<Arc<dyn BlockDevice>> = vec![
        Arc::new(MallocBdev::new("m", 8, 512).expect("create")),
        Arc::new(NullBdev::new("n", 8, 512).expect("create")),
    ];
    for dev in devs {
        let mut ch: Box<dyn IoChannel> = dev.open_channel(&[]).expect("channel");
        simple(ch.as_mut(), IoKind::Flush).expect("flush");
        assert!(ch.wakeup_fd().is_none());
    }
}
