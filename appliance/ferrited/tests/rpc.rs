//! The control plane end to end: a real `ferrited` with a control socket, driven through the
//! real `ferritectl` (every method, every error path), raw JSON-RPC garbage while a host does
//! I/O, `save_config` round trips and `--state-dir` restarts.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrite_host::{ConnectOptions, Controller};
use serde_json::{json, Value};

mod common;

use common::{free_port, ram_config_for, start_with_config, CtlDaemon as Daemon};

const NQN: &str = "nqn.2026-01.io.ferrite:rpc";
const HOST: &str = "nqn.2014-08.org.nvmexpress:uuid:00000000-0000-0000-0000-0000000000aa";

fn config(port: u16) -> String {
    ram_config_for(NQN, port, "16MiB", &[])
}

#[test]
fn every_method_through_ferritectl_with_its_errors() {
    let dir = tempfile::tempdir().expect("tmp");
    let port = free_port();
    let d = start_with_config(dir.path(), &config(port), port, &[]);
    let mode = std::fs::metadata(&d.socket)
        .expect("socket")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "socket mode");

    // Methods list matches the table.
    let methods = d.json(&["methods"]);
    assert!(methods.as_array().expect("array").len() >= 20);

    // bdevs
    d.ok(&[
        "bdev",
        "malloc-create",
        "m1",
        "--size",
        "8MiB",
        "--block-size",
        "512",
    ]);
    d.fails(
        &["bdev", "malloc-create", "m1", "--num-blocks", "8"],
        &["already exists"],
    );
    d.fails(
        &[
            "bdev",
            "malloc-create",
            "m2",
            "--num-blocks",
            "8",
            "--block-size",
            "1000",
        ],
        &["block_size"],
    );
    d.fails(
        &["bdev", "malloc-create", "m2", "--num-blocks", "0"],
        &["num_blocks"],
    );
    let file = dir.path().join("f1.img");
    let file_s = file.to_str().expect("utf-8");
    d.ok(&["bdev", "file-create", "f1", file_s, "--size", "4MiB"]);
    d.fails(
        &["bdev", "file-create", "f2", "/nonexistent/dir/x.img"],
        &["f2"],
    );
    let list = d.json(&["bdev", "list"]);
    let names: Vec<&str> = list
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|b| b["name"].as_str())
        .collect();
    assert_eq!(names, ["f1", "m1", "ram0"]);
    let one = d.json(&["bdev", "list", "f1"]);
    assert_eq!(one[0]["kind"], "file");
    assert_eq!(
        one[0]["num_blocks"].as_u64().expect("n") * one[0]["block_size"].as_u64().expect("bs"),
        4 << 20
    );
    d.fails(&["bdev", "list", "nope"], &["no bdev nope"]);
    assert!(
        d.ok(&["bdev", "list"]).contains(&format!("{NQN}/1")),
        "table shows the claim"
    );

    // subsystems
    let s2 = "nqn.2026-01.io.ferrite:two";
    d.ok(&[
        "subsystem",
        "add",
        s2,
        "--serial-number",
        "SN2",
        "--model-number",
        "Model Two",
    ]);
    d.fails(&["subsystem", "add", s2], &["already exists"]);
    d.fails(&["subsystem", "add", "not-an-nqn"], &["invalid NQN"]);
    d.fails(
        &["subsystem", "add", "nqn.2014-08.org.nvmexpress.discovery"],
        &["discovery"],
    );
    d.fails(
        &[
            "subsystem",
            "add",
            "nqn.2026-01.io.ferrite:x",
            "--serial-number",
            "123456789012345678901",
        ],
        &["serial_number"],
    );
    d.fails(
        &["subsystem", "delete", "nqn.2026-01.io.ferrite:none"],
        &["no subsystem"],
    );

    // namespaces
    assert_eq!(d.ok(&["ns", "add", s2, "m1"]).trim(), "nsid 1");
    d.fails(
        &["ns", "add", s2, "f1", "--nsid", "1"],
        &["already has namespace 1"],
    );
    d.fails(&["ns", "add", s2, "nope"], &["no bdev nope"]);
    d.fails(
        &["ns", "add", "nqn.2026-01.io.ferrite:none", "f1"],
        &["no subsystem"],
    );
    d.fails(
        &["ns", "add", s2, "f1", "--nsid", "5000"],
        &["invalid namespace id"],
    );
    d.fails(&["ns", "add", s2, "f1", "--uuid", "xyz"], &["uuid"]);
    let nsid = d.json(&[
        "ns",
        "add",
        s2,
        "f1",
        "--nsid",
        "7",
        "--uuid",
        "00112233-4455-6677-8899-aabbccddeeff",
        "--nguid",
        "ffeeddccbbaa99887766554433221100",
    ]);
    assert_eq!(nsid, 7);
    d.fails(&["bdev", "delete", "m1"], &["in use", s2]);
    d.fails(&["ns", "remove", s2, "3"], &["has no namespace 3"]);

    // hosts
    d.ok(&["host", "add", s2, HOST]);
    d.fails(&["host", "add", s2, HOST], &["already allowed"]);
    d.fails(&["host", "add", s2, "bad host"], &["invalid NQN"]);
    d.fails(
        &[
            "host",
            "remove",
            s2,
            "nqn.2014-08.org.nvmexpress:uuid:00000000-0000-0000-0000-0000000000bb",
        ],
        &["not on the allowed list"],
    );
    d.ok(&["subsystem", "allow-any-host", s2, "true"]);
    d.ok(&["subsystem", "allow-any-host", s2, "false"]);

    // listeners
    let port2 = free_port();
    let addr2 = format!("127.0.0.1:{port2}");
    d.ok(&["listener", "add", s2, &addr2]);
    assert!(TcpStream::connect(&addr2).is_ok(), "new listener accepts");
    d.fails(&["listener", "add", s2, &addr2], &["already listening"]);
    d.fails(
        &["listener", "add", "nqn.2026-01.io.ferrite:none", &addr2],
        &["no subsystem"],
    );
    d.fails(&["call", "nvmf_subsystem_add_listener", &format!(r#"{{"nqn":"{s2}","listen_address":{{"trtype":"fc","traddr":"127.0.0.1","trsvcid":"1"}}}}"#)], &["TCP or RDMA"]);
    // No RDMA device serves the loopback address here (soft-RoCE runs in the QEMU guest): the
    // RDMA transport says why it cannot listen, and nothing is left registered.
    d.fails(&["call", "nvmf_subsystem_add_listener", &format!(r#"{{"nqn":"{s2}","listen_address":{{"trtype":"rdma","traddr":"127.0.0.1","trsvcid":"1"}}}}"#)], &["rdma"]);
    d.fails(&["call", "nvmf_subsystem_add_listener", &format!(r#"{{"nqn":"{s2}","listen_address":{{"trtype":"TCP","adrfam":"IPv6","traddr":"127.0.0.1","trsvcid":"1"}}}}"#)], &["does not match"]);

    let subs = d.json(&["subsystem", "list", s2]);
    let sub = &subs[0];
    assert_eq!(sub["serial_number"], "SN2");
    assert_eq!(sub["model_number"], "Model Two");
    assert_eq!(sub["hosts"][0]["nqn"], HOST);
    assert_eq!(sub["namespaces"][1]["nsid"], 7);
    assert_eq!(
        sub["namespaces"][1]["uuid"],
        "00112233-4455-6677-8899-aabbccddeeff"
    );
    assert_eq!(
        sub["namespaces"][1]["nguid"],
        "FFEEDDCCBBAA99887766554433221100"
    );
    // Listeners are per subsystem: s2 has only its own port, until it also joins the port the
    // default subsystem already uses (a shared port is not an error, as in SPDK).
    assert_eq!(
        sub["listen_addresses"].as_array().expect("listeners").len(),
        1
    );
    let main_addr = d.addr.to_string();
    d.ok(&["listener", "add", s2, &main_addr]);
    let subs = d.json(&["subsystem", "list", s2]);
    assert_eq!(
        subs[0]["listen_addresses"]
            .as_array()
            .expect("listeners")
            .len(),
        2
    );
    d.ok(&["listener", "remove", s2, &main_addr]);
    assert!(
        TcpStream::connect(d.addr).is_ok(),
        "the default subsystem still listens there"
    );
    d.fails(
        &["subsystem", "list", "nqn.2026-01.io.ferrite:none"],
        &["no subsystem"],
    );

    d.ok(&["listener", "remove", s2, &addr2]);
    d.fails(&["listener", "remove", s2, &addr2], &["not listening"]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(&addr2).is_ok() {
        assert!(Instant::now() < deadline, "removed listener still accepts");
        std::thread::sleep(Duration::from_millis(20));
    }

    // controllers, qpairs, stats, reactors with a connected host doing I/O
    let mut opts = ConnectOptions::new(d.addr, NQN);
    opts.io_queues = 2;
    let mut c = Controller::connect(opts).expect("connect");
    let data = vec![0x5a; 4096];
    for lba in 0..16 {
        c.write(1, 1, lba * 8, &data, false).expect("write");
    }
    let mut back = vec![0; 4096];
    c.read(2, 1, 0, 8, &mut back).expect("read");
    let ctrls = d.json(&["controllers", NQN]);
    assert_eq!(ctrls.as_array().expect("array").len(), 1);
    assert_eq!(ctrls[0]["num_io_qpairs"], 2);
    assert!(d.ok(&["controllers"]).contains(NQN));
    let qpairs = d.json(&["qpairs", NQN]);
    assert_eq!(
        qpairs.as_array().expect("array").len(),
        3,
        "admin + 2 I/O: {qpairs}"
    );
    assert!(d.ok(&["qpairs"]).contains("CNTLID"));
    // Each queue names the reactor serving it; the reactors' poll groups account for them.
    let mut per_reactor = [0u64; 2];
    for q in qpairs.as_array().expect("array") {
        let r = q["reactor"]
            .as_u64()
            .unwrap_or_else(|| panic!("reactor of {q}"));
        per_reactor[r as usize] += 1;
    }
    let stats = d.json(&["stats", "--interval", "0"]);
    let ns = stats["namespaces"]
        .as_array()
        .expect("namespaces")
        .iter()
        .find(|n| n["nqn"] == NQN && n["nsid"] == 1)
        .expect("the namespace has stats")
        .clone();
    assert_eq!(ns["write_ops"], 16);
    assert_eq!(ns["read_ops"], 1);
    assert_eq!(ns["bytes_written"], 16 * 4096);
    assert_eq!(ns["bytes_read"], 4096);
    assert_eq!(ns["queue_depth"], 0);
    assert_eq!(ns["latency_us"]["count"], 17);
    assert_eq!(stats["reactors"].as_array().expect("reactors").len(), 2);
    let mut commands = 0;
    for r in stats["reactors"].as_array().expect("reactors") {
        let index = r["index"].as_u64().expect("index") as usize;
        let group = &r["poll_group"];
        assert!(
            group["qpairs"].as_u64().expect("poll_group.qpairs") >= per_reactor[index],
            "reactor {index} serves {} of the queues: {r}",
            per_reactor[index]
        );
        commands += group["commands"].as_u64().expect("poll_group.commands");
    }
    assert!(
        commands >= 17 + 3,
        "the I/O and the Connects were counted: {commands}"
    );
    let table = d.ok(&["stats", "--interval", "0.2"]);
    assert!(
        table.contains("READ IOPS") && table.contains("BUSY %"),
        "{table}"
    );
    let reactors = d.json(&["reactors"]);
    assert_eq!(reactors["reactors"].as_array().expect("reactors").len(), 2);
    let conns: u64 = reactors["reactors"]
        .as_array()
        .expect("r")
        .iter()
        .map(|r| r["connections"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(conns, 3, "admin + 2 I/O connections");

    // Namespace changes reach the connected host as an event and in the changed-ns log.
    c.submit_async_event_request().expect("AER");
    d.ok(&["ns", "add", NQN, "m1", "--nsid", "2"]);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut events = Vec::new();
    while events.is_empty() && Instant::now() < deadline {
        events = c.take_admin_events().expect("events");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        !events.is_empty(),
        "Namespace Attribute Changed event after ns add"
    );
    assert_eq!(c.active_namespaces().expect("active list"), vec![1, 2]);
    let log = c
        .get_log_page(0x04, 0xFFFF_FFFF, 4096, 0)
        .expect("changed ns log");
    assert_eq!(
        &log[..8],
        &[2, 0, 0, 0, 0, 0, 0, 0],
        "nsid 2 in the changed-namespace log"
    );
    d.ok(&["ns", "remove", NQN, "2"]);

    // Removing an allowed host disconnects it.
    let host_nqn = c.options().hostnqn.clone();
    d.ok(&["subsystem", "allow-any-host", NQN, "false"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while c.write(1, 1, 0, &data, false).is_ok() {
        assert!(
            Instant::now() < deadline,
            "disallowed host keeps its queues"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let gone = Instant::now() + Duration::from_secs(10);
    while !d
        .json(&["controllers", NQN])
        .as_array()
        .expect("array")
        .is_empty()
    {
        assert!(Instant::now() < gone, "the failed controller is destroyed");
        std::thread::sleep(Duration::from_millis(50));
    }
    d.ok(&["subsystem", "allow-any-host", NQN, "true"]);
    let _ = host_nqn;

    // logging
    d.ok(&["log-level", "debug"]);
    assert_eq!(d.ok(&["log-level"]).trim(), "debug");
    d.fails(&["log-level", "loud"], &["level"]);

    // save-config, delete what is no longer used, completion, raw call
    let saved = d.ok(&["save-config"]);
    assert!(
        saved.contains(s2) && saved.contains("SN2") && saved.contains("nsid = 7"),
        "{saved}"
    );
    d.ok(&["ns", "remove", s2, "1"]);
    d.ok(&["bdev", "delete", "m1"]);
    d.fails(&["bdev", "delete", "m1"], &["no bdev m1"]);
    d.ok(&["host", "remove", s2, HOST]);
    d.ok(&["subsystem", "delete", s2]);
    assert!(d.ok(&["completion", "bash"]).contains("ferritectl"));
    d.fails(&["call", "no_such_method"], &["unknown method"]);
    d.fails(&["call", "bdev_list", r#"{"name": 5}"#], &["invalid type"]);
    d.fails(
        &["call", "bdev_list", r#"{"nmae": "x"}"#],
        &["unknown field"],
    );
    d.stop();
}

#[test]
fn ferritectl_says_where_it_looked_when_ferrited_is_not_running() {
    let out = Command::new(env!("CARGO_BIN_EXE_ferritectl"))
        .args(["--socket", "/nonexistent/ferrited.sock", "bdev", "list"])
        .output()
        .expect("run ferritectl");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("is ferrited running? looked at /nonexistent/ferrited.sock"),
        "{err}"
    );
}

/// Sends raw bytes on a new connection and returns the one response.
fn raw(socket: &Path, bytes: &[u8]) -> Value {
    let mut s = UnixStream::connect(socket).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    // The server may close after answering an oversized request before reading it all.
    let _ = s.write_all(bytes);
    let mut out = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&chunk[..n]),
        }
        if out.ends_with(b"\n") {
            break;
        }
    }
    serde_json::from_slice(&out)
        .unwrap_or_else(|e| panic!("response {:?}: {e}", String::from_utf8_lossy(&out)))
}

#[test]
fn garbage_on_the_socket_gets_errors_and_never_disturbs_io() {
    let dir = tempfile::tempdir().expect("tmp");
    let port = free_port();
    let d = start_with_config(dir.path(), &config(port), port, &[]);
    let stop = Arc::new(AtomicBool::new(false));
    let addr = d.addr;
    let io = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut c = Controller::connect(ConnectOptions::new(addr, NQN)).expect("connect");
            let mut n = 0u64;
            let mut back = vec![0u8; 4096];
            while !stop.load(Ordering::Relaxed) {
                let lba = (n % 64) * 8;
                let data = vec![(n % 251) as u8; 4096];
                c.write(1, 1, lba, &data, false)
                    .expect("write during RPC garbage");
                c.read(1, 1, lba, 8, &mut back)
                    .expect("read during RPC garbage");
                assert_eq!(back, data, "data intact at lba {lba}");
                n += 1;
            }
            n
        })
    };
    let cases: Vec<(Vec<u8>, i64)> = vec![
        (b"{not json".to_vec(), -32700),
        (b"}\n".to_vec(), -32700),
        (br#"{"jsonrpc":"2.0","id":1,"method":"no_such"}"#.to_vec(), -32601),
        (br#"{"jsonrpc":"2.0","id":1,"method":"bdev_malloc_create","params":{"name":1,"num_blocks":"x"}}"#.to_vec(), -32602),
        (br#"{"jsonrpc":"2.0","id":1,"method":"nvmf_subsystem_add_ns","params":{"nqn":"x","namespace":7}}"#.to_vec(), -32602),
        (br#"{"jsonrpc":"2.0","id":1,"method":"bdev_list","params":[1]}"#.to_vec(), -32602),
        (br#"{"jsonrpc":"1.0","id":1,"method":"bdev_list"}"#.to_vec(), -32600),
        (br#"[{"jsonrpc":"2.0","id":1,"method":"bdev_list"}]"#.to_vec(), -32600),
        (br#"42"#.to_vec(), -32600),
    ];
    let mut huge = br#"{"jsonrpc":"2.0","id":1,"method":"bdev_list","params":{"name":""#.to_vec();
    huge.extend(std::iter::repeat_n(b'a', 2 << 20));
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut rounds = 0;
    while Instant::now() < deadline || rounds < 3 {
        for (bytes, code) in &cases {
            let mut b = bytes.clone();
            b.push(b'\n');
            let resp = raw(&d.socket, &b);
            assert_eq!(
                resp["error"]["code"],
                *code,
                "{} -> {resp}",
                String::from_utf8_lossy(bytes)
            );
        }
        let resp = raw(&d.socket, &huge);
        assert_eq!(resp["error"]["code"], -32600, "oversized -> {resp}");
        assert!(resp["error"]["message"]
            .as_str()
            .expect("msg")
            .contains("larger than"));
        rounds += 1;
    }
    // Two requests back to back on one connection, then a valid one still works.
    let mut s = UnixStream::connect(&d.socket).expect("connect");
    s.write_all(br#"{"jsonrpc":"2.0","id":"a","method":"log_get_level"}{"jsonrpc":"2.0","id":"b","method":"rpc_get_methods"}"#).expect("write");
    let mut got = String::new();
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut buf = [0u8; 8192];
    while got.matches('\n').count() < 2 {
        let n = s.read(&mut buf).expect("read");
        assert!(n > 0, "closed early: {got}");
        got.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    let lines: Vec<Value> = got
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(lines[0]["id"], "a");
    assert_eq!(lines[1]["id"], "b");
    stop.store(true, Ordering::Relaxed);
    let ios = io.join().expect("I/O thread never failed");
    assert!(ios > 0, "I/O ran while the socket was hammered");
    assert!(d.ok(&["bdev", "list"]).contains("ram0"));
    d.stop();
}

#[test]
fn save_config_reproduces_the_running_configuration_exactly() {
    let dir = tempfile::tempdir().expect("tmp");
    let port = free_port();
    let d = start_with_config(dir.path(), &config(port), port, &[]);
    let s2 = "nqn.2026-01.io.ferrite:saved";
    d.ok(&[
        "bdev",
        "malloc-create",
        "m1",
        "--num-blocks",
        "2048",
        "--block-size",
        "4096",
    ]);
    let file = dir.path().join("f.img");
    d.ok(&[
        "bdev",
        "file-create",
        "f1",
        file.to_str().expect("utf-8"),
        "--size",
        "1MiB",
    ]);
    d.ok(&["subsystem", "add", s2, "--max-namespaces", "32"]);
    d.ok(&["ns", "add", s2, "m1", "--nsid", "3"]);
    d.ok(&["ns", "add", s2, "f1"]);
    d.ok(&["host", "add", s2, HOST]);
    let saved = d.ok(&["save-config"]);
    let subsystems = d.json(&["subsystem", "list"]);
    let bdevs = d.json(&["bdev", "list"]);
    d.stop();

    let dir2 = tempfile::tempdir().expect("tmp");
    let d2 = start_with_config(dir2.path(), &saved, port, &[]);
    assert_eq!(
        d2.ok(&["save-config"]),
        saved,
        "save_config of the reproduction"
    );
    assert_eq!(d2.json(&["subsystem", "list"]), subsystems);
    let strip = |v: &Value| -> Vec<(Value, Value, Value, Value)> {
        v.as_array()
            .expect("bdevs")
            .iter()
            .map(|b| {
                (
                    b["name"].clone(),
                    b["block_size"].clone(),
                    b["num_blocks"].clone(),
                    b["claimed_by"].clone(),
                )
            })
            .collect()
    };
    assert_eq!(strip(&d2.json(&["bdev", "list"])), strip(&bdevs));
    d2.stop();
}

#[test]
fn state_dir_restores_changes_and_refuses_a_corrupt_state() {
    let dir = tempfile::tempdir().expect("tmp");
    let state = dir.path().join("state");
    let state_s = state.to_str().expect("utf-8").to_string();
    let port = free_port();
    let d = start_with_config(dir.path(), &config(port), port, &["--state-dir", &state_s]);
    let s2 = "nqn.2026-01.io.ferrite:persisted";
    d.ok(&["bdev", "malloc-create", "m1", "--size", "4MiB"]);
    d.ok(&["subsystem", "add", s2]);
    d.ok(&["ns", "add", s2, "m1"]);
    d.ok(&["host", "add", s2, HOST]);
    let before = d.json(&["subsystem", "list"]);
    let saved = d.ok(&["save-config"]);
    d.stop();
    let state_file = state.join("state.toml");
    assert!(std::fs::read_to_string(&state_file)
        .expect("state")
        .starts_with("# ferrited state"));

    // Restart from the state alone (no --config).
    let d = Daemon::start(dir.path(), port, &["--state-dir", &state_s]);
    assert_eq!(d.json(&["subsystem", "list"]), before);
    assert_eq!(d.ok(&["save-config"]), saved);
    d.ok(&["ns", "remove", s2, "1"]);
    d.stop();
    let d = Daemon::start(dir.path(), port, &["--state-dir", &state_s]);
    let after = d.json(&["subsystem", "list", s2]);
    assert_eq!(after[0]["namespaces"], json!([]), "the removal persisted");
    d.stop();

    for (text, needle) in [
        ("version = 1\n[[bdev]\nname=", "corrupt"),
        ("version = 99\n", "version 99"),
        ("listen = []\n", "no version"),
    ] {
        std::fs::write(&state_file, text).expect("write state");
        let out = Command::new(env!("CARGO_BIN_EXE_ferrited"))
            .args(["--no-pin", "--no-rpc", "--state-dir", &state_s])
            .output()
            .expect("run ferrited");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "starts on {text:?}");
        assert!(
            err.contains(state_file.to_str().expect("utf-8")) && err.contains(needle),
            "{err}"
        );
        assert_eq!(
            std::fs::read_to_string(&state_file).expect("state"),
            text,
            "never overwritten"
        );
    }
}
