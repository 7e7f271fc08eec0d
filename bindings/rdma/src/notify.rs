//! Completion channels: a descriptor that becomes readable when an armed completion queue gets
//! a completion, so a thread (or a parked reactor) can sleep in poll/epoll instead of spinning
//! on `ibv_poll_cq`.
//!
//! The protocol: poll the CQ until it is empty, [`CompletionQueue::arm`] it, poll it once more
//! (a completion that raced the arm does not signal), then sleep on [`CompletionChannel::fd`].
//! After waking, [`CompletionChannel::take_events`] acknowledges the event and the CQ must be
//! armed again before the next sleep.

use std::os::fd::{BorrowedFd, RawFd};
use std::ptr::NonNull;
use std::sync::Arc;

use rdma_sys::*;

use crate::error::RdmaError;
use crate::verbs::{CompletionQueue, ProtectionDomain};

pub(crate) struct ChannelInner {
    pub(crate) raw: NonNull<ibv_comp_channel>,
}

// SAFETY: completion channels are thread-safe in libibverbs; the Arc keeps the channel alive
// for every CQ created on it.
unsafe impl Send for ChannelInner {}
// SAFETY: as above.
unsafe impl Sync for ChannelInner {}

impl Drop for ChannelInner {
    fn drop(&mut self) {
        // SAFETY: every CQ on the channel holds an Arc to it, so all are destroyed (and their
        // events acknowledged, see take_events) before this runs.
        unsafe { ibv_destroy_comp_channel(self.raw.as_ptr()) };
    }
}

/// A completion channel on one device.
#[derive(Clone)]
pub struct CompletionChannel(Arc<ChannelInner>);

impl std::fmt::Debug for CompletionChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompletionChannel")
            .field("fd", &self.raw_fd())
            .finish()
    }
}

impl CompletionChannel {
    /// A non-blocking completion channel on the PD's device.
    pub fn new(pd: &ProtectionDomain) -> Result<CompletionChannel, RdmaError> {
        // SAFETY: the PD (and so its device context) is alive.
        let raw = unsafe { ibv_create_comp_channel((*pd.0.pd.as_ptr()).context) };
        let raw = NonNull::new(raw).ok_or_else(|| RdmaError::last("ibv_create_comp_channel"))?;
        let channel = CompletionChannel(Arc::new(ChannelInner { raw }));
        crate::cm::set_nonblocking(channel.fd())?;
        Ok(channel)
    }

    fn raw_fd(&self) -> RawFd {
        // SAFETY: the channel is alive; fd is a plain field.
        unsafe { (*self.0.raw.as_ptr()).fd }
    }

    /// The descriptor that becomes readable when an armed CQ of this channel completes.
    pub fn fd(&self) -> BorrowedFd<'_> {
        // SAFETY: the descriptor stays open as long as the channel, which `self` borrows.
        unsafe { BorrowedFd::borrow_raw(self.raw_fd()) }
    }

    /// Takes and acknowledges every waiting event; returns how many there were. Each event
    /// disarms its CQ.
    pub fn take_events(&self) -> Result<usize, RdmaError> {
        let mut n = 0;
        loop {
            let mut cq: *mut ibv_cq = std::ptr::null_mut();
            let mut ctx: *mut libc::c_void = std::ptr::null_mut();
            // SAFETY: the channel is alive and non-blocking; the out pointers are valid.
            if unsafe { ibv_get_cq_event(self.0.raw.as_ptr(), &mut cq, &mut ctx) } != 0 {
                let err = std::io::Error::last_os_error();
                if err.kind() == std::io::ErrorKind::WouldBlock {
                    return Ok(n);
                }
                return Err(RdmaError::Os {
                    call: "ibv_get_cq_event",
                    source: err,
                });
            }
            // SAFETY: `cq` is the live CQ the event came from (a CQ is only destroyed after its
            // channel's events were taken by its owner); one event, acknowledged once.
            unsafe { ibv_ack_cq_events(cq, 1) };
            n += 1;
        }
    }
}

impl CompletionQueue {
    /// A CQ of `depth` entries that signals `channel` when armed; `batch` completions per poll.
    pub fn with_channel(
        pd: &ProtectionDomain,
        depth: i32,
        batch: usize,
        channel: &CompletionChannel,
    ) -> Result<CompletionQueue, RdmaError> {
        CompletionQueue::create(pd, depth, batch, Some(&channel.0))
    }

    /// Asks for one channel event at the next completion (`ibv_req_notify_cq`). Poll the CQ once
    /// more after arming: completions that arrived before the arm do not signal.
    pub fn arm(&self) -> Result<(), RdmaError> {
        if self.inner._channel.is_none() {
            return Err(RdmaError::Invalid(
                "the completion queue has no channel".into(),
            ));
        }
        // SAFETY: the CQ is alive and was created with a completion channel.
        let rc = unsafe { ibv_req_notify_cq(self.inner.cq.as_ptr(), 0) };
        if rc != 0 {
            return Err(RdmaError::code("ibv_req_notify_cq", rc));
        }
        Ok(())
    }
}
