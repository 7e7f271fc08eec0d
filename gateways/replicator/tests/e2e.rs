//! Two real `ferrited` processes and two `ferrite-replicator`s on loopback, the replication
//! link through a fault-injecting proxy (per-connection random delays, so frames of different
//! connections overtake each other, and connections cut at random), the primary replicator
//! killed with SIGKILL and the secondary one restarted while a host writes to two namespaces of
//! one consistency group. At random points the secondary is snapshotted (both volumes at one
//! instant) and the snapshot must equal the primary's image after some prefix of its write
//! history, never an earlier prefix than the previous check; after the writes stop the
//! secondary catches up and equals the primary.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferrite_host::Controller;
use serde_json::json;

mod common;

use common::{controller, ferrited, port, replicator, rpc, status, wait_for};

const BS: usize = 512;
/// Blocks written per namespace.
const NBLK: u64 = 256;
const NQN_P: &str = "nqn.2026-01.io.ferrite:primary";
const NQN_S: &str = "nqn.2026-01.io.ferrite:secondary";

/// Block content: generation, nsid, lba, then the generation's low byte.
fn block(gen: u64, nsid: u32, lba: u64) -> [u8; BS] {
    let mut b = [gen as u8; BS];
    b[..8].copy_from_slice(&gen.to_le_bytes());
    b[8..12].copy_from_slice(&nsid.to_le_bytes());
    b[12..20].copy_from_slice(&lba.to_le_bytes());
    b
}

/// Generations of blocks 0..NBLK of a namespace (0: never written).
fn read_gens(c: &mut Controller, nsid: u32) -> Vec<u64> {
    let mut buf = vec![0u8; NBLK as usize * BS];
    c.read(1, nsid, 0, NBLK as u32, &mut buf)
        .unwrap_or_else(|e| panic!("read nsid {nsid}: {e}"));
    buf.chunks(BS)
        .enumerate()
        .map(|(lba, b)| {
            let gen = u64::from_le_bytes(b[..8].try_into().expect("8 bytes"));
            if gen != 0 {
                assert_eq!(
                    b,
                    &block(
                        gen,
                        u32::from_le_bytes(b[8..12].try_into().expect("4")),
                        lba as u64
                    )[..],
                    "torn or misplaced block {lba} of nsid {nsid}"
                );
            }
            gen
        })
        .collect()
}

/// A write: (nsid, lba, blocks, generation).
type W = (u32, u64, u64, u64);

/// The smallest k such that the history's first k writes give `image`, searched from `from`.
fn prefix_of(history: &[W], image: &[Vec<u64>; 2], from: usize) -> Option<usize> {
    let mut model = [vec![0u64; NBLK as usize], vec![0u64; NBLK as usize]];
    for (k, w) in history.iter().enumerate().take(from) {
        let _ = k;
        for b in w.1..w.1 + w.2 {
            model[(w.0 - 1) as usize][b as usize] = w.3;
        }
    }
    for k in from..=history.len() {
        if model == *image {
            return Some(k);
        }
        if let Some(w) = history.get(k) {
            for b in w.1..w.1 + w.2 {
                model[(w.0 - 1) as usize][b as usize] = w.3;
            }
        }
    }
    None
}

