//! Helpers shared by the backend tests: run requests to completion, patterns, an oracle.
#![allow(dead_code)] // each test binary uses a subset

use std::time::{Duration, Instant};

use ferrite_bdev::{BdevError, BdevIo, BlockDevice, IoChannel, IoKind};
use ferrite_reactor::IoBuf;

const TIMEOUT: Duration = Duration::from_secs(30);

/// Polls until `n` completions arrived; returns them in completion order.
pub fn reap(ch: &mut dyn IoChannel, n: usize) -> Vec<(BdevIo, Result<(), BdevError>)> {
    let mut out = Vec::with_capacity(n);
    let deadline = Instant::now() + TIMEOUT;
    while out.len() < n {
        let got = ch.poll(n - out.len(), &mut |io, r| out.push((io, r)));
        if got == 0 {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for completions"
            );
            std::thread::sleep(Duration::from_micros(20));
        }
    }
    out
}

/// Submits one request and waits for it.
pub fn run(ch: &mut dyn IoChannel, io: BdevIo) -> (BdevIo, Result<(), BdevError>) {
    if let Err((_, e)) = ch.submit(io) {
        panic!("submit refused: {e}");
    }
    reap(ch, 1).pop().expect("one completion")
}

pub fn write(ch: &mut dyn IoChannel, bs: u32, lba: u64, data: &[u8], fua: bool) {
    let mut buf = IoBuf::new(data.len());
    buf.set_len(data.len());
    buf.as_mut_slice().copy_from_slice(data);
    let blocks = (data.len() / bs as usize) as u32;
    let (_, r) = run(
        ch,
        BdevIo::new(lba, IoKind::Write { lba, blocks, fua }, Some(buf)),
    );
    r.expect("write succeeds");
}

pub fn read(ch: &mut dyn IoChannel, bs: u32, lba: u64, blocks: u32) -> Vec<u8> {
    let buf = IoBuf::new(blocks as usize * bs as usize);
    let (io, r) = run(
        ch,
        BdevIo::new(lba, IoKind::Read { lba, blocks }, Some(buf)),
    );
    r.expect("read succeeds");
    let buf = io.buf.expect("read returns its buffer");
    assert_eq!(buf.len(), blocks as usize * bs as usize);
    buf.as_slice().to_vec()
}

pub fn simple(ch: &mut dyn IoChannel, kind: IoKind) -> Result<(), BdevError> {
    run(ch, BdevIo::new(0, kind, None)).1
}

/// Deterministic bytes that differ per (seed, position).
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// One step of a model-checked workload.
#[derive(Debug, Clone)]
pub enum Op {
    Write {
        lba: u64,
        blocks: u32,
        seed: u64,
        fua: bool,
    },
    Read {
        lba: u64,
        blocks: u32,
    },
    Zeroes {
        lba: u64,
        blocks: u64,
    },
    Unmap {
        lba: u64,
        blocks: u64,
    },
    Flush,
}

