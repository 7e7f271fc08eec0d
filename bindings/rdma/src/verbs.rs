//! Protection domains, memory regions, completion queues and queue pairs.

use std::ptr::NonNull;
use std::sync::Arc;

use ferrite_reactor::{IoBuf, PoolId, PoolRegions};
use rdma_sys::*;

use crate::cm::CmId;
use crate::error::RdmaError;

pub(crate) struct PdInner {
    pub(crate) pd: NonNull<ibv_pd>,
}

// SAFETY: verbs objects are thread-safe in libibverbs; the Arc keeps the PD alive for its MRs,
// CQs and QPs.
unsafe impl Send for PdInner {}
// SAFETY: as above.
unsafe impl Sync for PdInner {}

impl Drop for PdInner {
    fn drop(&mut self) {
        // SAFETY: every MR, CQ and QP of the PD holds an Arc to it, so none is left.
        unsafe { ibv_dealloc_pd(self.pd.as_ptr()) };
    }
}

/// A protection domain on the device an id is bound to.
#[derive(Clone)]
pub struct ProtectionDomain(pub(crate) Arc<PdInner>);

impl std::fmt::Debug for ProtectionDomain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProtectionDomain")
            .field("device", &self.device_key())
            .finish()
    }
}

impl ProtectionDomain {
    /// Allocates a PD on the device of `id` (a connect request or a resolved id).
    pub fn alloc(id: &CmId) -> Result<ProtectionDomain, RdmaError> {
        if !id.has_device() {
            return Err(RdmaError::Invalid("the id is not bound to a device".into()));
        }
        // SAFETY: the id's verbs context is valid while the device is open (librdmacm keeps it
        // open for the life of the process).
        let pd = unsafe { ibv_alloc_pd(id.verbs()) };
        let pd = NonNull::new(pd).ok_or_else(|| RdmaError::last("ibv_alloc_pd"))?;
        Ok(ProtectionDomain(Arc::new(PdInner { pd })))
    }

    /// Identity of the device context, to share one PD per device among ids.
    pub fn device_key(&self) -> usize {
        // SAFETY: the PD is alive; context is a plain field.
        unsafe { (*self.0.pd.as_ptr()).context as usize }
    }

    /// Whether `id` is on this PD's device.
    pub fn serves(&self, id: &CmId) -> bool {
        id.verbs() as usize == self.device_key()
    }
}

/// Access a memory region grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// The local adapter only (receive buffers, data the target reads or writes with RDMA
    /// READ/WRITE, sends).
    Local,
    /// The peer may RDMA READ and WRITE it with the region's rkey (an initiator's data buffers).
    Remote,
}

impl Access {
    fn flags(self) -> i32 {
        let local = ibv_access_flags::IBV_ACCESS_LOCAL_WRITE.0;
        let bits = match self {
            Access::Local => local,
            Access::Remote => {
                local
                    | ibv_access_flags::IBV_ACCESS_REMOTE_READ.0
                    | ibv_access_flags::IBV_ACCESS_REMOTE_WRITE.0
            }
        };
        bits as i32
    }
}

struct Mr {
    mr: NonNull<ibv_mr>,
    _pd: Arc<PdInner>,
}

// SAFETY: as for PdInner.
unsafe impl Send for Mr {}

impl Mr {
    /// # Safety
    /// `addr..addr+len` must stay allocated until the returned Mr is dropped, and the adapter
    /// may only be told to touch it through work requests whose buffers the caller owns.
    unsafe fn register(
        pd: &ProtectionDomain,
        addr: *mut u8,
        len: usize,
        access: Access,
    ) -> Result<Mr, RdmaError> {
        // SAFETY: forwarded from the caller.
        let mr = unsafe {
            ibv_reg_mr(
                pd.0.pd.as_ptr(),
                addr as *mut libc::c_void,
                len,
                access.flags(),
            )
        };
        let mr = NonNull::new(mr).ok_or_else(|| RdmaError::last("ibv_reg_mr"))?;
        Ok(Mr {
            mr,
            _pd: Arc::clone(&pd.0),
        })
    }

