//! The non-blocking queue pair engines: NVMe/TCP ([`TcpQueuePair`], here) and
//! NVMe/RDMA ([`RdmaQueuePair`], `rdma.rs`), behind the [`QueuePair`] enum
//! (`kind.rs`). The command logic both share (cid slots, the data direction
//! of a command, the Fabrics Connect and its answer) lives in this file.
//!
//! A [`TcpQueuePair`] owns one non-blocking TCP connection (one NVMe queue).
//! [`TcpQueuePair::start`] queues the ICReq; [`TcpQueuePair::poll`] drives the
//! connection: it writes what is queued, reads what has arrived, answers
//! ICResp with the Fabrics Connect and R2Ts with H2CData, reassembles
//! C2HData into the command's slot buffer and reports completions.
//!
//! ```text
//!  start() --> AwaitIcResp --ICResp--> AwaitConnect --Connect OK--> Ready
//!                   |                        |                        |
//!                   +------------------------+------- error ----------+--> Failed
//! ```

mod kind;
mod rdma;
mod rx;
mod slots;

pub use kind::{QueuePair, Trtype};
pub use rdma::RdmaQueuePair;

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use ferrite_nvme::command::PSDT_SGL_MPTR_CONTIGUOUS;
use ferrite_nvme::digest::crc32c;
use ferrite_nvme::fabrics::{ConnectCommand, ConnectData, CNTLID_DYNAMIC};
use ferrite_nvme::tcp::{
    encode_capsule_cmd, encode_h2c_data, encode_icreq, encode_term_req, fes, DataHeader, Digests,
    Direction,
};
use ferrite_nvme::{Command, Completion, SglDescriptor, Status};
use zerocopy::IntoBytes;

use crate::error::{HostError, Result, Violation};
use crate::types::Cid;
use rx::RxState;
use slots::{Dir, Slots};

/// The in-capsule data size the NVMe/TCP binding guarantees on the admin queue.
pub const ADMIN_IN_CAPSULE_MAX: u32 = 8192;
/// Largest header we ever write before data (72-byte capsule + digest + padding to 128).
const MAX_TX_HEADER: usize = 256;
/// Receive buffer size: many small PDUs per read syscall.
const RX_BUF: usize = 256 * 1024;
/// Reads per poll before yielding back to the caller.
const READS_PER_POLL: usize = 16;

/// Everything needed to connect one queue.
#[derive(Debug, Clone)]
pub struct QueuePairConfig {
    /// Queue identifier: 0 for the admin queue.
    pub qid: u16,
    /// Most commands outstanding at once; cids are 0..queue_depth.
    /// Connect asks for SQSIZE = queue_depth (0-based: one spare entry).
    pub queue_depth: u16,
    /// Digests to request in the ICReq (the controller may refuse them).
    pub digests: Digests,
    /// Host NQN.
    pub hostnqn: String,
    /// Host identifier.
    pub hostid: [u8; 16],
    /// Subsystem NQN.
    pub subnqn: String,
    /// Controller ID to join: [`CNTLID_DYNAMIC`] for the admin queue,
    /// the admin queue's controller for I/O queues.
    pub cntlid: u16,
    /// Keep Alive Timeout in ms (admin queue only; 0 disables).
    pub kato_ms: u32,
    /// Set CATTR bit 2: disable SQ flow control (allows C2HData SUCCESS).
    pub disable_sq_flow_control: bool,
    /// In-capsule data the controller accepts, in bytes (IOCCSZ * 16 - 64 for
    /// I/O queues, [`ADMIN_IN_CAPSULE_MAX`] for the admin queue).
    pub in_capsule_max: u32,
    /// Advertised maximum outstanding R2Ts per command, 0-based (ICReq MAXR2T).
    pub maxr2t: u32,
    /// Largest data transfer of one command, in bytes.
    pub max_transfer: u32,
}

