//! The unsafe primitives under [`crate::Ring`]. Nothing outside this crate calls them.

use std::io;

use io_uring::{squeue, IoUring};

/// Pushes one submission queue entry; `Err(())` when the submission queue is full.
///
/// # Safety
/// Every buffer the entry points to must stay allocated (and, for reads, not be accessed by
/// anyone else) until the entry's completion has been reaped, or the ring has been dropped
/// after the kernel finished with it.
pub(crate) unsafe fn push(ring: &mut IoUring, entry: &squeue::Entry) -> Result<(), ()> {
    // SAFETY: forwarded to the caller, see above.
    unsafe { ring.submission().push(entry) }.map_err(|_| ())
}

/// Registers `regions` (address, length) as the ring's fixed buffers, in order.
///
/// # Safety
/// Each region must be memory of a live allocation at the time of the call. The kernel then
/// holds its own references to the pages (they stay allocated to the kernel whatever happens to
/// the allocation afterwards); it reads or writes them only for READ_FIXED / WRITE_FIXED
/// entries, which the caller must issue only for a buffer that is the very allocation
/// registered at that index and that the in-flight request owns.
pub(crate) unsafe fn register_buffers(
    ring: &IoUring,
    regions: &[(usize, usize)],
) -> io::Result<()> {
    let iovecs: Vec<libc::iovec> = regions
        .iter()
        .map(|&(addr, len)| libc::iovec {
            iov_base: addr as *mut libc::c_void,
            iov_len: len,
        })
        .collect();
    // SAFETY: the kernel copies the iovec array during the call; the regions' validity and the
    // use of the registered pages are the caller's contract above.
    unsafe { ring.submitter().register_buffers(&iovecs) }
}
