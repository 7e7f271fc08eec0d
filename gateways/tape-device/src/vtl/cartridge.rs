//! One virtual cartridge: a file holding a header and a sequence of records (blocks and
//! filemarks), with the semantics of a real tape.
//!
//! File layout (little-endian):
//!
//! ```text
//! 0    8  magic "FVTLCART"
//! 8    4  version (1)
//! 12   4  flags: bit 0 write protected
//! 16   8  capacity in bytes (record headers count)
//! 24   8  early-warning zone in bytes before capacity
//! 32   1  barcode length, then 32 bytes of barcode
//! ...     zero up to 512
//! 512     records: 1 byte kind (1 block, 2 filemark), 3 reserved, 4 payload length,
//!         4 CRC32C of the payload, then the payload
//! ```
//!
//! Records are only ever appended at end of data (or the tail cut off by `erase`), so a crash
//! can leave at most one torn record at the end; opening cuts it off, like a drive that never
//! got the data out of its buffer. Payload checksums are verified on read: a mismatch is a
//! medium error, the way a drive reports an unreadable block.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::{
    Barcode, BlockSize, DeviceError, DriveStatus, ReadOutcome, Space, TapePosition, WriteOutcome,
};

pub(crate) const HEADER_LEN: u64 = 512;
const MAGIC: &[u8; 8] = b"FVTLCART";
const VERSION: u32 = 1;
const RECORD_HEADER: u64 = 12;
const KIND_BLOCK: u8 = 1;
const KIND_FILEMARK: u8 = 2;
const FLAG_WRITE_PROTECT: u32 = 1;
/// Largest block a virtual drive accepts (LTO drives take 8 MiB; be generous).
pub const MAX_BLOCK: usize = 16 << 20;

#[derive(Debug, Clone, Copy)]
struct Record {
    offset: u64,
    filemark: bool,
    len: u32,
}

/// Fixed properties of a new cartridge.
#[derive(Debug, Clone, Copy)]
pub struct CartridgeSpec {
    pub capacity: u64,
    pub early_warning: u64,
}

/// An open cartridge file positioned somewhere on its "tape".
#[derive(Debug)]
pub struct Cartridge {
    file: File,
    path: PathBuf,
    barcode: Barcode,
    spec: CartridgeSpec,
    write_protected: bool,
    records: Vec<Record>,
    /// Next logical object (index into `records`).
    pos: usize,
    block_size: BlockSize,
}

