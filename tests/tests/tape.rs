//! ferrite-tape end to end: a real ferrited exports a snapshot of a volume; the ferrite-tape
//! gateway (a real process with a virtual tape library) backs it up over several NVMe/TCP
//! connections with deliberately shuffled delivery, spanning two cartridges; the backup is
//! restored to another volume and compared byte for byte. Then: a restore target that is too
//! small is refused with nothing written; `kill -9` of the gateway mid-job leaves the catalog
//! consistent and the job restartable; with the catalog deleted, `scan` rebuilds it from the
//! cartridges and the restore works again. A second test has a real Linux host (QEMU) make an
//! ext4 file system, back it up through a snapshot and mount the copy restored from tape.

use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use ferrite_e2e::ferrited;
use ferrite_e2e::linux_host::{HostOptions, LinuxHost};
use ferrite_e2e::managed::{file_bdev_config, ManagedFerrited};
use ferrite_host::{ConnectOptions, Controller};
use serde_json::{json, Value};

const NQN: &str = "nqn.2026-01.io.ferrite:tape";
const MIB: u64 = 1 << 20;
/// The snapshot backed up (kept small: the machine running CI is shared).
const VOLUME: u64 = 96 * MIB;

fn pattern(offset: u64, len: usize, salt: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    let mut i = offset / 8;
    while out.len() < len {
        let mut x = (i ^ salt).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        x ^= x >> 29;
        out.extend_from_slice(&x.to_le_bytes());
        i += 1;
    }
    out.truncate(len);
    out
}

fn connect(addr: SocketAddr) -> Controller {
    let mut o = ConnectOptions::new(addr, NQN);
    o.timeout = Duration::from_secs(60);
    Controller::connect(o).expect("connect to ferrited")
}

fn fill(addr: SocketAddr, nsid: u32, bytes: u64, salt: u64) {
    let mut c = connect(addr);
    let step = c.max_transfer().min(MIB as u32) as usize;
    for off in (0..bytes).step_by(step) {
        c.write(1, nsid, off / 4096, &pattern(off, step, salt), false)
            .expect("write");
    }
    c.flush(1, nsid).expect("flush");
}

/// Compares a namespace's first `bytes` with the pattern; returns the first differing MiB.
fn differs(addr: SocketAddr, nsid: u32, bytes: u64, salt: u64) -> Option<u64> {
    let mut c = connect(addr);
    let step = c.max_transfer().min(MIB as u32) as usize;
    let mut buf = vec![0u8; step];
    for off in (0..bytes).step_by(step) {
        c.read(1, nsid, off / 4096, (step / 4096) as u32, &mut buf)
            .expect("read");
        if buf != pattern(off, step, salt) {
            return Some(off);
        }
    }
    None
}

struct Gateway {
    child: Child,
    config: PathBuf,
    socket: PathBuf,
    log: PathBuf,
}

