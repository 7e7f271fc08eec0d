//! The RDMA connection manager: a non-blocking event channel and the ids created on it.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::ptr::NonNull;
use std::sync::Arc;

use rdma_sys::*;

use crate::addr::{from_raw, RawAddr};
use crate::error::RdmaError;

/// Largest private data an RDMA CM connect request, accept or reject carries here.
pub const MAX_PRIVATE_DATA: usize = 56;

struct ChannelInner(NonNull<rdma_event_channel>);

// SAFETY: an rdma_event_channel is a file descriptor plus state librdmacm protects itself; it may
// be used and destroyed from any thread.
unsafe impl Send for ChannelInner {}
// SAFETY: as above; rdma_get_cm_event on one channel from several threads is allowed.
unsafe impl Sync for ChannelInner {}

impl Drop for ChannelInner {
    fn drop(&mut self) {
        // SAFETY: the channel came from rdma_create_event_channel and every id on it holds an Arc
        // to this, so none is left.
        unsafe { rdma_destroy_event_channel(self.0.as_ptr()) };
    }
}

/// A connection-manager event channel whose descriptor is non-blocking, so a reactor polls it
/// (or parks on it with epoll) instead of blocking in `rdma_get_cm_event`.
#[derive(Clone)]
pub struct EventChannel(Arc<ChannelInner>);

impl std::fmt::Debug for EventChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventChannel")
            .field("fd", &self.raw_fd())
            .finish()
    }
}

/// Makes a channel's descriptor non-blocking (event and completion channels).
pub(crate) fn set_nonblocking(fd: BorrowedFd<'_>) -> Result<(), RdmaError> {
    let fd = fd.as_raw_fd();
    // SAFETY: fcntl on an open descriptor the caller borrows.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    // SAFETY: as above.
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(RdmaError::last("fcntl(O_NONBLOCK)"));
    }
    Ok(())
}

/// What happened on an id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmEventKind {
    AddrResolved,
    RouteResolved,
    ConnectRequest,
    ConnectResponse,
    Established,
    Rejected,
    Disconnected,
    /// Address or route resolution, connection or device failure.
    Error,
    TimewaitExit,
    Other(u32),
}

impl CmEventKind {
    fn from_raw(t: rdma_cm_event_type::Type) -> CmEventKind {
        use rdma_cm_event_type::*;
        match t {
            RDMA_CM_EVENT_ADDR_RESOLVED => CmEventKind::AddrResolved,
            RDMA_CM_EVENT_ROUTE_RESOLVED => CmEventKind::RouteResolved,
            RDMA_CM_EVENT_CONNECT_REQUEST => CmEventKind::ConnectRequest,
            RDMA_CM_EVENT_CONNECT_RESPONSE => CmEventKind::ConnectResponse,
            RDMA_CM_EVENT_ESTABLISHED => CmEventKind::Established,
            RDMA_CM_EVENT_REJECTED => CmEventKind::Rejected,
            RDMA_CM_EVENT_DISCONNECTED => CmEventKind::Disconnected,
            RDMA_CM_EVENT_ADDR_ERROR
            | RDMA_CM_EVENT_ROUTE_ERROR
            | RDMA_CM_EVENT_CONNECT_ERROR
            | RDMA_CM_EVENT_UNREACHABLE
            | RDMA_CM_EVENT_DEVICE_REMOVAL => CmEventKind::Error,
            RDMA_CM_EVENT_TIMEWAIT_EXIT => CmEventKind::TimewaitExit,
            other => CmEventKind::Other(other),
        }
    }
}

/// One event, copied out and acknowledged (so destroying its id never waits for it).
#[derive(Debug)]
pub struct CmEvent {
    pub kind: CmEventKind,
    /// The id the event is about ([`CmId::key`]); for a connect request, the listening id's.
    pub key: usize,
    /// A connect request's new id, owned by the receiver (dropping it refuses nothing: call
    /// [`CmId::reject`] first).
    pub request: Option<CmId>,
    pub status: i32,
    private: [u8; MAX_PRIVATE_DATA],
    private_len: usize,
}

impl CmEvent {
    /// The private data that came with a connect request, response or reject.
    pub fn private_data(&self) -> &[u8] {
        &self.private[..self.private_len]
    }
}

impl EventChannel {
    pub fn new() -> Result<EventChannel, RdmaError> {
        // SAFETY: no arguments; a null return is the error.
        let raw = unsafe { rdma_create_event_channel() };
        let raw = NonNull::new(raw).ok_or_else(|| RdmaError::last("rdma_create_event_channel"))?;
        let channel = EventChannel(Arc::new(ChannelInner(raw)));
        set_nonblocking(channel.fd())?;
        Ok(channel)
    }

    fn raw_fd(&self) -> RawFd {
        // SAFETY: the channel is alive (we hold the Arc); fd is a plain field.
        unsafe { (*self.0 .0.as_ptr()).fd }
    }

