use std::sync::Arc;

use ferrite_reactor::IoBuf;

use super::*;
use crate::MallocBdev;

fn dev() -> ErrorBdev {
    let base: Arc<dyn BlockDevice> = Arc::new(MallocBdev::new("m0", 64, 512).expect("malloc bdev"));
    ErrorBdev::new("EE_m0", base).expect("error bdev")
}

fn run(ch: &mut dyn IoChannel, io: BdevIo) -> (BdevIo, Result<(), BdevError>) {
    ch.submit(io).map_err(|(_, e)| e).expect("submitted");
    let mut out = None;
    for _ in 0..1000 {
        ch.poll(8, &mut |io, r| out = Some((io, r)));
        if out.is_some() {
            break;
        }
    }
    out.expect("completed")
}

fn write(lba: u64, byte: u8) -> BdevIo {
    let mut b = IoBuf::new(512);
    b.set_len(512);
    b.as_mut_slice().fill(byte);
    BdevIo::new(
        lba,
        IoKind::Write {
            lba,
            blocks: 1,
            fua: false,
        },
        Some(b),
    )
}

fn read(lba: u64) -> BdevIo {
    BdevIo::new(lba, IoKind::Read { lba, blocks: 1 }, Some(IoBuf::new(512)))
}

#[test]
fn failures_hit_exactly_count_requests_of_the_kind() {
    let d = dev();
    let mut ch = d.open_channel(&[]).expect("channel");
    d.inject(&[IoClass::Write], ErrorType::Failure, 2);
    assert!(run(&mut *ch, read(0)).1.is_ok(), "reads are not injected");
    for _ in 0..2 {
        let (_, r) = run(&mut *ch, write(1, 7));
        assert!(matches!(r, Err(BdevError::Io(ref e)) if e.raw_os_error() == Some(libc::EIO)));
    }
    assert!(run(&mut *ch, write(1, 7)).1.is_ok(), "third write passes");
    let (io, r) = run(&mut *ch, read(1));
    r.expect("read");
    assert!(io.buf.expect("buffer").as_slice().iter().all(|&b| b == 7));
    assert_eq!(d.injected(), 2);
}

#[test]
fn nomem_is_retryable_and_out_of_range_is_not_injected() {
    let d = dev();
    let mut ch = d.open_channel(&[]).expect("channel");
    d.inject(&IoClass::ALL, ErrorType::NoMemory, 1);
    let bad = BdevIo::new(
        1,
        IoKind::Read { lba: 64, blocks: 1 },
        Some(IoBuf::new(512)),
    );
    assert!(matches!(
        ch.submit(bad),
        Err((_, BdevError::OutOfRange { .. }))
    ));
    let (_, r) = run(&mut *ch, BdevIo::new(2, IoKind::Flush, None));
    assert!(r.expect_err("injected").is_retryable());
    assert!(run(&mut *ch, BdevIo::new(3, IoKind::Flush, None)).1.is_ok());
}

#[test]
fn pending_holds_until_cleared() {
    let d = dev();
    let mut ch = d.open_channel(&[]).expect("channel");
    d.inject(&[IoClass::Write], ErrorType::Pending, 1);
    ch.submit(write(3, 9)).map_err(|(_, e)| e).expect("queued");
    for _ in 0..100 {
        assert_eq!(
            ch.poll(8, &mut |_, _| panic!("a pending write completed")),
            0
        );
    }
    assert_eq!(ch.in_flight(), 1);
    d.clear(&[IoClass::Write]);
    let mut got = None;
    for _ in 0..100 {
        ch.poll(8, &mut |io, r| got = Some((io.tag, r.is_ok())));
        if got.is_some() {
            break;
        }
    }
    assert_eq!(got, Some((3, true)));
    let (io, _) = run(&mut *ch, read(3));
    assert!(io.buf.expect("buffer").as_slice().iter().all(|&b| b == 9));
}

#[test]
fn corrupt_data_flips_a_byte_of_reads_and_writes() {
    let d = dev();
    let mut ch = d.open_channel(&[]).expect("channel");
    run(&mut *ch, write(4, 0x11)).1.expect("write");
    d.inject(
        &[IoClass::Read],
        ErrorType::CorruptData {
            offset: 5,
            value: 0xff,
        },
        1,
    );
    let (io, r) = run(&mut *ch, read(4));
    r.expect("read served");
    let b = io.buf.expect("buffer");
    assert_eq!(b.as_slice()[5], 0x11 ^ 0xff);
    assert_eq!(b.as_slice()[4], 0x11);
    let (io, _) = run(&mut *ch, read(4));
    assert_eq!(io.buf.expect("buffer").as_slice()[5], 0x11, "only one read");
    d.inject(
        &[IoClass::Write],
        ErrorType::CorruptData {
            offset: 0,
            value: 1,
        },
        1,
    );
    run(&mut *ch, write(5, 0x20)).1.expect("write");
    let (io, _) = run(&mut *ch, read(5));
    assert_eq!(io.buf.expect("buffer").as_slice()[..2], [0x21, 0x20]);
}
