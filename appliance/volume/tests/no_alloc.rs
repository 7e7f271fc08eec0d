//! The single-cluster read/write path does not touch the allocator (one test per binary: the
//! counter is process-wide).

mod common;

use std::alloc::System;

use common::*;
use ferrite_bdev::BlockDevice;
use ferrite_volume::Provisioning;
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

#[test]
fn single_cluster_reads_and_writes_do_not_allocate() {
    let (pool, _dev) = small_pool("na", 16);
    let v = pool
        .create_volume("v", 1 << 20, Provisioning::Thin)
        .expect("volume");
    let mut ch = v.open_channel(&[]).expect("channel");
    write(&mut *ch, 0, &pattern(1, 4096)).expect("allocate cluster 0");
    let mut bufs = rw_buffers();
    rw_cycles(&mut *ch, 8, 100, &mut bufs);
    let region = Region::new(GLOBAL);
    rw_cycles(&mut *ch, 8, 10_000, &mut bufs);
    let change = region.change();
    assert_eq!(
        (change.allocations, change.reallocations),
        (0, 0),
        "{change:?}"
    );
    assert_eq!(v.stats().write_ops, 10_101);
    drop(ch);
}
