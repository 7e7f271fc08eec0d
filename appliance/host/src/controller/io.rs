//! NVM I/O commands of the blocking controller.

use ferrite_nvme::command::opcode;
use ferrite_nvme::io::{CopyCommand, CopySourceRange, DatasetManagement, DsmRange, ReadWrite};
use ferrite_nvme::{Command, Completion};
use zerocopy::IntoBytes;

use super::{Controller, IoData};
use crate::error::{HostError, Result};
use crate::qpair::SglMode;

/// Write Zeroes CDW12 bit 25: deallocate.
const WRITE_ZEROES_DEAC: u32 = 1 << 25;
/// Most ranges in one Dataset Management command.
const DSM_MAX_RANGES: usize = 256;
/// Most source ranges in one Copy command (NR is 8 bits, 0-based).
const COPY_MAX_RANGES: usize = 256;

fn nlb(blocks: u32) -> Result<u16> {
    blocks
        .checked_sub(1)
        .and_then(|n| u16::try_from(n).ok())
        .ok_or_else(|| HostError::InvalidArgument(format!("{blocks} blocks: must be 1..=65536")))
}

impl Controller {
    /// Sends an I/O command on queue `qid` and returns its completion
    /// whatever the status; read data lands in `data`.
    pub fn raw_io(&mut self, qid: u16, cmd: &Command, data: IoData<'_>) -> Result<Completion> {
        self.raw_io_with(qid, cmd, data, SglMode::Auto)
    }

    /// [`Controller::raw_io`] with control over the data pointer.
    pub fn raw_io_with(
        &mut self,
        qid: u16,
        cmd: &Command,
        data: IoData<'_>,
        mode: SglMode,
    ) -> Result<Completion> {
        self.maybe_keep_alive()?;
        let timeout = self.opts.timeout;
        let done = self.io_mut(qid)?.exec(cmd, data, mode, timeout)?;
        if done.data_digest_error {
            return Err(HostError::DataDigest { cid: done.cid.0 });
        }
        Ok(done.cqe)
    }

    fn io_cmd(&mut self, qid: u16, cmd: &Command, data: IoData<'_>) -> Result<Completion> {
        self.maybe_keep_alive()?;
        let timeout = self.opts.timeout;
        let done = self.io_mut(qid)?.exec(cmd, data, SglMode::Auto, timeout)?;
        done.check()?;
        Ok(done.cqe)
    }

    /// Block size of `nsid` (Identify Namespace on first use).
    pub fn block_size(&mut self, nsid: u32) -> Result<u32> {
        if let Some(&bs) = self.block_sizes.get(&nsid) {
            return Ok(bs);
        }
        self.identify_namespace(nsid)?;
        self.block_sizes.get(&nsid).copied().ok_or_else(|| {
            HostError::InvalidArgument(format!(
                "namespace {nsid} is inactive or has no valid LBA format"
            ))
        })
    }

    /// Reads `blocks` blocks at `lba` into `buf` (its length is the transfer length).
    pub fn read(
        &mut self,
        qid: u16,
        nsid: u32,
        lba: u64,
        blocks: u32,
        buf: &mut [u8],
    ) -> Result<()> {
        if buf.is_empty() {
            return Err(HostError::InvalidArgument("empty read buffer".into()));
        }
        let cmd = ReadWrite {
            nsid,
            slba: lba,
            nlb: nlb(blocks)?,
            ..ReadWrite::default()
        }
        .to_command(opcode::io::READ, 0);
        self.io_cmd(qid, &cmd, IoData::Read(buf))?;
        Ok(())
    }

    /// Writes `data` (whole blocks) at `lba`, with Force Unit Access if `fua`.
    pub fn write(&mut self, qid: u16, nsid: u32, lba: u64, data: &[u8], fua: bool) -> Result<()> {
        let blocks = self.blocks_of(nsid, data.len())?;
        let cmd = ReadWrite {
            nsid,
            slba: lba,
            nlb: nlb(blocks)?,
            fua,
            ..ReadWrite::default()
        }
        .to_command(opcode::io::WRITE, 0);
        self.io_cmd(qid, &cmd, IoData::Write(data))?;
        Ok(())
    }