impl QueuePairConfig {
    /// An admin queue config (qid 0, dynamic controller, 32 entries).
    pub fn admin(subnqn: &str, hostnqn: &str, hostid: [u8; 16]) -> QueuePairConfig {
        QueuePairConfig {
            qid: 0,
            queue_depth: 31,
            digests: Digests::default(),
            hostnqn: hostnqn.to_owned(),
            hostid,
            subnqn: subnqn.to_owned(),
            cntlid: CNTLID_DYNAMIC,
            kato_ms: 0,
            disable_sq_flow_control: false,
            in_capsule_max: ADMIN_IN_CAPSULE_MAX,
            maxr2t: 0,
            max_transfer: 1 << 20,
        }
    }
}

/// Data of a command.
#[derive(Debug, Clone, Copy)]
pub enum Data<'a> {
    /// No data transfer.
    None,
    /// Host to controller data (a write).
    Write(&'a [u8]),
    /// Controller to host transfer of this many bytes (a read).
    Read(u32),
}

impl Data<'_> {
    pub(crate) fn len(&self) -> usize {
        match self {
            Data::None => 0,
            Data::Write(d) => d.len(),
            Data::Read(n) => *n as usize,
        }
    }
}

/// How the data pointer (SGL descriptor 1) of a submitted command is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SglMode {
    /// In-capsule when write data fits the in-capsule size, otherwise a
    /// transport data block (R2T/H2CData or C2HData); PSDT set to SGL.
    #[default]
    Auto,
    /// Write data in-capsule whatever its size (tests of oversize capsules).
    InCapsule,
    /// A transport data block even for small writes.
    Transport,
    /// Leave DPTR and PSDT as given. Write data goes in-capsule when the
    /// descriptor is a Data Block with the Offset sub type, else waits for R2Ts.
    AsIs,
}

/// A completed command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Completed {
    /// Command identifier.
    pub cid: Cid,
    /// The completion; synthesized (status success) for a C2HData with SUCCESS.
    pub cqe: Completion,
    /// Bytes of C2H data received.
    pub data_len: u32,
    /// Bytes of data the command asked for.
    pub expected_len: u32,
    /// A C2H data digest failed; the data is not to be trusted.
    pub data_digest_error: bool,
    /// Completed by a C2HData SUCCESS flag rather than a CapsuleResp.
    pub by_success_flag: bool,
}

impl Completed {
    /// The NVMe status.
    pub fn status(&self) -> Status {
        self.cqe.status()
    }

    /// Ok when the status is success, all data arrived and digests held.
    pub fn check(&self) -> Result<()> {
        let status = self.status();
        if !status.is_success() {
            return Err(HostError::Status(status));
        }
        if self.data_digest_error {
            return Err(HostError::DataDigest { cid: self.cid.0 });
        }
        if self.data_len < self.expected_len {
            return Err(Violation::ShortTransfer {
                cid: self.cid.0,
                expected: self.expected_len,
                got: self.data_len,
            }
            .into());
        }
        Ok(())
    }
}

/// Connection state, see the module diagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QpState {
    /// ICReq sent, waiting for ICResp.
    AwaitIcResp,
    /// Connect sent, waiting for its response.
    AwaitConnect,
    /// Connected; commands may be submitted.
    Ready,
    /// Broken; every call fails.
    Failed,
}

impl QpState {
    /// The one transition check: forward through the handshake, or to Failed.
    pub fn is_transition_valid(from: QpState, to: QpState) -> bool {
        matches!(
            (from, to),
            (QpState::AwaitIcResp, QpState::AwaitConnect)
                | (QpState::AwaitConnect, QpState::Ready)
                | (_, QpState::Failed)
        )
    }

    /// Moves to `to`, checked in debug builds.
    fn go(&mut self, to: QpState) {
        debug_assert!(
            QpState::is_transition_valid(*self, to),
            "queue pair state {self:?} -> {to:?}"
        );
        *self = to;
    }

    fn name(self) -> &'static str {
        match self {
            QpState::AwaitIcResp => "awaiting ICResp",
            QpState::AwaitConnect => "awaiting the Connect response",
            QpState::Ready => "ready",
            QpState::Failed => "failed",
        }
    }
}

/// Negotiated connection parameters (from ICResp and Connect).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Negotiated {
    /// Digests in force.
    pub digests: Digests,
    /// Controller PDU data alignment.
    pub cpda: u8,
    /// Largest H2CData payload.
    pub maxh2cdata: u32,
    /// Controller ID returned by Connect.
    pub cntlid: u16,
    /// SQHD of the Connect response.
    pub connect_sqhd: u16,
    /// The Connect response asked for in-band authentication (AUTHREQ).
    pub auth_required: bool,
}

