//! One NVMe/TCP connection (one queue pair): receive-side PDU parsing into pooled buffers,
//! per-command slots through R2T/H2CData, and a transmit queue of headers and data buffers sent
//! with vectored writes.
//!
//! Command slot states:
//!
//! ```text
//! Free -> Receiving (in-capsule data) ----------------------------> Executing -> Sending -> Free
//!      -> AwaitBuffer (in-capsule data, receive side paused) -> Receiving
//!      -> AwaitBuffer -> AwaitH2C (R2T sent, H2CData arriving) --->
//!      -> AwaitBuffer (read needing a buffer) ------------------->
//! ```
//!
//! Nothing here allocates once a connection is set up: the slots, the cid map, the staging
//! buffer and the transmit queue are sized when the connection arrives, and data lives in the
//! reactor's pooled buffers. When the pool is empty, commands wait for a buffer; in-capsule data
//! (which sits in the byte stream before the next PDU) pauses the receive side of its
//! connection until a buffer comes back, which is TCP backpressure on that host. R2Ts are only
//! granted while more than [`R2T_RESERVE_DIVISOR`]th of the pool is free, so buffers held by
//! writes waiting for their H2CData (which may sit behind a paused capsule) can never take the
//! last buffers: the reserve only goes to commands that complete without more input.

use std::collections::VecDeque;
use std::io::{IoSlice, Read, Write};
use std::net::{SocketAddr, TcpStream};

use ferrite_nvme::digest::Crc32c;
use ferrite_nvme::tcp::{
    encode_c2h_data, encode_capsule_resp, encode_icresp, encode_r2t, encode_term_req, fes,
    C2hDataFlags, CommonHeader, DataHeader, Digests, Direction, ICReq, PduError, PduLayout,
    PduType, DIGEST_LEN,
};
use ferrite_nvme::{Command, Status};
use ferrite_nvmf::{
    plan_data, ConnId, DataPlan, Exec, PollGroup, Request, Response, TransportLimits,
};
use ferrite_reactor::{IoBuf, TaskContext};

use crate::transport::TcpOptions;

