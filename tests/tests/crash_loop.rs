//! Crash safety of the mapping layer through the real daemon: hosts write verifiable blocks to a
//! thin volume (with flushes and FUA) while snapshots come and go, `ferrited` is killed with
//! SIGKILL at a random moment, restarted from its state directory, and every block must read
//! back as its last flushed (or FUA) value or one written after it; `pool_check` must be clean.
//!
//! `FERRITE_CRASH_ITERATIONS` (default 20) sets the number of kills, `FERRITE_CRASH_SEED` the
//! seed (printed, so a failure can be replayed).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use ferrite_e2e::ferrited;
use ferrite_e2e::managed::{file_bdev_config, ManagedFerrited};
use ferrite_host::{ConnectOptions, Controller};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

const NQN: &str = "nqn.2026-01.io.ferrite:crash";
const BLOCK: usize = 4096;
const VOLUME_BYTES: u64 = 64 << 20;
const BLOCKS: u64 = VOLUME_BYTES / BLOCK as u64;
const CLUSTER: u64 = 64 << 10;
const WORKERS: u64 = 3;
const MAGIC: u64 = 0x4645_5252_4954_4521;

/// What a block may hold after a crash: its value at the last completed flush (or FUA write),
/// or any value written since (acknowledged or still in flight when the process died).
#[derive(Debug, Clone, Default)]
struct BlockOracle {
    durable: u64,
    since: Vec<u64>,
}

/// The content of block `lba` at generation `generation` (0 = never written: zeroes).
fn pattern(lba: u64, generation: u64, out: &mut [u8]) {
    out[..8].copy_from_slice(&MAGIC.to_le_bytes());
    out[8..16].copy_from_slice(&lba.to_le_bytes());
    out[16..24].copy_from_slice(&generation.to_le_bytes());
    let mut x = generation ^ lba.rotate_left(17) ^ MAGIC;
    for chunk in out[24..].chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
}

/// The generation a block holds, or a description of the damage.
fn decode(lba: u64, data: &[u8]) -> Result<u64, String> {
    if data.iter().all(|&b| b == 0) {
        return Ok(0);
    }
    let generation = u64::from_le_bytes(data[16..24].try_into().expect("8 bytes"));
    let mut expected = vec![0u8; BLOCK];
    pattern(lba, generation, &mut expected);
    if data == expected.as_slice() {
        Ok(generation)
    } else {
        Err(format!(
            "block {lba}: neither zeroes nor a written pattern (header magic {:#x}, lba {}, generation {generation})",
            u64::from_le_bytes(data[..8].try_into().expect("8 bytes")),
            u64::from_le_bytes(data[8..16].try_into().expect("8 bytes")),
        ))
    }
}

fn connect(addr: SocketAddr) -> Result<Controller, ferrite_host::HostError> {
    let mut opts = ConnectOptions::new(addr, NQN);
    opts.timeout = Duration::from_secs(5);
    opts.kato_ms = 0;
    Controller::connect(opts)
}

/// One worker's share of the oracle.
type Share = HashMap<u64, BlockOracle>;

/// Blocks are dealt to workers in chunks of 8, shifted by 4 so that half of the chunks straddle
/// a 16-block (64 KiB) cluster boundary: chunk `c` is blocks `8c - 4 .. 8c + 4`, owned by
/// worker `c % WORKERS`.
const CHUNK: u64 = 8;

