//! A tiny scripted NVMe/TCP target for unit tests: one thread per
//! connection, blocking sockets on loopback, a RAM namespace, and
//! switchable misbehaviour so tests can check what the host detects.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use ferrite_nvme::admin::{Features, GetLogPage, Identify};
use ferrite_nvme::command::opcode;
use ferrite_nvme::digest::crc32c;
use ferrite_nvme::fabrics::{
    property, shn, shst, Cap, Cc, ConnectCommand, ConnectData, Csts, PropertyGet, PropertySet,
    CAP_CSS_NVM, VS_1_3,
};
use ferrite_nvme::identify::{
    encode_ns_list, IdentifyController, IdentifyNamespace, LbaFormat, NsDescriptorList,
    IDENTIFY_DATA_SIZE,
};
use ferrite_nvme::io::{DatasetManagement, DsmRange, ReadWrite};
use ferrite_nvme::tcp::{
    encode_c2h_data, encode_capsule_resp, encode_icresp, encode_r2t, encode_term_req, fes,
    C2hDataFlags, CapsuleCmdHeader, CommonHeader, DataHeader, Digests, Direction, ICReq, PduType,
    DDGSTF, DIGEST_LEN, HDGSTF,
};
use ferrite_nvme::{Command, Completion, SglDescriptor, Status};

use crate::discovery::DiscoveryEntry;

/// Ways the fake target breaks the protocol on purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Misbehave {
    None,
    /// Flip a bit in the data digest of every C2HData.
    CorruptC2hDataDigest,
    /// Flip a bit in the header digest of every CapsuleResp.
    CorruptRespHeaderDigest,
    /// Answer Reads with a C2HTermReq (Data Transfer Out of Range).
    TermReqOnRead,
    /// Send the first C2HData of a Read at offset 4 instead of 0.
    C2hWrongOffset,
    /// Answer I/O commands with a CapsuleResp for another cid.
    RespWrongCid,
    /// Send an R2T for a command whose data came in-capsule.
    R2tForInCapsule,
}

#[derive(Debug, Clone)]
pub(crate) struct FakeConfig {
    /// Digests the target agrees to.
    pub digests_supported: Digests,
    pub maxh2cdata: u32,
    pub cpda: u8,
    /// In-capsule data accepted on I/O queues (IOCCSZ = (this + 64) / 16).
    pub in_capsule: u32,
    /// Bytes asked for by one R2T (several per command when smaller than the write).
    pub r2t_chunk: u32,
    /// Bytes per C2HData PDU.
    pub c2h_chunk: u32,
    /// Complete reads with the C2HData SUCCESS flag.
    pub success_flag: bool,
    /// Only this host NQN may connect (None: any).
    pub allowed_host: Option<String>,
    pub block_size: u32,
    pub blocks: u64,
    pub mdts: u8,
    pub mqes: u16,
    pub discovery: Vec<DiscoveryEntry>,
    pub misbehave: Misbehave,
}

impl Default for FakeConfig {
    fn default() -> FakeConfig {
        FakeConfig {
            digests_supported: Digests::new(true, true),
            maxh2cdata: 128 * 1024,
            cpda: 0,
            in_capsule: 8192,
            r2t_chunk: 1 << 30,
            c2h_chunk: 128 * 1024,
            success_flag: false,
            allowed_host: None,
            block_size: 512,
            blocks: 4096,
            mdts: 0,
            mqes: 127,
            discovery: Vec::new(),
            misbehave: Misbehave::None,
        }
    }
}

/// Controller registers and features shared by the queues of the target.
#[derive(Debug, Default)]
struct Regs {
    cc: u32,
    features: std::collections::HashMap<u8, u32>,
}

#[derive(Debug)]
struct Shared {
    cfg: FakeConfig,
    disk: Mutex<Vec<u8>>,
    regs: Mutex<Regs>,
    stop: AtomicBool,
    /// Commands the target saw (all queues).
    commands: AtomicU32,
    /// Last Connect seen: (qid, sqsize, cattr, kato).
    last_connect: Mutex<Option<ConnectCommand>>,
}

