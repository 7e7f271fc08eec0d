//! A read split into several commands kept in flight together on one queue: a streaming
//! reader (ferrite-tape's backup) that sends one command at a time leaves the link idle for a
//! round trip per piece.

use std::collections::HashMap;
use std::time::Instant;

use ferrite_nvme::command::opcode;
use ferrite_nvme::io::ReadWrite;

use super::Controller;
use crate::error::{HostError, Result};
use crate::qpair::Data;

impl Controller {
    /// Reads `buf.len()` bytes at `lba` of `nsid` as commands of at most `piece` bytes, with
    /// up to the queue's depth of them outstanding at once.
    pub fn read_pipelined(
        &mut self,
        qid: u16,
        nsid: u32,
        lba: u64,
        buf: &mut [u8],
        piece: usize,
    ) -> Result<()> {
        self.maybe_keep_alive()?;
        let bs = self.block_size(nsid)? as usize;
        if buf.is_empty() || buf.len() % bs != 0 || piece < bs || piece % bs != 0 {
            return Err(HostError::InvalidArgument(format!(
                "read of {} bytes in pieces of {piece}: both must be whole {bs} byte blocks",
                buf.len()
            )));
        }
        let timeout = self.opts.timeout;
        let qp = &mut self.io_mut(qid)?.qp;
        let depth = usize::from(qp.depth()).saturating_sub(1).max(1);
        let pieces: Vec<(usize, usize)> = (0..buf.len())
            .step_by(piece)
            .map(|s| (s, piece.min(buf.len() - s)))
            .collect();
        let mut next = 0;
        let mut inflight: HashMap<u16, (usize, usize)> = HashMap::new();
        let mut done = Vec::new();
        let deadline = Instant::now() + timeout;
        while next < pieces.len() || !inflight.is_empty() {
            while next < pieces.len() && inflight.len() < depth {
                let (start, len) = pieces[next];
                let blocks = u32::try_from(len / bs).unwrap_or(u32::MAX);
                let nlb = blocks
                    .checked_sub(1)
                    .and_then(|n| u16::try_from(n).ok())
                    .ok_or_else(|| {
                        HostError::InvalidArgument(format!("{blocks} blocks: must be 1..=65536"))
                    })?;
                let cmd = ReadWrite {
                    nsid,
                    slba: lba + (start / bs) as u64,
                    nlb,
                    ..ReadWrite::default()
                }
                .to_command(opcode::io::READ, 0);
                let cid = qp.submit(&cmd, Data::Read(len as u32))?;
                inflight.insert(cid.0, (start, len));
                next += 1;
            }
            done.clear();
            if qp.poll(&mut done)? == 0 {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(HostError::Timeout {
                        what: "pipelined read completions",
                        after: timeout,
                    });
                }
                qp.wait(left)?;
                continue;
            }
            for c in &done {
                let Some((start, len)) = inflight.remove(&c.cid.0) else {
                    continue;
                };
                c.check()?;
                let data = qp.data(c.cid);
                if data.len() != len {
                    return Err(HostError::InvalidArgument(format!(
                        "read of {len} bytes returned {}",
                        data.len()
                    )));
                }
                buf[start..start + len].copy_from_slice(data);
            }
        }
        Ok(())
    }
}
