//! A safe handle on the Linux SCSI tape driver's non-rewinding node (`/dev/nstN`).
//!
//! Reads and writes are plain `read(2)`/`write(2)`: in variable-block mode one call moves one
//! tape block. A read that returns 0 bytes crossed a filemark; a write at end of medium fails
//! with `ENOSPC` once the early-warning zone is exhausted (the driver reports early warning
//! through `GMT_EOT` in [`TapeStatus`]).

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use crate::error::ScsiError;
use crate::raw::{self, gmt, op, MtgetRaw, MtopRaw, MtposRaw};

/// A tape operation for `MTIOCTOP`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MtOp {
    Rewind,
    /// Space forward over n filemarks (positioned after the last one).
    ForwardFile(i32),
    /// Space backward over n filemarks (positioned before the last one).
    BackFile(i32),
    ForwardRecord(i32),
    BackRecord(i32),
    WriteFilemarks(i32),
    /// Space to end of recorded data.
    EndOfData,
    /// Locate to a logical block number.
    Seek(i32),
    /// 0 = variable block mode.
    SetBlockSize(i32),
    Load,
    Unload,
    Offline,
    Erase,
    Nop,
}

impl MtOp {
    /// The raw `struct mtop` for this operation.
    pub fn to_raw(self) -> MtopRaw {
        let (mt_op, mt_count) = match self {
            MtOp::Rewind => (op::MTREW, 1),
            MtOp::ForwardFile(n) => (op::MTFSF, n),
            MtOp::BackFile(n) => (op::MTBSF, n),
            MtOp::ForwardRecord(n) => (op::MTFSR, n),
            MtOp::BackRecord(n) => (op::MTBSR, n),
            MtOp::WriteFilemarks(n) => (op::MTWEOF, n),
            MtOp::EndOfData => (op::MTEOM, 1),
            MtOp::Seek(n) => (op::MTSEEK, n),
            MtOp::SetBlockSize(n) => (op::MTSETBLK, n),
            MtOp::Load => (op::MTLOAD, 1),
            MtOp::Unload => (op::MTUNLOAD, 1),
            MtOp::Offline => (op::MTOFFL, 1),
            MtOp::Erase => (op::MTERASE, 1),
            MtOp::Nop => (op::MTNOP, 1),
        };
        MtopRaw { mt_op, mt_count }
    }
}

/// Drive status decoded from `struct mtget`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TapeStatus {
    /// 0 = variable block mode.
    pub block_size: u32,
    pub density: u8,
    /// File number (filemarks passed since BOT); -1 when unknown.
    pub file_number: i32,
    /// Block number within the file; -1 when unknown.
    pub block_number: i32,
    pub bot: bool,
    /// Early warning / end of tape.
    pub eot: bool,
    pub eof: bool,
    pub eod: bool,
    pub write_protected: bool,
    pub online: bool,
    pub door_open: bool,
}

impl TapeStatus {
    /// Decodes the kernel's `struct mtget`.
    pub fn from_raw(r: &MtgetRaw) -> TapeStatus {
        let g = r.mt_gstat as u64 as u32;
        let ds = r.mt_dsreg as u64;
        TapeStatus {
            block_size: (ds & raw::MT_ST_BLKSIZE_MASK) as u32,
            density: ((ds >> raw::MT_ST_DENSITY_SHIFT) & 0xff) as u8,
            file_number: r.mt_fileno,
            block_number: r.mt_blkno,
            bot: g & gmt::BOT != 0,
            eot: g & gmt::EOT != 0,
            eof: g & gmt::EOF != 0,
            eod: g & gmt::EOD != 0,
            write_protected: g & gmt::WR_PROT != 0,
            online: g & gmt::ONLINE != 0,
            door_open: g & gmt::DR_OPEN != 0,
        }
    }
}

/// An open tape device node.
#[derive(Debug)]
pub struct TapeDevice {
    file: File,
    path: PathBuf,
}

