//! Page-aligned I/O buffers and per-reactor pools of them.
//!
//! Buffers are allocated once when a pool is built and then recycled, so the I/O path never
//! touches the allocator. Each buffer is a boxed slice of 4 KiB-aligned pages: the heap address
//! stays put when the `IoBuf` value moves, which is what O_DIRECT and io_uring registered buffers
//! need.

use std::num::NonZeroU64;
use std::sync::atomic::{AtomicU32, Ordering};

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Alignment (and granule) of every I/O buffer: satisfies O_DIRECT on any logical block size.
pub const BUF_ALIGN: usize = 4096;

#[derive(Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C, align(4096))]
struct Page([u8; BUF_ALIGN]);

/// Identity of a [`BufferPool`], unique for the life of the process (never reused, unlike an
/// address; a process does not build 4 billion pools).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PoolId(u32);

static NEXT_POOL_ID: AtomicU32 = AtomicU32::new(1);

/// What a backend needs to register a pool's buffers with the kernel (io_uring fixed buffers):
/// the pool's identity and the (address, length) of each of its buffers, by pool index. Only a
/// [`BufferPool`] makes one, so a registration always describes real pool buffers; a buffer
/// matches it by ([`IoBuf::pool_id`], [`IoBuf::pool_index`], address).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolRegions {
    id: PoolId,
    regions: Vec<(usize, usize)>,
}

impl PoolRegions {
    pub fn id(&self) -> PoolId {
        self.id
    }

    /// (address, length) of every buffer, indexed by `IoBuf::pool_index`.
    pub fn regions(&self) -> &[(usize, usize)] {
        &self.regions
    }

    /// Whether `buf` is buffer `index` of this pool, with at least `len` bytes registered.
    pub fn matches(&self, buf: &IoBuf, len: usize) -> bool {
        match buf.pool() {
            Some((id, index)) if id == self.id => self
                .regions
                .get(usize::from(index))
                .is_some_and(|&(addr, rlen)| addr == buf.as_ptr() as usize && rlen >= len),
            _ => false,
        }
    }
}

/// One aligned I/O buffer. `len` is the part holding data; the capacity is fixed.
pub struct IoBuf {
    pages: Box<[Page]>,
    len: usize,
    /// The owning pool and the index in it (`PoolId << 16 | index`; ids start at 1, so never
    /// zero). The index is also the io_uring fixed-buffer index (offset by the pool's base)
    /// when the pool's buffers are registered with a ring.
    pool: Option<NonZeroU64>,
}

impl std::fmt::Debug for IoBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IoBuf")
            .field("capacity", &self.capacity())
            .field("len", &self.len)
            .field("pool", &self.pool())
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
            pool: None,
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
        self.pool().map(|(_, index)| index)
    }

    /// The pool this buffer belongs to, if pooled.
    pub fn pool_id(&self) -> Option<PoolId> {
        self.pool().map(|(id, _)| id)
    }

    fn pool(&self) -> Option<(PoolId, u16)> {
        self.pool
            .map(|v| (PoolId((v.get() >> 16) as u32), v.get() as u16))
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
    /// Identity and (address, length) of every buffer, in pool-index order, for registration
    /// with io_uring.
    regions: PoolRegions,
    exhausted: u64,
}

impl BufferPool {
    /// Allocates `count` buffers of `buf_size` bytes (rounded up to whole pages). `count` is
    /// capped at `u16::MAX` because fixed-buffer indexes are 16-bit.
    pub fn new(count: usize, buf_size: usize) -> Self {
        let count = count.min(u16::MAX as usize);
        let id = PoolId(NEXT_POOL_ID.fetch_add(1, Ordering::Relaxed));
        let mut free = Vec::with_capacity(count);
        let mut regions = Vec::with_capacity(count);
        for index in 0..count {
            let mut buf = IoBuf::new(buf_size);
            buf.pool = NonZeroU64::new(u64::from(id.0) << 16 | index as u64);
            regions.push((buf.as_mut_ptr() as usize, buf.capacity()));
            free.push(buf);
        }
        // Hand out low indexes first.
        free.reverse();
        Self {
            free,
            buf_size: buf_size.div_ceil(BUF_ALIGN).max(1) * BUF_ALIGN,
            count,
            regions: PoolRegions { id, regions },
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
        self.regions.matches(buf, 0)
    }

    /// Returns a buffer taken from this pool. Buffers from elsewhere are dropped.
    pub fn put(&mut self, mut buf: IoBuf) {
        if self.owns(&buf) {
            buf.len = 0;
            self.free.push(buf);
        } else {
            debug_assert!(false, "IoBuf returned to a pool that does not own it");
        }
    }

    /// The pool's identity and buffer regions, for registration with io_uring.
    pub fn regions(&self) -> &PoolRegions {
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

const _: () = assert!(std::mem::size_of::<IoBuf>() == 32);

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
        let other = BufferPool::new(4, 10_000);
        assert!(bufs.iter().all(|b| pool.owns(b) && !other.owns(b)));
        assert!(
            !pool.regions().matches(&bufs[0], 16_384),
            "longer than the buffer"
        );
        assert!(!pool.owns(&IoBuf::new(4096)));
        for b in bufs {
            pool.put(b);
        }
        assert_eq!(pool.stats().free, 4);
        assert_eq!(pool.get().expect("free buffer").len(), 0);
    }
}