/// Command slots per connection: the largest queue a host may have plus AER headroom.
const MAX_SLOTS: usize = ferrite_nvmf::MAX_COMMAND_SLOTS;
/// Transmit queue items a command can have queued at once (C2HData header, data, data digest,
/// CapsuleResp, release marker; or an R2T).
const TX_ITEMS_PER_SLOT: usize = 6;
/// R2Ts wait while no more than 1/this of the buffer pool is free (see the module doc).
pub(crate) const R2T_RESERVE_DIVISOR: usize = 8;
/// Socket reads per connection per poll, for fairness between connections.
const READS_PER_POLL: usize = 8;
/// Bytes of read data a connection starts per poll before its remaining staged commands wait for
/// the next poll: the responses already produced are sent in between, so the host receives data
/// while the rest is copied instead of after the whole batch (128 KiB reads at QD 16 would
/// otherwise go out as one 2 MiB write per round trip, target and host taking turns).
const READ_BYTES_PER_POLL: u32 = 256 * 1024;
/// IoSlices per writev.
const MAX_IOVECS: usize = 64;
/// Largest header we buffer for a PDU (ICReq is 128 bytes; TermReq 24 + 128 of data).
const MAX_HEADER: usize = 256;
/// Room for a CapsuleResp or C2HData/R2T header plus digest and padding (HPDA up to 31 -> 128).
const INLINE: usize = 136;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConnState {
    AwaitIcReq,
    Ready,
    /// A fatal error was reported with a TermReq: send what is queued, then close.
    Terminating,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum SlotState {
    #[default]
    Free,
    Receiving,
    AwaitBuffer,
    AwaitH2C,
    Executing,
    Sending,
}

#[derive(Debug, Default)]
struct CmdSlot {
    state: SlotState,
    cmd: Command,
    plan: Option<DataPlan>,
    buf: Option<IoBuf>,
    /// H2C bytes received so far.
    received: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RxKind {
    CapsuleData,
    H2CData,
    /// Data of a command already failed: read and drop.
    Discard,
}

/// The data part of the PDU being received.
#[derive(Debug)]
struct RxData {
    slot: u16,
    kind: RxKind,
    offset: usize,
    remaining: usize,
    digest: Option<Crc32c>,
}

#[derive(Debug)]
enum TxItem {
    Inline {
        bytes: [u8; INLINE],
        len: u8,
    },
    Owned(Vec<u8>),
    Data {
        slot: u16,
        len: u32,
    },
    /// The command's last bytes are out: free its slot and buffer.
    Release {
        slot: u16,
    },
}

impl TxItem {
    fn len(&self) -> usize {
        match self {
            TxItem::Inline { len, .. } => *len as usize,
            TxItem::Owned(v) => v.len(),
            TxItem::Data { len, .. } => *len as usize,
            TxItem::Release { .. } => 0,
        }
    }
}

/// Why a connection must go.
#[derive(Debug)]
pub(crate) enum ConnError {
    /// The peer closed or reset the connection, or a socket error.
    Gone(String),
    /// A protocol violation: a C2HTermReq has been queued; flush and close.
    Terminated(String),
}

pub(crate) struct Conn {
    pub stream: TcpStream,
    pub peer: SocketAddr,
    pub id: ConnId,
    state: ConnState,
    digests: Digests,
    hpda: u8,
    opts: TcpOptions,
    rx: Box<[u8]>,
    rx_start: usize,
    rx_end: usize,
    rx_data: Option<RxData>,
    slots: Vec<CmdSlot>,
    free: Vec<u16>,
    /// cid -> slot + 1 (0: no command with this cid).
    cid_map: Box<[u16]>,
    waiting_buffer: VecDeque<u16>,
    tx: VecDeque<TxItem>,
    /// Bytes of the front item already written.
    tx_front_done: usize,
    pub want_write: bool,
    /// The last socket read of this poll returned less than it asked for: the socket is empty,
    /// and another read would only return EAGAIN.
    drained: bool,
    /// Read data started in this poll (see [`READ_BYTES_PER_POLL`]).
    read_bytes: u32,
    /// Commands are left in staging because the poll's read budget ran out.
    more_staged: bool,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("peer", &self.peer)
            .field("id", &self.id)
            .field("state", &self.state)
            .finish()
    }
}

impl Conn {
    pub fn new(stream: TcpStream, peer: SocketAddr, id: ConnId, opts: TcpOptions) -> Conn {
        Conn {
            stream,
            peer,
            id,
            state: ConnState::AwaitIcReq,
            digests: Digests::default(),
            hpda: 0,
            opts,
            rx: vec![0u8; opts.recv_buffer.max(2 * MAX_HEADER)].into_boxed_slice(),
            rx_start: 0,
            rx_end: 0,
            rx_data: None,
            slots: (0..MAX_SLOTS).map(|_| CmdSlot::default()).collect(),
            // Popped from the end: low slot numbers first.
            free: (0..MAX_SLOTS as u16).rev().collect(),
            cid_map: vec![0u16; 1 << 16].into_boxed_slice(),
            waiting_buffer: VecDeque::with_capacity(MAX_SLOTS),
            // Two extra items: an ICResp and a TermReq.
            tx: VecDeque::with_capacity(MAX_SLOTS * TX_ITEMS_PER_SLOT + 2),
            tx_front_done: 0,
            want_write: false,
            drained: false,
            read_bytes: 0,
            more_staged: false,
        }
    }

    /// Commands wait for a buffer, or the receive side is paused until one comes back.
    pub fn has_waiters(&self) -> bool {
        !self.waiting_buffer.is_empty() || self.rx_paused()
    }

    /// In-capsule data is next on the socket but its command has no buffer yet.
    fn rx_paused(&self) -> bool {
        self.rx_data.as_ref().is_some_and(|rd| {
            rd.kind == RxKind::CapsuleData && self.slots[rd.slot as usize].buf.is_none()
        })
    }

    /// Gives paused in-capsule data its buffer if the pool has one again. False while paused.
    fn resume_rx(&mut self, cx: &mut TaskContext) -> bool {
        if !self.rx_paused() {
            return true;
        }
        let rd = self.rx_data.as_ref().expect("paused means receiving");
        let s = &mut self.slots[rd.slot as usize];
        let len = s.plan.map_or(0, |p| p.len());
        match cx.get_buffer(len as usize) {
            Some(buf) => {
                s.buf = Some(buf);
                s.state = SlotState::Receiving;
                true
            }
            None => false,
        }
    }

    /// Complete commands wait in staging for the next poll (no socket event will announce them).
    pub fn has_staged_commands(&self) -> bool {
        self.more_staged
    }

    pub fn is_terminating(&self) -> bool {
        self.state == ConnState::Terminating
    }

    fn limits(&self) -> TransportLimits {
        TransportLimits::default()
    }

    /// Reads and handles whatever the socket has. Returns whether anything happened.
    pub fn on_readable(
        &mut self,
        nvmf: &mut PollGroup,
        cx: &mut TaskContext,
    ) -> Result<bool, ConnError> {
        let mut progress = false;
        let mut reads = 0;
        self.drained = false;
        self.read_bytes = 0;
        self.more_staged = false;
        while self.state != ConnState::Terminating {
            if self.rx_data.is_some() {
                if !self.resume_rx(cx) {
                    // Backpressure: leave the bytes in the socket until a buffer returns.
                    return Ok(progress);
                }
                if self.receive_data(&mut reads)? {
                    self.finish_data(nvmf, cx)?;
                    progress = true;
                    continue;
                }
                return Ok(progress);
            }
            if self.read_bytes >= READ_BYTES_PER_POLL && !self.staged().is_empty() {
                self.more_staged = true;
                return Ok(progress);
            }
            if self.try_handle_pdu(nvmf, cx)? {
                progress = true;
                continue;
            }
            if reads >= READS_PER_POLL || !self.fill_staging(&mut reads)? {
                return Ok(progress);
            }
            progress = true;
        }
        Ok(progress)
    }

    /// Reads more bytes into the staging buffer. False when the socket has nothing now.
    fn fill_staging(&mut self, reads: &mut usize) -> Result<bool, ConnError> {
        if self.rx_start == self.rx_end {
            self.rx_start = 0;
            self.rx_end = 0;
        } else if self.rx.len() - self.rx_end < MAX_HEADER {
            self.rx.copy_within(self.rx_start..self.rx_end, 0);
            self.rx_end -= self.rx_start;
            self.rx_start = 0;
        }
        if self.drained {
            return Ok(false);
        }
        *reads += 1;
        let room = self.rx.len() - self.rx_end;
        match self.stream.read(&mut self.rx[self.rx_end..]) {
            Ok(0) => Err(ConnError::Gone("connection closed by host".into())),
            Ok(n) => {
                self.rx_end += n;
                self.drained = n < room;
                Ok(true)
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(false),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => Ok(true),
            Err(e) => Err(ConnError::Gone(format!("receive failed: {e}"))),
        }
    }

    fn staged(&self) -> &[u8] {
        &self.rx[self.rx_start..self.rx_end]
    }

    /// Moves data of the current PDU into its buffer: first what staging holds, then straight
    /// from the socket. True when the data and its digest are complete.
    fn receive_data(&mut self, reads: &mut usize) -> Result<bool, ConnError> {
        loop {
            let rd = self.rx_data.as_mut().expect("caller checked");
            if rd.remaining > 0 {
                let staged = self.rx_end - self.rx_start;
                if staged > 0 {
                    let n = staged.min(rd.remaining);
                    let src = &self.rx[self.rx_start..self.rx_start + n];
                    if rd.kind != RxKind::Discard {
                        let buf = self.slots[rd.slot as usize]
                            .buf
                            .as_mut()
                            .expect("receiving slot has a buffer");
                        let dst = &mut buf.spare_mut()[rd.offset..rd.offset + n];
                        dst.copy_from_slice(src);
                    }
                    if let Some(d) = rd.digest.as_mut() {
                        d.update(src);
                    }
                    rd.offset += n;
                    rd.remaining -= n;
                    self.rx_start += n;
                    continue;
                }
                if rd.kind == RxKind::Discard || rd.remaining < 512 {
                    // Small or discarded remainders go through staging.
                    if *reads >= READS_PER_POLL || !self.fill_staging(reads)? {
                        return Ok(false);
                    }
                    continue;
                }
                // Large data: read straight into the command's buffer.
                if self.drained {
                    return Ok(false);
                }
                let buf = self.slots[rd.slot as usize]
                    .buf
                    .as_mut()
                    .expect("receiving slot has a buffer");
                let dst = &mut buf.spare_mut()[rd.offset..rd.offset + rd.remaining];
                *reads += 1;
                match self.stream.read(dst) {
                    Ok(0) => return Err(ConnError::Gone("connection closed by host".into())),
                    Ok(n) => {
                        self.drained = n < dst.len();
                        if let Some(d) = rd.digest.as_mut() {
                            d.update(&dst[..n]);
                        }
                        rd.offset += n;
                        rd.remaining -= n;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(false),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(ConnError::Gone(format!("receive failed: {e}"))),
                }
                if *reads >= READS_PER_POLL {
                    return Ok(rd.remaining == 0 && rd.digest.is_none());
                }
                continue;
            }
            if rd.digest.is_none() {
                return Ok(true);
            }
            if self.rx_end - self.rx_start >= DIGEST_LEN {
                return Ok(true);
            }
            if *reads >= READS_PER_POLL || !self.fill_staging(reads)? {
                return Ok(false);
            }
        }
    }

    /// The data of the current PDU is in; act on it.
    fn finish_data(&mut self, nvmf: &mut PollGroup, cx: &mut TaskContext) -> Result<(), ConnError> {
        let rd = self.rx_data.take().expect("caller checked");
        let mut digest_ok = true;
        if let Some(d) = rd.digest {
            let received = u32::from_le_bytes(
                self.rx[self.rx_start..self.rx_start + DIGEST_LEN]
                    .try_into()
                    .expect("4 bytes staged"),
            );
            self.rx_start += DIGEST_LEN;
            digest_ok = d.value() == received;
        }
        if rd.kind == RxKind::Discard {
            return Ok(());
        }
        let slot = rd.slot;
        if !digest_ok {
            // A data digest error fails the command, not the connection.
            log::warn!(
                "{}: data digest error on command {}",
                self.peer,
                self.slots[slot as usize].cmd.cid.get()
            );
            let buf = self.slots[slot as usize].buf.take();
            if let Some(buf) = buf {
                cx.put_buffer(buf);
            }
            let cmd = self.slots[slot as usize].cmd;
            let resp = nvmf.reject(self.id, slot, &cmd, Status::TRANSIENT_TRANSPORT_ERROR, cx);
            self.queue_response(resp);
            return Ok(());
        }
        match rd.kind {
            RxKind::CapsuleData => {
                let s = &mut self.slots[slot as usize];
                if let Some(buf) = s.buf.as_mut() {
                    buf.set_len(rd.offset);
                }
                self.execute(slot, nvmf, cx);
            }
            RxKind::H2CData => {
                let s = &mut self.slots[slot as usize];
                s.received = rd.offset as u32;
                let total = s.plan.map_or(0, |p| p.len());
                if s.received == total {
                    if let Some(buf) = s.buf.as_mut() {
                        buf.set_len(total as usize);
                    }
                    self.execute(slot, nvmf, cx);
                }
            }
            RxKind::Discard => {}
        }
        Ok(())
    }

    /// Handles one complete PDU header from staging. False when more bytes are needed.
    fn try_handle_pdu(
        &mut self,
        nvmf: &mut PollGroup,
        cx: &mut TaskContext,
    ) -> Result<bool, ConnError> {
        let staged = self.staged();
        if staged.len() < 8 {
            return Ok(false);
        }
        let ch = match CommonHeader::parse(staged) {
            Ok((ch, _)) => ch,
            Err(e) => return Err(self.terminate(&e)),
        };
        let max_data = self
            .opts
            .max_h2c_data
            .max(ferrite_nvmf::IN_CAPSULE_DATA_BYTES);
        let digests = if self.state == ConnState::AwaitIcReq {
            (false, false)
        } else {
            self.digests.pair()
        };
        let layout = match ch.validate(digests, Direction::FromHost, max_data) {
            Ok(layout) => layout,
            Err(e) => return Err(self.terminate(&e)),
        };
        // TermReq data is part of the header for our purposes (small, bounded).
        let header_len = match layout.pdu_type {
            PduType::H2CTermReq => layout.plen as usize,
            _ => layout.data_offset(),
        };
        if header_len > MAX_HEADER.max(layout.data_offset()) {
            return Err(self.terminate(&PduError::InvalidField {
                field: "pdo",
                offset: 3,
                value: layout.pdo as u32,
            }));
        }
        if staged.len() < header_len {
            return Ok(false);
        }
        let mut header = [0u8; MAX_HEADER + 8];
        let hlen = header_len.min(header.len());
        header[..hlen].copy_from_slice(&staged[..hlen]);
        if let Err(e) = ferrite_nvme::tcp::verify_header_digest(
            &header[..layout.header_with_digest_len()],
            &layout,
        ) {
            return Err(self.terminate(&e));
        }
        self.rx_start += header_len;
        let header = &header[..hlen];
        match (self.state, layout.pdu_type) {
            (ConnState::AwaitIcReq, PduType::ICReq) => self.handle_icreq(header)?,
            (ConnState::AwaitIcReq, _) | (ConnState::Ready, PduType::ICReq) => {
                return Err(self.terminate_with(
                    fes::PDU_SEQUENCE_ERROR,
                    0,
                    header,
                    "PDU out of sequence",
                ));
            }
            (_, PduType::CapsuleCmd) => self.handle_capsule(header, &layout, nvmf, cx)?,
            (_, PduType::H2CData) => self.handle_h2c(header, &layout)?,
            (_, PduType::H2CTermReq) => {
                let fes_value = u16::from_le_bytes([header[8], header[9]]);
                return Err(ConnError::Gone(format!(
                    "host terminated the connection (FES {fes_value:#x})"
                )));
            }
            (_, other) => {
                return Err(self.terminate_with(
                    fes::INVALID_HEADER_FIELD,
                    0,
                    header,
                    &format!("unexpected {other:?}"),
                ));
            }
        }
        Ok(true)
    }

    fn handle_icreq(&mut self, header: &[u8]) -> Result<(), ConnError> {
        let icreq = match ICReq::parse(header) {
            Ok(icreq) => icreq,
            Err(e) => {
                return Err(self.terminate_with(
                    fes::INVALID_HEADER_FIELD,
                    0,
                    header,
                    &e.to_string(),
                ))
            }
        };
        if let Err(e) = icreq.check() {
            // The ICReq is already consumed from staging: echo it, not what follows.
            return Err(self.terminate_with(e.fes(), e.fei(), header, &e.to_string()));
        }
        self.digests = Digests::new(icreq.header_digest(), icreq.data_digest());
        self.hpda = icreq.hpda;
        let mut out = vec![0u8; ICReq::SIZE];
        let n = encode_icresp(0, self.digests, self.opts.max_h2c_data, &mut out)
            .expect("ICResp fits its own size");
        out.truncate(n);
        self.tx.push_back(TxItem::Owned(out));
        self.state = ConnState::Ready;
        log::debug!(
            "{}: ICReq ok (header digest {}, data digest {}, hpda {}, maxr2t {})",
            self.peer,
            self.digests.header,
            self.digests.data,
            self.hpda,
            icreq.maxr2t.get()
        );
        Ok(())
    }

    fn alloc_slot(&mut self) -> Option<u16> {
        self.free.pop()
    }

    fn handle_capsule(
        &mut self,
        header: &[u8],
        layout: &PduLayout,
        nvmf: &mut PollGroup,
        cx: &mut TaskContext,
    ) -> Result<(), ConnError> {
        let cmd =
            Command::parse(&header[8..]).expect("a validated CapsuleCmd header holds a command");
        let cid = cmd.cid.get();
        if self.cid_map[cid as usize] != 0 {
            self.reclaim_abandoned_aer(cid, nvmf, cx);
        }
        if self.cid_map[cid as usize] != 0 {
            return Err(self.terminate_with(
                fes::INVALID_HEADER_FIELD,
                10,
                header,
                &format!("command id {cid} already in use"),
            ));
        }
        let Some(slot) = self.alloc_slot() else {
            return Err(self.terminate_with(
                fes::PDU_SEQUENCE_ERROR,
                0,
                header,
                "more commands than the queue holds",
            ));
        };
        self.cid_map[cid as usize] = slot + 1;
        let s = &mut self.slots[slot as usize];
        *s = CmdSlot {
            state: SlotState::Receiving,
            cmd,
            plan: None,
            buf: None,
            received: 0,
        };
        let icd = layout.data_len;
        let digest = (layout.data_digest).then(Crc32c::new);
        // The NVMe layer may refuse the command before any data moves (e.g. I/O before Connect),
        // so an unconnected peer cannot make us send R2Ts or tie up buffers.
        let planned = nvmf
            .admit(self.id, &cmd)
            .and_then(|()| plan_data(&cmd, icd, &self.limits()));
        match planned {
            Err(status) => {
                if icd > 0 || digest.is_some() {
                    self.rx_data = Some(RxData {
                        slot,
                        kind: RxKind::Discard,
                        offset: 0,
                        remaining: icd as usize,
                        digest,
                    });
                }
                let resp = nvmf.reject(self.id, slot, &cmd, status, cx);
                self.queue_response(resp);
            }
            Ok(plan) => {
                self.slots[slot as usize].plan = Some(plan);
                match plan {
                    DataPlan::InCapsule { len } => {
                        // No buffer: the slot waits and `on_readable` pauses (`resume_rx`).
                        let buf = cx.get_buffer(len as usize);
                        let s = &mut self.slots[slot as usize];
                        if buf.is_none() {
                            s.state = SlotState::AwaitBuffer;
                        }
                        s.buf = buf;
                        self.rx_data = Some(RxData {
                            slot,
                            kind: RxKind::CapsuleData,
                            offset: 0,
                            remaining: len as usize,
                            digest,
                        });
                    }
                    DataPlan::FromHost { .. } | DataPlan::ToHost { .. } => {
                        self.slots[slot as usize].state = SlotState::AwaitBuffer;
                        if !self.start_data_phase(slot, nvmf, cx) {
                            self.waiting_buffer.push_back(slot);
                        }
                    }
                    DataPlan::None => self.execute(slot, nvmf, cx),
                }
            }
        }
        Ok(())
    }

    /// A new command reuses the CID of an outstanding command: if that command is an AER the host
    /// abandoned (see [`PollGroup::forget_aer`]), free its slot so the new command can go on.
    fn reclaim_abandoned_aer(&mut self, cid: u16, nvmf: &mut PollGroup, cx: &mut TaskContext) {
        let slot = self.cid_map[cid as usize] - 1;
        if self.slots[slot as usize].state != SlotState::Executing {
            return;
        }
        if nvmf.forget_aer(self.id, cid) == Some(slot) {
            log::info!(
                "{}: command id {cid} reuses an outstanding AER's: the host abandoned that AER",
                self.peer
            );
            self.release(slot, cx);
        }
    }

    /// Gives a waiting command its buffer: sends the R2T (writes) or executes (reads). False when
    /// the pool is still empty.
    fn start_data_phase(&mut self, slot: u16, nvmf: &mut PollGroup, cx: &mut TaskContext) -> bool {
        let s = &mut self.slots[slot as usize];
        let plan = s.plan.expect("planned");
        if matches!(plan, DataPlan::FromHost { .. }) && !r2t_may_take(cx, plan.len() as usize) {
            return false;
        }
        let Some(buf) = cx.get_buffer(plan.len() as usize) else {
            return false;
        };
        s.buf = Some(buf);
        match plan {
            DataPlan::FromHost { len } => {
                s.state = SlotState::AwaitH2C;
                let cid = s.cmd.cid.get();
                let mut bytes = [0u8; INLINE];
                let n = encode_r2t(cid, slot, 0, len, self.digests.header, &mut bytes)
                    .expect("R2T fits");
                self.tx.push_back(TxItem::Inline {
                    bytes,
                    len: n as u8,
                });
            }
            _ => {
                self.read_bytes = self.read_bytes.saturating_add(plan.len());
                self.execute(slot, nvmf, cx)
            }
        }
        true
    }

    /// Retries commands waiting for a buffer, oldest first, then a paused receive side (whose
    /// bytes may all be in staging already, so no socket event would wake it).
    pub fn retry_waiting(
        &mut self,
        nvmf: &mut PollGroup,
        cx: &mut TaskContext,
    ) -> Result<bool, ConnError> {
        let mut progress = false;
        while let Some(&slot) = self.waiting_buffer.front() {
            if !self.start_data_phase(slot, nvmf, cx) {
                break;
            }
            self.waiting_buffer.pop_front();
            progress = true;
        }
        if self.rx_paused() && self.resume_rx(cx) {
            progress |= self.on_readable(nvmf, cx)?;
        }
        Ok(progress)
    }

    fn handle_h2c(&mut self, header: &[u8], layout: &PduLayout) -> Result<(), ConnError> {
        let Ok(dh) = DataHeader::parse(header) else {
            return Err(self.terminate_with(
                fes::INVALID_HEADER_FIELD,
                0,
                header,
                "short H2CData header",
            ));
        };
        let cid = dh.cccid.get();
        let slot = self.cid_map[cid as usize].wrapping_sub(1);
        let ok_slot = self
            .slots
            .get(slot as usize)
            .is_some_and(|s| s.state == SlotState::AwaitH2C);
        if !ok_slot {
            return Err(self.terminate_with(
                fes::INVALID_HEADER_FIELD,
                8,
                header,
                &format!("H2CData for unknown command {cid}"),
            ));
        }
        if dh.ttag.get() != slot {
            return Err(self.terminate_with(
                fes::INVALID_HEADER_FIELD,
                DataHeader::TTAG_OFFSET,
                header,
                "H2CData with a wrong transfer tag",
            ));
        }
        let s = &self.slots[slot as usize];
        let total = s.plan.map_or(0, |p| p.len());
        let (datao, datal) = (dh.datao.get(), dh.datal.get());
        if datao != s.received {
            return Err(self.terminate_with(
                fes::DATA_OUT_OF_RANGE,
                DataHeader::DATAO_OFFSET,
                header,
                "H2CData out of order",
            ));
        }
        if datal == 0 || datal != layout.data_len || datal > self.opts.max_h2c_data {
            return Err(self.terminate_with(
                fes::DATA_LIMIT_EXCEEDED,
                DataHeader::DATAL_OFFSET,
                header,
                "H2CData length invalid",
            ));
        }
        if datao as u64 + datal as u64 > total as u64 {
            return Err(self.terminate_with(
                fes::DATA_OUT_OF_RANGE,
                DataHeader::DATAL_OFFSET,
                header,
                "H2CData beyond the R2T",
            ));
        }
        self.rx_data = Some(RxData {
            slot,
            kind: RxKind::H2CData,
            offset: datao as usize,
            remaining: datal as usize,
            digest: layout.data_digest.then(Crc32c::new),
        });
        Ok(())
    }

    fn execute(&mut self, slot: u16, nvmf: &mut PollGroup, cx: &mut TaskContext) {
        let s = &mut self.slots[slot as usize];
        s.state = SlotState::Executing;
        let req = Request {
            slot,
            cmd: s.cmd,
            plan: s.plan.unwrap_or(DataPlan::None),
            buf: s.buf.take(),
        };
        if let Exec::Done(resp) = nvmf.execute(self.id, req, cx) {
            self.queue_response(resp);
        }
    }

    /// Queues a command's response: its data (C2HData) if any, then the completion unless the
    /// last data PDU carries SUCCESS.
    pub fn queue_response(&mut self, resp: Response) {
        let slot = resp.slot;
        let Some(s) = self.slots.get_mut(slot as usize) else {
            debug_assert!(false, "response for unknown slot {slot}");
            return;
        };
        s.state = SlotState::Sending;
        s.buf = resp.buf;
        let cid = resp.cqe.cid.get();
        let with_data = resp.data_len > 0 && s.buf.is_some();
        let elide = with_data && resp.may_elide_completion;
        if with_data {
            let mut bytes = [0u8; INLINE];
            let flags = C2hDataFlags {
                last: true,
                success: elide,
            };
            let n = encode_c2h_data(
                cid,
                0,
                resp.data_len,
                flags,
                self.digests,
                self.hpda,
                &mut bytes,
            )
            .expect("C2HData header fits");
            self.tx.push_back(TxItem::Inline {
                bytes,
                len: n as u8,
            });
            self.tx.push_back(TxItem::Data {
                slot,
                len: resp.data_len,
            });
            if self.digests.data {
                let buf = s.buf.as_ref().expect("checked above");
                let mut d = Crc32c::new();
                d.update(&buf.as_slice()[..resp.data_len as usize]);
                let mut bytes = [0u8; INLINE];
                bytes[..DIGEST_LEN].copy_from_slice(&d.to_le_bytes());
                self.tx.push_back(TxItem::Inline {
                    bytes,
                    len: DIGEST_LEN as u8,
                });
            }
        }
        if !elide {
            let mut bytes = [0u8; INLINE];
            let n = encode_capsule_resp(&resp.cqe, self.digests.header, &mut bytes)
                .expect("CapsuleResp fits");
            self.tx.push_back(TxItem::Inline {
                bytes,
                len: n as u8,
            });
        }
        self.tx.push_back(TxItem::Release { slot });
    }

    fn release(&mut self, slot: u16, cx: &mut TaskContext) {
        let s = &mut self.slots[slot as usize];
        if let Some(buf) = s.buf.take() {
            cx.put_buffer(buf);
        }
        let cid = s.cmd.cid.get();
        s.state = SlotState::Free;
        s.plan = None;
        if self.cid_map[cid as usize] == slot + 1 {
            self.cid_map[cid as usize] = 0;
        }
        self.free.push(slot);
    }

    /// Writes queued output. True when everything went out.
    pub fn flush(&mut self, cx: &mut TaskContext) -> Result<bool, ConnError> {
        loop {
            while let Some(TxItem::Release { slot }) = self.tx.front() {
                let slot = *slot;
                self.tx.pop_front();
                self.release(slot, cx);
            }
            if self.tx.is_empty() {
                return Ok(true);
            }
            let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
            let mut count = 0;
            for (i, item) in self.tx.iter().enumerate() {
                if count == MAX_IOVECS {
                    break;
                }
                let bytes: &[u8] = match item {
                    TxItem::Inline { bytes, len } => &bytes[..*len as usize],
                    TxItem::Owned(v) => v,
                    TxItem::Data { slot, len } => {
                        let buf = self.slots[*slot as usize]
                            .buf
                            .as_ref()
                            .expect("sending slot holds its data");
                        &buf.as_slice()[..*len as usize]
                    }
                    TxItem::Release { .. } => continue,
                };
                let bytes = if i == 0 {
                    &bytes[self.tx_front_done..]
                } else {
                    bytes
                };
                slices[count] = IoSlice::new(bytes);
                count += 1;
            }
            let written = match self.stream.write_vectored(&slices[..count]) {
                Ok(0) => return Err(ConnError::Gone("connection closed while sending".into())),
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(ConnError::Gone(format!("send failed: {e}"))),
            };
            self.advance(written, cx);
        }
    }

    fn advance(&mut self, mut written: usize, cx: &mut TaskContext) {
        while let Some(front) = self.tx.front() {
            if let TxItem::Release { slot } = front {
                let slot = *slot;
                self.tx.pop_front();
                self.release(slot, cx);
                continue;
            }
            let left = front.len() - self.tx_front_done;
            if written < left {
                self.tx_front_done += written;
                return;
            }
            written -= left;
            self.tx_front_done = 0;
            self.tx.pop_front();
            if written == 0 {
                // Release markers right behind a finished item can go now.
                while let Some(TxItem::Release { slot }) = self.tx.front() {
                    let slot = *slot;
                    self.tx.pop_front();
                    self.release(slot, cx);
                }
                return;
            }
        }
    }

    /// Queues a C2HTermReq for a PDU error and marks the connection for closing.
    fn terminate(&mut self, e: &PduError) -> ConnError {
        let staged: Vec<u8> = self.staged().iter().take(128).copied().collect();
        self.terminate_with(e.fes(), e.fei(), &staged, &e.to_string())
    }

    fn terminate_with(
        &mut self,
        fes_value: u16,
        fei: u32,
        offending: &[u8],
        why: &str,
    ) -> ConnError {
        log::warn!(
            "{}: terminating connection: {why} (FES {fes_value:#x}, FEI {fei})",
            self.peer
        );
        let mut out = vec![0u8; ferrite_nvme::tcp::TERM_REQ_MAX_PLEN as usize];
        let header = &offending[..offending.len().min(ferrite_nvme::tcp::TERM_REQ_MAX_DATA)];
        if let Ok(n) = encode_term_req(Direction::FromController, fes_value, fei, header, &mut out)
        {
            out.truncate(n);
            self.tx.push_back(TxItem::Owned(out));
        }
        self.state = ConnState::Terminating;
        self.rx_data = None;
        ConnError::Terminated(why.to_string())
    }

    /// Returns every buffer this connection holds (not those lent to the NVMe layer).
    pub fn release_all(&mut self, cx: &mut TaskContext) {
        for s in &mut self.slots {
            if let Some(buf) = s.buf.take() {
                cx.put_buffer(buf);
            }
        }
        self.tx.clear();
    }
}

/// Whether an R2T may take a buffer of `len` bytes now: only while more than
/// 1/[`R2T_RESERVE_DIVISOR`] of its pool is free.
fn r2t_may_take(cx: &mut TaskContext, len: usize) -> bool {
    let pool = if len <= cx.small_pool().buf_size() {
        cx.small_pool()
    } else {
        cx.large_pool()
    };
    let stats = pool.stats();
    stats.free > stats.capacity / R2T_RESERVE_DIVISOR
}
