//! Initial copy end to end: two real `ferrited` and two `ferrite-replicator`s on loopback. The
//! primary's volumes hold data written before the group had a journal (so only the copy can
//! bring it over); the pair is then created and host threads keep writing ferrite-perf
//! `--verify` stamps through the journaled namespaces while the primary replicator copies
//! (`[copy]`) and then ships the journal. Once the writers stop and the lag is zero, both
//! namespaces of the secondary must equal the primary's byte for byte, and `replication_status`
//! must show the finished copy's progress.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use ferrite_perf::verify::stamp;
use serde_json::json;

mod common;

use common::{controller, ferrited, port, replicator, rpc, status, wait_for};

const BS: usize = 512;
const NQN_P: &str = "nqn.2026-01.io.ferrite:copy-primary";
const NQN_S: &str = "nqn.2026-01.io.ferrite:copy-secondary";
/// Blocks per volume (8 MiB).
const BLOCKS: u64 = 16384;

#[test]
fn initial_copy_under_writes_makes_the_secondary_equal_the_primary() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let (pport, sport) = (port(), port());
    let bdev = |name: &str, nqn: &str| {
        format!("[[bdev]]\nname = \"{name}\"\nkind = \"malloc\"\nsize = \"128MiB\"\nblock_size = 512\n[[subsystem]]\nnqn = \"{nqn}\"\nallow_any_host = true\n")
    };
    let (_pd, psock) = ferrited(dir, "primary", pport, &bdev("m0", NQN_P));
    let (_sd, ssock) = ferrited(dir, "secondary", sport, &bdev("n0", NQN_S));
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
                json!({"pool": pool, "name": v, "size": "8MiB"}),
            );
        }
    }
    // Data from before the journal existed: every other 64 KiB of both volumes.
    for i in 1..=2u32 {
        rpc(
            &psock,
            "nvmf_subsystem_add_ns",
            json!({"nqn": NQN_P, "namespace": {"bdev_name": format!("p/v{i}"), "nsid": 9}}),
        );
        let mut c = controller(pport, NQN_P);
        let mut buf = vec![0u8; 128 * BS];
        for lba in (0..BLOCKS).step_by(256) {
            stamp(&mut buf, BS, lba, u64::from(i));
            c.write(1, 9, lba, &buf, false).expect("prefill");
        }
        c.disconnect();
        rpc(
            &psock,
            "nvmf_subsystem_remove_ns",
            json!({"nqn": NQN_P, "nsid": 9}),
        );
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
    rpc(
        &psock,
        "replication_create",
        json!({"group": 1, "mode": "async", "replicator_status_socket": pri_status}),
    );

    // Writers run before, during and after the copy.
    let stop = Arc::new(AtomicBool::new(false));
    let writes = Arc::new(AtomicU64::new(0));
    let writers: Vec<_> = (0..2u32)
        .map(|t| {
            let (stop, writes) = (Arc::clone(&stop), Arc::clone(&writes));
            std::thread::spawn(move || {
                let mut c = controller(pport, NQN_P);
                let nsid = 1 + t;
                let mut seed = 11 + u64::from(t);
                let mut gen = 1000 + (u64::from(t) << 40);
                let mut buf = vec![0u8; 8 * BS];
                while !stop.load(Ordering::Relaxed) {
                    seed = seed
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    let blocks = 1 + (seed >> 61) % 8;
                    let lba = (seed >> 20) % (BLOCKS - blocks + 1);
                    gen += 1;
                    let data = &mut buf[..(blocks as usize) * BS];
                    stamp(data, BS, lba, gen);
                    c.write(1, nsid, lba, data, false).expect("host write");
                    writes.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    wait_for(
        "writes before the copy",
        || writes.load(Ordering::Relaxed) > 200,
        30,
    );

    let rport = port();
    let sec_status = dir.join("sec.status");
    let _sec = replicator(
        dir,
        "sec-repl",
        &format!(
            "role = \"secondary\"\ngroup = 1\nlisten = \"127.0.0.1:{rport}\"\ntarget = \"127.0.0.1:{sport}\"\nnqn = \"{NQN_S}\"\nstate_file = \"{}\"\nstatus_socket = \"{}\"\n",
            dir.join("sec.state").display(),
            sec_status.display(),
        ),
    );
    let mut journal_sock = psock.clone().into_os_string();
    journal_sock.push(".journal");
    let copy_state = dir.join("copy.state");
    let _pri = replicator(
        dir,
        "pri-repl",
        &format!(
            "role = \"primary\"\ngroup = 1\njournal_socket = \"{}\"\nsecondary = \"127.0.0.1:{rport}\"\nidle_pull_us = 200\nstatus_socket = \"{}\"\n[copy]\nsource = \"127.0.0.1:{pport}\"\nsource_nqn = \"{NQN_P}\"\ntarget = \"127.0.0.1:{sport}\"\ntarget_nqn = \"{NQN_S}\"\nnamespaces = [[1, 1], [2, 2]]\nstate_file = \"{}\"\nchunk_kib = 256\n",
            PathBuf::from(&journal_sock).display(),
            pri_status.display(),
            copy_state.display(),
        ),
    );
    let copy_of = |v: &serde_json::Value| v["copy"]["state"].as_str().map(str::to_string);
    wait_for(
        "the copy to finish",
        || status(&pri_status).and_then(|v| copy_of(&v)).as_deref() == Some("done"),
        60,
    );
    let at_copy_end = writes.load(Ordering::Relaxed);
    // Keep writing while the journal backlog ships.
    wait_for(
        "writes after the copy",
        || writes.load(Ordering::Relaxed) > at_copy_end + 200,
        30,
    );
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().expect("writer");
    }
    wait_for(
        "zero lag",
        || {
            let s = rpc(&psock, "replication_status", json!({"group": 1}));
            s[0]["lag_records"] == 0
                && s[0]["committed_seq"].as_u64().unwrap_or(0) > 0
                && status(&sec_status)
                    .is_some_and(|v| v["applied"].as_u64() == s[0]["committed_seq"].as_u64())
        },
        60,
    );
    let st = rpc(&psock, "replication_status", json!({"group": 1}));
    let copy = &st[0]["replicator"]["copy"];
    assert_eq!(copy["state"], "done", "{st}");
    assert_eq!(copy["bytes_total"], 2 * BLOCKS * BS as u64, "{st}");
    assert_eq!(copy["bytes_done"], copy["bytes_total"], "{st}");
    assert!(copy_state.exists(), "the checkpoint is kept");

    let mut p = controller(pport, NQN_P);
    let mut s = controller(sport, NQN_S);
    let (mut a, mut b) = (vec![0u8; 256 * BS], vec![0u8; 256 * BS]);
    for nsid in 1..=2 {
        for lba in (0..BLOCKS).step_by(256) {
            p.read(1, nsid, lba, 256, &mut a).expect("read primary");
            s.read(1, nsid, lba, 256, &mut b).expect("read secondary");
            if a != b {
                let i = a.iter().zip(&b).position(|(x, y)| x != y).unwrap_or(0);
                panic!(
                    "namespace {nsid}: the secondary differs at block {}",
                    lba + (i / BS) as u64
                );
            }
        }
    }
    // The prefilled data (never journaled) made it over.
    s.read(1, 1, 0, 1, &mut b[..BS]).expect("read");
    assert_ne!(&b[..8], &[0u8; 8], "block 0 was copied");
}
