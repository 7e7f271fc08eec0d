//! NVMe/TCP scenarios: the stock Linux initiator (nvme-cli, the kernel's nvme-tcp) in a QEMU
//! guest against a real `ferrited` process on loopback.

use std::time::Duration;

use ferrite_e2e::ferrited::{self, Ferrited, TargetConfig, DEFAULT_NQN};
use ferrite_e2e::linux_host::{HostOptions, LinuxHost};

/// A guest forwarding one port, and ferrited serving `config` on it; `None` when the machine
/// cannot run guests and FERRITE_SKIP_VM=1 opts out (otherwise that fails).
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
    connect_with(host, port, "");
}

/// Connects with extra `nvme connect` options and waits for the namespace's block device.
fn connect_with(host: &LinuxHost, port: u16, options: &str) {
    host.run_ok_within(
        &format!(
            "{} {options} && for i in $(seq 200); do [ -b /dev/nvme0n1 ] && exit 0; sleep 0.1; done; \
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
    fio_verify(&host, 16);
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

/// Runs `cmd` (stderr dropped) and parses its standard output as JSON.
fn json(host: &LinuxHost, cmd: &str) -> serde_json::Value {
    let out = host
        .run_ok(&format!("{cmd} 2>/dev/null"))
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{cmd}: not JSON ({e}):\n{out}"))
}

/// A counter from nvme-cli's JSON: a number, or a decimal string for 128-bit values.
fn counter(v: &serde_json::Value, key: &str) -> u128 {
    let field = &v[key];
    field
        .as_u64()
        .map(u128::from)
        .or_else(|| field.as_str().and_then(|s| s.trim().parse().ok()))
        .unwrap_or_else(|| panic!("no numeric {key:?} in {v}"))
}

/// fio random writes of mixed sizes (4k-128k) at QD 16 in two jobs, each over its own
/// `per_job_mib` region, then a crc32c verify pass; asserts both passes moved data and found
/// no error. Returns the bytes written.
fn fio_verify(host: &LinuxHost, per_job_mib: u32) -> u64 {
    let out = host
        .run(
            &format!(
                "fio --name=verify --filename=/dev/nvme0n1 --direct=1 --ioengine=libaio \
                 --rw=randwrite --bsrange=4k-128k --iodepth=16 --numjobs=2 \
                 --size={per_job_mib}M --offset_increment={per_job_mib}M \
                 --verify=crc32c --verify_fatal=1 --do_verify=1 --group_reporting \
                 --output-format=json --output=/tmp/fio.json"
            ),
            Duration::from_secs(300),
        )
        .expect("fio runs");
    let report = host.run_ok("cat /tmp/fio.json").expect("fio's report");
    assert_eq!(out.status, 0, "fio failed:\n{}\n{report}", out.stdout);
    // Warnings come before the JSON; the one about several jobs on one file does not apply
    // (each job has its own region), any other mention of verify is a failure.
    let start = report.find("\n{").map_or(0, |i| i + 1);
    let (warnings, report) = report.split_at(start);
    let problems: Vec<&str> = out
        .stdout
        .lines()
        .chain(warnings.lines())
        .filter(|l| l.contains("verif") && !l.contains("multiple writers may overwrite"))
        .collect();
    assert!(problems.is_empty(), "fio reported: {problems:?}");
    let report: serde_json::Value = serde_json::from_str(report)
        .unwrap_or_else(|e| panic!("fio's report is not JSON ({e}):\n{report}"));
    let job = &report["jobs"][0];
    assert_eq!(job["error"], 0, "{job}");
    let written = job["write"]["io_bytes"].as_u64().unwrap_or(0);
    let verified = job["read"]["io_bytes"].as_u64().unwrap_or(0);
    assert_eq!(
        written,
        (2 * u64::from(per_job_mib)) << 20,
        "fio wrote less than asked: {job}"
    );
    assert_eq!(verified, written, "fio verified less than it wrote: {job}");
    written
}

#[test]
fn vm_nvme_digests_admin_tools_and_fio_on_ram() {
    const SIZE: u64 = 256 << 20;
    // ICReq digests are logged at debug level by the transport's connection module.
    let config =
        TargetConfig::ram("256MiB", &[]).with_rust_log("info,ferrite_transport_tcp::conn=debug");
    let Some((host, mut target)) = setup(&config, None) else {
        return;
    };
    let port = target.port();
    connect_with(&host, port, "-g -G");
    // Admin queue + one I/O queue per guest CPU, each negotiated both digests.
    let with_digests = target
        .log()
        .matches("header digest true, data digest true")
        .count();
    assert!(with_digests >= 3, "{}", target.log());
    assert!(
        !target.log().contains("header digest false"),
        "{}",
        target.log()
    );

    let list = json(&host, "nvme list -o json");
    let dev = list["Devices"]
        .as_array()
        .and_then(|d| d.iter().find(|d| d["DevicePath"] == "/dev/nvme0n1"))
        .unwrap_or_else(|| panic!("no /dev/nvme0n1 in {list}"));
    assert_eq!(dev["PhysicalSize"].as_u64(), Some(SIZE), "{dev}");
    assert_eq!(dev["SectorSize"].as_u64(), Some(4096), "{dev}");

    let ctrl = json(&host, "nvme id-ctrl /dev/nvme0 -o json");
    assert_eq!(ctrl["subnqn"], DEFAULT_NQN, "{ctrl}");
    assert!(counter(&ctrl, "mdts") > 0, "{ctrl}");
    assert!(counter(&ctrl, "nn") >= 1, "{ctrl}");
    // SQ/CQ entry sizes: 64 and 16 bytes required and maximum.
    assert_eq!(counter(&ctrl, "sqes"), 0x66, "{ctrl}");
    assert_eq!(counter(&ctrl, "cqes"), 0x44, "{ctrl}");

    let ns = json(&host, "nvme id-ns /dev/nvme0n1 -o json");
    let nsze = counter(&ns, "nsze");
    assert_eq!(nsze, u128::from(SIZE / 4096), "{ns}");
    assert_eq!(counter(&ns, "ncap"), nsze, "{ns}");
    let flbas = counter(&ns, "flbas") & 0xf;
    let lbaf = &ns["lbafs"][usize::try_from(flbas).expect("4 bits")];
    assert_eq!(lbaf["ds"], 12, "{ns}");

    let before = json(&host, "nvme smart-log /dev/nvme0 -o json");
    let written = fio_verify(&host, 32);
    let after = json(&host, "nvme smart-log /dev/nvme0 -o json");
    assert!(
        counter(&after, "host_write_commands") > counter(&before, "host_write_commands"),
        "{before}\n{after}"
    );
    assert!(
        counter(&after, "host_read_commands") > counter(&before, "host_read_commands"),
        "{before}\n{after}"
    );
    // Data units are thousands of 512-byte units, rounded up.
    let units = counter(&after, "data_units_written") - counter(&before, "data_units_written");
    let expected = u128::from(written / 512_000);
    assert!(
        units >= expected && units <= expected + 2 * 1024,
        "data units written {units}, expected about {expected}"
    );

    // A read one block past the end fails with LBA Out of Range and lands in the error log.
    let oor = host
        .run(
            &format!("nvme read /dev/nvme0n1 -s {nsze} -c 0 -z 4096 -d /tmp/oor"),
            Duration::from_secs(30),
        )
        .expect("nvme read runs");
    assert_ne!(oor.status, 0, "read past the end succeeded: {}", oor.stdout);
    let errors = json(&host, "nvme error-log /dev/nvme0 -o json");
    let newest = &errors["errors"][0];
    assert!(counter(newest, "error_count") >= 1, "{newest}");
    // nvme-cli shows the status without the phase tag: SCT 0, SC 80h is LBA Out of Range.
    assert_eq!(counter(newest, "status_field") & 0x7ff, 0x80, "{newest}");
    assert_eq!(counter(newest, "nsid"), 1, "{newest}");
    assert_eq!(counter(newest, "lba"), nsze, "{newest}");
    assert_ne!(counter(newest, "sqid"), 0, "an I/O queue: {newest}");
    let smart = json(&host, "nvme smart-log /dev/nvme0 -o json");
    assert!(counter(&smart, "num_err_log_entries") >= 1, "{smart}");

    // A controller reset from the kernel (CC.EN cleared: the target tears the I/O queues down,
    // the kernel connects them again) leaves the namespace usable with digests still on.
    host.run_ok_within("nvme reset /dev/nvme0", Duration::from_secs(60))
        .expect("nvme reset");
    wait_live(&host);
    assert!(
        target.log().contains("reset by the host (CC.EN cleared)"),
        "{}",
        target.log()
    );
    fio_verify(&host, 8);

    let dmesg = host.dmesg();
    assert!(!dmesg.contains("digest error"), "{dmesg}");
    disconnect(&host);
    assert!(target.is_running(), "ferrited died:\n{}", target.log());
}

/// Waits until the kernel's controller nvme0 is live again (after its own reconnects).
fn wait_live(host: &LinuxHost) {
    host.run_ok_within(
        "for i in $(seq 300); do [ \"$(cat /sys/class/nvme/nvme0/state)\" = live ] && exit 0; \
         sleep 0.1; done; cat /sys/class/nvme/nvme0/state; exit 1",
        Duration::from_secs(60),
    )
    .expect("nvme0 reconnects by itself");
}

#[test]
fn vm_nvme_file_backend_fio_ext4_and_data_across_restarts() {
    const SIZE: u64 = 192 << 20;
    let data = ferrited::data_dir().expect("a data directory");
    let image = data.path().join("ns1.img");
    let config = TargetConfig::file(&image, "192MiB", &[]);
    let Some((host, target)) = setup(&config, None) else {
        return;
    };
    let port = target.port();
    // Quick kernel reconnects so the live-restart step below takes seconds, not minutes.
    connect_with(&host, port, "--reconnect-delay=1 --ctrl-loss-tmo=60");
    let size = host
        .run_ok("blockdev --getsize64 /dev/nvme0n1")
        .expect("blockdev");
    assert_eq!(size.trim(), SIZE.to_string());
    fio_verify(&host, 32);

    host.run_ok_within(
        "set -e; mkfs.ext4 -q -F /dev/nvme0n1; mkdir -p /mnt/ns; mount /dev/nvme0n1 /mnt/ns; \
         mkdir /mnt/ns/d; for i in 1 2 3 4 5 6 7 8; do head -c $((i * 256))K /dev/urandom > /mnt/ns/d/f$i; done; \
         head -c 5M /dev/urandom > /mnt/ns/big; \
         (cd /mnt/ns && sha256sum big d/*) > /root/first.sha; umount /mnt/ns",
        Duration::from_secs(120),
    )
    .expect("mkfs, mount, write files, unmount");
    assert!(
        std::fs::metadata(&image).map(|m| m.len()).unwrap_or(0) == SIZE,
        "backing file {}",
        image.display()
    );

    // 1. Disconnect, restart ferrited on the same config and port, connect again.
    disconnect(&host);
    let (status, target) = target.restart().expect("ferrited restarts");
    assert!(status.success(), "SIGTERM exit: {status}");
    connect_with(&host, port, "--reconnect-delay=1 --ctrl-loss-tmo=60");
    host.run_ok_within(
        "set -e; fsck.ext4 -n /dev/nvme0n1; mount /dev/nvme0n1 /mnt/ns; \
         cd /mnt/ns && sha256sum -c --quiet /root/first.sha; \
         head -c 3M /dev/urandom > /mnt/ns/second; sha256sum second > /root/second.sha; \
         sync /mnt/ns/second",
        Duration::from_secs(120),
    )
    .expect("the files survive a restart; more data written");

    // 2. Stay connected and mounted through a restart: the kernel reconnects by itself and
    // reads (page cache dropped) come from the restarted target.
    let (status, mut target) = target.restart().expect("ferrited restarts again");
    assert!(status.success(), "SIGTERM exit: {status}");
    wait_live(&host);
    host.run_ok_within(
        "set -e; echo 3 > /proc/sys/vm/drop_caches; cd /mnt/ns; \
         sha256sum -c --quiet /root/first.sha; sha256sum -c --quiet /root/second.sha; \
         head -c 1M /dev/urandom > third; sha256sum third > /root/third.sha; sync third; \
         cd /; umount /mnt/ns; fsck.ext4 -n /dev/nvme0n1; \
         mount /dev/nvme0n1 /mnt/ns; cd /mnt/ns; sha256sum -c --quiet /root/third.sha; \
         cd /; umount /mnt/ns",
        Duration::from_secs(120),
    )
    .expect("the data survives a restart under a live mount");
    let dmesg = host.dmesg();
    assert!(dmesg.contains("Successfully reconnected"), "{dmesg}");
    assert!(!dmesg.contains("I/O error"), "{dmesg}");
    disconnect(&host);
    assert!(target.is_running(), "ferrited died:\n{}", target.log());
}
