//! The journaled write path does not touch the allocator: numbering (one compare-and-swap),
//! staging into the channel's preallocated buffer, the journal write and the volume write, and
//! the completion (one test per binary: the counter is process-wide).

use std::alloc::System;
use std::sync::Arc;

use ferrite_bdev::{BdevIo, BlockDevice, IoKind, MallocBdev};
use ferrite_gateway_protocol::{GroupId, Nsid};
use ferrite_journal::{Journal, JournaledBdev};
use ferrite_reactor::IoBuf;
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

#[test]
fn journaled_writes_do_not_allocate() {
    const WRITES: u64 = 5_000;
    const WARMUP: u64 = 100;
    // Slots of 4 KiB data + a 512-byte header: room for every write without a trim.
    let slots = WRITES + WARMUP + 8;
    let jdev: Arc<dyn BlockDevice> =
        Arc::new(MallocBdev::new("j", 1 + slots * 9, 512).expect("journal device"));
    let journal = Journal::format(jdev, GroupId(1), 4096).expect("format");
    let vol: Arc<dyn BlockDevice> = Arc::new(MallocBdev::new("v", 4096, 512).expect("volume"));
    let bdev = JournaledBdev::new(vol, journal.clone(), Nsid(1)).expect("wrap");
    let mut ch = bdev.open_channel(&[]).expect("channel");
    let mut buf = Some({
        let mut b = IoBuf::new(4096);
        b.set_len(4096);
        b
    });
    let mut cycle = |ch: &mut dyn ferrite_bdev::IoChannel, i: u64| {
        let lba = (i * 8) % 4000;
        let w = BdevIo::new(
            i,
            IoKind::Write {
                lba,
                blocks: 8,
                fua: false,
            },
            buf.take(),
        );
        ch.submit(w).map_err(|(_, e)| e).expect("write accepted");
        let mut got = 0;
        while got < 1 {
            got += ch.poll(4, &mut |io, res| {
                res.expect("completed");
                buf = io.buf;
            });
        }
    };
    for i in 0..WARMUP {
        cycle(&mut *ch, i);
    }
    let region = Region::new(GLOBAL);
    for i in WARMUP..WARMUP + WRITES {
        cycle(&mut *ch, i);
    }
    let change = region.change();
    assert_eq!(
        (change.allocations, change.reallocations),
        (0, 0),
        "{change:?}"
    );
    assert_eq!(journal.committed(), WARMUP + WRITES);
    drop(ch);
}
