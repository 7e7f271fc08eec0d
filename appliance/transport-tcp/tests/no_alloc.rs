//! Steady-state allocations of the NVMe/TCP target path are zero.
//!
//! An in-process target (a reactor runtime, a malloc bdev, the TCP transport on 127.0.0.1)
//! serves a verified mixed workload from a `ferrite-host` queue pair with header and data
//! digests on: 4 KiB writes carried in-capsule, 32 KiB writes through R2T/H2CData, and reads
//! of each back through C2HData, compared against a pattern unique to (region, generation).
//! The global allocator counts every allocation of the process: the target's reactor threads
//! and the host alike (the host's queue pair is itself allocation-free in steady state, see
//! `appliance/host/tests/no_alloc.rs`).

mod common;

use std::alloc::System;
use std::time::{Duration, Instant};

use common::{rw, InProcess, BLOCK};
use ferrite_host::{Cid, Completed, Controller, Data, QueuePair, SglMode};
use ferrite_nvme::command::opcode;
use ferrite_reactor::RuntimeConfig;
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Regions of 64 blocks (32 KiB) the workload cycles through.
const REGIONS: usize = 64;
const REGION_BLOCKS: usize = 64;
const SMALL_BLOCKS: usize = 8;
const DEPTH: usize = 16;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Idle,
    Writing,
    Reading,
}

#[derive(Clone, Copy)]
struct RegionState {
    generation: u64,
    phase: Phase,
    cid: u16,
    blocks: usize,
}

/// A pattern unique to (region, generation), written into `out` without allocating.
fn fill(out: &mut [u8], region: usize, generation: u64) {
    for (i, chunk) in out.chunks_mut(8).enumerate() {
        let v = (region as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
            ^ generation.rotate_left(29)
            ^ (i as u64).wrapping_mul(0xD6E8_FEB8_6659_FD93);
        chunk.copy_from_slice(&v.to_le_bytes()[..chunk.len()]);
    }
}

fn command(op: u8, region: usize, blocks: usize) -> ferrite_nvme::Command {
    rw(op, 0, (region * REGION_BLOCKS) as u64, blocks)
}

struct Workload {
    regions: Vec<RegionState>,
    scratch: Vec<u8>,
    expect: Vec<u8>,
    out: Vec<Completed>,
    next_region: usize,
    writes: u64,
    in_capsule: u64,
}

impl Workload {
    fn new() -> Workload {
        Workload {
            regions: vec![
                RegionState {
                    generation: 0,
                    phase: Phase::Idle,
                    cid: 0,
                    blocks: 0,
                };
                REGIONS
            ],
            scratch: vec![0; REGION_BLOCKS * BLOCK],
            expect: vec![0; REGION_BLOCKS * BLOCK],
            out: Vec::with_capacity(64),
            next_region: 0,
            writes: 0,
            in_capsule: 0,
        }
    }

    /// Runs `ops` verified write+read pairs. Every write alternates between an in-capsule
    /// 4 KiB one and a 32 KiB one through R2T.
    fn run(&mut self, qp: &mut QueuePair, ops: usize) {
        let (mut started, mut verified, mut outstanding) = (0usize, 0usize, 0usize);
        let deadline = Instant::now() + Duration::from_secs(60);
        while verified < ops {
            assert!(Instant::now() < deadline, "stuck at {verified} of {ops}");
            while started < ops && outstanding < DEPTH {
                let r = self.next_region;
                self.next_region = (self.next_region + 1) % REGIONS;
                if self.regions[r].phase != Phase::Idle {
                    break;
                }
                let small = self.writes % 2 == 0;
                let blocks = if small { SMALL_BLOCKS } else { REGION_BLOCKS };
                let generation = self.regions[r].generation + 1;
                let data = &mut self.scratch[..blocks * BLOCK];
                fill(data, r, generation);
                let mode = if small {
                    SglMode::InCapsule
                } else {
                    SglMode::Transport
                };
                let cid = qp
                    .submit_with(
                        &command(opcode::io::WRITE, r, blocks),
                        Data::Write(data),
                        mode,
                    )
                    .expect("submit write");
                self.writes += 1;
                self.in_capsule += u64::from(small);
                self.regions[r] = RegionState {
                    generation,
                    phase: Phase::Writing,
                    cid: cid.0,
                    blocks,
                };
                started += 1;
                outstanding += 1;
            }
            self.out.clear();
            qp.poll(&mut self.out).expect("poll");
            for i in 0..self.out.len() {
                let c = &self.out[i];
                c.check().expect("command succeeds");
                assert!(!c.data_digest_error, "data digest error");
                let cid = c.cid;
                let r = self
                    .regions
                    .iter()
                    .position(|s| s.phase != Phase::Idle && s.cid == cid.0)
                    .expect("completion of a command in flight");
                let s = self.regions[r];
                match s.phase {
                    Phase::Writing => {
                        let len = (s.blocks * BLOCK) as u32;
                        let read = command(opcode::io::READ, r, s.blocks);
                        let cid = qp.submit(&read, Data::Read(len)).expect("submit read");
                        self.regions[r].phase = Phase::Reading;
                        self.regions[r].cid = cid.0;
                    }
                    Phase::Reading => {
                        let expect = &mut self.expect[..s.blocks * BLOCK];
                        fill(expect, r, s.generation);
                        assert!(
                            qp.data(Cid(s.cid)) == &expect[..],
                            "region {r} generation {}: read back other data",
                            s.generation
                        );
                        self.regions[r].phase = Phase::Idle;
                        outstanding -= 1;
                        verified += 1;
                    }
                    Phase::Idle => unreachable!("filtered above"),
                }
            }
            if self.out.is_empty() {
                qp.wait(Duration::from_millis(10)).expect("wait");
            }
        }
    }
}

#[test]
fn target_serves_a_mixed_verified_workload_without_allocating() {
    let t = InProcess::start(RuntimeConfig::testing(2), (REGIONS * REGION_BLOCKS) as u64);
    let mut opts = t.options();
    opts.header_digest = true;
    opts.data_digest = true;
    opts.io_queues = 1;
    opts.queue_depth = 32;
    opts.kato_ms = 600_000;
    let mut ctrl = Controller::connect(opts).expect("connect");
    let mut qp = ctrl.take_io_queues().pop().expect("one I/O queue");
    assert!(qp.negotiated().digests.header && qp.negotiated().digests.data);

    let mut w = Workload::new();
    // Warm-up: every region written and read once in both sizes; the host's buffers reach their
    // working sizes.
    w.run(&mut qp, 4 * REGIONS);
    // A host thread can still grow a buffer once when more PDUs than ever before pile up on a
    // loaded machine (bounded, not per I/O): one of four rounds must be allocation-free, and
    // none may allocate per I/O.
    const OPS: usize = 2000;
    let mut rounds = Vec::new();
    for _ in 0..4 {
        let region = Region::new(GLOBAL);
        w.run(&mut qp, OPS);
        let stats = region.change();
        rounds.push((stats.allocations, stats.reallocations));
    }
    println!(
        "target path allocations per round of {OPS} verified write+read pairs \
         ({} writes, {} in-capsule): {rounds:?}",
        w.writes, w.in_capsule
    );
    assert!(
        rounds.iter().any(|&(a, r)| a == 0 && r == 0),
        "no allocation-free round: {rounds:?}"
    );
    assert!(
        rounds.iter().all(|&(a, r)| a + r < OPS / 20),
        "allocations grow with I/O: {rounds:?}"
    );
    drop(qp);
    ctrl.disconnect();
    t.stop();
}