/// One NVMe/TCP queue pair over a non-blocking socket.
#[derive(Debug)]
pub struct TcpQueuePair {
    stream: TcpStream,
    cfg: QueuePairConfig,
    state: QpState,
    neg: Negotiated,
    connect_cid: u16,
    slots: Slots,
    tx: Vec<u8>,
    tx_head: usize,
    rx: Vec<u8>,
    rx_start: usize,
    rx_end: usize,
    rx_state: RxState,
}

impl TcpQueuePair {
    /// Takes a connected stream, makes it non-blocking and queues the ICReq.
    pub fn start(stream: TcpStream, cfg: QueuePairConfig) -> Result<TcpQueuePair> {
        if cfg.queue_depth == 0 {
            return Err(HostError::InvalidArgument("queue depth 0".into()));
        }
        stream.set_nonblocking(true).map_err(HostError::from_io)?;
        stream.set_nodelay(true).map_err(HostError::from_io)?;
        let mut qp = TcpQueuePair {
            stream,
            slots: Slots::new(cfg.queue_depth),
            cfg,
            state: QpState::AwaitIcResp,
            neg: Negotiated::default(),
            connect_cid: 0,
            tx: Vec::with_capacity(64 * 1024),
            tx_head: 0,
            rx: vec![0; RX_BUF],
            rx_start: 0,
            rx_end: 0,
            rx_state: RxState::Header,
        };
        let mut icreq = [0u8; 128];
        let n = encode_icreq(0, qp.cfg.digests, qp.cfg.maxr2t, &mut icreq)?;
        qp.tx.extend_from_slice(&icreq[..n]);
        Ok(qp)
    }

    /// Connects to `addr` and drives the handshake until the queue is ready.
    pub fn connect(
        addr: SocketAddr,
        cfg: QueuePairConfig,
        timeout: Duration,
    ) -> Result<TcpQueuePair> {
        let deadline = Instant::now() + timeout;
        let stream = connect_tcp(addr, timeout)?;
        let mut qp = TcpQueuePair::start(stream, cfg)?;
        drive_until_ready(&mut qp, deadline, timeout)?;
        Ok(qp)
    }

    /// Current state.
    pub fn state(&self) -> QpState {
        self.state
    }

    /// True once Connect succeeded.
    pub fn is_ready(&self) -> bool {
        self.state == QpState::Ready
    }

    /// Negotiated parameters (valid once ready).
    pub fn negotiated(&self) -> Negotiated {
        self.neg
    }

    /// The configuration it was started with.
    pub fn config(&self) -> &QueuePairConfig {
        &self.cfg
    }

    /// Queue identifier.
    pub fn qid(&self) -> u16 {
        self.cfg.qid
    }

    /// Queue depth (most commands outstanding).
    pub fn depth(&self) -> u16 {
        self.slots.depth()
    }

    /// Commands outstanding.
    pub fn outstanding(&self) -> usize {
        self.slots.outstanding()
    }

    /// Changes the in-capsule limit (e.g. after Identify Controller).
    pub fn set_in_capsule_max(&mut self, bytes: u32) {
        self.cfg.in_capsule_max = bytes;
    }

    /// The underlying socket (for registering with an event loop).
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// Bytes queued but not yet written to the socket.
    pub fn pending_tx(&self) -> usize {
        self.tx.len() - self.tx_head
    }

    /// The data of command `cid`: write data kept for R2Ts, or the read data
    /// received. A completed read's data stays here until `cid` is reused
    /// by a later submission (free cids are reused in FIFO order).
    pub fn data(&self, cid: Cid) -> &[u8] {
        match self.slots.get(cid.0) {
            Some(s) if s.dir == Dir::FromController => &s.buf[..s.received as usize],
            Some(s) if s.dir == Dir::ToControllerR2t => &s.buf[..s.len as usize],
            _ => &[],
        }
    }

