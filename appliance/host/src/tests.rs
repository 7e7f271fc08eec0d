//! Tests of the queue pair and the controller against the fake target.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use ferrite_nvme::admin::fid;
use ferrite_nvme::command::opcode;
use ferrite_nvme::fabrics::{property, Csts};
use ferrite_nvme::io::ReadWrite;
use ferrite_nvme::tcp::{fes, Digests, PduError};
use ferrite_nvme::{Command, Status};
use proptest::prelude::*;

use crate::controller::{ConnectOptions, Controller, IoData};
use crate::discovery::{adrfam, subtype, trtype, DiscoveryEntry};
use crate::error::{HostError, Violation};
use crate::fake_target::{FakeConfig, FakeTarget, Misbehave};
use crate::qpair::{Completed, Data, QueuePair, QueuePairConfig};

const SUBNQN: &str = "nqn.2024-01.io.ferrite:test";

fn opts(t: &FakeTarget) -> ConnectOptions {
    let mut o = ConnectOptions::new(t.addr, SUBNQN);
    o.timeout = Duration::from_secs(5);
    o
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[test]
fn connect_enables_identifies_and_connects_io_queues() {
    let t = FakeTarget::start(FakeConfig::default());
    let mut o = opts(&t);
    o.io_queues = 3;
    o.queue_depth = 16;
    o.kato_ms = 5000;
    let mut c = Controller::connect(o).expect("connect");
    assert_eq!(c.cntlid(), 1);
    assert_eq!(c.io_queue_count(), 3);
    assert_eq!(
        c.identify().expect("identified").ioccsz.get(),
        (8192 + 64) / 16
    );
    let last = t.last_connect().expect("connect seen");
    assert_eq!((last.qid, last.sqsize, last.kato), (3, 16, 0));
    let csts = Csts(c.property_get(property::CSTS).expect("csts") as u32);
    assert!(csts.rdy());
    assert_eq!(c.active_namespaces().expect("list"), vec![1]);
    assert_eq!(c.ns_descriptors(1).expect("desc").nguid, Some([0x42; 16]));
    assert_eq!(c.block_size(1).expect("bs"), 512);
    c.keep_alive().expect("keep alive");
    c.set_features(fid::ARBITRATION, 0, 7, false).expect("set");
    assert_eq!(c.get_features(fid::ARBITRATION, 0, 0).expect("get"), 7);
    c.shutdown().expect("shutdown");
    c.disconnect();
}

#[test]
fn small_writes_go_in_capsule_large_ones_by_r2t() {
    let t = FakeTarget::start(FakeConfig {
        in_capsule: 4096,
        r2t_chunk: 16 * 1024,
        maxh2cdata: 4096,
        ..FakeConfig::default()
    });
    let mut c = Controller::connect(opts(&t)).expect("connect");
    let small = pattern(4096, 1);
    c.write(1, 1, 0, &small, false).expect("in-capsule write");
    let big = pattern(64 * 1024, 2);
    c.write(1, 1, 100, &big, true).expect("r2t write");
    assert_eq!(&t.disk()[..4096], &small[..]);
    assert_eq!(&t.disk()[100 * 512..100 * 512 + big.len()], &big[..]);
    let mut back = vec![0u8; big.len()];
    c.read(1, 1, 100, 128, &mut back).expect("read");
    assert_eq!(back, big);
}

#[test]
fn reads_complete_by_success_flag() {
    let t = FakeTarget::start(FakeConfig {
        success_flag: true,
        c2h_chunk: 1000,
        ..FakeConfig::default()
    });
    let mut o = opts(&t);
    o.disable_sq_flow_control = true;
    let mut c = Controller::connect(o).expect("connect");
    assert_eq!(t.last_connect().expect("seen").cattr & 0x04, 0x04);
    t.disk()[512..1024].copy_from_slice(&pattern(512, 9));
    let qp = c.io_queue(1).expect("queue");
    let cmd = ReadWrite {
        nsid: 1,
        slba: 1,
        nlb: 0,
        ..ReadWrite::default()
    }
    .to_command(opcode::io::READ, 0);
    let cid = qp.submit(&cmd, Data::Read(512)).expect("submit");
    let done = wait_one(qp);
    assert_eq!(done.cid, cid);
    assert!(done.by_success_flag);
    done.check().expect("success");
    assert_eq!(qp.data(cid), &pattern(512, 9)[..]);
}

fn wait_one(qp: &mut QueuePair) -> Completed {
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while out.is_empty() {
        assert!(Instant::now() < deadline, "no completion");
        qp.poll(&mut out).expect("poll");
        if out.is_empty() {
            qp.wait(Duration::from_millis(100)).expect("wait");
        }
    }
    out.remove(0)
}

#[test]
fn digests_are_negotiated_and_used() {
    let t = FakeTarget::start(FakeConfig {
        in_capsule: 1024,
        cpda: 3,
        ..FakeConfig::default()
    });
    let mut o = opts(&t);
    o.header_digest = true;
    o.data_digest = true;
    let mut c = Controller::connect(o).expect("connect");
    let neg = c.io_queue(1).expect("queue").negotiated();
    assert_eq!(neg.digests, Digests::new(true, true));
    assert_eq!(neg.cpda, 3);
    let data = pattern(8192, 3);
    c.write(1, 1, 8, &data, false).expect("write");
    let mut back = vec![0u8; 8192];
    c.read(1, 1, 8, 16, &mut back).expect("read");
    assert_eq!(back, data);
}

#[test]
fn digests_the_target_refuses_are_off() {
    let t = FakeTarget::start(FakeConfig {
        digests_supported: Digests::default(),
        ..FakeConfig::default()
    });
    let mut o = opts(&t);
    o.header_digest = true;
    o.data_digest = true;
    let mut c = Controller::connect(o).expect("connect");
    assert_eq!(c.admin_queue().negotiated().digests, Digests::default());
    c.write(1, 1, 0, &pattern(512, 4), false).expect("write");
}

#[test]
fn data_digest_mismatch_fails_the_command_only() {
    let t = FakeTarget::start(FakeConfig {
        misbehave: Misbehave::CorruptC2hDataDigest,
        ..FakeConfig::default()
    });
    let mut o = opts(&t);
    o.data_digest = true;
    // Identify data comes by C2HData too, so skip enabling and identify by hand.
    o.enable = false;
    o.io_queues = 0;
    let mut c = Controller::connect(o).expect("connect");
    let err = c.identify_controller().expect_err("digest must fail");
    assert!(matches!(err, HostError::DataDigest { .. }), "{err}");
    // The connection survives a data digest error.
    c.keep_alive().expect("still connected");
}

#[test]
fn header_digest_mismatch_is_a_protocol_violation() {
    let t = FakeTarget::start(FakeConfig {
        misbehave: Misbehave::CorruptRespHeaderDigest,
        ..FakeConfig::default()
    });
    let mut o = opts(&t);
    o.header_digest = true;
    let err = Controller::connect(o).expect_err("bad digest");
    assert!(
        matches!(
            err,
            HostError::Protocol(Violation::Pdu(PduError::HeaderDigest { .. }))
        ),
        "{err}"
    );
}

#[test]
fn connect_refused_names_the_status() {
    let t = FakeTarget::start(FakeConfig {
        allowed_host: Some("nqn.2024-01.io.ferrite:someone-else".into()),
        ..FakeConfig::default()
    });
    let err = Controller::connect(opts(&t)).expect_err("not allowed");
    let text = err.to_string();
    assert!(text.contains("Connect refused"), "{text}");
    assert!(text.contains("CONNECT_INVALID_HOST"), "{text}");
    assert_eq!(
        err.status().map(Status::code),
        Some(Status::CONNECT_INVALID_HOST)
    );
}

#[test]
fn term_req_is_reported_with_its_fes() {
    let t = FakeTarget::start(FakeConfig {
        misbehave: Misbehave::TermReqOnRead,
        ..FakeConfig::default()
    });
    let mut c = Controller::connect(opts(&t)).expect("connect");
    let mut buf = [0u8; 512];
    let err = c.read(1, 1, 0, 1, &mut buf).expect_err("terminated");
    match err {
        HostError::TermReq { fes: f, .. } => assert_eq!(f, fes::DATA_OUT_OF_RANGE),
        other => panic!("unexpected {other}"),
    }
    assert!(c.read(1, 1, 0, 1, &mut buf).is_err(), "queue stays failed");
}

#[test]
fn target_protocol_violations_are_detected() {
    let cases = [
        (Misbehave::C2hWrongOffset, "offset"),
        (Misbehave::RespWrongCid, "not outstanding"),
        (Misbehave::R2tForInCapsule, "in-capsule"),
    ];
    for (m, needle) in cases {
        let t = FakeTarget::start(FakeConfig {
            misbehave: m,
            ..FakeConfig::default()
        });
        let mut c = Controller::connect(opts(&t)).expect("connect");
        let err = if m == Misbehave::R2tForInCapsule {
            c.write(1, 1, 0, &pattern(512, 0), false)
                .expect_err("violation")
        } else {
            let mut buf = [0u8; 1024];
            c.read(1, 1, 0, 2, &mut buf).expect_err("violation")
        };
        assert!(matches!(err, HostError::Protocol(_)), "{m:?}: {err}");
        assert!(err.to_string().contains(needle), "{m:?}: {err}");
    }
}

#[test]
fn status_errors_and_other_io_commands() {
    let t = FakeTarget::start(FakeConfig::default());
    let mut c = Controller::connect(opts(&t)).expect("connect");
    let mut buf = [0u8; 512];
    let err = c.read(1, 1, 4096, 1, &mut buf).expect_err("past the end");
    assert_eq!(
        err.status().map(Status::code),
        Some(Status::LBA_OUT_OF_RANGE)
    );
    assert!(!err.is_connection_lost());
    let data = pattern(1024, 5);
    c.write(1, 1, 10, &data, false).expect("write");
    c.compare(1, 1, 10, &data).expect("same");
    let err = c.compare(1, 1, 10, &pattern(1024, 6)).expect_err("differs");
    assert_eq!(
        err.status().map(Status::code),
        Some(Status::COMPARE_FAILURE)
    );
    c.flush(1, 1).expect("flush");
    c.write_zeroes(1, 1, 10, 1, false).expect("zeroes");
    assert!(t.disk()[10 * 512..11 * 512].iter().all(|&b| b == 0));
    assert_eq!(&t.disk()[11 * 512..12 * 512], &data[512..]);
    c.deallocate(1, 1, &[(11, 1)]).expect("deallocate");
    assert!(t.disk()[11 * 512..12 * 512].iter().all(|&b| b == 0));
    // A raw command with an unknown opcode returns its status, not an error.
    let mut odd = Command::new(0x7E, 0);
    odd.nsid = 1.into();
    let cqe = c.raw_io(1, &odd, IoData::None).expect("raw");
    assert_eq!(cqe.status().code(), Status::INVALID_OPCODE);
    let cqe = c
        .raw_admin(&Command::new(0x7E, 0), IoData::None)
        .expect("raw admin");
    assert_eq!(cqe.status().code(), Status::INVALID_OPCODE);
    assert!(matches!(c.flush(9, 1), Err(HostError::NoSuchQueue(9))));
}

#[test]
fn keep_alive_is_sent_when_half_the_kato_passed() {
    let t = FakeTarget::start(FakeConfig::default());
    let mut o = opts(&t);
    o.kato_ms = 100;
    let mut c = Controller::connect(o).expect("connect");
    c.flush(1, 1).expect("flush");
    let before = t.commands_seen();
    std::thread::sleep(Duration::from_millis(60));
    c.flush(1, 1).expect("flush");
    // The flush plus the Keep Alive sent ahead of it.
    assert_eq!(t.commands_seen(), before + 2);
}

#[test]
fn discovery_lists_entries() {
    let entry = DiscoveryEntry {
        trtype: trtype::TCP,
        adrfam: adrfam::IPV4,
        subtype: subtype::NVM,
        treq: 0,
        portid: 1,
        cntlid: 0xFFFF,
        asqsz: 32,
        eflags: 0,
        trsvcid: "4420".into(),
        subnqn: SUBNQN.into(),
        traddr: "127.0.0.1".into(),
        tsas: [0; 256],
    };
    let t = FakeTarget::start(FakeConfig {
        discovery: vec![entry.clone(), entry.clone()],
        ..FakeConfig::default()
    });
    let got = Controller::discover(t.addr).expect("discover");
    assert_eq!(got, vec![entry.clone(), entry]);
}

#[test]
fn connection_refused_and_timeouts_are_named() {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    // Listening but never answering: the ICResp times out.
    let mut o = ConnectOptions::new(addr, SUBNQN);
    o.timeout = Duration::from_millis(200);
    let err = Controller::connect(o.clone()).expect_err("no ICResp");
    assert!(err.is_timeout(), "{err}");
    drop(l);
    let err = Controller::connect(o).expect_err("nobody listens");
    assert!(matches!(err, HostError::ConnectionRefused { .. }), "{err}");
}

#[test]
fn queue_depth_bounds_submissions_and_pipelining_works() {
    let t = FakeTarget::start(FakeConfig::default());
    let mut admin_cfg = QueuePairConfig::admin(SUBNQN, "nqn.2024-01.io.ferrite:h", [1; 16]);
    admin_cfg.queue_depth = 4;
    let mut admin =
        QueuePair::connect(t.addr, admin_cfg, Duration::from_secs(5)).expect("admin queue");
    let ka = Command::new(opcode::admin::KEEP_ALIVE, 0);
    for _ in 0..4 {
        admin.submit(&ka, Data::None).expect("room");
    }
    assert!(matches!(
        admin.submit(&ka, Data::None),
        Err(HostError::QueueFull { depth: 4 })
    ));
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while out.len() < 4 {
        assert!(Instant::now() < deadline);
        admin.poll(&mut out).expect("poll");
        admin.wait(Duration::from_millis(50)).expect("wait");
    }
    let mut cids: Vec<u16> = out.iter().map(|c| c.cid.0).collect();
    cids.sort_unstable();
    assert_eq!(cids, vec![0, 1, 2, 3]);
    assert_eq!(admin.outstanding(), 0);
}

#[test]
fn many_reads_in_flight_land_in_their_own_slots() {
    let t = FakeTarget::start(FakeConfig {
        c2h_chunk: 4096,
        ..FakeConfig::default()
    });
    for lba in 0..64u64 {
        let blk = &mut t.disk()[lba as usize * 512..(lba as usize + 1) * 512];
        blk.fill(lba as u8);
    }
    let mut o = opts(&t);
    o.queue_depth = 16;
    let mut c = Controller::connect(o).expect("connect");
    let mut qps = c.take_io_queues();
    let qp = &mut qps[0];
    let mut next = 0u64;
    let mut lba_of = std::collections::HashMap::new();
    let mut out = Vec::new();
    let mut done = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    while done < 64 {
        assert!(Instant::now() < deadline, "stuck at {done}");
        while next < 64 && qp.outstanding() < 16 {
            let cmd = ReadWrite {
                nsid: 1,
                slba: next,
                nlb: 0,
                ..ReadWrite::default()
            }
            .to_command(opcode::io::READ, 0);
            let cid = qp.submit(&cmd, Data::Read(512)).expect("submit");
            lba_of.insert(cid, next);
            next += 1;
        }
        out.clear();
        qp.poll(&mut out).expect("poll");
        for d in &out {
            d.check().expect("ok");
            let lba = lba_of[&d.cid];
            assert!(qp.data(d.cid).iter().all(|&b| b == lba as u8), "lba {lba}");
            done += 1;
        }
        if out.is_empty() {
            qp.wait(Duration::from_millis(50)).expect("wait");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Random transfer sizes through every data path (in-capsule, several
    /// R2Ts, H2CData splitting, C2HData splitting) reassemble exactly.
    #[test]
    fn random_sizes_round_trip(
        blocks in 1u32..=256,
        lba in 0u64..3000,
        in_capsule_kib in 0u32..=16,
        r2t_kib in 1u32..=64,
        maxh2c_kib in 1u32..=32,
        c2h_chunk in 1u32..=70_000,
        hdgst: bool,
        ddgst: bool,
        success: bool,
        seed: u8,
    ) {
        let lba = lba.min(4096 - u64::from(blocks));
        let t = FakeTarget::start(FakeConfig {
            in_capsule: in_capsule_kib * 1024,
            r2t_chunk: r2t_kib * 1024,
            maxh2cdata: maxh2c_kib * 4096,
            c2h_chunk,
            success_flag: success,
            ..FakeConfig::default()
        });
        let mut o = opts(&t);
        o.header_digest = hdgst;
        o.data_digest = ddgst;
        o.disable_sq_flow_control = success;
        let mut c = Controller::connect(o).expect("connect");
        let data = pattern(blocks as usize * 512, seed);
        c.write(1, 1, lba, &data, false).expect("write");
        let at = lba as usize * 512;
        prop_assert_eq!(&t.disk()[at..at + data.len()], &data[..]);
        let mut back = vec![0u8; data.len()];
        c.read(1, 1, lba, blocks, &mut back).expect("read");
        prop_assert_eq!(back, data);
    }
}

/// A scripted peer: ICResp, a successful Connect response, then `tail`
/// (whatever the test wants the host to swallow), then close.
fn scripted_peer(tail: Vec<u8>) -> std::net::SocketAddr {
    scripted_peer_reporting(tail, None)
}

/// [`scripted_peer`] that also reports what the host sent after the tail.
fn scripted_peer_reporting(
    tail: Vec<u8>,
    report: Option<std::sync::mpsc::Sender<Vec<u8>>>,
) -> std::net::SocketAddr {
    use ferrite_nvme::tcp::{encode_capsule_resp, encode_icresp};
    use std::io::{Read, Write};
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    std::thread::spawn(move || {
        let Ok((mut s, _)) = l.accept() else { return };
        let mut icreq = [0u8; 128];
        if s.read_exact(&mut icreq).is_err() {
            return;
        }
        let mut b = [0u8; 128];
        let n = encode_icresp(0, Digests::default(), 8192, &mut b).expect("icresp");
        let _ = s.write_all(&b[..n]);
        // The Connect capsule: 72-byte header + 1024 bytes of data.
        let mut connect = [0u8; 72 + 1024];
        if s.read_exact(&mut connect).is_err() {
            return;
        }
        let cqe = ferrite_nvme::Completion::new(0, Status::SUCCESS).with_result(1);
        let n = encode_capsule_resp(&cqe, false, &mut b).expect("resp");
        let _ = s.write_all(&b[..n]);
        // Let the host submit its read before the tail arrives.
        let mut cmd = [0u8; 72];
        let _ = s.read_exact(&mut cmd);
        let _ = s.write_all(&tail);
        if let Some(report) = report {
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let mut after = Vec::new();
            let _ = s.read_to_end(&mut after);
            let _ = report.send(after);
        }
    });
    addr
}

/// A well-formed answer to a 4 KiB read with cid 1: two C2HData and a CapsuleResp.
fn valid_read_answer() -> Vec<u8> {
    use ferrite_nvme::tcp::{encode_c2h_data, encode_capsule_resp, C2hDataFlags};
    let mut v = Vec::new();
    let mut b = [0u8; 64];
    for (off, last) in [(0u32, false), (2048, true)] {
        let flags = C2hDataFlags {
            last,
            success: false,
        };
        let n = encode_c2h_data(1, off, 2048, flags, Digests::default(), 0, &mut b).expect("c2h");
        v.extend_from_slice(&b[..n]);
        v.extend(std::iter::repeat_n(0xC3, 2048));
    }
    let cqe = ferrite_nvme::Completion::new(1, Status::SUCCESS);
    let n = encode_capsule_resp(&cqe, false, &mut b).expect("resp");
    v.extend_from_slice(&b[..n]);
    v
}

/// Connects to a scripted peer, reads 4 KiB (cid 1) and polls until the
/// peer's close ends the queue. Returns the completions seen.
fn swallow(tail: Vec<u8>) -> Vec<Completed> {
    swallow_at(scripted_peer(tail))
}

fn swallow_at(addr: std::net::SocketAddr) -> Vec<Completed> {
    let mut cfg = QueuePairConfig::admin(SUBNQN, "nqn.2024-01.io.ferrite:h", [1; 16]);
    cfg.qid = 1;
    cfg.cntlid = 1;
    let mut qp = QueuePair::connect(addr, cfg, Duration::from_secs(5)).expect("connect");
    let read = ReadWrite {
        nsid: 1,
        ..ReadWrite::default()
    }
    .to_command(opcode::io::READ, 0);
    let cid = qp.submit(&read, Data::Read(4096)).expect("submit");
    assert_eq!(cid.0, 1, "cid 0 went to Connect");
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        assert!(Instant::now() < deadline, "the peer's close was never seen");
        match qp.poll(&mut out) {
            Ok(_) => {
                qp.wait(Duration::from_millis(20)).expect("wait");
            }
            Err(_) => return out,
        }
    }
}

#[test]
fn scripted_valid_answer_completes() {
    let out = swallow(valid_read_answer());
    assert_eq!(out.len(), 1);
    out[0].check().expect("good read");
    assert_eq!(out[0].data_len, 4096);
}

#[test]
fn host_reports_violations_with_an_h2c_term_req() {
    use ferrite_nvme::tcp::{encode_capsule_resp, TermReqHeader};
    let mut tail = [0u8; 24];
    let cqe = ferrite_nvme::Completion::new(9, Status::SUCCESS);
    encode_capsule_resp(&cqe, false, &mut tail).expect("resp");
    let (tx, rx) = std::sync::mpsc::channel();
    let out = swallow_at(scripted_peer_reporting(tail.to_vec(), Some(tx)));
    assert!(out.is_empty());
    let sent = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("peer report");
    let t = TermReqHeader::parse(&sent).expect("an H2CTermReq");
    assert_eq!(t.ch.pdu_type, 2);
    assert_eq!(t.fes.get(), fes::INVALID_HEADER_FIELD);
    assert_eq!(t.fei.get(), 8);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Whatever a peer sends after Connect, the host ends with an error
    /// (at the latest the close) and never panics or misreports.
    #[test]
    fn random_bytes_from_the_target_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = swallow(tail);
    }

    /// Bit flips in a valid answer are caught or harmless, never a panic.
    #[test]
    fn corrupted_answers_never_panic(flips in proptest::collection::vec((0usize..4200, any::<u8>()), 1..4)) {
        let mut tail = valid_read_answer();
        for (at, x) in flips {
            let i = at % tail.len();
            tail[i] ^= x.max(1);
        }
        for c in swallow(tail) {
            // A completion that claims success never comes with short data unnoticed.
            if c.check().is_ok() {
                prop_assert_eq!(c.data_len, 4096);
            }
        }
    }
}

#[test]
fn unwaited_admin_completions_are_kept_for_later() {
    let t = FakeTarget::start(FakeConfig::default());
    let mut c = Controller::connect(opts(&t)).expect("connect");
    let cid = c.submit_async_event_request().expect("aer");
    // Waiting on another command stashes the AER's completion
    // (the fake target refuses AERs with Invalid Opcode at once).
    c.keep_alive().expect("keep alive");
    c.keep_alive().expect("keep alive");
    let deadline = Instant::now() + Duration::from_secs(5);
    let events = loop {
        let ev = c.take_admin_events().expect("poll");
        if !ev.is_empty() {
            break ev;
        }
        assert!(Instant::now() < deadline, "AER completion lost");
        std::thread::sleep(Duration::from_millis(5));
    };
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].cid, cid);
    assert_eq!(events[0].status().code(), Status::INVALID_OPCODE);
}