    fn lkey(&self) -> u32 {
        // SAFETY: the MR is alive; lkey is a plain field.
        unsafe { (*self.mr.as_ptr()).lkey }
    }

    fn rkey(&self) -> u32 {
        // SAFETY: as in lkey.
        unsafe { (*self.mr.as_ptr()).rkey }
    }
}

impl Drop for Mr {
    fn drop(&mut self) {
        // SAFETY: the MR is ours; no posted work request uses it any more (its owner destroyed
        // the queue pair or saw the completions first).
        unsafe { ibv_dereg_mr(self.mr.as_ptr()) };
    }
}

/// Memory owned by the wrapper and registered as one region: fixed-size entries (receive
/// capsules, completion capsules, an initiator's data buffers).
pub struct OwnedRegion {
    // Declared before `mem` so the registration goes first.
    mr: Mr,
    mem: Box<[u8]>,
    entry: usize,
}

impl std::fmt::Debug for OwnedRegion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OwnedRegion")
            .field("entries", &self.entries())
            .field("entry", &self.entry)
            .finish()
    }
}

impl OwnedRegion {
    pub fn new(
        pd: &ProtectionDomain,
        entries: usize,
        entry: usize,
        access: Access,
    ) -> Result<OwnedRegion, RdmaError> {
        if entries == 0 || entry == 0 {
            return Err(RdmaError::Invalid("empty region".into()));
        }
        let mut mem = vec![0u8; entries * entry].into_boxed_slice();
        // SAFETY: `mem` is a heap allocation that moves with the struct without changing
        // address, and the MR (declared first) is dropped before it.
        let mr = unsafe { Mr::register(pd, mem.as_mut_ptr(), mem.len(), access)? };
        Ok(OwnedRegion { mr, mem, entry })
    }

    pub fn entries(&self) -> usize {
        self.mem.len() / self.entry
    }

    pub fn entry_len(&self) -> usize {
        self.entry
    }

    fn entry_ptr(&self, i: usize) -> u64 {
        self.mem.as_ptr() as u64 + (i * self.entry) as u64
    }

    fn slice(&self, i: usize) -> &[u8] {
        &self.mem[i * self.entry..(i + 1) * self.entry]
    }

    fn slice_mut(&mut self, i: usize) -> &mut [u8] {
        &mut self.mem[i * self.entry..(i + 1) * self.entry]
    }

    /// Entry `i`'s bytes. With [`Access::Remote`] the peer may write them while a command that
    /// named them is outstanding: read them only after that command completed.
    pub fn entry(&self, i: usize) -> Option<&[u8]> {
        (i < self.entries()).then(|| self.slice(i))
    }

    /// Entry `i` to fill, e.g. write data before the command naming it is sent.
    pub fn entry_mut(&mut self, i: usize) -> Option<&mut [u8]> {
        (i < self.entries()).then(|| self.slice_mut(i))
    }

    /// Where the peer reaches entry `i` (address, rkey) when registered with [`Access::Remote`].
    pub fn remote(&self, i: usize) -> RemoteBuf {
        RemoteBuf {
            addr: self.entry_ptr(i),
            len: self.entry as u32,
            rkey: self.mr.rkey(),
        }
    }
}

/// The memory regions of one reactor buffer pool, one per buffer, registered once when the
/// transport first serves a device (SPDK registers its pools the same way).
pub struct PoolRegistration {
    pool: PoolId,
    regions: PoolRegions,
    mrs: Vec<Mr>,
}

impl std::fmt::Debug for PoolRegistration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolRegistration")
            .field("pool", &self.pool)
            .field("buffers", &self.mrs.len())
            .finish()
    }
}

