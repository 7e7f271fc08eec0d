//! Accepts connections and hands each (one NVMe queue pair) to the least-loaded reactor.
//!
//! Listening sockets sit in their own epoll set: `accept` is called only when one is readable
//! (an `accept4` that finds nothing still allocates and frees a socket in the kernel, which a
//! busy-polling reactor would otherwise pay on every iteration).

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::Ordering;

use ferrite_reactor::{PollStatus, Task, TaskContext};
use rustix::buffer::spare_capacity;
use rustix::event::{epoll, Timespec};

use crate::transport::GroupHandle;

/// Connections accepted per listener per poll, so one busy port cannot starve the reactor.
const ACCEPT_BATCH: usize = 16;

pub(crate) struct ListenerTask {
    listeners: Vec<(SocketAddr, TcpListener)>,
    groups: Vec<GroupHandle>,
    epoll: OwnedFd,
    events: Vec<epoll::Event>,
}

impl std::fmt::Debug for ListenerTask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let addrs: Vec<_> = self.listeners.iter().map(|(a, _)| *a).collect();
        f.debug_struct("ListenerTask")
            .field("listeners", &addrs)
            .finish_non_exhaustive()
    }
}

impl ListenerTask {
    pub fn new(groups: Vec<GroupHandle>, cx: &mut TaskContext) -> ListenerTask {
        let epoll = epoll::create(epoll::CreateFlags::CLOEXEC)
            .expect("epoll_create1 cannot fail without fd exhaustion");
        if let Err(e) = cx.register_wakeup_fd(epoll.as_fd()) {
            log::warn!("listener: no interrupt-mode wakeups: {e}");
        }
        ListenerTask {
            listeners: Vec::new(),
            groups,
            epoll,
            events: Vec::with_capacity(8),
        }
    }

    pub fn add(&mut self, addr: SocketAddr, socket: TcpListener, _cx: &mut TaskContext) {
        let token = epoll::EventData::new_u64(self.listeners.len() as u64);
        if let Err(e) = epoll::add(&self.epoll, socket.as_fd(), token, epoll::EventFlags::IN) {
            log::error!("listener {addr}: cannot watch the socket: {e}");
            return;
        }
        self.listeners.push((addr, socket));
        self.reindex();
    }

    pub fn remove(&mut self, addr: SocketAddr, _cx: &mut TaskContext) {
        for (_, socket) in self.listeners.iter().filter(|(a, _)| *a == addr) {
            let _ = epoll::delete(&self.epoll, socket.as_fd());
        }
        self.listeners.retain(|(a, _)| *a != addr);
        self.reindex();
    }

    /// Tokens are indexes into `listeners`; renumber after a change.
    fn reindex(&mut self) {
        for (i, (_, socket)) in self.listeners.iter().enumerate() {
            let token = epoll::EventData::new_u64(i as u64);
            let _ = epoll::modify(&self.epoll, socket.as_fd(), token, epoll::EventFlags::IN);
        }
    }

    pub fn close_all(&mut self) {
        for (_, socket) in &self.listeners {
            let _ = epoll::delete(&self.epoll, socket.as_fd());
        }
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
        if self.listeners.is_empty() {
            return PollStatus::Idle;
        }
        self.events.clear();
        let zero = Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        if epoll::wait(&self.epoll, spare_capacity(&mut self.events), Some(&zero)).is_err() {
            return PollStatus::Idle;
        }
        let mut busy = false;
        for i in 0..self.events.len() {
            let index = self.events[i].data.u64() as usize;
            let Some((addr, socket)) = self.listeners.get(index) else {
                continue;
            };
            for _ in 0..ACCEPT_BATCH {
                match socket.accept() {
                    Ok((stream, peer)) => {
                        busy = true;
                        self.place(stream, peer);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => {
                        log::warn!("accept on {addr}: {e}");
                        break;
                    }
                }
            }
        }
        PollStatus::from_busy(busy)
    }

    fn on_shutdown(&mut self, _cx: &mut TaskContext) {
        self.close_all();
    }
}
