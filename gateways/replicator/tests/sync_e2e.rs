//! Sync mode end to end: two real `ferrited` and two `ferrite-replicator`s on loopback, group 1
//! a `sync` replication pair (`replication_create`, link policy `fail`), the link sealed with a
//! pre-shared key. Several host threads
//! write ferrite-perf `--verify` stamps (`ferrite_perf::verify`) to two namespaces of the group,
//! each thread its own blocks, and record every write the primary acknowledged. The primary
//! site (its `ferrited` and its replicator) is killed with SIGKILL in the middle of the load.
//! Every acknowledged write must be on the secondary: each block holds the acknowledged
//! generation or a later one the same thread had issued (a write in flight at the kill).
//! With link policy `degrade`, killing the secondary's replicator degrades the pair (writes go
//! on, asynchronously) and restarting it brings the pair back to sync once it caught up.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferrite_perf::verify::{check_block, stamp, MismatchKind};
use serde_json::json;

mod common;

use common::{controller, ferrited, port, replicator, rpc, status, wait_for};

const BS: usize = 512;
const NQN_P: &str = "nqn.2026-01.io.ferrite:sync-primary";
const NQN_S: &str = "nqn.2026-01.io.ferrite:sync-secondary";
const THREADS: u64 = 4;
/// Blocks each thread owns.
const SPAN: u64 = 64;

/// One thread's view: per owned block, the acknowledged generation, and the last generation
/// it issued at all.
#[derive(Debug, Default, Clone)]
struct Acked {
    gens: Vec<u64>,
    issued: u64,
    writes: u64,
}

/// Two daemons, group 1 a sync pair with `policy`, both replicators running over a sealed link.
struct Pair {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    pport: u16,
    sport: u16,
    psock: PathBuf,
    pd: common::Proc,
    _sd: common::Proc,
    pri: common::Proc,
    sec: common::Proc,
    sec_cfg: String,
    sec_status: PathBuf,
}

fn pair(policy: &str, timeout_ms: u64) -> Pair {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().to_path_buf();
    let dir = dir.as_path();
    let (pport, sport) = (port(), port());
    let bdev = |name: &str, nqn: &str| {
        format!("[[bdev]]\nname = \"{name}\"\nkind = \"malloc\"\nsize = \"128MiB\"\nblock_size = 512\n[[subsystem]]\nnqn = \"{nqn}\"\nallow_any_host = true\n")
    };
    let (pd, psock) = ferrited(dir, "primary", pport, &bdev("m0", NQN_P));
    let (sd, ssock) = ferrited(dir, "secondary", sport, &bdev("n0", NQN_S));
    for (sock, pool, b) in [(&psock, "p", "m0"), (&ssock, "q", "n0")] {
        rpc(
            sock,
            "pool_create",
            json!({"name": pool, "bdevs": [b], "cluster_size": "64KiB"}),
        );
        for v in ["v1", "v2"] {
            rpc(
                sock,
                "volume_create",
                json!({"pool": pool, "name": v, "size": "4MiB"}),
            );
        }
    }
    rpc(
        &psock,
        "journal_create",
        json!({"group": 1, "pool": "p", "size": "64MiB"}),
    );
    for i in 1..=2 {
        let name = rpc(
            &psock,
            "journal_attach",
            json!({"group": 1, "bdev": format!("p/v{i}"), "nsid": i}),
        );
        rpc(
            &psock,
            "nvmf_subsystem_add_ns",
            json!({"nqn": NQN_P, "namespace": {"bdev_name": name, "nsid": i}}),
        );
        rpc(
            &ssock,
            "nvmf_subsystem_add_ns",
            json!({"nqn": NQN_S, "namespace": {"bdev_name": format!("q/v{i}"), "nsid": i}}),
        );
    }
    let pri_status = dir.join("pri.status");
    let created = rpc(
        &psock,
        "replication_create",
        json!({"group": 1, "mode": "sync", "link_policy": policy, "sync_timeout_ms": timeout_ms,
               "replicator_status_socket": pri_status}),
    );
    assert_eq!(created["sync_state"], "sync", "{created}");
    let mut journal_sock = psock.clone().into_os_string();
    journal_sock.push(".journal");
    let rport = port();
    // The link is sealed with a pre-shared key.
    let key = dir.join("link.key");
    std::fs::write(&key, "0123456789abcdef".repeat(4)).expect("key file");
    let sec_status = dir.join("sec.status");
    let sec_cfg = format!(
            "role = \"secondary\"\ngroup = 1\nlisten = \"127.0.0.1:{rport}\"\ntarget = \"127.0.0.1:{sport}\"\nnqn = \"{NQN_S}\"\nstate_file = \"{}\"\nstatus_socket = \"{}\"\npsk_file = \"{}\"\n",
            dir.join("sec.state").display(),
            sec_status.display(),
            key.display()
        );
    let sec = replicator(dir, "sec-repl", &sec_cfg);
    let pri = replicator(
        dir,
        "pri-repl",
        &format!(
            "role = \"primary\"\ngroup = 1\njournal_socket = \"{}\"\nsecondary = \"127.0.0.1:{rport}\"\nconnections = 2\nidle_pull_us = 200\nstatus_socket = \"{}\"\npsk_file = \"{}\"\n",
            PathBuf::from(&journal_sock).display(),
            pri_status.display(),
            key.display()
        ),
    );

    Pair {
        dir: dir.to_path_buf(),
        _tmp: tmp,
        pport,
        sport,
        psock,
        pd,
        _sd: sd,
        pri,
        sec,
        sec_cfg,
        sec_status,
    }
}

