//! Network-level fuzzing of a real `ferrited`: several threads open NVMe/TCP connections and
//! send mutated PDU sequences (ICReq, Connect, Property Set/Get, Identify, Get Log Page, Keep
//! Alive, Reads, Writes in-capsule and through R2T with H2CData, random PDUs), each PDU
//! possibly with flipped bits, a wrong PDU type, header or data length, truncated or extended,
//! dropped, duplicated, or sent in fragments. Some sessions first set up a controller cleanly
//! so that the mutated commands reach the I/O path of an enabled controller.
//!
//! Meanwhile a well-behaved host ([`common::GoodHost`]) does verified I/O on a subsystem only it
//! may reach. The daemon must stay alive and log no panic, the good host must keep making
//! progress, data it wrote before the fuzzing must be intact afterwards, and new writes after
//! it must read back.
//!
//! `FERRITE_NETFUZZ_SECS=600 FERRITE_NETFUZZ_SEED=N cargo nextest run -p ferrite-daemon
//! --test net_fuzz --no-capture` runs longer or replays a seed (printed by every run).

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{free_port, pattern, shared_config, Ferrited, GoodHost, GOOD_NQN, NQN};
use ferrite_host::controller::uuid_hostnqn;
use ferrite_host::{Controller, RawConnection, RawEvent};
use ferrite_nvme::admin::Identify;
use ferrite_nvme::command::opcode;
use ferrite_nvme::fabrics::{Cc, PropertyGet, PropertySet, PropertySize, CNTLID_DYNAMIC};
use ferrite_nvme::io::ReadWrite;
use ferrite_nvme::tcp::{encode_icreq, Digests};
use ferrite_nvme::{Command, Completion, SglDescriptor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const DEFAULT_SECS: u64 = 20;
/// Controller Configuration and Status property offsets.
const CC: u32 = 0x14;
const CSTS: u32 = 0x1C;
/// Fuzzing connections at once.
const THREADS: u64 = 4;
/// How long a step waits for the target.
const T: Duration = Duration::from_secs(2);
/// The region of the good subsystem written before the fuzzing (beyond the good host's slots).
const BEFORE_LBA: u64 = 16_384;
const BEFORE_BLOCKS: usize = 2048;
/// And after it.
const AFTER_LBA: u64 = BEFORE_LBA + BEFORE_BLOCKS as u64;
const AFTER_BLOCKS: usize = 1024;

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|s| s.parse().ok())
}

/// What the fuzzing threads did.
#[derive(Default)]
struct Stats {
    sessions: AtomicU64,
    io_sessions: AtomicU64,
    pdus: AtomicU64,
    bytes: AtomicU64,
    mutated: AtomicU64,
    responses: AtomicU64,
    closed_by_target: AtomicU64,
    refused: AtomicU64,
}

