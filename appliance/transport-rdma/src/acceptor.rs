//! The connection-manager task: listening ids, connect requests checked and placed on the
//! least-loaded reactor's group, and disconnects routed to the group that owns the connection.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use ferrite_nvme::rdma::{cm_reject, encode_reject, CmRequest};
use ferrite_nvmf::{MAX_ADMIN_QUEUE_ENTRIES, MAX_IO_QUEUES, MAX_QUEUE_ENTRIES};
use ferrite_rdma::{CmEventKind, CmId, EventChannel};
use ferrite_reactor::{PollStatus, Task, TaskContext};

use crate::transport::GroupHandle;

/// Events taken per poll, so a storm of connects cannot starve the reactor.
const EVENT_BATCH: usize = 32;

pub(crate) struct Acceptor {
    channel: EventChannel,
    listeners: Vec<(SocketAddr, CmId)>,
    groups: Vec<GroupHandle>,
    /// Connection id key -> index of the group that owns it.
    placed: HashMap<usize, usize>,
}

impl std::fmt::Debug for Acceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let addrs: Vec<_> = self.listeners.iter().map(|(a, _)| *a).collect();
        f.debug_struct("Acceptor")
            .field("listeners", &addrs)
            .finish_non_exhaustive()
    }
}

/// Checks a connect request's queue sizes; the error is the reject status.
pub(crate) fn check_request(req: &CmRequest) -> Result<(), u16> {
    let entries = u32::from(req.hsqsize) + 1;
    let max = if req.qid == 0 {
        MAX_ADMIN_QUEUE_ENTRIES
    } else {
        MAX_QUEUE_ENTRIES
    };
    if req.qid > MAX_IO_QUEUES {
        return Err(cm_reject::INVALID_QID);
    }
    if entries < 2 || entries > u32::from(max) {
        return Err(cm_reject::INVALID_HSQSIZE);
    }
    if u32::from(req.hrqsize) < entries {
        return Err(cm_reject::INVALID_HRQSIZE);
    }
    Ok(())
}

impl Acceptor {
    pub fn new(channel: EventChannel, groups: Vec<GroupHandle>, cx: &mut TaskContext) -> Acceptor {
        if let Err(e) = cx.register_wakeup_fd(channel.fd()) {
            log::warn!("rdma cm: no interrupt-mode wakeups: {e}");
        }
        Acceptor {
            channel,
            listeners: Vec::new(),
            groups,
            placed: HashMap::new(),
        }
    }

    pub fn add(&mut self, addr: SocketAddr, id: CmId) {
        self.listeners.push((addr, id));
    }

    pub fn remove(&mut self, addr: SocketAddr) {
        self.listeners.retain(|(a, _)| *a != addr);
    }

    pub fn close_all(&mut self) {
        self.listeners.clear();
    }

    fn refuse(id: CmId, sts: u16, why: &str) {
        log::warn!(
            "NVMe/RDMA connect from {:?} refused: {why} (status {sts})",
            id.peer_addr()
        );
        if let Err(e) = id.reject(&encode_reject(sts)) {
            log::warn!("rdma_reject: {e}");
        }
    }

    fn connect_request(&mut self, id: CmId, private: &[u8]) {
        let req = match CmRequest::parse(private) {
            Ok(r) => r,
            Err(sts) => {
                return Acceptor::refuse(
                    id,
                    sts,
                    &format!("bad private data ({} bytes)", private.len()),
                )
            }
        };
        if let Err(sts) = check_request(&req) {
            return Acceptor::refuse(id, sts, &format!("queue sizes out of range: {req:?}"));
        }
        let Some((index, group)) = self
            .groups
            .iter()
            .enumerate()
            .min_by_key(|(_, g)| g.connections.load(Ordering::Relaxed))
        else {
            return Acceptor::refuse(id, cm_reject::NO_RESOURCES, "no reactor");
        };
        let key = id.key();
        group.connections.fetch_add(1, Ordering::Relaxed);
        let connections = group.connections.clone();
        if let Err(e) = group.handle.send(move |g, cx| g.adopt(id, req, cx)) {
            connections.fetch_sub(1, Ordering::Relaxed);
            log::warn!("NVMe/RDMA connect dropped: reactor inbox refused it ({e:?})");
            return;
        }
        self.placed.insert(key, index);
    }

    fn gone(&mut self, key: usize, why: &'static str) {
        if let Some(index) = self.placed.remove(&key) {
            let _ = self.groups[index]
                .handle
                .send(move |g, cx| g.disconnected(key, why, cx));
        }
    }
}

impl Task for Acceptor {
    fn poll(&mut self, _cx: &mut TaskContext) -> PollStatus {
        let mut busy = false;
        for _ in 0..EVENT_BATCH {
            let ev = match self.channel.next_event() {
                Ok(Some(ev)) => ev,
                Ok(None) => break,
                Err(e) => {
                    log::warn!("rdma cm: {e}");
                    break;
                }
            };
            busy = true;
            match ev.kind {
                CmEventKind::ConnectRequest => {
                    let private: Vec<u8> = ev.private_data().to_vec();
                    if let Some(id) = ev.request {
                        self.connect_request(id, &private);
                    }
                }
                CmEventKind::Disconnected => self.gone(ev.key, "host disconnected"),
                CmEventKind::Error => self.gone(ev.key, "connection error"),
                CmEventKind::Established => {
                    log::debug!("NVMe/RDMA connection established");
                }
                other => log::debug!("rdma cm event {other:?}"),
            }
        }
        PollStatus::from_busy(busy)
    }

    fn on_shutdown(&mut self, _cx: &mut TaskContext) {
        self.close_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(qid: u16, hsqsize: u16, hrqsize: u16) -> CmRequest {
        CmRequest {
            recfmt: 0,
            qid,
            hrqsize,
            hsqsize,
            cntlid: 0xFFFF,
        }
    }

    #[test]
    fn queue_sizes_are_checked_as_the_binding_says() {
        assert_eq!(check_request(&req(0, 31, 32)), Ok(()));
        assert_eq!(check_request(&req(1, 127, 128)), Ok(()));
        assert_eq!(
            check_request(&req(0, 127, 128)),
            Err(cm_reject::INVALID_HSQSIZE)
        );
        assert_eq!(
            check_request(&req(1, 128, 129)),
            Err(cm_reject::INVALID_HSQSIZE)
        );
        assert_eq!(
            check_request(&req(1, 0, 1)),
            Err(cm_reject::INVALID_HSQSIZE)
        );
        assert_eq!(
            check_request(&req(1, 127, 64)),
            Err(cm_reject::INVALID_HRQSIZE)
        );
        assert_eq!(
            check_request(&req(MAX_IO_QUEUES + 1, 31, 32)),
            Err(cm_reject::INVALID_QID)
        );
    }
}
