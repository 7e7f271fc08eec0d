//! Steady-state I/O through a `QueuePair` does not allocate.
//!
//! The responder thread is a canned NVMe/TCP target built on fixed arrays,
//! so it does not allocate either once connected; the global allocator
//! counts every allocation of the process.

use std::alloc::System;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use ferrite_host::{Completed, Data, QueuePair, QueuePairConfig};
use ferrite_nvme::command::opcode;
use ferrite_nvme::io::ReadWrite;
use ferrite_nvme::tcp::{
    encode_c2h_data, encode_capsule_resp, encode_icresp, encode_r2t, C2hDataFlags, Digests,
    PduType, DATA_LAST,
};
use ferrite_nvme::{Command, Completion, Status};
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const BLOCK: usize = 4096;

/// Answers ICReq, Connect, 4 KiB reads (C2HData + CapsuleResp) and
/// writes (in-capsule, or one R2T answered by H2CData) until the host closes.
fn responder(mut s: TcpStream) -> std::io::Result<()> {
    s.set_nodelay(true)?;
    let mut icreq = [0u8; 128];
    s.read_exact(&mut icreq)?;
    let mut resp = [0u8; 128];
    encode_icresp(0, Digests::default(), 1 << 20, &mut resp).expect("icresp");
    s.write_all(&resp)?;
    let mut pdu = vec![0u8; 1 << 20];
    let data = [0x5Au8; BLOCK];
    let mut out = [0u8; 64];
    loop {
        if s.read_exact(&mut pdu[..8]).is_err() {
            return Ok(());
        }
        let plen = u32::from_le_bytes([pdu[4], pdu[5], pdu[6], pdu[7]]) as usize;
        s.read_exact(&mut pdu[8..plen])?;
        let cid = if pdu[0] == PduType::H2CData as u8 {
            if pdu[1] & DATA_LAST == 0 {
                continue;
            }
            u16::from_le_bytes([pdu[8], pdu[9]])
        } else {
            let cmd = Command::parse(&pdu[8..]).expect("64 bytes");
            let cid = cmd.cid();
            if cmd.opcode == opcode::io::READ {
                let flags = C2hDataFlags {
                    last: true,
                    success: false,
                };
                let n =
                    encode_c2h_data(cid, 0, BLOCK as u32, flags, Digests::default(), 0, &mut out)
                        .expect("c2h");
                s.write_all(&out[..n])?;
                s.write_all(&data)?;
            } else if cmd.opcode == opcode::io::WRITE && cmd.dptr.id == 0x5A {
                let n = encode_r2t(cid, 1, 0, cmd.dptr.len(), false, &mut out).expect("r2t");
                s.write_all(&out[..n])?;
                continue;
            }
            cid
        };
        let cqe = Completion::new(cid, Status::SUCCESS).with_result(1);
        let n = encode_capsule_resp(&cqe, false, &mut out).expect("resp");
        s.write_all(&out[..n])?;
    }
}

fn drive(qp: &mut QueuePair, out: &mut Vec<Completed>, ios: usize, write: &[u8]) {
    let read = ReadWrite {
        nsid: 1,
        slba: 0,
        nlb: 7,
        ..ReadWrite::default()
    }
    .to_command(opcode::io::READ, 0);
    let small = ReadWrite {
        nsid: 1,
        slba: 0,
        nlb: 7,
        ..ReadWrite::default()
    }
    .to_command(opcode::io::WRITE, 0);
    let large = ReadWrite {
        nsid: 1,
        slba: 0,
        nlb: 31,
        ..ReadWrite::default()
    }
    .to_command(opcode::io::WRITE, 0);
    let (mut sent, mut done) = (0usize, 0usize);
    let deadline = Instant::now() + Duration::from_secs(20);
    while done < ios {
        assert!(Instant::now() < deadline, "stuck at {done}");
        while sent < ios && qp.outstanding() < 8 {
            match sent % 3 {
                0 => qp.submit(&read, Data::Read(BLOCK as u32)),
                1 => qp.submit(&small, Data::Write(&write[..BLOCK])),
                _ => qp.submit(&large, Data::Write(write)),
            }
            .expect("submit");
            sent += 1;
        }
        out.clear();
        qp.poll(out).expect("poll");
        for c in out.iter() {
            c.check().expect("success");
        }
        done += out.len();
        if out.is_empty() {
            qp.wait(Duration::from_millis(10)).expect("wait");
        }
    }
}

#[test]
fn steady_state_io_does_not_allocate() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let target = std::thread::spawn(move || {
        let (s, _) = listener.accept().expect("accept");
        responder(s)
    });
    let mut cfg = QueuePairConfig::admin(
        "nqn.2024-01.io.ferrite:t",
        "nqn.2024-01.io.ferrite:h",
        [3; 16],
    );
    cfg.qid = 1;
    cfg.cntlid = 1;
    cfg.queue_depth = 8;
    let mut qp = QueuePair::connect(addr, cfg, Duration::from_secs(5)).expect("connect");
    let write = vec![0xA5u8; 16 * 1024];
    let mut out = Vec::with_capacity(64);
    // Warm up: slot buffers and the send buffer reach their working sizes. On a loaded machine
    // more PDUs can pile up per read than during the warm-up, growing a buffer once more; such
    // growth is bounded, per-I/O allocation is not. So: one of four rounds of 3000 I/Os must be
    // allocation-free (a per-I/O allocation fails all four).
    drive(&mut qp, &mut out, 300, &write);
    let mut rounds = Vec::new();
    for _ in 0..4 {
        let region = Region::new(GLOBAL);
        drive(&mut qp, &mut out, 3000, &write);
        let stats = region.change();
        rounds.push(stats);
        if stats.allocations == 0 && stats.reallocations == 0 {
            break;
        }
    }
    let last = rounds.last().expect("at least one round");
    assert_eq!(last.allocations, 0, "every round allocated: {rounds:?}");
    assert_eq!(last.reallocations, 0, "every round reallocated: {rounds:?}");
    qp.close();
    target
        .join()
        .expect("responder thread")
        .expect("responder io");
}