/// Runs `ops` on `dev` and on a byte-array model; every read must match the model. Reads that
/// are out of range must be refused by both. Unmap is skipped where unsupported.
pub fn check_against_model(dev: &dyn BlockDevice, ops: &[Op]) {
    let bs = dev.block_size();
    let num = dev.num_blocks();
    let unmap = dev.capabilities().unmap;
    let mut model = vec![0u8; (num * u64::from(bs)) as usize];
    let mut ch = dev.open_channel(&[]).expect("open channel");
    let ch = ch.as_mut();
    let range = |lba: u64, blocks: u64| {
        let start = (lba * u64::from(bs)) as usize;
        start..start + (blocks * u64::from(bs)) as usize
    };
    for op in ops {
        let (lba, blocks) = match *op {
            Op::Write { lba, blocks, .. } | Op::Read { lba, blocks } => (lba, u64::from(blocks)),
            Op::Zeroes { lba, blocks } | Op::Unmap { lba, blocks } => (lba, blocks),
            Op::Flush => (0, 0),
        };
        let in_range = lba + blocks <= num;
        match *op {
            Op::Write {
                lba,
                blocks,
                seed,
                fua,
            } => {
                let data = pattern(seed, blocks as usize * bs as usize);
                if in_range {
                    write(ch, bs, lba, &data, fua);
                    model[range(lba, u64::from(blocks))].copy_from_slice(&data);
                } else {
                    let mut buf = IoBuf::new(data.len());
                    buf.set_len(data.len());
                    let io = BdevIo::new(1, IoKind::Write { lba, blocks, fua }, Some(buf));
                    let (_, e) = ch.submit(io).expect_err("out of range write refused");
                    assert!(matches!(e, BdevError::OutOfRange { .. }), "{e}");
                }
            }
            Op::Read { lba, blocks } => {
                if in_range {
                    let got = read(ch, bs, lba, blocks);
                    assert!(
                        got == model[range(lba, u64::from(blocks))],
                        "read lba {lba} blocks {blocks} differs from the model"
                    );
                } else {
                    let buf = IoBuf::new(blocks as usize * bs as usize);
                    let io = BdevIo::new(1, IoKind::Read { lba, blocks }, Some(buf));
                    let (_, e) = ch.submit(io).expect_err("out of range read refused");
                    assert!(matches!(e, BdevError::OutOfRange { .. }), "{e}");
                }
            }
            Op::Zeroes { lba, blocks } if in_range => {
                simple(ch, IoKind::WriteZeroes { lba, blocks }).expect("write zeroes");
                model[range(lba, blocks)].fill(0);
            }
            Op::Unmap { lba, blocks } if in_range && unmap => {
                simple(ch, IoKind::Unmap { lba, blocks }).expect("unmap");
                model[range(lba, blocks)].fill(0);
            }
            Op::Unmap { .. } if !unmap => {
                let io = BdevIo::new(1, IoKind::Unmap { lba, blocks }, None);
                ch.submit(io)
                    .expect_err("unmap refused where unsupported or out of range");
            }
            Op::Zeroes { lba, blocks } | Op::Unmap { lba, blocks } => {
                let kind = match op {
                    Op::Zeroes { .. } => IoKind::WriteZeroes { lba, blocks },
                    _ => IoKind::Unmap { lba, blocks },
                };
                let (_, e) = ch
                    .submit(BdevIo::new(1, kind, None))
                    .expect_err("out of range");
                assert!(matches!(e, BdevError::OutOfRange { .. }), "{e}");
            }
            Op::Flush => simple(ch, IoKind::Flush).expect("flush"),
        }
    }
    // Final full comparison, in max-transfer chunks.
    let chunk = u64::from(dev.capabilities().max_transfer_bytes / bs).min(num);
    let mut lba = 0;
    while lba < num {
        let blocks = chunk.min(num - lba);
        let got = read(ch, bs, lba, blocks as u32);
        assert!(
            got == model[range(lba, blocks)],
            "final image differs at lba {lba}"
        );
        lba += blocks;
    }
    assert_eq!(ch.in_flight(), 0);
}

/// proptest strategy for workloads on a device of `num` blocks (some ops past the end).
pub fn ops_strategy(
    num: u64,
    max_blocks: u32,
) -> impl proptest::strategy::Strategy<Value = Vec<Op>> {
    use proptest::prelude::*;
    let lba = 0..num + 2;
    let blocks = 1..=max_blocks;
    let op = prop_oneof![
        4 => (lba.clone(), blocks.clone(), any::<u64>(), any::<bool>())
            .prop_map(|(lba, blocks, seed, fua)| Op::Write { lba, blocks, seed, fua }),
        3 => (lba.clone(), blocks.clone()).prop_map(|(lba, blocks)| Op::Read { lba, blocks }),
        1 => (lba.clone(), blocks.clone())
            .prop_map(|(lba, blocks)| Op::Zeroes { lba, blocks: u64::from(blocks) }),
        1 => (lba, blocks).prop_map(|(lba, blocks)| Op::Unmap { lba, blocks: u64::from(blocks) }),
        1 => Just(Op::Flush),
    ];
    proptest::collection::vec(op, 1..40)
}
