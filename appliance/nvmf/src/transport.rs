//! The transport seam (SPDK's `spdk_nvmf_transport_ops`): what every NVMe-oF transport binding
//! offers the daemon, and the one path every transport's received commands take.
//!
//! A transport crate (`transport-tcp`, `transport-rdma`) implements [`Transport`]; the daemon
//! keeps the explicit list of them (`ferrited/src/transports.rs`) and starts each on the
//! runtime the first time a listener of its type is asked for. Inside, a transport runs one task
//! per reactor that owns its connections and one [`PollGroup`]; per queue pair it:
//!
//! 1. registers the queue pair with [`PollGroup::add_qpair`] when a host connects (accept),
//! 2. turns each received capsule into a [`Request`] after [`plan_data`] decided how the data
//!    moves under its [`TransportLimits`] (receive commands; [`PollGroup::reject`] answers a
//!    capsule it cannot carry),
//! 3. moves the data the plan asks for (R2T/H2CData and C2HData on TCP, RDMA READ and WRITE on
//!    RDMA) and hands the request to [`PollGroup::execute`],
//! 4. sends each [`Response`] that `execute` or [`PollGroup::poll`] produces, routed by
//!    [`dispatch_events`] to its [`QueuePair`] (send completions),
//! 5. calls [`PollGroup::remove_qpair`] when the connection goes.
//!
//! Transports never pick an NVMe status; that happens in this crate.
//!
//! [`plan_data`]: crate::plan_data
//! [`TransportLimits`]: crate::TransportLimits
//! [`Request`]: crate::Request

use std::net::SocketAddr;

use std::sync::Arc;

use ferrite_reactor::{ReactorError, SendError, Spawner, TaskContext};
use thiserror::Error;

use crate::error::NvmfError;
use crate::poll_group::{ConnId, GroupEvent, PollGroup, PollGroupStats};
use crate::request::Response;
use crate::subsystem::Trtype;
use crate::target::Target;

/// Why a transport could not do what the daemon asked.
#[derive(Debug, Error)]
pub enum TransportError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{0}")]
    Config(#[from] NvmfError),
    #[error("cannot start the transport's tasks: {0}")]
    Reactor(#[from] ReactorError),
    #[error("a reactor did not {what}: {source}")]
    Call {
        what: &'static str,
        #[source]
        source: SendError,
    },
    /// The transport cannot run on this machine (no RDMA device, library missing, ...).
    #[error("{trtype} transport unavailable: {why}")]
    Unavailable { trtype: &'static str, why: String },
}

/// One NVMe-oF transport binding, started on the daemon's reactors.
///
/// Listeners are transport addresses published as ports in the discovery log; each connection
/// a host opens on one is a queue pair placed on the least-loaded reactor.
pub trait Transport: Send + Sync + std::fmt::Debug {
    /// The TRTYPE this transport serves.
    fn trtype(&self) -> Trtype;

    /// Binds `addr`, publishes it in the target's listener set (discovery log) and starts
    /// accepting queue pairs on it. Returns the bound address (port 0 picks one).
    fn listen(&self, addr: SocketAddr) -> Result<SocketAddr, TransportError>;

    /// Stops accepting on `addr`; established queue pairs stay.
    fn stop_listening(&self, addr: SocketAddr) -> Result<(), TransportError>;

    /// Open connections (queue pairs) per reactor, in reactor order.
    fn connections(&self) -> Vec<usize>;

    /// Counters of the transport's NVMe poll group on every reactor, in reactor order.
    fn poll_group_stats(&self) -> Result<Vec<PollGroupStats>, TransportError>;

    /// Stops accepting and closes every connection after flushing what is queued.
    fn shutdown(&self);
}

/// How the daemon starts a transport: its tasks on every reactor of the runtime whose spawner it
/// gets, serving `target`.
/// Each transport crate exports one; the daemon's explicit list pairs it with its [`Trtype`].
pub type StartTransport = fn(Arc<Target>, &Spawner) -> Result<Arc<dyn Transport>, TransportError>;

/// The transport side of one queue pair, as the shared completion path sees it.
pub trait QueuePair {
    /// Queues `resp` for the host (a completion capsule, with the read data before it).
    fn queue_response(&mut self, resp: Response, cx: &mut TaskContext);
}

/// What [`dispatch_events`] asks of the transport's connection table.
pub trait QueuePairs {
    type Qpair: QueuePair;

    /// The live queue pair `conn`, if it is still open.
    fn qpair(&mut self, conn: ConnId) -> Option<&mut Self::Qpair>;

    /// Marks `conn` as having output to send.
    fn mark_dirty(&mut self, conn: ConnId);

    /// Closes `conn` because the NVMe layer asked (keep-alive timeout, disconnect, access
    /// revoked, controller failed).
    fn close(&mut self, conn: ConnId, cx: &mut TaskContext);
}

/// The usual connection table of a transport group seen as [`QueuePairs`]: connections indexed by
/// [`ConnId`], the list of those with output, and the closes asked for during a dispatch (done by
/// the caller once the poll group is free again).
#[derive(Debug)]
pub struct Routing<'a, C> {
    pub conns: &'a mut Vec<Option<C>>,
    pub dirty: &'a mut Vec<u32>,
    pub closing: &'a mut Vec<u32>,
}

impl<C: QueuePair> QueuePairs for Routing<'_, C> {
    type Qpair = C;

    fn qpair(&mut self, conn: ConnId) -> Option<&mut C> {
        self.conns.get_mut(conn.0 as usize).and_then(Option::as_mut)
    }

    fn mark_dirty(&mut self, conn: ConnId) {
        if !self.dirty.contains(&conn.0) {
            self.dirty.push(conn.0);
        }
    }

    fn close(&mut self, conn: ConnId, _cx: &mut TaskContext) {
        if !self.closing.contains(&conn.0) {
            self.closing.push(conn.0);
        }
    }
}

