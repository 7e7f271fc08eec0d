//! Pools, volumes, snapshots and clones through a real `ferrited`, `ferritectl` and JSON-RPC:
//! the life cycle with host I/O, every refusal, stats, a `--state-dir` restart (clean and
//! `kill -9`) and a damaged pool label that stops the start without a byte changed.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ferrite_host::{ConnectOptions, Controller};
use serde_json::{json, Value};

mod common;

use common::{free_port, pattern, start_with_config, CtlDaemon};

const NQN: &str = "nqn.2026-01.io.ferrite:vol";
const BS: usize = 512;

/// A file bdev f0 (members of the pool), a small malloc m1, a too-small malloc tiny, and a
/// RAM namespace ram0 exported as NSID 1.
fn config(dir: &Path, port: u16) -> String {
    format!(
        r#"cores = "0,1"
listen = ["127.0.0.1:{port}"]
[[bdev]]
name = "f0"
kind = "file"
path = "{}"
size = "128MiB"
block_size = 512
[[bdev]]
name = "ram0"
kind = "malloc"
size = "8MiB"
block_size = 512
[[bdev]]
name = "tiny"
kind = "malloc"
size = "512KiB"
block_size = 512
[[subsystem]]
nqn = "{NQN}"
allow_any_host = true
namespaces = [{{ nsid = 1, bdev = "ram0" }}]
"#,
        dir.join("f0.img").display()
    )
}

fn connect(d: &CtlDaemon) -> Controller {
    let mut opts = ConnectOptions::new(d.addr, NQN);
    opts.io_queues = 1;
    Controller::connect(opts).unwrap_or_else(|e| panic!("connect: {e}\n{}", d.log_text()))
}

fn write(c: &mut Controller, nsid: u32, lba: u64, blocks: usize, generation: u64) {
    c.write(1, nsid, lba, &pattern(lba, blocks, BS, generation), false)
        .unwrap_or_else(|e| panic!("write nsid {nsid} lba {lba}: {e}"));
}

fn check(c: &mut Controller, nsid: u32, lba: u64, blocks: usize, generation: u64) {
    let mut buf = vec![0u8; blocks * BS];
    c.read(1, nsid, lba, blocks as u32, &mut buf)
        .unwrap_or_else(|e| panic!("read nsid {nsid} lba {lba}: {e}"));
    assert!(
        buf == pattern(lba, blocks, BS, generation),
        "nsid {nsid} lba {lba}: not generation {generation}"
    );
}

/// Blocks `from..from + count` of a write of `total` blocks at `base`.
fn check_part(
    c: &mut Controller,
    nsid: u32,
    (base, total): (u64, usize),
    from: u64,
    count: usize,
    generation: u64,
) {
    let mut buf = vec![0u8; count * BS];
    c.read(1, nsid, from, count as u32, &mut buf)
        .unwrap_or_else(|e| panic!("read nsid {nsid} lba {from}: {e}"));
    let whole = pattern(base, total, BS, generation);
    let off = (from - base) as usize * BS;
    assert!(
        buf == whole[off..off + count * BS],
        "nsid {nsid} lba {from}: not generation {generation}"
    );
}

fn add_ns(d: &CtlDaemon, bdev: &str, nsid: u32) {
    let out = d.ok(&["ns", "add", NQN, bdev, "--nsid", &nsid.to_string()]);
    assert!(out.contains(&nsid.to_string()), "{out}");
}

fn volume<'a>(list: &'a Value, name: &str) -> &'a Value {
    list.as_array()
        .and_then(|a| {
            a.iter()
                .find(|v| v["name"] == name || v["bdev_name"] == name)
        })
        .unwrap_or_else(|| panic!("{name} not in {list}"))
}