    /// Submits `cmd` (its cid is overwritten) with `data`, SGL chosen automatically.
    pub fn submit(&mut self, cmd: &Command, data: Data<'_>) -> Result<Cid> {
        self.submit_with(cmd, data, SglMode::Auto)
    }

    /// Submits `cmd` with explicit control over the data pointer.
    pub fn submit_with(&mut self, cmd: &Command, data: Data<'_>, mode: SglMode) -> Result<Cid> {
        if self.state != QpState::Ready {
            return Err(HostError::NotReady(self.state.name()));
        }
        self.queue_command(cmd, data, mode)
    }

    fn queue_command(&mut self, cmd: &Command, data: Data<'_>, mode: SglMode) -> Result<Cid> {
        let len = data.len();
        let (cid, mut cmd, dir) = begin_command(&mut self.slots, &self.cfg, cmd, data, mode)?;
        let len32 = len as u32;
        if mode != SglMode::AsIs {
            cmd.set_psdt(PSDT_SGL_MPTR_CONTIGUOUS);
            cmd.dptr = match dir {
                Dir::ToControllerInCapsule => SglDescriptor::in_capsule(0, len32),
                Dir::None => SglDescriptor::transport(0),
                _ => SglDescriptor::transport(len32),
            };
        }
        let capsule_data = match (dir, data) {
            (Dir::ToControllerInCapsule, Data::Write(d)) => d,
            _ => &[],
        };
        if let Err(e) = self.push_capsule(&cmd, capsule_data) {
            self.slots.unalloc(cid);
            return Err(e);
        }
        let slot = self
            .slots
            .get_mut(cid)
            .expect("allocated cids index the slot table");
        slot.start(dir, len32);
        if let (Dir::ToControllerR2t, Data::Write(d)) = (dir, data) {
            slot.buf[..len].copy_from_slice(d);
        }
        Ok(Cid(cid))
    }

    /// Appends a CapsuleCmd PDU (with in-capsule data) to the send buffer.
    fn push_capsule(&mut self, cmd: &Command, data: &[u8]) -> Result<()> {
        let start = self.tx.len();
        self.tx.resize(start + MAX_TX_HEADER, 0);
        let n = match encode_capsule_cmd(
            cmd,
            data.len(),
            self.neg.digests,
            self.neg.cpda,
            &mut self.tx[start..],
        ) {
            Ok(n) => n,
            Err(e) => {
                self.tx.truncate(start);
                return Err(e.into());
            }
        };
        self.tx.truncate(start + n);
        if !data.is_empty() {
            self.tx.extend_from_slice(data);
            if self.neg.digests.data {
                self.tx.extend_from_slice(&crc32c(data).to_le_bytes());
            }
        }
        Ok(())
    }

    /// Queues H2CData PDUs answering an R2T for `len` bytes at `offset`.
    fn push_h2c(&mut self, cid: u16, ttag: u16, offset: u32, len: u32) -> Result<()> {
        let max = self.neg.maxh2cdata.max(1);
        let mut done = 0u32;
        while done < len {
            let chunk = (len - done).min(max);
            let datao = offset + done;
            let last = done + chunk == len;
            let start = self.tx.len();
            self.tx.resize(start + MAX_TX_HEADER, 0);
            let n = encode_h2c_data(
                cid,
                ttag,
                datao,
                chunk,
                last,
                self.neg.digests,
                self.neg.cpda,
                &mut self.tx[start..],
            )?;
            self.tx.truncate(start + n);
            let slot = self
                .slots
                .get(cid)
                .expect("R2T cid was checked to be outstanding");
            let data = &slot.buf[datao as usize..(datao + chunk) as usize];
            self.tx.extend_from_slice(data);
            if self.neg.digests.data {
                self.tx.extend_from_slice(&crc32c(data).to_le_bytes());
            }
            done += chunk;
        }
        Ok(())
    }

    /// Writes queued bytes, reads and processes what arrived, and appends
    /// completions to `out`. Returns the number of completions appended.
    /// A returned error is fatal: the queue pair is failed and closed.
    pub fn poll(&mut self, out: &mut Vec<Completed>) -> Result<usize> {
        poll_engine(self, out)
    }

