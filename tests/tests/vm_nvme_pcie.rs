//! The userspace NVMe PCIe driver against QEMU's emulated NVMe behind an emulated IOMMU
//! (`-device intel-iommu`, `intel_iommu=on`), all inside one guest: `ferritectl device bind`
//! hands the controller to vfio-pci, ferrited (this checkout's binary, run in the guest)
//! attaches it, exports a thin volume of a pool on it over NVMe/TCP on the guest's loopback,
//! and the guest's own Linux initiator uses it: mkfs.ext4, fio --verify, write zeroes and
//! deallocate, then `kill -9` of ferrited and a restart with the data intact. Bad input first:
//! a wrong PCI address and the device still bound to the kernel's nvme driver.

use std::time::Duration;

use ferrite_e2e::ferrited;
use ferrite_e2e::linux_host::{HostOptions, LinuxHost};

const BDF: &str = "0000:00:04.0";
const NQN: &str = "nqn.2026-01.io.ferrite:pcie";
const LONG: Duration = Duration::from_secs(420);

fn iommu_nvme_options(disk: &std::path::Path) -> HostOptions {
    HostOptions {
        forward_ports: Vec::new(),
        memory_mib: 1536,
        extra_qemu_args: vec![
            "-device".into(),
            "intel-iommu,intremap=on,caching-mode=on".into(),
            "-drive".into(),
            format!("file={},if=none,id=nvm0,format=raw", disk.display()),
            "-device".into(),
            format!("nvme,serial=ferrite15,drive=nvm0,addr=0x4"),
        ],
        extra_kernel_args: vec!["intel_iommu=on".into(), "iommu=pt".into()],
        ..HostOptions::default()
    }
}

fn run(host: &LinuxHost, script: &str) -> String {
    match host.run(script, LONG) {
        Ok(out) if out.success() => out.stdout,
        Ok(out) => {
            let log = host
                .run(
                    "cat /run/f/ferrited.log 2>/dev/null | tail -40",
                    Duration::from_secs(20),
                )
                .map(|o| o.stdout)
                .unwrap_or_default();
            panic!(
                "guest command failed ({}):\n{script}\n--- output ---\n{}\n--- ferrited.log ---\n{log}",
                out.status, out.stdout
            );
        }
        Err(e) => {
            panic!("guest command did not run: {e}\n{script}");
        }
    }
}

