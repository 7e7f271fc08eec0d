//! Reads and writes spanning two clusters do not touch the allocator once the channel's spare
//! temporary buffers are warm (one test per binary: the counter is process-wide).

mod common;

use std::alloc::System;

use common::*;
use ferrite_bdev::BlockDevice;
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
    let mut bufs = rw_buffers();
    rw_cycles(&mut *ch, CB - 4, 100, &mut bufs);
    let region = Region::new(GLOBAL);
    rw_cycles(&mut *ch, CB - 4, 10_000, &mut bufs);
    let change = region.change();
    assert_eq!(
        (change.allocations, change.reallocations),
        (0, 0),
        "{change:?}"
    );
    assert_eq!(v.stats().write_ops, 10_102);
    drop(ch);
}