    fn poll_inner(&mut self, out: &mut Vec<Completed>) -> Result<()> {
        self.flush()?;
        for _ in 0..READS_PER_POLL {
            if let Some((cid, off, len)) = self.direct_data_range() {
                let slot = self
                    .slots
                    .get_mut(cid)
                    .expect("direct range names an outstanding cid");
                let n = match self.stream.read(&mut slot.buf[off..off + len]) {
                    Ok(0) => return Err(HostError::ConnectionClosed),
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(HostError::from_io(e)),
                };
                self.direct_data_done(n);
                self.process_rx(out)?;
                continue;
            }
            if self.rx_end == self.rx.len() {
                self.compact_rx();
            }
            let n = match self.stream.read(&mut self.rx[self.rx_end..]) {
                Ok(0) => return Err(HostError::ConnectionClosed),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(HostError::from_io(e)),
            };
            self.rx_end += n;
            self.process_rx(out)?;
            if self.rx_end < self.rx.len() && n < self.rx.len() / 2 {
                // A short read: the socket is most likely drained.
                break;
            }
        }
        self.flush()
    }

    fn compact_rx(&mut self) {
        if self.rx_start > 0 {
            self.rx.copy_within(self.rx_start..self.rx_end, 0);
            self.rx_end -= self.rx_start;
            self.rx_start = 0;
        }
    }

    /// Writes as much of the send buffer as the socket takes.
    pub fn flush(&mut self) -> Result<()> {
        while self.tx_head < self.tx.len() {
            match self.stream.write(&self.tx[self.tx_head..]) {
                Ok(0) => return Err(HostError::ConnectionClosed),
                Ok(n) => self.tx_head += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(HostError::from_io(e)),
            }
        }
        if self.tx_head == self.tx.len() {
            self.tx.clear();
            self.tx_head = 0;
        } else if self.tx_head >= 64 * 1024 {
            self.tx.drain(..self.tx_head);
            self.tx_head = 0;
        }
        Ok(())
    }

    /// Blocks until the socket is readable (or writable while data is
    /// queued) or `timeout` passes. Returns true when it became ready.
    pub fn wait(&self, timeout: Duration) -> Result<bool> {
        use rustix::event::{PollFd, PollFlags};
        let mut flags = PollFlags::IN;
        if self.pending_tx() > 0 {
            flags |= PollFlags::OUT;
        }
        let fd = self.stream.as_fd();
        poll_fds(&mut [PollFd::from_borrowed_fd(fd, flags)], timeout)
    }

    /// Marks the queue failed: tells the target why (H2CTermReq, best
    /// effort) when the target broke the protocol, then closes the socket.
    fn fail(&mut self, e: &HostError) {
        if self.state == QpState::Failed {
            return;
        }
        self.set_state(QpState::Failed);
        if let Some((fes, fei)) = term_req_for(e) {
            let mut buf = [0u8; 24];
            if let Ok(n) = encode_term_req(Direction::FromHost, fes, fei, &[], &mut buf) {
                // Best effort on a non-blocking socket; the connection closes anyway.
                let _ = self.stream.write(&buf[..n]);
            }
        }
        log::debug!("queue {} failed: {e}", self.cfg.qid);
        let _ = self.stream.shutdown(Shutdown::Both);
    }

    /// Closes the connection. Outstanding commands are abandoned.
    pub fn close(&mut self) {
        let _ = self.flush();
        self.set_state(QpState::Failed);
        let _ = self.stream.shutdown(Shutdown::Both);
    }

    fn set_state(&mut self, to: QpState) {
        self.state.go(to);
    }

    /// Queues the Fabrics Connect (after ICResp).
    fn queue_connect(&mut self) -> Result<()> {
        let (cmd, data) = connect_capsule(&self.cfg)?;
        // Connect data always travels in-capsule, whatever IOCCSZ says.
        let cid = self.queue_command(&cmd, Data::Write(data.as_bytes()), SglMode::InCapsule)?;
        self.connect_cid = cid.0;
        self.set_state(QpState::AwaitConnect);
        Ok(())
    }

