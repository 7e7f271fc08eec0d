//! Page-aligned I/O buffers and per-reactor pools of them.
//!
//! Buffers are allocated once when a pool is built and then recycled, so the I/O path never
//! touches the allocator. Each buffer is a boxed slice of 4 KiB-aligned pages: the heap address
//! stays put when the `IoBuf` value moves, which is what O_DIRECT and io_uring registered buffers
//! need.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Alignment (and granule) of every I/O buffer: satisfies O_DIRECT on any logical block size.
pub const BUF_ALIGN: usize = 4096;

#[derive(Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C, align(4096))]
struct Page([u8; BUF_ALIGN]);

/// One aligned I/O buffer. `len` is the part holding data; the capacity is fixed.
pub struct IoBuf {
    pages: Box<[Page]>,
    len: usize,
    /// Index in the owning pool, which is also the io_uring fixed-buffer index when the pool's
    /// buffers are registered with a ring.
    pool_index: Option<u16>,
}

impl std::fmt::Debug for IoBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IoBuf")
            .field("capacity", &self.capacity())
            .field("len", &self.len)
            .field("pool_index", &self.pool_index)
            .finish()
    }
}

impl IoBuf {
    /// A zeroed, unpooled buffer of at least `capacity` bytes (rounded up to whole pages).
    pub fn new(capacity: usize) -> Self {
        let pages = capacity.div_ceil(BUF_ALIGN).max(1);
        Self {
            pages: vec![Page([0; BUF_ALIGN]); pages].into_boxed_slice(),
            len: 0,
            pool_index: None,
        }
    }

    pub fn capacity(&self) -> usize {
        self.pages.len() * BUF_ALIGN
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Sets the length of valid data.
    ///
    /// # Panics
    /// If `len` exceeds the capacity: that is a caller bug that would otherwise corrupt memory
    /// accounting.
    pub fn set_len(&mut self, len: usize) {
        assert!(
            len <= self.capacity(),
            "IoBuf::set_len({len}) beyond capacity {}",
            self.capacity()
        );
        self.len = len;
    }

    /// The valid data.
    pub fn as_slice(&self) -> &[u8] {
        &self.pages.as_bytes()[..self.len]
    }

    /// The valid data, writable.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        let len = self.len;
        &mut self.pages.as_mut_bytes()[..len]
    }

    /// The whole capacity, writable (to receive into before `set_len`).
    pub fn spare_mut(&mut self) -> &mut [u8] {
        self.pages.as_mut_bytes()
    }

    /// Index of this buffer in its pool (and io_uring fixed-buffer table), if pooled.
    pub fn pool_index(&self) -> Option<u16> {
        self.pool_index
    }

    /// Start of the buffer memory, for kernel interfaces (io_uring) that take raw addresses.
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.pages.as_mut_bytes().as_mut_ptr()
    }

    pub fn as_ptr(&self) -> *const u8 {
        self.pages.as_bytes().as_ptr()
    }
}

/// Counters of a pool, for statistics and leak checks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    pub capacity: usize,
    pub free: usize,
    /// Times `get` found the pool empty (the caller had to wait).
    pub exhausted: u64,
}

/// A fixed set of equally sized buffers owned by one reactor. Not `Sync` by design: only the
/// owning reactor hands buffers out and takes them back.
#[derive(Debug)]
pub struct BufferPool {
    free: Vec<IoBuf>,
    buf_size: usize,
    count: usize,
    /// (address, length) of every buffer, in pool-index order, for registration with io_uring.
    regions: Vec<(usize, usize)>,
    exhausted: u64,
}

impl BufferPool {
    /// Allocates `count` buffers of `buf_size` bytes (rounded up to whole pages). `count` is
    /// capped at `u16::MAX` because fixed-buffer indexes are 16-bit.
    pub fn new(count: usize, buf_size: usize) -> Self {
        let count = count.min(u16::MAX as usize);
        let mut free = Vec::with_capacity(count);
        let mut regions = Vec::with_capacity(count);
        for index in 0..count {
            let mut buf = IoBuf::new(buf_size);
            buf.pool_index = Some(index as u16);
            regions.push((buf.as_mut_ptr() as usize, buf.capacity()));
            free.push(buf);
        }
        // Hand out low indexes first.
        free.reverse();
        Self {
            free,
            buf_size: buf_size.div_ceil(BUF_ALIGN).max(1) * BUF_ALIGN,
            count,
            regions,
            exhausted: 0,
        }
    }

    pub fn buf_size(&self) -> usize {
        self.buf_size
    }

    /// A free buffer with `len` 0, or `None` when all are in flight (backpressure).
    pub fn get(&mut self) -> Option<IoBuf> {
        match self.free.pop() {
            Some(buf) => Some(buf),
            None => {
                self.exhausted += 1;
                None
            }
        }
    }

    /// Whether `buf` is one of this pool's buffers.
    pub fn owns(&self, buf: &IoBuf) -> bool {
        match buf.pool_index {
            Some(index) => self
                .regions
                .get(index as usize)
                .is_some_and(|&(addr, _)| addr == buf.as_ptr() as usize),
            None => false,
        }
    }

    /// Returns a buffer taken from this pool. Buffers from elsewhere are dropped.
    pub fn put(&mut self, mut buf: IoBuf) {
        let addr = buf.as_mut_ptr() as usize;
        match buf.pool_index {
            Some(index)
                if (index as usize) < self.count && self.regions[index as usize].0 == addr =>
            {
                buf.len = 0;
                self.free.push(buf);
            }
            _ => debug_assert!(false, "IoBuf returned to a pool that does not own it"),
        }
    }

    /// (address, length) of every buffer, indexed by `IoBuf::pool_index`.
    pub fn regions(&self) -> &[(usize, usize)] {
        &self.regions
    }

    pub fn stats(&self) -> PoolStats {
        PoolStats {
            capacity: self.count,
            free: self.free.len(),
            exhausted: self.exhausted,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_aligned_and_recycled() {
        let mut pool = BufferPool::new(4, 10_000);
        assert_eq!(pool.buf_size(), 12_288);
        let mut bufs: Vec<IoBuf> = (0..4).map(|_| pool.get().expect("free buffer")).collect();
        assert!(pool.get().is_none());
        assert_eq!(pool.stats().exhausted, 1);
        for b in &mut bufs {
            assert_eq!(b.as_mut_ptr() as usize % BUF_ALIGN, 0);
            b.set_len(100);
            b.as_mut_slice().fill(0xAB);
        }
        let indexes: Vec<_> = bufs.iter().map(|b| b.pool_index()).collect();
        assert_eq!(indexes, vec![Some(0), Some(1), Some(2), Some(3)]);
        for b in bufs {
            pool.put(b);
        }
        assert_eq!(pool.stats().free, 4);
        assert_eq!(pool.get().expect("free buffer").len(), 0);
    }
}