impl PoolRegistration {
    /// Registers every buffer of the pool `regions` describes, for local access.
    ///
    /// The registration pins the buffers' pages; the adapter touches one only through a work
    /// request posted with an [`IoBuf`] the queue pair holds until its completion.
    pub fn new(
        pd: &ProtectionDomain,
        regions: &PoolRegions,
    ) -> Result<PoolRegistration, RdmaError> {
        let mut mrs = Vec::with_capacity(regions.regions().len());
        for &(addr, len) in regions.regions() {
            // SAFETY: the memory is a live pool buffer (PoolRegions is only made by a pool). The
            // adapter is only ever pointed at it by `QueuePair::post_rdma_*`, which takes the
            // IoBuf by value and keeps it until the work request completed, so no Rust code can
            // use or free the buffer while the adapter may touch it. A buffer freed with its
            // pool while still registered stays pinned and is not touched again.
            mrs.push(unsafe { Mr::register(pd, addr as *mut u8, len, Access::Local)? });
        }
        Ok(PoolRegistration {
            pool: regions.id(),
            regions: regions.clone(),
            mrs,
        })
    }

    /// The local key covering `len` bytes of `buf`, if `buf` is one of this pool's buffers.
    pub fn lkey(&self, buf: &IoBuf, len: usize) -> Option<u32> {
        if !self.regions.matches(buf, len) {
            return None;
        }
        let index = usize::from(buf.pool_index()?);
        self.mrs.get(index).map(Mr::lkey)
    }
}

pub(crate) struct CqInner {
    pub(crate) cq: NonNull<ibv_cq>,
    _pd: Arc<PdInner>,
    /// The completion channel the CQ signals, dropped after the CQ (field order).
    pub(crate) _channel: Option<Arc<crate::notify::ChannelInner>>,
}

// SAFETY: as for PdInner.
unsafe impl Send for CqInner {}
// SAFETY: as for PdInner.
unsafe impl Sync for CqInner {}

impl Drop for CqInner {
    fn drop(&mut self) {
        // SAFETY: every QP using the CQ holds an Arc to it, so none is left.
        unsafe { ibv_destroy_cq(self.cq.as_ptr()) };
    }
}

/// What finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opcode {
    Send,
    RdmaWrite,
    RdmaRead,
    Recv,
    Other(u32),
}

/// One work completion, copied out of the CQ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkCompletion {
    pub wr_id: u64,
    /// 0 is success (IBV_WC_SUCCESS); anything else failed (flushed on a QP in error too).
    pub status: u32,
    pub opcode: Opcode,
    pub byte_len: u32,
    pub qp_num: u32,
    /// A receive whose send carried an invalidate: the rkey the peer invalidated.
    pub invalidated_rkey: Option<u32>,
}

impl WorkCompletion {
    pub fn is_ok(&self) -> bool {
        self.status == ibv_wc_status::IBV_WC_SUCCESS
    }

    /// The verbs name of a failed status.
    pub fn status_str(&self) -> String {
        // SAFETY: ibv_wc_status_str returns a static string for any value.
        let s = unsafe { ibv_wc_status_str(self.status) };
        if s.is_null() {
            return format!("status {}", self.status);
        }
        // SAFETY: non-null static NUL-terminated string.
        unsafe { std::ffi::CStr::from_ptr(s) }
            .to_string_lossy()
            .into_owned()
    }
}

/// A completion queue polled by the reactor (never armed for events: a polling reactor does not
/// sleep on it).
pub struct CompletionQueue {
    pub(crate) inner: Arc<CqInner>,
    scratch: Vec<ibv_wc>,
}

impl std::fmt::Debug for CompletionQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompletionQueue")
            .field("batch", &self.scratch.capacity())
            .finish()
    }
}

impl CompletionQueue {
    /// A CQ of `depth` entries on the PD's device; `batch` completions are taken per poll.
    pub fn new(
        pd: &ProtectionDomain,
        depth: i32,
        batch: usize,
    ) -> Result<CompletionQueue, RdmaError> {
        CompletionQueue::create(pd, depth, batch, None)
    }