fn bump(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// Changes one PDU the way a broken or hostile host would.
fn mutate(rng: &mut StdRng, pdu: &mut Vec<u8>) {
    if pdu.is_empty() {
        pdu.push(rng.gen());
        return;
    }
    let len = pdu.len();
    match rng.gen_range(0..10) {
        // One to four flipped bits anywhere.
        0 | 1 => {
            for _ in 0..rng.gen_range(1..=4) {
                let i = rng.gen_range(0..len);
                pdu[i] ^= 1 << rng.gen_range(0..8);
            }
        }
        // A header byte (type, flags, HLEN, PDO) replaced.
        2 => pdu[rng.gen_range(0..len.min(4))] = rng.gen(),
        // PLEN: random, or off by a little.
        3 if len >= 8 => {
            let plen = u32::from_le_bytes([pdu[4], pdu[5], pdu[6], pdu[7]]);
            let v = if rng.gen_bool(0.5) {
                rng.gen()
            } else {
                plen.wrapping_add(rng.gen_range(0..16)).wrapping_sub(8)
            };
            pdu[4..8].copy_from_slice(&v.to_le_bytes());
        }
        // A byte of the command / PDU-specific header replaced (opcode, CID, NSID, SGL, CDWs).
        4 | 5 if len > 8 => {
            let i = rng.gen_range(8..len.min(72));
            pdu[i] = rng.gen();
        }
        // Truncated.
        6 => pdu.truncate(rng.gen_range(0..len)),
        // Garbage appended.
        7 => {
            let n = rng.gen_range(1..64);
            pdu.extend((0..n).map(|_| rng.gen::<u8>()));
        }
        // Entirely random bytes of the same length.
        8 => rng.fill(&mut pdu[..]),
        // A 32-bit field somewhere set to an extreme.
        _ if len >= 4 => {
            let i = rng.gen_range(0..=len - 4) & !3;
            let v = [0u32, 1, u32::MAX, 0x8000_0000, 0xFFFF][rng.gen_range(0..5)];
            pdu[i..i + 4].copy_from_slice(&v.to_le_bytes());
        }
        _ => pdu[0] = rng.gen(),
    }
}

/// A random PDU: a type (valid or not) and a header of random length and content.
fn random_pdu(rng: &mut StdRng) -> Vec<u8> {
    let hlen = rng.gen_range(8..=128u8);
    let extra = rng.gen_range(0..64usize);
    let mut p = vec![0u8; usize::from(hlen) + extra];
    rng.fill(&mut p[..]);
    p[0] = rng.gen_range(0..=0x0Fu8);
    p[2] = hlen;
    let plen = p.len() as u32;
    p[4..8].copy_from_slice(&plen.to_le_bytes());
    p
}

fn rw(nsid: u32, slba: u64, blocks: u32, write: bool, cid: u16) -> Command {
    let cmd = ReadWrite {
        nsid,
        slba,
        nlb: (blocks - 1) as u16,
        ..ReadWrite::default()
    };
    let op = if write {
        opcode::io::WRITE
    } else {
        opcode::io::READ
    };
    RawConnection::with_transport_sgl(cmd.to_command(op, cid), blocks * 512)
}

/// One well-formed command PDU (before mutation), admin or I/O, for the fuzzed connection.
fn command_pdu(rng: &mut StdRng, conn: &RawConnection, cid: u16, io: bool) -> Vec<Vec<u8>> {
    // No-data commands carry a zero-length transport SGL (as a host sends them).
    let capsule = |cmd: &Command, data: &[u8]| {
        let cmd = if cmd.dptr == Command::default().dptr {
            RawConnection::with_transport_sgl(*cmd, 0)
        } else {
            *cmd
        };
        conn.capsule_bytes(&cmd, data).unwrap_or_default()
    };
    let nsid = if rng.gen_bool(0.9) { 1 } else { rng.gen() };
    let slba = if rng.gen_bool(0.9) {
        rng.gen_range(0..131_072u64)
    } else {
        rng.gen()
    };
    let blocks = rng.gen_range(1..=64u32);
    match rng.gen_range(0..if io { 9 } else { 6 }) {
        0 => vec![capsule(
            &PropertySet {
                size: PropertySize::Four,
                offset: CC,
                value: if rng.gen_bool(0.8) {
                    u64::from(Cc::build(true, 0, 0, 0, 0, 6, 4).0)
                } else {
                    rng.gen::<u32>().into()
                },
            }
            .to_command(cid),
            &[],
        )],
        1 => vec![capsule(
            &PropertyGet {
                size: if rng.gen_bool(0.5) {
                    PropertySize::Four
                } else {
                    PropertySize::Eight
                },
                offset: [0u32, 0x8, CC, CSTS, rng.gen()][rng.gen_range(0..5)],
            }
            .to_command(cid),
            &[],
        )],
        2 => {
            let id = Identify {
                cns: [0u8, 1, 2, 3, rng.gen()][rng.gen_range(0..5)],
                cntid: 0,
                cnssid: 0,
                csi: 0,
                nsid,
            };
            vec![capsule(
                &RawConnection::with_transport_sgl(id.to_command(cid), 4096),
                &[],
            )]
        }
        3 => {
            let mut cmd = Command::new(opcode::admin::GET_LOG_PAGE, cid);
            let numd = rng.gen_range(0..2048u32);
            cmd.cdw10 = (u32::from(rng.gen::<u8>() % 0x10) | (numd << 16)).into();
            cmd.nsid = 0xFFFF_FFFFu32.into();
            vec![capsule(
                &RawConnection::with_transport_sgl(cmd, (numd + 1) * 4),
                &[],
            )]
        }
        4 => vec![capsule(&Command::new(opcode::admin::KEEP_ALIVE, cid), &[])],
        5 => vec![random_pdu(rng)],
        6 => vec![capsule(&rw(nsid, slba, blocks, false, cid), &[])],
        7 => {
            // In-capsule write (the target's in-capsule limit is 8 KiB).
            let blocks = blocks.min(16);
            let data = vec![0xF0u8; blocks as usize * 512];
            let mut cmd = rw(nsid, slba, blocks, true, cid);
            cmd.dptr = SglDescriptor::in_capsule(0, data.len() as u32);
            vec![capsule(&cmd, &data)]
        }
        _ => {
            // Write through R2T: the command, then H2CData for the transfer tag the target
            // most likely chose (or not).
            let data = vec![0x0Fu8; blocks as usize * 512];
            let ttag = rng.gen_range(0..4u16);
            let mut v = vec![capsule(&rw(nsid, slba, blocks, true, cid), &[])];
            let mut off = 0usize;
            while off < data.len() {
                let n = (data.len() - off).min(rng.gen_range(1..=32) * 512);
                let last = off + n == data.len();
                v.push(
                    conn.h2c_bytes(cid, ttag, off as u32, &data[off..off + n], last)
                        .unwrap_or_default(),
                );
                off += n;
            }
            v
        }
    }
}

/// Reads whatever the target sends for up to `wait`; false when it closed the connection.
fn drain(conn: &mut RawConnection, wait: Duration, stats: &Stats) -> bool {
    let deadline = Instant::now() + wait;
    loop {
        let now = Instant::now();
        if now >= deadline {
            return true;
        }
        match conn.recv(deadline - now) {
            Ok(RawEvent::Pdu(_)) => bump(&stats.responses, 1),
            Ok(RawEvent::TimedOut) => return true,
            Ok(RawEvent::Closed { .. }) | Err(_) => {
                bump(&stats.closed_by_target, 1);
                return false;
            }
        }
    }
}

/// Sends `pdus` after mutating some of them, in fragments now and then.
fn send_mutated(rng: &mut StdRng, conn: &mut RawConnection, pdus: Vec<Vec<u8>>, stats: &Stats) {
    let mut wire = Vec::new();
    for mut p in pdus {
        match rng.gen_range(0..20) {
            0 => continue, // dropped
            1 => wire.push(p.clone()),
            _ => {}
        }
        if rng.gen_bool(0.3) {
            mutate(rng, &mut p);
            bump(&stats.mutated, 1);
        }
        wire.push(p);
    }
    if wire.len() > 1 && rng.gen_bool(0.05) {
        let (a, b) = (rng.gen_range(0..wire.len()), rng.gen_range(0..wire.len()));
        wire.swap(a, b);
    }
    for p in wire {
        bump(&stats.pdus, 1);
        bump(&stats.bytes, p.len() as u64);
        let sent = if p.len() > 1 && rng.gen_bool(0.1) {
            let at = rng.gen_range(1..p.len());
            conn.send(&p[..at]).and_then(|()| {
                std::thread::sleep(Duration::from_micros(rng.gen_range(0..500)));
                conn.send(&p[at..])
            })
        } else {
            conn.send(&p)
        };
        if sent.is_err() {
            bump(&stats.closed_by_target, 1);
            return;
        }
        if rng.gen_bool(0.2) && !drain(conn, Duration::from_millis(2), stats) {
            return;
        }
    }
    drain(conn, Duration::from_millis(20), stats);
}

/// A TCP connection to the target (counted when refused).
fn open(addr: SocketAddr, stats: &Stats) -> Option<RawConnection> {
    let c = RawConnection::connect(addr, T).ok();
    if c.is_none() {
        bump(&stats.refused, 1);
    }
    c
}

/// Header and data digests, each asked for with probability `p`.
fn random_digests(rng: &mut StdRng, p: f64) -> Digests {
    Digests {
        header: rng.gen_bool(p),
        data: rng.gen_bool(p),
    }
}

/// A connection that starts with a (mutated) ICReq and admin Connect.
fn admin_session(rng: &mut StdRng, addr: SocketAddr, stats: &Stats) {
    let Some(mut conn) = open(addr, stats) else {
        return;
    };
    let digests = random_digests(rng, 0.2);
    let mut ic = [0u8; 128];
    let n = encode_icreq(rng.gen_range(0..2), digests, 0, &mut ic).unwrap_or(0);
    conn.digests = digests;
    let subnqn = match rng.gen_range(0..20) {
        0..=16 => NQN,
        17 | 18 => GOOD_NQN,
        _ => "nqn.2014-08.org.nvmexpress.discovery",
    };
    let hostid: [u8; 16] = rng.gen();
    let connect = ferrite_nvme::fabrics::ConnectCommand {
        recfmt: 0,
        qid: if rng.gen_bool(0.9) { 0 } else { rng.gen() },
        sqsize: rng.gen_range(0..128),
        cattr: 0,
        kato: rng.gen_range(0..60_000),
    }
    .to_command(0);
    let data = ferrite_nvme::fabrics::ConnectData::new(
        hostid,
        CNTLID_DYNAMIC,
        subnqn,
        &uuid_hostnqn(&hostid),
    )
    .map(|d| zerocopy::IntoBytes::as_bytes(&d).to_vec())
    .unwrap_or_default();
    let mut pdus = vec![
        ic[..n].to_vec(),
        conn.capsule_bytes(&connect, &data).unwrap_or_default(),
    ];
    for cid in 1..rng.gen_range(1..12u16) {
        pdus.extend(command_pdu(rng, &conn, cid, false));
    }
    send_mutated(rng, &mut conn, pdus, stats);
}

/// Sends an admin command and waits for its completion (None on failure or timeout).
fn admin_call(conn: &mut RawConnection, cmd: &Command) -> Option<Completion> {
    conn.send_capsule(&RawConnection::with_transport_sgl(*cmd, 0), &[])
        .ok()?;
    match conn.recv(T) {
        Ok(RawEvent::Pdu(p)) => p.capsule_resp().filter(|c| c.status().is_success()),
        _ => None,
    }
}

/// A clean admin Connect and CC.EN=1, then an I/O queue connection that gets the mutated
/// commands: the fuzzing reaches the I/O path of an enabled controller.
fn io_session(rng: &mut StdRng, addr: SocketAddr, stats: &Stats) {
    let hostid: [u8; 16] = rng.gen();
    let hostnqn = uuid_hostnqn(&hostid);
    let Some(mut admin) = open(addr, stats) else {
        return;
    };
    let Ok(cqe) = admin.connect_admin(NQN, &hostnqn, hostid, T) else {
        return;
    };
    if !cqe.status().is_success() {
        return;
    }
    let cntlid = cqe.result() as u16;
    let enable = PropertySet {
        size: PropertySize::Four,
        offset: CC,
        value: u64::from(Cc::build(true, 0, 0, 0, 0, 6, 4).0),
    }
    .to_command(1);
    if admin_call(&mut admin, &enable).is_none() {
        return;
    }
    // Wait (bounded) for CSTS.RDY.
    let deadline = Instant::now() + T;
    loop {
        let get = PropertyGet {
            size: PropertySize::Four,
            offset: CSTS,
        }
        .to_command(2);
        match admin_call(&mut admin, &get) {
            Some(c) if c.result() & 1 == 1 => break,
            Some(_) if Instant::now() < deadline => {}
            _ => return,
        }
    }
    // Number of Queues: one I/O queue, as a host asks before connecting it.
    let mut queues = Command::new(opcode::admin::SET_FEATURES, 3);
    queues.cdw10 = u32::from(ferrite_nvme::admin::fid::NUMBER_OF_QUEUES).into();
    if admin_call(&mut admin, &queues).is_none() {
        return;
    }
    let Some(mut io) = open(addr, stats) else {
        return;
    };
    let digests = random_digests(rng, 0.3);
    if io.handshake(digests, T).is_err() {
        return;
    }
    match io.send_connect(1, 31, cntlid, NQN, &hostnqn, hostid, T) {
        Ok(RawEvent::Pdu(p)) if p.capsule_resp().is_some_and(|c| c.status().is_success()) => {}
        _ => return,
    }
    bump(&stats.io_sessions, 1);
    let pdus = (1..rng.gen_range(2..24u16))
        .flat_map(|cid| command_pdu(rng, &io, cid, true))
        .collect();
    send_mutated(rng, &mut io, pdus, stats);
}

fn fuzz_thread(seed: u64, addr: SocketAddr, deadline: Instant, stop: &AtomicBool, stats: &Stats) {
    let mut rng = StdRng::seed_from_u64(seed);
    while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
        if rng.gen_bool(0.4) {
            io_session(&mut rng, addr, stats);
        } else {
            admin_session(&mut rng, addr, stats);
        }
        bump(&stats.sessions, 1);
    }
}

