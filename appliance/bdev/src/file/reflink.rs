//! Copy offload of a file device: reflink (`FICLONERANGE`).
//!
//! `Capabilities::copy` is true only when the file system really offloads: the range is
//! remapped in metadata (shared extents), not copied by the kernel. That is decided at open by
//! cloning an empty range at the end of the file onto itself, which changes nothing and
//! succeeds exactly when the file system implements reflink for this file (XFS with
//! `reflink=1`, Btrfs, bcachefs, OCFS2, ...; an XFS formatted without reflink refuses it, so
//! the probe is the authority, not the file system's magic number). `copy_file_range` is not
//! used: on ext4 or tmpfs it copies the data in the kernel, which is no offload and would block
//! the reactor for the whole copy.
//!
//! Every Copy request is block-aligned; the device's blocks must also be multiples of the file
//! system block size, or a clone of an unaligned range would be refused, so copy is off then.
//! A clone is metadata-only (a few extent updates in the file system journal, independent of
//! the data size), so the channel issues it synchronously at submit and reports it on the next
//! poll, like the reactor's other short system calls.

use std::fs::File;

use ferrite_uring::sys;

/// File system magic numbers (statfs f_type) named in logs.
const FS_NAMES: [(i64, &str); 8] = [
    (0x5846_5342, "xfs"),
    (0x9123_683E, "btrfs"),
    (0xCA45_1A4E, "bcachefs"),
    (0x7461_636F, "ocfs2"),
    (0xEF53, "ext4"),
    (0x0102_1994, "tmpfs"),
    (0x6969, "nfs"),
    (0x794C_7630, "overlayfs"),
];

/// The name of a file system magic number, for logs.
pub(super) fn fs_name(magic: i64) -> String {
    FS_NAMES
        .iter()
        .find(|(m, _)| *m == magic)
        .map_or_else(|| format!("fs {magic:#x}"), |(_, n)| (*n).to_string())
}

