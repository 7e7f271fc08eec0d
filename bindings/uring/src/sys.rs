//! Single Linux system calls std does not wrap, behind safe functions. Each `unsafe` block is
//! one call whose pointer arguments point to live locals or to memory the caller lends.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Asks the kernel to back `words` with transparent huge pages (a hint: errors are ignored).
/// A RAM namespace is read and written at random; with 4 KiB pages nearly every I/O also
/// misses the TLB.
pub fn advise_hugepages(words: &[std::sync::atomic::AtomicU64]) {
    let len = std::mem::size_of_val(words);
    let start = words.as_ptr() as usize;
    // madvise wants a page-aligned start: advise the whole 2 MiB-aligned pages inside.
    const HUGE: usize = 2 << 20;
    let aligned = start.div_ceil(HUGE) * HUGE;
    let end = (start + len) / HUGE * HUGE;
    if end <= aligned {
        return;
    }
    // SAFETY: MADV_HUGEPAGE only changes how the kernel backs this range of our own live
    // allocation; contents and validity of the memory are unaffected.
    let rc = unsafe {
        libc::madvise(
            aligned as *mut libc::c_void,
            end - aligned,
            libc::MADV_HUGEPAGE,
        )
    };
    if rc != 0 {
        log::debug!(
            "madvise(MADV_HUGEPAGE) refused: {}",
            io::Error::last_os_error()
        );
    }
}

/// A non-blocking, close-on-exec eventfd.
pub fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: plain system call with no pointer arguments.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just created and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// fallocate(2) on an open file.
pub fn fallocate(fd: &impl AsRawFd, mode: i32, offset: u64, len: u64) -> io::Result<()> {
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return Err(io::Error::from_raw_os_error(libc::EFBIG));
    };
    // SAFETY: plain system call on a valid fd, no pointer arguments.
    let rc = unsafe { libc::fallocate(fd.as_raw_fd(), mode, offset, len) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Logical block size of a block device (BLKSSZGET).
pub fn logical_block_size(fd: &impl AsRawFd) -> io::Result<u32> {
    let mut size: libc::c_int = 0;
    // SAFETY: BLKSSZGET writes one int through the pointer, which points to a live local.
    let rc = unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            libc::BLKSSZGET,
            &mut size as *mut libc::c_int,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    u32::try_from(size).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// O_DIRECT offset alignment of an open file (statx STATX_DIOALIGN), `None` when the file
/// system does not report it (older kernels, some file systems).
pub fn dio_offset_align(fd: &impl AsRawFd) -> Option<u32> {
    let raw: RawFd = fd.as_raw_fd();
    // SAFETY: statx is plain old data; all-zero is a valid value.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: empty path with AT_EMPTY_PATH stats `raw`; the kernel writes one statx into `stx`.
    let rc = unsafe {
        libc::statx(
            raw,
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            libc::STATX_DIOALIGN,
            &mut stx,
        )
    };
    if rc < 0 || stx.stx_mask & libc::STATX_DIOALIGN == 0 || stx.stx_dio_offset_align == 0 {
        return None;
    }
    Some(stx.stx_dio_offset_align)
}

/// FICLONERANGE: makes `len` bytes of `dst` at `dst_offset` share the extents of `src` at
/// `src_offset` (a reflink: metadata only, no data is read or written). `len` 0 means "to the
/// end of `src`". Offsets and length must be multiples of the file system block size.
pub fn clone_range(
    src: &impl AsRawFd,
    src_offset: u64,
    len: u64,
    dst: &impl AsRawFd,
    dst_offset: u64,
) -> io::Result<()> {
    let arg = libc::file_clone_range {
        src_fd: i64::from(src.as_raw_fd()),
        src_offset,
        src_length: len,
        dest_offset: dst_offset,
    };
    // SAFETY: FICLONERANGE reads one file_clone_range through the pointer, which points to a
    // live local; the kernel writes no memory of ours.
    let rc = unsafe {
        libc::ioctl(
            dst.as_raw_fd(),
            libc::FICLONERANGE,
            &arg as *const libc::file_clone_range,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The file system of an open file: its magic number (statfs f_type) and block size.
pub fn fs_type(fd: &impl AsRawFd) -> io::Result<(i64, u64)> {
    // SAFETY: statfs is plain old data; all-zero is a valid value.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: fstatfs writes one statfs into `st`, a live local, for a valid fd.
    let rc = unsafe { libc::fstatfs(fd.as_raw_fd(), &mut st) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    #[allow(clippy::unnecessary_cast)] // f_type and f_bsize are i64 on some targets only
    Ok((st.f_type as i64, st.f_bsize as u64))
}
