//! A request's way through the channel: start (fast path or pieces), the per-piece state
//! machine (`step`), zeroing pieces, and member completions.

use super::*;

impl Core {
    pub(super) fn start(&mut self, members: &mut [Box<dyn IoChannel>], s: u32) {
        let kind = self.slots[s as usize].io.as_ref().expect("busy slot").kind;
        match kind {
            IoKind::Read { lba, blocks } => {
                self.start_rw(members, s, lba, u64::from(blocks), false)
            }
            IoKind::Write { lba, blocks, .. } => {
                self.start_rw(members, s, lba, u64::from(blocks), true)
            }
            IoKind::Flush => {
                let n = members.len();
                self.slots[s as usize].pending = n as u32;
                self.slots[s as usize].stage = Stage::Multi;
                for m in 0..n {
                    self.issue(
                        members,
                        m,
                        BdevIo::new(sub_tag(s, m as u64), IoKind::Flush, None),
                    );
                }
            }
            _ => self.step(members, s),
        }
    }

    pub(super) fn start_rw(
        &mut self,
        members: &mut [Box<dyn IoChannel>],
        s: u32,
        lba: u64,
        blocks: u64,
        write: bool,
    ) {
        let p = self.enter();
        let table = self.table();
        if self.vol.deleted.load(Ordering::Acquire) {
            self.leave(p);
            return self.finish(s, Err(BdevError::NotReady("volume deleted")));
        }
        if lba + blocks > table.num_blocks {
            self.leave(p);
            let e = BdevError::OutOfRange {
                lba,
                blocks,
                num_blocks: table.num_blocks,
            };
            return self.finish(s, Err(e));
        }
        let cb = self.cb;
        let (first, last) = (lba / cb, (lba + blocks - 1) / cb);
        let mut need: Option<u64> = None;
        for vc in first..=last {
            match table.get(vc).state() {
                EntryState::Error(code) => {
                    self.leave(p);
                    return self.finish(s, Err(entry_error(code)));
                }
                EntryState::Unallocated | EntryState::Shared(_) if write => {
                    if need.is_none() {
                        need = Some(vc);
                    } else if !self.outstanding.contains(&vc)
                        && self.send_fault(vc, FaultKind::Write, vc)
                    {
                        self.outstanding.push(vc);
                    }
                }
                _ => {}
            }
        }
        if let Some(vc) = need {
            self.leave(p);
            return self.fault_write(s, vc);
        }
        self.slots[s as usize].parity = Some(p);
        if first == last {
            let off = lba - first * cb;
            match table.get(first).state() {
                EntryState::Allocated(pc) | EntryState::Shared(pc) => {
                    let (m, mlba) = self.phys(pc, off);
                    let slot = &mut self.slots[s as usize];
                    let io = slot.io.as_mut().expect("busy slot");
                    let kind = match io.kind {
                        IoKind::Write { blocks, fua, .. } => IoKind::Write {
                            lba: mlba,
                            blocks,
                            fua,
                        },
                        _ => IoKind::Read {
                            lba: mlba,
                            blocks: blocks as u32,
                        },
                    };
                    let buf = io.buf.take();
                    slot.pending = 1;
                    slot.stage = Stage::Single;
                    self.issue(members, m, BdevIo::new(sub_tag(s, SINGLE), kind, buf));
                }
                _ => {
                    // Unallocated read: zeroes, no backend I/O.
                    let slot = &mut self.slots[s as usize];
                    let io = slot.io.as_mut().expect("busy slot");
                    if let Some(b) = io.buf.as_mut() {
                        let n = (blocks * self.bs) as usize;
                        b.spare_mut()[..n].fill(0);
                    }
                    bump(&self.me.counters.zero_reads, 1);
                    self.finish(s, Ok(()));
                }
            }
            return;
        }
        // Several clusters: one temporary buffer per mapped piece, recycled through the
        // channel's spare list (no allocation once it holds enough). Pieces are counted first
        // so that `pending` is right before any completes.
        self.slots[s as usize].stage = Stage::Multi;
        let mapped = (first..=last)
            .filter(|&vc| {
                matches!(
                    table.get(vc).state(),
                    EntryState::Allocated(_) | EntryState::Shared(_)
                )
            })
            .count();
        self.slots[s as usize].pending = mapped as u32;
        let mut cur = lba;
        let mut piece = 0u64;
        while cur < lba + blocks {
            if self.slots[s as usize].io.is_none() {
                return; // finished early: the last mapped piece failed at submission
            }
            let vc = cur / cb;
            let off = cur - vc * cb;
            let n = (cb - off).min(lba + blocks - cur);
            let bytes = (n * self.bs) as usize;
            let at = ((cur - lba) * self.bs) as usize;
            let state = table.get(vc).state();
            let sub = match state {
                EntryState::Allocated(pc) | EntryState::Shared(pc) => {
                    let (m, mlba) = self.vol.pool.locate(pc);
                    let mut tmp = self.take_temp(bytes);
                    let slot = &mut self.slots[s as usize];
                    let io = slot.io.as_mut().expect("busy slot");
                    let kind = if let IoKind::Write { fua, .. } = io.kind {
                        tmp.set_len(bytes);
                        let src = io.buf.as_ref().expect("checked at submit").as_slice();
                        tmp.as_mut_slice().copy_from_slice(&src[at..at + bytes]);
                        IoKind::Write {
                            lba: mlba + off,
                            blocks: n as u32,
                            fua,
                        }
                    } else {
                        IoKind::Read {
                            lba: mlba + off,
                            blocks: n as u32,
                        }
                    };
                    slot.temps.push((at as u64, None));
                    Some((m, BdevIo::new(sub_tag(s, piece), kind, Some(tmp))))
                }
                _ => {
                    let slot = &mut self.slots[s as usize];
                    let io = slot.io.as_mut().expect("busy slot");
                    let b = io.buf.as_mut().expect("checked at submit");
                    b.spare_mut()[at..at + bytes].fill(0);
                    slot.temps.push((at as u64, None));
                    None
                }
            };
            if let Some((m, sub)) = sub {
                self.issue(members, m, sub);
            }
            piece += 1;
            cur += n;
        }
        if mapped == 0 {
            bump(&self.me.counters.zero_reads, 1);
            self.finish(s, Ok(()));
        }
    }