#[test]
fn sync_mode_loses_no_acknowledged_write_when_the_primary_is_killed() {
    let Pair {
        pport,
        sport,
        psock,
        mut pd,
        mut pri,
        sec_status,
        _tmp: _keep_dir,
        _sd: _keep_secondary,
        sec: _keep_replicator,
        ..
    } = pair("fail", 20000);
    let acked: Vec<Arc<Mutex<Acked>>> = (0..THREADS)
        .map(|_| {
            Arc::new(Mutex::new(Acked {
                gens: vec![0; SPAN as usize],
                ..Acked::default()
            }))
        })
        .collect();
    let failed = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..THREADS)
        .map(|t| {
            let (acked, failed) = (Arc::clone(&acked[t as usize]), Arc::clone(&failed));
            std::thread::spawn(move || {
                let mut c = controller(pport, NQN_P);
                let nsid = 1 + (t % 2) as u32;
                let base = (t / 2) * SPAN;
                let mut seed = 7 + t;
                let mut gen = t << 40;
                let mut buf = vec![0u8; 4 * BS];
                loop {
                    seed = seed
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    let blocks = 1 + (seed >> 61) % 4;
                    let off = (seed >> 32) % (SPAN - blocks + 1);
                    gen += 1;
                    let data = &mut buf[..(blocks as usize) * BS];
                    stamp(data, BS, base + off, gen);
                    acked.lock().expect("acked").issued = gen;
                    if c.write(1, nsid, base + off, data, false).is_err() {
                        failed.store(true, Ordering::Relaxed);
                        return;
                    }
                    let mut a = acked.lock().expect("acked");
                    a.gens[off as usize..(off + blocks) as usize].fill(gen);
                    a.writes += 1;
                }
            })
        })
        .collect();

    // Let the load run, see the pair replicating, then lose the primary site at once.
    wait_for(
        "acknowledged sync writes",
        || {
            acked
                .iter()
                .map(|a| a.lock().expect("a").writes)
                .sum::<u64>()
                >= 400
        },
        120,
    );
    std::thread::sleep(Duration::from_millis(700));
    let st = rpc(&psock, "replication_status", json!({"group": 1}));
    assert_eq!(st[0]["sync_state"], "sync", "{st}");
    assert!(st[0]["sync"]["waits"].as_u64() > Some(0), "{st}");
    assert!(st[0]["replicator"]["acked"].as_u64() > Some(0), "{st}");
    pd.kill9();
    pri.kill9();
    let t = Instant::now();
    for w in writers {
        w.join().expect("writer");
    }
    assert!(failed.load(Ordering::Relaxed));
    eprintln!("writers stopped {:?} after the kill", t.elapsed());

    // The secondary applied (and flushed) what it acknowledged; let the applier finish.
    let mut last = None;
    wait_for(
        "the secondary applier to settle",
        || {
            let now = status(&sec_status).and_then(|s| s["applied"].as_u64());
            let settled = now.is_some() && now == last;
            last = now;
            std::thread::sleep(Duration::from_millis(200));
            settled
        },
        60,
    );
    let mut reader = controller(sport, NQN_S);
    let mut total = 0;
    let mut newer = 0;
    for t in 0..THREADS {
        let a = acked[t as usize].lock().expect("acked").clone();
        total += a.writes;
        let nsid = 1 + (t % 2) as u32;
        let base = (t / 2) * SPAN;
        let mut data = vec![0u8; (SPAN as usize) * BS];
        reader
            .read(1, nsid, base, SPAN as u32, &mut data)
            .expect("read the secondary");
        for (i, block) in data.chunks(BS).enumerate() {
            let lba = base + i as u64;
            let want = a.gens[i];
            if want == 0 {
                continue;
            }
            match check_block(block, lba, Some(want)) {
                Ok(()) => {}
                Err(m)
                    if m.kind == MismatchKind::WrongGeneration
                        && m.found_gen.is_some_and(|g| g > want && g <= a.issued) =>
                {
                    // A later write of this thread, in flight at the kill, also arrived.
                    check_block(block, lba, m.found_gen).expect("the newer write is intact");
                    newer += 1;
                }
                Err(m) => panic!(
                    "thread {t}: an acknowledged write is missing on the secondary: {m} \
                     (namespace {nsid}, {} acknowledged writes)",
                    a.writes
                ),
            }
        }
    }
    eprintln!(
        "{total} acknowledged sync writes, all on the secondary ({newer} blocks hold a later in-flight write)"
    );
    assert!(total >= 400);
}

