//! Malformed input against a real `ferrited`: raw clients send broken PDUs, bogus SGLs, bad
//! commands and bad Connects, and get the NVMe status the specification assigns or a C2HTermReq
//! followed by a clean close. Meanwhile a well-behaved host on another subsystem keeps doing
//! verified I/O ([`common::GoodHost`]); it is checked after every case.

mod common;

use std::time::Duration;

use common::raw::{
    completion, expect_status, expect_term, in_capsule, raw, raw_roundtrip, ready, response, rw,
    transport, with_sgl, BadHost, T,
};
use common::{free_port, pattern, shared_config, Ferrited, GoodHost, GOOD_NQN, NQN};
use ferrite_host::controller::uuid_hostnqn;
use ferrite_host::{Controller, RawConnection, RawEvent};
use ferrite_nvme::command::opcode;
use ferrite_nvme::fabrics::{ConnectCommand, ConnectData, CNTLID_DYNAMIC};
use ferrite_nvme::tcp::{encode_icreq, fes, Digests};
use ferrite_nvme::{Command, SglDescriptor, Status};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
/// Blocks of the 64 MiB namespace the misbehaving hosts use.
const BLOCKS: u64 = 64 * 1024 * 1024 / 512;
/// MDTS in bytes (2^5 pages of 4 KiB).
const MDTS_BYTES: u32 = 128 * 1024;

/// A target, with the good host running against it.
struct Bench {
    t: Ferrited,
    good: GoodHost,
}

impl Bench {
    fn start() -> Bench {
        let t = Ferrited::start(&shared_config(free_port()));
        let good = GoodHost::start(&t);
        Bench { t, good }
    }

    fn check(&mut self, case: &str) {
        self.good.check(&mut self.t, case);
    }

    fn finish(self) {
        let ops = self.good.stop();
        assert!(ops > 0);
        self.t.stop();
    }
}

fn icreq() -> Vec<u8> {
    let mut b = vec![0u8; 128];
    encode_icreq(0, Digests::default(), 0, &mut b).expect("ICReq encodes");
    b
}

fn read_raw(r: &mut RawConnection, cid: u16, lba: u64, blocks: u32, case: &str) -> Vec<u8> {
    let rd = transport(rw(opcode::io::READ, cid, lba, blocks), blocks * 512);
    r.send_capsule(&rd, &[]).expect("send read");
    let (cqe, back) = response(r, cid, case);
    assert!(cqe.status().is_success(), "{case}: read {}", cqe.status());
    back
}

fn set_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

/// The 1024 bytes of Connect data (built by hand: offsets from the Fabrics specification).
fn connect_data(hostid: [u8; 16], cntlid: u16, subnqn: &str, hostnqn: &str) -> Vec<u8> {
    let mut d = vec![0u8; ConnectData::SIZE];
    d[..16].copy_from_slice(&hostid);
    d[16..18].copy_from_slice(&cntlid.to_le_bytes());
    d[256..256 + subnqn.len()].copy_from_slice(subnqn.as_bytes());
    d[512..512 + hostnqn.len()].copy_from_slice(hostnqn.as_bytes());
    d
}

/// A PDU that must be answered by a C2HTermReq with `want` = (FES, FEI).
struct PduCase {
    name: &'static str,
    bytes: Vec<u8>,
    /// Send an ICReq first.
    after_icreq: bool,
    want: (u16, u32),
}

impl PduCase {
    fn new(name: &'static str, bytes: Vec<u8>, after_icreq: bool, want: (u16, u32)) -> PduCase {
        PduCase {
            name,
            bytes,
            after_icreq,
            want,
        }
    }
}

/// An H2CData answering a 4 KiB R2T for cid 5, bent in one way.
struct H2cCase {
    name: &'static str,
    cid: u16,
    ttag_delta: u16,
    datao: u32,
    datal: u32,
    want: (u16, u32),
}

impl H2cCase {
    fn new(
        name: &'static str,
        cid: u16,
        ttag_delta: u16,
        datao: u32,
        datal: u32,
        fes: u16,
        fei: u32,
    ) -> H2cCase {
        H2cCase {
            name,
            cid,
            ttag_delta,
            datao,
            datal,
            want: (fes, fei),
        }
    }
}

/// A Connect refused with Connect Invalid Parameters pointing at `ipo` (in the data or the SQE).
#[derive(Clone)]
struct ConnectCase {
    name: &'static str,
    qid: u16,
    sqsize: u16,
    cntlid: u16,
    subnqn: &'static str,
    hostnqn: String,
    hostid: [u8; 16],
    ipo: u32,
    in_data: bool,
}