#[test]
fn life_cycle_refusals_and_stats() {
    let dir = tempfile::tempdir().expect("tmp");
    let port = free_port();
    let d = start_with_config(dir.path(), &config(dir.path(), port), port, &[]);

    // Pool creation and the refusals around members.
    d.ok(&["pool", "create", "tank", "f0", "--cluster-size", "1MiB"]);
    let pools = d.json(&["pool", "list"]);
    assert_eq!(pools[0]["name"], "tank");
    assert_eq!(pools[0]["cluster_size"], 1 << 20);
    d.fails(&["pool", "create", "p2", "f0"], &["f0", "pool tank"]);
    d.fails(
        &["pool", "create", "p3", "ram0"],
        &["ram0", NQN, "namespace 1"],
    );
    d.fails(&["pool", "create", "p4", "tiny"], &["tiny", "too small"]);
    d.fails(&["pool", "create", "p5", "nosuch"], &["nosuch"]);
    d.fails(
        &["pool", "create", "tank", "tiny"],
        &["tank", "already exists"],
    );
    d.fails(&["bdev", "delete", "f0"], &["f0", "pool tank"]);
    d.fails(&["ns", "add", NQN, "f0"], &["f0", "pool tank"]);
    let bdevs = d.json(&["bdev", "list", "f0"]);
    assert_eq!(bdevs[0]["pool"], "tank");
    assert_eq!(bdevs[0]["claimed"], true);

    // Thin may overcommit (shown in pool_info); thick must fit.
    d.ok(&["volume", "create", "tank", "v1", "1GiB"]);
    let info = d.json(&["pool", "info", "tank"]);
    assert!(
        info["overcommit_ratio"].as_f64().expect("ratio") > 1.0,
        "{info}"
    );
    d.fails(
        &["volume", "create", "tank", "big", "1GiB", "--thick"],
        &["tank", "full"],
    );
    d.ok(&["volume", "create", "tank", "thick", "16MiB", "--thick"]);
    let thick = d.json(&["volume", "info", "tank/thick"]);
    assert_eq!(thick["provisioning"], "thick");
    assert_eq!(thick["allocated_bytes"], 16 << 20);
    d.fails(
        &["volume", "create", "tank", "v1", "1MiB"],
        &["v1", "exists"],
    );
    d.fails(&["volume", "create", "tank", "a/b", "1MiB"], &["a/b"]);
    d.fails(&["volume", "info", "tank/nope"], &["nope"]);
    d.fails(&["volume", "info", "v1"], &["<pool>/<volume>"]);
    let e = d
        .call(
            "volume_create",
            json!({"pool": "tank", "name": "x", "size": "1GiB", "typo": 1}),
        )
        .expect_err("unknown field");
    assert!(e.message.contains("typo"), "{e:?}");
    let kinds = d.json(&["bdev", "list", "tank/v1"]);
    assert_eq!(kinds[0]["kind"], "volume");
    assert_eq!(kinds[0]["thin_provisioned"], true);

    // Export and host I/O.
    add_ns(&d, "tank/v1", 2);
    let mut c = connect(&d);
    write(&mut c, 2, 0, 64, 1);
    c.flush(1, 2).expect("flush");
    check(&mut c, 2, 0, 64, 1);
    let mut zeroes = vec![0xffu8; 8 * BS];
    c.read(1, 2, 100_000, 8, &mut zeroes)
        .expect("read unwritten blocks");
    assert!(zeroes.iter().all(|b| *b == 0), "unwritten blocks read zero");
    d.fails(
        &["volume", "delete", "tank/v1"],
        &["tank/v1", NQN, "namespace 2"],
    );
    d.fails(
        &["volume", "rename", "tank/v1", "v9"],
        &[NQN, "namespace 2"],
    );

    // A snapshot while a host writes: no write fails.
    let stop = Arc::new(AtomicBool::new(false));
    let writes = Arc::new(AtomicU64::new(0));
    let writer = {
        let (stop, writes) = (Arc::clone(&stop), Arc::clone(&writes));
        let mut w = connect(&d);
        std::thread::spawn(move || {
            let mut lba = 4096;
            while !stop.load(Ordering::Relaxed) {
                w.write(1, 2, lba, &pattern(lba, 16, BS, 7), false)
                    .map_err(|e| format!("write at {lba}: {e}"))?;
                writes.fetch_add(1, Ordering::Relaxed);
                lba = 4096 + (lba + 16) % 65_536;
            }
            Ok::<(), String>(())
        })
    };
    while writes.load(Ordering::Relaxed) < 20 {
        std::thread::sleep(Duration::from_millis(5));
    }
    d.ok(&["snapshot", "create", "tank/v1:busy"]);
    let at_snapshot = writes.load(Ordering::Relaxed);
    while writes.load(Ordering::Relaxed) < at_snapshot + 20 {
        std::thread::sleep(Duration::from_millis(5));
    }
    stop.store(true, Ordering::Relaxed);
    writer
        .join()
        .expect("writer thread")
        .expect("no write failed");

    // A group snapshot: one instant for both volumes, one name each.
    let group = d.json(&["snapshot", "create", "tank/v1:g1", "tank/thick:g2"]);
    assert_eq!(group, json!(["tank/g1", "tank/g2"]));
    d.fails(
        &["snapshot", "create", "tank/v1:g3", "other/x:g4"],
        &["one pool"],
    );
    d.ok(&["snapshot", "delete", "tank/g1"]);
    d.ok(&["snapshot", "delete", "tank/g2"]);

    // A known snapshot, a clone of it, the snapshot exported read-only.
    write(&mut c, 2, 0, 64, 2);
    c.flush(1, 2).expect("flush");
    d.ok(&["snapshot", "create", "tank/v1:s2"]);
    write(&mut c, 2, 0, 64, 3);
    d.ok(&["clone", "create", "tank/s2", "c1"]);
    d.ok(&["clone", "create", "tank/s2", "c2"]);
    add_ns(&d, "tank/c1", 3);
    add_ns(&d, "tank/s2", 4);
    add_ns(&d, "tank/c2", 5);
    check(&mut c, 3, 0, 64, 2);
    check(&mut c, 4, 0, 64, 2);
    assert!(
        c.write(1, 4, 0, &pattern(0, 1, BS, 9), false).is_err(),
        "snapshot is read-only"
    );
    write(&mut c, 3, 0, 8, 4);
    check(&mut c, 3, 0, 8, 4);
    check(&mut c, 4, 0, 64, 2);
    let snaps = d.json(&["snapshot", "list", "--pool", "tank"]);
    let s2 = volume(&snaps, "tank/s2");
    assert_eq!(s2["kind"], "snapshot");
    assert_eq!(s2["clones"].as_array().expect("clones").len(), 2, "{s2}");
    let b = d.json(&["bdev", "list", "tank/s2"]);
    assert_eq!(
        (b[0]["kind"].clone(), b[0]["read_only"].clone()),
        (json!("snapshot"), json!(true))
    );
    assert_eq!(d.json(&["bdev", "list", "tank/c1"])[0]["kind"], "clone");
    d.fails(
        &["snapshot", "delete", "tank/s2"],
        &["tank/s2", NQN, "namespace 4"],
    );
    d.fails(&["snapshot", "delete", "tank/v1"], &["not a snapshot"]);
    d.fails(&["volume", "delete", "tank/s2"], &["snapshot_delete"]);

    // Revert v1 to s2 in place; inflate c1.
    check(&mut c, 2, 0, 64, 3);
    d.ok(&["volume", "revert", "tank/v1", "s2"]);
    check(&mut c, 2, 0, 64, 2);
    d.ok(&["volume", "inflate", "tank/c1"]);
    assert!(d.json(&["volume", "info", "tank/c1"])["parent"].is_null());
    check(&mut c, 3, 0, 8, 4);

    // Delete a snapshot that has two clones: both keep their data.
    d.ok(&["ns", "remove", NQN, "4"]);
    d.ok(&["snapshot", "delete", "tank/s2"]);
    check_part(&mut c, 3, (0, 64), 8, 56, 2);
    check(&mut c, 5, 0, 64, 2);
    check(&mut c, 2, 0, 64, 2);
    let check_out = d.ok(&["pool", "check", "tank"]);
    assert!(check_out.contains("clean"), "{check_out}");

    // Resize online: the host sees the new size through Identify.
    let before = c.identify_namespace(2).expect("identify").nsze.get();
    assert_eq!(before, (1u64 << 30) / BS as u64);
    let r = d.json(&["volume", "resize", "tank/v1", "2GiB"]);
    assert_eq!(r["notified"][0]["nsid"], 2, "{r}");
    assert_eq!(
        c.identify_namespace(2).expect("identify").nsze.get(),
        (2u64 << 30) / BS as u64
    );
    write(&mut c, 2, (2u64 << 30) / BS as u64 - 8, 8, 5);
    d.fails(&["volume", "resize", "tank/v1", "1MiB"], &["force"]);
    d.ok(&["volume", "resize", "tank/v1", "32MiB", "--force"]);
    assert_eq!(
        c.identify_namespace(2).expect("identify").nsze.get(),
        (32u64 << 20) / BS as u64
    );
    check(&mut c, 2, 0, 64, 2);

    // Statistics move with I/O: rates since the previous call.
    let first = d.call("stats_get", Value::Null).expect("stats");
    let v1 = volume(&first["volumes"], "tank/v1").clone();
    assert!(v1["write_ops"].as_u64().expect("write_ops") > 0, "{v1}");
    assert!(v1["size"]["total"] == 32 << 20, "{v1}");
    assert!(
        first["pools"][0]["allocated_bytes"]
            .as_u64()
            .expect("alloc")
            > 0
    );
    for i in 0..50 {
        write(&mut c, 2, i * 8, 8, 6);
    }
    let second = d.call("stats_get", Value::Null).expect("stats");
    let v1b = volume(&second["volumes"], "tank/v1");
    assert_eq!(v1b["interval_from"], "previous_call");
    assert!(v1b["write_iops"].as_f64().expect("iops") > 0.0, "{v1b}");
    assert!(v1b["write_mbps"].as_f64().expect("mbps") > 0.0, "{v1b}");
    assert_eq!(
        v1b["write_ops"].as_u64().expect("ops") - v1["write_ops"].as_u64().expect("ops"),
        50
    );
    assert!(!v1b["latency_us"]["avg"].is_null(), "{v1b}");
    let table = d.ok(&["stats", "--interval", "0"]);
    assert!(table.contains("tank/v1"), "{table}");

    // Space warning, rename, pool deletion rules.
    d.ok(&["pool", "set-space-warning", "tank", "5"]);
    assert_eq!(d.json(&["pool", "info", "tank"])["warning_percent"], 5);
    d.fails(&["pool", "set-space-warning", "tank", "0"], &["percent"]);
    d.ok(&["volume", "rename", "tank/thick", "thick2"]);
    assert_eq!(
        d.json(&["bdev", "list", "tank/thick2"])[0]["kind"],
        "volume"
    );
    d.fails(&["bdev", "delete", "tank/thick2"], &["volume_delete"]);
    d.fails(&["pool", "delete", "tank"], &["tank", "force"]);
    d.fails(&["pool", "delete", "tank", "--force"], &[NQN, "namespace"]);
    drop(c);
    for nsid in ["2", "3", "5"] {
        d.ok(&["ns", "remove", NQN, nsid]);
    }
    let cfg = d.ok(&["save-config"]);
    assert!(
        cfg.contains("[[pool]]") && cfg.contains("name = \"tank\""),
        "{cfg}"
    );
    assert!(
        !cfg.contains("tank/"),
        "volumes are not in the configuration:\n{cfg}"
    );
    d.ok(&["pool", "delete", "tank", "--force"]);
    d.fails(&["bdev", "list", "tank/v1"], &["tank/v1"]);
    // The labels are gone: the member is free again.
    d.ok(&["pool", "create", "tank2", "f0"]);
    d.ok(&["pool", "delete", "tank2"]);
    d.stop();
}