    /// A temporary buffer of at least `bytes` from the spare list (allocated only when none
    /// fits).
    fn take_temp(&mut self, bytes: usize) -> IoBuf {
        match self.spare.iter().position(|b| b.capacity() >= bytes) {
            Some(i) => {
                let mut b = self.spare.swap_remove(i);
                b.set_len(0);
                b
            }
            None => IoBuf::new(bytes),
        }
    }

    /// One piece of an Unmap, WriteZeroes or Copy (pieces that need no I/O are skipped in a
    /// loop).
    pub(super) fn step(&mut self, members: &mut [Box<dyn IoChannel>], s: u32) {
        loop {
            let slot = &self.slots[s as usize];
            let kind = slot.io.as_ref().expect("busy slot").kind;
            let (cursor, stage) = (slot.cursor, slot.stage);
            let Some((_, blocks)) = kind.range() else {
                return self.finish(s, Ok(()));
            };
            if cursor >= blocks {
                return self.finish(s, Ok(()));
            }
            let p = self.enter();
            let table = self.table();
            if self.vol.deleted.load(Ordering::Acquire) {
                self.leave(p);
                return self.finish(s, Err(BdevError::NotReady("volume deleted")));
            }
            let ranges_ok = std::iter::once(kind.range())
                .chain([kind.source_range()])
                .flatten()
                .all(|(l, b)| l + b <= table.num_blocks);
            if !ranges_ok {
                self.leave(p);
                let (lba, blocks) = kind.range().unwrap_or((0, 0));
                return self.finish(
                    s,
                    Err(BdevError::OutOfRange {
                        lba,
                        blocks,
                        num_blocks: table.num_blocks,
                    }),
                );
            }
            let piece = Piece {
                s,
                p,
                cursor,
                blocks,
            };
            let next = match kind {
                IoKind::WriteZeroes { lba, .. } | IoKind::Unmap { lba, .. } => {
                    self.step_zero(members, &table, piece, lba)
                }
                IoKind::Copy {
                    src_lba, dst_lba, ..
                } => self.step_copy(members, &table, piece, (src_lba, dst_lba), stage),
                _ => {
                    self.leave(p);
                    self.finish(s, Ok(()));
                    Next::Wait
                }
            };
            if let Next::Wait = next {
                return;
            }
        }
    }