/// A running fake target; stops accepting when dropped.
#[derive(Debug)]
pub(crate) struct FakeTarget {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl FakeTarget {
    pub fn start(cfg: FakeConfig) -> FakeTarget {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let addr = listener.local_addr().expect("bound address");
        let disk = vec![0u8; (cfg.blocks * u64::from(cfg.block_size)) as usize];
        let shared = Arc::new(Shared {
            cfg,
            disk: Mutex::new(disk),
            regs: Mutex::new(Regs::default()),
            stop: AtomicBool::new(false),
            commands: AtomicU32::new(0),
            last_connect: Mutex::new(None),
        });
        let sh = shared.clone();
        let accept = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if sh.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { break };
                let _ = conn.set_nodelay(true);
                let sh = sh.clone();
                std::thread::spawn(move || {
                    let mut c = Conn::new(conn, sh);
                    // Errors end the connection; tests look at what the host saw.
                    let _ = c.run();
                });
            }
        });
        FakeTarget {
            addr,
            shared,
            accept: Some(accept),
        }
    }

    pub fn disk(&self) -> std::sync::MutexGuard<'_, Vec<u8>> {
        self.shared.disk.lock().expect("disk lock")
    }

    pub fn commands_seen(&self) -> u32 {
        self.shared.commands.load(Ordering::SeqCst)
    }

    pub fn last_connect(&self) -> Option<ConnectCommand> {
        *self.shared.last_connect.lock().expect("lock")
    }
}

impl Drop for FakeTarget {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

type TResult<T> = Result<T, String>;

struct Conn {
    s: TcpStream,
    sh: Arc<Shared>,
    dg: Digests,
    hpda: u8,
    qid: u16,
    ttag: u16,
    /// Commands that arrived while an R2T transfer was in progress.
    deferred: std::collections::VecDeque<(Command, Vec<u8>)>,
}

impl Conn {
    fn new(s: TcpStream, sh: Arc<Shared>) -> Conn {
        Conn {
            s,
            sh,
            dg: Digests::default(),
            hpda: 0,
            qid: 0,
            ttag: 0,
            deferred: std::collections::VecDeque::new(),
        }
    }

    fn cfg(&self) -> &FakeConfig {
        &self.sh.cfg
    }

    fn read_exact(&mut self, n: usize) -> TResult<Vec<u8>> {
        let mut b = vec![0u8; n];
        self.s.read_exact(&mut b).map_err(|e| e.to_string())?;
        Ok(b)
    }

    fn send(&mut self, b: &[u8]) -> TResult<()> {
        self.s.write_all(b).map_err(|e| e.to_string())
    }

    fn term<T>(&mut self, fes_value: u16, fei: u32, offending: &[u8]) -> TResult<T> {
        let mut b = [0u8; 200];
        let n = encode_term_req(Direction::FromController, fes_value, fei, offending, &mut b)
            .map_err(|e| e.to_string())?;
        self.send(&b[..n])?;
        Err(format!("terminated with FES {fes_value}"))
    }

    /// Reads one whole PDU: (common header, all bytes).
    fn read_pdu(&mut self) -> TResult<(CommonHeader, Vec<u8>)> {
        let head = self.read_exact(8)?;
        let (ch, _) = match CommonHeader::parse(&head) {
            Ok(v) => v,
            Err(_) => return self.term(fes::INVALID_HEADER_FIELD, 0, &head),
        };
        let plen = ch.plen() as usize;
        if !(8..=16 * 1024 * 1024).contains(&plen) {
            return self.term(fes::INVALID_HEADER_FIELD, 4, &head);
        }
        let mut all = head;
        all.extend(self.read_exact(plen - 8)?);
        if ch.flags & HDGSTF != 0 && ch.pdu_type != PduType::ICReq as u8 {
            let hlen = usize::from(ch.hlen);
            let want = crc32c(&all[..hlen]);
            let got = u32::from_le_bytes(all[hlen..hlen + 4].try_into().expect("4 bytes"));
            if want != got {
                let off = all[..hlen].to_vec();
                return self.term(fes::HEADER_DIGEST_ERROR, 0, &off);
            }
        }
        Ok((ch, all))
    }

