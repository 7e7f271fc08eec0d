//! The mapping layer against the stock Linux initiator: ext4 on a thin volume, a snapshot taken
//! while `fio` writes, a clone of that snapshot mounted by the host with a clean file system and
//! exactly the content of the snapshot instant; the snapshot itself exported read-only.

use std::time::Duration;

use ferrite_e2e::ferrited;
use ferrite_e2e::linux_host::{HostOptions, LinuxHost};
use ferrite_e2e::managed::{file_bdev_config, ManagedFerrited};
use serde_json::json;

const NQN: &str = "nqn.2026-01.io.ferrite:volumes";
const LONG: Duration = Duration::from_secs(300);

/// Waits until the host has the block device of namespace `nsid` and prints its path.
fn wait_device(host: &LinuxHost, nsid: u32) -> String {
    let cmd = format!(
        "for i in $(seq 300); do d=$(ls /dev/nvme*n{nsid} 2>/dev/null | head -1); \
         [ -n \"$d\" ] && [ -b \"$d\" ] && echo $d && exit 0; sleep 0.1; done; nvme list; exit 1"
    );
    host.run_ok_within(&cmd, Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("host never saw namespace {nsid}: {e}"))
        .trim()
        .to_string()
}

#[test]
fn vm_snapshot_during_fio_then_clone_mounts_clean_with_snapshot_content() {
    let port = ferrited::free_port().expect("a free port");
    let Some(host) = LinuxHost::boot_or_skip(HostOptions {
        forward_ports: vec![port],
        ..HostOptions::default()
    })
    .expect("the Linux host boots") else {
        return;
    };
    host.run_ok("modprobe nvme-tcp").expect("nvme-tcp loads");
    let data = ferrited::data_dir().expect("data directory");
    let dir = tempfile::tempdir().expect("control directory");
    let config = file_bdev_config(dir.path(), &data.path().join("pool.img"), "1GiB", NQN);
    let mut target =
        ManagedFerrited::start(dir.path(), port, Some(&config)).expect("ferrited starts");
    target.call("pool_create", json!({"name": "pool0", "bdevs": ["disk0"]}));
    target.call(
        "volume_create",
        json!({"pool": "pool0", "name": "vol0", "size": 512u64 << 20, "thin": true}),
    );
    target.call(
        "nvmf_subsystem_add_ns",
        json!({"nqn": NQN, "namespace": {"bdev_name": "pool0/vol0", "nsid": 1}}),
    );
    host.run_ok_within(
        &format!(
            "nvme connect -t tcp -a {} -s {port} -n {NQN}",
            host.target_addr()
        ),
        Duration::from_secs(60),
    )
    .expect("nvme connect");
    let vol = wait_device(&host, 1);
    let before = target.call("volume_info", json!({"name": "pool0/vol0"}));

    // A file system with content whose checksum is known before the snapshot.
    host.run_ok_within(
        &format!(
            "set -e; mkfs.ext4 -q -F {vol}; mkdir -p /mnt/vol; mount {vol} /mnt/vol; \
             head -c 8M /dev/urandom > /mnt/vol/before.bin; sha256sum /mnt/vol/before.bin \
             | sed 's#/mnt/vol#/mnt/clone#' > /root/before.sha; sync"
        ),
        LONG,
    )
    .expect("mkfs, mount, write the known file");
    let thin = target.call("volume_info", json!({"name": "pool0/vol0"}));
    eprintln!("volume before writes: {before}\nafter mkfs and 8 MiB: {thin}");

    // fio rewrites a file with verified random writes while the snapshot is taken.
    host.run_ok(
        "cd /mnt/vol && (fio --name=w --filename=/mnt/vol/fio.dat --size=32M --rw=randwrite \
         --bs=4k --direct=1 --ioengine=psync --time_based --runtime=12 --verify=crc32c \
         --do_verify=0 > /root/fio.log 2>&1; echo $? > /root/fio.rc) > /dev/null 2>&1 &",
    )
    .expect("fio starts");
    host.run_ok_within(
        "for i in $(seq 600); do [ \"$(stat -c %s /mnt/vol/fio.dat 2>/dev/null)\" = 33554432 ] \
         && exit 0; sleep 0.1; done; exit 1",
        Duration::from_secs(60),
    )
    .expect("fio is writing");
    // fio laid its file out through the page cache: commit that (size and extents) so the file
    // exists at the snapshot instant; its data keeps changing under O_DIRECT writes meanwhile.
    host.run_ok("sync").expect("sync the layout");
    std::thread::sleep(Duration::from_secs(3));
    let started = std::time::Instant::now();
    target.call(
        "snapshot_create",
        json!({"volume": "pool0/vol0", "name": "snap0"}),
    );
    eprintln!("snapshot under fio load took {:?}", started.elapsed());
    // Written after the snapshot instant: must not be in the clone.
    host.run_ok("head -c 1M /dev/urandom > /mnt/vol/after.bin && sync")
        .expect("write after the snapshot");
    host.run_ok_within(
        "for i in $(seq 600); do [ -s /root/fio.rc ] && exit 0; sleep 0.1; done; exit 1",
        Duration::from_secs(120),
    )
    .expect("fio finishes");
    let fio = host
        .run_ok("cat /root/fio.rc /root/fio.log")
        .expect("fio log");
    assert!(
        fio.starts_with('0'),
        "fio failed during the snapshot:\n{fio}"
    );

    // The snapshot is exported read-only, its clone read-write.
    target.call(
        "clone_create",
        json!({"snapshot": "pool0/snap0", "name": "clone0"}),
    );
    target.call(
        "nvmf_subsystem_add_ns",
        json!({"nqn": NQN, "namespace": {"bdev_name": "pool0/clone0", "nsid": 2}}),
    );
    target.call(
        "nvmf_subsystem_add_ns",
        json!({"nqn": NQN, "namespace": {"bdev_name": "pool0/snap0", "nsid": 3}}),
    );
    let clone = wait_device(&host, 2);
    let snap = wait_device(&host, 3);
    let ro = host
        .run_ok(&format!(
            "blockdev --getro {snap}; blockdev --getro {clone}"
        ))
        .expect("read-only flags");
    assert_eq!(
        ro.split_whitespace().collect::<Vec<_>>(),
        ["1", "0"],
        "the snapshot must be read-only and the clone writable: {ro}"
    );
    let refused = host
        .run(
            &format!("dd if=/dev/zero of={snap} bs=4096 count=1 oflag=direct"),
            LONG,
        )
        .expect("dd runs");
    assert!(!refused.success(), "a write to the snapshot succeeded");

    // Mounting replays the journal the snapshot instant left; then the checker finds it clean.
    host.run_ok_within(
        &format!(
            "set -e; mkdir -p /mnt/clone; mount {clone} /mnt/clone; sha256sum -c /root/before.sha; \
             test -s /mnt/clone/fio.dat; test ! -e /mnt/clone/after.bin; umount /mnt/clone; \
             e2fsck -fn {clone}"
        ),
        LONG,
    )
    .expect("the clone mounts, holds the snapshot-instant content and checks clean");
    // The clone is writable and independent of the volume.
    host.run_ok_within(
        &format!(
            "set -e; mount {clone} /mnt/clone; head -c 2M /dev/urandom > /mnt/clone/own.bin; \
             sync; test ! -e /mnt/vol/own.bin; umount /mnt/clone"
        ),
        LONG,
    )
    .expect("the clone takes writes");
    host.run_ok("umount /mnt/vol").expect("umount the volume");
    host.run_ok_within(&format!("e2fsck -fn {vol}"), LONG)
        .expect("the original volume checks clean too");
    let check = target.call("pool_check", json!({"name": "pool0"}));
    assert!(
        check["errors"].as_array().is_none_or(Vec::is_empty),
        "pool check: {check}"
    );
    host.run_ok(&format!("nvme disconnect -n {NQN}"))
        .expect("disconnect");
    target.stop().expect("clean stop");
    host.shutdown().expect("host shuts down");
}
