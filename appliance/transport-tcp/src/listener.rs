//! Accepts connections and hands each (one NVMe queue pair) to the least-loaded reactor.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::sync::atomic::Ordering;

use ferrite_reactor::{PollStatus, Task, TaskContext};

use crate::transport::GroupHandle;

/// Connections accepted per listener per poll, so one busy port cannot starve the reactor.
const ACCEPT_BATCH: usize = 16;

#[derive(Debug)]
pub(crate) struct ListenerTask {
    listeners: Vec<(SocketAddr, TcpListener)>,
    groups: Vec<GroupHandle>,
}

impl ListenerTask {
    pub fn new(groups: Vec<GroupHandle>) -> ListenerTask {
        ListenerTask {
            listeners: Vec::new(),
            groups,
        }
    }

    pub fn add(&mut self, addr: SocketAddr, socket: TcpListener, cx: &mut TaskContext) {
        if let Err(e) = cx.register_wakeup_fd(socket.as_fd()) {
            log::warn!("listener {addr}: no interrupt-mode wakeups: {e}");
        }
        self.listeners.push((addr, socket));
    }

    pub fn remove(&mut self, addr: SocketAddr, cx: &mut TaskContext) {
        for (_, socket) in self.listeners.iter().filter(|(a, _)| *a == addr) {
            let _ = cx.unregister_wakeup_fd(socket.as_fd());
        }
        self.listeners.retain(|(a, _)| *a != addr);
    }

    pub fn close_all(&mut self) {
        self.listeners.clear();
    }

    fn place(&self, stream: TcpStream, peer: SocketAddr) {
        let Some(group) = self
            .groups
            .iter()
            .min_by_key(|g| g.connections.load(Ordering::Relaxed))
        else {
            return;
        };
        group.connections.fetch_add(1, Ordering::Relaxed);
        let sent = group.handle.send(move |g, cx| g.adopt(stream, peer, cx));
        if let Err(e) = sent {
            group.connections.fetch_sub(1, Ordering::Relaxed);
            log::warn!("dropping connection from {peer}: reactor inbox refused it ({e:?})");
        }
    }
}

impl Task for ListenerTask {
    fn poll(&mut self, _cx: &mut TaskContext) -> PollStatus {
        let mut accepted = Vec::new();
        for (addr, socket) in &self.listeners {
            for _ in 0..ACCEPT_BATCH {
                match socket.accept() {
                    Ok((stream, peer)) => accepted.push((stream, peer)),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => {
                        log::warn!("accept on {addr}: {e}");
                        break;
                    }
                }
            }
        }
        let busy = !accepted.is_empty();
        for (stream, peer) in accepted {
            self.place(stream, peer);
        }
        PollStatus::from_busy(busy)
    }

    fn on_shutdown(&mut self, _cx: &mut TaskContext) {
        self.listeners.clear();
    }
}
