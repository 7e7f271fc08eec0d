//! Raw NVMe/TCP clients for the hostile-input and conformance tests: hand-built commands on
//! [`RawConnection`]s, and the checks on what comes back.

use std::time::Duration;

use ferrite_host::controller::uuid_hostnqn;
use ferrite_host::{Controller, RawConnection, RawEvent};
use ferrite_nvme::command::{opcode, PSDT_SGL_MPTR_CONTIGUOUS};
use ferrite_nvme::io::ReadWrite;
use ferrite_nvme::tcp::Digests;
use ferrite_nvme::{Command, Completion, SglDescriptor, Status};

use super::{pattern, Ferrited, NQN};

/// How long a raw client waits for any one answer.
pub const T: Duration = Duration::from_secs(5);

/// An enabled controller on [`NQN`] for a misbehaving host, to join raw I/O queues to.
pub struct BadHost {
    pub ctrl: Controller,
    pub uuid: [u8; 16],
}

impl BadHost {
    /// `io_queues == 0`: no Set Features (Number of Queues), so every qid up to 64 is granted.
    pub fn connect(t: &Ferrited, uuid: [u8; 16], io_queues: u16) -> BadHost {
        let mut opts = t.options().with_host_uuid(uuid);
        opts.io_queues = io_queues;
        let ctrl = Controller::connect(opts).expect("bad host's admin queue connects");
        BadHost { ctrl, uuid }
    }

    pub fn hostnqn(&self) -> String {
        uuid_hostnqn(&self.uuid)
    }

    /// A raw connection with a connected I/O queue `qid` of this controller.
    pub fn io_queue(&self, t: &Ferrited, qid: u16, digests: Digests) -> RawConnection {
        let mut r = ready(t, digests);
        let ev = r
            .send_connect(
                qid,
                31,
                self.ctrl.cntlid(),
                NQN,
                &self.hostnqn(),
                self.uuid,
                T,
            )
            .expect("send Connect");
        let cqe = completion(ev, 0, "I/O queue Connect");
        assert!(cqe.status().is_success(), "I/O Connect: {}", cqe.status());
        r
    }
}

pub fn raw(t: &Ferrited) -> RawConnection {
    RawConnection::connect(t.addr, T).expect("TCP connect")
}

pub fn ready(t: &Ferrited, digests: Digests) -> RawConnection {
    let mut r = raw(t);
    r.handshake(digests, T).expect("ICResp");
    r
}

pub fn rw(op: u8, cid: u16, slba: u64, blocks: u32) -> Command {
    ReadWrite::blocks(1, slba, blocks).to_command(op, cid)
}

pub fn with_sgl(mut cmd: Command, id: u8, address: u64, len: u32) -> Command {
    cmd.set_psdt(PSDT_SGL_MPTR_CONTIGUOUS);
    cmd.dptr = SglDescriptor::in_capsule(address, len);
    cmd.dptr.id = id;
    cmd
}

pub fn in_capsule(cmd: Command, len: u32) -> Command {
    with_sgl(cmd, SglDescriptor::SGL_DATA_BLOCK_OFFSET, 0, len)
}

pub fn transport(cmd: Command, len: u32) -> Command {
    RawConnection::with_transport_sgl(cmd, len)
}

/// The CQE in `ev`, checking its cid.
pub fn completion(ev: RawEvent, cid: u16, case: &str) -> Completion {
    ev.completion_of(cid)
        .unwrap_or_else(|e| panic!("{case}: {e}"))
}

/// Reads the response of `cid` (skipping C2H data, which is returned).
pub fn response(r: &mut RawConnection, cid: u16, case: &str) -> (Completion, Vec<u8>) {
    let (ev, data) = r.recv_skipping_data(T).expect("recv");
    (completion(ev, cid, case), data)
}

/// Sends `cmd` with in-capsule `data` and expects `want` as its status.
pub fn expect_status(r: &mut RawConnection, cmd: &Command, data: &[u8], want: Status, case: &str) {
    r.send_capsule(cmd, data).expect("send capsule");
    let (cqe, _) = response(r, cmd.cid.get(), case);
    assert_eq!(
        cqe.status().code(),
        want,
        "{case}: got {} instead of {want}",
        cqe.status()
    );
}

/// Expects a C2HTermReq with `want` = (FES, FEI) that echoes the offending PDU's common header,
/// then the target's close.
pub fn expect_term(r: &mut RawConnection, want: (u16, u32), offending: &[u8], case: &str) {
    match r.recv(T).expect("recv") {
        RawEvent::Pdu(p) => {
            assert_eq!(p.term_req(), Some(want), "{case}: {p:?}");
            let echoed = &p.bytes[24..];
            assert!(
                echoed.len() >= 8 && echoed[..8] == offending[..8],
                "{case}: the TermReq must carry the offending header, got {echoed:02x?}"
            );
        }
        other => panic!("{case}: expected a C2HTermReq, got {other:?}"),
    }
    assert!(
        r.wait_closed(T).expect("recv"),
        "{case}: the target must close after its TermReq"
    );
}

/// Writes 2 blocks in-capsule at `lba` and reads them back through C2HData: the queue is live.
pub fn raw_roundtrip(r: &mut RawConnection, lba: u64, generation: u64, case: &str) {
    let data = pattern(lba, 2, 512, generation);
    let w = in_capsule(rw(opcode::io::WRITE, 200, lba, 2), 1024);
    expect_status(r, &w, &data, Status::SUCCESS, case);
    let rd = transport(rw(opcode::io::READ, 201, lba, 2), 1024);
    r.send_capsule(&rd, &[]).expect("send read");
    let (cqe, back) = response(r, 201, case);
    assert!(cqe.status().is_success(), "{case}: read {}", cqe.status());
    assert!(back == data, "{case}: read back what was written");
}