    /// A WriteZeroes/Unmap piece: skipped (unallocated), in metadata (whole cluster), after a
    /// copy-on-write (shared), or zeroed on the member.
    fn step_zero(
        &mut self,
        members: &mut [Box<dyn IoChannel>],
        table: &MapTable,
        piece: Piece,
        lba: u64,
    ) -> Next {
        let Piece {
            s,
            p,
            cursor,
            blocks,
        } = piece;
        let cb = self.cb;
        let cur = lba + cursor;
        let vc = cur / cb;
        let off = cur - vc * cb;
        let len = (cb - off).min(blocks - cursor);
        let whole = off == 0 && (len == cb || cur + len == table.num_blocks);
        match table.get(vc).state() {
            EntryState::Error(c) => {
                self.leave(p);
                self.finish(s, Err(entry_error(c)));
            }
            EntryState::Unallocated => {
                self.leave(p);
                self.slots[s as usize].cursor += len;
                return Next::Again;
            }
            _ if whole => {
                self.leave(p);
                self.fault_meta(s, vc, FaultKind::Unmap);
            }
            EntryState::Shared(_) => {
                self.leave(p);
                self.fault_write(s, vc);
            }
            EntryState::Allocated(pc) => {
                let (m, mlba) = self.phys(pc, off);
                self.zero_piece(members, s, p, m, mlba, len);
            }
        }
        Next::Wait
    }

    /// A Copy piece: the write half of an emulated copy, a whole-cluster copy in metadata, a
    /// skip, zeroing, a copy-on-write of the destination, or the member's Copy / a read.
    fn step_copy(
        &mut self,
        members: &mut [Box<dyn IoChannel>],
        table: &MapTable,
        piece: Piece,
        (src_lba, dst_lba): (u64, u64),
        stage: Stage,
    ) -> Next {
        let Piece {
            s,
            p,
            cursor,
            blocks,
        } = piece;
        let cb = self.cb;
        let (sc, dc) = (src_lba + cursor, dst_lba + cursor);
        let (svc, dvc) = (sc / cb, dc / cb);
        let (soff, doff) = (sc - svc * cb, dc - dvc * cb);
        let len = (cb - soff).min(cb - doff).min(blocks - cursor);
        let (es, ed) = (table.get(svc).state(), table.get(dvc).state());
        if let Stage::CopyWrite(n) = stage {
            match ed {
                EntryState::Allocated(pd) => {
                    let (m, mlba) = self.phys(pd, doff);
                    let slot = &mut self.slots[s as usize];
                    let buf = slot.stage_buf.take();
                    slot.parity = Some(p);
                    slot.pending = 1;
                    slot.stage = Stage::Piece(n);
                    let k = IoKind::Write {
                        lba: mlba,
                        blocks: n as u32,
                        fua: false,
                    };
                    self.issue(members, m, BdevIo::new(sub_tag(s, 0), k, buf));
                }
                EntryState::Error(c) => {
                    self.leave(p);
                    self.finish(s, Err(entry_error(c)));
                }
                _ => {
                    self.leave(p);
                    self.fault_write(s, dvc);
                }
            }
            return Next::Wait;
        }
        if let (EntryState::Error(c), _) | (_, EntryState::Error(c)) = (es, ed) {
            self.leave(p);
            self.finish(s, Err(entry_error(c)));
            return Next::Wait;
        }
        if soff == 0 && doff == 0 && len == cb && svc != dvc {
            self.leave(p);
            self.fault_meta(s, dvc, FaultKind::CopyFrom(svc));
            return Next::Wait;
        }
        match (es, ed) {
            (EntryState::Unallocated, EntryState::Unallocated) => {
                self.leave(p);
                self.slots[s as usize].cursor += len;
                return Next::Again;
            }
            (EntryState::Unallocated, EntryState::Allocated(pd)) => {
                let (m, mlba) = self.phys(pd, doff);
                self.zero_piece(members, s, p, m, mlba, len);
            }
            (_, EntryState::Unallocated | EntryState::Shared(_)) => {
                self.leave(p);
                self.fault_write(s, dvc);
            }
            (EntryState::Allocated(ps) | EntryState::Shared(ps), EntryState::Allocated(pd)) => {
                let (ms, slba) = self.phys(ps, soff);
                let (md, dlba) = self.phys(pd, doff);
                let slot = &mut self.slots[s as usize];
                slot.parity = Some(p);
                slot.pending = 1;
                if ms == md && self.caps[ms].copy {
                    slot.stage = Stage::Piece(len);
                    bump(&self.me.counters.offloaded_ops, 1);
                    let k = IoKind::Copy {
                        src_lba: slba,
                        dst_lba: dlba,
                        blocks: len,
                    };
                    self.issue(members, ms, BdevIo::new(sub_tag(s, 0), k, None));
                } else {
                    slot.stage = Stage::CopyRead(len);
                    bump(&self.me.counters.emulated_ops, 1);
                    let buf = IoBuf::new((len * self.bs) as usize);
                    let k = IoKind::Read {
                        lba: slba,
                        blocks: len as u32,
                    };
                    self.issue(members, ms, BdevIo::new(sub_tag(s, 0), k, Some(buf)));
                }
            }
            _ => {
                self.leave(p);
                let e = BdevError::Io(std::io::Error::from_raw_os_error(libc::EIO));
                self.finish(s, Err(e));
            }
        }
        Next::Wait
    }

