//! The NVMe/TCP transport at its own level: an in-process target driven by raw PDUs. Framing
//! (PDUs split across reads and several in one), R2T/H2CData bookkeeping (several H2CData per
//! R2T, slots and transfer tags released and reused), error paths (data digest, bad H2CData),
//! and in-capsule data waiting for pooled buffers when the pool is empty.

mod common;

use std::collections::HashMap;

use common::{completion, pattern, rw, InProcess, BLOCK, T};
use ferrite_host::{Controller, RawConnection, RawEvent};
use ferrite_nvme::command::opcode;
use ferrite_nvme::tcp::{fes, DataHeader, Digests};
use ferrite_nvme::{Completion, Status};
use ferrite_reactor::RuntimeConfig;

const BOTH: Digests = Digests {
    header: true,
    data: true,
};

fn in_capsule_write(r: &RawConnection, cid: u16, lba: u64, data: &[u8]) -> Vec<u8> {
    let mut cmd = rw(opcode::io::WRITE, cid, lba, data.len() / BLOCK);
    cmd.set_psdt(ferrite_nvme::command::PSDT_SGL_MPTR_CONTIGUOUS);
    cmd.dptr = ferrite_nvme::SglDescriptor::in_capsule(0, data.len() as u32);
    r.capsule_bytes(&cmd, data).expect("capsule")
}

fn read_cmd(r: &RawConnection, cid: u16, lba: u64, blocks: usize) -> Vec<u8> {
    let cmd = RawConnection::with_transport_sgl(
        rw(opcode::io::READ, cid, lba, blocks),
        (blocks * BLOCK) as u32,
    );
    r.capsule_bytes(&cmd, &[]).expect("capsule")
}

/// An in-process target with `blocks` blocks, an enabled controller of host `uuid` and a raw
/// connection carrying its I/O queue 1.
fn queue(
    cfg: RuntimeConfig,
    blocks: u64,
    uuid: [u8; 16],
    digests: Digests,
) -> (InProcess, Controller, RawConnection) {
    let t = InProcess::start(cfg, blocks);
    let ctrl = t.controller(uuid);
    let r = t.raw_io_queue(&ctrl, uuid, 1, digests);
    (t, ctrl, r)
}

/// Collects `n` completions (and the C2H data of each cid) in whatever order they come.
fn collect(r: &mut RawConnection, n: usize) -> HashMap<u16, (Completion, Vec<u8>)> {
    let mut out = HashMap::new();
    let mut data: HashMap<u16, Vec<u8>> = HashMap::new();
    while out.len() < n {
        match r.recv(T).expect("recv") {
            RawEvent::Pdu(p) => {
                if let Some((h, d)) = p.c2h_data() {
                    data.entry(h.cccid.get()).or_default().extend_from_slice(d);
                } else {
                    let cqe = p
                        .capsule_resp()
                        .unwrap_or_else(|| panic!("expected a CapsuleResp, got {p:?}"));
                    let d = data.remove(&cqe.cid()).unwrap_or_default();
                    out.insert(cqe.cid(), (cqe, d));
                }
            }
            other => panic!(
                "expected a response, got {other:?} after {} of {n}",
                out.len()
            ),
        }
    }
    out
}

fn read_back(r: &mut RawConnection, cid: u16, lba: u64, blocks: usize) -> Vec<u8> {
    let pdu = read_cmd(r, cid, lba, blocks);
    r.send(&pdu).expect("send read");
    let mut got = collect(r, 1);
    let (cqe, data) = got.remove(&cid).expect("the read's completion");
    assert!(cqe.status().is_success(), "read: {}", cqe.status());
    data
}