#[test]
fn pdu_violations_get_a_term_req_then_a_close() {
    let mut b = Bench::start();
    let t = &b.t;
    let keep_alive = Command::new(opcode::admin::KEEP_ALIVE, 1);
    let plain = raw(t).capsule_bytes(&keep_alive, &[]).expect("capsule");
    let with_data = raw(t)
        .capsule_bytes(&in_capsule(rw(opcode::io::WRITE, 1, 0, 1), 512), &[7; 512])
        .expect("capsule");
    let mut h2c = raw(t).h2c_bytes(1, 0, 0, &[1; 512], true).expect("h2c");

    let mut cases: Vec<PduCase> = Vec::new();
    let mut resp = vec![0u8; 24];
    resp[..8].copy_from_slice(&[5, 0, 24, 0, 24, 0, 0, 0]);
    cases.push(PduCase::new(
        "CapsuleResp sent by the host",
        resp,
        true,
        (fes::INVALID_HEADER_FIELD, 0),
    ));
    let mut r2t = vec![0u8; 24];
    r2t[..8].copy_from_slice(&[9, 0, 24, 0, 24, 0, 0, 0]);
    cases.push(PduCase::new(
        "R2T sent by the host",
        r2t,
        true,
        (fes::INVALID_HEADER_FIELD, 0),
    ));
    let mut c2h = vec![0u8; 24 + 8];
    c2h[..8].copy_from_slice(&[7, 0, 24, 24, 32, 0, 0, 0]);
    cases.push(PduCase::new(
        "C2HData sent by the host",
        c2h,
        true,
        (fes::INVALID_HEADER_FIELD, 0),
    ));
    cases.push(PduCase::new(
        "unknown PDU type 0x0F",
        vec![0x0F, 0, 8, 0, 8, 0, 0, 0],
        true,
        (fes::INVALID_HEADER_FIELD, 0),
    ));
    cases.push(PduCase::new(
        "a capsule before the ICReq",
        plain.clone(),
        false,
        (fes::PDU_SEQUENCE_ERROR, 0),
    ));
    cases.push(PduCase::new(
        "a second ICReq",
        icreq(),
        true,
        (fes::PDU_SEQUENCE_ERROR, 0),
    ));
    let mut pfv = icreq();
    pfv[8] = 1;
    cases.push(PduCase::new(
        "ICReq with PFV 1",
        pfv,
        false,
        (fes::UNSUPPORTED_PARAMETER, 8),
    ));
    let mut hpda = icreq();
    hpda[10] = 32;
    cases.push(PduCase::new(
        "ICReq with HPDA 32",
        hpda,
        false,
        (fes::UNSUPPORTED_PARAMETER, 10),
    ));
    let mut hlen = plain.clone();
    hlen[2] = 24;
    cases.push(PduCase::new(
        "CapsuleCmd with HLEN 24",
        hlen,
        true,
        (fes::INVALID_HEADER_FIELD, 2),
    ));
    let mut hlen = h2c.clone();
    hlen[2] = 72;
    cases.push(PduCase::new(
        "H2CData with HLEN 72",
        hlen,
        true,
        (fes::INVALID_HEADER_FIELD, 2),
    ));
    let mut short = plain.clone();
    set_u32(&mut short, 4, 40);
    cases.push(PduCase::new(
        "PLEN shorter than HLEN",
        short,
        true,
        (fes::INVALID_HEADER_FIELD, 4),
    ));
    let mut huge = with_data.clone();
    set_u32(&mut huge, 4, 0xFFFF_FF00);
    cases.push(PduCase::new(
        "PLEN of 4 GiB with in-capsule data",
        huge,
        true,
        (fes::DATA_LIMIT_EXCEEDED, 4),
    ));
    let mut huge = plain.clone();
    set_u32(&mut huge, 4, 0x7FFF_FFFF);
    cases.push(PduCase::new(
        "PLEN of 2 GiB without PDO",
        huge,
        true,
        (fes::INVALID_HEADER_FIELD, 4),
    ));
    set_u32(&mut h2c, 4, 0x1000_0000);
    cases.push(PduCase::new(
        "H2CData PLEN of 256 MiB",
        h2c,
        true,
        (fes::DATA_LIMIT_EXCEEDED, 4),
    ));
    let mut pdo = with_data.clone();
    pdo[3] = 40;
    cases.push(PduCase::new(
        "PDO inside the header",
        pdo,
        true,
        (fes::INVALID_HEADER_FIELD, 3),
    ));
    let mut digest_flag = plain.clone();
    digest_flag[1] = 1;
    cases.push(PduCase::new(
        "header digest flag without negotiation",
        digest_flag,
        true,
        (fes::INVALID_HEADER_FIELD, 1),
    ));

    for c in cases {
        let mut r = if c.after_icreq {
            ready(&b.t, Digests::default())
        } else {
            raw(&b.t)
        };
        r.send(&c.bytes).expect("send");
        expect_term(&mut r, c.want, &c.bytes, c.name);
        b.check(c.name);
    }

    // Header digest mismatch with header digests negotiated.
    let mut r = ready(&b.t, Digests::new(true, false));
    let mut pdu = r.capsule_bytes(&keep_alive, &[]).expect("capsule");
    pdu[72] ^= 0xFF;
    r.send(&pdu).expect("send");
    expect_term(&mut r, (fes::HEADER_DIGEST_ERROR, 0), &pdu, "header digest");
    b.check("header digest mismatch");

    // A host TermReq: the target just closes.
    let mut r = ready(&b.t, Digests::default());
    let mut term = vec![0u8; 24];
    term[..8].copy_from_slice(&[2, 0, 24, 0, 24, 0, 0, 0]);
    term[8] = fes::PDU_SEQUENCE_ERROR as u8;
    r.send(&term).expect("send");
    match r.recv(T).expect("recv") {
        RawEvent::Closed { .. } => {}
        other => panic!("H2CTermReq: expected a close, got {other:?}"),
    }
    b.check("H2CTermReq");
    b.finish();
}

