//! Role changes end to end: two real `ferrited` and `ferrite-replicator`s on loopback, group 1
//! with namespaces 1 and 2 (volumes `v1`, `v2` on each site).
//!
//! - Planned switchover (`replication_switchover` on the primary, `replication_failover` with a
//!   journal on the secondary): the pair drains to zero lag, the roles swap and replication runs
//!   the other way without any copy; the sides must be equal after more writes.
//! - Unplanned failover, then failback: the primary replicator dies while the primary keeps
//!   writing (those writes never reach the secondary), the secondary replicator is stopped at
//!   its applied point, the secondary is snapshotted and written by hosts. Failback copies back
//!   only what diverged (`ferrite-replicator diverged`: the old primary's journal records after
//!   the secondary's applied point, plus `snapshot_diff` of the new primary since the
//!   failover), after snapshotting the old primary, then replication resumes in the original
//!   direction from a fresh journal. The delta must be smaller than the volumes, and both sides
//!   equal at the end.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use ferrite_perf::verify::stamp;
use ferrite_rpc::Client;
use serde_json::{json, Value};

mod common;

use common::{controller, ferrited, port, replicator, rpc, status, wait_for, Proc};

const BS: usize = 512;
/// Blocks per volume (4 MiB).
const BLOCKS: u64 = 8192;

struct Site {
    sock: PathBuf,
    port: u16,
    nqn: String,
    pool: &'static str,
    _daemon: Proc,
}

fn try_rpc(sock: &Path, method: &str, params: Value) -> Result<Value, String> {
    let mut c = Client::connect(sock, Duration::from_secs(30)).map_err(|e| e.to_string())?;
    c.call(method, params).map_err(|e| e.to_string())
}

fn site(dir: &Path, name: &str, pool: &'static str) -> Site {
    let port = port();
    let nqn = format!("nqn.2026-01.io.ferrite:roles-{name}");
    let (d, sock) = ferrited(
        dir,
        name,
        port,
        &format!("[[bdev]]\nname = \"{pool}0\"\nkind = \"malloc\"\nsize = \"64MiB\"\nblock_size = 512\n[[subsystem]]\nnqn = \"{nqn}\"\nallow_any_host = true\n"),
    );
    rpc(
        &sock,
        "pool_create",
        json!({"name": pool, "bdevs": [format!("{pool}0")], "cluster_size": "64KiB"}),
    );
    for v in ["v1", "v2"] {
        rpc(
            &sock,
            "volume_create",
            json!({"pool": pool, "name": v, "size": "4MiB"}),
        );
    }
    Site {
        sock,
        port,
        nqn,
        pool,
        _daemon: d,
    }
}

/// Host access to the plain volumes (the secondary's, or a promoted one's).
fn export_plain(s: &Site) {
    for i in 1..=2 {
        rpc(
            &s.sock,
            "nvmf_subsystem_add_ns",
            json!({"nqn": s.nqn, "namespace": {"bdev_name": format!("{}/v{i}", s.pool), "nsid": i}}),
        );
    }
}

/// Journals the volumes in group 1 (a fresh journal) and makes the site an async pair's primary.
fn make_primary(s: &Site) {
    for i in 1..=2 {
        let _ = try_rpc(
            &s.sock,
            "nvmf_subsystem_remove_ns",
            json!({"nqn": s.nqn, "nsid": i}),
        );
    }
    rpc(
        &s.sock,
        "journal_create",
        json!({"group": 1, "pool": s.pool, "size": "16MiB"}),
    );
    for i in 1..=2 {
        let name = rpc(
            &s.sock,
            "journal_attach",
            json!({"group": 1, "bdev": format!("{}/v{i}", s.pool), "nsid": i}),
        );
        rpc(
            &s.sock,
            "nvmf_subsystem_add_ns",
            json!({"nqn": s.nqn, "namespace": {"bdev_name": name, "nsid": i}}),
        );
    }
    rpc(
        &s.sock,
        "replication_create",
        json!({"group": 1, "mode": "async"}),
    );
}

struct Link {
    pri: Proc,
    sec: Proc,
    sec_status: PathBuf,
    sec_state: PathBuf,
    journal: PathBuf,
}