    /// Compare: Ok when the blocks equal `data`, `Status(COMPARE_FAILURE)` otherwise.
    pub fn compare(&mut self, qid: u16, nsid: u32, lba: u64, data: &[u8]) -> Result<()> {
        let blocks = self.blocks_of(nsid, data.len())?;
        let cmd = ReadWrite {
            nsid,
            slba: lba,
            nlb: nlb(blocks)?,
            ..ReadWrite::default()
        }
        .to_command(opcode::io::COMPARE, 0);
        self.io_cmd(qid, &cmd, IoData::Write(data))?;
        Ok(())
    }

    /// Flush.
    pub fn flush(&mut self, qid: u16, nsid: u32) -> Result<()> {
        let mut cmd = Command::new(opcode::io::FLUSH, 0);
        cmd.nsid = nsid.into();
        self.io_cmd(qid, &cmd, IoData::None)?;
        Ok(())
    }

    /// Write Zeroes of `blocks` blocks at `lba`; `deallocate` sets DEAC.
    pub fn write_zeroes(
        &mut self,
        qid: u16,
        nsid: u32,
        lba: u64,
        blocks: u32,
        deallocate: bool,
    ) -> Result<()> {
        let mut cmd = ReadWrite {
            nsid,
            slba: lba,
            nlb: nlb(blocks)?,
            ..ReadWrite::default()
        }
        .to_command(opcode::io::WRITE_ZEROES, 0);
        if deallocate {
            cmd.cdw12 = (cmd.cdw12.get() | WRITE_ZEROES_DEAC).into();
        }
        self.io_cmd(qid, &cmd, IoData::None)?;
        Ok(())
    }

    /// Dataset Management with the Deallocate attribute for `(lba, blocks)` ranges.
    pub fn deallocate(&mut self, qid: u16, nsid: u32, ranges: &[(u64, u32)]) -> Result<()> {
        if ranges.is_empty() || ranges.len() > DSM_MAX_RANGES {
            return Err(HostError::InvalidArgument(format!(
                "{} ranges: must be 1..={DSM_MAX_RANGES}",
                ranges.len()
            )));
        }
        let list: Vec<DsmRange> = ranges
            .iter()
            .map(|&(lba, blocks)| DsmRange::new(lba, blocks))
            .collect();
        let cmd = DatasetManagement {
            nsid,
            nr: (ranges.len() - 1) as u8,
            ad: true,
            ..DatasetManagement::default()
        }
        .to_command(0);
        self.io_cmd(qid, &cmd, IoData::Write(list.as_bytes()))?;
        Ok(())
    }

    /// Copy (descriptor format 0h): the `(lba, blocks)` source ranges, in order, to
    /// consecutive blocks from `sdlba`, with Force Unit Access if `fua`. On failure the
    /// error is the status; [`Controller::copy_completion`] also gives CQE Dword 0 (the
    /// lowest source range not copied).
    pub fn copy(
        &mut self,
        qid: u16,
        nsid: u32,
        sdlba: u64,
        ranges: &[(u64, u32)],
        fua: bool,
    ) -> Result<()> {
        let cqe = self.copy_completion(qid, nsid, sdlba, ranges, fua)?;
        let status = cqe.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(HostError::Status(status))
        }
    }

    /// [`Controller::copy`] returning the completion whatever its status.
    pub fn copy_completion(
        &mut self,
        qid: u16,
        nsid: u32,
        sdlba: u64,
        ranges: &[(u64, u32)],
        fua: bool,
    ) -> Result<Completion> {
        if ranges.is_empty() || ranges.len() > COPY_MAX_RANGES {
            return Err(HostError::InvalidArgument(format!(
                "{} ranges: must be 1..={COPY_MAX_RANGES}",
                ranges.len()
            )));
        }
        let list = ranges
            .iter()
            .map(|&(lba, blocks)| {
                CopySourceRange::new(lba, blocks).map_err(|_| {
                    HostError::InvalidArgument(format!("{blocks} blocks: must be 1..=65536"))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let cmd = CopyCommand {
            nsid,
            sdlba,
            nr: (ranges.len() - 1) as u8,
            fua,
            ..CopyCommand::default()
        }
        .to_command(0);
        self.raw_io(qid, &cmd, IoData::Write(list.as_bytes()))
    }

    fn blocks_of(&mut self, nsid: u32, len: usize) -> Result<u32> {
        let bs = self.block_size(nsid)? as usize;
        if len == 0 || len % bs != 0 {
            return Err(HostError::InvalidArgument(format!(
                "{len} bytes is not a whole number of {bs}-byte blocks"
            )));
        }
        u32::try_from(len / bs).map_err(|_| HostError::InvalidArgument(format!("{len} bytes")))
    }
}