#[test]
fn data_digest_error_fails_the_command_and_keeps_the_connection() {
    let mut b = Bench::start();
    let bad = BadHost::connect(&b.t, [0x31; 16], 0);
    let mut r = bad.io_queue(&b.t, 1, Digests::new(true, true));
    let lba = 4096;
    let good = pattern(lba, 2, 512, 1);
    let w = in_capsule(rw(opcode::io::WRITE, 1, lba, 2), 1024);
    expect_status(&mut r, &w, &good, Status::SUCCESS, "first write");
    // Same write, other data, broken data digest.
    let mut pdu = r
        .capsule_bytes(&w, &pattern(lba, 2, 512, 2))
        .expect("capsule");
    let n = pdu.len();
    pdu[n - 1] ^= 0x5A;
    r.send(&pdu).expect("send");
    let (cqe, _) = response(&mut r, 1, "data digest");
    assert_eq!(cqe.status().code(), Status::TRANSIENT_TRANSPORT_ERROR);
    b.check("data digest mismatch");
    // The connection is up and the failed write changed nothing.
    let back = read_raw(&mut r, 2, lba, 2, "read after digest error");
    assert!(back == good, "a write with a bad data digest must not land");
    raw_roundtrip(&mut r, lba + 8, 3, "after a data digest error");
    // An H2CData with a bad digest fails its command too.
    let w = transport(rw(opcode::io::WRITE, 3, lba, 2), 1024);
    r.send_capsule(&w, &[]).expect("send");
    let RawEvent::Pdu(p) = r.recv(T).expect("recv") else {
        panic!("no R2T")
    };
    let r2t = p.r2t().expect("R2T");
    let mut h2c = r
        .h2c_bytes(3, r2t.ttag.get(), 0, &pattern(lba, 2, 512, 4), true)
        .expect("h2c");
    let n = h2c.len();
    h2c[n - 2] ^= 0x11;
    r.send(&h2c).expect("send");
    let (cqe, _) = response(&mut r, 3, "H2C data digest");
    assert_eq!(cqe.status().code(), Status::TRANSIENT_TRANSPORT_ERROR);
    let back = read_raw(&mut r, 4, lba, 2, "read after H2C digest error");
    assert!(back == good, "H2C data with a bad digest must not land");
    b.check("H2C data digest mismatch");
    b.finish();
}

