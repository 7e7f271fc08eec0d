//! The guest's tiny initramfs: a static busybox, the handful of modules needed to reach the host
//! root (virtio PCI, 9p, overlay, virtio-net, virtio-console), and two shell scripts: `/init`
//! (mount and switch root) and `/agent.sh` (the command agent, copied into the new root).
//!
//! Everything else the guest runs (nvme-cli, fio, modprobe and its modules) comes from this
//! machine's root, shared read-only over 9p.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{Error, Result};

/// Modules `/init` loads, in this order (each after its dependencies).
pub const BOOT_MODULES: &[&str] = &[
    "virtio_pci",
    "virtio_console",
    "virtio_net",
    "9pnet_virtio",
    "9p",
    "overlay",
];

const INIT_SCRIPT: &str = include_str!("init.sh");
const AGENT_SCRIPT: &str = include_str!("agent.sh");

/// Default location of a statically linked busybox (Debian's busybox-static).
pub const BUSYBOX: &str = "/bin/busybox";

/// Builds the initramfs for `modules_dir` and stores it in `cache_dir`, named by a hash of its
/// contents so concurrent builders agree and a stale image is never reused.
pub fn build(modules_dir: &Path, busybox: &Path, cache_dir: &Path) -> Result<PathBuf> {
    let image = contents(modules_dir, busybox)?;
    let path = cache_dir.join(format!("initramfs-{:016x}.cpio", fnv1a(&image)));
    if !path.is_file() {
        super::write_atomically(&path, &image)?;
    }
    Ok(path)
}

/// The uncompressed newc archive.
fn contents(modules_dir: &Path, busybox: &Path) -> Result<Vec<u8>> {
    let busybox_bytes = fs::read(busybox).map_err(|e| {
        Error::Unavailable(format!(
            "cannot read {} (install busybox-static): {e}",
            busybox.display()
        ))
    })?;
    if !is_static_elf(&busybox_bytes) {
        return Err(Error::Unavailable(format!(
            "{} is not a statically linked busybox (install busybox-static)",
            busybox.display()
        )));
    }
    let deps = ModulesDep::load(modules_dir)?;
    let order = deps.load_order(BOOT_MODULES)?;

    let mut cpio = CpioWriter::default();
    for dir in [
        "bin",
        "dev",
        "proc",
        "sys",
        "lib",
        "lib/modules",
        "newroot",
        "lower",
        "upper",
    ] {
        cpio.dir(dir);
    }
    cpio.char_device("dev/console", 0o600, 5, 1);
    cpio.file("init", 0o755, INIT_SCRIPT.as_bytes());
    cpio.file("agent.sh", 0o755, AGENT_SCRIPT.as_bytes());
    cpio.file("bin/busybox", 0o755, &busybox_bytes);
    let mut list = String::new();
    for rel in &order {
        let name = module_file_name(rel);
        let bytes = read_module(&modules_dir.join(rel))?;
        cpio.file(&format!("lib/modules/{name}"), 0o644, &bytes);
        list.push_str(&name);
        list.push('\n');
    }
    cpio.file("lib/modules/load-order", 0o644, list.as_bytes());
    Ok(cpio.finish())
}

/// A statically linked ELF has no PT_INTERP program header.
fn is_static_elf(bytes: &[u8]) -> bool {
    if !bytes.starts_with(b"\x7FELF") || bytes.get(4) != Some(&2) {
        return false;
    }
    let rd = |o: usize, n: usize| -> Option<u64> {
        let b = bytes.get(o..o + n)?;
        Some(
            b.iter()
                .rev()
                .fold(0u64, |acc, &x| (acc << 8) | u64::from(x)),
        )
    };
    let (Some(phoff), Some(phentsize), Some(phnum)) = (rd(0x20, 8), rd(0x36, 2), rd(0x38, 2))
    else {
        return false;
    };
    (0..phnum).all(|i| rd((phoff + i * phentsize) as usize, 4) != Some(3))
}

/// `kernel/fs/9p/9p.ko.xz` -> `9p.ko`.
fn module_file_name(rel: &str) -> String {
    let base = rel.rsplit('/').next().unwrap_or(rel);
    let stem = base
        .strip_suffix(".xz")
        .or_else(|| base.strip_suffix(".zst"))
        .or_else(|| base.strip_suffix(".gz"))
        .unwrap_or(base);
    stem.to_owned()
}

