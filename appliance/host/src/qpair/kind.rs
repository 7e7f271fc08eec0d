//! [`QueuePair`]: one NVMe queue over either transport. The command logic is shared (see
//! `mod.rs`); this enum only picks the engine that frames and moves it.

use std::fmt;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsFd, BorrowedFd};
use std::str::FromStr;
use std::time::Duration;

use ferrite_nvme::Command;

use super::{
    Completed, Data, Negotiated, QpState, QueuePairConfig, RdmaQueuePair, SglMode, TcpQueuePair,
};
use crate::error::{HostError, Result};
use crate::types::Cid;

/// The NVMe-oF transport of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Trtype {
    /// NVMe/TCP.
    #[default]
    Tcp,
    /// NVMe/RDMA (RoCE, iWARP, InfiniBand through the RDMA connection manager).
    Rdma,
}

impl FromStr for Trtype {
    type Err = HostError;

    fn from_str(s: &str) -> Result<Trtype> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" => Ok(Trtype::Tcp),
            "rdma" => Ok(Trtype::Rdma),
            other => Err(HostError::InvalidArgument(format!(
                "transport type {other:?} is not supported (tcp or rdma)"
            ))),
        }
    }
}

impl fmt::Display for Trtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Trtype::Tcp => "tcp",
            Trtype::Rdma => "rdma",
        })
    }
}

/// One NVMe queue pair over NVMe/TCP or NVMe/RDMA.
// Queue pairs live in a few long-lived vectors; TCP, the common case, stays inline.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum QueuePair {
    Tcp(TcpQueuePair),
    Rdma(Box<RdmaQueuePair>),
}

/// Forwards a call to whichever engine the queue pair is.
macro_rules! each {
    ($self:expr, $qp:ident => $e:expr) => {
        match $self {
            QueuePair::Tcp($qp) => $e,
            QueuePair::Rdma($qp) => $e,
        }
    };
}

impl QueuePair {
    /// Takes a connected TCP stream and queues the ICReq (see [`TcpQueuePair::start`]).
    pub fn start(stream: TcpStream, cfg: QueuePairConfig) -> Result<QueuePair> {
        TcpQueuePair::start(stream, cfg).map(QueuePair::Tcp)
    }

    /// Connects over NVMe/TCP and drives the handshake until the queue is ready.
    pub fn connect(addr: SocketAddr, cfg: QueuePairConfig, timeout: Duration) -> Result<QueuePair> {
        QueuePair::connect_over(Trtype::Tcp, addr, cfg, timeout)
    }

    /// Connects over `trtype` and drives the handshake until the queue is ready.
    pub fn connect_over(
        trtype: Trtype,
        addr: SocketAddr,
        cfg: QueuePairConfig,
        timeout: Duration,
    ) -> Result<QueuePair> {
        Ok(match trtype {
            Trtype::Tcp => QueuePair::Tcp(TcpQueuePair::connect(addr, cfg, timeout)?),
            Trtype::Rdma => QueuePair::Rdma(Box::new(RdmaQueuePair::connect(addr, cfg, timeout)?)),
        })
    }

    /// The transport.
    pub fn trtype(&self) -> Trtype {
        match self {
            QueuePair::Tcp(_) => Trtype::Tcp,
            QueuePair::Rdma(_) => Trtype::Rdma,
        }
    }

    pub fn state(&self) -> QpState {
        each!(self, q => q.state())
    }

    pub fn is_ready(&self) -> bool {
        self.state() == QpState::Ready
    }

    pub fn negotiated(&self) -> Negotiated {
        each!(self, q => q.negotiated())
    }

    pub fn config(&self) -> &QueuePairConfig {
        each!(self, q => q.config())
    }

    pub fn qid(&self) -> u16 {
        self.config().qid
    }

    pub fn depth(&self) -> u16 {
        each!(self, q => q.depth())
    }

    pub fn outstanding(&self) -> usize {
        each!(self, q => q.outstanding())
    }

    pub fn set_in_capsule_max(&mut self, bytes: u32) {
        each!(self, q => q.set_in_capsule_max(bytes))
    }

    /// The TCP socket, for a TCP queue pair.
    pub fn stream(&self) -> Option<&TcpStream> {
        match self {
            QueuePair::Tcp(q) => Some(q.stream()),
            QueuePair::Rdma(_) => None,
        }
    }

    /// What an event loop waits on: the socket, or the RDMA completion channel.
    pub fn fd(&self) -> BorrowedFd<'_> {
        match self {
            QueuePair::Tcp(q) => q.stream().as_fd(),
            QueuePair::Rdma(q) => q.fd(),
        }
    }

    /// Bytes queued but not yet written (always 0 on RDMA: capsules are posted at submission).
    pub fn pending_tx(&self) -> usize {
        match self {
            QueuePair::Tcp(q) => q.pending_tx(),
            QueuePair::Rdma(_) => 0,
        }
    }

    /// See [`TcpQueuePair::data`].
    pub fn data(&self, cid: Cid) -> &[u8] {
        each!(self, q => q.data(cid))
    }

    pub fn submit(&mut self, cmd: &Command, data: Data<'_>) -> Result<Cid> {
        self.submit_with(cmd, data, SglMode::Auto)
    }

    /// Submits `cmd` with explicit control over the data pointer ([`SglMode::Transport`] is a
    /// Keyed SGL Data Block on RDMA).
    pub fn submit_with(&mut self, cmd: &Command, data: Data<'_>, mode: SglMode) -> Result<Cid> {
        each!(self, q => q.submit_with(cmd, data, mode))
    }

    pub fn poll(&mut self, out: &mut Vec<Completed>) -> Result<usize> {
        each!(self, q => q.poll(out))
    }

    pub fn flush(&mut self) -> Result<()> {
        each!(self, q => q.flush())
    }

    pub fn wait(&self, timeout: Duration) -> Result<bool> {
        each!(self, q => q.wait(timeout))
    }

    pub fn close(&mut self) {
        each!(self, q => q.close())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trtype_names_parse_and_print() {
        for t in [Trtype::Tcp, Trtype::Rdma] {
            assert_eq!(t.to_string().parse::<Trtype>().expect("round trip"), t);
        }
        assert_eq!("RDMA".parse::<Trtype>().expect("any case"), Trtype::Rdma);
        let e = "fc"
            .parse::<Trtype>()
            .expect_err("not a transport we speak");
        assert!(e.to_string().contains("\"fc\""), "{e}");
    }
}
