//! QoS seen by the stock Linux initiator: fio in the QEMU guest against a namespace whose bdev
//! has `bdev_set_qos_limit` limits set over JSON-RPC gets the limited rate within 10% and no I/O
//! error; lifting the limit gives the rate back.

use std::time::Duration;

use ferrite_e2e::ferrited;
use ferrite_e2e::linux_host::{HostOptions, LinuxHost};
use ferrite_e2e::managed::ManagedFerrited;
use serde_json::{json, Value};

const NQN: &str = "nqn.2026-01.io.ferrite:qos-e2e";

/// Runs fio on the namespace and returns (IOPS, KiB/s) of `dir` ("read" or "write").
fn fio(host: &LinuxHost, rw: &str, bs: &str, dir: &str) -> (f64, f64) {
    let cmd = format!(
        "dev=$(ls /dev/nvme*n1 | head -n1); fio --name=q --filename=$dev --direct=1 \
         --ioengine=libaio --rw={rw} --bs={bs} --iodepth=16 --time_based --ramp_time=2 \
         --runtime=8 --size=16m --output-format=json"
    );
    let out = host
        .run_ok_within(&cmd, Duration::from_secs(120))
        .expect("fio runs");
    let start = out.find('{').expect("fio printed JSON");
    let v: Value = serde_json::from_str(&out[start..]).expect("fio JSON parses");
    let job = &v["jobs"][0];
    assert_eq!(job["error"], 0, "fio reported an error: {out}");
    (
        job[dir]["iops"].as_f64().expect("iops"),
        job[dir]["bw"].as_f64().expect("bw KiB/s"),
    )
}

fn within_10pct(what: &str, measured: f64, limit: f64) {
    let ratio = measured / limit;
    eprintln!("{what}: fio measured {measured:.1}, limit {limit}, ratio {ratio:.3}");
    assert!(
        (0.9..=1.1).contains(&ratio),
        "{what}: fio measured {measured:.1}, not within 10% of {limit}"
    );
}

#[test]
fn vm_fio_observes_qos_limits() {
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
    let target = ManagedFerrited::start(dir.path(), port, Some(&config)).expect("ferrited starts");
    host.run_ok_within(
        &format!(
            "nvme connect -t tcp -a {} -s {port} -n {NQN} && \
             for i in $(seq 300); do ls /dev/nvme*n1 >/dev/null 2>&1 && exit 0; sleep 0.1; done; exit 1",
            host.target_addr()
        ),
        Duration::from_secs(60),
    )
    .expect("nvme connect");

    // Each limit is a quarter of what the guest (TCG, on a shared machine) reached unlimited
    // just before, so fio could exceed it and what it sees is the limit, not the machine.
    let (free_iops, _) = fio(&host, "randread", "4k", "read");
    eprintln!("unlimited: {free_iops:.0} IOPS");
    let iops_limit = (free_iops / 4.0).floor().max(10.0);
    target.call(
        "bdev_set_qos_limit",
        json!({"name": "ram0", "rw_ios_per_sec": iops_limit as u64}),
    );
    let (iops, _) = fio(&host, "randread", "4k", "read");
    within_10pct("rw_ios_per_sec", iops, iops_limit);

    // Bandwidth, in whole MiB/s, of 64 KiB writes.
    target.call(
        "bdev_set_qos_limit",
        json!({"name": "ram0", "rw_ios_per_sec": null}),
    );
    let (_, free_kib) = fio(&host, "randwrite", "64k", "write");
    let mib = (free_kib / 1024.0 / 4.0).floor().max(1.0);
    eprintln!("unlimited: {free_kib:.0} KiB/s of writes");
    assert!(
        free_kib > 2.0 * 1024.0 * mib,
        "the guest only wrote {free_kib:.0} KiB/s unlimited"
    );
    target.call(
        "bdev_set_qos_limit",
        json!({"name": "ram0", "w_mbytes_per_sec": mib as u64}),
    );
    let (_, kib) = fio(&host, "randwrite", "64k", "write");
    within_10pct("w_mbytes_per_sec (KiB/s)", kib, 1024.0 * mib);

    target.call(
        "bdev_set_qos_limit",
        json!({"name": "ram0", "w_mbytes_per_sec": null}),
    );
    let (again, _) = fio(&host, "randread", "4k", "read");
    assert!(
        again > 2.0 * iops_limit,
        "lifting the limit did not give the rate back: {again:.0} IOPS"
    );
    let limits = target.call("qos_get_limits", json!({}));
    assert_eq!(limits["bdevs"], json!([]), "{limits}");
    host.run_ok(&format!("nvme disconnect -n {NQN}"))
        .expect("disconnect");
}
