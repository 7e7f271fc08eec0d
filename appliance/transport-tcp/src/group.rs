//! The socket group of one reactor (SPDK's TCP poll group): the connections placed on this
//! reactor, an epoll set over their sockets, and the reactor's NVMe poll group.
//!
//! Each poll: sockets that are readable are read and their PDUs handled; the NVMe poll group
//! reaps backend completions into responses; connections with output are flushed with one
//! vectored write each.

use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use ferrite_nvmf::{
    dispatch_events, reap_released, ConnId, GroupEvent, PollGroup, PollGroupStats, QueuePair,
    Response, Routing, Target,
};
use ferrite_reactor::{PollStatus, Task, TaskContext};
use rustix::buffer::spare_capacity;
use rustix::event::epoll;

use crate::conn::{Conn, ConnError};
use crate::transport::TcpOptions;

/// Socket events taken per epoll_wait.
const MAX_EVENTS: usize = 256;
/// Connections with staged commands kept per poll before the lists grow (they then keep the size).
const STAGED_CAPACITY: usize = 64;

pub(crate) struct SocketGroup {
    nvmf: PollGroup,
    conns: Vec<Option<Conn>>,
    free_ids: Vec<u32>,
    /// Closed connections whose NVMe state is still draining backend I/O.
    zombies: Vec<u32>,
    epoll: OwnedFd,
    events: Vec<epoll::Event>,
    group_events: Vec<GroupEvent>,
    /// Connections with queued output or commands waiting for buffers.
    dirty: Vec<u32>,
    /// Connections that left complete commands in staging (their read budget ran out).
    staged: Vec<u32>,
    /// The list `staged` is swapped with while it is served, so neither is reallocated per poll.
    staged_serving: Vec<u32>,
    /// Connections the NVMe layer asked to close during the current dispatch.
    closing: Vec<u32>,
    connections: Arc<AtomicUsize>,
    opts: TcpOptions,
}

impl std::fmt::Debug for SocketGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SocketGroup")
            .field("connections", &self.connections)
            .finish_non_exhaustive()
    }
}

impl SocketGroup {
    pub fn new(
        target: Arc<Target>,
        connections: Arc<AtomicUsize>,
        opts: TcpOptions,
        cx: &mut TaskContext,
    ) -> SocketGroup {
        let epoll = epoll::create(epoll::CreateFlags::CLOEXEC)
            .expect("epoll_create1 cannot fail without fd exhaustion");
        if let Err(e) = cx.register_wakeup_fd(epoll.as_fd()) {
            log::warn!("socket group: no interrupt-mode wakeups: {e}");
        }
        SocketGroup {
            nvmf: PollGroup::new(target),
            conns: Vec::new(),
            free_ids: Vec::new(),
            zombies: Vec::new(),
            epoll,
            events: Vec::with_capacity(MAX_EVENTS),
            group_events: Vec::new(),
            dirty: Vec::new(),
            staged: Vec::with_capacity(STAGED_CAPACITY),
            staged_serving: Vec::with_capacity(STAGED_CAPACITY),
            closing: Vec::with_capacity(STAGED_CAPACITY),
            connections,
            opts,
        }
    }

    /// Counters of this reactor's NVMe poll group.
    pub fn nvmf_stats(&self) -> PollGroupStats {
        self.nvmf.stats()
    }

    /// Takes a freshly accepted connection.
    pub fn adopt(&mut self, stream: TcpStream, peer: SocketAddr, _cx: &mut TaskContext) {
        if let Err(e) = stream
            .set_nonblocking(true)
            .and_then(|_| stream.set_nodelay(true))
        {
            log::warn!("{peer}: cannot configure socket: {e}");
            self.connections.fetch_sub(1, Ordering::Relaxed);
            return;
        }
        let id = self.free_ids.pop().unwrap_or_else(|| {
            self.conns.push(None);
            (self.conns.len() - 1) as u32
        });
        let registered = epoll::add(
            &self.epoll,
            stream.as_fd(),
            epoll::EventData::new_u64(id as u64),
            epoll::EventFlags::IN,
        );
        if let Err(e) = registered {
            log::warn!("{peer}: cannot watch socket: {e}");
            self.free_ids.push(id);
            self.connections.fetch_sub(1, Ordering::Relaxed);
            return;
        }
        let local = match stream.local_addr() {
            Ok(local) => local,
            Err(e) => {
                log::warn!("{peer}: no local address: {e}");
                self.free_ids.push(id);
                self.connections.fetch_sub(1, Ordering::Relaxed);
                return;
            }
        };
        self.nvmf.add_qpair(ConnId(id), local);
        self.conns[id as usize] = Some(Conn::new(stream, peer, ConnId(id), self.opts));
        log::debug!("{peer}: connection {id} placed");
    }

    fn close(&mut self, id: u32, why: &str, cx: &mut TaskContext) {
        let Some(mut conn) = self.conns[id as usize].take() else {
            return;
        };
        log::info!("{}: connection closed: {why}", conn.peer);
        let _ = epoll::delete(&self.epoll, conn.stream.as_fd());
        let _ = conn.stream.shutdown(std::net::Shutdown::Both);
        conn.release_all(cx);
        self.nvmf.remove_qpair(ConnId(id), cx);
        self.zombies.push(id);
        self.connections.fetch_sub(1, Ordering::Relaxed);
    }

    /// Flushes what can be sent, then closes everything (target shutdown).
    pub fn close_all(&mut self, cx: &mut TaskContext) {
        for id in 0..self.conns.len() as u32 {
            if let Some(conn) = self.conns[id as usize].as_mut() {
                let _ = conn.flush(cx);
                self.close(id, "target shutting down", cx);
            }
        }
    }

    fn mark_dirty(&mut self, id: u32) {
        if !self.dirty.contains(&id) {
            self.dirty.push(id);
        }
    }