    /// A CQ as [`CompletionQueue::new`], signalling `channel` once armed (see
    /// [`crate::CompletionChannel`]).
    pub(crate) fn create(
        pd: &ProtectionDomain,
        depth: i32,
        batch: usize,
        channel: Option<&Arc<crate::notify::ChannelInner>>,
    ) -> Result<CompletionQueue, RdmaError> {
        let raw_channel = channel.map_or(std::ptr::null_mut(), |c| c.raw.as_ptr());
        // SAFETY: the PD's context is valid while the PD is; the channel (when given) is alive
        // and kept alive by the CQ's Arc below until after the CQ is destroyed.
        let cq = unsafe {
            ibv_create_cq(
                (*pd.0.pd.as_ptr()).context,
                depth,
                std::ptr::null_mut(),
                raw_channel,
                0,
            )
        };
        let cq = NonNull::new(cq).ok_or_else(|| RdmaError::last("ibv_create_cq"))?;
        let mut scratch = Vec::with_capacity(batch.max(1));
        // SAFETY: ibv_wc is plain old data; zeroed entries are overwritten by ibv_poll_cq.
        scratch.resize_with(batch.max(1), || unsafe { std::mem::zeroed() });
        Ok(CompletionQueue {
            inner: Arc::new(CqInner {
                cq,
                _pd: Arc::clone(&pd.0),
                _channel: channel.cloned(),
            }),
            scratch,
        })
    }

    /// Takes up to the batch size of completions into `out` (cleared first); never blocks.
    pub fn poll(&mut self, out: &mut Vec<WorkCompletion>) -> Result<usize, RdmaError> {
        out.clear();
        let n = self.scratch.len() as i32;
        // SAFETY: the CQ is alive and `scratch` has room for `n` entries.
        let got = unsafe { ibv_poll_cq(self.inner.cq.as_ptr(), n, self.scratch.as_mut_ptr()) };
        if got < 0 {
            return Err(RdmaError::code("ibv_poll_cq", -got));
        }
        for wc in &self.scratch[..got as usize] {
            let opcode = match wc.opcode {
                ibv_wc_opcode::IBV_WC_SEND => Opcode::Send,
                ibv_wc_opcode::IBV_WC_RDMA_WRITE => Opcode::RdmaWrite,
                ibv_wc_opcode::IBV_WC_RDMA_READ => Opcode::RdmaRead,
                ibv_wc_opcode::IBV_WC_RECV => Opcode::Recv,
                other => Opcode::Other(other),
            };
            let invalidated_rkey = if wc.wc_flags & ibv_wc_flags::IBV_WC_WITH_INV.0 != 0 {
                // SAFETY: with IBV_WC_WITH_INV set, the union holds the invalidated rkey.
                Some(unsafe { wc.imm_data_invalidated_rkey_union.invalidated_rkey })
            } else {
                None
            };
            out.push(WorkCompletion {
                wr_id: wc.wr_id,
                status: wc.status,
                opcode,
                byte_len: wc.byte_len,
                qp_num: wc.qp_num,
                invalidated_rkey,
            });
        }
        Ok(got as usize)
    }
}

/// Sizes of a queue pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QpCaps {
    /// Receive entries (and receive ring entries).
    pub recv_entries: usize,
    /// Bytes per receive entry.
    pub recv_size: usize,
    /// Send ring entries (messages this side sends).
    pub send_entries: usize,
    /// Bytes per send ring entry.
    pub send_size: usize,
    /// Work requests the send queue holds (sends plus RDMA READ/WRITE).
    pub max_send_wr: u32,
    /// Buffers held for RDMA READ/WRITE, by slot.
    pub slots: usize,
}

/// A peer's memory: where an RDMA READ reads or an RDMA WRITE writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteBuf {
    pub addr: u64,
    pub len: u32,
    pub rkey: u32,
}

/// A reliable-connection queue pair with the memory its work requests use: a receive ring and a
/// send ring it owns, and the pool buffers of RDMA READ/WRITE it holds until their completion.
pub struct QueuePair {
    // Field order is drop order: see Drop.
    id: CmId,
    recv: OwnedRegion,
    recv_posted: Vec<bool>,
    send: OwnedRegion,
    send_busy: Vec<Option<u64>>,
    held: Vec<Option<(IoBuf, u64)>>,
    qp_num: u32,
    _cq: Arc<CqInner>,
}

