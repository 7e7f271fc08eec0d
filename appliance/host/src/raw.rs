//! A raw NVMe/TCP client for bad-input tests: send any bytes or
//! hand-built PDUs, read back whatever comes, PDU by PDU, with timeouts.
//!
//! ```no_run
//! # use ferrite_host::raw::{RawConnection, RawEvent};
//! # use std::time::Duration;
//! # fn main() -> ferrite_host::Result<()> {
//! let addr: std::net::SocketAddr = ([127, 0, 0, 1], 4420).into();
//! let mut raw = RawConnection::connect(addr, Duration::from_secs(1))?;
//! raw.send(&[0xEE, 0, 8, 0, 8, 0, 0, 0])?; // unknown PDU type
//! match raw.recv(Duration::from_secs(1))? {
//!     RawEvent::Pdu(p) => assert!(p.term_req().is_some()),
//!     RawEvent::Closed { .. } | RawEvent::TimedOut => {}
//! }
//! # Ok(()) }
//! ```

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use ferrite_nvme::digest::crc32c;
use ferrite_nvme::fabrics::{ConnectCommand, ConnectData, CNTLID_DYNAMIC};
use ferrite_nvme::tcp::{
    encode_capsule_cmd, encode_h2c_data, encode_icreq, CapsuleRespPdu, CommonHeader, DataHeader,
    Digests, ICResp, PduType, R2tPdu, TermReqHeader,
};
use ferrite_nvme::{Command, Completion, SglDescriptor};
use zerocopy::IntoBytes;

use crate::error::{HostError, Result, Violation};
use crate::qpair::connect_tcp;

/// Largest PLEN accepted before the stream is declared garbage.
const MAX_PLEN: u32 = 64 * 1024 * 1024;

/// One PDU as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawPdu {
    /// Its common header.
    pub header: CommonHeader,
    /// Its type, when known.
    pub pdu_type: Option<PduType>,
    /// Every byte of it, header included.
    pub bytes: Vec<u8>,
}

impl RawPdu {
    /// (FES, FEI) of a C2HTermReq.
    pub fn term_req(&self) -> Option<(u16, u32)> {
        if self.pdu_type != Some(PduType::C2HTermReq) {
            return None;
        }
        let t = TermReqHeader::parse(&self.bytes).ok()?;
        Some((t.fes.get(), t.fei.get()))
    }

    /// The CQE of a CapsuleResp.
    pub fn capsule_resp(&self) -> Option<Completion> {
        if self.pdu_type != Some(PduType::CapsuleResp) {
            return None;
        }
        CapsuleRespPdu::parse(&self.bytes).ok().map(|p| p.cqe)
    }

    /// The ICResp.
    pub fn icresp(&self) -> Option<ICResp> {
        if self.pdu_type != Some(PduType::ICResp) {
            return None;
        }
        ICResp::parse(&self.bytes).ok()
    }

    /// An R2T.
    pub fn r2t(&self) -> Option<R2tPdu> {
        if self.pdu_type != Some(PduType::R2T) {
            return None;
        }
        R2tPdu::parse(&self.bytes).ok()
    }

    /// A C2HData header and its data (digests not checked, padding skipped).
    pub fn c2h_data(&self) -> Option<(DataHeader, &[u8])> {
        if self.pdu_type != Some(PduType::C2HData) {
            return None;
        }
        let h = DataHeader::parse(&self.bytes).ok()?;
        let start = usize::from(h.ch.pdo);
        let data = self.bytes.get(start..start + h.datal.get() as usize)?;
        Some((h, data))
    }
}

/// What [`RawConnection::recv`] saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawEvent {
    /// A whole PDU.
    Pdu(RawPdu),
    /// The target closed (or reset) the connection; `trailing` holds bytes
    /// of an incomplete PDU received before that.
    Closed {
        /// Bytes of a partial PDU.
        trailing: Vec<u8>,
    },
    /// Nothing complete arrived in time.
    TimedOut,
}

impl RawEvent {
    /// The CQE of a CapsuleResp for command `cid`; otherwise what came instead, described.
    pub fn completion_of(&self, cid: u16) -> std::result::Result<Completion, String> {
        match self {
            RawEvent::Pdu(p) => match p.capsule_resp() {
                Some(cqe) if cqe.cid() == cid => Ok(cqe),
                Some(cqe) => Err(format!(
                    "a CapsuleResp for cid {} instead of {cid}",
                    cqe.cid()
                )),
                None => Err(format!("expected a CapsuleResp, got {p:?}")),
            },
            other => Err(format!("expected a CapsuleResp, got {other:?}")),
        }
    }
}