/// Writes until the connection breaks (the kill) or `stop`; returns its oracle share.
fn worker(
    addr: SocketAddr,
    id: u64,
    round: u64,
    seed: u64,
    mut share: Share,
    stop: &AtomicBool,
) -> Share {
    let mut rng = StdRng::seed_from_u64(seed ^ (id << 40) ^ round);
    let Ok(mut ctrl) = connect(addr) else {
        return share;
    };
    let mut buf = vec![0u8; CHUNK as usize * BLOCK];
    let mut unflushed: Vec<u64> = Vec::new();
    let chunks = BLOCKS / CHUNK;
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let chunk = rng.gen_range(1..chunks / WORKERS) * WORKERS + id;
        let start = rng.gen_range(0..CHUNK);
        let count = rng.gen_range(1..=CHUNK - start);
        let first = chunk * CHUNK - CHUNK / 2 + start;
        n += 1;
        let generation = (round << 40) | (id << 32) | n;
        let fua = rng.gen_ratio(1, 8);
        for k in 0..count {
            let at = k as usize * BLOCK;
            pattern(first + k, generation, &mut buf[at..at + BLOCK]);
            share.entry(first + k).or_default().since.push(generation);
        }
        let data = &buf[..count as usize * BLOCK];
        if ctrl.write(1, 1, first, data, fua).is_err() {
            break;
        }
        if fua {
            // Durable on completion, with every block of the command.
            for lba in first..first + count {
                let entry = share.get_mut(&lba).expect("just written");
                entry.durable = generation;
                entry.since.clear();
            }
        } else {
            unflushed.extend(first..first + count);
        }
        if rng.gen_ratio(1, 4) {
            if ctrl.flush(1, 1).is_err() {
                break;
            }
            for lba in unflushed.drain(..) {
                let entry = share
                    .get_mut(&lba)
                    .expect("written blocks are in the share");
                if let Some(&last) = entry.since.last() {
                    entry.durable = last;
                    entry.since.clear();
                }
            }
        }
    }
    share
}

/// Creates and deletes snapshots of the volume until the daemon dies or `stop`.
fn snapshotter(
    target_socket: std::path::PathBuf,
    round: u64,
    stop: &AtomicBool,
) -> (u64, Vec<String>) {
    let mut made = 0;
    let mut refused = Vec::new();
    let mut alive: Vec<String> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        thread::sleep(Duration::from_millis(80));
        let name = format!("s{round}-{made}");
        let params = json!({"volume": "pool0/vol0", "name": name});
        match rpc(&target_socket, "snapshot_create", params) {
            Ok(()) => {}
            Err(Some(e)) => refused.push(format!("snapshot_create {name}: {e}")),
            Err(None) => break,
        }
        made += 1;
        alive.push(format!("pool0/{name}"));
        if alive.len() > 2 {
            let old = alive.remove(0);
            match rpc(&target_socket, "snapshot_delete", json!({"name": old})) {
                Ok(()) => {}
                Err(Some(e)) => refused.push(format!("snapshot_delete {old}: {e}")),
                Err(None) => break,
            }
        }
    }
    (made, refused)
}

/// One RPC for the snapshot thread: `Err(None)` once the daemon is gone (the kill), `Err(Some)`
/// when a live daemon refused (a bug: the test fails on it).
fn rpc(
    socket: &std::path::Path,
    method: &str,
    params: serde_json::Value,
) -> Result<(), Option<String>> {
    use std::io::{Read, Write};
    let Ok(mut s) = std::os::unix::net::UnixStream::connect(socket) else {
        return Err(None);
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
    let req = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
    if s.write_all(format!("{req}\n").as_bytes()).is_err() {
        return Err(None);
    }
    let mut out = Vec::new();
    let mut chunk = [0u8; 1024];
    while !out.ends_with(b"\n") {
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return Err(None),
            Ok(n) => out.extend_from_slice(&chunk[..n]),
        }
    }
    let resp: serde_json::Value = serde_json::from_slice(&out).map_err(|e| Some(e.to_string()))?;
    if resp["error"].is_null() {
        Ok(())
    } else {
        Err(Some(resp["error"].to_string()))
    }
}

/// Reads every block the oracle knows, checks it, and makes what it found the new baseline.
fn verify(addr: SocketAddr, oracle: &mut Share) -> Result<usize, String> {
    let mut ctrl = connect(addr).map_err(|e| format!("reconnect after restart: {e}"))?;
    let mut buf = vec![0u8; BLOCK];
    let mut checked = 0;
    let mut lbas: Vec<u64> = oracle.keys().copied().collect();
    lbas.sort_unstable();
    for lba in lbas {
        ctrl.read(1, 1, lba, 1, &mut buf)
            .map_err(|e| format!("read block {lba}: {e}"))?;
        let found = decode(lba, &buf)?;
        let entry = oracle.get_mut(&lba).expect("key from the map");
        if found != entry.durable && !entry.since.contains(&found) {
            return Err(format!(
                "block {lba}: found generation {found:#x}, flushed {:#x}, written since {:x?}",
                entry.durable, entry.since
            ));
        }
        entry.durable = found;
        entry.since.clear();
        checked += 1;
    }
    Ok(checked)
}

