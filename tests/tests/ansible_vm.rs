//! The `nvmeof_host` role on a real Linux NVMe host: `site.yml` provisions a `ferrited` on this
//! machine (appliance and volumes roles, connection: local), then inside the QEMU guest (this
//! machine's Debian kernel, its root shared read-only) `ansible-playbook -c local` runs the
//! `nvmeof_host` play of the same `site.yml` from the shared checkout and venv:
//!
//! 1. with `nvmeof_host_connect_all: true` and no declared connection it writes hostnqn, hostid
//!    and `discovery.conf` (pointing at the forwarded address the guest reaches the appliance
//!    at) and runs `nvme connect-all`, which connects what the discovery log lists; 4 MiB
//!    written through that controller are read back, then `nvme disconnect-all`;
//! 2. with `nvmeof_host_connections` the role connects by itself (`nvme connect` to the
//!    forwarded address); 4 MiB written and read back again, then `nvme disconnect-all`;
//! 3. `teardown.yml` removes the appliance. (Idempotence and `state: absent` of the role are
//!    checked by the `ansible_*` tests on this machine: every guest run of ansible-playbook
//!    costs minutes under TCG.)
//!
//! Needs the Ansible venv (`tests/ansible/venv.sh`) and QEMU with the kernel (the `vm_*`
//! rules: skipped only with `FERRITE_SKIP_VM=1` outside CI).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use ferrite_e2e::ansible::{ensure_binary, venv_python};
use ferrite_e2e::ferrited;
use ferrite_e2e::linux_host::{in_ci, HostOptions, LinuxHost};
use serde_json::{json, Value};

const NQN: &str = "nqn.2026-01.io.ferrite:ansible-vm";
const HOSTNQN: &str = "nqn.2014-08.org.nvmexpress:uuid:5b0c3f1e-2a4d-4e6f-8a9b-0c1d2e3f4a5b";
const LONG: Duration = Duration::from_secs(600);

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the checkout")
        .to_path_buf()
}

/// The environment both sides give ansible-playbook: the checkout as collection
/// `ferrite.storage`, temporary files in `dir`, no user configuration.
fn ansible_env(dir: &str) -> String {
    format!(
        "ANSIBLE_COLLECTIONS_PATH={dir}/collections ANSIBLE_LOCAL_TEMP={dir}/tmp \
         ANSIBLE_REMOTE_TEMP={dir}/tmp ANSIBLE_CONFIG={dir}/none.cfg ANSIBLE_NOCOLOR=1 \
         ANSIBLE_FORCE_COLOR=0 ANSIBLE_RETRY_FILES_ENABLED=0 ANSIBLE_STDOUT_CALLBACK=default \
         ANSIBLE_HOST_KEY_CHECKING=0 ANSIBLE_PIPELINING=1"
    )
}

fn link_collection(dir: &str) -> String {
    format!(
        "mkdir -p {dir}/collections/ansible_collections/ferrite {dir}/tmp && \
         ln -sfn {} {dir}/collections/ansible_collections/ferrite/storage",
        repo_root().join("ansible").display()
    )
}

fn recap_changed(out: &str) -> Option<u32> {
    out.lines()
        .find(|l| l.starts_with("localhost") && l.contains("changed="))
        .and_then(|l| l.split("changed=").nth(1))
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// ansible-playbook on this machine.
fn host_playbook(dir: &Path, inventory: &Value, playbook: &str, extra: &[&str]) -> String {
    let inv = dir.join(format!("inventory-{playbook}.json"));
    std::fs::write(&inv, inventory.to_string()).expect("inventory written");
    let python = venv_python();
    let ap = python.with_file_name("ansible-playbook");
    let d = dir.display().to_string();
    let cmd = format!(
        "{} && {} {} -i {} {} {}",
        link_collection(&d),
        ansible_env(&d),
        ap.display(),
        inv.display(),
        repo_root()
            .join("ansible/playbooks")
            .join(playbook)
            .display(),
        extra.join(" ")
    );
    let out = Command::new("sh")
        .arg("-c")
        .arg(&cmd)
        .current_dir(dir)
        .output()
        .expect("ansible-playbook runs");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{playbook} failed on this machine:\n{text}"
    );
    text
}