impl std::fmt::Debug for QueuePair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueuePair")
            .field("qp_num", &self.qp_num)
            .field("id", &self.id)
            .finish()
    }
}

impl QueuePair {
    /// Creates the RC queue pair of `id` on `pd`, both directions completing on `cq`.
    pub fn create(
        id: CmId,
        pd: &ProtectionDomain,
        cq: &CompletionQueue,
        caps: QpCaps,
    ) -> Result<QueuePair, RdmaError> {
        if !pd.serves(&id) {
            return Err(RdmaError::Invalid(
                "the PD is on another device than the id".into(),
            ));
        }
        let recv = OwnedRegion::new(pd, caps.recv_entries, caps.recv_size, Access::Local)?;
        let send = OwnedRegion::new(pd, caps.send_entries, caps.send_size, Access::Local)?;
        let mut attr = ibv_qp_init_attr {
            qp_context: std::ptr::null_mut(),
            send_cq: cq.inner.cq.as_ptr(),
            recv_cq: cq.inner.cq.as_ptr(),
            srq: std::ptr::null_mut(),
            cap: ibv_qp_cap {
                max_send_wr: caps.max_send_wr,
                max_recv_wr: caps.recv_entries as u32,
                max_send_sge: 1,
                max_recv_sge: 1,
                max_inline_data: 0,
            },
            qp_type: ibv_qp_type::IBV_QPT_RC,
            sq_sig_all: 0,
        };
        // SAFETY: the id is ours without a QP; PD and CQ are alive (and kept alive by this
        // struct's Arcs as long as the QP exists).
        if unsafe { rdma_create_qp(id.id.as_ptr(), pd.0.pd.as_ptr(), &mut attr) } != 0 {
            return Err(RdmaError::last("rdma_create_qp"));
        }
        // SAFETY: rdma_create_qp succeeded, so id->qp is a valid QP.
        let qp_num = unsafe { (*(*id.id.as_ptr()).qp).qp_num };
        let mut held = Vec::with_capacity(caps.slots);
        held.resize_with(caps.slots, || None);
        Ok(QueuePair {
            id,
            recv_posted: vec![false; caps.recv_entries],
            recv,
            send_busy: vec![None; caps.send_entries],
            send,
            held,
            qp_num,
            _cq: Arc::clone(&cq.inner),
        })
    }

    pub fn id(&self) -> &CmId {
        &self.id
    }

    pub fn qp_num(&self) -> u32 {
        self.qp_num
    }

    fn qp(&self) -> *mut ibv_qp {
        // SAFETY: the id has had its QP since `create`; it is destroyed only in Drop.
        unsafe { (*self.id.id.as_ptr()).qp }
    }

    /// Posts receive entry `i`; its completion comes with `wr_id`.
    pub fn post_recv(&mut self, i: usize, wr_id: u64) -> Result<(), RdmaError> {
        if i >= self.recv_posted.len() || self.recv_posted[i] {
            return Err(RdmaError::Invalid(format!(
                "receive entry {i} busy or out of range"
            )));
        }
        let mut sge = ibv_sge {
            addr: self.recv.entry_ptr(i),
            length: self.recv.entry_len() as u32,
            lkey: self.recv.mr.lkey(),
        };
        let mut wr = ibv_recv_wr {
            wr_id,
            next: std::ptr::null_mut(),
            sg_list: &mut sge,
            num_sge: 1,
        };
        let mut bad = std::ptr::null_mut();
        // SAFETY: the QP is alive; the entry is owned memory registered in `recv.mr`, and it is
        // marked posted so no slice of it is handed out until its completion.
        let rc = unsafe { ibv_post_recv(self.qp(), &mut wr, &mut bad) };
        if rc != 0 {
            return Err(RdmaError::code("ibv_post_recv", rc));
        }
        self.recv_posted[i] = true;
        Ok(())
    }