#[test]
fn bogus_sgls_get_their_status_on_a_live_queue() {
    let mut b = Bench::start();
    let bad = BadHost::connect(&b.t, [0x32; 16], 0);
    let mut r = bad.io_queue(&b.t, 1, Digests::default());
    let lba = 1000;
    raw_roundtrip(&mut r, lba, 1, "before");
    let before = read_raw(&mut r, 9, lba, 2, "read");
    let read8 = rw(opcode::io::READ, 10, 0, 8);
    let write1 = rw(opcode::io::WRITE, 11, lba, 1);
    let cases: Vec<(&str, Command, Vec<u8>, Status)> = vec![
        (
            "SGL segment descriptor",
            with_sgl(read8, 0x20, 0, 4096),
            vec![],
            Status::SGL_DESCRIPTOR_TYPE_INVALID,
        ),
        (
            "SGL last segment descriptor",
            with_sgl(read8, 0x30, 0, 4096),
            vec![],
            Status::SGL_DESCRIPTOR_TYPE_INVALID,
        ),
        (
            "keyed SGL data block",
            with_sgl(read8, 0x40, 0, 4096),
            vec![],
            Status::SGL_DESCRIPTOR_TYPE_INVALID,
        ),
        (
            "bit bucket",
            with_sgl(read8, 0x10, 0, 4096),
            vec![],
            Status::SGL_DESCRIPTOR_TYPE_INVALID,
        ),
        (
            "in-capsule descriptor on a read",
            with_sgl(read8, SglDescriptor::SGL_DATA_BLOCK_OFFSET, 0, 4096),
            vec![],
            Status::SGL_DESCRIPTOR_TYPE_INVALID,
        ),
        (
            "in-capsule offset 8",
            with_sgl(write1, SglDescriptor::SGL_DATA_BLOCK_OFFSET, 8, 512),
            vec![0xEE; 512],
            Status::INVALID_SGL_OFFSET,
        ),
        (
            "in-capsule length larger than the data",
            in_capsule(write1, 1024),
            vec![0xEE; 512],
            Status::DATA_SGL_LENGTH_INVALID,
        ),
        (
            "in-capsule length smaller than the data",
            in_capsule(write1, 256),
            vec![0xEE; 512],
            Status::DATA_SGL_LENGTH_INVALID,
        ),
        (
            "16 KiB in-capsule (IOCCSZ allows 8 KiB)",
            in_capsule(rw(opcode::io::WRITE, 12, lba, 32), 16384),
            vec![0xEE; 16384],
            Status::DATA_SGL_LENGTH_INVALID,
        ),
        (
            "transport SGL write beyond MDTS",
            transport(rw(opcode::io::WRITE, 13, lba, 264), MDTS_BYTES + 4096),
            vec![],
            Status::DATA_SGL_LENGTH_INVALID,
        ),
        (
            "transport SGL read beyond MDTS",
            transport(rw(opcode::io::READ, 14, 0, 264), MDTS_BYTES + 4096),
            vec![],
            Status::DATA_SGL_LENGTH_INVALID,
        ),
        (
            "transport SGL with in-capsule data",
            transport(write1, 512),
            vec![0xEE; 512],
            Status::DATA_SGL_LENGTH_INVALID,
        ),
        (
            "read SGL shorter than the blocks",
            transport(rw(opcode::io::READ, 15, 0, 64), 16384),
            vec![],
            Status::DATA_SGL_LENGTH_INVALID,
        ),
        (
            "write data shorter than the blocks",
            in_capsule(rw(opcode::io::WRITE, 16, lba, 4), 1024),
            vec![0xEE; 1024],
            Status::DATA_SGL_LENGTH_INVALID,
        ),
    ];
    for (i, (case, cmd, data, want)) in cases.into_iter().enumerate() {
        expect_status(&mut r, &cmd, &data, want, case);
        raw_roundtrip(&mut r, lba + 16, i as u64, case);
        b.check(case);
    }
    assert!(
        read_raw(&mut r, 9, lba, 2, "read") == before,
        "refused writes must not land"
    );
    b.finish();
}

/// Buffers of refused commands go back to the pool: 600 reads whose SGL is shorter than their
/// blocks (each takes a 128 KiB-class buffer; a reactor has 512) and a 64 KiB read still runs on
/// the same connection, so the same reactor.
#[test]
fn refused_commands_return_their_buffers() {
    let mut b = Bench::start();
    let bad = BadHost::connect(&b.t, [0x33; 16], 0);
    let mut r = bad.io_queue(&b.t, 1, Digests::default());
    for i in 0..600u16 {
        let cmd = transport(rw(opcode::io::READ, i % 64, 0, 64), 16384);
        expect_status(
            &mut r,
            &cmd,
            &[],
            Status::DATA_SGL_LENGTH_INVALID,
            "short SGL",
        );
    }
    for i in 0..64u16 {
        // A DSM whose range list is shorter than NR says.
        let mut dsm = in_capsule(Command::new(opcode::io::DATASET_MANAGEMENT, i), 8);
        dsm.nsid = 1.into();
        dsm.cdw11 = (1u32 << 2).into();
        expect_status(
            &mut r,
            &dsm,
            &[0; 8],
            Status::DATA_SGL_LENGTH_INVALID,
            "short DSM",
        );
    }
    b.check("600 refused reads");
    let big = read_raw(&mut r, 1, 0, 128, "64 KiB read after the refusals");
    assert_eq!(big.len(), 64 * 1024);
    let w = transport(rw(opcode::io::WRITE, 2, 0, 128), 64 * 1024);
    r.send_capsule(&w, &[]).expect("send");
    let RawEvent::Pdu(p) = r.recv(T).expect("recv") else {
        panic!("no R2T")
    };
    let r2t = p.r2t().expect("an R2T, so a buffer was free");
    let h2c = r
        .h2c_bytes(2, r2t.ttag.get(), 0, &vec![3u8; 64 * 1024], true)
        .expect("h2c");
    r.send(&h2c).expect("send");
    let (cqe, _) = response(&mut r, 2, "64 KiB write");
    assert!(cqe.status().is_success());
    b.finish();
}