fn link(dir: &Path, tag: &str, p: &Site, s: &Site) -> Link {
    let rport = port();
    let sec_status = dir.join(format!("{tag}-sec.status"));
    let sec_state = dir.join(format!("{tag}-sec.state"));
    let sec = replicator(
        dir,
        &format!("{tag}-sec"),
        &format!(
            "role = \"secondary\"\ngroup = 1\nlisten = \"127.0.0.1:{rport}\"\ntarget = \"127.0.0.1:{}\"\nnqn = \"{}\"\nstate_file = \"{}\"\nstatus_socket = \"{}\"\n",
            s.port,
            s.nqn,
            sec_state.display(),
            sec_status.display(),
        ),
    );
    let mut journal = p.sock.clone().into_os_string();
    journal.push(".journal");
    let journal = PathBuf::from(journal);
    let pri = replicator(
        dir,
        &format!("{tag}-pri"),
        &format!(
            "role = \"primary\"\ngroup = 1\njournal_socket = \"{}\"\nsecondary = \"127.0.0.1:{rport}\"\nidle_pull_us = 200\n",
            journal.display()
        ),
    );
    Link {
        pri,
        sec,
        sec_status,
        sec_state,
        journal,
    }
}

/// `n` stamped writes to each namespace of `s` (generation base `gen`).
fn write(s: &Site, seed: u64, n: u64, gen: u64) {
    let mut c = controller(s.port, &s.nqn);
    let mut x = seed;
    let mut buf = vec![0u8; 8 * BS];
    for k in 0..n {
        for nsid in 1..=2u32 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let blocks = 1 + (x >> 61) % 8;
            let lba = (x >> 20) % (BLOCKS - blocks + 1);
            let data = &mut buf[..(blocks as usize) * BS];
            stamp(data, BS, lba, gen + k);
            c.write(1, nsid, lba, data, false).expect("host write");
        }
    }
}

fn caught_up(p: &Site, l: &Link) {
    wait_for(
        "zero lag",
        || {
            let st = rpc(&p.sock, "replication_status", json!({"group": 1}));
            let committed = st[0]["committed_seq"].as_u64();
            st[0]["lag_records"] == 0
                && status(&l.sec_status).is_some_and(|v| v["applied"].as_u64() == committed)
        },
        60,
    );
}

/// Byte comparison of both namespaces; the number of differing blocks.
fn differing(a: &Site, b: &Site) -> u64 {
    let mut ca = controller(a.port, &a.nqn);
    let mut cb = controller(b.port, &b.nqn);
    let (mut x, mut y) = (vec![0u8; 256 * BS], vec![0u8; 256 * BS]);
    let mut n = 0;
    for nsid in 1..=2 {
        for lba in (0..BLOCKS).step_by(256) {
            ca.read(1, nsid, lba, 256, &mut x).expect("read");
            cb.read(1, nsid, lba, 256, &mut y).expect("read");
            n += x
                .chunks(BS)
                .zip(y.chunks(BS))
                .filter(|(p, q)| p != q)
                .count() as u64;
        }
    }
    n
}

