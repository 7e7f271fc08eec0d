//! Finding the guest kernel, its version and modules, and a fast-booting image of it.
//!
//! Distribution kernels are compressed bzImages: under TCG, decompressing one costs seconds on
//! every boot. When the kernel supports PVH entry (CONFIG_PVH, which Debian enables), the
//! harness extracts the uncompressed ELF `vmlinux` once, caches it, and QEMU starts it directly.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;

use super::{Error, Result};

/// A kernel the guest can boot, with the modules tree that matches it.
#[derive(Debug, Clone)]
pub struct Kernel {
    /// The bzImage as installed (`/boot/vmlinuz-<version>`).
    pub image: PathBuf,
    /// `uname -r` of this kernel.
    pub version: String,
    /// `/lib/modules/<version>`.
    pub modules_dir: PathBuf,
}

/// Environment variable naming the kernel image to boot (overrides the search in /boot).
pub const KERNEL_ENV: &str = "FERRITE_E2E_KERNEL";

impl Kernel {
    /// Resolves `explicit`, else `$FERRITE_E2E_KERNEL`, else the newest `/boot/vmlinuz-*` whose
    /// modules are installed. Missing kernels are [`Error::Unavailable`].
    pub fn locate(explicit: Option<&Path>) -> Result<Kernel> {
        let env = std::env::var_os(KERNEL_ENV).map(PathBuf::from);
        match explicit.map(Path::to_path_buf).or(env) {
            Some(image) => Kernel::from_image(&image),
            None => Kernel::newest_in(Path::new("/boot")),
        }
    }

    fn newest_in(boot: &Path) -> Result<Kernel> {
        let entries = fs::read_dir(boot)
            .map_err(|e| Error::Unavailable(format!("cannot list {}: {e}", boot.display())))?;
        let mut candidates: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("vmlinuz-"))
            })
            .collect();
        // Newest first, comparing version numbers numerically ("6.10" after "6.9").
        candidates.sort_by_key(|p| std::cmp::Reverse(version_key(&p.to_string_lossy())));
        let mut reasons = Vec::new();
        for image in candidates {
            match Kernel::from_image(&image) {
                Ok(k) => return Ok(k),
                Err(e) => reasons.push(e.to_string()),
            }
        }
        Err(Error::Unavailable(format!(
            "no usable kernel in {} (install linux-image-amd64; tests/install-deps.sh does){}{}",
            boot.display(),
            if reasons.is_empty() { "" } else { ": " },
            reasons.join("; ")
        )))
    }

    /// A kernel from its bzImage: the version comes from the image header, the modules from
    /// `/lib/modules/<version>`.
    pub fn from_image(image: &Path) -> Result<Kernel> {
        let bytes = fs::read(image)
            .map_err(|e| Error::Unavailable(format!("cannot read {}: {e}", image.display())))?;
        let version = bzimage_version(&bytes)
            .or_else(|| {
                // Not a bzImage with a version string: fall back to the file name.
                image
                    .file_name()?
                    .to_str()?
                    .strip_prefix("vmlinuz-")
                    .map(str::to_owned)
            })
            .ok_or_else(|| {
                Error::Unavailable(format!(
                    "{}: cannot tell the kernel version",
                    image.display()
                ))
            })?;
        let modules_dir = Path::new("/lib/modules").join(&version);
        if !modules_dir.join("modules.dep").is_file() {
            return Err(Error::Unavailable(format!(
                "{}: no modules for {version} in {}",
                image.display(),
                modules_dir.display()
            )));
        }
        Ok(Kernel {
            image: image.to_path_buf(),
            version,
            modules_dir,
        })
    }

    /// The image QEMU should boot: a cached uncompressed vmlinux with a PVH entry point when one
    /// can be made, else the bzImage itself (slower under TCG but always works).
    pub fn boot_image(&self, cache_dir: &Path) -> PathBuf {
        match self.cached_vmlinux(cache_dir) {
            Ok(Some(path)) => path,
            Ok(None) => {
                log::warn!(
                    "{}: no PVH-capable vmlinux inside; booting the compressed image (slower)",
                    self.image.display()
                );
                self.image.clone()
            }
            Err(e) => {
                log::warn!("cannot extract vmlinux from {}: {e}", self.image.display());
                self.image.clone()
            }
        }
    }

    fn cached_vmlinux(&self, cache_dir: &Path) -> Result<Option<PathBuf>> {
        let meta = fs::metadata(&self.image).map_err(|e| Error::io("stat kernel image", e))?;
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs());
        let key = format!("vmlinux-{}-{}-{mtime}", self.version, meta.len());
        let path = cache_dir.join(&key);
        let no_pvh = cache_dir.join(format!("{key}.no-pvh"));
        if path.is_file() {
            return Ok(Some(path));
        }
        if no_pvh.is_file() {
            return Ok(None);
        }
        let bzimage = fs::read(&self.image).map_err(|e| Error::io("read kernel image", e))?;
        match extract_vmlinux(&bzimage) {
            Some(elf) if has_pvh_entry(&elf) => {
                super::write_atomically(&path, &elf)?;
                Ok(Some(path))
            }
            _ => {
                super::write_atomically(&no_pvh, b"")?;
                Ok(None)
            }
        }
    }
}