#[test]
fn h2c_data_violations_get_a_term_req() {
    let mut b = Bench::start();
    let bad = BadHost::connect(&b.t, [0x34; 16], 0);
    let cases = [
        H2cCase::new(
            "H2CData for an unknown cid",
            6,
            0,
            0,
            4096,
            fes::INVALID_HEADER_FIELD,
            8,
        ),
        H2cCase::new(
            "H2CData with a wrong TTAG",
            5,
            1,
            0,
            4096,
            fes::INVALID_HEADER_FIELD,
            10,
        ),
        H2cCase::new(
            "H2CData out of order",
            5,
            0,
            512,
            512,
            fes::DATA_OUT_OF_RANGE,
            12,
        ),
        H2cCase::new(
            "H2CData beyond the R2T",
            5,
            0,
            0,
            8192,
            fes::DATA_OUT_OF_RANGE,
            16,
        ),
        H2cCase::new(
            "H2CData beyond MAXH2CDATA",
            5,
            0,
            0,
            MDTS_BYTES + 512,
            fes::DATA_LIMIT_EXCEEDED,
            4,
        ),
    ];
    for (i, c) in cases.into_iter().enumerate() {
        let case = c.name;
        let mut r = bad.io_queue(&b.t, 1 + i as u16, Digests::default());
        let w = transport(rw(opcode::io::WRITE, 5, 0, 8), 4096);
        r.send_capsule(&w, &[]).expect("send");
        let RawEvent::Pdu(p) = r.recv(T).expect("recv") else {
            panic!("{case}: no R2T")
        };
        let r2t = p.r2t().expect("R2T");
        assert_eq!((r2t.r2to.get(), r2t.r2tl.get()), (0, 4096));
        let pdu = r
            .h2c_bytes(
                c.cid,
                r2t.ttag.get().wrapping_add(c.ttag_delta),
                c.datao,
                &vec![9u8; c.datal as usize],
                true,
            )
            .expect("h2c");
        r.send(&pdu).expect("send");
        expect_term(&mut r, c.want, &pdu, case);
        b.check(case);
    }
    // H2CData with no command at all.
    let mut r = bad.io_queue(&b.t, 10, Digests::default());
    let pdu = r.h2c_bytes(1, 0, 0, &[1; 512], true).expect("h2c");
    r.send(&pdu).expect("send");
    expect_term(
        &mut r,
        (fes::INVALID_HEADER_FIELD, 8),
        &pdu,
        "stray H2CData",
    );
    b.check("stray H2CData");
    b.finish();
}

#[test]
fn bad_commands_get_their_status() {
    let mut b = Bench::start();
    let bad = BadHost::connect(&b.t, [0x35; 16], 0);
    let mut r = bad.io_queue(&b.t, 1, Digests::default());
    let mut cases: Vec<(&str, Command, Vec<u8>, Status)> = vec![
        (
            "read past the end",
            transport(rw(opcode::io::READ, 1, BLOCKS - 4, 8), 4096),
            vec![],
            Status::LBA_OUT_OF_RANGE,
        ),
        (
            "read with SLBA + NLB overflowing",
            transport(rw(opcode::io::READ, 2, u64::MAX - 2, 8), 4096),
            vec![],
            Status::LBA_OUT_OF_RANGE,
        ),
        (
            "in-capsule write past the end",
            in_capsule(rw(opcode::io::WRITE, 3, BLOCKS, 1), 512),
            vec![1; 512],
            Status::LBA_OUT_OF_RANGE,
        ),
        (
            "write zeroes past the end",
            transport(rw(opcode::io::WRITE_ZEROES, 4, BLOCKS - 1, 2), 0),
            vec![],
            Status::LBA_OUT_OF_RANGE,
        ),
    ];
    for nsid in [0u32, 2, 1025, 0xFFFF_FFFE, 0xFFFF_FFFF] {
        let mut cmd = transport(rw(opcode::io::READ, 5, 0, 1), 512);
        cmd.nsid = nsid.into();
        cases.push((
            "read of an unknown NSID",
            cmd,
            vec![],
            Status::INVALID_NAMESPACE,
        ));
    }
    let mut cmd = in_capsule(rw(opcode::io::WRITE, 6, 0, 1), 512);
    cmd.nsid = 3.into();
    cases.push((
        "write to an unknown NSID",
        cmd,
        vec![2; 512],
        Status::INVALID_NAMESPACE,
    ));
    for op in [0x04u8, 0x7E, 0x80, 0xFF] {
        let mut cmd = transport(Command::new(op, 7), 0);
        cmd.nsid = 1.into();
        cases.push(("unknown I/O opcode", cmd, vec![], Status::INVALID_OPCODE));
    }
    let mut prp = rw(opcode::io::READ, 8, 0, 8);
    prp.set_psdt(0);
    cases.push(("PRP read", prp, vec![], Status::INVALID_FIELD));
    let mut prp = in_capsule(rw(opcode::io::WRITE, 9, 0, 1), 512);
    prp.set_psdt(0);
    cases.push((
        "PRP write with capsule data",
        prp,
        vec![3; 512],
        Status::INVALID_FIELD,
    ));
    for fuse in [1u8, 2, 3] {
        let mut cmd = transport(rw(opcode::io::READ, 10, 0, 1), 512);
        cmd.flags |= fuse;
        cases.push(("fused read", cmd, vec![], Status::INVALID_FIELD));
    }
    let mut fused = in_capsule(rw(opcode::io::COMPARE, 11, 0, 1), 512);
    fused.flags |= 1;
    cases.push(("fused compare", fused, vec![4; 512], Status::INVALID_FIELD));
    for (i, (case, cmd, data, want)) in cases.into_iter().enumerate() {
        expect_status(&mut r, &cmd, &data, want, case);
        raw_roundtrip(&mut r, 8 * i as u64, i as u64, case);
        b.check(case);
    }
    b.finish();
}