/// Reads a module, decompressing it on this side (busybox insmod takes plain ELF only).
fn read_module(path: &Path) -> Result<Vec<u8>> {
    let name = path.to_string_lossy();
    let tool = if name.ends_with(".xz") {
        Some("xz")
    } else if name.ends_with(".zst") {
        Some("zstd")
    } else if name.ends_with(".gz") {
        Some("gzip")
    } else {
        None
    };
    let Some(tool) = tool else {
        return fs::read(path).map_err(|e| Error::io(format!("read {}", path.display()), e));
    };
    let out = Command::new(tool)
        .args(["-dc"])
        .arg(path)
        .output()
        .map_err(|e| Error::Unavailable(format!("{tool} is needed to unpack modules: {e}")))?;
    if !out.status.success() {
        return Err(Error::Setup(format!(
            "{tool} -dc {} failed: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(out.stdout)
}

/// Module name as the kernel sees it: file stem with '-' folded to '_'.
fn canonical(name: &str) -> String {
    let base = name.rsplit('/').next().unwrap_or(name);
    let stem = base.split(".ko").next().unwrap_or(base);
    stem.replace('-', "_")
}

/// The parts of `modules.dep` and `modules.builtin` the initramfs builder needs.
#[derive(Debug, Default)]
pub struct ModulesDep {
    /// canonical name -> (relative path, dependency paths as listed).
    modules: HashMap<String, (String, Vec<String>)>,
    builtin: HashSet<String>,
}

impl ModulesDep {
    /// Reads `modules.dep` (and `modules.builtin` if present) from a modules directory.
    pub fn load(dir: &Path) -> Result<ModulesDep> {
        let dep = fs::read_to_string(dir.join("modules.dep"))
            .map_err(|e| Error::io(format!("read {}/modules.dep", dir.display()), e))?;
        let builtin = fs::read_to_string(dir.join("modules.builtin")).unwrap_or_default();
        Ok(ModulesDep::parse(&dep, &builtin))
    }

    /// Parses the text of `modules.dep` ("path: dep dep ...") and `modules.builtin` (paths).
    pub fn parse(dep: &str, builtin: &str) -> ModulesDep {
        let mut modules = HashMap::new();
        for line in dep.lines() {
            let Some((path, deps)) = line.split_once(':') else {
                continue;
            };
            let deps = deps.split_whitespace().map(str::to_owned).collect();
            modules.insert(canonical(path), (path.trim().to_owned(), deps));
        }
        let builtin = builtin.lines().map(canonical).collect();
        ModulesDep { modules, builtin }
    }

    /// Relative paths of the modules to insmod, dependencies first, each once; built-in
    /// modules are skipped.
    pub fn load_order(&self, wanted: &[&str]) -> Result<Vec<String>> {
        let mut order = Vec::new();
        let mut seen = HashSet::new();
        for name in wanted {
            self.visit(&canonical(name), &mut seen, &mut order, 0)?;
        }
        Ok(order)
    }

    fn visit(
        &self,
        name: &str,
        seen: &mut HashSet<String>,
        order: &mut Vec<String>,
        depth: usize,
    ) -> Result<()> {
        if depth > 64 {
            return Err(Error::Setup(format!("module dependency loop at {name}")));
        }
        if seen.contains(name) {
            return Ok(());
        }
        let Some((path, deps)) = self.modules.get(name) else {
            if self.builtin.contains(name) {
                seen.insert(name.to_owned());
                return Ok(());
            }
            return Err(Error::Unavailable(format!(
                "kernel module {name} is neither a module nor built in"
            )));
        };
        // modules.dep lists the full closure; recursing on each entry's own line orders it.
        for dep in deps {
            self.visit(&canonical(dep), seen, order, depth + 1)?;
        }
        seen.insert(name.to_owned());
        order.push(path.clone());
        Ok(())
    }
}

/// Writes the "new ASCII" (070701) cpio format the kernel unpacks as initramfs.
#[derive(Debug, Default)]
struct CpioWriter {
    out: Vec<u8>,
    next_ino: u32,
}

impl CpioWriter {
    fn dir(&mut self, name: &str) {
        self.entry(name, 0o040_000 | 0o755, 2, (0, 0), &[]);
    }

    fn file(&mut self, name: &str, perm: u32, data: &[u8]) {
        self.entry(name, 0o100_000 | perm, 1, (0, 0), data);
    }

    fn char_device(&mut self, name: &str, perm: u32, major: u32, minor: u32) {
        self.entry(name, 0o020_000 | perm, 1, (major, minor), &[]);
    }

    fn entry(&mut self, name: &str, mode: u32, nlink: u32, rdev: (u32, u32), data: &[u8]) {
        self.next_ino += 1;
        let namesize = name.len() + 1;
        let fields = [
            self.next_ino,
            mode,
            0, // uid
            0, // gid
            nlink,
            0, // mtime: fixed, so the image (and its hash) is reproducible
            u32::try_from(data.len()).expect("initramfs members are far below 4 GiB"),
            0, // devmajor
            0, // devminor
            rdev.0,
            rdev.1,
            u32::try_from(namesize).expect("short names"),
            0, // check
        ];
        self.out.extend_from_slice(b"070701");
        for f in fields {
            self.out.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad();
        self.out.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while self.out.len() % 4 != 0 {
            self.out.push(0);
        }
    }

    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, 1, (0, 0), &[]);
        self.out
    }
}

/// 64-bit FNV-1a: a content hash for cache file names (not security relevant).
pub fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP: &str = "\
kernel/fs/netfs/netfs.ko:
kernel/fs/fscache/fscache.ko: kernel/fs/netfs/netfs.ko
kernel/fs/9p/9p.ko: kernel/net/9p/9pnet.ko kernel/fs/fscache/fscache.ko kernel/fs/netfs/netfs.ko
kernel/net/9p/9pnet.ko:
kernel/net/9p/9pnet_virtio.ko: kernel/net/9p/9pnet.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/nvme/host/nvme-tcp.ko.xz: kernel/drivers/nvme/host/nvme-fabrics.ko.xz
kernel/drivers/nvme/host/nvme-fabrics.ko.xz:
";

    #[test]
    fn orders_dependencies_first_once() {
        let deps = ModulesDep::parse(DEP, "kernel/fs/overlayfs/overlay.ko\n");
        let order = deps
            .load_order(&["9pnet_virtio", "9p", "overlay"])
            .expect("resolvable");
        assert_eq!(
            order,
            [
                "kernel/net/9p/9pnet.ko",
                "kernel/drivers/virtio/virtio_ring.ko",
                "kernel/drivers/virtio/virtio.ko",
                "kernel/net/9p/9pnet_virtio.ko",
                "kernel/fs/netfs/netfs.ko",
                "kernel/fs/fscache/fscache.ko",
                "kernel/fs/9p/9p.ko",
            ]
        );
    }

    #[test]
    fn folds_dashes_and_compression_suffixes() {
        let deps = ModulesDep::parse(DEP, "");
        let order = deps.load_order(&["nvme_tcp"]).expect("resolvable");
        assert_eq!(order.len(), 2);
        assert_eq!(module_file_name(&order[1]), "nvme-tcp.ko");
        assert!(matches!(
            deps.load_order(&["no_such_module"]),
            Err(Error::Unavailable(_))
        ));
    }

    #[test]
    fn cpio_entries_are_aligned_and_parsable() {
        let mut w = CpioWriter::default();
        w.dir("bin");
        w.file("bin/hello", 0o755, b"hello!");
        w.char_device("dev/console", 0o600, 5, 1);
        let out = w.finish();
        assert_eq!(out.len() % 4, 0);
        // Walk the archive back, checking each header.
        let mut at = 0;
        let mut names = Vec::new();
        while at < out.len() {
            assert_eq!(&out[at..at + 6], b"070701");
            let field = |i: usize| {
                let s = std::str::from_utf8(&out[at + 6 + i * 8..at + 14 + i * 8]).expect("ascii");
                u32::from_str_radix(s, 16).expect("hex") as usize
            };
            let (mode, size, rmaj, rmin, namesize) =
                (field(1), field(6), field(9), field(10), field(11));
            let name_at = at + 110;
            let name = std::str::from_utf8(&out[name_at..name_at + namesize - 1]).expect("utf8");
            names.push(name.to_owned());
            let data_at = (name_at + namesize + 3) & !3;
            if name == "bin/hello" {
                assert_eq!(&out[data_at..data_at + size], b"hello!");
                assert_eq!(mode, 0o100_755);
            }
            if name == "dev/console" {
                assert_eq!((rmaj, rmin, mode), (5, 1, 0o020_600));
            }
            at = (data_at + size + 3) & !3;
        }
        assert_eq!(names, ["bin", "bin/hello", "dev/console", "TRAILER!!!"]);
    }

    #[test]
    fn recognises_static_busybox() {
        if let Ok(bytes) = fs::read(BUSYBOX) {
            assert!(is_static_elf(&bytes), "{BUSYBOX} should be busybox-static");
        }
        if let Ok(bytes) = fs::read("/bin/sh") {
            assert!(
                !is_static_elf(&bytes),
                "/bin/sh is dynamically linked on Debian"
            );
        }
    }
}
