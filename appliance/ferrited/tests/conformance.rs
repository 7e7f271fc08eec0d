//! Protocol conformance against a real `ferrited`, each case sent as the exact command over a raw
//! NVMe/TCP connection: what a disabled controller serves, what a controller reset does to the
//! I/O queues, the reserved PSDT value, and a Read whose SGL describes more than its blocks.

mod common;

use std::time::Instant;

use common::raw::{
    completion, expect_status, in_capsule, raw, raw_roundtrip, response, rw, transport, BadHost, T,
};
use common::{free_port, pattern, ram_config, Ferrited, NQN};
use ferrite_host::controller::uuid_hostnqn;
use ferrite_host::{RawConnection, RawEvent};
use ferrite_nvme::admin::Identify;
use ferrite_nvme::command::opcode;
use ferrite_nvme::fabrics::{property, Cc, Csts, PropertyGet, PropertySet, PropertySize};
use ferrite_nvme::identify::{sgls, CNS_CONTROLLER, IDENTIFY_DATA_SIZE};
use ferrite_nvme::tcp::Digests;
use ferrite_nvme::{Command, Completion, Status};

/// Byte offset of SGLS in the Identify Controller data.
const SGLS_OFFSET: usize = 536;

/// An admin queue driven by hand: every command below is built and sent as raw bytes.
struct RawAdmin {
    r: RawConnection,
    cntlid: u16,
    uuid: [u8; 16],
    next_cid: u16,
}

impl RawAdmin {
    /// Handshake and admin Connect (dynamic controller); the controller stays disabled.
    fn connect(t: &Ferrited, uuid: [u8; 16]) -> RawAdmin {
        let mut r = raw(t);
        let cqe = r
            .connect_admin(NQN, &uuid_hostnqn(&uuid), uuid, T)
            .expect("admin Connect answered");
        assert!(cqe.status().is_success(), "admin Connect: {}", cqe.status());
        RawAdmin {
            r,
            cntlid: cqe.result() as u16,
            uuid,
            next_cid: 1,
        }
    }

    fn cid(&mut self) -> u16 {
        self.next_cid = self.next_cid.wrapping_add(1).max(1);
        self.next_cid
    }

    /// Sends `cmd` (cid replaced) and returns its completion and any C2H data.
    fn command(&mut self, mut cmd: Command, data_len: u32, case: &str) -> (Completion, Vec<u8>) {
        cmd.cid = self.cid().into();
        // Fabrics hosts describe even "no data" with an SGL (a transport data block of length 0).
        let cmd = transport(cmd, data_len);
        self.r.send_capsule(&cmd, &[]).expect("send admin capsule");
        response(&mut self.r, cmd.cid.get(), case)
    }

    fn property_get(&mut self, offset: u32, size: PropertySize) -> u64 {
        let cmd = PropertyGet { size, offset }.to_command(0);
        let (cqe, _) = self.command(cmd, 0, "Property Get");
        assert!(cqe.status().is_success(), "Property Get: {}", cqe.status());
        cqe.result64()
    }

    fn set_cc(&mut self, cc: Cc) {
        let cmd = PropertySet {
            size: PropertySize::Four,
            offset: property::CC,
            value: u64::from(cc.0),
        }
        .to_command(0);
        let (cqe, _) = self.command(cmd, 0, "Property Set CC");
        assert!(
            cqe.status().is_success(),
            "Property Set CC: {}",
            cqe.status()
        );
    }

    fn csts(&mut self) -> Csts {
        Csts(self.property_get(property::CSTS, PropertySize::Four) as u32)
    }