/// Starts ferrited expecting it to fail; returns its stderr.
fn start_fails(state: &Path, port: u16) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_ferrited"))
        .arg("--state-dir")
        .arg(state)
        .arg("--no-rpc")
        .arg("--no-pin")
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .env("RUST_LOG", "info")
        .output()
        .expect("run ferrited");
    assert!(!out.status.success(), "ferrited started on a damaged pool");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn state_dir_restores_pools_volumes_exports_and_a_damaged_label_stops_the_start() {
    let dir = tempfile::tempdir().expect("tmp");
    let state = dir.path().join("state");
    let state_s = state.to_str().expect("utf-8").to_string();
    let port = free_port();
    let d = start_with_config(
        dir.path(),
        &config(dir.path(), port),
        port,
        &["--state-dir", &state_s],
    );
    d.ok(&["pool", "create", "tank", "f0", "--cluster-size", "256KiB"]);
    d.ok(&["pool", "set-space-warning", "tank", "70"]);
    d.ok(&["volume", "create", "tank", "v1", "64MiB"]);
    add_ns(&d, "tank/v1", 2);
    let mut c = connect(&d);
    write(&mut c, 2, 0, 256, 1);
    c.flush(1, 2).expect("flush");
    d.ok(&["snapshot", "create", "tank/v1:s1"]);
    d.ok(&["clone", "create", "tank/s1", "c1"]);
    add_ns(&d, "tank/c1", 3);
    write(&mut c, 2, 0, 64, 2);
    c.flush(1, 2).expect("flush");
    drop(c);
    d.stop();

    // Clean restart from the state directory alone.
    let d = CtlDaemon::start(dir.path(), port, &["--state-dir", &state_s]);
    assert!(d.log_text().contains("pool tank"), "{}", d.log_text());
    let mut c = connect(&d);
    check(&mut c, 2, 0, 64, 2);
    check_part(&mut c, 2, (0, 256), 64, 192, 1);
    check(&mut c, 3, 0, 256, 1);
    assert_eq!(d.json(&["pool", "info", "tank"])["warning_percent"], 70);
    assert!(d.ok(&["pool", "check", "tank"]).contains("clean"));
    assert_eq!(
        d.json(&["snapshot", "list"])
            .as_array()
            .expect("list")
            .len(),
        1
    );

    // Flushed writes survive kill -9 (log replay).
    write(&mut c, 2, 1000, 128, 3);
    write(&mut c, 3, 2000, 64, 4);
    c.flush(1, 2).expect("flush");
    c.flush(1, 3).expect("flush");
    drop(c);
    d.kill9();
    let d = CtlDaemon::start(dir.path(), port, &["--state-dir", &state_s]);
    let mut c = connect(&d);
    check(&mut c, 2, 0, 64, 2);
    check(&mut c, 2, 1000, 128, 3);
    check(&mut c, 3, 2000, 64, 4);
    check(&mut c, 3, 0, 256, 1);
    let report = d.json(&["pool", "check", "tank"]);
    assert_eq!(report["clean"], true, "{report}");
    drop(c);
    d.stop();

    // A damaged label: the start fails naming the problem, and nothing is written.
    let image = dir.path().join("f0.img");
    let mut bytes = std::fs::read(&image).expect("read image");
    bytes[200] ^= 0x5a;
    std::fs::write(&image, &bytes).expect("corrupt one byte");
    let err = start_fails(&state, free_port());
    assert!(err.contains("f0") && err.contains("checksum"), "{err}");
    assert!(
        std::fs::read(&image).expect("read image") == bytes,
        "the image changed"
    );
}

