//! Running requests to completion on the engine thread: submit, then poll (sleeping on the
//! channel's wakeup fd when it has one) until each is back.

use std::os::fd::AsFd;
use std::time::Duration;

use ferrite_bdev::{BdevError, BdevIo, IoChannel, IoKind};
use ferrite_reactor::IoBuf;

/// Runs `io` and returns it with its result.
pub fn run(ch: &mut dyn IoChannel, mut io: BdevIo) -> (BdevIo, Result<(), BdevError>) {
    loop {
        match ch.submit(io) {
            Ok(()) => break,
            Err((back, BdevError::QueueFull)) => {
                io = back;
                wait(ch);
                ch.poll(usize::MAX, &mut |_, _| {});
            }
            Err((back, e)) => return (back, Err(e)),
        }
    }
    let mut out = None;
    loop {
        ch.poll(1, &mut |io, r| out = Some((io, r)));
        if let Some(done) = out.take() {
            return done;
        }
        wait(ch);
    }
}

fn wait(ch: &dyn IoChannel) {
    match ch.wakeup_fd() {
        Some(fd) => {
            let mut pfd = [rustix::event::PollFd::new(
                &fd,
                rustix::event::PollFlags::IN,
            )];
            let timeout = rustix::event::Timespec {
                tv_sec: 0,
                tv_nsec: 1_000_000,
            };
            if rustix::event::poll(&mut pfd, Some(&timeout)).unwrap_or(0) > 0 {
                let mut counter = [0u8; 8];
                let _ = rustix::io::read(fd.as_fd(), &mut counter);
            }
        }
        None => std::thread::sleep(Duration::from_micros(20)),
    }
}

/// Reads `blocks` blocks at `lba` into a new buffer.
pub fn read(ch: &mut dyn IoChannel, lba: u64, blocks: u32, bs: usize) -> Result<IoBuf, BdevError> {
    let buf = IoBuf::new(blocks as usize * bs);
    let (io, r) = run(ch, BdevIo::new(0, IoKind::Read { lba, blocks }, Some(buf)));
    r?;
    Ok(io.buf.expect("a read comes back with its buffer"))
}

/// Writes `data` (whole blocks) at `lba`.
pub fn write(
    ch: &mut dyn IoChannel,
    lba: u64,
    data: &[u8],
    bs: usize,
    fua: bool,
) -> Result<(), BdevError> {
    let mut buf = IoBuf::new(data.len());
    buf.set_len(data.len());
    buf.as_mut_slice().copy_from_slice(data);
    let blocks = (data.len() / bs) as u32;
    run(
        ch,
        BdevIo::new(0, IoKind::Write { lba, blocks, fua }, Some(buf)),
    )
    .1
}

pub fn flush(ch: &mut dyn IoChannel) -> Result<(), BdevError> {
    run(ch, BdevIo::new(0, IoKind::Flush, None)).1
}