/// ansible-playbook in the guest: the nvmeof_host play of site.yml.
fn guest_playbook(host: &LinuxHost, vars: &Value, name: &str) -> (i32, String) {
    let inv = json!({"all": {"children": {"ferrite_hosts": {"hosts": {"localhost": null}}}, "vars": vars}});
    let path = format!("/tmp/ga/inventory-{name}.json");
    host.write_file(&path, inv.to_string().as_bytes())
        .expect("inventory written in the guest");
    let ap = venv_python().with_file_name("ansible-playbook");
    let cmd = format!(
        "{} && cd /tmp/ga && HOME=/tmp/ga {} {} -i {path} {} 2>&1",
        link_collection("/tmp/ga"),
        ansible_env("/tmp/ga"),
        ap.display(),
        repo_root().join("ansible/playbooks/site.yml").display()
    );
    let out = host
        .run(&cmd, LONG)
        .expect("the guest runs ansible-playbook");
    eprintln!(
        "--- guest ansible-playbook ({name}): status {}\n{}",
        out.status,
        tail(&out.stdout)
    );
    (out.status, out.stdout)
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// The namespace's block device once a controller of `NQN` is there (the guest has no other
/// NVMe device; with native multipath the controller's own node is the hidden `nvmeXcYn1`).
fn wait_device(host: &LinuxHost) -> String {
    let cmd = format!(
        "for i in $(seq 300); do for c in /sys/class/nvme/nvme*; do \
         [ \"$(cat $c/subsysnqn 2>/dev/null)\" = {NQN} ] || continue; \
         d=$(ls /dev/nvme*n1 2>/dev/null | head -1); [ -n \"$d\" ] && [ -b \"$d\" ] \
         && echo $d && exit 0; done; sleep 0.1; done; nvme list; exit 1"
    );
    host.run_ok_within(&cmd, Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("the guest never saw the namespace of {NQN}: {e}"))
        .trim()
        .to_string()
}

fn connected(host: &LinuxHost) -> bool {
    let out = host
        .run(
            &format!("grep -lx {NQN} /sys/class/nvme/nvme*/subsysnqn"),
            Duration::from_secs(30),
        )
        .expect("the guest answers");
    out.status == 0
}

/// Writes 4 MiB of random data through the namespace of `NQN`, reads them back, compares, then
/// `nvme disconnect-all`.
fn io_and_disconnect(host: &LinuxHost, via: &str) {
    let dev = wait_device(host);
    host.run_ok_within(
        &format!(
            "set -e; head -c 4M /dev/urandom > /tmp/ga/data; \
             dd if=/tmp/ga/data of={dev} bs=1M oflag=direct status=none; \
             dd if={dev} of=/tmp/ga/back bs=1M count=4 iflag=direct status=none; \
             cmp /tmp/ga/data /tmp/ga/back"
        ),
        LONG,
    )
    .unwrap_or_else(|e| panic!("4 MiB written and read back through {via}: {e}"));
    host.run_ok_within("nvme disconnect-all", Duration::from_secs(60))
        .expect("nvme disconnect-all");
    assert!(
        !connected(host),
        "disconnect-all left the controller of {via}"
    );
}

/// Kills the ferrited the appliance role started when the test ends early (teardown.yml stops
/// it otherwise; then the pid file is gone and this does nothing).
struct KillOnDrop(PathBuf);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let Ok(pid) = std::fs::read_to_string(&self.0) else {
            return;
        };
        let pid = pid.trim();
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains("ferrited") {
            let _ = Command::new("kill").args(["-9", pid]).status();
        }
    }
}