/// Forwards bytes with random delays per chunk and cuts connections at random.
fn fault_proxy(upstream: SocketAddr, stop: Arc<AtomicBool>, cuts: Arc<AtomicU64>) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("proxy bind");
    let addr = l.local_addr().expect("addr");
    l.set_nonblocking(true).expect("nonblocking");
    std::thread::spawn(move || {
        let mut seed = 0x5eed_u64;
        let mut live: Vec<(TcpStream, TcpStream)> = Vec::new();
        let mut next_cut = Instant::now() + Duration::from_millis(700);
        while !stop.load(Ordering::Relaxed) {
            if let Ok((down, _)) = l.accept() {
                let _ = down.set_nonblocking(false);
                if let Ok(up) = TcpStream::connect(upstream) {
                    seed = seed
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    let delay_ms = seed >> 60; // 0..15 ms per chunk, fixed per connection direction
                    for (a, b, d) in [
                        (down.try_clone(), up.try_clone(), delay_ms),
                        (up.try_clone(), down.try_clone(), (delay_ms + 7) % 16),
                    ] {
                        let (Ok(mut from), Ok(mut to)) = (a, b) else {
                            continue;
                        };
                        std::thread::spawn(move || {
                            let mut buf = [0u8; 8192];
                            while let Ok(n) = from.read(&mut buf) {
                                if n == 0 {
                                    break;
                                }
                                std::thread::sleep(Duration::from_millis(d));
                                if to.write_all(&buf[..n]).is_err() {
                                    break;
                                }
                            }
                            let _ = to.shutdown(Shutdown::Both);
                            let _ = from.shutdown(Shutdown::Both);
                        });
                    }
                    live.push((down, up));
                }
            }
            if Instant::now() >= next_cut && !live.is_empty() {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let (d, u) = live.swap_remove((seed >> 33) as usize % live.len());
                let _ = d.shutdown(Shutdown::Both);
                let _ = u.shutdown(Shutdown::Both);
                cuts.fetch_add(1, Ordering::Relaxed);
                next_cut = Instant::now() + Duration::from_millis(400 + (seed >> 54));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    });
    addr
}

#[test]
fn secondary_is_always_a_consistent_prefix_and_catches_up() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let (pport, sport) = (port(), port());
    let (_p, psock) = ferrited(dir, "primary", pport, &format!("[[bdev]]\nname = \"m0\"\nkind = \"malloc\"\nsize = \"256MiB\"\nblock_size = 512\n[[subsystem]]\nnqn = \"{NQN_P}\"\nallow_any_host = true\n"));
    let (_s, ssock) = ferrited(dir, "secondary", sport, &format!("[[bdev]]\nname = \"n0\"\nkind = \"malloc\"\nsize = \"64MiB\"\nblock_size = 512\n[[subsystem]]\nnqn = \"{NQN_S}\"\nallow_any_host = true\n"));
    for (sock, pool, bdev) in [(&psock, "p", "m0"), (&ssock, "q", "n0")] {
        rpc(
            sock,
            "pool_create",
            json!({"name": pool, "bdevs": [bdev], "cluster_size": "64KiB"}),
        );
        for v in ["v1", "v2"] {
            rpc(
                sock,
                "volume_create",
                json!({"pool": pool, "name": v, "size": "8MiB"}),
            );
        }
    }
    rpc(
        &psock,
        "journal_create",
        json!({"group": 1, "pool": "p", "size": "128MiB"}),
    );
    for (i, v) in ["p/v1", "p/v2"].iter().enumerate() {
        let name = rpc(
            &psock,
            "journal_attach",
            json!({"group": 1, "bdev": v, "nsid": i + 1}),
        );
        rpc(
            &psock,
            "nvmf_subsystem_add_ns",
            json!({"nqn": NQN_P, "namespace": {"bdev_name": name, "nsid": i + 1}}),
        );
        rpc(
            &ssock,
            "nvmf_subsystem_add_ns",
            json!({"nqn": NQN_S, "namespace": {"bdev_name": format!("q/v{}", i + 1), "nsid": i + 1}}),
        );
    }
    let mut journal_sock = psock.clone().into_os_string();
    journal_sock.push(".journal");

    let rport = port();
    let stop = Arc::new(AtomicBool::new(false));
    let cuts = Arc::new(AtomicU64::new(0));
    let proxy = fault_proxy(
        ([127, 0, 0, 1], rport).into(),
        Arc::clone(&stop),
        Arc::clone(&cuts),
    );
    let sec_status = dir.join("sec.status");
    let pri_status = dir.join("pri.status");
    let sec_cfg = format!(
        "role = \"secondary\"\ngroup = 1\nlisten = \"127.0.0.1:{rport}\"\ntarget = \"127.0.0.1:{sport}\"\nnqn = \"{NQN_S}\"\nstate_file = \"{}\"\nstatus_socket = \"{}\"\nwindow = 64\n",
        dir.join("sec.state").display(),
        sec_status.display()
    );
    let pri_cfg = format!(
        "role = \"primary\"\ngroup = 1\njournal_socket = \"{}\"\nsecondary = \"{proxy}\"\nconnections = 3\nrto_ms = 300\nwindow = 64\nstatus_socket = \"{}\"\n",
        PathBuf::from(&journal_sock).display(),
        pri_status.display()
    );
    let mut sec = replicator(dir, "sec-repl", &sec_cfg);
    let mut pri = replicator(dir, "pri-repl", &pri_cfg);

    // The host: one writer, each write completes before the next (history order = journal order).
    let history: Arc<Mutex<Vec<W>>> = Arc::new(Mutex::new(Vec::new()));
    let writing = Arc::new(AtomicBool::new(true));
    let writer = {
        let (history, writing) = (Arc::clone(&history), Arc::clone(&writing));
        std::thread::spawn(move || {
            let mut c = controller(pport, NQN_P);
            let mut seed = 42u64;
            let mut gen = 0;
            while writing.load(Ordering::Relaxed) {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                gen += 1;
                let nsid = 1 + (seed >> 63) as u32;
                let blocks = 1 + (seed >> 20) % 8;
                let lba = (seed >> 32) % (NBLK - blocks + 1);
                let data: Vec<u8> = (lba..lba + blocks)
                    .flat_map(|b| block(gen, nsid, b))
                    .collect();
                c.write(1, nsid, lba, &data, false).expect("primary write");
                history
                    .lock()
                    .expect("history")
                    .push((nsid, lba, blocks, gen));
            }
        })
    };

    let mut checks = 0;
    let mut last_k = 0;
    let mut reader = controller(sport, NQN_S);
    let started = Instant::now();
    let mut killed = false;
    let mut restarted = false;
    // At least 10 s and 6 checks (a loaded machine checks more slowly), at most 90 s.
    while (started.elapsed() < Duration::from_secs(10) || checks < 6)
        && started.elapsed() < Duration::from_secs(90)
    {
        std::thread::sleep(Duration::from_millis(600));
        if !killed && started.elapsed() > Duration::from_secs(3) {
            pri.kill9();
            std::thread::sleep(Duration::from_millis(300));
            pri = replicator(dir, "pri-repl-2", &pri_cfg);
            killed = true;
        }
        if !restarted && started.elapsed() > Duration::from_secs(6) {
            sec.term();
            sec = replicator(dir, "sec-repl-2", &sec_cfg);
            restarted = true;
        }
        // Snapshot both secondary volumes at one instant and read the snapshot.
        let (a, b) = (format!("c{checks}a"), format!("c{checks}b"));
        rpc(
            &ssock,
            "snapshot_create",
            json!({"group": [{"volume": "q/v1", "name": a}, {"volume": "q/v2", "name": b}]}),
        );
        rpc(
            &ssock,
            "nvmf_subsystem_add_ns",
            json!({"nqn": NQN_S, "namespace": {"bdev_name": format!("q/{a}"), "nsid": 11}}),
        );
        rpc(
            &ssock,
            "nvmf_subsystem_add_ns",
            json!({"nqn": NQN_S, "namespace": {"bdev_name": format!("q/{b}"), "nsid": 12}}),
        );
        let image = [read_gens(&mut reader, 11), read_gens(&mut reader, 12)];
        for nsid in [11, 12] {
            rpc(
                &ssock,
                "nvmf_subsystem_remove_ns",
                json!({"nqn": NQN_S, "nsid": nsid}),
            );
        }
        for n in [&a, &b] {
            rpc(&ssock, "snapshot_delete", json!({"name": format!("q/{n}")}));
        }
        let h = history.lock().expect("history").clone();
        let k = prefix_of(&h, &image, last_k).unwrap_or_else(|| panic!("check {checks}: the secondary snapshot is no prefix (at or after {last_k}) of the {} primary writes", h.len()));
        last_k = k;
        checks += 1;
    }
    writing.store(false, Ordering::Relaxed);
    writer.join().expect("writer");
    let h = history.lock().expect("history").clone();
    let n = h.len() as u64;
    wait_for(
        "the secondary to apply every write",
        || status(&sec_status).is_some_and(|s| s["applied"].as_u64() == Some(n)),
        120,
    );
    let image = [read_gens(&mut reader, 1), read_gens(&mut reader, 2)];
    assert_eq!(
        prefix_of(&h, &image, h.len()),
        Some(h.len()),
        "after quiesce the secondary equals the primary"
    );
    let mut pc = controller(pport, NQN_P);
    assert_eq!(image, [read_gens(&mut pc, 1), read_gens(&mut pc, 2)]);
    let ps = status(&pri_status).expect("primary status");
    wait_for(
        "the primary to see the last ack",
        || status(&pri_status).is_some_and(|s| s["acked"].as_u64() == Some(n)),
        30,
    );
    eprintln!(
        "{n} writes, {checks} consistent snapshots (last at prefix {last_k}), {} connection cuts, primary status {ps}",
        cuts.load(Ordering::Relaxed)
    );
    assert!(
        checks >= 5 && last_k > 0,
        "the run checked too little: {checks} checks, last prefix {last_k}"
    );
    assert!(
        cuts.load(Ordering::Relaxed) > 0,
        "the proxy never cut a connection"
    );
    stop.store(true, Ordering::Relaxed);
    pri.term();
    sec.term();
}
