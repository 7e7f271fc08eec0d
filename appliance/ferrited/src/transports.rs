//! The explicit list of NVMe-oF transports the daemon can serve, and the ones running.
//!
//! Adding a transport is one directory (a crate implementing `ferrite_nvmf::Transport`) and one
//! line in [`TRANSPORTS`]. A transport starts the first time a listener of its type is asked for,
//! so a machine without RDMA devices runs NVMe/TCP as before and an RDMA listener fails with a
//! message that names the missing piece.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use ferrite_nvmf::{PollGroupStats, StartTransport, Target, Transport, TransportError, Trtype};
use ferrite_reactor::Spawner;

/// Every transport the daemon knows, by the TRTYPE it serves.
const TRANSPORTS: &[(Trtype, StartTransport)] = &[
    (Trtype::Tcp, ferrite_transport_tcp::start),
    (Trtype::Rdma, ferrite_transport_rdma::start),
];

/// The transports started so far, keyed by type.
#[derive(Debug)]
pub struct Transports {
    target: Arc<Target>,
    spawner: Spawner,
    running: Mutex<BTreeMap<Trtype, Arc<dyn Transport>>>,
}

impl Transports {
    pub fn new(target: Arc<Target>, spawner: Spawner) -> Transports {
        Transports {
            target,
            spawner,
            running: Mutex::new(BTreeMap::new()),
        }
    }

    fn running(&self) -> MutexGuard<'_, BTreeMap<Trtype, Arc<dyn Transport>>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The transport for `trtype`, started now if it is not running yet.
    pub fn get(&self, trtype: Trtype) -> Result<Arc<dyn Transport>, TransportError> {
        let mut running = self.running();
        if let Some(t) = running.get(&trtype) {
            return Ok(Arc::clone(t));
        }
        let start = TRANSPORTS
            .iter()
            .find(|(t, _)| *t == trtype)
            .map(|(_, start)| *start)
            .ok_or(TransportError::Unavailable {
                trtype: trtype.as_str(),
                why: "not built into this daemon".into(),
            })?;
        let transport = start(Arc::clone(&self.target), &self.spawner)?;
        log::info!("{} transport started", trtype.as_str());
        running.insert(trtype, Arc::clone(&transport));
        Ok(transport)
    }

    pub fn listen(&self, trtype: Trtype, addr: SocketAddr) -> Result<SocketAddr, TransportError> {
        self.get(trtype)?.listen(addr)
    }

    pub fn stop_listening(&self, trtype: Trtype, addr: SocketAddr) -> Result<(), TransportError> {
        self.get(trtype)?.stop_listening(addr)
    }

    /// Open queue pairs per reactor, summed over the running transports.
    pub fn connections(&self) -> Vec<usize> {
        let mut total = vec![0; self.spawner.reactor_count()];
        for t in self.running().values() {
            for (sum, n) in total.iter_mut().zip(t.connections()) {
                *sum += n;
            }
        }
        total
    }

    /// Poll group counters per reactor, summed over the running transports.
    pub fn poll_group_stats(&self) -> Result<Vec<PollGroupStats>, TransportError> {
        let mut total = vec![PollGroupStats::default(); self.spawner.reactor_count()];
        let running: Vec<_> = self.running().values().cloned().collect();
        for t in running {
            for (sum, s) in total.iter_mut().zip(t.poll_group_stats()?) {
                sum.merge(&s);
            }
        }
        Ok(total)
    }

    /// Shuts every running transport down.
    pub fn shutdown(&self) {
        let running: Vec<_> = self.running().values().cloned().collect();
        for t in running {
            t.shutdown();
        }
    }
}