    /// Data part of a PDU with data, digest checked.
    fn pdu_data<'a>(&self, ch: &CommonHeader, all: &'a [u8]) -> TResult<&'a [u8]> {
        if ch.pdo == 0 {
            return Ok(&[]);
        }
        let dd = if ch.flags & DDGSTF != 0 {
            DIGEST_LEN
        } else {
            0
        };
        let data = &all[usize::from(ch.pdo)..all.len() - dd];
        if dd > 0 {
            let got = u32::from_le_bytes(all[all.len() - 4..].try_into().expect("4 bytes"));
            if got != crc32c(data) {
                return Err("data digest mismatch".into());
            }
        }
        Ok(data)
    }

    fn run(&mut self) -> TResult<()> {
        let icreq = self.read_exact(128)?;
        let req = ICReq::parse(&icreq).map_err(|e| e.to_string())?;
        if req.ch.pdu_type != PduType::ICReq as u8 {
            return self.term(fes::INVALID_HEADER_FIELD, 0, &icreq);
        }
        let sup = self.cfg().digests_supported;
        self.dg = Digests::new(
            req.header_digest() && sup.header,
            req.data_digest() && sup.data,
        );
        self.hpda = req.hpda;
        let mut resp = [0u8; 128];
        encode_icresp(self.cfg().cpda, self.dg, self.cfg().maxh2cdata, &mut resp)
            .map_err(|e| e.to_string())?;
        self.send(&resp)?;
        loop {
            if let Some((cmd, data)) = self.deferred.pop_front() {
                self.command(cmd, data)?;
                continue;
            }
            let (ch, all) = self.read_pdu()?;
            match PduType::from_u8(ch.pdu_type) {
                Some(PduType::CapsuleCmd) => {
                    let (cmd, data) = self.capsule(&ch, &all)?;
                    self.command(cmd, data)?;
                }
                Some(PduType::H2CTermReq) => return Err("host terminated".into()),
                _ => return self.term(fes::INVALID_HEADER_FIELD, 0, &all[..all.len().min(128)]),
            }
        }
    }

    fn capsule(&mut self, ch: &CommonHeader, all: &[u8]) -> TResult<(Command, Vec<u8>)> {
        let hdr = CapsuleCmdHeader::parse(all).map_err(|e| e.to_string())?;
        let data = self.pdu_data(ch, all)?.to_vec();
        self.sh.commands.fetch_add(1, Ordering::SeqCst);
        Ok((hdr.cmd, data))
    }

    fn respond(&mut self, cqe: Completion) -> TResult<()> {
        let mut b = [0u8; 32];
        let n = encode_capsule_resp(&cqe, self.dg.header, &mut b).map_err(|e| e.to_string())?;
        if self.cfg().misbehave == Misbehave::CorruptRespHeaderDigest && self.dg.header {
            b[24] ^= 1;
        }
        self.send(&b[..n])
    }

    fn status(&mut self, cid: u16, st: Status) -> TResult<()> {
        self.respond(Completion::new(cid, st).with_sq(0, self.qid))
    }

    /// Sends `data` as C2HData PDUs, then the completion (or the SUCCESS flag).
    fn send_read_data(&mut self, cid: u16, data: &[u8], result: u32) -> TResult<()> {
        let chunk = self.cfg().c2h_chunk.max(1) as usize;
        let mut off = 0usize;
        let success = self.cfg().success_flag && result == 0;
        while off < data.len() {
            let n = chunk.min(data.len() - off);
            let last = off + n == data.len();
            let datao =
                if self.cfg().misbehave == Misbehave::C2hWrongOffset && off == 0 && self.qid != 0 {
                    4
                } else {
                    off as u32
                };
            let mut h = [0u8; 256];
            let hl = encode_c2h_data(
                cid,
                datao,
                n as u32,
                C2hDataFlags {
                    last,
                    success: last && success,
                },
                self.dg,
                self.hpda,
                &mut h,
            )
            .map_err(|e| e.to_string())?;
            let mut pdu = h[..hl].to_vec();
            pdu.extend_from_slice(&data[off..off + n]);
            if self.dg.data {
                let mut d = crc32c(&data[off..off + n]);
                if self.cfg().misbehave == Misbehave::CorruptC2hDataDigest {
                    d ^= 1;
                }
                pdu.extend_from_slice(&d.to_le_bytes());
            }
            self.send(&pdu)?;
            off += n;
        }
        if success {
            return Ok(());
        }
        self.respond(
            Completion::new(cid, Status::SUCCESS)
                .with_result(result)
                .with_sq(0, self.qid),
        )
    }

    /// Collects write data: in-capsule, or by R2Ts of at most `r2t_chunk`.
    fn receive_write_data(&mut self, cmd: &Command, in_capsule: Vec<u8>) -> TResult<Vec<u8>> {
        let len = cmd.dptr.len() as usize;
        if cmd.dptr.id == SglDescriptor::SGL_DATA_BLOCK_OFFSET {
            if in_capsule.len() != len {
                return Err(format!(
                    "in-capsule {} bytes, sgl says {len}",
                    in_capsule.len()
                ));
            }
            if self.cfg().misbehave == Misbehave::R2tForInCapsule {
                let mut b = [0u8; 32];
                let n = encode_r2t(cmd.cid(), 0, 0, len as u32, self.dg.header, &mut b)
                    .map_err(|e| e.to_string())?;
                self.send(&b[..n])?;
            }
            return Ok(in_capsule);
        }
        let mut data = vec![0u8; len];
        let mut off = 0usize;
        while off < len {
            let want = (self.cfg().r2t_chunk as usize).min(len - off);
            self.ttag = self.ttag.wrapping_add(1);
            let ttag = self.ttag;
            let mut b = [0u8; 32];
            let n = encode_r2t(
                cmd.cid(),
                ttag,
                off as u32,
                want as u32,
                self.dg.header,
                &mut b,
            )
            .map_err(|e| e.to_string())?;
            self.send(&b[..n])?;
            let mut got = 0usize;
            while got < want {
                let (ch, all) = self.read_pdu()?;
                if ch.pdu_type == PduType::CapsuleCmd as u8 {
                    let c = self.capsule(&ch, &all)?;
                    self.deferred.push_back(c);
                    continue;
                }
                if ch.pdu_type != PduType::H2CData as u8 {
                    return self.term(fes::PDU_SEQUENCE_ERROR, 0, &all[..all.len().min(128)]);
                }
                let h = DataHeader::parse(&all).map_err(|e| e.to_string())?;
                let d = self.pdu_data(&ch, &all)?;
                if h.ttag.get() != ttag || h.cccid.get() != cmd.cid() {
                    return self.term(
                        fes::INVALID_HEADER_FIELD,
                        DataHeader::TTAG_OFFSET,
                        &all[..24],
                    );
                }
                if h.datao.get() as usize != off + got {
                    return self.term(fes::DATA_OUT_OF_RANGE, DataHeader::DATAO_OFFSET, &all[..24]);
                }
                if d.len() > self.cfg().maxh2cdata as usize || got + d.len() > want {
                    return self.term(fes::DATA_LIMIT_EXCEEDED, 0, &all[..24]);
                }
                let last = ch.flags & ferrite_nvme::tcp::DATA_LAST != 0;
                data[off + got..off + got + d.len()].copy_from_slice(d);
                got += d.len();
                if last != (got == want) {
                    return Err("LAST flag does not match the end of the R2T".into());
                }
            }
            off += want;
        }
        Ok(data)
    }

    fn command(&mut self, cmd: Command, data: Vec<u8>) -> TResult<()> {
        let cid = cmd.cid();
        if cmd.is_fabrics() {
            return self.fabrics(cmd, data);
        }
        if self.qid == 0 {
            return self.admin(cmd);
        }
        if self.cfg().misbehave == Misbehave::RespWrongCid {
            return self.status(cid.wrapping_add(100), Status::SUCCESS);
        }
        self.io(cmd, data)
    }

    fn fabrics(&mut self, cmd: Command, data: Vec<u8>) -> TResult<()> {
        let cid = cmd.cid();
        match cmd.fabrics_type() {
            Some(opcode::fabrics::CONNECT) => {
                let c = ConnectCommand::parse(&cmd);
                *self.sh.last_connect.lock().expect("lock") = Some(c);
                let d = ConnectData::parse(&data).map_err(|e| e.to_string())?;
                if let Some(allowed) = &self.cfg().allowed_host {
                    if d.hostnqn_str() != Ok(allowed.as_str()) {
                        return self.status(cid, Status::CONNECT_INVALID_HOST.with_dnr());
                    }
                }
                self.qid = c.qid;
                self.respond(
                    Completion::new(cid, Status::SUCCESS)
                        .with_result(1)
                        .with_sq(0, c.qid),
                )
            }
            Some(opcode::fabrics::PROPERTY_GET) => {
                let g = PropertyGet::parse(&cmd).map_err(|e| e.to_string())?;
                let cc = self.sh.regs.lock().expect("lock").cc;
                let value: u64 = match g.offset {
                    property::CAP => {
                        Cap::new()
                            .with_mqes(self.cfg().mqes)
                            .with_to(2)
                            .with_css(CAP_CSS_NVM)
                            .0
                    }
                    property::VS => u64::from(VS_1_3),
                    property::CC => u64::from(cc),
                    property::CSTS => {
                        let c = Cc(cc);
                        let mut s = Csts::default().with_rdy(c.en());
                        if c.shn() != shn::NONE {
                            s = s.with_shst(shst::COMPLETE);
                        }
                        u64::from(s.0)
                    }
                    _ => return self.status(cid, Status::INVALID_FIELD.with_dnr()),
                };
                self.respond(Completion::new(cid, Status::SUCCESS).with_result64(value))
            }
            Some(opcode::fabrics::PROPERTY_SET) => {
                let s = PropertySet::parse(&cmd).map_err(|e| e.to_string())?;
                if s.offset != property::CC {
                    return self.status(cid, Status::INVALID_FIELD.with_dnr());
                }
                self.sh.regs.lock().expect("lock").cc = s.value as u32;
                self.status(cid, Status::SUCCESS)
            }
            _ => self.status(cid, Status::INVALID_OPCODE.with_dnr()),
        }
    }

    fn admin(&mut self, cmd: Command) -> TResult<()> {
        let cid = cmd.cid();
        match cmd.opcode {
            opcode::admin::IDENTIFY => {
                let id = Identify::parse(&cmd);
                let mut buf = vec![0u8; IDENTIFY_DATA_SIZE];
                match id.cns {
                    0x01 => {
                        let mut c = IdentifyController::zeroed();
                        c.cntlid = 1.into();
                        c.mdts = self.cfg().mdts;
                        c.nn = 1.into();
                        c.ioccsz = ((self.cfg().in_capsule + 64) / 16).into();
                        c.iorcsz = 1.into();
                        c.cntrltype = 1;
                        use zerocopy::IntoBytes;
                        buf.copy_from_slice(c.as_bytes());
                    }
                    0x00 => {
                        if id.nsid != 1 {
                            return self.status(cid, Status::INVALID_NAMESPACE.with_dnr());
                        }
                        let mut n = IdentifyNamespace::zeroed();
                        n.nsze = self.cfg().blocks.into();
                        n.ncap = self.cfg().blocks.into();
                        let lbads = self.cfg().block_size.trailing_zeros() as u8;
                        n.set_lba_format(
                            0,
                            LbaFormat {
                                ms: 0,
                                lbads,
                                rp: 0,
                            },
                        )
                        .map_err(|e| e.to_string())?;
                        use zerocopy::IntoBytes;
                        buf.copy_from_slice(n.as_bytes());
                    }
                    0x02 => {
                        let mut out = [0u8; IDENTIFY_DATA_SIZE];
                        encode_ns_list([1u32], id.nsid, &mut out).map_err(|e| e.to_string())?;
                        buf.copy_from_slice(&out);
                    }
                    0x03 => {
                        let mut out = [0u8; IDENTIFY_DATA_SIZE];
                        NsDescriptorList::encode(None, Some([0x42; 16]), None, Some(0), &mut out);
                        buf.copy_from_slice(&out);
                    }
                    _ => return self.status(cid, Status::INVALID_FIELD.with_dnr()),
                }
                self.send_read_data(cid, &buf, 0)
            }
            opcode::admin::SET_FEATURES => {
                let f = Features::parse(&cmd);
                self.sh
                    .regs
                    .lock()
                    .expect("lock")
                    .features
                    .insert(f.fid, f.value);
                let result = if f.fid == ferrite_nvme::admin::fid::NUMBER_OF_QUEUES {
                    f.value
                } else {
                    0
                };
                self.respond(Completion::new(cid, Status::SUCCESS).with_result(result))
            }
            opcode::admin::GET_FEATURES => {
                let f = Features::parse(&cmd);
                let v = self
                    .sh
                    .regs
                    .lock()
                    .expect("lock")
                    .features
                    .get(&f.fid)
                    .copied();
                match v {
                    Some(v) => self.respond(Completion::new(cid, Status::SUCCESS).with_result(v)),
                    None => self.status(cid, Status::INVALID_FIELD.with_dnr()),
                }
            }
            opcode::admin::KEEP_ALIVE => self.status(cid, Status::SUCCESS),
            opcode::admin::GET_LOG_PAGE => {
                let g = GetLogPage::parse(&cmd);
                if g.lid != 0x70 {
                    return self.status(cid, Status::INVALID_LOG_PAGE.with_dnr());
                }
                let entries = self.cfg().discovery.clone();
                let mut log = vec![0u8; 1024 * (1 + entries.len())];
                log[0..8].copy_from_slice(&1u64.to_le_bytes());
                log[8..16].copy_from_slice(&(entries.len() as u64).to_le_bytes());
                for (i, e) in entries.iter().enumerate() {
                    e.encode(&mut log[1024 * (i + 1)..])
                        .map_err(|e| e.to_string())?;
                }
                let start = (g.lpo as usize).min(log.len());
                let mut out = vec![0u8; g.len_bytes() as usize];
                let n = out.len().min(log.len() - start);
                out[..n].copy_from_slice(&log[start..start + n]);
                self.send_read_data(cid, &out, 0)
            }
            _ => self.status(cid, Status::INVALID_OPCODE.with_dnr()),
        }
    }

    fn io(&mut self, cmd: Command, capsule: Vec<u8>) -> TResult<()> {
        let cid = cmd.cid();
        if cmd.nsid() != 1 {
            return self.status(cid, Status::INVALID_NAMESPACE.with_dnr());
        }
        let bs = self.cfg().block_size as usize;
        let rw = ReadWrite::parse(&cmd);
        let in_range = rw.end_lba().is_some_and(|end| end <= self.cfg().blocks);
        let span = rw.slba as usize * bs..(rw.slba as usize + rw.block_count() as usize) * bs;
        match cmd.opcode {
            opcode::io::READ => {
                if self.cfg().misbehave == Misbehave::TermReqOnRead {
                    return self.term(fes::DATA_OUT_OF_RANGE, 0, &[]);
                }
                if !in_range {
                    return self.status(cid, Status::LBA_OUT_OF_RANGE.with_dnr());
                }
                if cmd.dptr.len() as usize != span.len() {
                    return self.status(cid, Status::DATA_SGL_LENGTH_INVALID.with_dnr());
                }
                let data = self.sh.disk.lock().expect("disk")[span].to_vec();
                self.send_read_data(cid, &data, 0)
            }
            opcode::io::WRITE | opcode::io::COMPARE => {
                let data = self.receive_write_data(&cmd, capsule)?;
                if !in_range {
                    return self.status(cid, Status::LBA_OUT_OF_RANGE.with_dnr());
                }
                if data.len() != span.len() {
                    return self.status(cid, Status::DATA_SGL_LENGTH_INVALID.with_dnr());
                }
                let mut disk = self.sh.disk.lock().expect("disk");
                if cmd.opcode == opcode::io::COMPARE {
                    let same = disk[span] == data[..];
                    drop(disk);
                    let st = if same {
                        Status::SUCCESS
                    } else {
                        Status::COMPARE_FAILURE.with_dnr()
                    };
                    return self.status(cid, st);
                }
                disk[span].copy_from_slice(&data);
                drop(disk);
                self.status(cid, Status::SUCCESS)
            }
            opcode::io::FLUSH => self.status(cid, Status::SUCCESS),
            opcode::io::WRITE_ZEROES => {
                if !in_range {
                    return self.status(cid, Status::LBA_OUT_OF_RANGE.with_dnr());
                }
                self.sh.disk.lock().expect("disk")[span].fill(0);
                self.status(cid, Status::SUCCESS)
            }
            opcode::io::DATASET_MANAGEMENT => {
                let dsm = DatasetManagement::parse(&cmd);
                let data = self.receive_write_data(&cmd, capsule)?;
                let ranges = DsmRange::parse_list(&data, dsm.range_count())
                    .map_err(|e| e.to_string())?
                    .to_vec();
                let mut disk = self.sh.disk.lock().expect("disk");
                for r in ranges {
                    let s = r.slba.get() as usize * bs;
                    let e = s + r.nlb.get() as usize * bs;
                    if e > disk.len() {
                        drop(disk);
                        return self.status(cid, Status::LBA_OUT_OF_RANGE.with_dnr());
                    }
                    disk[s..e].fill(0);
                }
                drop(disk);
                self.status(cid, Status::SUCCESS)
            }
            _ => self.status(cid, Status::INVALID_OPCODE.with_dnr()),
        }
    }
}
