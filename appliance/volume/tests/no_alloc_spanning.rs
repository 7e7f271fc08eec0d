//! Reads and writes spanning two clusters do not touch the allocator once the channel's spare
//! temporary buffers are warm (one test per binary: the counter is process-wide).

mod common;

use std::alloc::System;

use common::*;
use ferrite_bdev::{BdevIo, BlockDevice, IoKind};
use ferrite_reactor::IoBuf;
use ferrite_volume::Provisioning;
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const CB: u64 = CLUSTER / BS as u64;

#[test]
fn reads_and_writes_spanning_clusters_do_not_allocate() {
    let (pool, _dev) = small_pool("na", 16);
    let v = pool
        .create_volume("v", 1 << 20, Provisioning::Thin)
        .expect("volume");
    let mut ch = v.open_channel(&[]).expect("channel");
    write(&mut *ch, 0, &pattern(1, 4096)).expect("allocate cluster 0");
    write(&mut *ch, CB, &pattern(2, 4096)).expect("allocate cluster 1");
    let mut wbuf = Some({
        let mut b = IoBuf::new(4096);
        b.set_len(4096);
        b
    });
    let mut rbuf = Some(IoBuf::new(4096));
    let mut cycle = |ch: &mut dyn ferrite_bdev::IoChannel| {
        let w = BdevIo::new(
            1,
            IoKind::Write {
                lba: CB - 4,
                blocks: 8,
                fua: false,
            },
            wbuf.take(),
        );
        ch.submit(w).map_err(|(_, e)| e).expect("write accepted");
        let r = BdevIo::new(
            2,
            IoKind::Read {
                lba: CB - 4,
                blocks: 8,
            },
            rbuf.take(),
        );
        ch.submit(r).map_err(|(_, e)| e).expect("read accepted");
        let mut got = 0;
        while got < 2 {
            got += ch.poll(2, &mut |io, res| {
                res.expect("completed");
                if io.tag == 1 {
                    wbuf = io.buf;
                } else {
                    rbuf = io.buf;
                }
            });
        }
    };
    for _ in 0..100 {
        cycle(&mut *ch);
    }
    let region = Region::new(GLOBAL);
    for _ in 0..10_000 {
        cycle(&mut *ch);
    }
    let change = region.change();
    assert_eq!(
        (change.allocations, change.reallocations),
        (0, 0),
        "{change:?}"
    );
    assert_eq!(v.stats().write_ops, 10_102);
    drop(ch);
}
