//! Remote backend (issue 14 items 1-2): two real `ferrited` on loopback, one the remote, one
//! the front. The front attaches the remote's subsystem (`[[nvme_controller]]`), exports one
//! remote namespace whole (an external volume) and builds a pool on another (a pool whose
//! member is remote). `ferrite-perf --verify` runs through the front on both while the remote
//! is killed with SIGKILL and restarted: I/O is held, resumed, and every block verifies.
//! Bad input: unreachable remote, wrong NQN, a remote that shrinks or changes block size, a
//! remote gone past `ctrlr_loss_timeout_sec` (clean I/O errors and a pool event, no hang).

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{free_port, start_with_config, CtlDaemon, NQN};
use ferrite_perf::{engine, IoSize, PerfConfig, PerfReport, TransportId, Workload};
use serde_json::{json, Value};

const FRONT_NQN: &str = "nqn.2026-01.io.ferrite:front";

/// The remote: NSID 1 and 2 = files (they survive a restart), one reactor.
fn remote_config(port: u16, dir: &Path, size: &str, block_size: u32) -> String {
    let f = |n: &str| dir.join(n).display().to_string();
    format!(
        r#"cores = "0"
listen = ["127.0.0.1:{port}"]
[[bdev]]
name = "d1"
kind = "malloc"
size = "{size}"
block_size = {block_size}
[[bdev]]
name = "d2"
kind = "file"
path = "{}"
size = "64MiB"
block_size = 4096
[[bdev]]
name = "d3"
kind = "file"
path = "{}"
size = "32MiB"
block_size = 4096
[[subsystem]]
nqn = "{NQN}"
allow_any_host = true
namespaces = [{{ nsid = 1, bdev = "d1" }}, {{ nsid = 2, bdev = "d2" }}, {{ nsid = 3, bdev = "d3" }}]
"#,
        f("d2.img"),
        f("d3.img"),
    )
}

/// The front: the remote attached as `r0`, with the given loss timeout.
fn front_config(port: u16, remote: u16, loss_timeout: i64, body: &str) -> String {
    format!(
        r#"cores = "0"
listen = ["127.0.0.1:{port}"]
[[nvme_controller]]
name = "r0"
trtype = "tcp"
traddr = "127.0.0.1"
trsvcid = "{remote}"
subnqn = "{NQN}"
ctrlr_loss_timeout_sec = {loss_timeout}
reconnect_delay_sec = 1
{body}
"#
    )
}

fn perf(addr: std::net::SocketAddr, nsid: u32, secs: u64, seed: u64) -> PerfConfig {
    let mut c = PerfConfig::new(vec![TransportId {
        trtype: ferrite_host::Trtype::Tcp,
        addr,
        subnqn: FRONT_NQN.into(),
        hostnqn: None,
        nsid,
    }]);
    c.controllers = 1;
    c.qpairs = 1;
    c.queue_depth = 8;
    c.time = Duration::from_secs(secs);
    c.io_size = IoSize {
        min: 4096,
        max: 64 * 1024,
    };
    c.workload = Workload::RandRw;
    c.rwmixread = 50;
    c.verify = true;
    c.span_bytes = Some(16 << 20);
    c.cores = vec![0];
    c.seed = seed;
    // Longer than the outage: held commands must complete, not time out.
    c.timeout = Duration::from_secs(25);
    c
}

fn run(cfg: PerfConfig) -> std::thread::JoinHandle<Result<PerfReport, String>> {
    std::thread::spawn(move || {
        let outcome = engine::run(&cfg).map_err(|e| e.to_string())?;
        match outcome.error {
            Some(e) => Err(format!("{e}\n{}", outcome.report)),
            None => Ok(outcome.report),
        }
    })
}

fn controllers(front: &CtlDaemon) -> Value {
    front
        .call("bdev_nvme_get_controllers", json!({"name": "r0"}))
        .expect("bdev_nvme_get_controllers")
}