    fn handle_socket_events(&mut self, cx: &mut TaskContext) -> bool {
        self.events.clear();
        let zero = rustix::event::Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        if epoll::wait(&self.epoll, spare_capacity(&mut self.events), Some(&zero)).is_err() {
            return false;
        }
        let mut busy = false;
        std::mem::swap(&mut self.staged, &mut self.staged_serving);
        for i in 0..self.staged_serving.len() {
            let id = self.staged_serving[i];
            if self.conns.get(id as usize).is_some_and(Option::is_some) {
                busy = true;
                self.read_conn(id, cx);
            }
        }
        self.staged_serving.clear();
        for i in 0..self.events.len() {
            let ev = self.events[i];
            let id = ev.data.u64() as u32;
            let flags = ev.flags;
            if self.conns.get(id as usize).is_none_or(Option::is_none) {
                continue;
            }
            if flags.contains(epoll::EventFlags::OUT) {
                self.mark_dirty(id);
            }
            if flags
                .intersects(epoll::EventFlags::IN | epoll::EventFlags::HUP | epoll::EventFlags::ERR)
            {
                busy = true;
                self.read_conn(id, cx);
            }
        }
        busy
    }

    /// Handles what connection `id` has received (staged or on its socket).
    fn read_conn(&mut self, id: u32, cx: &mut TaskContext) {
        let conn = self.conns[id as usize].as_mut().expect("caller checked");
        match conn.on_readable(&mut self.nvmf, cx) {
            Ok(_) => {}
            Err(ConnError::Gone(why)) => {
                self.close(id, &why, cx);
                return;
            }
            Err(ConnError::Terminated(_)) => {}
        }
        if conn.has_staged_commands() && !self.staged.contains(&id) {
            self.staged.push(id);
        }
        self.mark_dirty(id);
    }

    fn handle_group_events(&mut self, cx: &mut TaskContext) -> bool {
        let mut routing = Routing {
            conns: &mut self.conns,
            dirty: &mut self.dirty,
            closing: &mut self.closing,
        };
        let mut any = dispatch_events(&mut self.nvmf, &mut routing, &mut self.group_events, cx);
        while let Some(id) = self.closing.pop() {
            if let Some(c) = self.conns.get_mut(id as usize).and_then(Option::as_mut) {
                let _ = c.flush(cx);
                self.close(
                    id,
                    "controller gone (keep-alive timeout, disconnect or access revoked)",
                    cx,
                );
                any = true;
            }
        }
        any
    }

    fn flush_dirty(&mut self, cx: &mut TaskContext) {
        let mut i = 0;
        while i < self.dirty.len() {
            let id = self.dirty[i];
            let Some(conn) = self.conns.get_mut(id as usize).and_then(Option::as_mut) else {
                self.dirty.swap_remove(i);
                continue;
            };
            if conn.has_waiters() {
                if let Err(ConnError::Gone(why) | ConnError::Terminated(why)) =
                    conn.retry_waiting(&mut self.nvmf, cx)
                {
                    if !conn.is_terminating() {
                        self.close(id, &why, cx);
                        self.dirty.swap_remove(i);
                        continue;
                    }
                }
            }
            match conn.flush(cx) {
                Ok(true) => {
                    if conn.is_terminating() {
                        self.close(id, "protocol error reported to the host", cx);
                        self.dirty.swap_remove(i);
                        continue;
                    }
                    if conn.want_write {
                        conn.want_write = false;
                        let _ = epoll::modify(
                            &self.epoll,
                            conn.stream.as_fd(),
                            epoll::EventData::new_u64(id as u64),
                            epoll::EventFlags::IN,
                        );
                    }
                    if conn.has_waiters() {
                        i += 1;
                    } else {
                        self.dirty.swap_remove(i);
                    }
                }
                Ok(false) if conn.is_terminating() => {
                    // A peer that reported nothing useful and does not read its TermReq gets no
                    // more of our time.
                    self.close(id, "protocol error; the host does not read", cx);
                    self.dirty.swap_remove(i);
                }
                Ok(false) => {
                    if !conn.want_write {
                        conn.want_write = true;
                        let _ = epoll::modify(
                            &self.epoll,
                            conn.stream.as_fd(),
                            epoll::EventData::new_u64(id as u64),
                            epoll::EventFlags::IN | epoll::EventFlags::OUT,
                        );
                    }
                    i += 1;
                }
                Err(ConnError::Gone(why)) | Err(ConnError::Terminated(why)) => {
                    self.close(id, &why, cx);
                    self.dirty.swap_remove(i);
                }
            }
        }
    }

    fn reap_zombies(&mut self) {
        reap_released(&self.nvmf, &mut self.zombies, &mut self.free_ids);
    }
}

impl Task for SocketGroup {
    fn poll(&mut self, cx: &mut TaskContext) -> PollStatus {
        let mut busy = self.handle_socket_events(cx);
        busy |= self.handle_group_events(cx);
        if !self.dirty.is_empty() {
            self.flush_dirty(cx);
        }
        if !self.zombies.is_empty() {
            self.reap_zombies();
        }
        if let Some(deadline) = self.nvmf.next_deadline() {
            cx.wake_at(deadline);
        }
        PollStatus::from_busy(busy)
    }

    fn on_shutdown(&mut self, cx: &mut TaskContext) {
        self.close_all(cx);
    }

    fn is_finished(&self) -> bool {
        self.zombies.is_empty()
            || self
                .zombies
                .iter()
                .all(|id| self.nvmf.is_released(ConnId(*id)))
    }
}

impl QueuePair for Conn {
    fn queue_response(&mut self, resp: Response, _cx: &mut TaskContext) {
        Conn::queue_response(self, resp);
    }
}