fn replicator_cmd(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_ferrite-replicator"))
        .args(args)
        .output()
        .expect("ferrite-replicator");
    assert!(
        out.status.success(),
        "ferrite-replicator {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn switchover_then_failover_and_failback_keep_the_sides_equal() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let a = site(dir, "a", "p");
    let b = site(dir, "b", "q");
    make_primary(&a);
    export_plain(&b);
    let mut l = link(dir, "ab", &a, &b);
    write(&a, 1, 200, 1);
    caught_up(&a, &l);
    assert_eq!(differing(&a, &b), 0, "a -> b replicated");

    // Planned switchover: a fences its hosts and drains (replication_switchover), b becomes
    // the primary (replication_failover with a journal); no copy.
    let sw = rpc(&a.sock, "replication_switchover", json!({"group": 1}));
    assert_eq!(sw["role"], "secondary", "{sw}");
    l.pri.term();
    l.sec.term();
    rpc(
        &b.sock,
        "replication_failover",
        json!({"group": 1, "volumes": ["q/v1", "q/v2"], "journal": {"pool": "q", "size": "16MiB"}}),
    );
    let l2 = link(dir, "ba", &b, &a);
    write(&b, 2, 200, 1 << 20);
    caught_up(&b, &l2);
    assert_eq!(
        differing(&b, &a),
        0,
        "after the switchover b -> a replicates"
    );

    // Back to a -> b (a second switchover), then an unplanned failover.
    rpc(&b.sock, "replication_switchover", json!({"group": 1}));
    drop(l2);
    rpc(
        &a.sock,
        "replication_failover",
        json!({"group": 1, "volumes": ["p/v1", "p/v2"], "journal": {"pool": "p", "size": "16MiB"}}),
    );
    let mut l = link(dir, "ab2", &a, &b);
    write(&a, 3, 100, 2 << 20);
    caught_up(&a, &l);
    // The primary's replicator is lost; a goes on writing what b will never get.
    l.pri.kill9();
    // (Fewer than the journal holds: a full journal makes host writes wait; see the report.)
    write(&a, 4, 30, 3 << 20);
    // Failover: b stops at its applied point, is snapshotted, and takes host writes.
    l.sec.term();
    let applied: Value =
        serde_json::from_str(&std::fs::read_to_string(&l.sec_state).expect("state file"))
            .expect("state json");
    let applied = applied["applied"].as_u64().expect("applied");
    let fo = rpc(
        &b.sock,
        "replication_failover",
        json!({"group": 1, "volumes": ["q/v1", "q/v2"], "snapshot": "fo"}),
    );
    assert_eq!(fo["role"], "promoted", "{fo}");
    write(&b, 5, 20, 4 << 20);
    assert!(differing(&a, &b) > 0, "the sides diverged");

    // Failback: a snapshots its diverged image and stops serving hosts, keeping its journal.
    let fb = rpc(
        &a.sock,
        "replication_failback",
        json!({"group": 1, "snapshot": "fb"}),
    );
    assert!(
        fb["committed_seq"].as_u64().expect("committed") > applied,
        "{fb}"
    );
    // What diverged, from both sides.
    for i in 1..=2 {
        let d = rpc(
            &b.sock,
            "snapshot_diff",
            json!({"base": format!("q/fo-v{i}"), "target": format!("q/v{i}")}),
        );
        std::fs::write(dir.join(format!("diff{i}.json")), d.to_string()).expect("diff");
    }
    let ranges = dir.join("ranges.json");
    replicator_cmd(&[
        "diverged",
        "--journal-socket",
        l.journal.to_str().expect("utf-8"),
        "--group",
        "1",
        "--after",
        &applied.to_string(),
        "--snapshot-diff",
        &format!("1={}", dir.join("diff1.json").display()),
        "--snapshot-diff",
        &format!("2={}", dir.join("diff2.json").display()),
        "--out",
        ranges.to_str().expect("utf-8"),
    ]);
    rpc(&a.sock, "journal_delete", json!({"group": 1}));
    let copy_cfg = dir.join("failback.toml");
    std::fs::write(
        &copy_cfg,
        format!(
            "role = \"primary\"\ngroup = 1\njournal_socket = \"/unused\"\nsecondary = \"127.0.0.1:1\"\n[copy]\nsource = \"127.0.0.1:{}\"\nsource_nqn = \"{}\"\ntarget = \"127.0.0.1:{}\"\ntarget_nqn = \"{}\"\nnamespaces = [[1, 1], [2, 2]]\nstate_file = \"{}\"\nranges_file = \"{}\"\n",
            b.port,
            b.nqn,
            a.port,
            a.nqn,
            dir.join("failback.copy").display(),
            ranges.display()
        ),
    )
    .expect("copy config");
    let out = replicator_cmd(&["copy", "--config", copy_cfg.to_str().expect("utf-8")]);
    let p: Value = serde_json::from_str(&out).expect("copy progress");
    let delta = p["bytes_total"].as_u64().expect("bytes_total");
    assert!(delta > 0, "{p}");
    eprintln!(
        "failback delta: {delta} of {} bytes",
        2 * BLOCKS * BS as u64
    );
    assert!(
        delta < 2 * BLOCKS * BS as u64 / 2,
        "failback copies only what diverged: {p}"
    );
    assert_eq!(differing(&a, &b), 0, "after the delta resync");
    // Original direction again, from a fresh journal: no copy.
    rpc(
        &a.sock,
        "replication_failover",
        json!({"group": 1, "volumes": ["p/v1", "p/v2"], "journal": {"pool": "p", "size": "16MiB"}}),
    );
    let l3 = link(dir, "ab3", &a, &b);
    write(&a, 6, 100, 5 << 20);
    caught_up(&a, &l3);
    assert_eq!(differing(&a, &b), 0, "after the failback a -> b replicates");
    // The snapshots taken before each resync are still there to restore.
    let snaps = rpc(&a.sock, "snapshot_list", json!({}));
    assert!(snaps.to_string().contains("fb-v1"), "{snaps}");
}