    /// The bytes receive entry `i` got, after its completion (`wc.byte_len`).
    pub fn received(&mut self, i: usize, wc: &WorkCompletion) -> Option<&[u8]> {
        if wc.qp_num != self.qp_num || wc.opcode != Opcode::Recv {
            return None;
        }
        let posted = self.recv_posted.get_mut(i)?;
        *posted = false;
        let len = (wc.byte_len as usize).min(self.recv.entry_len());
        Some(&self.recv.slice(i)[..len])
    }

    /// Receive entry `i` again after its completion, while it is not reposted (`len` bytes).
    pub fn recv_entry(&self, i: usize, len: usize) -> Option<&[u8]> {
        if *self.recv_posted.get(i)? {
            return None;
        }
        Some(&self.recv.slice(i)[..len.min(self.recv.entry_len())])
    }

    /// Send ring entry `i` to fill, when no send of it is in flight.
    pub fn send_entry(&mut self, i: usize) -> Option<&mut [u8]> {
        if self.send_busy.get(i)?.is_some() {
            return None;
        }
        Some(self.send.slice_mut(i))
    }

    /// Sends the first `len` bytes of send entry `i`, signaled with `wr_id`; with `invalidate`,
    /// as SEND with Invalidate of that remote key.
    pub fn post_send(
        &mut self,
        i: usize,
        len: usize,
        wr_id: u64,
        invalidate: Option<u32>,
    ) -> Result<(), RdmaError> {
        if self.send_busy.get(i).is_none_or(Option::is_some) || len > self.send.entry_len() {
            return Err(RdmaError::Invalid(format!(
                "send entry {i} busy or too short"
            )));
        }
        let mut sge = ibv_sge {
            addr: self.send.entry_ptr(i),
            length: len as u32,
            lkey: self.send.mr.lkey(),
        };
        let (opcode, key) = match invalidate {
            Some(rkey) => (ibv_wr_opcode::IBV_WR_SEND_WITH_INV, rkey),
            None => (ibv_wr_opcode::IBV_WR_SEND, 0),
        };
        // SAFETY: the send entry is owned, registered memory, marked busy until its completion.
        unsafe { self.post(&mut sge, wr_id, opcode, key, None, true) }?;
        self.send_busy[i] = Some(wr_id);
        Ok(())
    }

    /// Frees send entry `i` after the completion of its send.
    pub fn send_done(&mut self, i: usize, wc: &WorkCompletion) -> bool {
        match self.send_busy.get_mut(i) {
            Some(busy) if *busy == Some(wc.wr_id) && wc.qp_num == self.qp_num => {
                *busy = None;
                true
            }
            _ => false,
        }
    }

    /// RDMA READ of `remote` into `buf` (held in `slot` until the completion with `wr_id`,
    /// signaled). On failure the buffer comes back.
    pub fn post_rdma_read(
        &mut self,
        slot: usize,
        buf: IoBuf,
        lkey: u32,
        remote: RemoteBuf,
        wr_id: u64,
    ) -> Result<(), (RdmaError, IoBuf)> {
        self.post_rdma(
            slot,
            buf,
            lkey,
            remote,
            wr_id,
            ibv_wr_opcode::IBV_WR_RDMA_READ,
            wr_id,
            true,
        )
    }