#[test]
fn mutated_pdu_streams_leave_the_daemon_and_other_hosts_data_intact() {
    let secs = env_u64("FERRITE_NETFUZZ_SECS")
        .filter(|&s| s > 0)
        .unwrap_or(DEFAULT_SECS);
    let seed = env_u64("FERRITE_NETFUZZ_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    eprintln!("net_fuzz: {secs} s, {THREADS} threads, seed {seed} (FERRITE_NETFUZZ_SEED replays)");
    let mut t = Ferrited::start(&shared_config(free_port()));

    // The well-behaved host's data written before the fuzzing.
    let mut c = Controller::connect(t.good_options()).expect("good host connects");
    let before = pattern(BEFORE_LBA, BEFORE_BLOCKS, 512, 0xBEF0);
    for (i, chunk) in before.chunks(64 * 512).enumerate() {
        let lba = BEFORE_LBA + (i * 64) as u64;
        c.write(1, 1, lba, chunk, false)
            .expect("write before the fuzzing");
    }
    c.flush(1, 1).expect("flush");
    let good = GoodHost::start(&t);

    let stats = Arc::new(Stats::default());
    let stop = Arc::new(AtomicBool::new(false));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let threads: Vec<_> = (0..THREADS)
        .map(|i| {
            let (stats, stop, addr) = (Arc::clone(&stats), Arc::clone(&stop), t.addr);
            std::thread::spawn(move || {
                fuzz_thread(seed.wrapping_add(i), addr, deadline, &stop, &stats)
            })
        })
        .collect();
    let mut checks = 0;
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500).min(deadline - Instant::now()));
        // Stop the fuzzers before panicking so the failure report is readable.
        let alive = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            good.check(&mut t, "mutated PDU streams")
        }));
        if let Err(p) = alive {
            stop.store(true, Ordering::Relaxed);
            std::panic::resume_unwind(p);
        }
        checks += 1;
    }
    for th in threads {
        th.join().expect("fuzz thread");
    }
    let round_trips = good.stop();
    t.assert_alive("the fuzzing");

    // Data from before is intact; new data written after reads back; a new host is served.
    let mut back = vec![0u8; before.len()];
    for (i, chunk) in back.chunks_mut(64 * 512).enumerate() {
        let lba = BEFORE_LBA + (i * 64) as u64;
        c.read(1, 1, lba, 64, chunk)
            .expect("read after the fuzzing");
    }
    assert!(back == before, "data written before the fuzzing changed");
    let after = pattern(AFTER_LBA, AFTER_BLOCKS, 512, 0xAF7E);
    c.write(1, 1, AFTER_LBA, &after[..64 * 512], false)
        .expect("write after the fuzzing");
    let mut back = vec![0u8; 64 * 512];
    c.read(1, 1, AFTER_LBA, 64, &mut back)
        .expect("read back after the fuzzing");
    assert!(
        back == after[..64 * 512],
        "data written after the fuzzing reads back wrong"
    );
    c.disconnect();
    let mut fresh = t.connect(1);
    let ns = fresh.identify_namespace(1).expect("a new host is served");
    assert!(ns.nsze.get() > 0);
    fresh.disconnect();
    t.assert_alive("the final checks");

    let s = |c: &AtomicU64| c.load(Ordering::Relaxed);
    eprintln!(
        "net_fuzz: {} sessions ({} reached an enabled I/O queue), {} PDUs ({} mutated, {} bytes), \
         {} target PDUs back, {} connections closed by the target, {} refused; good host: {} \
         verified round trips, {checks} liveness checks",
        s(&stats.sessions),
        s(&stats.io_sessions),
        s(&stats.pdus),
        s(&stats.mutated),
        s(&stats.bytes),
        s(&stats.responses),
        s(&stats.closed_by_target),
        s(&stats.refused),
        round_trips
    );
    assert!(
        s(&stats.sessions) > 0 && s(&stats.io_sessions) > 0,
        "the fuzzers ran"
    );
    t.stop();
}
