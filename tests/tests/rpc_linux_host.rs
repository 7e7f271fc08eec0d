//! The control plane against the stock Linux initiator: while a host is connected, a namespace
//! added over JSON-RPC appears in its `nvme list` without reconnecting and disappears when
//! removed; after a restart with `--state-dir` the host reconnects to the same configuration.

use std::time::Duration;

use ferrite_e2e::ferrited;
use ferrite_e2e::linux_host::{HostOptions, LinuxHost};
use ferrite_e2e::managed::ManagedFerrited;
use serde_json::json;

const NQN: &str = "nqn.2026-01.io.ferrite:rpc-e2e";

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
    let mut target =
        ManagedFerrited::start(dir.path(), port, Some(&config)).expect("ferrited starts");
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
    target.stop().expect("clean stop");
    target
        .restart()
        .expect("ferrited restarts from its state directory");
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
    target.stop().expect("clean stop");
    host.shutdown().expect("host shuts down");
}