/// Moves the closed connections whose NVMe state has drained from `zombies` to `free_ids`.
pub fn reap_released(nvmf: &PollGroup, zombies: &mut Vec<u32>, free_ids: &mut Vec<u32>) {
    let mut i = 0;
    while i < zombies.len() {
        if nvmf.is_released(ConnId(zombies[i])) {
            free_ids.push(zombies.swap_remove(i));
        } else {
            i += 1;
        }
    }
}

/// Polls `nvmf` and routes what it produced: responses to their queue pairs (or their buffers
/// back to the pool when the queue pair is gone), close requests to the transport. `scratch`
/// is the caller's reused event list. Returns whether anything happened.
pub fn dispatch_events<Q: QueuePairs>(
    nvmf: &mut PollGroup,
    conns: &mut Q,
    scratch: &mut Vec<GroupEvent>,
    cx: &mut TaskContext,
) -> bool {
    let busy = nvmf.poll(cx, &mut |e| scratch.push(e));
    let any = busy || !scratch.is_empty();
    for event in scratch.drain(..) {
        match event {
            GroupEvent::Respond(conn, resp) => match conns.qpair(conn) {
                Some(q) => {
                    q.queue_response(resp, cx);
                    conns.mark_dirty(conn);
                }
                None => {
                    if let Some(buf) = resp.buf {
                        cx.put_buffer(buf);
                    }
                }
            },
            GroupEvent::Close(conn) => {
                if conns.qpair(conn).is_some() {
                    conns.close(conn, cx);
                }
            }
        }
    }
    any
}

impl PollGroupStats {
    /// Adds `other` (another transport's group on the same reactor) to these counters.
    pub fn merge(&mut self, other: &PollGroupStats) {
        self.qpairs += other.qpairs;
        self.commands += other.commands;
        self.errors += other.errors;
        self.backend_queue_full += other.backend_queue_full;
        self.abandoned_aers += other.abandoned_aers;
        self.channels += other.channels;
    }
}
