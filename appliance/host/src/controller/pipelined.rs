//! Reads and writes split into several commands kept in flight together on one queue: a
//! streaming client (ferrite-tape's backup and restore) that sends one command at a time
//! leaves the link idle for a round trip per piece.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use ferrite_nvme::command::opcode;
use ferrite_nvme::io::ReadWrite;

use super::Controller;
use crate::error::{HostError, Result};
use crate::qpair::{Completed, Data, QueuePair};
use crate::types::Cid;

/// `(byte offset in the buffer, length)` of each piece.
fn pieces(len: usize, piece: usize) -> Vec<(usize, usize)> {
    (0..len)
        .step_by(piece)
        .map(|s| (s, piece.min(len - s)))
        .collect()
}

/// Submits every piece with up to the queue depth outstanding and hands each completion (with
/// its piece index) to `complete`.
fn run(
    qp: &mut QueuePair,
    n: usize,
    timeout: Duration,
    mut submit: impl FnMut(&mut QueuePair, usize) -> Result<Cid>,
    mut complete: impl FnMut(&QueuePair, usize, &Completed) -> Result<()>,
) -> Result<()> {
    let depth = usize::from(qp.depth()).saturating_sub(1).max(1);
    let mut next = 0;
    let mut inflight: HashMap<u16, usize> = HashMap::new();
    let mut done = Vec::new();
    let deadline = Instant::now() + timeout;
    while next < n || !inflight.is_empty() {
        while next < n && inflight.len() < depth {
            let cid = submit(qp, next)?;
            inflight.insert(cid.0, next);
            next += 1;
        }
        done.clear();
        if qp.poll(&mut done)? == 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(HostError::Timeout {
                    what: "pipelined I/O completions",
                    after: timeout,
                });
            }
            qp.wait(left)?;
            continue;
        }
        for c in &done {
            if let Some(i) = inflight.remove(&c.cid.0) {
                c.check()?;
                complete(qp, i, c)?;
            }
        }
    }
    Ok(())
}

impl Controller {
    fn piece_cmd(
        nsid: u32,
        lba: u64,
        bs: usize,
        start: usize,
        len: usize,
        op: u8,
    ) -> Result<ferrite_nvme::Command> {
        let blocks = len / bs;
        let nlb = blocks
            .checked_sub(1)
            .and_then(|n| u16::try_from(n).ok())
            .ok_or_else(|| {
                HostError::InvalidArgument(format!("{blocks} blocks: must be 1..=65536"))
            })?;
        Ok(ReadWrite {
            nsid,
            slba: lba + (start / bs) as u64,
            nlb,
            ..ReadWrite::default()
        }
        .to_command(op, 0))
    }

    fn check_pieces(&mut self, nsid: u32, len: usize, piece: usize) -> Result<usize> {
        self.maybe_keep_alive()?;
        let bs = self.block_size(nsid)? as usize;
        if len == 0 || len % bs != 0 || piece < bs || piece % bs != 0 {
            return Err(HostError::InvalidArgument(format!(
                "I/O of {len} bytes in pieces of {piece}: both must be whole {bs} byte blocks"
            )));
        }
        Ok(bs)
    }

    /// Runs `len` bytes at `lba` as `op` commands of at most `piece` bytes; `data` gives each
    /// piece's transfer, `complete` sees each completion with its `(offset, length)`.
    #[allow(clippy::too_many_arguments)]
    fn pipelined<'d>(
        &mut self,
        qid: u16,
        nsid: u32,
        lba: u64,
        len: usize,
        piece: usize,
        op: u8,
        data: impl Fn(usize, usize) -> Data<'d>,
        mut complete: impl FnMut(&QueuePair, (usize, usize), &Completed) -> Result<()>,
    ) -> Result<()> {
        let bs = self.check_pieces(nsid, len, piece)?;
        let timeout = self.opts.timeout;
        let ps = pieces(len, piece);
        let qp = &mut self.io_mut(qid)?.qp;
        run(
            qp,
            ps.len(),
            timeout,
            |qp, i| {
                let (start, n) = ps[i];
                let cmd = Self::piece_cmd(nsid, lba, bs, start, n, op)?;
                qp.submit(&cmd, data(start, n))
            },
            |qp, i, c| complete(qp, ps[i], c),
        )
    }

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
        let len = buf.len();
        self.pipelined(
            qid,
            nsid,
            lba,
            len,
            piece,
            opcode::io::READ,
            |_, n| Data::Read(n as u32),
            |qp, (start, n), c| {
                let data = qp.data(c.cid);
                if data.len() != n {
                    return Err(HostError::InvalidArgument(format!(
                        "read of {n} bytes returned {}",
                        data.len()
                    )));
                }
                buf[start..start + n].copy_from_slice(data);
                Ok(())
            },
        )
    }

    /// Writes `data` at `lba` of `nsid` as commands of at most `piece` bytes, with up to the
    /// queue's depth of them outstanding at once.
    pub fn write_pipelined(
        &mut self,
        qid: u16,
        nsid: u32,
        lba: u64,
        data: &[u8],
        piece: usize,
    ) -> Result<()> {
        self.pipelined(
            qid,
            nsid,
            lba,
            data.len(),
            piece,
            opcode::io::WRITE,
            |start, n| Data::Write(&data[start..start + n]),
            |_, _, _| Ok(()),
        )
    }
}