#[test]
fn vm_nvmeof_host_role_in_the_guest_connects_to_what_site_yml_provisioned() {
    let python = venv_python();
    if !python.is_file() {
        assert!(!in_ci(), "no Ansible venv at {} in CI", python.display());
        eprintln!("\n!!! SKIPPED: no Ansible venv at {}\n", python.display());
        return;
    }
    let port = ferrited::free_port().expect("a free port");
    let Some(host) = LinuxHost::boot_or_skip(HostOptions {
        forward_ports: vec![port],
        hostnqn: Some(HOSTNQN.to_string()),
        ..HostOptions::default()
    })
    .expect("the Linux host boots") else {
        return;
    };
    let bin_dir = ferrited::binary()
        .expect("ferrited is built")
        .parent()
        .expect("a directory")
        .to_path_buf();
    ensure_binary(&bin_dir, "ferrite-daemon", "ferritectl");
    let dir = tempfile::tempdir().expect("a test directory");
    let d = |p: &str| dir.path().join(p).display().to_string();

    // This machine: ferrited with one thin volume exported to the guest's host NQN only.
    let appliance = json!({
        "ansible_connection": "local",
        "ansible_python_interpreter": python.display().to_string(),
        "ansible_become": false,
        "appliance_binary_dir": bin_dir.display().to_string(),
        "appliance_install_dir": d("bin"), "appliance_config_dir": d("etc"),
        "appliance_state_dir": d("state"), "appliance_log_dir": d("log"), "appliance_run_dir": d("run"),
        "appliance_rpc_socket": d("run/ferrited.sock"), "volumes_rpc_socket": d("run/ferrited.sock"),
        "appliance_listen": [format!("127.0.0.1:{port}")],
        "appliance_cores": "0", "appliance_pin_reactors": false,
        "appliance_service_manager": "script", "appliance_firewall": "none",
        "volumes_bdevs": [{"name": "disk0", "kind": "file", "path": d("disk0.img"), "size": "128MiB"}],
        "volumes_pools": [{"name": "tank", "bdevs": ["disk0"]}],
        "volumes_volumes": [{"pool": "tank", "name": "guest", "size": "64MiB"}],
        "volumes_subsystems": [{
            "nqn": NQN, "hosts": [HOSTNQN],
            "listeners": [{"traddr": "127.0.0.1", "trsvcid": port}],
            "namespaces": [{"bdev": "tank/guest", "nsid": 1}],
        }],
    });
    let inventory = json!({"all": {"children": {"ferrite_primary": {"hosts": {"localhost": null}}}, "vars": appliance}});
    let _kill = KillOnDrop(dir.path().join("state/ferrited.pid"));
    host_playbook(dir.path(), &inventory, "site.yml", &[]);

    // The guest: the nvmeof_host role, first with connect-all and no declared connection.
    let target = host.target_addr();
    let mut vars = json!({
        "ansible_connection": "local",
        "ansible_python_interpreter": python.display().to_string(),
        "ansible_become": false,
        "nvmeof_host_install_packages": false,
        "nvmeof_host_load_module": true,
        "nvmeof_host_persistent": false,
        "nvmeof_host_nqn": HOSTNQN,
        "nvmeof_host_discovery": [{"traddr": target, "trsvcid": port}],
        "nvmeof_host_connections": [],
        "nvmeof_host_connect": true,
        "nvmeof_host_connect_all": true,
    });
    host.run_ok("mkdir -p /tmp/ga")
        .expect("guest work directory");
    // The discovery log names the listener as this machine binds it, 127.0.0.1:port, which in
    // the guest is its own loopback: a relay there stands in for the route a real host has to
    // the address the discovery log gives (QEMU's user network only forwards target:port).
    host.run_ok(&format!(
        "setsid socat TCP-LISTEN:{port},bind=127.0.0.1,fork,reuseaddr TCP:{target}:{port} \
         </dev/null >/tmp/ga/relay.log 2>&1 &"
    ))
    .expect("the loopback relay starts in the guest");
    let (status, out) = guest_playbook(&host, &vars, "connect-all");
    assert!(
        status == 0 && recap_changed(&out).is_some_and(|n| n > 0),
        "the role fails to configure and connect-all in the guest:\n{}",
        tail(&out)
    );
    let conf = host
        .run_ok("cat /etc/nvme/discovery.conf; cat /etc/nvme/hostnqn")
        .expect("the role's files");
    assert!(
        conf.contains(&format!(
            "--transport=tcp --traddr={target} --trsvcid={port}"
        )) && conf.contains(HOSTNQN),
        "discovery.conf and hostnqn as declared: {conf}"
    );

    // No connection is declared: the controller is connect-all's, at the log's address.
    wait_device(&host);
    let addr = host
        .run_ok(&format!(
            "for c in /sys/class/nvme/nvme*; do [ \"$(cat $c/subsysnqn)\" = {NQN} ] && cat $c/address; done"
        ))
        .expect("the controller's address");
    assert!(
        addr.contains(&format!("traddr=127.0.0.1,trsvcid={port}")),
        "connect-all dialled the discovery log's address: {addr}"
    );
    io_and_disconnect(&host, "connect-all");

    // The role connects the declared subsystem itself, at the forwarded address.
    vars["nvmeof_host_connect_all"] = json!(false);
    vars["nvmeof_host_connections"] = json!([{"nqn": NQN, "traddr": target, "trsvcid": port}]);
    let (status, out) = guest_playbook(&host, &vars, "connect");
    assert!(
        status == 0 && recap_changed(&out).is_some_and(|n| n > 0),
        "the role fails to connect:\n{}",
        tail(&out)
    );
    io_and_disconnect(&host, "the role's connection");

    // Teardown here.
    host_playbook(
        dir.path(),
        &inventory,
        "teardown.yml",
        &[
            "-e",
            "ferrite_teardown_confirm=true",
            "-e",
            "ferrite_teardown_remove_files=true",
        ],
    );
    assert!(
        !dir.path().join("run/ferrited.sock").exists() && !dir.path().join("disk0.img").exists(),
        "teardown left ferrited's socket or the disk image"
    );
}