/// Sort key that orders embedded numbers numerically.
fn version_key(s: &str) -> Vec<(u64, String)> {
    let mut key = Vec::new();
    let mut digits = String::new();
    let mut text = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            if !text.is_empty() {
                key.push((0, std::mem::take(&mut text)));
            }
            digits.push(c);
        } else {
            if !digits.is_empty() {
                key.push((digits.parse().unwrap_or(u64::MAX), String::new()));
                digits.clear();
            }
            text.push(c);
        }
    }
    if !digits.is_empty() {
        key.push((digits.parse().unwrap_or(u64::MAX), String::new()));
    }
    if !text.is_empty() {
        key.push((0, text));
    }
    key
}

/// The version string a bzImage carries (x86 boot protocol: "HdrS" at 0x202, and at 0x20E a
/// pointer to a NUL-terminated string located at pointer + 0x200). First word only.
pub fn bzimage_version(image: &[u8]) -> Option<String> {
    if image.get(0x202..0x206)? != b"HdrS" {
        return None;
    }
    let ptr = u16::from_le_bytes([*image.get(0x20E)?, *image.get(0x20F)?]) as usize;
    if ptr == 0 {
        return None;
    }
    let start = ptr + 0x200;
    let rest = image.get(start..)?;
    let end = rest.iter().position(|&b| b == 0)?;
    let text = std::str::from_utf8(&rest[..end]).ok()?;
    text.split_whitespace().next().map(str::to_owned)
}

/// Compressed payload formats a bzImage may carry, by magic, with the tool that unpacks them.
const DECOMPRESSORS: &[(&[u8], &str, &[&str])] = &[
    (b"\xFD7zXZ\x00", "xz", &["-dc", "--single-stream"]),
    (b"\x28\xB5\x2F\xFD", "zstd", &["-dcq"]),
    (b"\x1F\x8B\x08", "gzip", &["-dcq"]),
];

