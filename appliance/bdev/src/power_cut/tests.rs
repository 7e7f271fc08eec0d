use std::sync::Arc;

use ferrite_reactor::IoBuf;

use super::*;
use crate::MallocBdev;

fn setup() -> (Arc<dyn BlockDevice>, PowerCutBdev) {
    let base: Arc<dyn BlockDevice> = Arc::new(MallocBdev::new("m0", 64, 512).expect("malloc bdev"));
    let dev = PowerCutBdev::new("pc0", Arc::clone(&base)).expect("power-cut bdev");
    (base, dev)
}

fn run(ch: &mut dyn IoChannel, io: BdevIo) -> (BdevIo, Result<(), BdevError>) {
    ch.submit(io).map_err(|(_, e)| e).expect("submitted");
    let mut out = None;
    for _ in 0..10_000 {
        ch.poll(8, &mut |io, r| out = Some((io, r)));
        if out.is_some() {
            break;
        }
    }
    out.expect("completed")
}

fn write(lba: u64, blocks: u32, byte: u8, fua: bool) -> BdevIo {
    let n = blocks as usize * 512;
    let mut b = IoBuf::new(n);
    b.set_len(n);
    b.as_mut_slice().fill(byte);
    BdevIo::new(lba + 100, IoKind::Write { lba, blocks, fua }, Some(b))
}

fn content(dev: &dyn BlockDevice, lba: u64) -> u8 {
    let mut ch = dev.open_channel(&[]).expect("channel");
    let io = BdevIo::new(0, IoKind::Read { lba, blocks: 1 }, Some(IoBuf::new(512)));
    let (io, r) = run(&mut *ch, io);
    r.expect("read");
    let b = io.buf.expect("buffer");
    assert!(
        b.as_slice().iter().all(|&x| x == b.as_slice()[0]),
        "block {lba} uniform"
    );
    b.as_slice()[0]
}

#[test]
fn flushed_and_fua_writes_survive_every_cut() {
    for seed in 0..20 {
        let (base, dev) = setup();
        let mut ch = dev.open_channel(&[]).expect("channel");
        let (io, r) = run(&mut *ch, write(0, 2, 1, false));
        r.expect("write");
        assert_eq!(io.tag, 100, "the caller's tag comes back");
        run(&mut *ch, BdevIo::new(7, IoKind::Flush, None))
            .1
            .expect("flush");
        run(&mut *ch, write(4, 1, 2, true)).1.expect("fua write");
        run(&mut *ch, write(8, 1, 3, false))
            .1
            .expect("volatile write");
        assert_eq!(dev.volatile_blocks(), 1);
        assert_eq!(content(&dev, 8), 3, "reads see completed writes");
        dev.cut();
        assert!(matches!(
            run(&mut *ch, write(9, 1, 4, false)).1,
            Err(BdevError::Io(_))
        ));
        assert!(
            dev.restore(seed).is_err(),
            "refused while a channel is open"
        );
        drop(ch);
        let report = dev.restore(seed).expect("restore");
        assert_eq!(report.volatile_blocks, 1);
        assert_eq!([content(&*base, 0), content(&*base, 1)], [1, 1]);
        assert_eq!(content(&*base, 4), 2);
        let b8 = content(&*base, 8);
        assert!(
            b8 == 0 || b8 == 3,
            "the unflushed block is old or new, got {b8}"
        );
        assert_eq!(b8 == 0, report.rolled_back == 1);
        assert_eq!(
            content(&*base, 9),
            0,
            "requests after the cut never reach the base"
        );
    }
}

#[test]
fn unflushed_multi_block_writes_tear_and_versions_stay_in_order() {
    let mut torn = 0;
    let mut seen_middle = false;
    for seed in 0..64 {
        let (base, dev) = setup();
        let mut ch = dev.open_channel(&[]).expect("channel");
        run(&mut *ch, write(10, 8, 5, false)).1.expect("write");
        run(&mut *ch, write(20, 1, 6, false)).1.expect("write");
        run(&mut *ch, write(20, 1, 7, false)).1.expect("write");
        run(&mut *ch, write(20, 1, 8, false)).1.expect("write");
        drop(ch);
        dev.cut();
        dev.restore(seed).expect("restore");
        let blocks: Vec<u8> = (10..18).map(|l| content(&*base, l)).collect();
        assert!(blocks.iter().all(|&b| b == 0 || b == 5));
        if blocks.contains(&0) && blocks.contains(&5) {
            torn += 1;
        }
        let b20 = content(&*base, 20);
        assert!([0, 6, 7, 8].contains(&b20));
        seen_middle |= b20 == 6 || b20 == 7;
    }
    assert!(torn > 0, "some cuts tear the 8-block write");
    assert!(
        seen_middle,
        "an intermediate version can be what the cache wrote back"
    );
}

#[test]
fn a_flush_makes_only_earlier_writes_durable() {
    for seed in 0..16 {
        let (base, dev) = setup();
        let mut ch = dev.open_channel(&[]).expect("channel");
        run(&mut *ch, write(3, 1, 1, false)).1.expect("write");
        run(&mut *ch, BdevIo::new(0, IoKind::Flush, None))
            .1
            .expect("flush");
        run(&mut *ch, write(3, 1, 2, false)).1.expect("write");
        let zero = BdevIo::new(0, IoKind::WriteZeroes { lba: 5, blocks: 2 }, None);
        run(&mut *ch, zero).1.expect("write zeroes");
        drop(ch);
        dev.cut();
        dev.restore(seed).expect("restore");
        let b3 = content(&*base, 3);
        assert!(b3 == 1 || b3 == 2, "the flushed version or later, got {b3}");
        assert_eq!(content(&*base, 5), 0);
    }
}

#[test]
fn an_armed_cut_fails_the_nth_request_and_everything_after() {
    let (_base, dev) = setup();
    let mut ch = dev.open_channel(&[]).expect("channel");
    dev.arm(3);
    run(&mut *ch, write(0, 1, 1, false)).1.expect("first");
    let read = BdevIo::new(0, IoKind::Read { lba: 0, blocks: 1 }, Some(IoBuf::new(512)));
    run(&mut *ch, read).1.expect("reads do not count");
    run(&mut *ch, BdevIo::new(0, IoKind::Flush, None))
        .1
        .expect("second");
    assert!(!dev.is_cut());
    assert!(
        run(&mut *ch, write(1, 1, 1, false)).1.is_err(),
        "third meets the cut"
    );
    assert!(dev.is_cut());
    let read = BdevIo::new(0, IoKind::Read { lba: 0, blocks: 1 }, Some(IoBuf::new(512)));
    assert!(
        run(&mut *ch, read).1.is_err(),
        "nothing is served without power"
    );
    drop(ch);
    dev.restore(1).expect("restore");
    let mut ch = dev.open_channel(&[]).expect("channel");
    run(&mut *ch, write(1, 1, 1, false))
        .1
        .expect("served again after restore");
    assert!(dev.capabilities().volatile_write_cache);
}