    /// The descriptor that becomes readable when an event is waiting (for epoll).
    pub fn fd(&self) -> BorrowedFd<'_> {
        // SAFETY: the descriptor stays open as long as the channel, which `self` borrows.
        unsafe { BorrowedFd::borrow_raw(self.raw_fd()) }
    }

    /// The next event, or None when none is waiting.
    pub fn next_event(&self) -> Result<Option<CmEvent>, RdmaError> {
        let mut raw: *mut rdma_cm_event = std::ptr::null_mut();
        // SAFETY: the channel is alive; `raw` receives an event we acknowledge below.
        if unsafe { rdma_get_cm_event(self.0 .0.as_ptr(), &mut raw) } != 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() == std::io::ErrorKind::WouldBlock {
                return Ok(None);
            }
            return Err(RdmaError::Os {
                call: "rdma_get_cm_event",
                source: err,
            });
        }
        // SAFETY: rdma_get_cm_event succeeded, so `raw` points to a valid event until acked.
        let ev = unsafe { &*raw };
        let kind = CmEventKind::from_raw(ev.event);
        let mut private = [0u8; MAX_PRIVATE_DATA];
        let mut private_len = 0;
        if matches!(
            kind,
            CmEventKind::ConnectRequest
                | CmEventKind::ConnectResponse
                | CmEventKind::Established
                | CmEventKind::Rejected
        ) {
            // SAFETY: for these events the connection parameters are the valid union member.
            let conn = unsafe { ev.param.conn };
            let len = usize::from(conn.private_data_len).min(MAX_PRIVATE_DATA);
            if !conn.private_data.is_null() && len > 0 {
                // SAFETY: librdmacm guarantees private_data_len readable bytes at the pointer
                // until the event is acknowledged.
                let src =
                    unsafe { std::slice::from_raw_parts(conn.private_data as *const u8, len) };
                private[..len].copy_from_slice(src);
                private_len = len;
            }
        }
        let (key, request) = if kind == CmEventKind::ConnectRequest {
            let listen = ev.listen_id as usize;
            let id = NonNull::new(ev.id).map(|id| CmId {
                id,
                _channel: Arc::clone(&self.0),
            });
            (listen, id)
        } else {
            (ev.id as usize, None)
        };
        let status = ev.status;
        // SAFETY: `raw` is the event obtained above, acknowledged exactly once.
        unsafe { rdma_ack_cm_event(raw) };
        Ok(Some(CmEvent {
            kind,
            key,
            request,
            status,
            private,
            private_len,
        }))
    }
}

/// A connection-manager id (SPDK's and the kernel's `rdma_cm_id`): a listener, or one side of a
/// reliable connection. Destroyed on drop (its queue pair first, see [`crate::QueuePair`]).
pub struct CmId {
    pub(crate) id: NonNull<rdma_cm_id>,
    _channel: Arc<ChannelInner>,
}

// SAFETY: librdmacm ids may be used from any thread; a CmId is the only handle to its id.
unsafe impl Send for CmId {}

impl std::fmt::Debug for CmId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CmId")
            .field("key", &self.key())
            .field("local", &self.local_addr())
            .field("peer", &self.peer_addr())
            .finish()
    }
}

impl Drop for CmId {
    fn drop(&mut self) {
        // SAFETY: the id is ours; its events were acknowledged when read and its queue pair,
        // if any, was destroyed by the QueuePair that owned it.
        unsafe { rdma_destroy_id(self.id.as_ptr()) };
    }
}

fn check(call: &'static str, rc: i32) -> Result<(), RdmaError> {
    if rc == 0 {
        Ok(())
    } else {
        Err(RdmaError::last(call))
    }
}

impl CmId {
    /// A new reliable-connection id on `channel`.
    pub fn new(channel: &EventChannel) -> Result<CmId, RdmaError> {
        let mut raw: *mut rdma_cm_id = std::ptr::null_mut();
        // SAFETY: the channel is alive; `raw` receives the new id.
        let rc = unsafe {
            rdma_create_id(
                channel.0 .0.as_ptr(),
                &mut raw,
                std::ptr::null_mut(),
                rdma_port_space::RDMA_PS_TCP,
            )
        };
        check("rdma_create_id", rc)?;
        let id = NonNull::new(raw)
            .ok_or_else(|| RdmaError::Invalid("rdma_create_id gave null".into()))?;
        Ok(CmId {
            id,
            _channel: Arc::clone(&channel.0),
        })
    }

    /// An id bound to `addr` and listening (port 0 picks a port; see [`CmId::local_addr`]).
    pub fn listen(
        channel: &EventChannel,
        addr: SocketAddr,
        backlog: i32,
    ) -> Result<CmId, RdmaError> {
        let id = CmId::new(channel)?;
        let mut raw = RawAddr::new(addr);
        // SAFETY: the id is ours and `raw` is a valid socket address for the call.
        check("rdma_bind_addr", unsafe {
            rdma_bind_addr(id.id.as_ptr(), raw.as_mut_ptr())
        })?;
        // SAFETY: the id is bound.
        check("rdma_listen", unsafe {
            rdma_listen(id.id.as_ptr(), backlog)
        })?;
        Ok(id)
    }