impl Gateway {
    fn start(config: &Path, socket: &Path, log: &Path) -> Gateway {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("log");
        let child = Command::new(ferrited::tape_binary().expect("ferrite-tape binary"))
            .args(["daemon", "--config"])
            .arg(config)
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .expect("spawn ferrite-tape");
        let mut g = Gateway {
            child,
            config: config.into(),
            socket: socket.into(),
            log: log.into(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while UnixStream::connect(socket).is_err() {
            if let Ok(Some(st)) = g.child.try_wait() {
                panic!("ferrite-tape exited with {st}:\n{}", g.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "ferrite-tape not listening after 60 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        g
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn cli(&self, args: &[&str]) -> Output {
        Command::new(ferrited::tape_binary().expect("binary"))
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("run ferrite-tape")
    }

    /// Runs a CLI command with --json that must succeed; returns its JSON.
    fn json(&self, args: &[&str]) -> Value {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        let out = self.cli(&a);
        assert!(
            out.status.success(),
            "ferrite-tape {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log_text()
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "{args:?}: not JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    fn kill9(mut self) -> (PathBuf, PathBuf, PathBuf) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        (self.config.clone(), self.socket.clone(), self.log.clone())
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes a gateway configuration in `dir` (virtual library of 6 slots, cartridges of
/// `capacity` bytes) and starts the gateway on it.
fn start_gateway(dir: &Path, capacity: u64) -> Gateway {
    let socket = dir.join("tape.sock");
    let config = dir.join("tape.toml");
    std::fs::write(
        &config,
        format!(
            "socket = {:?}\ncatalog = {:?}\nchunk_bytes = 1048576\nwindow = 16\nconnections = 4\n\n\
             [library]\nkind = \"virtual\"\ndir = {:?}\nslots = 6\ndrives = 1\nimport_export = 1\n\
             cartridge_capacity = {capacity}\nearly_warning = {}\n",
            socket.display().to_string(),
            dir.join("catalog.db").display().to_string(),
            dir.join("vtl").display().to_string(),
            4 * MIB
        ),
    )
    .expect("write tape.toml");
    Gateway::start(&config, &socket, &dir.join("ferrite-tape.log"))
}

fn ns_args(addr: SocketAddr, nsid: u32) -> Vec<String> {
    vec![
        "--address".into(),
        addr.to_string(),
        "--subnqn".into(),
        NQN.into(),
        "--nsid".into(),
        nsid.to_string(),
    ]
}

/// `ferrite-tape restore --job JOB ... --nsid NSID --wait`, which must succeed.
fn restore(gw: &Gateway, job: u64, addr: SocketAddr, nsid: u32) -> Value {
    let mut args = vec![
        "restore".to_string(),
        "--job".into(),
        job.to_string(),
        "--wait".into(),
    ];
    args.extend(ns_args(addr, nsid));
    gw.json(&strs(&args))
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[test]
fn snapshot_to_tape_and_back_byte_exact() {
    let data = ferrited::data_dir().expect("data dir");
    let dir = tempfile::tempdir().expect("dir");
    let port = ferrited::free_port().expect("port");
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let config = file_bdev_config(dir.path(), &data.path().join("pool.img"), "768MiB", NQN);
    let target = ManagedFerrited::start(dir.path(), port, Some(&config)).expect("ferrited starts");
    target.call("pool_create", json!({"name": "pool0", "bdevs": ["disk0"]}));
    for (name, size) in [
        ("vol0", VOLUME),
        ("restored", VOLUME + 16 * MIB),
        ("small", VOLUME / 2),
    ] {
        target.call(
            "volume_create",
            json!({"pool": "pool0", "name": name, "size": size, "thin": true}),
        );
    }
    target.call(
        "nvmf_subsystem_add_ns",
        json!({"nqn": NQN, "namespace": {"bdev_name": "pool0/vol0", "nsid": 1}}),
    );
    fill(addr, 1, VOLUME, 1);
    target.call(
        "snapshot_create",
        json!({"volume": "pool0/vol0", "name": "snap1"}),
    );
    // The volume moves on after the snapshot; the backup must hold the snapshot's content.
    fill(addr, 1, 8 * MIB, 99);
    for (bdev, nsid) in [
        ("pool0/snap1", 2),
        ("pool0/restored", 3),
        ("pool0/small", 4),
    ] {
        target.call(
            "nvmf_subsystem_add_ns",
            json!({"nqn": NQN, "namespace": {"bdev_name": bdev, "nsid": nsid}}),
        );
    }

    let gdir = tempfile::tempdir().expect("gateway dir");
    let catalog = gdir.path().join("catalog.db");
    let gw = start_gateway(gdir.path(), 64 * MIB);
    for b in ["TAPE01", "TAPE02", "TAPE03", "TAPE04", "TAPE05"] {
        gw.json(&["cartridge", "import", b]);
    }
    let status = gw.json(&["library", "status"]);
    assert_eq!(
        status["inventory"]["slots"]
            .as_array()
            .map(|s| s.iter().filter(|b| !b.is_null()).count()),
        Some(5)
    );

    // Full backup of the snapshot, shuffled across 4 connections, spanning two cartridges.
    let mut args = vec![
        "job".to_string(),
        "start".into(),
        "--shuffle".into(),
        "--wait".into(),
    ];
    args.extend(ns_args(addr, 2));
    let done = gw.json(&strs(&args));
    assert_eq!(done["state"], "done", "{done}");
    let parts = done["parts"].as_array().expect("parts");
    assert_eq!(
        parts.len(),
        2,
        "96 MiB on 64 MiB cartridges spans two: {done}"
    );
    assert!(
        done["queue"]["queue"]["out_of_order"].as_u64().unwrap_or(0) > 0,
        "delivery was shuffled: {done}"
    );
    let job1 = done["job"].as_u64().expect("job id");

    // Restore to a new volume: byte-exact with the snapshot (not the volume's newer data).
    assert_eq!(restore(&gw, job1, addr, 3)["state"], "done");
    assert_eq!(
        differs(addr, 3, VOLUME, 1),
        None,
        "restored volume differs from the snapshot"
    );

    let v = gw.json(&["job", "verify", &job1.to_string(), "--wait"]);
    assert_eq!(v["state"], "done", "verify: {v}");

    // A target smaller than the backup: refused, nothing written.
    fill(addr, 4, 4 * MIB, 7);
    let mut args = vec![
        "restore".to_string(),
        "--job".into(),
        job1.to_string(),
        "--wait".into(),
    ];
    args.extend(ns_args(addr, 4));
    let out = gw.cli(&strs(&args));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("nothing was written"),
        "{err}"
    );
    assert_eq!(
        differs(addr, 4, 4 * MIB, 7),
        None,
        "the small target was touched"
    );

    // kill -9 mid-job: the catalog says interrupted, the tape is closed at the next mount, the
    // job runs again to the end and restores.
    let mut args = vec![
        "job".to_string(),
        "start".into(),
        "--connections".into(),
        "2".into(),
    ];
    args.extend(ns_args(addr, 2));
    let started = gw.json(&strs(&args));
    let job2 = started["job"].as_u64().expect("job");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let s = gw.json(&["job", "status", &job2.to_string()]);
        if s["done_bytes"].as_u64().unwrap_or(0) > 0 || s["state"] != "running" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "job {job2} made no progress: {s}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let (c, s, l) = gw.kill9();
    let gw = Gateway::start(&c, &s, &l);
    let st = gw.json(&["job", "status", &job2.to_string()]);
    assert!(
        st["state"] == "interrupted" || st["state"] == "done",
        "after kill -9: {st}"
    );
    let mut args = vec!["job".to_string(), "start".into(), "--wait".into()];
    args.extend(ns_args(addr, 2));
    let again = gw.json(&strs(&args));
    assert_eq!(again["state"], "done", "{again}");
    let job3 = again["job"].as_u64().expect("job");
    assert!(job3 > job2);

    // Catalog deleted: scan rebuilds it from the cartridges; the first backup restores again.
    let (c, s, l) = gw.kill9();
    for ext in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{ext}", catalog.display()));
    }
    let gw = Gateway::start(&c, &s, &l);
    let scanned = gw.json(&["scan"]);
    let with_parts = scanned.as_array().map_or(0, |a| {
        a.iter()
            .filter(|r| r["parts"].as_array().is_some_and(|p| !p.is_empty()))
            .count()
    });
    assert!(
        with_parts >= 3,
        "jobs 1 and {job3} span at least three cartridges: {scanned}"
    );
    let j = gw.json(&["job", "status", &job1.to_string()]);
    assert_eq!(j["state"], "done", "job {job1} after scan: {j}");
    fill(addr, 3, VOLUME, 5);
    assert_eq!(restore(&gw, job3, addr, 3)["state"], "done");
    assert_eq!(
        differs(addr, 3, VOLUME, 1),
        None,
        "restore from the scanned catalog differs"
    );
    drop(gw);
    drop(target);
}

/// The block device of namespace `nsid` on the host, once it appears.
fn host_device(host: &LinuxHost, nsid: u32) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = host
            .run(&format!("ls /dev/nvme*n{nsid}"), Duration::from_secs(30))
            .expect("ls");
        if let Some(d) = out
            .stdout
            .split_whitespace()
            .next()
            .filter(|_| out.success())
        {
            return d.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "the host never saw namespace {nsid}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn vm_ext4_restored_from_tape_mounts_clean_with_its_files() {
    const LONG: Duration = Duration::from_secs(300);
    let port = ferrited::free_port().expect("port");
    let Some(host) = LinuxHost::boot_or_skip(HostOptions {
        forward_ports: vec![port],
        ..HostOptions::default()
    })
    .expect("the Linux host boots") else {
        return;
    };
    host.run_ok("modprobe nvme-tcp").expect("nvme-tcp");
    let data = ferrited::data_dir().expect("data dir");
    let dir = tempfile::tempdir().expect("dir");
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let config = file_bdev_config(dir.path(), &data.path().join("pool.img"), "512MiB", NQN);
    let target = ManagedFerrited::start(dir.path(), port, Some(&config)).expect("ferrited starts");
    target.call("pool_create", json!({"name": "pool0", "bdevs": ["disk0"]}));
    for name in ["fs", "copy"] {
        target.call(
            "volume_create",
            json!({"pool": "pool0", "name": name, "size": 64 * MIB, "thin": true}),
        );
    }
    target.call(
        "nvmf_subsystem_add_ns",
        json!({"nqn": NQN, "namespace": {"bdev_name": "pool0/fs", "nsid": 1}}),
    );
    let connect = format!(
        "nvme connect -t tcp -a {} -s {port} -n {NQN}",
        host.target_addr()
    );
    host.run_ok_within(&connect, Duration::from_secs(60))
        .expect("nvme connect");
    let dev = host_device(&host, 1);
    host.run_ok_within(
        &format!(
            "set -e; mkfs.ext4 -q -F {dev}; mkdir -p /mnt/fs; mount {dev} /mnt/fs; \
             head -c 6M /dev/urandom > /mnt/fs/a.bin; mkdir /mnt/fs/d; head -c 300k /dev/urandom > /mnt/fs/d/b.bin; \
             (cd /mnt/fs && sha256sum a.bin d/b.bin) > /root/files.sha; umount /mnt/fs"
        ),
        LONG,
    )
    .expect("mkfs, files, umount");
    host.run_ok(&format!("nvme disconnect -n {NQN}"))
        .expect("disconnect");
    target.call(
        "snapshot_create",
        json!({"volume": "pool0/fs", "name": "fs-snap"}),
    );
    for (bdev, nsid) in [("pool0/fs-snap", 2), ("pool0/copy", 3)] {
        target.call(
            "nvmf_subsystem_add_ns",
            json!({"nqn": NQN, "namespace": {"bdev_name": bdev, "nsid": nsid}}),
        );
    }

    let gdir = tempfile::tempdir().expect("gateway dir");
    let gw = start_gateway(gdir.path(), 256 * MIB);
    gw.json(&["cartridge", "import", "EXT401"]);
    let mut args = vec![
        "job".to_string(),
        "start".into(),
        "--shuffle".into(),
        "--wait".into(),
    ];
    args.extend(ns_args(addr, 2));
    let job = gw.json(&strs(&args))["job"].as_u64().expect("backup job");
    assert_eq!(restore(&gw, job, addr, 3)["state"], "done");

    // A fresh connection, so the host has no cached blocks of the copy from before the restore.
    host.run_ok_within(&connect, Duration::from_secs(60))
        .expect("nvme connect again");
    let copy = host_device(&host, 3);
    host.run_ok_within(
        &format!(
            "set -e; e2fsck -fn {copy}; mkdir -p /mnt/copy; mount {copy} /mnt/copy; \
             cd /mnt/copy && sha256sum -c /root/files.sha; cd /; umount /mnt/copy"
        ),
        LONG,
    )
    .expect("the copy restored from tape checks clean and holds the files");
    host.run_ok(&format!("nvme disconnect -n {NQN}"))
        .expect("disconnect");
    drop(gw);
    drop(target);
    host.shutdown().expect("host shuts down");
}

/// Compares two namespaces byte for byte over `bytes`; returns the first differing MiB.
fn namespaces_differ(addr: SocketAddr, a: u32, b: u32, bytes: u64) -> Option<u64> {
    let mut c = connect(addr);
    let step = c.max_transfer().min(MIB as u32) as usize;
    let (mut x, mut y) = (vec![0u8; step], vec![0u8; step]);
    for off in (0..bytes).step_by(step) {
        let n = (step / 4096) as u32;
        c.read(1, a, off / 4096, n, &mut x).expect("read a");
        c.read(1, b, off / 4096, n, &mut y).expect("read b");
        if x != y {
            return Some(off);
        }
    }
    None
}

/// Writes `len` bytes of pattern `salt` at `off` of namespace `nsid`.
fn write_at(addr: SocketAddr, nsid: u32, off: u64, len: u64, salt: u64) {
    let mut c = connect(addr);
    let step = c.max_transfer().min(MIB as u32) as u64;
    let mut at = off;
    while at < off + len {
        let n = step.min(off + len - at);
        c.write(1, nsid, at / 4096, &pattern(at, n as usize, salt), false)
            .expect("write");
        at += n;
    }
    c.flush(1, nsid).expect("flush");
}

fn parts_bytes(job: &Value) -> u64 {
    job["parts"]
        .as_array()
        .map_or(0, |p| p.iter().filter_map(|x| x["bytes"].as_u64()).sum())
}

#[test]
fn full_plus_two_incrementals_restore_byte_exact() {
    const SIZE: u64 = 64 * MIB;
    let data = ferrited::data_dir().expect("data dir");
    let dir = tempfile::tempdir().expect("dir");
    let port = ferrited::free_port().expect("port");
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let config = file_bdev_config(dir.path(), &data.path().join("pool.img"), "512MiB", NQN);
    let target = ManagedFerrited::start(dir.path(), port, Some(&config)).expect("ferrited starts");
    let appliance = target.socket().display().to_string();
    target.call("pool_create", json!({"name": "pool0", "bdevs": ["disk0"]}));
    for name in ["vol0", "restored"] {
        target.call(
            "volume_create",
            json!({"pool": "pool0", "name": name, "size": SIZE, "thin": true}),
        );
    }
    let export = |bdev: &str, nsid: u32| {
        target.call(
            "nvmf_subsystem_add_ns",
            json!({"nqn": NQN, "namespace": {"bdev_name": bdev, "nsid": nsid}}),
        );
    };
    export("pool0/vol0", 1);
    export("pool0/restored", 5);
    fill(addr, 1, SIZE, 1);
    let snap = |name: &str, nsid: u32| {
        target.call(
            "snapshot_create",
            json!({"volume": "pool0/vol0", "name": name}),
        );
        export(&format!("pool0/{name}"), nsid);
    };
    snap("s1", 2);

    let gdir = tempfile::tempdir().expect("gateway dir");
    let gw = start_gateway(gdir.path(), 256 * MIB);
    gw.json(&["cartridge", "import", "INC001"]);
    let backup = |nsid: u32, name: &str, base: Option<u64>| -> Value {
        let mut args = vec![
            "job".to_string(),
            "start".into(),
            "--shuffle".into(),
            "--wait".into(),
            "--name".into(),
            name.into(),
        ];
        args.extend(ns_args(addr, nsid));
        if let Some(b) = base {
            args.extend([
                "--base-job".into(),
                b.to_string(),
                "--appliance-socket".into(),
                appliance.clone(),
            ]);
        }
        let done = gw.json(&strs(&args));
        assert_eq!(done["state"], "done", "{done}");
        done
    };
    let full = backup(2, "pool0/s1", None);
    let job1 = full["job"].as_u64().expect("job");
    assert_eq!(parts_bytes(&full), SIZE);

    // Day 2: 3 MiB rewritten, 2 MiB deallocated (whole clusters: unmapped in metadata).
    write_at(addr, 1, 10 * MIB, 3 * MIB, 2);
    let mut c = connect(addr);
    c.deallocate(1, 1, &[(40 * MIB / 4096, (2 * MIB / 4096) as u32)])
        .expect("deallocate");
    drop(c);
    snap("s2", 3);
    let diff = target.call(
        "snapshot_diff",
        json!({"base": "pool0/s1", "target": "pool0/s2"}),
    );
    assert_eq!(diff["changed_bytes"], 3 * MIB, "{diff}");
    assert_eq!(diff["zero_bytes"], 2 * MIB, "{diff}");
    let inc1 = backup(3, "pool0/s2", Some(job1));
    let job2 = inc1["job"].as_u64().expect("job");
    assert_eq!(
        parts_bytes(&inc1),
        3 * MIB,
        "only the changed clusters on tape: {inc1}"
    );

    // Day 3: overlapping and new writes, and the deallocated range written again in part.
    write_at(addr, 1, 11 * MIB, 2 * MIB, 3);
    write_at(addr, 1, 41 * MIB, MIB, 4);
    write_at(addr, 1, SIZE - MIB, MIB, 5);
    snap("s3", 4);
    let inc2 = backup(4, "pool0/s3", Some(job2));
    let job3 = inc2["job"].as_u64().expect("job");
    assert_eq!(parts_bytes(&inc2), 4 * MIB, "{inc2}");
    let st = gw.json(&["job", "status", &job3.to_string()]);
    assert_eq!(st["kind"], "incremental", "{st}");

    // Restore the last incremental over a volume full of other data: full + both in order.
    fill(addr, 5, SIZE, 77);
    let r = restore(&gw, job3, addr, 5);
    assert_eq!(r["state"], "done", "{r}");
    assert_eq!(
        namespaces_differ(addr, 4, 5, SIZE),
        None,
        "the restored chain differs from snapshot s3"
    );
    assert_eq!(
        namespaces_differ(addr, 3, 5, SIZE).map(|_| ()),
        Some(()),
        "s2 and s3 differ, so the oracle can tell the links apart"
    );
    let v = gw.json(&["job", "verify", &job3.to_string(), "--wait"]);
    assert_eq!(v["state"], "done", "verify: {v}");

    // An incremental against a snapshot of another size is refused with ferrited's reason.
    let mut args = vec![
        "job".to_string(),
        "start".into(),
        "--name".into(),
        "pool0/s3".into(),
        "--base-job".into(),
        job3.to_string(),
        "--base-snapshot".into(),
        "pool0/vol0".into(),
        "--appliance-socket".into(),
        appliance.clone(),
    ];
    args.extend(ns_args(addr, 4));
    let out = gw.cli(&strs(&args));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("not a snapshot"),
        "{err}"
    );
    drop(gw);
    drop(target);
}

/// `ferrite-tape journal replay` to `nsid` with the given limit; returns the job's report.
fn replay(gw: &Gateway, jobs: &[u64], addr: SocketAddr, nsid: u32, limit: &[&str]) -> Value {
    let mut args = vec!["journal".to_string(), "replay".into(), "--wait".into()];
    for j in jobs {
        args.extend(["--job".into(), j.to_string()]);
    }
    args.extend(ns_args(addr, nsid));
    args.extend(limit.iter().map(|s| s.to_string()));
    let done = gw.json(&strs(&args));
    assert_eq!(done["state"], "done", "{done}");
    done["result"].clone()
}

/// Reads `bytes` of namespace `nsid` from offset 0.
fn read_all(addr: SocketAddr, nsid: u32, bytes: u64) -> Vec<u8> {
    let mut c = connect(addr);
    let mut out = vec![0u8; bytes as usize];
    let step = c.max_transfer().min(MIB as u32) as usize;
    for (i, piece) in out.chunks_mut(step).enumerate() {
        let lba = (i * step / 4096) as u64;
        c.read(1, nsid, lba, (piece.len() / 4096) as u32, piece)
            .expect("read");
    }
    out
}

#[test]
fn journal_archived_in_order_trimmed_after_tape_and_replayed_to_a_point_in_time() {
    const SIZE: u64 = 8 * MIB;
    const REC: u64 = 64 * 1024;
    let data = ferrited::data_dir().expect("data dir");
    let dir = tempfile::tempdir().expect("dir");
    let port = ferrited::free_port().expect("port");
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let config = file_bdev_config(dir.path(), &data.path().join("pool.img"), "256MiB", NQN);
    let target = ManagedFerrited::start(dir.path(), port, Some(&config)).expect("ferrited starts");
    let mut endpoint = target.socket().into_os_string();
    endpoint.push(".journal");
    let endpoint = endpoint.to_string_lossy().to_string();
    target.call("pool_create", json!({"name": "pool0", "bdevs": ["disk0"]}));
    for name in ["vol0", "pit1", "pit2"] {
        target.call(
            "volume_create",
            json!({"pool": "pool0", "name": name, "size": SIZE, "thin": true}),
        );
    }
    target.call(
        "journal_create",
        json!({"group": 1, "pool": "pool0", "size": "16MiB"}),
    );
    target.call(
        "journal_attach",
        json!({"group": 1, "bdev": "pool0/vol0", "nsid": 1}),
    );
    for (bdev, nsid) in [
        ("pool0/vol0@journal", 1),
        ("pool0/pit1", 2),
        ("pool0/pit2", 3),
    ] {
        target.call(
            "nvmf_subsystem_add_ns",
            json!({"nqn": NQN, "namespace": {"bdev_name": bdev, "nsid": nsid}}),
        );
    }
    // The model: the volume's content after each record (index = sequence number).
    let mut images = vec![vec![0u8; SIZE as usize]];
    let mut c = connect(addr);
    let mut journaled = |c: &mut Controller, n: u64, salt: u64| {
        for i in 0..n {
            // Overlapping 64 KiB writes, every fifth one a write-zeroes.
            let off = ((salt * 7 + i * 13) % (SIZE / REC - 1)) * REC + (i % 3) * 4096;
            let mut img = images.last().expect("model").clone();
            if i % 5 == 4 {
                c.write_zeroes(1, 1, off / 4096, (REC / 4096) as u32, false)
                    .expect("write zeroes");
                img[off as usize..(off + REC) as usize].fill(0);
            } else {
                let d = pattern(off, REC as usize, salt * 1000 + i);
                c.write(1, 1, off / 4096, &d, false).expect("write");
                img[off as usize..(off + REC) as usize].copy_from_slice(&d);
            }
            images.push(img);
        }
    };
    journaled(&mut c, 30, 1);
    let committed = |t: &ManagedFerrited| {
        let l = t.call("journal_list", json!({}));
        (
            l[0]["committed_seq"].as_u64().expect("committed"),
            l[0]["trimmed_seq"].as_u64().expect("trimmed"),
        )
    };
    assert_eq!(committed(&target), (30, 0), "one record per write");

    let gdir = tempfile::tempdir().expect("gateway dir");
    let gw = start_gateway(gdir.path(), 64 * MIB);
    gw.json(&["cartridge", "import", "JRN001"]);
    let archive = |extra: &[&str]| -> Value {
        let mut args = vec![
            "journal",
            "archive",
            "--group",
            "1",
            "--journal-socket",
            &endpoint,
            "--wait",
        ];
        args.extend_from_slice(extra);
        gw.json(&args)
    };
    let a1 = archive(&[]);
    assert_eq!(a1["state"], "done", "{a1}");
    assert_eq!(
        (&a1["result"]["first_seq"], &a1["result"]["last_seq"]),
        (&json!(1), &json!(30)),
        "{a1}"
    );
    assert_eq!(a1["result"]["trimmed_to"], 30, "trimmed once on tape: {a1}");
    assert_eq!(committed(&target), (30, 30));
    let job1 = a1["job"].as_u64().expect("job");

    journaled(&mut c, 25, 2);
    drop(c);
    let a2 = archive(&[]);
    assert_eq!(a2["state"], "done", "{a2}");
    assert_eq!(a2["result"]["first_seq"], 31, "{a2}");
    assert_eq!(a2["result"]["last_seq"], 55, "{a2}");
    let job2 = a2["job"].as_u64().expect("job");
    assert_eq!(committed(&target), (55, 55));

    // Records already trimmed cannot be archived again: the job fails and says why.
    let mut args = vec![
        "journal".to_string(),
        "archive".into(),
        "--group".into(),
        "1".into(),
        "--from-seq".into(),
        "3".into(),
        "--journal-socket".into(),
        endpoint.clone(),
        "--wait".into(),
    ];
    args.insert(0, "--json".into());
    let out = gw.cli(&strs(&args));
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("already trimmed"), "{text}");

    // Point in time by sequence number, across both archives.
    let r = replay(&gw, &[job1, job2], addr, 2, &["--up-to-seq", "42"]);
    assert_eq!(
        (&r["applied"], &r["last_seq"]),
        (&json!(42), &json!(42)),
        "{r}"
    );
    assert!(
        read_all(addr, 2, SIZE) == images[42],
        "pit1 differs from the volume after record 42"
    );
    // By timestamp: the records up to record 17's timestamp.
    let r17 = replay(&gw, &[job1], addr, 3, &["--up-to-seq", "17"]);
    let ts = r17["last_ts"].as_u64().expect("ts").to_string();
    let r = replay(&gw, &[job1, job2], addr, 3, &["--up-to-ts", &ts]);
    let last = r["last_seq"].as_u64().expect("last") as usize;
    assert!((17..55).contains(&last), "{r}");
    assert!(
        read_all(addr, 3, SIZE) == images[last],
        "pit2 differs from the volume after record {last}"
    );
    // Everything: the live volume's content.
    replay(&gw, &[job1, job2], addr, 3, &[]);
    assert!(read_all(addr, 3, SIZE) == images[55]);
    assert!(
        read_all(addr, 1, SIZE) == images[55],
        "model and volume agree"
    );
    // Archives out of order leave a gap: the replay fails naming it.
    let mut args = vec!["journal".to_string(), "replay".into(), "--wait".into()];
    for j in [job2, job1] {
        args.extend(["--job".into(), j.to_string()]);
    }
    args.extend(ns_args(addr, 3));
    let out = gw.cli(&strs(&args));
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && text.contains("gap"), "{text}");
    drop(gw);
    drop(target);
}