    /// Writes CC.EN and waits (by deadline) for CSTS.RDY to follow.
    fn set_enabled(&mut self, en: bool) {
        self.set_cc(Cc::build(en, 0, 0, 0, 0, 6, 4));
        let deadline = Instant::now() + T;
        while self.csts().rdy() != en {
            assert!(Instant::now() < deadline, "CSTS.RDY never became {en}");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    fn identify(&mut self, case: &str) -> (Completion, Vec<u8>) {
        let cmd = Identify {
            cns: CNS_CONTROLLER,
            ..Identify::default()
        }
        .to_command(0);
        self.command(cmd, IDENTIFY_DATA_SIZE as u32, case)
    }

    /// A raw connection with I/O queue `qid` connected to this controller; the Connect's status.
    fn io_connect(&self, t: &Ferrited, qid: u16) -> (RawConnection, Status) {
        let mut r = raw(t);
        r.handshake(Digests::default(), T).expect("ICResp");
        let ev = r
            .send_connect(
                qid,
                31,
                self.cntlid,
                NQN,
                &uuid_hostnqn(&self.uuid),
                self.uuid,
                T,
            )
            .expect("send I/O Connect");
        let status = completion(ev, 0, "I/O Connect").status().code();
        (r, status)
    }
}

#[test]
fn a_disabled_controller_serves_only_fabrics_commands() {
    let t = Ferrited::start(&ram_config(free_port(), &[]));
    let mut a = RawAdmin::connect(&t, [0x71; 16]);
    assert!(!a.csts().rdy(), "a new controller starts disabled");

    // Identify, Get Features and Keep Alive before CC.EN = 1: Command Sequence Error, no data.
    let (cqe, data) = a.identify("Identify before CC.EN");
    assert_eq!(cqe.status().code(), Status::COMMAND_SEQUENCE_ERROR);
    assert!(
        data.is_empty(),
        "no Identify data from a disabled controller"
    );
    let mut get_features = Command::new(opcode::admin::GET_FEATURES, 0);
    get_features.cdw10 = 0x07.into(); // Number of Queues
    let (cqe, _) = a.command(get_features, 0, "Get Features before CC.EN");
    assert_eq!(cqe.status().code(), Status::COMMAND_SEQUENCE_ERROR);
    let (cqe, _) = a.command(
        Command::new(opcode::admin::KEEP_ALIVE, 0),
        0,
        "Keep Alive before CC.EN",
    );
    assert_eq!(cqe.status().code(), Status::COMMAND_SEQUENCE_ERROR);
    // Property Get/Set are Fabrics commands and keep working (they did above, too).
    assert_eq!(
        a.property_get(property::VS, PropertySize::Four) >> 16,
        1,
        "VS major"
    );

    a.set_enabled(true);
    let (cqe, data) = a.identify("Identify after CC.EN");
    assert!(cqe.status().is_success(), "Identify: {}", cqe.status());
    assert_eq!(data.len(), IDENTIFY_DATA_SIZE);
    assert_eq!(
        u16::from_le_bytes([data[78], data[79]]),
        a.cntlid,
        "CNTLID in Identify"
    );
    t.stop();
}

#[test]
fn a_controller_reset_tears_down_its_io_queues() {
    let t = Ferrited::start(&ram_config(free_port(), &[]));
    let mut a = RawAdmin::connect(&t, [0x72; 16]);
    a.set_enabled(true);
    let (mut io, status) = a.io_connect(&t, 1);
    assert_eq!(status, Status::SUCCESS);
    raw_roundtrip(&mut io, 100, 1, "before the reset");

    // Controller reset: CC.EN 1 -> 0.
    a.set_enabled(false);
    // The old I/O queue is gone: a Read on it is not served. Either the target already closed
    // the connection, or it answers Command Sequence Error and then closes it.
    let rd = transport(rw(opcode::io::READ, 50, 100, 2), 1024);
    if io.send_capsule(&rd, &[]).is_ok() {
        match io.recv_skipping_data(T).expect("recv") {
            (RawEvent::Pdu(p), data) => {
                let cqe = p
                    .capsule_resp()
                    .unwrap_or_else(|| panic!("expected a CapsuleResp, got {p:?}"));
                assert_eq!(cqe.cid(), 50);
                assert_eq!(
                    cqe.status().code(),
                    Status::COMMAND_SEQUENCE_ERROR,
                    "a Read on an I/O queue of a reset controller"
                );
                assert!(data.is_empty(), "no data from a torn-down queue");
            }
            (RawEvent::Closed { .. }, data) => {
                assert!(data.is_empty(), "no data from a torn-down queue")
            }
            (RawEvent::TimedOut, _) => panic!("the old I/O queue neither answered nor closed"),
        }
    }
    assert!(
        io.wait_closed(T).expect("recv"),
        "the target closes an I/O queue of a reset controller"
    );
    // Disabled again: admin commands other than Fabrics ones are refused ...
    let (cqe, _) = a.identify("Identify after the reset");
    assert_eq!(cqe.status().code(), Status::COMMAND_SEQUENCE_ERROR);
    // ... and so is a new I/O queue.
    let (_refused, status) = a.io_connect(&t, 1);
    assert_eq!(status, Status::COMMAND_SEQUENCE_ERROR);

    // Enabled again, the same qid connects afresh and the data written before is there.
    a.set_enabled(true);
    let (mut io, status) = a.io_connect(&t, 1);
    assert_eq!(status, Status::SUCCESS, "qid 1 is free after the reset");
    let rd = transport(rw(opcode::io::READ, 51, 100, 2), 1024);
    io.send_capsule(&rd, &[]).expect("send read");
    let (cqe, back) = response(&mut io, 51, "read after the reset");
    assert!(cqe.status().is_success(), "read: {}", cqe.status());
    assert!(back == pattern(100, 2, 512, 1), "data survives the reset");
    raw_roundtrip(&mut io, 200, 2, "after the reset");
    t.stop();
}

#[test]
fn reserved_psdt_and_oversized_read_sgls_are_refused() {
    let t = Ferrited::start(&ram_config(free_port(), &[]));
    let bad = BadHost::connect(&t, [0x73; 16], 0);
    let mut r = bad.io_queue(&t, 1, Digests::default());
    raw_roundtrip(&mut r, 300, 1, "before");

    // PSDT = 11b is reserved: Invalid Field in Command, with a transport SGL that is otherwise
    // right for the Read.
    let mut reserved = transport(rw(opcode::io::READ, 60, 300, 2), 1024);
    reserved.set_psdt(0b11);
    expect_status(&mut r, &reserved, &[], Status::INVALID_FIELD, "PSDT 11b");
    let mut reserved = in_capsule(rw(opcode::io::WRITE, 61, 300, 2), 1024);
    reserved.set_psdt(0b11);
    expect_status(
        &mut r,
        &reserved,
        &[0xEE; 1024],
        Status::INVALID_FIELD,
        "PSDT 11b on a write",
    );

    // Identify does not offer SGLs longer than the data (SGLS bit 18), so a Read of 2 blocks
    // with a 4 KiB SGL is refused like the matching Write.
    let mut admin = bad.ctrl;
    let id = admin
        .identify_raw(CNS_CONTROLLER, 0, 0, 0)
        .expect("Identify Controller");
    let sgls_field = u32::from_le_bytes(
        id[SGLS_OFFSET..SGLS_OFFSET + 4]
            .try_into()
            .expect("4 bytes"),
    );
    assert_eq!(
        sgls_field & sgls::EXCESS_LENGTH,
        0,
        "Identify advertises SGLs longer than the data"
    );
    let long_read = transport(rw(opcode::io::READ, 62, 300, 2), 4096);
    expect_status(
        &mut r,
        &long_read,
        &[],
        Status::DATA_SGL_LENGTH_INVALID,
        "read SGL longer than the blocks",
    );
    let long_write = in_capsule(rw(opcode::io::WRITE, 63, 300, 2), 4096);
    expect_status(
        &mut r,
        &long_write,
        &[0xEE; 4096],
        Status::DATA_SGL_LENGTH_INVALID,
        "write SGL longer than the blocks",
    );
    // The queue is still live and nothing refused landed.
    let rd = transport(rw(opcode::io::READ, 65, 300, 2), 1024);
    r.send_capsule(&rd, &[]).expect("send read");
    let (cqe, back) = response(&mut r, 65, "read back");
    assert!(cqe.status().is_success(), "read: {}", cqe.status());
    assert!(
        back == pattern(300, 2, 512, 1),
        "refused commands wrote nothing"
    );
    raw_roundtrip(&mut r, 310, 2, "after");
    drop(admin);
    t.stop();
}