/// A blocking connection that sends whatever it is told to.
#[derive(Debug)]
pub struct RawConnection {
    stream: TcpStream,
    buf: Vec<u8>,
    closed: bool,
    /// Digests used by the PDU-building helpers (set from the ICResp by [`RawConnection::handshake`]).
    pub digests: Digests,
    /// Controller data alignment used by the helpers.
    pub cpda: u8,
}

impl RawConnection {
    /// Opens the TCP connection; nothing is sent.
    pub fn connect(addr: SocketAddr, timeout: Duration) -> Result<RawConnection> {
        let stream = connect_tcp(addr, timeout)?;
        stream.set_nodelay(true).map_err(HostError::from_io)?;
        Ok(RawConnection {
            stream,
            buf: Vec::new(),
            closed: false,
            digests: Digests::default(),
            cpda: 0,
        })
    }

    /// Sends raw bytes.
    pub fn send(&mut self, bytes: &[u8]) -> Result<()> {
        self.stream.write_all(bytes).map_err(HostError::from_io)
    }

    /// Half-closes the sending side (the target sees end of stream).
    pub fn shutdown_write(&mut self) -> Result<()> {
        self.stream
            .shutdown(Shutdown::Write)
            .map_err(HostError::from_io)
    }

    /// Reads the next whole PDU, or reports a close or a timeout.
    pub fn recv(&mut self, timeout: Duration) -> Result<RawEvent> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(pdu) = self.take_pdu()? {
                return Ok(RawEvent::Pdu(pdu));
            }
            if self.closed {
                return Ok(RawEvent::Closed {
                    trailing: std::mem::take(&mut self.buf),
                });
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(RawEvent::TimedOut);
            }
            self.fill(deadline - now)?;
        }
    }

    /// Reads PDUs until one that is not a C2HData/R2T, returning it with the
    /// C2H data seen on the way (concatenated).
    pub fn recv_skipping_data(&mut self, timeout: Duration) -> Result<(RawEvent, Vec<u8>)> {
        let mut data = Vec::new();
        loop {
            match self.recv(timeout)? {
                RawEvent::Pdu(p) if p.pdu_type == Some(PduType::C2HData) => {
                    if let Some((_, d)) = p.c2h_data() {
                        data.extend_from_slice(d);
                    }
                }
                other => return Ok((other, data)),
            }
        }
    }

    /// Waits up to `timeout` for the target to close the connection,
    /// discarding PDUs. True when it closed.
    pub fn wait_closed(&mut self, timeout: Duration) -> Result<bool> {
        let deadline = Instant::now() + timeout;
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Ok(false);
            }
            match self.recv(deadline - now)? {
                RawEvent::Closed { .. } => return Ok(true),
                RawEvent::TimedOut => return Ok(false),
                RawEvent::Pdu(_) => {}
            }
        }
    }

    fn take_pdu(&mut self) -> Result<Option<RawPdu>> {
        if self.buf.len() < CommonHeader::SIZE {
            return Ok(None);
        }
        let (header, _) = zerocopy::FromBytes::read_from_prefix(&self.buf[..])
            .map_err(|_| HostError::InvalidArgument("short header".into()))?;
        let header: CommonHeader = header;
        let plen = header.plen();
        if !(CommonHeader::SIZE as u32..=MAX_PLEN).contains(&plen) {
            return Err(Violation::Pdu(ferrite_nvme::tcp::PduError::InvalidField {
                field: "plen",
                offset: 4,
                value: plen,
            })
            .into());
        }
        let plen = plen as usize;
        if self.buf.len() < plen {
            return Ok(None);
        }
        let bytes: Vec<u8> = self.buf.drain(..plen).collect();
        Ok(Some(RawPdu {
            header,
            pdu_type: PduType::from_u8(header.pdu_type),
            bytes,
        }))
    }

    fn fill(&mut self, timeout: Duration) -> Result<()> {
        self.stream
            .set_read_timeout(Some(timeout.max(Duration::from_millis(1))))
            .map_err(HostError::from_io)?;
        let mut chunk = [0u8; 64 * 1024];
        match self.stream.read(&mut chunk) {
            Ok(0) => self.closed = true,
            Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted
                ) =>
            {
                self.closed = true
            }
            Err(e) => return Err(HostError::from_io(e)),
        }
        Ok(())
    }

    /// Sends an ICReq and waits for the ICResp; the helpers then use its digests and CPDA.
    pub fn handshake(&mut self, digests: Digests, timeout: Duration) -> Result<ICResp> {
        let mut b = [0u8; 128];
        encode_icreq(0, digests, 0, &mut b)?;
        self.send(&b)?;
        match self.recv(timeout)? {
            RawEvent::Pdu(p) => {
                let resp = p.icresp().ok_or(Violation::Unexpected {
                    pdu_type: p.pdu_type.unwrap_or(PduType::ICResp),
                    state: "awaiting ICResp",
                })?;
                self.digests = Digests::from_dgst_byte(resp.dgst);
                self.cpda = resp.cpda;
                Ok(resp)
            }
            RawEvent::Closed { .. } => Err(HostError::ConnectionClosed),
            RawEvent::TimedOut => Err(HostError::Timeout {
                what: "ICResp",
                after: timeout,
            }),
        }
    }

    /// Builds a CapsuleCmd PDU with `data` in-capsule (digests per `self.digests`).
    pub fn capsule_bytes(&self, cmd: &Command, data: &[u8]) -> Result<Vec<u8>> {
        let mut hdr = [0u8; 256];
        let n = encode_capsule_cmd(cmd, data.len(), self.digests, self.cpda, &mut hdr)?;
        let mut pdu = hdr[..n].to_vec();
        pdu.extend_from_slice(data);
        if self.digests.data && !data.is_empty() {
            pdu.extend_from_slice(&crc32c(data).to_le_bytes());
        }
        Ok(pdu)
    }

    /// Sends a CapsuleCmd with `data` in-capsule.
    pub fn send_capsule(&mut self, cmd: &Command, data: &[u8]) -> Result<()> {
        let pdu = self.capsule_bytes(cmd, data)?;
        self.send(&pdu)
    }

    /// Builds an H2CData PDU.
    pub fn h2c_bytes(
        &self,
        cid: u16,
        ttag: u16,
        datao: u32,
        data: &[u8],
        last: bool,
    ) -> Result<Vec<u8>> {
        let mut hdr = [0u8; 256];
        let n = encode_h2c_data(
            cid,
            ttag,
            datao,
            data.len() as u32,
            last,
            self.digests,
            self.cpda,
            &mut hdr,
        )?;
        let mut pdu = hdr[..n].to_vec();
        pdu.extend_from_slice(data);
        if self.digests.data {
            pdu.extend_from_slice(&crc32c(data).to_le_bytes());
        }
        Ok(pdu)
    }

    /// Sends a Fabrics Connect (cid 0) for `qid` and returns the first PDU back.
    #[allow(clippy::too_many_arguments)]
    pub fn send_connect(
        &mut self,
        qid: u16,
        sqsize: u16,
        cntlid: u16,
        subnqn: &str,
        hostnqn: &str,
        hostid: [u8; 16],
        timeout: Duration,
    ) -> Result<RawEvent> {
        let cmd = ConnectCommand {
            recfmt: 0,
            qid,
            sqsize,
            cattr: 0,
            kato: if qid == 0 { 30_000 } else { 0 },
        }
        .to_command(0);
        let data = ConnectData::new(hostid, cntlid, subnqn, hostnqn)?;
        self.send_capsule(&cmd, data.as_bytes())?;
        self.recv(timeout)
    }

    /// Handshake plus an admin Connect (dynamic controller); returns the Connect CQE.
    pub fn connect_admin(
        &mut self,
        subnqn: &str,
        hostnqn: &str,
        hostid: [u8; 16],
        timeout: Duration,
    ) -> Result<Completion> {
        self.handshake(Digests::default(), timeout)?;
        match self.send_connect(0, 31, CNTLID_DYNAMIC, subnqn, hostnqn, hostid, timeout)? {
            RawEvent::Pdu(p) => p.capsule_resp().ok_or_else(|| match p.term_req() {
                Some((fes, fei)) => HostError::TermReq { fes, fei },
                None => Violation::Unexpected {
                    pdu_type: p.pdu_type.unwrap_or(PduType::CapsuleResp),
                    state: "awaiting the Connect response",
                }
                .into(),
            }),
            RawEvent::Closed { .. } => Err(HostError::ConnectionClosed),
            RawEvent::TimedOut => Err(HostError::Timeout {
                what: "the Connect response",
                after: timeout,
            }),
        }
    }

    /// A command with a transport SGL of `len` bytes (for hand-made reads/writes).
    pub fn with_transport_sgl(mut cmd: Command, len: u32) -> Command {
        cmd.set_psdt(ferrite_nvme::command::PSDT_SGL_MPTR_CONTIGUOUS);
        cmd.dptr = SglDescriptor::transport(len);
        cmd
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake_target::{FakeConfig, FakeTarget};
    use ferrite_nvme::command::opcode;
    use ferrite_nvme::io::ReadWrite;
    use ferrite_nvme::tcp::fes;
    use ferrite_nvme::Status;

    const T: Duration = Duration::from_secs(5);
    const NQN: &str = "nqn.2024-01.io.ferrite:raw";

    #[test]
    fn unknown_pdu_type_gets_term_req_then_close() {
        let t = FakeTarget::start(FakeConfig::default());
        let mut raw = RawConnection::connect(t.addr, T).expect("connect");
        raw.handshake(Digests::default(), T).expect("icresp");
        raw.send(&[0xEE, 0, 8, 0, 8, 0, 0, 0]).expect("send");
        match raw.recv(T).expect("recv") {
            RawEvent::Pdu(p) => {
                let (f, _) = p.term_req().expect("term req");
                assert_eq!(f, fes::INVALID_HEADER_FIELD);
                assert_eq!(&p.bytes[24..32], &[0xEE, 0, 8, 0, 8, 0, 0, 0]);
            }
            other => panic!("{other:?}"),
        }
        assert!(raw.wait_closed(T).expect("recv"));
    }

    #[test]
    fn bad_header_digest_is_terminated() {
        let t = FakeTarget::start(FakeConfig::default());
        let mut raw = RawConnection::connect(t.addr, T).expect("connect");
        let resp = raw.handshake(Digests::new(true, false), T).expect("icresp");
        assert_eq!(resp.dgst & 1, 1);
        let mut pdu = raw
            .capsule_bytes(&Command::new(opcode::admin::KEEP_ALIVE, 1), &[])
            .expect("build");
        pdu[72] ^= 0xFF; // the header digest
        raw.send(&pdu).expect("send");
        match raw.recv(T).expect("recv") {
            RawEvent::Pdu(p) => {
                assert_eq!(p.term_req().map(|t| t.0), Some(fes::HEADER_DIGEST_ERROR))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn hand_built_commands_and_r2t_flow() {
        let t = FakeTarget::start(FakeConfig {
            r2t_chunk: 1024,
            ..FakeConfig::default()
        });
        let mut raw = RawConnection::connect(t.addr, T).expect("connect");
        let cqe = raw
            .connect_admin(NQN, NQN, [2; 16], T)
            .expect("admin connect");
        assert!(cqe.status().is_success());
        let mut io = RawConnection::connect(t.addr, T).expect("connect");
        io.handshake(Digests::default(), T).expect("icresp");
        let ev = io
            .send_connect(1, 15, cqe.result() as u16, NQN, NQN, [2; 16], T)
            .expect("io connect");
        let RawEvent::Pdu(p) = ev else {
            panic!("{ev:?}")
        };
        assert!(p.capsule_resp().expect("resp").status().is_success());
        // A 2 KiB write by R2T: the target asks twice, 1 KiB each.
        let rw = ReadWrite {
            nsid: 1,
            slba: 0,
            nlb: 3,
            ..ReadWrite::default()
        };
        let cmd = RawConnection::with_transport_sgl(rw.to_command(opcode::io::WRITE, 5), 2048);
        io.send_capsule(&cmd, &[]).expect("send");
        for i in 0..2u32 {
            let RawEvent::Pdu(p) = io.recv(T).expect("recv") else {
                panic!("no r2t")
            };
            let r = p.r2t().expect("r2t");
            assert_eq!((r.r2to.get(), r.r2tl.get()), (i * 1024, 1024));
            let pdu = io
                .h2c_bytes(5, r.ttag.get(), i * 1024, &[i as u8 + 1; 1024], true)
                .expect("build");
            io.send(&pdu).expect("send");
        }
        let RawEvent::Pdu(p) = io.recv(T).expect("recv") else {
            panic!("no resp")
        };
        assert_eq!(p.capsule_resp().expect("resp").status(), Status::SUCCESS);
        assert!(t.disk()[..1024].iter().all(|&b| b == 1));
        assert!(t.disk()[1024..2048].iter().all(|&b| b == 2));
        // Read it back by hand.
        let cmd = RawConnection::with_transport_sgl(rw.to_command(opcode::io::READ, 6), 2048);
        io.send_capsule(&cmd, &[]).expect("send");
        let (ev, data) = io.recv_skipping_data(T).expect("recv");
        let RawEvent::Pdu(p) = ev else {
            panic!("{ev:?}")
        };
        assert!(p.capsule_resp().expect("resp").status().is_success());
        assert_eq!(data.len(), 2048);
        assert_eq!(data[1500], 2);
        // Nothing more comes; then a close is seen.
        assert_eq!(
            io.recv(Duration::from_millis(50)).expect("recv"),
            RawEvent::TimedOut
        );
        drop(t);
    }

    #[test]
    fn connect_refusal_is_visible_raw() {
        let t = FakeTarget::start(FakeConfig {
            allowed_host: Some("nqn.2024-01.io.ferrite:other".into()),
            ..FakeConfig::default()
        });
        let mut raw = RawConnection::connect(t.addr, T).expect("connect");
        let cqe = raw.connect_admin(NQN, NQN, [2; 16], T).expect("resp");
        assert_eq!(cqe.status().code(), Status::CONNECT_INVALID_HOST);
    }
}
