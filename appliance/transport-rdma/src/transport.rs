//! The transport object the daemon holds: one RDMA group per reactor, the connection-manager
//! task, and listeners added or removed at run time.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ferrite_nvmf::{Listener, PollGroupStats, Target, Transport, TransportError, Trtype};
use ferrite_rdma::{CmId, EventChannel};
use ferrite_reactor::{Spawner, TaskHandle};

use crate::acceptor::Acceptor;
use crate::group::RdmaGroup;

/// Connect requests the CM queues per listener before we take them.
const BACKLOG: i32 = 128;
const CONTROL_TIMEOUT: Duration = Duration::from_secs(5);

/// Handle of one group, with its connection count for placement.
#[derive(Debug, Clone)]
pub(crate) struct GroupHandle {
    pub handle: TaskHandle<RdmaGroup>,
    pub connections: Arc<AtomicUsize>,
}

#[derive(Debug)]
pub struct RdmaTransport {
    target: Arc<Target>,
    channel: EventChannel,
    groups: Vec<GroupHandle>,
    acceptor: TaskHandle<Acceptor>,
}

fn unavailable(why: String) -> TransportError {
    TransportError::Unavailable {
        trtype: "rdma",
        why,
    }
}

impl RdmaTransport {
    /// Opens the connection manager (fails when the machine has no RDMA stack), starts a group
    /// on every reactor and the connection-manager task on reactor 0.
    pub fn start(target: Arc<Target>, runtime: &Spawner) -> Result<RdmaTransport, TransportError> {
        let channel = EventChannel::new().map_err(|e| {
            unavailable(format!(
                "{e} (is rdma_cm loaded and an RDMA device, such as soft-RoCE rxe, configured?)"
            ))
        })?;
        let mut groups = Vec::new();
        for index in 0..runtime.reactor_count() {
            let connections = Arc::new(AtomicUsize::new(0));
            let (t, c) = (Arc::clone(&target), Arc::clone(&connections));
            let handle = runtime.spawn(index, "nvmf-rdma", move |cx| RdmaGroup::new(t, c, cx))?;
            groups.push(GroupHandle {
                handle,
                connections,
            });
        }
        let (for_acceptor, ch) = (groups.clone(), channel.clone());
        let acceptor = runtime.spawn(0, "nvmf-rdma-cm", move |cx| {
            Acceptor::new(ch, for_acceptor, cx)
        })?;
        Ok(RdmaTransport {
            target,
            channel,
            groups,
            acceptor,
        })
    }
}

impl Transport for RdmaTransport {
    fn trtype(&self) -> Trtype {
        Trtype::Rdma
    }

    /// Binds an RDMA CM id to `addr` (an address of an RDMA device's network interface) and
    /// publishes it as an RDMA port in the discovery log.
    fn listen(&self, addr: SocketAddr) -> Result<SocketAddr, TransportError> {
        let id = CmId::listen(&self.channel, addr, BACKLOG).map_err(|e| TransportError::Bind {
            addr,
            source: std::io::Error::other(format!(
                "{e} (the address must belong to an interface with an RDMA device)"
            )),
        })?;
        let bound = match id.local_addr() {
            Some(a) if a.port() != 0 => a,
            _ => addr,
        };
        let listener = Listener {
            trtype: Trtype::Rdma,
            addr: bound,
        };
        self.target.add_listener(listener.clone())?;
        let sent = self
            .acceptor
            .call(move |task, _cx| task.add(bound, id), CONTROL_TIMEOUT);
        if let Err(source) = sent {
            let _ = self.target.remove_listener(&listener);
            return Err(TransportError::Call {
                what: "start listening",
                source,
            });
        }
        log::info!("NVMe/RDMA listening on {bound}");
        Ok(bound)
    }

    fn stop_listening(&self, addr: SocketAddr) -> Result<(), TransportError> {
        self.target.remove_listener(&Listener {
            trtype: Trtype::Rdma,
            addr,
        })?;
        self.acceptor
            .call(move |task, _cx| task.remove(addr), CONTROL_TIMEOUT)
            .map_err(|source| TransportError::Call {
                what: "stop listening",
                source,
            })
    }

    fn connections(&self) -> Vec<usize> {
        self.groups
            .iter()
            .map(|g| g.connections.load(Ordering::Relaxed))
            .collect()
    }

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

    fn shutdown(&self) {
        let _ = self
            .acceptor
            .call(|task, _cx| task.close_all(), CONTROL_TIMEOUT);
        for g in &self.groups {
            let _ = g
                .handle
                .call(|group, cx| group.close_all(cx), CONTROL_TIMEOUT);
        }
    }
}