fn header_bytes(barcode: &Barcode, spec: CartridgeSpec, write_protected: bool) -> Vec<u8> {
    let mut h = vec![0u8; HEADER_LEN as usize];
    h[0..8].copy_from_slice(MAGIC);
    h[8..12].copy_from_slice(&VERSION.to_le_bytes());
    let flags = if write_protected {
        FLAG_WRITE_PROTECT
    } else {
        0
    };
    h[12..16].copy_from_slice(&flags.to_le_bytes());
    h[16..24].copy_from_slice(&spec.capacity.to_le_bytes());
    h[24..32].copy_from_slice(&spec.early_warning.to_le_bytes());
    let b = barcode.as_str().as_bytes();
    h[32] = b.len() as u8;
    h[33..33 + b.len()].copy_from_slice(b);
    h
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

impl Cartridge {
    /// Creates a blank cartridge file (fails if the file exists).
    pub fn create(path: &Path, barcode: &Barcode, spec: CartridgeSpec) -> Result<(), DeviceError> {
        if spec.capacity <= spec.early_warning || spec.capacity < 64 * 1024 {
            return Err(DeviceError::Config(format!(
                "cartridge capacity {} must be at least 64 KiB and above the early-warning zone {}",
                spec.capacity, spec.early_warning
            )));
        }
        let ctx = || format!("create cartridge {}", path.display());
        let f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(|e| DeviceError::io(ctx(), e))?;
        f.write_all_at(&header_bytes(barcode, spec, false), 0)
            .and_then(|_| f.sync_all())
            .map_err(|e| DeviceError::io(ctx(), e))
    }

    /// Opens a cartridge file, rebuilding the record index and cutting off a torn tail.
    pub fn open(path: &Path) -> Result<Cartridge, DeviceError> {
        let ctx = || format!("open cartridge {}", path.display());
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| DeviceError::io(ctx(), e))?;
        let not_cart =
            |why: &str| DeviceError::NotACartridge(path.display().to_string(), why.into());
        let mut h = vec![0u8; HEADER_LEN as usize];
        file.read_exact_at(&mut h, 0)
            .map_err(|_| not_cart("shorter than its header"))?;
        if &h[0..8] != MAGIC {
            return Err(not_cart("bad magic"));
        }
        if le_u32(&h, 8) != VERSION {
            return Err(not_cart("unknown version"));
        }
        let blen = usize::from(h[32]);
        let barcode = std::str::from_utf8(h.get(33..33 + blen).ok_or_else(|| not_cart("barcode"))?)
            .map_err(|_| not_cart("barcode is not text"))
            .and_then(Barcode::new)?;
        let spec = CartridgeSpec {
            capacity: le_u64(&h, 16),
            early_warning: le_u64(&h, 24),
        };
        let write_protected = le_u32(&h, 12) & FLAG_WRITE_PROTECT != 0;
        let file_len = file
            .metadata()
            .map_err(|e| DeviceError::io(ctx(), e))?
            .len();
        let mut records = Vec::new();
        let mut off = HEADER_LEN;
        let mut rh = [0u8; RECORD_HEADER as usize];
        while off + RECORD_HEADER <= file_len {
            file.read_exact_at(&mut rh, off)
                .map_err(|e| DeviceError::io(ctx(), e))?;
            let len = le_u32(&rh, 4);
            let kind = rh[0];
            let valid = match kind {
                KIND_BLOCK => len > 0 && (len as usize) <= MAX_BLOCK,
                KIND_FILEMARK => len == 0,
                _ => false,
            };
            if !valid || off + RECORD_HEADER + u64::from(len) > file_len {
                break;
            }
            records.push(Record {
                offset: off,
                filemark: kind == KIND_FILEMARK,
                len,
            });
            off += RECORD_HEADER + u64::from(len);
        }
        if off != file_len {
            log::warn!(
                "cartridge {}: cutting {} bytes of torn or unreadable tail at {off}",
                path.display(),
                file_len - off
            );
            file.set_len(off).map_err(|e| DeviceError::io(ctx(), e))?;
        }
        Ok(Cartridge {
            file,
            path: path.to_path_buf(),
            barcode,
            spec,
            write_protected,
            records,
            pos: 0,
            block_size: BlockSize::Variable,
        })
    }

    /// Sets or clears the write-protect tab (persisted in the cartridge).
    pub fn set_write_protect(path: &Path, on: bool) -> Result<(), DeviceError> {
        let c = Cartridge::open(path)?;
        let h = header_bytes(&c.barcode, c.spec, on);
        c.file
            .write_all_at(&h, 0)
            .and_then(|_| c.file.sync_all())
            .map_err(|e| DeviceError::io(format!("write protect {}", path.display()), e))
    }

    pub fn barcode(&self) -> &Barcode {
        &self.barcode
    }

    fn used(&self) -> u64 {
        self.records.last().map_or(0, |r| {
            r.offset + RECORD_HEADER + u64::from(r.len) - HEADER_LEN
        })
    }

    fn end_offset(&self) -> u64 {
        HEADER_LEN + self.used()
    }

    fn early_warning(&self) -> bool {
        self.used() >= self.spec.capacity - self.spec.early_warning
    }

    pub fn set_block_size(&mut self, size: BlockSize) -> Result<(), DeviceError> {
        if let BlockSize::Fixed(n) = size {
            if n == 0 || n as usize > MAX_BLOCK {
                return Err(DeviceError::InvalidBlockSize {
                    len: n as usize,
                    reason: format!("fixed block size must be 1..={MAX_BLOCK}"),
                });
            }
        }
        self.block_size = size;
        Ok(())
    }

    fn check_append(&self, bytes: u64) -> Result<(), DeviceError> {
        if self.write_protected {
            return Err(DeviceError::WriteProtected(self.barcode.to_string()));
        }
        if self.pos != self.records.len() {
            return Err(DeviceError::NotAtEndOfData {
                position: self.pos as u64,
                end: self.records.len() as u64,
            });
        }
        if self.used() + bytes > self.spec.capacity {
            return Err(DeviceError::EndOfMedium(bytes as usize));
        }
        Ok(())
    }

    fn append(&mut self, filemark: bool, data: &[u8]) -> Result<(), DeviceError> {
        let off = self.end_offset();
        let mut rh = [0u8; RECORD_HEADER as usize];
        rh[0] = if filemark { KIND_FILEMARK } else { KIND_BLOCK };
        rh[4..8].copy_from_slice(&(data.len() as u32).to_le_bytes());
        rh[8..12].copy_from_slice(&crc32c::crc32c(data).to_le_bytes());
        let ctx = || format!("write cartridge {}", self.path.display());
        self.file
            .write_all_at(&rh, off)
            .map_err(|e| DeviceError::io(ctx(), e))?;
        if !data.is_empty() {
            self.file
                .write_all_at(data, off + RECORD_HEADER)
                .map_err(|e| DeviceError::io(ctx(), e))?;
        }
        self.records.push(Record {
            offset: off,
            filemark,
            len: data.len() as u32,
        });
        self.pos = self.records.len();
        Ok(())
    }

    fn outcome(&self) -> WriteOutcome {
        if self.early_warning() {
            WriteOutcome::EarlyWarning
        } else {
            WriteOutcome::Written
        }
    }

    pub fn write_block(&mut self, data: &[u8]) -> Result<WriteOutcome, DeviceError> {
        let bad = |reason: String| DeviceError::InvalidBlockSize {
            len: data.len(),
            reason,
        };
        match self.block_size {
            BlockSize::Fixed(n) if data.len() != n as usize => {
                return Err(bad(format!(
                    "the drive is in fixed mode with {n} byte blocks"
                )))
            }
            BlockSize::Variable if data.is_empty() || data.len() > MAX_BLOCK => {
                return Err(bad(format!("variable blocks are 1..={MAX_BLOCK} bytes")))
            }
            _ => {}
        }
        self.check_append(RECORD_HEADER + data.len() as u64)?;
        self.append(false, data)?;
        Ok(self.outcome())
    }

    pub fn write_filemarks(&mut self, count: u32) -> Result<WriteOutcome, DeviceError> {
        if count > 0 {
            self.check_append(RECORD_HEADER * u64::from(count))?;
            for _ in 0..count {
                self.append(true, &[])?;
            }
        } else if self.write_protected {
            return Err(DeviceError::WriteProtected(self.barcode.to_string()));
        }
        self.file
            .sync_data()
            .map_err(|e| DeviceError::io(format!("flush cartridge {}", self.path.display()), e))?;
        Ok(self.outcome())
    }

    pub fn read_block(&mut self, buf: &mut [u8]) -> Result<ReadOutcome, DeviceError> {
        let Some(r) = self.records.get(self.pos).copied() else {
            return Ok(ReadOutcome::EndOfData);
        };
        let at = self.pos as u64;
        self.pos += 1;
        if r.filemark {
            return Ok(ReadOutcome::Filemark);
        }
        let len = r.len as usize;
        if let BlockSize::Fixed(n) = self.block_size {
            if len != n as usize {
                return Err(DeviceError::InvalidBlockSize {
                    len,
                    reason: format!("the drive is in fixed mode with {n} byte blocks"),
                });
            }
        }
        if buf.len() < len {
            return Err(DeviceError::BlockTooLarge {
                len,
                buf: buf.len(),
            });
        }
        let ctx = || format!("read cartridge {}", self.path.display());
        let mut rh = [0u8; RECORD_HEADER as usize];
        self.file
            .read_exact_at(&mut rh, r.offset)
            .map_err(|e| DeviceError::io(ctx(), e))?;
        self.file
            .read_exact_at(&mut buf[..len], r.offset + RECORD_HEADER)
            .map_err(|e| DeviceError::io(ctx(), e))?;
        if crc32c::crc32c(&buf[..len]) != le_u32(&rh, 8) {
            return Err(DeviceError::MediumError(at));
        }
        Ok(ReadOutcome::Block(len))
    }

    pub fn rewind(&mut self) {
        self.pos = 0;
    }

    pub fn space(&mut self, space: Space) -> Result<(), DeviceError> {
        match space {
            Space::EndOfData => {
                self.pos = self.records.len();
                Ok(())
            }
            Space::Blocks(n) if n >= 0 => {
                for done in 0..n {
                    let Some(r) = self.records.get(self.pos) else {
                        return Err(DeviceError::EndOfData);
                    };
                    self.pos += 1;
                    if r.filemark {
                        return Err(DeviceError::FilemarkEncountered {
                            remaining: n - done,
                        });
                    }
                }
                Ok(())
            }
            Space::Blocks(n) => {
                for done in 0..-n {
                    if self.pos == 0 {
                        return Err(DeviceError::BeginningOfMedium);
                    }
                    self.pos -= 1;
                    if self.records[self.pos].filemark {
                        return Err(DeviceError::FilemarkEncountered {
                            remaining: -n - done,
                        });
                    }
                }
                Ok(())
            }
            Space::Filemarks(n) if n >= 0 => {
                let mut left = n;
                while left > 0 {
                    let Some(r) = self.records.get(self.pos) else {
                        return Err(DeviceError::EndOfData);
                    };
                    self.pos += 1;
                    if r.filemark {
                        left -= 1;
                    }
                }
                Ok(())
            }
            Space::Filemarks(n) => {
                let mut left = -n;
                while left > 0 {
                    if self.pos == 0 {
                        return Err(DeviceError::BeginningOfMedium);
                    }
                    self.pos -= 1;
                    if self.records[self.pos].filemark {
                        left -= 1;
                    }
                }
                Ok(())
            }
        }
    }

    pub fn locate(&mut self, logical: u64) -> Result<(), DeviceError> {
        if logical > self.records.len() as u64 {
            self.pos = self.records.len();
            return Err(DeviceError::EndOfData);
        }
        self.pos = logical as usize;
        Ok(())
    }

    pub fn position(&self) -> TapePosition {
        let before = &self.records[..self.pos];
        let last_fm = before.iter().rposition(|r| r.filemark);
        TapePosition {
            logical: self.pos as u64,
            file_number: before.iter().filter(|r| r.filemark).count() as u64,
            block_in_file: last_fm.map_or(self.pos, |i| self.pos - i - 1) as u64,
        }
    }

    pub fn erase(&mut self) -> Result<(), DeviceError> {
        if self.write_protected {
            return Err(DeviceError::WriteProtected(self.barcode.to_string()));
        }
        self.records.truncate(self.pos);
        let end = self.end_offset();
        self.file
            .set_len(end)
            .and_then(|_| self.file.sync_all())
            .map_err(|e| DeviceError::io(format!("erase cartridge {}", self.path.display()), e))
    }

    pub fn status(&self) -> DriveStatus {
        DriveStatus {
            loaded: true,
            barcode: Some(self.barcode.clone()),
            write_protected: self.write_protected,
            block_size: self.block_size,
            position: Some(self.position()),
            beginning_of_tape: self.pos == 0,
            end_of_data: self.pos == self.records.len(),
            early_warning: self.early_warning(),
            capacity_bytes: Some(self.spec.capacity),
            used_bytes: Some(self.used()),
        }
    }
}

#[cfg(test)]
#[path = "cartridge_tests.rs"]
mod tests;