    /// Finishes command `cid` with `cqe`.
    fn complete(
        &mut self,
        cid: u16,
        cqe: Completion,
        by_success_flag: bool,
        out: &mut Vec<Completed>,
    ) -> Result<()> {
        let done = finish_command(&mut self.slots, cid, cqe, by_success_flag);
        if self.state == QpState::AwaitConnect && cid == self.connect_cid {
            connect_answered(&self.cfg, cqe, &mut self.neg)?;
            self.set_state(QpState::Ready);
            return Ok(());
        }
        out.push(done);
        Ok(())
    }
}

/// Polls `fds` until one is ready (true) or `timeout` passes (false).
pub(crate) fn poll_fds(fds: &mut [rustix::event::PollFd<'_>], timeout: Duration) -> Result<bool> {
    use rustix::event::{poll, Timespec};
    let ts = Timespec::try_from(timeout).unwrap_or(Timespec {
        tv_sec: i64::MAX,
        tv_nsec: 0,
    });
    match poll(fds, Some(&ts)) {
        Ok(n) => Ok(n > 0),
        Err(rustix::io::Errno::INTR) => Ok(false),
        Err(e) => Err(HostError::Io(e.into())),
    }
}

/// What the transport engines share for the handshake and the poll wrapper.
pub(crate) trait Engine {
    fn state(&self) -> QpState;
    /// One round of I/O; an error is fatal.
    fn poll_once(&mut self, out: &mut Vec<Completed>) -> Result<()>;
    /// Marks the queue failed after `e` and closes the connection.
    fn fail(&mut self, e: &HostError);
    fn wait(&self, timeout: Duration) -> Result<bool>;
}

impl Engine for TcpQueuePair {
    fn state(&self) -> QpState {
        self.state
    }
    fn poll_once(&mut self, out: &mut Vec<Completed>) -> Result<()> {
        self.poll_inner(out)
    }
    fn fail(&mut self, e: &HostError) {
        TcpQueuePair::fail(self, e)
    }
    fn wait(&self, timeout: Duration) -> Result<bool> {
        TcpQueuePair::wait(self, timeout)
    }
}

/// Polls `e` once: the number of completions appended to `out`; an error fails the queue.
pub(crate) fn poll_engine<E: Engine>(e: &mut E, out: &mut Vec<Completed>) -> Result<usize> {
    if e.state() == QpState::Failed {
        return Err(HostError::NotReady(e.state().name()));
    }
    let before = out.len();
    match e.poll_once(out) {
        Ok(()) => Ok(out.len() - before),
        Err(err) => {
            e.fail(&err);
            Err(err)
        }
    }
}

/// Drives the handshake of a new queue until it is ready or `deadline` passes.
pub(crate) fn drive_until_ready<E: Engine>(
    e: &mut E,
    deadline: Instant,
    timeout: Duration,
) -> Result<()> {
    let mut out = Vec::new();
    loop {
        poll_engine(e, &mut out)?;
        if e.state() == QpState::Ready {
            return Ok(());
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(HostError::Timeout {
                what: if e.state() == QpState::AwaitIcResp {
                    "ICResp"
                } else {
                    "the Connect response"
                },
                after: timeout,
            });
        }
        e.wait(deadline - now)?;
    }
}

/// Takes a cid for `cmd` and decides which way (and how) its data moves; shared by the
/// transports. The cid goes back with [`Slots::unalloc`] if the command is not sent.
pub(crate) fn begin_command(
    slots: &mut Slots,
    cfg: &QueuePairConfig,
    cmd: &Command,
    data: Data<'_>,
    mode: SglMode,
) -> Result<(u16, Command, Dir)> {
    let len = data.len();
    if len > cfg.max_transfer as usize {
        return Err(HostError::InvalidArgument(format!(
            "transfer of {len} bytes exceeds the queue's maximum of {}",
            cfg.max_transfer
        )));
    }
    let Some(cid) = slots.alloc() else {
        return Err(HostError::QueueFull {
            depth: slots.depth(),
        });
    };
    let mut cmd = *cmd;
    cmd.cid = cid.into();
    let dir = match data {
        Data::None => Dir::None,
        Data::Read(_) => Dir::FromController,
        Data::Write(_) => {
            let in_capsule = match mode {
                SglMode::Auto => len as u32 <= cfg.in_capsule_max,
                SglMode::InCapsule => true,
                SglMode::Transport => false,
                SglMode::AsIs => cmd.dptr.id == SglDescriptor::SGL_DATA_BLOCK_OFFSET,
            };
            if in_capsule {
                Dir::ToControllerInCapsule
            } else {
                Dir::ToControllerR2t
            }
        }
    };
    Ok((cid, cmd, dir))
}

/// The Fabrics Connect command and its data for the queue `cfg` describes.
pub(crate) fn connect_capsule(cfg: &QueuePairConfig) -> Result<(Command, ConnectData)> {
    let connect = ConnectCommand {
        recfmt: 0,
        qid: cfg.qid,
        sqsize: cfg.queue_depth,
        cattr: if cfg.disable_sq_flow_control { 0x04 } else { 0 },
        kato: if cfg.qid == 0 { cfg.kato_ms } else { 0 },
    };
    let data = ConnectData::new(cfg.hostid, cfg.cntlid, &cfg.subnqn, &cfg.hostnqn)?;
    Ok((connect.to_command(0), data))
}

/// Reads the Connect response into `neg`; a failed status is the error.
pub(crate) fn connect_answered(
    cfg: &QueuePairConfig,
    cqe: Completion,
    neg: &mut Negotiated,
) -> Result<()> {
    let status = cqe.status();
    if !status.is_success() {
        return Err(HostError::ConnectRejected {
            qid: cfg.qid,
            status,
            dw0: cqe.result(),
        });
    }
    neg.cntlid = cqe.result() as u16;
    neg.connect_sqhd = cqe.sqhd.get();
    neg.auth_required = cqe.result() & crate::auth::CONNECT_AUTHREQ_MASK != 0;
    log::debug!(
        "queue {} connected to controller {} (digests {:?})",
        cfg.qid,
        neg.cntlid,
        neg.digests
    );
    Ok(())
}

/// The completion of outstanding `cid`, which is freed.
pub(crate) fn finish_command(
    slots: &mut Slots,
    cid: u16,
    cqe: Completion,
    by_success_flag: bool,
) -> Completed {
    let slot = slots
        .get(cid)
        .expect("completed cid was checked to be outstanding");
    let from = slot.dir == Dir::FromController;
    let done = Completed {
        cid: Cid(cid),
        cqe,
        data_len: if from { slot.received } else { 0 },
        expected_len: if from { slot.len } else { 0 },
        data_digest_error: slot.data_digest_error,
        by_success_flag,
    };
    slots.free(cid);
    done
}

/// The (FES, FEI) of the H2CTermReq that reports `e` to the target, when
/// `e` is a protocol violation a TermReq can name.
fn term_req_for(e: &HostError) -> Option<(u16, u32)> {
    let HostError::Protocol(v) = e else {
        return None;
    };
    Some(match v {
        Violation::Pdu(pe) => (pe.fes(), pe.fei()),
        Violation::Unexpected { .. } => (fes::PDU_SEQUENCE_ERROR, 0),
        Violation::UnknownCid { .. } | Violation::WrongDirection { .. } => {
            (fes::INVALID_HEADER_FIELD, DataHeader::CCCID_OFFSET)
        }
        Violation::BadR2t { .. } => (fes::INVALID_HEADER_FIELD, DataHeader::DATAL_OFFSET),
        Violation::DataOffset { .. } => (fes::DATA_OUT_OF_RANGE, DataHeader::DATAO_OFFSET),
        Violation::OutOfRange { .. } => (fes::DATA_OUT_OF_RANGE, DataHeader::DATAL_OFFSET),
        Violation::BadIcResp { .. }
        | Violation::ShortTransfer { .. }
        | Violation::Decode { .. } => return None,
    })
}

/// Opens a TCP connection, naming a refusal.
pub(crate) fn connect_tcp(addr: SocketAddr, timeout: Duration) -> Result<TcpStream> {
    TcpStream::connect_timeout(&addr, timeout).map_err(|e| match e.kind() {
        io::ErrorKind::ConnectionRefused => HostError::ConnectionRefused { addr },
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => HostError::Timeout {
            what: "the TCP connection",
            after: timeout,
        },
        _ => HostError::from_io(e),
    })
}