#[test]
fn pdus_split_across_reads_and_packed_together_are_framed() {
    let (t, ctrl, mut r) = queue(RuntimeConfig::testing(1), 4096, [0x11; 16], BOTH);

    // One write, fed to the socket a few bytes at a time.
    let data = pattern(2048, 1);
    let pdu = in_capsule_write(&r, 1, 0, &data);
    for chunk in pdu.chunks(7) {
        r.send(chunk).expect("send a piece");
    }
    let got = collect(&mut r, 1);
    assert!(got[&1].0.status().is_success(), "{}", got[&1].0.status());
    assert!(read_back(&mut r, 2, 0, 4) == data);

    // Twenty commands in one send: writes to their own LBAs and reads of the first one.
    let mut burst = Vec::new();
    let mut expect = HashMap::new();
    for i in 0..10u16 {
        let d = pattern(1024, 100 + u64::from(i));
        burst.extend(in_capsule_write(&r, 10 + i, 64 + u64::from(i) * 2, &d));
        expect.insert(10 + i, d);
        burst.extend(read_cmd(&r, 30 + i, 0, 4));
    }
    r.send(&burst).expect("send the burst");
    let got = collect(&mut r, 20);
    for (cid, (cqe, d)) in &got {
        assert!(cqe.status().is_success(), "cid {cid}: {}", cqe.status());
        if *cid >= 30 {
            assert!(*d == data, "cid {cid} read other data");
        }
    }
    for (cid, d) in expect {
        let lba = 64 + u64::from(cid - 10) * 2;
        assert!(read_back(&mut r, 99, lba, 2) == d, "write {cid}");
    }
    drop(ctrl);
    t.stop();
}

#[test]
fn r2t_transfers_in_several_h2c_pdus_release_their_slots() {
    let (t, ctrl, mut r) = queue(RuntimeConfig::testing(1), 4096, [0x12; 16], BOTH);
    const LEN: usize = 32 * 1024;
    const PIECE: usize = 8 * 1024;
    // More rounds with the same cid than a connection has slots: each must be released.
    for round in 0..(ferrite_nvmf::MAX_COMMAND_SLOTS as u64 + 20) {
        let data = pattern(LEN, round);
        let lba = (round % 8) * (LEN / BLOCK) as u64;
        let cmd = RawConnection::with_transport_sgl(
            rw(opcode::io::WRITE, 7, lba, LEN / BLOCK),
            LEN as u32,
        );
        r.send_capsule(&cmd, &[]).expect("send write");
        let r2t = match r.recv(T).expect("recv") {
            RawEvent::Pdu(p) => p
                .r2t()
                .unwrap_or_else(|| panic!("expected an R2T, got {p:?}")),
            other => panic!("expected an R2T, got {other:?}"),
        };
        assert_eq!(r2t.cccid.get(), 7);
        assert_eq!((r2t.r2to.get(), r2t.r2tl.get()), (0, LEN as u32));
        for (i, piece) in data.chunks(PIECE).enumerate() {
            let last = (i + 1) * PIECE == LEN;
            let h2c = r
                .h2c_bytes(7, r2t.ttag.get(), (i * PIECE) as u32, piece, last)
                .expect("h2c");
            r.send(&h2c).expect("send h2c");
        }
        let cqe = completion(r.recv(T).expect("recv"), 7);
        assert!(cqe.status().is_success(), "round {round}: {}", cqe.status());
        if round % 40 == 0 {
            assert!(
                read_back(&mut r, 8, lba, LEN / BLOCK) == data,
                "round {round}"
            );
        }
    }
    drop(ctrl);
    t.stop();
}

