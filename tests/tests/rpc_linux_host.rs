//! The control plane against the stock Linux initiator: while a host is connected, a namespace
//! added over JSON-RPC appears in its `nvme list` without reconnecting and disappears when
//! removed; after a restart with `--state-dir` the host reconnects to the same configuration.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ferrite_e2e::ferrited;
use ferrite_e2e::linux_host::{HostOptions, LinuxHost};
use serde_json::{json, Value};

const NQN: &str = "nqn.2026-01.io.ferrite:rpc-e2e";

/// ferrited with a control socket and a state directory (the shared helper has neither).
struct Target {
    child: Child,
    socket: PathBuf,
    log: PathBuf,
}

impl Target {
    fn start(dir: &Path, port: u16, config: Option<&Path>) -> Target {
        let socket = dir.join("ferrited.sock");
        let log = dir.join("ferrited.log");
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log file");
        let mut cmd = Command::new(ferrited::binary().expect("ferrited binary"));
        if let Some(c) = config {
            cmd.arg("--config").arg(c);
        }
        let child = cmd
            .args(["--no-pin", "--listen", &format!("127.0.0.1:{port}")])
            .arg("--rpc-socket")
            .arg(&socket)
            .arg("--state-dir")
            .arg(dir.join("state"))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .expect("spawn ferrited");
        let mut t = Target { child, socket, log };
        let deadline = Instant::now() + Duration::from_secs(30);
        while UnixStream::connect(&t.socket).is_err() {
            if let Ok(Some(status)) = t.child.try_wait() {
                panic!("ferrited exited with {status}:\n{}", t.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "no control socket:\n{}",
                t.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        t
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn call(&self, method: &str, params: Value) -> Value {
        let mut s = UnixStream::connect(&self.socket).expect("control socket");
        s.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        let req = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
        s.write_all(format!("{req}\n").as_bytes()).expect("send");
        let mut out = Vec::new();
        let mut chunk = [0u8; 4096];
        while !out.ends_with(b"\n") {
            let n = s.read(&mut chunk).expect("answer");
            assert!(n > 0, "ferrited closed the control connection");
            out.extend_from_slice(&chunk[..n]);
        }
        let resp: Value = serde_json::from_slice(&out).expect("JSON answer");
        assert!(resp["error"].is_null(), "{method}: {resp}");
        resp["result"].clone()
    }

    fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while self.child.try_wait().ok().flatten().is_none() {
            assert!(Instant::now() < deadline, "ferrited did not stop");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("ferrited log:\n{}", self.log_text());
        }
    }
}

/// Waits until the guest's `nvme list` (JSON) has `count` namespaces of this target.
fn wait_namespaces(host: &LinuxHost, count: usize) {
    let cmd = format!(
        "for i in $(seq 300); do n=$(ls /dev/nvme*n* 2>/dev/null | grep -c 'n[0-9]*$'); \
         [ \"$n\" = {count} ] && exit 0; sleep 0.1; done; nvme list; exit 1"
    );
    host.run_ok_within(&cmd, Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("host does not see {count} namespace(s): {e}"));
}

#[test]
fn vm_namespace_added_over_rpc_appears_without_reconnect_and_state_survives_restart() {
    let port = ferrited::free_port().expect("a free port");
    let Some(host) = LinuxHost::boot_or_skip(HostOptions {
        forward_ports: vec![port],
        ..HostOptions::default()
    })
    .expect("the Linux host boots") else {
        return;
    };
    host.run_ok("modprobe nvme-tcp").expect("nvme-tcp loads");
    let dir = tempfile::tempdir().expect("tmp");
    let config = dir.path().join("ferrite.toml");
    std::fs::write(
        &config,
        format!(
            "cores = \"0\"\n[[bdev]]\nname = \"ram0\"\nkind = \"malloc\"\nsize = \"32MiB\"\n\
             block_size = 512\n[[subsystem]]\nnqn = \"{NQN}\"\nallow_any_host = true\n\
             namespaces = [{{ nsid = 1, bdev = \"ram0\" }}]\n"
        ),
    )
    .expect("config");
    let target = Target::start(dir.path(), port, Some(&config));
    host.run_ok_within(
        &format!(
            "nvme connect -t tcp -a {} -s {port} -n {NQN}",
            host.target_addr()
        ),
        Duration::from_secs(60),
    )
    .expect("nvme connect");
    wait_namespaces(&host, 1);

    target.call(
        "bdev_malloc_create",
        json!({"name": "ram1", "num_blocks": 32768, "block_size": 512}),
    );
    let nsid = target.call(
        "nvmf_subsystem_add_ns",
        json!({"nqn": NQN, "namespace": {"bdev_name": "ram1", "nsid": 2}}),
    );
    assert_eq!(nsid, 2);
    wait_namespaces(&host, 2);
    let list = host.run_ok("nvme list").expect("nvme list");
    assert!(list.contains("n2"), "{list}");
    // The new namespace takes I/O.
    host.run_ok("dd if=/dev/urandom of=/tmp/blk bs=4096 count=16 && dd if=/tmp/blk of=$(ls /dev/nvme*n2) bs=4096 oflag=direct && cmp -n 65536 /tmp/blk $(ls /dev/nvme*n2)")
        .expect("I/O on the added namespace");

    target.call("nvmf_subsystem_remove_ns", json!({"nqn": NQN, "nsid": 2}));
    wait_namespaces(&host, 1);
    target.call(
        "nvmf_subsystem_add_ns",
        json!({"nqn": NQN, "namespace": {"bdev_name": "ram1", "nsid": 2}}),
    );
    wait_namespaces(&host, 2);

    // Restart from the state directory alone: the host's reconnect finds both namespaces.
    target.stop();
    let target = Target::start(dir.path(), port, None);
    let subs = target.call("nvmf_get_subsystems", json!({"nqn": NQN}));
    assert_eq!(subs[0]["namespaces"].as_array().expect("ns").len(), 2);
    host.run_ok(&format!("nvme disconnect -n {NQN}"))
        .expect("disconnect");
    host.run_ok_within(
        &format!(
            "nvme connect -t tcp -a {} -s {port} -n {NQN}",
            host.target_addr()
        ),
        Duration::from_secs(60),
    )
    .expect("reconnect after restart");
    wait_namespaces(&host, 2);
    host.run_ok(&format!("nvme disconnect -n {NQN}"))
        .expect("disconnect");
    target.stop();
    host.shutdown().expect("host shuts down");
}