/// Finds the compressed kernel inside a bzImage and unpacks it with the system's tools.
/// Returns the uncompressed ELF, or `None` when no payload could be unpacked into one.
pub fn extract_vmlinux(bzimage: &[u8]) -> Option<Vec<u8>> {
    for (magic, tool, args) in DECOMPRESSORS {
        // Try the first few occurrences: a magic can appear by chance in setup code.
        let mut from = 0;
        for _ in 0..4 {
            let Some(at) = find(&bzimage[from..], magic).map(|i| i + from) else {
                break;
            };
            if let Some(out) = run_filter(tool, args, &bzimage[at..]) {
                if out.starts_with(b"\x7FELF") {
                    return Some(out);
                }
            }
            from = at + 1;
        }
    }
    None
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Pipes `input` through `tool args`, returning whatever it wrote to stdout (trailing-garbage
/// complaints are expected after the payload, so the exit status is not trusted; the caller
/// validates the output).
fn run_filter(tool: &str, args: &[&str], input: &[u8]) -> Option<Vec<u8>> {
    let mut child = Command::new(tool)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let mut stdin = child.stdin.take()?;
    let input = input.to_vec();
    let writer = thread::spawn(move || {
        // The tool may stop reading early (end of stream); a broken pipe is fine.
        let _ = stdin.write_all(&input);
    });
    let mut out = Vec::new();
    let read = child.stdout.take().map(|mut s| s.read_to_end(&mut out));
    let _ = child.wait();
    let _ = writer.join();
    match read {
        Some(Ok(_)) if !out.is_empty() => Some(out),
        _ => None,
    }
}

/// Whether an ELF64 image has the Xen PVH entry note (owner "Xen", type 18,
/// XEN_ELFNOTE_PHYS32_ENTRY) that QEMU needs to boot it directly.
pub fn has_pvh_entry(elf: &[u8]) -> bool {
    notes(elf)
        .iter()
        .any(|(name, kind)| name == b"Xen" && *kind == 18)
}

/// (owner, type) of every note in the PT_NOTE segments of a little-endian ELF64 file.
fn notes(elf: &[u8]) -> Vec<(Vec<u8>, u32)> {
    let mut out = Vec::new();
    let u16_at = |o: usize| elf.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |o: usize| {
        elf.get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u64_at = |o: usize| {
        elf.get(o..o + 8).map(|b| {
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            u64::from_le_bytes(a)
        })
    };
    // e_ident: magic, class 2 (64-bit), data 1 (little-endian).
    if !elf.starts_with(b"\x7FELF") || elf.get(4) != Some(&2) || elf.get(5) != Some(&1) {
        return out;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return out;
    };
    for i in 0..usize::from(phnum) {
        let ph = phoff as usize + i * usize::from(phentsize);
        let (Some(p_type), Some(off), Some(size)) = (u32_at(ph), u64_at(ph + 8), u64_at(ph + 0x20))
        else {
            break;
        };
        if p_type != 4 {
            continue; // PT_NOTE only
        }
        let (mut at, end) = (off as usize, off.saturating_add(size) as usize);
        while at + 12 <= end {
            let (Some(namesz), Some(descsz), Some(kind)) =
                (u32_at(at), u32_at(at + 4), u32_at(at + 8))
            else {
                break;
            };
            let name_at = at + 12;
            let Some(name) = elf.get(name_at..name_at + namesz as usize) else {
                break;
            };
            let name = name.strip_suffix(&[0]).unwrap_or(name).to_vec();
            out.push((name, kind));
            at = name_at + align4(namesz as usize) + align4(descsz as usize);
        }
    }
    out
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_bzimage(version: &str) -> Vec<u8> {
        let mut img = vec![0u8; 0x400];
        img[0x202..0x206].copy_from_slice(b"HdrS");
        let ptr: u16 = 0x100; // string at 0x300
        img[0x20E..0x210].copy_from_slice(&ptr.to_le_bytes());
        let s = format!("{version} (builder@example) #1 SMP\0");
        img[0x300..0x300 + s.len()].copy_from_slice(s.as_bytes());
        img
    }

    #[test]
    fn reads_version_from_bzimage_header() {
        let img = fake_bzimage("6.1.0-56-amd64");
        assert_eq!(bzimage_version(&img).as_deref(), Some("6.1.0-56-amd64"));
        let mut bad = img.clone();
        bad[0x202] = b'X';
        assert_eq!(bzimage_version(&bad), None);
    }

    #[test]
    fn versions_sort_numerically() {
        let mut v = [
            "vmlinuz-6.9.0-amd64",
            "vmlinuz-6.10.1-amd64",
            "vmlinuz-6.1.0-56-amd64",
        ];
        v.sort_by_key(|s| version_key(s));
        assert_eq!(
            v,
            [
                "vmlinuz-6.1.0-56-amd64",
                "vmlinuz-6.9.0-amd64",
                "vmlinuz-6.10.1-amd64"
            ]
        );
    }

    /// A minimal ELF64 with one PT_NOTE segment holding the given (owner, type) notes.
    fn elf_with_notes(notes_in: &[(&str, u32)]) -> Vec<u8> {
        let mut notes_blob = Vec::new();
        for (name, kind) in notes_in {
            let name = format!("{name}\0");
            notes_blob.extend_from_slice(&(name.len() as u32).to_le_bytes());
            notes_blob.extend_from_slice(&4u32.to_le_bytes());
            notes_blob.extend_from_slice(&kind.to_le_bytes());
            notes_blob.extend_from_slice(name.as_bytes());
            notes_blob.resize(align4(notes_blob.len()), 0);
            notes_blob.extend_from_slice(&[1, 2, 3, 4]);
        }
        let mut elf = vec![0u8; 0x40 + 0x38];
        elf[..4].copy_from_slice(b"\x7FELF");
        elf[4] = 2;
        elf[5] = 1;
        elf[0x20..0x28].copy_from_slice(&0x40u64.to_le_bytes());
        elf[0x36..0x38].copy_from_slice(&0x38u16.to_le_bytes());
        elf[0x38..0x3A].copy_from_slice(&1u16.to_le_bytes());
        let ph = 0x40;
        elf[ph..ph + 4].copy_from_slice(&4u32.to_le_bytes());
        elf[ph + 8..ph + 16].copy_from_slice(&((0x40 + 0x38) as u64).to_le_bytes());
        elf[ph + 0x20..ph + 0x28].copy_from_slice(&(notes_blob.len() as u64).to_le_bytes());
        elf.extend_from_slice(&notes_blob);
        elf
    }

    #[test]
    fn detects_pvh_note() {
        assert!(has_pvh_entry(&elf_with_notes(&[("GNU", 3), ("Xen", 18)])));
        assert!(!has_pvh_entry(&elf_with_notes(&[("Xen", 17), ("GNU", 18)])));
        assert!(!has_pvh_entry(b"not an elf"));
    }

    #[test]
    fn extracts_gzip_payload() {
        let elf = elf_with_notes(&[("Xen", 18)]);
        let gz = run_filter("gzip", &["-c"], &elf)
            .expect("gzip runs (tests/install-deps.sh installs it)");
        let mut image = fake_bzimage("6.1.0-test");
        image.extend_from_slice(&gz);
        image.extend_from_slice(b"trailing bytes after the payload");
        let out = extract_vmlinux(&image).expect("payload found");
        assert_eq!(out, elf);
    }
}