/// Polls `bdev_nvme_get_controllers` until `pred` holds (bounded).
fn wait_for(front: &CtlDaemon, what: &str, limit: Duration, pred: impl Fn(&Value) -> bool) {
    let deadline = Instant::now() + limit;
    loop {
        let v = controllers(front);
        if pred(&v[0]["ctrlrs"][0]) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: {v:#}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn external_volume_and_remote_pool_member_survive_a_remote_restart() {
    let dir = tempfile::tempdir_in("/var/tmp").expect("data dir on disk (O_DIRECT)");
    let rport = free_port();
    let rcfg = remote_config(rport, dir.path(), "32MiB", 4096);
    let remote = start_with_config(dir.path(), &rcfg, rport, &[]);
    let fport = free_port();
    let fdir = tempfile::tempdir().expect("front dir");
    let body = format!(
        r#"[[pool]]
name = "tank"
bdevs = ["r0n2"]
cluster_size = "1MiB"
[[subsystem]]
nqn = "{FRONT_NQN}"
allow_any_host = true
namespaces = [{{ nsid = 1, bdev = "r0n3" }}]
"#
    );
    let front = start_with_config(
        fdir.path(),
        &front_config(fport, rport, 30, &body),
        fport,
        &[],
    );
    // The remote's capabilities came from its Identify.
    let c = controllers(&front);
    let p = &c[0]["ctrlrs"][0];
    assert_eq!(p["state"], "enabled", "{c:#}");
    assert_eq!(p["namespaces"].as_array().map(Vec::len), Some(3), "{c:#}");
    let list = front
        .call("bdev_list", json!({"name": "r0n3"}))
        .expect("bdev_list");
    assert_eq!(list[0]["kind"], "remote", "{list:#}");
    assert_eq!(list[0]["num_blocks"], 32 * 256, "{list:#}");
    // A volume on the pool whose member is remote, exported as NSID 2.
    front
        .call(
            "volume_create",
            json!({"pool": "tank", "name": "v", "size": "32MiB"}),
        )
        .expect("volume_create");
    front
        .call(
            "nvmf_subsystem_add_ns",
            json!({"nqn": FRONT_NQN, "namespace": {"bdev_name": "tank/v", "nsid": 2}}),
        )
        .expect("export the volume");
    // The CLI shows the controller.
    let out = front.ok(&["bdev", "remote-list"]);
    assert!(out.contains("r0") && out.contains("enabled"), "{out}");

    let external = run(perf(front.addr, 1, 9, 0x14A1));
    let pooled = run(perf(front.addr, 2, 9, 0x14A2));
    std::thread::sleep(Duration::from_secs(2));
    remote.kill9();
    std::thread::sleep(Duration::from_secs(2));
    let remote = start_with_config(dir.path(), &rcfg, rport, &[]);
    for (what, h) in [("external volume", external), ("pool volume", pooled)] {
        let report = h.join().expect("perf thread").unwrap_or_else(|e| {
            panic!(
                "{what}: ferrite-perf failed: {e}\nfront log:\n{}",
                front.log_text()
            )
        });
        eprintln!("{what}:\n{report}");
        assert!(report.total.verified_blocks > 0, "{what}: reads verified");
        assert!(report.total.writes > 0, "{what}: writes ran");
    }
    let c = controllers(&front);
    let p = &c[0]["ctrlrs"][0];
    assert_eq!(p["state"], "enabled", "{c:#}");
    assert!(p["resets"].as_u64() >= Some(1), "{c:#}");
    // Detach refused while the bdevs are used, named.
    let e = front
        .call("bdev_nvme_detach_controller", json!({"name": "r0"}))
        .expect_err("busy");
    assert!(
        e.message.contains("pool tank") || e.message.contains(FRONT_NQN),
        "{}",
        e.message
    );
    front.stop();
    remote.stop();
}

#[test]
fn bad_remotes_get_clear_errors() {
    let dir = tempfile::tempdir_in("/var/tmp").expect("data dir on disk");
    let rport = free_port();
    let remote = start_with_config(
        dir.path(),
        &remote_config(rport, dir.path(), "32MiB", 4096),
        rport,
        &[],
    );
    let fport = free_port();
    let fdir = tempfile::tempdir().expect("front dir");
    // No remote at start: the front starts with none attached, then attaches over RPC.
    let front = start_with_config(
        fdir.path(),
        &format!("cores = \"0\"\nlisten = [\"127.0.0.1:{fport}\"]\n[[subsystem]]\nnqn = \"{FRONT_NQN}\"\nallow_any_host = true\n"),
        fport,
        &[],
    );
    let attach = |name: &str, port: u16, nqn: &str| {
        front.call(
            "bdev_nvme_attach_controller",
            json!({"name": name, "trtype": "tcp", "traddr": "127.0.0.1",
                   "trsvcid": port.to_string(), "subnqn": nqn,
                   "ctrlr_loss_timeout_sec": 3, "reconnect_delay_sec": 1}),
        )
    };
    let e = attach("x", free_port(), NQN).expect_err("unreachable");
    assert!(e.message.contains("refused"), "{}", e.message);
    let e = attach("x", rport, "nqn.2026-01.io.ferrite:nope").expect_err("wrong NQN");
    assert!(e.message.contains("Connect was refused"), "{}", e.message);
    let e = front
        .call(
            "bdev_nvme_attach_controller",
            json!({"name": "x", "trtype": "rdma", "traddr": "127.0.0.1", "subnqn": NQN}),
        )
        .expect_err("rdma");
    assert!(e.message.contains("trtype"), "{}", e.message);
    let out = front.ctl(&[
        "bdev",
        "remote-attach",
        "y",
        "127.0.0.1",
        NQN,
        "--trsvcid",
        &free_port().to_string(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("refused"));

    // Attach and detach through the CLI.
    let out = front.ok(&[
        "bdev",
        "remote-attach",
        "t",
        "127.0.0.1",
        NQN,
        "--trsvcid",
        &rport.to_string(),
    ]);
    assert!(out.contains("tn1"), "{out}");
    front.ok(&["bdev", "remote-detach", "t"]);

    let names = attach("r0", rport, NQN).expect("attach");
    assert_eq!(names, json!(["r0n1", "r0n2", "r0n3"]));
    let e = attach("r0", rport, NQN).expect_err("twice");
    assert!(e.message.contains("already exists"), "{}", e.message);
    // NSID 1: r0n1 (malloc on the remote, resized below); NSID 2: r0n3 whole; NSID 3: a
    // volume of a pool on r0n2.
    front
        .call("pool_create", json!({"name": "p", "bdevs": ["r0n2"]}))
        .expect("pool on a remote member");
    front
        .call(
            "volume_create",
            json!({"pool": "p", "name": "v", "size": "8MiB"}),
        )
        .expect("volume_create");
    for (nsid, bdev) in [(1, "r0n1"), (2, "r0n3"), (3, "p/v")] {
        front
            .call(
                "nvmf_subsystem_add_ns",
                json!({"nqn": FRONT_NQN, "namespace": {"bdev_name": bdev, "nsid": nsid}}),
            )
            .expect("export");
    }
    let mut host = ferrite_host::Controller::connect({
        let mut o = ferrite_host::ConnectOptions::new(front.addr, FRONT_NQN);
        o.timeout = Duration::from_secs(20);
        o
    })
    .expect("host connects to the front");
    let data = vec![0x5Au8; 4096];
    for nsid in 1..=3 {
        host.write(1, nsid, 0, &data, false)
            .expect("write through the front");
    }

    // The remote comes back smaller: the namespace is failed with the reason, I/O errors.
    remote.kill9();
    let remote = start_with_config(
        dir.path(),
        &remote_config(rport, dir.path(), "16MiB", 4096),
        rport,
        &[],
    );
    wait_for(&front, "shrink noticed", Duration::from_secs(15), |p| {
        p["namespaces"][0]["failure"]
            .as_str()
            .is_some_and(|f| f.contains("shrank from 8192 to 4096"))
    });
    let mut back = vec![0u8; 4096];
    let e = host
        .read(1, 1, 0, 1, &mut back)
        .expect_err("failed namespace");
    assert!(
        e.status().is_some(),
        "an NVMe error status, not a hang: {e}"
    );
    // The other namespaces came back with their data.
    host.read(1, 2, 0, 1, &mut back)
        .expect("r0n3 after the restart");
    assert_eq!(back, data);
    // ... or with another block size.
    remote.kill9();
    let remote = start_with_config(
        dir.path(),
        &remote_config(rport, dir.path(), "32MiB", 512),
        rport,
        &[],
    );
    wait_for(
        &front,
        "block size change noticed",
        Duration::from_secs(15),
        |p| {
            p["namespaces"][0]["failure"]
                .as_str()
                .is_some_and(|f| f.contains("block size changed from 4096 to 512"))
        },
    );
    assert!(host.read(1, 1, 0, 1, &mut back).is_err());

    // Gone past ctrlr_loss_timeout_sec (3 s): held I/O fails, state failed, a pool event.
    remote.kill9();
    let started = Instant::now();
    let e = host.read(1, 2, 0, 1, &mut back).expect_err("remote gone");
    let held = started.elapsed();
    assert!(e.status().is_some(), "{e}");
    assert!(
        held >= Duration::from_secs(1) && held < Duration::from_secs(15),
        "failed after {held:?}"
    );
    wait_for(&front, "failed state", Duration::from_secs(10), |p| {
        p["state"] == "failed"
    });
    let started = Instant::now();
    assert!(
        host.write(1, 3, 0, &data, false).is_err(),
        "pool volume on the lost member"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "new I/O fails fast"
    );
    let info = front
        .call("pool_info", json!({"name": "p"}))
        .expect("pool_info");
    let events = info["events"].to_string();
    assert!(
        events.contains("member_io_error") && events.contains("r0n2"),
        "{info:#}"
    );
    let out = front.ok(&["bdev", "remote-list"]);
    assert!(out.contains("failed"), "{out}");
    // Detach refused while exported or a pool member, naming which.
    let e = front
        .call("bdev_nvme_detach_controller", json!({"name": "r0"}))
        .expect_err("in use");
    assert!(
        e.message.contains("pool p") || e.message.contains("namespace of"),
        "{}",
        e.message
    );
    front.fails(
        &["bdev", "delete", "r0n1"],
        &["bdev_nvme_detach_controller"],
    );
    host.disconnect();
    front.stop();
}
