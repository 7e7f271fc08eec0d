//! The safe ring on a real file: requests own their buffers until completion, fixed buffers are
//! used only for the registered pool's own buffers, and nothing depends on the pool living.

use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use ferrite_reactor::{BufferPool, IoBuf};
use ferrite_uring::{Completion, Request, Ring};

fn wait(ring: &mut Ring) -> Completion {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        ring.enter();
        if let Some(c) = ring.complete() {
            return c;
        }
        assert!(Instant::now() < deadline, "no completion");
        std::thread::yield_now();
    }
}

fn write_read(ring: &mut Ring, fd: i32, mut buf: IoBuf, offset: u64, fill: u8) -> IoBuf {
    buf.set_len(4096);
    buf.as_mut_slice().fill(fill);
    let write = Request::Write {
        buf,
        start: 0,
        len: 4096,
        offset,
        dsync: false,
    };
    ring.submit(3, fd, write).expect("queued");
    assert_eq!(ring.in_flight(), 1);
    let c = wait(ring);
    assert_eq!((c.slot, c.result), (3, 4096));
    let mut buf = c.buf.expect("the buffer comes back");
    buf.as_mut_slice().fill(0);
    let read = Request::Read {
        buf,
        start: 0,
        len: 4096,
        offset,
    };
    ring.submit(3, fd, read).expect("queued");
    let c = wait(ring);
    assert_eq!(c.result, 4096);
    let buf = c.buf.expect("the buffer comes back");
    assert!(buf.as_slice().iter().all(|&b| b == fill));
    buf
}

#[test]
fn fixed_buffers_only_for_the_registered_pool() {
    let file = tempfile::tempfile().expect("temp file");
    file.set_len(1 << 20).expect("size");
    let fd = file.as_raw_fd();
    let mut pool = BufferPool::new(2, 4096);
    let mut other = BufferPool::new(2, 4096);
    let mut ring = Ring::new(8, &[pool.regions()]).expect("ring");

    let buf = write_read(&mut ring, fd, pool.get().expect("pooled"), 0, 0xA1);
    let fixed = ring.stats().fixed_buffer_ops;
    assert_eq!(fixed, 2, "the pool's own buffer uses fixed-buffer I/O");
    pool.put(buf);
    let _ = write_read(&mut ring, fd, IoBuf::new(4096), 4096, 0xB2);
    assert_eq!(
        ring.stats().fixed_buffer_ops,
        fixed,
        "an unpooled buffer is not fixed"
    );
    let buf = write_read(&mut ring, fd, other.get().expect("pooled"), 8192, 0xC3);
    assert_eq!(
        ring.stats().fixed_buffer_ops,
        fixed,
        "a buffer of another pool with the same index is not fixed"
    );
    other.put(buf);

    // The registered pool goes away (its buffers are freed); a new pool may reuse the memory,
    // but its buffers have another identity and take the unregistered path.
    drop(pool);
    let mut again = BufferPool::new(2, 4096);
    let buf = write_read(&mut ring, fd, again.get().expect("pooled"), 12288, 0xD4);
    assert_eq!(ring.stats().fixed_buffer_ops, fixed);
    again.put(buf);
}

#[test]
fn bad_requests_come_back_untouched() {
    let file = tempfile::tempfile().expect("temp file");
    let fd = file.as_raw_fd();
    let mut ring = Ring::new(2, &[]).expect("ring");
    let read = |len| Request::Read {
        buf: IoBuf::new(4096),
        start: 0,
        len,
        offset: 0,
    };
    let refused = ring
        .submit(2, fd, read(512))
        .expect_err("slot out of range");
    assert_eq!(refused.reason, "slot out of range");
    assert!(matches!(refused.request, Request::Read { len: 512, .. }));
    let refused = ring
        .submit(0, fd, read(8192))
        .expect_err("beyond the buffer");
    assert_eq!(refused.reason, "range beyond the buffer");
    ring.submit(0, fd, Request::Fsync).expect("fsync");
    let refused = ring.submit(0, fd, Request::Fsync).expect_err("busy");
    assert_eq!(refused.reason, "slot busy");
    assert_eq!(wait(&mut ring).result, 0);
    assert_eq!(ring.in_flight(), 0);
}

#[test]
fn zeroes_and_a_ring_dropped_with_requests_in_flight() {
    let file = tempfile::tempfile().expect("temp file");
    file.set_len(1 << 20).expect("size");
    let fd = file.as_raw_fd();
    let mut ring = Ring::new(4, &[]).expect("ring");
    let _ = write_read(&mut ring, fd, IoBuf::new(4096), 0, 0x55);
    ring.submit(
        1,
        fd,
        Request::WriteZeroes {
            offset: 0,
            len: 1 << 20,
        },
    )
    .expect("queued");
    let c = wait(&mut ring);
    assert_eq!(c.result, ferrite_uring::ZERO_BUF_BYTES as i32, "clamped");
    let mut buf = IoBuf::new(4096);
    buf.set_len(4096);
    ring.submit(
        1,
        fd,
        Request::Read {
            buf,
            start: 0,
            len: 4096,
            offset: 0,
        },
    )
    .expect("queued");
    let buf = wait(&mut ring).buf.expect("buffer");
    assert!(buf.as_slice().iter().all(|&b| b == 0));
    // Requests in flight at drop: the ring waits for them (no use after free of their buffers).
    for slot in 0..4 {
        let read = Request::Read {
            buf: IoBuf::new(65536),
            start: 0,
            len: 65536,
            offset: u64::from(slot) * 65536,
        };
        ring.submit(slot, fd, read).expect("queued");
    }
    ring.enter();
    drop(ring);
}
