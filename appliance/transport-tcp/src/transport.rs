//! The transport object the daemon holds: starts one socket group per reactor and the listener
//! task, and adds or removes listeners at run time.

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use ferrite_nvmf::{Listener, NvmfError, PollGroupStats, Target, Trtype};
use ferrite_reactor::{ReactorError, Runtime, SendError, TaskHandle};
use thiserror::Error;

use crate::group::SocketGroup;
use crate::listener::ListenerTask;

#[derive(Debug, Error)]
pub enum TcpTransportError {
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
}

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

    /// Binds `addr` (errors surface here, on the caller's thread), publishes it as a port in the
    /// discovery log and starts accepting on it.
    pub fn listen(&self, addr: SocketAddr) -> Result<SocketAddr, TcpTransportError> {
        let socket =
            TcpListener::bind(addr).map_err(|source| TcpTransportError::Bind { addr, source })?;
        socket
            .set_nonblocking(true)
            .map_err(|source| TcpTransportError::Bind { addr, source })?;
        let bound = socket
            .local_addr()
            .map_err(|source| TcpTransportError::Bind { addr, source })?;
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
            return Err(TcpTransportError::Call {
                what: "start listening",
                source: e,
            });
        }
        log::info!("NVMe/TCP listening on {bound}");
        Ok(bound)
    }

    /// Stops accepting on `addr`; established connections stay.
    pub fn stop_listening(&self, addr: SocketAddr) -> Result<(), TcpTransportError> {
        self.target.remove_listener(&Listener {
            trtype: Trtype::Tcp,
            addr,
        })?;
        self.listener
            .call(move |task, cx| task.remove(addr, cx), CONTROL_TIMEOUT)
            .map_err(|source| TcpTransportError::Call {
                what: "stop listening",
                source,
            })?;
        Ok(())
    }

    /// Connections currently open, per reactor.
    pub fn connections(&self) -> Vec<usize> {
        self.groups
            .iter()
            .map(|g| g.connections.load(std::sync::atomic::Ordering::Relaxed))
            .collect()
    }

    /// Counters of every reactor's NVMe poll group, in reactor order.
    pub fn poll_group_stats(&self) -> Result<Vec<PollGroupStats>, TcpTransportError> {
        self.groups
            .iter()
            .map(|g| {
                g.handle
                    .call(|group, _cx| group.nvmf_stats(), CONTROL_TIMEOUT)
                    .map_err(|source| TcpTransportError::Call {
                        what: "report poll group statistics",
                        source,
                    })
            })
            .collect()
    }

    /// Stops accepting and closes every connection (after flushing what is queued).
    pub fn shutdown(&self) {
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