/// Whether Copy is offloaded for `file` (a regular file of `size` bytes with `block_size`
/// blocks): `Ok` when reflink works, `Err` with the reason otherwise.
pub(super) fn probe(file: &File, size: u64, block_size: u32) -> Result<(), String> {
    let (magic, fs_block) = sys::fs_type(file).map_err(|e| format!("statfs: {e}"))?;
    let fs = fs_name(magic);
    if fs_block == 0 || u64::from(block_size) % fs_block != 0 {
        return Err(format!(
            "{fs}: {block_size}-byte blocks are not multiples of its {fs_block}-byte blocks"
        ));
    }
    sys::clone_range(file, size, 0, file, size)
        .map_err(|e| format!("{fs}: FICLONERANGE refused ({e})"))
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};
    use std::process::Command;

    use ferrite_reactor::IoBuf;

    use super::*;
    use crate::{BdevIo, BlockDevice, FileBdev, IoChannel, IoKind};

    fn magic_of(path: &Path) -> i64 {
        let f = File::open(path).expect("open");
        sys::fs_type(&f).expect("statfs").0
    }

    #[test]
    fn this_machines_file_system_gets_the_right_answer() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("probe.img");
        let dev = FileBdev::create("p", &path, 1 << 20, 4096).expect("create");
        let magic = magic_of(&path);
        let copy = dev.capabilities().copy;
        match fs_name(magic).as_str() {
            // copy_file_range there is an in-kernel copy, not an offload.
            "ext4" | "tmpfs" | "overlayfs" => assert!(!copy, "{} must not offload", fs_name(magic)),
            "btrfs" => assert!(copy, "btrfs always reflinks"),
            other => println!("{other}: probe says copy = {copy}"),
        }
        // 512-byte blocks on a 4 KiB-block file system can never be cloned.
        let small = FileBdev::open("s", &path, Some(512)).expect("open");
        if sys::fs_type(&File::open(&path).expect("open"))
            .expect("statfs")
            .1
            > 512
        {
            assert!(!small.capabilities().copy);
        }
    }

    /// A mounted XFS image (reflink=1), unmounted and detached on drop.
    struct XfsMount {
        dir: tempfile::TempDir,
        mnt: PathBuf,
    }

    impl XfsMount {
        fn new() -> Result<XfsMount, String> {
            let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
            let img = dir.path().join("xfs.img");
            let mnt = dir.path().join("mnt");
            std::fs::create_dir(&mnt).map_err(|e| e.to_string())?;
            File::create(&img)
                .and_then(|f| f.set_len(320 << 20))
                .map_err(|e| e.to_string())?;
            run("mkfs.xfs", &["-q", "-m", "reflink=1", path_str(&img)?])?;
            run("mount", &["-o", "loop", path_str(&img)?, path_str(&mnt)?])?;
            Ok(XfsMount { dir, mnt })
        }
    }

    impl Drop for XfsMount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.mnt).status();
            let _ = self.dir.path();
        }
    }

    fn path_str(p: &Path) -> Result<&str, String> {
        p.to_str()
            .ok_or_else(|| format!("{} is not UTF-8", p.display()))
    }

    fn run(cmd: &str, args: &[&str]) -> Result<(), String> {
        let out = Command::new(cmd)
            .args(args)
            .output()
            .map_err(|e| format!("{cmd}: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "{cmd} {args:?}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(())
    }

    fn wait(chan: &mut Box<dyn IoChannel>) -> (BdevIo, Result<(), crate::BdevError>) {
        // A deadline, not a poll count: O_DIRECT on a loop-mounted image can take a while on a
        // loaded machine.
        let mut got = None;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::time::Instant::now() < deadline {
            chan.poll(1, &mut |io, r| got = Some((io, r)));
            if let Some(done) = got.take() {
                return done;
            }
            std::thread::sleep(std::time::Duration::from_micros(100));
        }
        panic!("request did not complete within 30 s");
    }

    #[test]
    fn reflink_on_xfs_offloads_copy() {
        let mount = match XfsMount::new() {
            Ok(m) => m,
            Err(reason) => {
                println!("skipped: cannot mount an XFS image here: {reason}");
                return;
            }
        };
        let path = mount.mnt.join("disk.img");
        let dev = FileBdev::create("x", &path, 8 << 20, 4096).expect("create on xfs");
        assert_eq!(fs_name(magic_of(&path)), "xfs");
        assert!(dev.capabilities().copy, "XFS with reflink offloads Copy");
        let mut chan = dev.open_channel(&[]).expect("channel");
        let mut data = IoBuf::new(8 * 4096);
        data.set_len(8 * 4096);
        for (i, b) in data.as_mut_slice().iter_mut().enumerate() {
            *b = (i % 251) as u8;
        }
        let expected = data.as_slice().to_vec();
        let write = IoKind::Write {
            lba: 16,
            blocks: 8,
            fua: true,
        };
        chan.submit(BdevIo::new(1, write, Some(data)))
            .map_err(|(_, e)| e)
            .expect("write");
        assert!(wait(&mut chan).1.is_ok());
        let copy = IoKind::Copy {
            src_lba: 16,
            dst_lba: 1000,
            blocks: 8,
        };
        chan.submit(BdevIo::new(2, copy, None))
            .map_err(|(_, e)| e)
            .expect("copy");
        assert!(wait(&mut chan).1.is_ok());
        let read = IoKind::Read {
            lba: 1000,
            blocks: 8,
        };
        chan.submit(BdevIo::new(3, read, Some(IoBuf::new(8 * 4096))))
            .map_err(|(_, e)| e)
            .expect("read");
        let (io, r) = wait(&mut chan);
        assert!(r.is_ok());
        assert!(io.buf.expect("read buffer").as_slice() == expected.as_slice());
        drop(chan);
    }
}