    /// Identity of this id in [`CmEvent::key`].
    pub fn key(&self) -> usize {
        self.id.as_ptr() as usize
    }

    pub fn local_addr(&self) -> Option<SocketAddr> {
        // SAFETY: the id is alive; route.addr holds socket addresses the CM filled in (zeroed
        // storage, family AF_UNSPEC, before that).
        unsafe {
            let addr = &(*self.id.as_ptr()).route.addr;
            from_raw(&addr.src_addr_union.src_storage)
        }
    }

    pub fn peer_addr(&self) -> Option<SocketAddr> {
        // SAFETY: as in local_addr.
        unsafe {
            let addr = &(*self.id.as_ptr()).route.addr;
            from_raw(&addr.dst_addr_union.dst_storage)
        }
    }

    /// Whether the id is bound to a device (connect requests and resolved ids are).
    pub fn has_device(&self) -> bool {
        // SAFETY: the id is alive; verbs is a plain pointer field.
        unsafe { !(*self.id.as_ptr()).verbs.is_null() }
    }

    pub(crate) fn verbs(&self) -> *mut ibv_context {
        // SAFETY: as in has_device.
        unsafe { (*self.id.as_ptr()).verbs }
    }

    /// Starts resolving `dst` (event [`CmEventKind::AddrResolved`]).
    pub fn resolve_addr(&self, dst: SocketAddr, timeout_ms: i32) -> Result<(), RdmaError> {
        let mut raw = RawAddr::new(dst);
        // SAFETY: the id is ours; a null source address lets the CM pick one.
        check("rdma_resolve_addr", unsafe {
            rdma_resolve_addr(
                self.id.as_ptr(),
                std::ptr::null_mut(),
                raw.as_mut_ptr(),
                timeout_ms,
            )
        })
    }

    /// Starts resolving the route (event [`CmEventKind::RouteResolved`]).
    pub fn resolve_route(&self, timeout_ms: i32) -> Result<(), RdmaError> {
        // SAFETY: the id is ours and its address resolved.
        check("rdma_resolve_route", unsafe {
            rdma_resolve_route(self.id.as_ptr(), timeout_ms)
        })
    }

    fn conn_param(private: &[u8], depth: u8) -> Result<rdma_conn_param, RdmaError> {
        if private.len() > MAX_PRIVATE_DATA {
            return Err(RdmaError::Invalid(format!(
                "{} bytes of private data, at most {MAX_PRIVATE_DATA}",
                private.len()
            )));
        }
        Ok(rdma_conn_param {
            private_data: private.as_ptr() as *const libc::c_void,
            private_data_len: private.len() as u8,
            responder_resources: depth,
            initiator_depth: depth,
            flow_control: 1,
            retry_count: 7,
            rnr_retry_count: 7,
            srq: 0,
            qp_num: 0,
        })
    }

    /// Accepts a connect request (its queue pair created first) with `private` data.
    /// `rdma_read_depth` bounds the RDMA READs in flight each way.
    pub fn accept(&self, private: &[u8], rdma_read_depth: u8) -> Result<(), RdmaError> {
        let mut param = CmId::conn_param(private, rdma_read_depth)?;
        // SAFETY: the id is a connect request we own; `param` and the private data it points to
        // outlive the call, which copies them.
        check("rdma_accept", unsafe {
            rdma_accept(self.id.as_ptr(), &mut param)
        })
    }

    /// Refuses a connect request with `private` data.
    pub fn reject(&self, private: &[u8]) -> Result<(), RdmaError> {
        if private.len() > MAX_PRIVATE_DATA {
            return Err(RdmaError::Invalid("private data too long".into()));
        }
        // SAFETY: the id is a connect request we own; the data is copied by the call.
        check("rdma_reject", unsafe {
            rdma_reject(
                self.id.as_ptr(),
                private.as_ptr() as *const libc::c_void,
                private.len() as u8,
            )
        })
    }

    /// Connects (after route resolution and queue pair creation) with `private` data.
    pub fn connect(&self, private: &[u8], rdma_read_depth: u8) -> Result<(), RdmaError> {
        let mut param = CmId::conn_param(private, rdma_read_depth)?;
        // SAFETY: the id is ours with a queue pair; the parameters are copied by the call.
        check("rdma_connect", unsafe {
            rdma_connect(self.id.as_ptr(), &mut param)
        })
    }

    /// Starts an orderly disconnect; both sides then see [`CmEventKind::Disconnected`].
    pub fn disconnect(&self) -> Result<(), RdmaError> {
        // SAFETY: the id is ours.
        check("rdma_disconnect", unsafe {
            rdma_disconnect(self.id.as_ptr())
        })
    }
}