/// Records the writer may add while the secondary is down: well under the journal's 510 slots.
/// The writer parks at this budget: an unpaced writer fills the journal while the test restarts
/// the secondary, and a full journal stalls writes (the hang of issue 10, seen once in CI).
const DEGRADED_BUDGET: u64 = 150;

#[test]
fn degrade_policy_keeps_writing_through_a_lost_secondary_and_returns_to_sync() {
    let mut p = pair("degrade", 1500);
    let writes = Arc::new(AtomicU64::new(0));
    let limit = Arc::new(AtomicU64::new(u64::MAX));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (writes, limit, stop, pport) = (
            Arc::clone(&writes),
            Arc::clone(&limit),
            Arc::clone(&stop),
            p.pport,
        );
        std::thread::spawn(move || {
            let mut c = controller(pport, NQN_P);
            let mut buf = vec![0u8; BS];
            let mut gen = 0;
            while !stop.load(Ordering::Relaxed) {
                if writes.load(Ordering::Relaxed) >= limit.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(2));
                    continue;
                }
                gen += 1;
                let lba = gen % 1024;
                stamp(&mut buf, BS, lba, gen);
                let t = Instant::now();
                c.write(1, 1, lba, &buf, false)
                    .expect("degrade never fails a write");
                assert!(
                    t.elapsed() < Duration::from_secs(5),
                    "write {gen} took {:?}",
                    t.elapsed()
                );
                writes.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let state =
        |psock: &std::path::Path| rpc(psock, "replication_status", json!({"group": 1}))[0].clone();
    wait_for("sync writes", || writes.load(Ordering::Relaxed) >= 100, 120);
    assert_eq!(state(&p.psock)["sync_state"], "sync");
    // The secondary site's replicator dies: after the timeout the pair degrades, writes go on.
    limit.store(
        writes.load(Ordering::Relaxed) + DEGRADED_BUDGET,
        Ordering::Relaxed,
    );
    p.sec.kill9();
    wait_for(
        "the pair to degrade",
        || state(&p.psock)["sync_state"] == "degraded",
        60,
    );
    let s = state(&p.psock);
    assert_eq!(
        (s["state"].as_str(), s["sync"]["degrades"].as_u64()),
        (Some("degraded"), Some(1)),
        "{s}"
    );
    wait_for(
        "writes while degraded",
        || writes.load(Ordering::Relaxed) >= limit.load(Ordering::Relaxed),
        60,
    );
    let s = state(&p.psock);
    assert!(s["lag_records"].as_u64() > Some(0), "{s}");
    assert_eq!(s["journal_full_refusals"].as_u64(), Some(0), "{s}");
    // It comes back: the secondary catches up and the pair is synchronous again by itself.
    p.sec = replicator(&p.dir, "sec-repl-2", &p.sec_cfg);
    limit.store(u64::MAX, Ordering::Relaxed);
    wait_for(
        "the pair to return to sync",
        || state(&p.psock)["sync_state"] == "sync",
        120,
    );
    let s = state(&p.psock);
    assert!(s["sync"]["recoveries"].as_u64() >= Some(1), "{s}");
    let after = writes.load(Ordering::Relaxed);
    wait_for(
        "sync writes after the recovery",
        || writes.load(Ordering::Relaxed) >= after + 20,
        60,
    );
    stop.store(true, Ordering::Relaxed);
    writer.join().expect("writer");
    // (While it catches up, the writer may outrun the secondary and find the journal full for
    // a moment: backpressure, each wait shorter than the sync timeout, or the write fails.)
    let s = state(&p.psock);
    eprintln!(
        "{} writes; status at the end: {s}",
        writes.load(Ordering::Relaxed)
    );
}