/// Deletes the snapshots a killed round left behind, so they do not pin the pool's space.
fn delete_snapshots(target: &ManagedFerrited) {
    let list = target.call("snapshot_list", json!({"pool": "pool0"}));
    for snap in list.as_array().into_iter().flatten() {
        let name = snap["name"].as_str().expect("snapshot name");
        let full = if name.contains('/') {
            name.to_string()
        } else {
            format!("pool0/{name}")
        };
        target.call("snapshot_delete", json!({"name": full}));
    }
}

#[test]
fn kill9_at_random_moments_loses_no_flushed_write() {
    let iterations: u64 = std::env::var("FERRITE_CRASH_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let seed: u64 = std::env::var("FERRITE_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("crash loop: {iterations} iterations, FERRITE_CRASH_SEED={seed}");
    let data = ferrited::data_dir().expect("data directory");
    let dir = tempfile::tempdir().expect("control directory");
    let config = file_bdev_config(dir.path(), &data.path().join("pool0.img"), "256MiB", NQN);
    let port = ferrited::free_port().expect("port");
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut target =
        ManagedFerrited::start(dir.path(), port, Some(&config)).expect("ferrited starts");
    target.call(
        "pool_create",
        json!({"name": "pool0", "bdevs": ["disk0"], "cluster_size": CLUSTER}),
    );
    target.call(
        "volume_create",
        json!({"pool": "pool0", "name": "vol0", "size": VOLUME_BYTES, "thin": true}),
    );
    target.call(
        "nvmf_subsystem_add_ns",
        json!({"nqn": NQN, "namespace": {"bdev_name": "pool0/vol0", "nsid": 1}}),
    );

    let mut rng = StdRng::seed_from_u64(seed);
    let mut shares: Vec<Share> = (0..WORKERS).map(|_| Share::new()).collect();
    let mut total_checked = 0;
    let mut total_snapshots = 0;
    for round in 1..=iterations {
        delete_snapshots(&target);
        let stop = Arc::new(AtomicBool::new(false));
        let handles: Vec<_> = shares
            .drain(..)
            .enumerate()
            .map(|(id, share)| {
                let stop = Arc::clone(&stop);
                thread::spawn(move || worker(addr, id as u64, round, seed, share, &stop))
            })
            .collect();
        let snaps = {
            let stop = Arc::clone(&stop);
            let socket = target.socket();
            thread::spawn(move || snapshotter(socket, round, &stop))
        };
        thread::sleep(Duration::from_millis(rng.gen_range(200..1500)));
        target.kill9();
        stop.store(true, Ordering::Relaxed);
        shares = handles
            .into_iter()
            .map(|h| h.join().expect("worker thread"))
            .collect();
        let (made, refused) = snaps.join().expect("snapshot thread");
        assert!(
            refused.is_empty(),
            "round {round}: the live daemon refused snapshot calls: {refused:?}"
        );
        total_snapshots += made;
        target
            .restart()
            .unwrap_or_else(|e| panic!("round {round}: restart after kill -9 failed: {e}"));
        for share in &mut shares {
            total_checked += verify(addr, share)
                .unwrap_or_else(|e| panic!("round {round} (FERRITE_CRASH_SEED={seed}): {e}"));
        }
        let check = target.call("pool_check", json!({"name": "pool0"}));
        let errors = check["errors"].as_array().cloned().unwrap_or_default();
        assert!(
            errors.is_empty(),
            "round {round} (FERRITE_CRASH_SEED={seed}): pool check found {errors:?}"
        );
    }
    let written: usize = shares.iter().map(HashMap::len).sum();
    eprintln!(
        "crash loop: {iterations} kills, {written} distinct blocks written, {total_checked} block \
         checks, {total_snapshots} snapshots created"
    );
    assert!(written > 0, "the workers never wrote anything");
    target.stop().expect("clean stop");
}
