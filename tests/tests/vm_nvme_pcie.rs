//! The userspace NVMe PCIe driver against QEMU's emulated NVMe behind an emulated IOMMU.

use std::time::Duration;

use ferrite_e2e::linux_host::{HostOptions, LinuxHost};

const BDF: &str = "0000:00:04.0";

fn iommu_nvme_options(disk: &std::path::Path) -> HostOptions {
    HostOptions {
        forward_ports: Vec::new(),
        extra_qemu_args: vec![
            "-device".into(),
            "intel-iommu,intremap=on,caching-mode=on".into(),
            "-drive".into(),
            format!("file={},if=none,id=nvm0,format=raw", disk.display()),
            "-device".into(),
            "nvme,serial=ferrite15,drive=nvm0,addr=0x4".into(),
        ],
        extra_kernel_args: vec!["intel_iommu=on".into(), "iommu=pt".into()],
        ..HostOptions::default()
    }
}

#[test]
fn vm_probe_vfio() {
    let dir = tempfile::tempdir().expect("tempdir");
    let disk = dir.path().join("nvme.img");
    std::fs::File::create(&disk)
        .and_then(|f| f.set_len(256 << 20))
        .expect("disk image");
    let Some(host) = LinuxHost::boot_or_skip(iommu_nvme_options(&disk)).expect("boots") else {
        return;
    };
    let out = host
        .run(
            &format!(
                "set -x; ls -l /sys/bus/pci/devices/; readlink /sys/bus/pci/devices/{BDF}/driver; \
                 readlink /sys/bus/pci/devices/{BDF}/iommu_group; dmesg | grep -i -e dmar -e iommu | head -20; \
                 modprobe vfio-pci; echo vfio-pci > /sys/bus/pci/devices/{BDF}/driver_override; \
                 echo {BDF} > /sys/bus/pci/devices/{BDF}/driver/unbind; echo {BDF} > /sys/bus/pci/drivers_probe; \
                 readlink /sys/bus/pci/devices/{BDF}/driver; ls -l /dev/vfio; dmesg | tail -5"
            ),
            Duration::from_secs(60),
        )
        .expect("runs");
    println!("{}", out.stdout);
}
