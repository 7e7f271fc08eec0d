//! The transport object the daemon holds: starts one socket group per reactor and the listener
//! task, and adds or removes listeners at run time.

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use ferrite_nvmf::{Listener, PollGroupStats, Target, Transport, TransportError, Trtype};
use ferrite_reactor::{Runtime, Spawner, TaskHandle};

use crate::group::SocketGroup;
use crate::listener::ListenerTask;

/// The errors of the TCP transport are the transport seam's.
pub type TcpTransportError = TransportError;

/// Transport-level limits (the NVMe-level ones live in `ferrite-nvmf`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpOptions {
    /// Largest H2CData PDU payload we accept (MAXH2CDATA in ICResp).
    pub max_h2c_data: u32,
    /// Socket receive staging buffer per connection.
    pub recv_buffer: usize,
}

impl Default for TcpOptions {
    fn default() -> Self {
        TcpOptions {
            max_h2c_data: ferrite_nvmf::MAX_TRANSFER_BYTES,
            recv_buffer: 64 * 1024,
        }
    }
}

/// Handle of one group, with its connection count for placement.
#[derive(Debug, Clone)]
pub(crate) struct GroupHandle {
    pub handle: TaskHandle<SocketGroup>,
    pub connections: Arc<AtomicUsize>,
}

#[derive(Debug)]
pub struct TcpTransport {
    target: Arc<Target>,
    groups: Vec<GroupHandle>,
    listener: TaskHandle<ListenerTask>,
}

const CONTROL_TIMEOUT: Duration = Duration::from_secs(5);

impl TcpTransport {
    /// Starts a socket group on every reactor and the listener task on reactor 0.
    pub fn start(
        target: Arc<Target>,
        runtime: &Runtime,
        opts: TcpOptions,
    ) -> Result<TcpTransport, TcpTransportError> {
        TcpTransport::start_on(target, &runtime.spawner(), opts)
    }

    /// [`TcpTransport::start`] from anywhere that holds the runtime's spawner.
    pub fn start_on(
        target: Arc<Target>,
        runtime: &Spawner,
        opts: TcpOptions,
    ) -> Result<TcpTransport, TcpTransportError> {
        let mut groups = Vec::new();
        for index in 0..runtime.reactor_count() {
            let connections = Arc::new(AtomicUsize::new(0));
            let (t, c) = (Arc::clone(&target), Arc::clone(&connections));
            let handle = runtime.spawn(index, "nvmf-tcp", move |cx| {
                SocketGroup::new(t, c, opts, cx)
            })?;
            groups.push(GroupHandle {
                handle,
                connections,
            });
        }
        let for_listener = groups.clone();
        let listener = runtime.spawn(0, "nvmf-tcp-accept", move |cx| {
            ListenerTask::new(for_listener, cx)
        })?;
        Ok(TcpTransport {
            target,
            groups,
            listener,
        })
    }
}

impl Transport for TcpTransport {
    fn trtype(&self) -> Trtype {
        Trtype::Tcp
    }

    /// Binds `addr` (errors surface here, on the caller's thread), publishes it as a port in the
    /// discovery log and starts accepting on it.
    fn listen(&self, addr: SocketAddr) -> Result<SocketAddr, TransportError> {
        let socket =
            TcpListener::bind(addr).map_err(|source| TransportError::Bind { addr, source })?;
        socket
            .set_nonblocking(true)
            .map_err(|source| TransportError::Bind { addr, source })?;
        let bound = socket
            .local_addr()
            .map_err(|source| TransportError::Bind { addr, source })?;
        self.target.add_listener(Listener {
            trtype: Trtype::Tcp,
            addr: bound,
        })?;
        let sent = self
            .listener
            .call(move |task, cx| task.add(bound, socket, cx), CONTROL_TIMEOUT);
        if let Err(e) = sent {
            let _ = self.target.remove_listener(&Listener {
                trtype: Trtype::Tcp,
                addr: bound,
            });
            return Err(TransportError::Call {
                what: "start listening",
                source: e,
            });
        }
        log::info!("NVMe/TCP listening on {bound}");
        Ok(bound)
    }

    /// Stops accepting on `addr`; established connections stay.
    fn stop_listening(&self, addr: SocketAddr) -> Result<(), TransportError> {
        self.target.remove_listener(&Listener {
            trtype: Trtype::Tcp,
            addr,
        })?;
        self.listener
            .call(move |task, cx| task.remove(addr, cx), CONTROL_TIMEOUT)
            .map_err(|source| TransportError::Call {
                what: "stop listening",
                source,
            })?;
        Ok(())
    }

    /// Connections currently open, per reactor.
    fn connections(&self) -> Vec<usize> {
        self.groups
            .iter()
            .map(|g| g.connections.load(std::sync::atomic::Ordering::Relaxed))
            .collect()
    }

    /// Counters of every reactor's NVMe poll group, in reactor order.
    fn poll_group_stats(&self) -> Result<Vec<PollGroupStats>, TransportError> {
        self.groups
            .iter()
            .map(|g| {
                g.handle
                    .call(|group, _cx| group.nvmf_stats(), CONTROL_TIMEOUT)
                    .map_err(|source| TransportError::Call {
                        what: "report poll group statistics",
                        source,
                    })
            })
            .collect()
    }

    /// Stops accepting and closes every connection (after flushing what is queued).
    fn shutdown(&self) {
        let _ = self
            .listener
            .call(|task, _cx| task.close_all(), CONTROL_TIMEOUT);
        for g in &self.groups {
            let _ = g
                .handle
                .call(|group, cx| group.close_all(cx), CONTROL_TIMEOUT);
        }
    }
}