    /// RDMA WRITE of the first `remote.len` bytes of `buf` to `remote`, unsignaled: `buf` is held
    /// in `slot` until the completion of `release_on` (the send that follows it on this queue
    /// pair; a reliable connection completes in order).
    pub fn post_rdma_write(
        &mut self,
        slot: usize,
        buf: IoBuf,
        lkey: u32,
        remote: RemoteBuf,
        release_on: u64,
    ) -> Result<(), (RdmaError, IoBuf)> {
        self.post_rdma(
            slot,
            buf,
            lkey,
            remote,
            release_on,
            ibv_wr_opcode::IBV_WR_RDMA_WRITE,
            release_on,
            false,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn post_rdma(
        &mut self,
        slot: usize,
        buf: IoBuf,
        lkey: u32,
        remote: RemoteBuf,
        wr_id: u64,
        opcode: ibv_wr_opcode::Type,
        release_on: u64,
        signaled: bool,
    ) -> Result<(), (RdmaError, IoBuf)> {
        if self.held.get(slot).is_none_or(Option::is_some) {
            return Err((
                RdmaError::Invalid(format!("slot {slot} busy or out of range")),
                buf,
            ));
        }
        if remote.len as usize > buf.capacity() {
            return Err((
                RdmaError::Invalid("remote buffer larger than the local one".into()),
                buf,
            ));
        }
        let mut buf = buf;
        let mut sge = ibv_sge {
            addr: buf.as_mut_ptr() as u64,
            length: remote.len,
            lkey,
        };
        // SAFETY: `buf` is moved into `held` right after a successful post and stays there until
        // the completion of `release_on`; `lkey` covers it (the caller got it from the pool's
        // registration for this very buffer).
        let posted = unsafe {
            self.post(
                &mut sge,
                wr_id,
                opcode,
                remote.rkey,
                Some(remote.addr),
                signaled,
            )
        };
        match posted {
            Ok(()) => {
                self.held[slot] = Some((buf, release_on));
                Ok(())
            }
            Err(e) => Err((e, buf)),
        }
    }

    /// The buffer held in `slot`, once `wc` is the completion it waited for.
    pub fn release(&mut self, slot: usize, wc: &WorkCompletion) -> Option<IoBuf> {
        if wc.qp_num != self.qp_num {
            return None;
        }
        let entry = self.held.get_mut(slot)?;
        match entry {
            Some((_, id)) if *id == wc.wr_id => entry.take().map(|(b, _)| b),
            _ => None,
        }
    }

    /// # Safety
    /// The memory `sge` names must be registered under its lkey and stay untouched by Rust code
    /// until the work request completes.
    unsafe fn post(
        &mut self,
        sge: &mut ibv_sge,
        wr_id: u64,
        opcode: ibv_wr_opcode::Type,
        key: u32,
        remote: Option<u64>,
        signaled: bool,
    ) -> Result<(), RdmaError> {
        // SAFETY: ibv_send_wr is plain old data; every field used is set below.
        let mut wr: ibv_send_wr = unsafe { std::mem::zeroed() };
        wr.wr_id = wr_id;
        wr.sg_list = sge;
        wr.num_sge = 1;
        wr.opcode = opcode;
        wr.send_flags = if signaled {
            ibv_send_flags::IBV_SEND_SIGNALED.0
        } else {
            0
        };
        if opcode == ibv_wr_opcode::IBV_WR_SEND_WITH_INV {
            wr.imm_data_invalidated_rkey_union.invalidated_rkey = key;
        }
        if let Some(addr) = remote {
            wr.wr.rdma = rdma_t {
                remote_addr: addr,
                rkey: key,
            };
        }
        let mut bad = std::ptr::null_mut();
        // SAFETY: the QP is alive; `wr` and `sge` are valid for the call (verbs copies them).
        let rc = unsafe { ibv_post_send(self.qp(), &mut wr, &mut bad) };
        if rc != 0 {
            return Err(RdmaError::code("ibv_post_send", rc));
        }
        Ok(())
    }

    /// Destroys the queue pair and gives back every buffer it held (the adapter no longer
    /// touches any of them).
    pub fn close(mut self, out: &mut impl FnMut(IoBuf)) {
        self.destroy_qp();
        for entry in self.held.iter_mut() {
            if let Some((buf, _)) = entry.take() {
                out(buf);
            }
        }
    }

    fn destroy_qp(&mut self) {
        if !self.qp().is_null() {
            // SAFETY: the QP is ours; after this the adapter touches none of our memory.
            unsafe { rdma_destroy_qp(self.id.id.as_ptr()) };
            // SAFETY: rdma_destroy_qp leaves id->qp dangling; clear it so it is not used again.
            unsafe { (*self.id.id.as_ptr()).qp = std::ptr::null_mut() };
        }
    }
}

impl Drop for QueuePair {
    fn drop(&mut self) {
        // The QP goes before the regions and held buffers it may write (fields drop after this).
        self.destroy_qp();
    }
}