/// Runs ferrited on `config` expecting it to refuse to start; returns its stderr.
fn config_start_fails(dir: &Path, config: &str) -> String {
    let path = dir.join("refused.toml");
    std::fs::write(&path, config).expect("write config");
    let out = Command::new(env!("CARGO_BIN_EXE_ferrited"))
        .arg("--config")
        .arg(&path)
        .arg("--no-rpc")
        .arg("--no-pin")
        .env("RUST_LOG", "info")
        .output()
        .expect("run ferrited");
    assert!(!out.status.success(), "ferrited started on {config}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_configured_pool_is_created_on_blank_members_then_opened_and_foreign_labels_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    let port = free_port();
    let base = config(dir.path(), port);
    let with_pool = |pool: &str, members: &str, export: bool| {
        let mut text = base.replace(
            "[[subsystem]]",
            &format!("[[pool]]\nname = \"{pool}\"\nbdevs = [{members}]\ncluster_size = \"128KiB\"\n[[subsystem]]"),
        );
        if export {
            text = text.replace(
                "namespaces = [{ nsid = 1, bdev = \"ram0\" }]",
                "namespaces = [{ nsid = 1, bdev = \"ram0\" }, { nsid = 2, bdev = \"tank/v1\" }]",
            );
        }
        text
    };
    // Blank member: created at start.
    let d = start_with_config(dir.path(), &with_pool("tank", "\"f0\"", false), port, &[]);
    let info = d.json(&["pool", "info", "tank"]);
    assert_eq!(info["cluster_size"], 128 << 10, "{info}");
    d.ok(&["volume", "create", "tank", "v1", "8MiB"]);
    d.stop();
    // Labelled member: opened (not re-created), and the configured export of its volume works.
    let d = start_with_config(dir.path(), &with_pool("tank", "\"f0\"", true), port, &[]);
    let mut c = connect(&d);
    write(&mut c, 2, 0, 16, 1);
    check(&mut c, 2, 0, 16, 1);
    drop(c);
    d.stop();
    // The member belongs to tank: a pool named otherwise is refused, nothing written.
    let image = dir.path().join("f0.img");
    let before = std::fs::read(&image).expect("read image");
    let err = config_start_fails(dir.path(), &with_pool("other", "\"f0\"", false));
    assert!(
        err.contains("f0") && err.contains("belongs to pool tank"),
        "{err}"
    );
    // A pool member exported directly is refused.
    let bad = with_pool("tank", "\"f0\"", false).replace(
        "bdev = \"ram0\" }]",
        "bdev = \"ram0\" }, { nsid = 3, bdev = \"f0\" }]",
    );
    let err = config_start_fails(dir.path(), &bad);
    assert!(err.contains("f0") && err.contains("pool tank"), "{err}");
    assert!(
        std::fs::read(&image).expect("read image") == before,
        "the image changed"
    );
}