#[test]
fn bad_h2c_data_ends_the_connection_with_a_term_req() {
    let t = InProcess::start(RuntimeConfig::testing(1), 4096);
    let uuid = [0x13; 16];
    let ctrl = t.controller(uuid);
    // (case, ttag delta, data offset, expected (FES, FEI))
    let cases = [
        (
            "wrong transfer tag",
            1u16,
            0u32,
            (fes::INVALID_HEADER_FIELD, DataHeader::TTAG_OFFSET),
        ),
        (
            "data out of order",
            0,
            4096,
            (fes::DATA_OUT_OF_RANGE, DataHeader::DATAO_OFFSET),
        ),
    ];
    for (case, delta, datao, want) in cases {
        let mut r = t.raw_io_queue(&ctrl, uuid, 1, Digests::default());
        let cmd = RawConnection::with_transport_sgl(rw(opcode::io::WRITE, 5, 0, 16), 8192);
        r.send_capsule(&cmd, &[]).expect("send write");
        let r2t = match r.recv(T).expect("recv") {
            RawEvent::Pdu(p) => p.r2t().unwrap_or_else(|| panic!("{case}: no R2T: {p:?}")),
            other => panic!("{case}: expected an R2T, got {other:?}"),
        };
        let h2c = r
            .h2c_bytes(
                5,
                r2t.ttag.get().wrapping_add(delta),
                datao,
                &[1; 4096],
                false,
            )
            .expect("h2c");
        r.send(&h2c).expect("send h2c");
        match r.recv(T).expect("recv") {
            RawEvent::Pdu(p) => assert_eq!(p.term_req(), Some(want), "{case}: {p:?}"),
            other => panic!("{case}: expected a C2HTermReq, got {other:?}"),
        }
        assert!(
            r.wait_closed(T).expect("recv"),
            "{case}: closed after the TermReq"
        );
    }
    // The queue id is free again and a well-formed transfer works.
    let mut r = t.raw_io_queue(&ctrl, uuid, 1, Digests::default());
    let data = pattern(1024, 9);
    r.send(&in_capsule_write(&r, 1, 0, &data)).expect("send");
    assert!(completion(r.recv(T).expect("recv"), 1)
        .status()
        .is_success());
    drop(ctrl);
    t.stop();
}

#[test]
fn a_data_digest_error_fails_only_its_command() {
    let (t, ctrl, mut r) = queue(RuntimeConfig::testing(1), 4096, [0x14; 16], BOTH);
    let good = pattern(2048, 1);
    r.send(&in_capsule_write(&r, 1, 0, &good)).expect("send");
    assert!(completion(r.recv(T).expect("recv"), 1)
        .status()
        .is_success());
    let mut bad = in_capsule_write(&r, 2, 0, &pattern(2048, 2));
    let n = bad.len();
    bad[n - 1] ^= 0xFF; // the data digest
    r.send(&bad).expect("send");
    let cqe = completion(r.recv(T).expect("recv"), 2);
    assert_eq!(cqe.status().code(), Status::TRANSIENT_TRANSPORT_ERROR);
    assert!(
        read_back(&mut r, 3, 0, 4) == good,
        "the refused write did not land"
    );
    // Same cid again: its slot was released.
    let again = pattern(2048, 3);
    r.send(&in_capsule_write(&r, 2, 0, &again)).expect("send");
    assert!(completion(r.recv(T).expect("recv"), 2)
        .status()
        .is_success());
    assert!(read_back(&mut r, 3, 0, 4) == again);
    drop(ctrl);
    t.stop();
}

#[test]
fn in_capsule_data_waits_for_pooled_buffers() {
    // Four small and four large buffers: a burst of 8 KiB in-capsule writes and R2T writes
    // empties the pool many times over. Every command must still complete with its data.
    let mut cfg = RuntimeConfig::testing(1);
    cfg.small_buffers = 4;
    cfg.large_buffers = 4;
    let (t, ctrl, mut r) = queue(cfg, 8192, [0x15; 16], BOTH);
    for round in 0..5u64 {
        let mut burst = Vec::new();
        let mut expect = Vec::new();
        for i in 0..30u16 {
            let d = pattern(8192, round * 100 + u64::from(i));
            let lba = u64::from(i) * 16;
            burst.extend(in_capsule_write(&r, i, lba, &d));
            expect.push((lba, d));
        }
        r.send(&burst).expect("send the burst");
        let got = collect(&mut r, 30);
        for (cid, (cqe, _)) in &got {
            assert!(
                cqe.status().is_success(),
                "round {round} cid {cid}: {}",
                cqe.status()
            );
        }
        for (i, (lba, d)) in expect.iter().enumerate() {
            assert!(
                read_back(&mut r, 40, *lba, 16) == *d,
                "round {round}: write {i} read back other data"
            );
        }
    }
    drop(ctrl);
    t.stop();
}