impl TapeDevice {
    /// Opens `path` (use the non-rewinding `/dev/nstN` node) for reading, and writing if asked.
    pub fn open(path: &Path, write: bool) -> Result<TapeDevice, ScsiError> {
        let file = crate::error::open_node(path, write)?;
        Ok(TapeDevice {
            file,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn os_err(&self, op: &'static str, source: std::io::Error) -> ScsiError {
        ScsiError::Os {
            op,
            path: self.path.display().to_string(),
            source,
        }
    }

    /// Runs one `MTIOCTOP` operation.
    pub fn op(&self, operation: MtOp) -> Result<(), ScsiError> {
        let arg = operation.to_raw();
        // SAFETY: `self.file` is an open descriptor for the lifetime of the call; MTIOCTOP
        // reads exactly `size_of::<MtopRaw>()` bytes from `arg`, a live, properly laid out
        // `struct mtop` (layout asserted in `raw`), and writes nothing back.
        let rc = unsafe {
            libc::ioctl(
                self.file.as_raw_fd(),
                raw::MTIOCTOP as libc::c_ulong,
                &arg as *const MtopRaw,
            )
        };
        if rc < 0 {
            return Err(self.os_err("MTIOCTOP", std::io::Error::last_os_error()));
        }
        Ok(())
    }

    /// Reads drive status with `MTIOCGET`.
    pub fn status(&self) -> Result<TapeStatus, ScsiError> {
        let mut out = MtgetRaw::default();
        // SAFETY: the descriptor is open; MTIOCGET writes one `struct mtget` into `out`, which
        // is exclusively borrowed, sized and aligned as the kernel expects (asserted in `raw`).
        let rc = unsafe {
            libc::ioctl(
                self.file.as_raw_fd(),
                raw::MTIOCGET as libc::c_ulong,
                &mut out as *mut MtgetRaw,
            )
        };
        if rc < 0 {
            return Err(self.os_err("MTIOCGET", std::io::Error::last_os_error()));
        }
        Ok(TapeStatus::from_raw(&out))
    }

    /// The current logical block number (`MTIOCPOS`, SCSI READ POSITION underneath).
    pub fn position(&self) -> Result<u64, ScsiError> {
        let mut out = MtposRaw::default();
        // SAFETY: the descriptor is open; MTIOCPOS writes one `struct mtpos` (a `long`) into
        // `out`, exclusively borrowed for the call.
        let rc = unsafe {
            libc::ioctl(
                self.file.as_raw_fd(),
                raw::MTIOCPOS as libc::c_ulong,
                &mut out as *mut MtposRaw,
            )
        };
        if rc < 0 {
            return Err(self.os_err("MTIOCPOS", std::io::Error::last_os_error()));
        }
        u64::try_from(out.mt_blkno)
            .map_err(|_| ScsiError::malformed("tape position", format!("{}", out.mt_blkno)))
    }

    /// Reads one block; 0 means a filemark was crossed.
    pub fn read_block(&mut self, buf: &mut [u8]) -> Result<usize, ScsiError> {
        self.file.read(buf).map_err(|e| self.os_err("read", e))
    }

    /// Writes one block; a short write or `ENOSPC` means end of medium.
    pub fn write_block(&mut self, buf: &[u8]) -> Result<usize, ScsiError> {
        self.file.write(buf).map_err(|e| self.os_err("write", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ops_encode_to_mtio_codes() {
        assert_eq!(
            MtOp::Rewind.to_raw(),
            MtopRaw {
                mt_op: 6,
                mt_count: 1
            }
        );
        assert_eq!(
            MtOp::WriteFilemarks(2).to_raw(),
            MtopRaw {
                mt_op: 5,
                mt_count: 2
            }
        );
        assert_eq!(
            MtOp::ForwardFile(3).to_raw(),
            MtopRaw {
                mt_op: 1,
                mt_count: 3
            }
        );
        assert_eq!(
            MtOp::BackFile(1).to_raw(),
            MtopRaw {
                mt_op: 2,
                mt_count: 1
            }
        );
        assert_eq!(MtOp::EndOfData.to_raw().mt_op, 12);
        assert_eq!(
            MtOp::Seek(4096).to_raw(),
            MtopRaw {
                mt_op: 22,
                mt_count: 4096
            }
        );
        assert_eq!(
            MtOp::SetBlockSize(0).to_raw(),
            MtopRaw {
                mt_op: 20,
                mt_count: 0
            }
        );
        assert_eq!(MtOp::Unload.to_raw().mt_op, 31);
    }

    #[test]
    fn mtget_decodes_block_size_density_and_flags() {
        let r = MtgetRaw {
            mt_type: 0x72,
            mt_dsreg: (0x5a << 24) | 262_144,
            mt_gstat: (gmt::BOT | gmt::ONLINE | gmt::WR_PROT) as libc::c_long,
            mt_fileno: 0,
            mt_blkno: 0,
            ..MtgetRaw::default()
        };
        let s = TapeStatus::from_raw(&r);
        assert_eq!(s.block_size, 262_144);
        assert_eq!(s.density, 0x5a);
        assert!(s.bot && s.online && s.write_protected);
        assert!(!s.eot && !s.eod && !s.eof && !s.door_open);
        let eot = TapeStatus::from_raw(&MtgetRaw {
            mt_gstat: (gmt::EOT | gmt::EOD | gmt::EOF) as libc::c_long,
            mt_fileno: 3,
            mt_blkno: 17,
            ..MtgetRaw::default()
        });
        assert!(eot.eot && eot.eod && eot.eof);
        assert_eq!((eot.file_number, eot.block_number), (3, 17));
    }

    /// Device test: runs against a real drive named by FERRITE_TAPE_DEVICE, else says why not.
    #[test]
    fn real_drive_status_when_available() {
        let Some(dev) = std::env::var_os("FERRITE_TAPE_DEVICE") else {
            eprintln!("skipped: no tape device (set FERRITE_TAPE_DEVICE=/dev/nstN to run)");
            return;
        };
        let t = TapeDevice::open(Path::new(&dev), false).expect("open the tape node");
        let s = t.status().expect("MTIOCGET");
        assert!(
            s.online,
            "a drive with a loaded cartridge reports online: {s:?}"
        );
        t.position().expect("MTIOCPOS");
    }

    #[test]
    fn opening_a_missing_node_names_it() {
        let e = TapeDevice::open(Path::new("/dev/nst-ferrite-none"), false).expect_err("absent");
        assert!(e.to_string().contains("/dev/nst-ferrite-none"), "{e}");
        assert_eq!(e.errno(), Some(libc::ENOENT));
    }
}