#[test]
fn connect_violations_are_refused() {
    let mut b = Bench::start();
    let bad = BadHost::connect(&b.t, [0x36; 16], 2);
    let (cntlid, hostnqn, hostid) = (bad.ctrl.cntlid(), bad.hostnqn(), bad.uuid);
    let invalid = |ev: RawEvent, case: &str, ipo: u32, in_data: bool| {
        let cqe = completion(ev, 0, case);
        assert_eq!(
            cqe.status().code(),
            Status::CONNECT_INVALID_PARAMETERS,
            "{case}: {}",
            cqe.status()
        );
        assert_eq!(cqe.result() >> 16, ipo, "{case}: IPO");
        assert_eq!(cqe.result() & 1, in_data as u32, "{case}: IATTR");
    };

    // I/O before Connect: refused, the connection stays usable for a Connect.
    let mut r = ready(&b.t, Digests::default());
    let read = transport(rw(opcode::io::READ, 3, 0, 1), 512);
    expect_status(
        &mut r,
        &read,
        &[],
        Status::COMMAND_SEQUENCE_ERROR,
        "read before Connect",
    );
    let write = in_capsule(rw(opcode::io::WRITE, 4, 0, 1), 512);
    expect_status(
        &mut r,
        &write,
        &[1; 512],
        Status::COMMAND_SEQUENCE_ERROR,
        "write before Connect",
    );
    let keep_alive = transport(Command::new(opcode::admin::KEEP_ALIVE, 5), 0);
    expect_status(
        &mut r,
        &keep_alive,
        &[],
        Status::COMMAND_SEQUENCE_ERROR,
        "admin before Connect",
    );
    let ev = r
        .send_connect(0, 31, CNTLID_DYNAMIC, NQN, &hostnqn, hostid, T)
        .expect("send");
    assert!(completion(ev, 0, "admin Connect").status().is_success());
    // A second Connect on the connected admin queue.
    let ev = r
        .send_connect(0, 31, CNTLID_DYNAMIC, NQN, &hostnqn, hostid, T)
        .expect("send");
    assert_eq!(
        completion(ev, 0, "second admin Connect").status().code(),
        Status::COMMAND_SEQUENCE_ERROR
    );
    b.check("I/O before Connect, second admin Connect");

    // The controller was granted 2 I/O queues and connected both itself.
    let mut q = ready(&b.t, Digests::default());
    let ev = q
        .send_connect(3, 31, cntlid, NQN, &hostnqn, hostid, T)
        .expect("send");
    invalid(ev, "qid beyond the granted 2", 42, false);
    let ev = q
        .send_connect(1, 31, cntlid, NQN, &hostnqn, hostid, T)
        .expect("send");
    invalid(ev, "qid already connected", 42, false);
    b.check("qid checks");

    let other = BadHost::connect(&b.t, [0x37; 16], 0);
    let mut q = other.io_queue(&b.t, 1, Digests::default());
    let ev = q
        .send_connect(
            1,
            31,
            other.ctrl.cntlid(),
            NQN,
            &other.hostnqn(),
            other.uuid,
            T,
        )
        .expect("send");
    assert_eq!(
        completion(ev, 0, "second I/O Connect").status().code(),
        Status::COMMAND_SEQUENCE_ERROR
    );
    raw_roundtrip(&mut q, 64, 1, "after a second I/O Connect");
    b.check("second I/O Connect");

    let base = ConnectCase {
        name: "",
        qid: 1,
        sqsize: 31,
        cntlid,
        subnqn: NQN,
        hostnqn: hostnqn.clone(),
        hostid,
        ipo: 16,
        in_data: true,
    };
    let cases = [
        ConnectCase {
            name: "unknown NQN",
            subnqn: "nqn.2026-01.io.ferrite:nope",
            ipo: 256,
            ..base.clone()
        },
        ConnectCase {
            name: "wrong cntlid",
            cntlid: cntlid ^ 0x55,
            ..base.clone()
        },
        ConnectCase {
            name: "dynamic cntlid on an I/O queue",
            cntlid: CNTLID_DYNAMIC,
            ..base.clone()
        },
        ConnectCase {
            name: "wrong hostnqn",
            hostnqn: uuid_hostnqn(&[0x99; 16]),
            ..base.clone()
        },
        ConnectCase {
            name: "wrong hostid",
            hostid: [0x99; 16],
            ..base.clone()
        },
        ConnectCase {
            name: "sqsize 0",
            sqsize: 0,
            ipo: 44,
            in_data: false,
            ..base.clone()
        },
        ConnectCase {
            name: "sqsize 128 (129 entries)",
            sqsize: 128,
            ipo: 44,
            in_data: false,
            ..base.clone()
        },
        ConnectCase {
            // Any host may use NQN, but this controller belongs to a named host.
            name: "empty hostnqn on a named host's controller",
            hostnqn: String::new(),
            ..base.clone()
        },
        ConnectCase {
            name: "admin sqsize 30",
            qid: 0,
            sqsize: 30,
            cntlid: CNTLID_DYNAMIC,
            ipo: 44,
            in_data: false,
            ..base.clone()
        },
        ConnectCase {
            name: "admin Connect to a static cntlid",
            qid: 0,
            cntlid: 1,
            ..base
        },
    ];
    for c in cases {
        let mut q = ready(&b.t, Digests::default());
        let ev = q
            .send_connect(c.qid, c.sqsize, c.cntlid, c.subnqn, &c.hostnqn, c.hostid, T)
            .expect("send");
        invalid(ev, c.name, c.ipo, c.in_data);
        b.check(c.name);
    }
    // The good host's subsystem refuses everyone else.
    let mut q = ready(&b.t, Digests::default());
    let ev = q
        .send_connect(0, 31, CNTLID_DYNAMIC, GOOD_NQN, &hostnqn, hostid, T)
        .expect("send");
    assert_eq!(
        completion(ev, 0, "foreign subsystem").status().code(),
        Status::CONNECT_INVALID_HOST
    );
    // A host list needs a name: an empty Host NQN is refused there (it is accepted only where
    // any host may connect).
    let mut q = ready(&b.t, Digests::default());
    let ev = q
        .send_connect(0, 31, CNTLID_DYNAMIC, GOOD_NQN, "", hostid, T)
        .expect("send");
    assert_eq!(
        completion(ev, 0, "empty hostnqn to a host list")
            .status()
            .code(),
        Status::CONNECT_INVALID_HOST
    );
    // Where any host may connect, an empty Host NQN (SPDK's initiator without `hostnqn:`) is
    // accepted and logged.
    let mut q = ready(&b.t, Digests::default());
    let ev = q
        .send_connect(0, 31, CNTLID_DYNAMIC, NQN, "", hostid, T)
        .expect("send");
    let cqe = completion(ev, 0, "empty hostnqn, any host allowed");
    assert!(cqe.status().is_success(), "{}", cqe.status());
    drop(q);
    assert!(b.t.log_text().contains("empty Host NQN: accepted"));
    b.check("empty hostnqn, any host allowed");
    let mut q = ready(&b.t, Digests::default());
    // Record format 1.
    let mut cmd = ConnectCommand {
        recfmt: 1,
        qid: 0,
        sqsize: 31,
        cattr: 0,
        kato: 0,
    }
    .to_command(0);
    q.send_capsule(&cmd, &connect_data(hostid, CNTLID_DYNAMIC, NQN, &hostnqn))
        .expect("send");
    assert_eq!(
        completion(q.recv(T).expect("recv"), 0, "RECFMT 1")
            .status()
            .code(),
        Status::CONNECT_INCOMPATIBLE_FORMAT
    );
    // Connect data cut short.
    cmd.cdw10 = 0.into();
    cmd.dptr = SglDescriptor::in_capsule(0, 512);
    q.send_capsule(
        &cmd,
        &connect_data(hostid, CNTLID_DYNAMIC, NQN, &hostnqn)[..512],
    )
    .expect("send");
    assert_eq!(
        completion(q.recv(T).expect("recv"), 0, "short Connect data")
            .status()
            .code(),
        Status::DATA_SGL_LENGTH_INVALID
    );
    // An I/O queue for a controller that is not enabled.
    let mut opts = b.t.options().with_host_uuid([0x38; 16]);
    opts.enable = false;
    opts.io_queues = 0;
    let disabled = Controller::connect(opts).expect("admin queue");
    let mut q = ready(&b.t, Digests::default());
    let ev = q
        .send_connect(
            1,
            31,
            disabled.cntlid(),
            NQN,
            &uuid_hostnqn(&[0x38; 16]),
            [0x38; 16],
            T,
        )
        .expect("send");
    assert_eq!(
        completion(ev, 0, "I/O Connect before CC.EN")
            .status()
            .code(),
        Status::COMMAND_SEQUENCE_ERROR
    );
    b.check("Connect refusals");
    b.finish();
}