    /// Zeroes `len` blocks of an exclusive cluster: the member's WriteZeroes, else a write.
    pub(super) fn zero_piece(
        &mut self,
        members: &mut [Box<dyn IoChannel>],
        s: u32,
        p: usize,
        m: usize,
        mlba: u64,
        len: u64,
    ) {
        let slot = &mut self.slots[s as usize];
        slot.parity = Some(p);
        slot.pending = 1;
        slot.stage = Stage::Piece(len);
        let io = if self.caps[m].write_zeroes {
            bump(&self.me.counters.offloaded_ops, 1);
            BdevIo::new(
                sub_tag(s, 0),
                IoKind::WriteZeroes {
                    lba: mlba,
                    blocks: len,
                },
                None,
            )
        } else {
            bump(&self.me.counters.emulated_ops, 1);
            let bytes = (len * self.bs) as usize;
            let mut buf = IoBuf::new(bytes);
            buf.set_len(bytes);
            BdevIo::new(
                sub_tag(s, 0),
                IoKind::Write {
                    lba: mlba,
                    blocks: len as u32,
                    fua: false,
                },
                Some(buf),
            )
        };
        self.issue(members, m, io);
    }

    pub(super) fn member_done(&mut self, io: BdevIo, r: Result<(), BdevError>) {
        let s = (io.tag >> 32) as u32;
        let piece = io.tag & 0xffff_ffff;
        let bs = self.bs;
        let slot = &mut self.slots[s as usize];
        if let Err(e) = r {
            slot.error.get_or_insert(e);
        }
        match slot.stage {
            Stage::Single => {
                slot.io.as_mut().expect("busy slot").buf = io.buf;
            }
            Stage::Multi => {
                if let (Some(tmp), Some((at, _))) = (io.buf, slot.temps.get(piece as usize)) {
                    let at = *at as usize;
                    let user = slot.io.as_mut().expect("busy slot");
                    if matches!(user.kind, IoKind::Read { .. }) && slot.error.is_none() {
                        let b = user.buf.as_mut().expect("checked at submit");
                        b.spare_mut()[at..at + tmp.len()].copy_from_slice(tmp.as_slice());
                    }
                    if self.spare.len() < SPARE_TEMPS {
                        self.spare.push(tmp);
                    }
                }
            }
            Stage::CopyRead(n) => {
                slot.stage_buf = io.buf;
                slot.stage = Stage::CopyWrite(n);
            }
            Stage::Piece(n) => {
                slot.cursor += n;
                slot.stage = Stage::Idle;
            }
            Stage::Idle | Stage::CopyWrite(_) => {}
        }
        let _ = bs;
        slot.pending -= 1;
        if slot.pending > 0 {
            return;
        }
        match slot.stage {
            Stage::Single | Stage::Multi => self.finish(s, Ok(())),
            _ if slot.error.is_some() => self.finish(s, Ok(())),
            _ => {
                if let Some(p) = slot.parity.take() {
                    self.leave(p);
                }
                self.runnable.push_back(s);
            }
        }
    }
}

/// The piece a step works on: slot, epoch parity entered, blocks done and total.
#[derive(Debug, Clone, Copy)]
struct Piece {
    s: u32,
    p: usize,
    cursor: u64,
    blocks: u64,
}

/// After a step: go on with the next piece (this one needed no I/O), or wait.
enum Next {
    Again,
    Wait,
}
