//! NVMe/TCP scenarios: the stock Linux initiator (nvme-cli, the kernel's nvme-tcp) in a QEMU
//! guest against a real `ferrited` process on loopback.

use std::time::Duration;

use ferrite_e2e::ferrited::{self, Ferrited, TargetConfig, DEFAULT_NQN};
use ferrite_e2e::linux_host::{HostOptions, LinuxHost};

/// A guest forwarding one port, and ferrited serving `config` on it; `None` when the machine
/// cannot run guests (outside CI).
fn setup(config: &TargetConfig, hostnqn: Option<&str>) -> Option<(LinuxHost, Ferrited)> {
    let port = ferrited::free_port().expect("a free port");
    let host = LinuxHost::boot_or_skip(HostOptions {
        forward_ports: vec![port],
        hostnqn: hostnqn.map(str::to_owned),
        ..HostOptions::default()
    })
    .expect("the Linux host boots")?;
    let target = Ferrited::start_on(config, port).expect("ferrited starts");
    host.run_ok("modprobe nvme-tcp").expect("nvme-tcp loads");
    Some((host, target))
}

fn connect_cmd(host: &LinuxHost, port: u16) -> String {
    format!(
        "nvme connect -t tcp -a {} -s {port} -n {DEFAULT_NQN}",
        host.target_addr()
    )
}

/// Connects and waits for the namespace's block device.
fn connect(host: &LinuxHost, port: u16) {
    host.run_ok_within(
        &format!(
            "{} && for i in $(seq 200); do [ -b /dev/nvme0n1 ] && exit 0; sleep 0.1; done; \
             echo 'no /dev/nvme0n1'; nvme list; exit 1",
            connect_cmd(host, port)
        ),
        Duration::from_secs(60),
    )
    .expect("nvme connect gives /dev/nvme0n1");
}

fn disconnect(host: &LinuxHost) {
    let out = host
        .run_ok(&format!("nvme disconnect -n {DEFAULT_NQN}"))
        .expect("nvme disconnect");
    assert!(out.contains("disconnected 1 controller"), "{out}");
}

#[test]
fn vm_nvme_discover_connect_and_data_integrity() {
    let Some((host, mut target)) = setup(&TargetConfig::ram("64MiB", &[]), None) else {
        return;
    };
    let port = target.port();
    let disc = host
        .run_ok(&format!(
            "nvme discover -t tcp -a {} -s {port}",
            host.target_addr()
        ))
        .expect("nvme discover");
    assert!(disc.contains(DEFAULT_NQN), "{disc}");
    assert!(disc.contains("trtype:  tcp"), "{disc}");

    connect(&host, port);
    let size = host
        .run_ok("blockdev --getsize64 /dev/nvme0n1")
        .expect("blockdev");
    assert_eq!(size.trim(), (64u64 << 20).to_string());
    let subnqn = host
        .run_ok("cat /sys/class/nvme/nvme0/subsysnqn")
        .expect("sysfs");
    assert_eq!(subnqn.trim(), DEFAULT_NQN);

    // Sizes that exercise in-capsule data, R2T/H2CData and multi-PDU reads.
    let out = host
        .run_ok_within(
            "set -e; head -c 8M /dev/urandom > /tmp/pattern; \
             for bs in 4k 16k 128k 1M; do \
               dd if=/tmp/pattern of=/dev/nvme0n1 bs=$bs oflag=direct conv=fsync status=none; \
               dd if=/dev/nvme0n1 of=/tmp/back bs=$bs count=$((8 * 1048576)) iflag=direct,count_bytes status=none; \
               cmp /tmp/pattern /tmp/back && echo same-$bs; \
             done",
            Duration::from_secs(300),
        )
        .expect("write, read back, compare");
    for bs in ["4k", "16k", "128k", "1M"] {
        assert!(out.contains(&format!("same-{bs}")), "{out}");
    }

    disconnect(&host);
    assert!(target.is_running(), "ferrited died:\n{}", target.log());
}

#[test]
fn vm_nvme_ext4_survives_reconnect() {
    let Some((host, target)) = setup(&TargetConfig::ram("128MiB", &[]), None) else {
        return;
    };
    let port = target.port();
    connect(&host, port);
    host.run_ok_within(
        "set -e; mkfs.ext4 -q -F /dev/nvme0n1; mkdir -p /mnt/ns; mount /dev/nvme0n1 /mnt/ns; \
         head -c 3M /dev/urandom > /mnt/ns/data; sha256sum /mnt/ns/data > /root/data.sha; \
         umount /mnt/ns",
        Duration::from_secs(300),
    )
    .expect("mkfs, mount, write");
    disconnect(&host);
    connect(&host, port);
    host.run_ok_within(
        "set -e; fsck.ext4 -n /dev/nvme0n1; mount /dev/nvme0n1 /mnt/ns; sha256sum -c /root/data.sha; \
         umount /mnt/ns",
        Duration::from_secs(300),
    )
    .expect("the file system and its data survive a reconnect");
    disconnect(&host);
}

#[test]
fn vm_nvme_fio_verify_on_multiple_queues() {
    let Some((host, target)) = setup(&TargetConfig::ram("64MiB", &[]), None) else {
        return;
    };
    let port = target.port();
    connect(&host, port);
    // The admin queue plus one I/O queue per guest CPU, each its own TCP connection through
    // guestfwd.
    let conns = host
        .run_ok(&format!(
            "ss -Htn state established dst {}:{port} | wc -l",
            host.target_addr()
        ))
        .expect("ss");
    assert!(
        conns.trim().parse::<u32>().unwrap_or(0) >= 3,
        "connections: {conns}"
    );
    let out = host
        .run_ok_within(
            "fio --name=verify --filename=/dev/nvme0n1 --direct=1 --ioengine=libaio \
             --rw=randwrite --bs=4k --bsrange=4k-64k --size=16M --iodepth=16 --numjobs=2 \
             --offset_increment=16M --verify=crc32c --verify_fatal=1 --do_verify=1 \
             --group_reporting --output-format=terse --terse-version=3 --minimal",
            Duration::from_secs(300),
        )
        .expect("fio write+verify");
    // Terse v3 field 5 is the error count.
    let errors = out
        .lines()
        .find(|l| l.starts_with("3;"))
        .and_then(|l| l.split(';').nth(4))
        .unwrap_or("missing");
    assert_eq!(errors, "0", "{out}");
    disconnect(&host);
}

#[test]
fn vm_nvme_connect_checks_allowed_hosts() {
    let allowed = "nqn.2014-08.org.nvmexpress:uuid:11111111-2222-3333-4444-555555555555";
    let stranger = "nqn.2014-08.org.nvmexpress:uuid:99999999-8888-7777-6666-555555555555";
    let Some((host, target)) = setup(&TargetConfig::ram("16MiB", &[allowed]), Some(allowed)) else {
        return;
    };
    let port = target.port();
    let refused = host
        .run(
            &format!("{} --hostnqn={stranger}", connect_cmd(&host, port)),
            Duration::from_secs(60),
        )
        .expect("runs");
    assert_ne!(
        refused.status, 0,
        "a host not on the list connected: {}",
        refused.stdout
    );
    let listed = host.run_ok("nvme list-subsys").unwrap_or_default();
    assert!(!listed.contains(DEFAULT_NQN), "{listed}");

    connect(&host, port);
    disconnect(&host);
}