/// A valid PDU sequence to mutate: what is sent before (not mutated) and the PDU to mutate.
enum Template {
    IcReq,
    AdminConnect,
    Write,
    Read,
    H2CData,
}

const TEMPLATES: [Template; 5] = [
    Template::IcReq,
    Template::AdminConnect,
    Template::Write,
    Template::Read,
    Template::H2CData,
];

fn mutate(rng: &mut StdRng, pdu: &mut Vec<u8>) {
    const INTERESTING: [u32; 8] = [0, 1, 8, 24, 72, 0x7F, 0xFFFF_FFFF, 0x8000_0000];
    for _ in 0..rng.gen_range(1..=3) {
        let n = pdu.len();
        match rng.gen_range(0..7) {
            0 => {
                let i = rng.gen_range(0..n);
                pdu[i] ^= 1 << rng.gen_range(0..8);
            }
            1 => {
                let i = rng.gen_range(0..n);
                pdu[i] = rng.gen();
            }
            2 => {
                // The common header.
                let i = rng.gen_range(0..8.min(n));
                pdu[i] = rng.gen();
            }
            3 => pdu.truncate(rng.gen_range(0..n)),
            4 => {
                let extra = rng.gen_range(1..300);
                pdu.extend((0..extra).map(|_| rng.gen::<u8>()));
            }
            5 if n >= 4 => {
                let at = rng.gen_range(0..=n - 4);
                let v = INTERESTING[rng.gen_range(0..INTERESTING.len())];
                set_u32(pdu, at, v);
            }
            _ => {
                // The command part of a capsule (SGL, opcode, flags, NSID, dwords).
                let i = rng.gen_range(8..n.max(9)).min(n - 1);
                pdu[i] = rng.gen();
            }
        }
        if pdu.is_empty() {
            pdu.push(rng.gen());
        }
    }
}