#[test]
fn vm_nvme_pcie_vfio_export_over_tcp_survives_kill9() {
    let dir = tempfile::tempdir().expect("tempdir");
    let disk = dir.path().join("nvme.img");
    std::fs::File::create(&disk)
        .and_then(|f| f.set_len(512 << 20))
        .expect("disk image");
    let daemon = ferrited::binary().expect("ferrited binary");
    let ctl = daemon.with_file_name("ferritectl");
    assert!(ctl.exists(), "{} is built with ferrited", ctl.display());
    let Some(host) = LinuxHost::boot_or_skip(iommu_nvme_options(&disk)).expect("boots") else {
        return;
    };
    let env = format!(
        "set -e; D={d}; C=\"{c} --socket /run/f/ferrited.sock\"; \
         start() {{ RUST_LOG=info $D --config /run/f/ferrite.toml --no-pin --cores 0 \
           --listen 127.0.0.1:4420 --rpc-socket /run/f/ferrited.sock --state-dir /run/f/state \
           >>/run/f/ferrited.log 2>&1 & echo $! > /run/f/pid; \
           for i in $(seq 200); do [ -S /run/f/ferrited.sock ] && $C bdev list >/dev/null 2>&1 && return 0; sleep 0.1; done; return 1; }}; ",
        d = daemon.display(),
        c = ctl.display()
    );
    // Setup: the kernel's nvme driver owns the controller; ferrited starts with a subsystem.
    run(
        &host,
        &format!(
            "{env} modprobe nvme; modprobe vfio-pci; modprobe nvme-tcp; mkdir -p /run/f; \
             printf 'cores = \"0\"\\n[[subsystem]]\\nnqn = \"{NQN}\"\\nallow_any_host = true\\n' > /run/f/ferrite.toml; \
             for i in $(seq 100); do [ \"$(basename $(readlink /sys/bus/pci/devices/{BDF}/driver))\" = nvme ] && break; sleep 0.1; done; \
             start"
        ),
    );

    // Bad input: a wrong PCI address, the device bound to the kernel driver. Clear errors.
    let out = run(
        &host,
        &format!(
            "{env} $C bdev nvme-attach bad --traddr 0000:00:09.0 2>&1 && exit 1; \
             $C bdev nvme-attach bad --traddr 00:04.0 2>&1 && exit 1; \
             $C bdev nvme-attach nvme0 --traddr {BDF} 2>&1 && exit 1; \
             $C device bind 0000:00:09.0 2>&1 && exit 1; \
             readlink /sys/bus/pci/devices/{BDF}/driver; true"
        ),
    );
    assert!(out.contains("no PCI device 0000:00:09.0"), "{out}");
    assert!(out.contains("not a PCI address"), "{out}");
    assert!(
        out.contains("bound to the nvme driver, not vfio-pci") && out.contains("device bind"),
        "{out}"
    );
    assert!(
        out.trim_end().ends_with("drivers/nvme"),
        "the kernel still owns it: {out}"
    );

    // Bind to vfio-pci and attach: one bdev per namespace.
    let out = run(
        &host,
        &format!(
            "{env} $C device bind {BDF}; readlink /sys/bus/pci/devices/{BDF}/driver; \
             $C --json bdev nvme-attach nvme0 --traddr {BDF}; $C --json bdev list nvme0n1"
        ),
    );
    assert!(out.contains("drivers/vfio-pci"), "{out}");
    assert!(out.contains("\"nvme0n1\""), "{out}");
    assert!(out.contains("\"kind\": \"nvme-pcie\""), "{out}");
    assert!(out.contains("\"write_zeroes\": true"), "{out}");

    // A pool on it, a thin volume for ext4 and one for raw I/O, exported over NVMe/TCP.
    run(
        &host,
        &format!(
            "{env} $C call pool_create '{{\"name\":\"p0\",\"bdevs\":[\"nvme0n1\"]}}'; \
             $C call volume_create '{{\"pool\":\"p0\",\"name\":\"fs\",\"size\":134217728,\"thin\":true}}'; \
             $C call volume_create '{{\"pool\":\"p0\",\"name\":\"raw\",\"size\":67108864,\"thin\":true}}'; \
             $C call nvmf_subsystem_add_ns '{{\"nqn\":\"{NQN}\",\"namespace\":{{\"bdev_name\":\"p0/fs\",\"nsid\":1}}}}'; \
             $C call nvmf_subsystem_add_ns '{{\"nqn\":\"{NQN}\",\"namespace\":{{\"bdev_name\":\"p0/raw\",\"nsid\":2}}}}'; \
             $C call bdev_nvme_attach_controller '{{\"name\":\"x\",\"trtype\":\"rdma\",\"traddr\":\"1\"}}' 2>&1 | grep -q 'not supported'; \
             nvme connect -t tcp -a 127.0.0.1 -s 4420 -n {NQN}; \
             for i in $(seq 300); do ls /dev/nvme*n2 >/dev/null 2>&1 && break; sleep 0.1; done; nvme list"
        ),
    );
    // The kernel's nvme driver no longer has the PCIe controller: the fabric one is nvme0 or 1.
    let out = run(
        &host,
        &format!(
            "{env} for d in /sys/class/nvme/nvme*; do [ \"$(cat $d/subsysnqn)\" = {NQN} ] && n=$(basename $d); done; \
             FS=/dev/${{n}}n1; RAW=/dev/${{n}}n2; echo fs=$FS raw=$RAW; \
             mkfs.ext4 -q $FS; mkdir -p /mnt/fs; mount $FS /mnt/fs; \
             head -c 4M /dev/urandom > /mnt/fs/data; sha256sum /mnt/fs/data > /run/f/sum; \
             fio --name=v --filename=/mnt/fs/fio --size=8M --rw=randwrite --bsrange=4k-64k \
               --ioengine=libaio --direct=1 --iodepth=8 --verify=crc32c --do_verify=1 \
               --output-format=terse >/run/f/fio.txt; echo fio-ok; \
             fio --name=r --filename=$RAW --size=4M --rw=randwrite --bs=16k --ioengine=libaio \
               --direct=1 --iodepth=8 --verify=crc32c --do_verify=1 --output-format=terse >/dev/null; echo raw-fio-ok; \
             blkdiscard -z -o 0 -l 4194304 $RAW; cmp -n 4194304 $RAW /dev/zero && echo zeroes-ok; \
             blkdiscard -o 4194304 -l 4194304 $RAW && echo discard-ok; \
             sync; umount /mnt/fs; nvme disconnect -n {NQN}; cat /run/f/sum"
        ),
    );
    for want in ["fio-ok", "raw-fio-ok", "zeroes-ok", "discard-ok"] {
        assert!(out.contains(want), "{want} missing:\n{out}");
    }

    // kill -9, restart from the state directory: the controller is attached again and the
    // file system is intact.
    let out = run(
        &host,
        &format!(
            "{env} kill -9 $(cat /run/f/pid); sleep 0.5; start; $C --json bdev list nvme0n1 | grep -c nvme-pcie; \
             nvme connect -t tcp -a 127.0.0.1 -s 4420 -n {NQN}; \
             for i in $(seq 300); do ls /dev/nvme*n2 >/dev/null 2>&1 && break; sleep 0.1; done; \
             for d in /sys/class/nvme/nvme*; do [ \"$(cat $d/subsysnqn)\" = {NQN} ] && n=$(basename $d); done; \
             fsck.ext4 -n /dev/${{n}}n1 >/dev/null && echo fsck-ok; mount /dev/${{n}}n1 /mnt/fs; \
             sha256sum -c /run/f/sum && echo data-ok; umount /mnt/fs; nvme disconnect -n {NQN}; \
             $C call nvmf_subsystem_remove_ns '{{\"nqn\":\"{NQN}\",\"nsid\":1}}' >/dev/null; \
             $C bdev nvme-detach nvme0 2>&1 | grep -q -e 'pool' -e 'in use' && echo detach-refused-ok; true"
        ),
    );
    for want in ["fsck-ok", "data-ok", "detach-refused-ok"] {
        assert!(out.contains(want), "{want} missing:\n{out}");
    }
    // Unbind gives the controller back to the kernel once ferrited is gone.
    let out = run(
        &host,
        &format!(
            "{env} kill -9 $(cat /run/f/pid); sleep 0.5; $C device unbind {BDF}; readlink /sys/bus/pci/devices/{BDF}/driver"
        ),
    );
    assert!(out.trim_end().ends_with("drivers/nvme"), "{out}");
    host.shutdown().expect("clean shutdown");
}