#[test]
fn fuzzed_capsules_never_crash_the_target() {
    let mut b = Bench::start();
    let bad = BadHost::connect(&b.t, [0x39; 16], 0);
    let env = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    // Longer runs: FERRITE_FUZZ_ITERS=20000 FERRITE_FUZZ_SEED=7.
    let iterations = env("FERRITE_FUZZ_ITERS", 200);
    let mut rng = StdRng::seed_from_u64(env("FERRITE_FUZZ_SEED", 0xF022_5EED));
    let (mut term_reqs, mut responses) = (0, 0);
    for i in 0..iterations {
        let template = &TEMPLATES[(i % TEMPLATES.len() as u64) as usize];
        let qid = 1 + (i % 64) as u16;
        let mut r = raw(&b.t);
        let mut pdu = match template {
            Template::IcReq => icreq(),
            Template::AdminConnect => {
                r.handshake(Digests::default(), T).expect("ICResp");
                let cmd = ConnectCommand {
                    recfmt: 0,
                    qid: 0,
                    sqsize: 31,
                    cattr: 0,
                    kato: 30_000,
                }
                .to_command(0);
                let data = connect_data(bad.uuid, CNTLID_DYNAMIC, NQN, &bad.hostnqn());
                r.capsule_bytes(&cmd, &data).expect("capsule")
            }
            Template::Write | Template::Read | Template::H2CData => {
                r.handshake(Digests::default(), T).expect("ICResp");
                // Not asserted: an earlier connection may still hold this qid.
                let _ =
                    r.send_connect(qid, 31, bad.ctrl.cntlid(), NQN, &bad.hostnqn(), bad.uuid, T);
                let lba = rng.gen_range(0..BLOCKS - 8);
                match template {
                    Template::Write => {
                        let cmd = in_capsule(rw(opcode::io::WRITE, 1, lba, 2), 1024);
                        r.capsule_bytes(&cmd, &pattern(lba, 2, 512, i))
                            .expect("capsule")
                    }
                    Template::Read => {
                        let cmd = transport(rw(opcode::io::READ, 1, lba, 8), 4096);
                        r.capsule_bytes(&cmd, &[]).expect("capsule")
                    }
                    _ => {
                        let cmd = transport(rw(opcode::io::WRITE, 1, lba, 8), 4096);
                        r.send_capsule(&cmd, &[]).expect("send");
                        let ttag = match r.recv(T) {
                            Ok(RawEvent::Pdu(p)) => p.r2t().map_or(0, |r2t| r2t.ttag.get()),
                            _ => 0,
                        };
                        r.h2c_bytes(1, ttag, 0, &[0xA5; 4096], true).expect("h2c")
                    }
                }
            }
        };
        mutate(&mut rng, &mut pdu);
        // The target may already have closed: send errors are fine.
        let _ = r.send(&pdu);
        let _ = r.shutdown_write();
        // Whatever it answers, it must let go of the connection once the host is done.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match r.recv(left) {
                Ok(RawEvent::Pdu(p)) if p.term_req().is_some() => term_reqs += 1,
                Ok(RawEvent::Pdu(p)) if p.capsule_resp().is_some() => responses += 1,
                Ok(RawEvent::Pdu(_)) => {}
                Ok(RawEvent::Closed { .. }) | Err(_) => break,
                Ok(RawEvent::TimedOut) => {
                    panic!("iteration {i}: the target kept a half-closed connection open")
                }
            }
        }
        if i % 20 == 19 {
            b.check(&format!("fuzz iteration {i}"));
        }
    }
    b.check("the fuzzed capsules");
    eprintln!("fuzz: {term_reqs} TermReqs, {responses} responses over {iterations} connections");
    assert!(
        term_reqs >= iterations / 10 && responses >= iterations / 10,
        "mutations reach both the PDU checks and the command checks"
    );
    // The fuzz controller's admin queue is still served.
    let mut c = bad.ctrl;
    c.keep_alive().expect("fuzz controller's admin queue alive");
    b.finish();
}
