//! Per-command-identifier slots: the cid allocator and each command's
//! data buffer, kept across commands so steady-state I/O does not allocate.

use std::collections::VecDeque;

/// Which way a command's data moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dir {
    /// No data.
    None,
    /// Host to controller, data held for R2Ts (not in-capsule).
    ToControllerR2t,
    /// Host to controller, data sent in-capsule.
    ToControllerInCapsule,
    /// Controller to host.
    FromController,
}

/// One command identifier's state.
#[derive(Debug)]
pub(crate) struct Slot {
    /// Outstanding on the wire.
    pub in_flight: bool,
    pub dir: Dir,
    /// Transfer length in bytes.
    pub len: u32,
    /// C2H bytes received so far (next expected DATAO).
    pub received: u32,
    /// R2T bytes requested so far.
    pub r2t_requested: u32,
    /// A C2HData PDU with LAST has been received.
    pub c2h_last: bool,
    /// A C2H data digest failed.
    pub data_digest_error: bool,
    /// Data: write data kept for R2Ts, or received read data.
    pub buf: Vec<u8>,
}

impl Slot {
    fn new() -> Slot {
        Slot {
            in_flight: false,
            dir: Dir::None,
            len: 0,
            received: 0,
            r2t_requested: 0,
            c2h_last: false,
            data_digest_error: false,
            buf: Vec::new(),
        }
    }

    /// Prepares for a new command with `len` bytes moving in `dir`.
    pub fn start(&mut self, dir: Dir, len: u32) {
        self.begin(dir, len);
        let need = len as usize;
        if matches!(dir, Dir::FromController | Dir::ToControllerR2t) && self.buf.len() < need {
            // Grows once to the largest transfer seen; reused afterwards.
            self.buf.resize(need, 0);
        }
    }

    /// As [`Slot::start`] without the data buffer (a transport that keeps data elsewhere).
    pub fn begin(&mut self, dir: Dir, len: u32) {
        self.in_flight = true;
        self.dir = dir;
        self.len = len;
        self.received = 0;
        self.r2t_requested = 0;
        self.c2h_last = false;
        self.data_digest_error = false;
    }
}

/// The slots of a queue and the FIFO of free identifiers.
///
/// FIFO reuse keeps a just-freed cid idle as long as possible, so a read's
/// data stays readable after its completion and a stale cid from the
/// target is caught as "not outstanding".
#[derive(Debug)]
pub(crate) struct Slots {
    slots: Vec<Slot>,
    free: VecDeque<u16>,
}

impl Slots {
    /// `depth` identifiers, 0..depth.
    pub fn new(depth: u16) -> Slots {
        Slots {
            slots: (0..depth).map(|_| Slot::new()).collect(),
            free: (0..depth).collect(),
        }
    }

    pub fn depth(&self) -> u16 {
        self.slots.len() as u16
    }

    pub fn outstanding(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    pub fn alloc(&mut self) -> Option<u16> {
        self.free.pop_front()
    }

    /// Gives back an identifier taken by [`Slots::alloc`] that was never sent.
    pub fn unalloc(&mut self, cid: u16) {
        if let Some(s) = self.slots.get_mut(usize::from(cid)) {
            s.in_flight = false;
        }
        self.free.push_front(cid);
    }

    pub fn free(&mut self, cid: u16) {
        if let Some(s) = self.slots.get_mut(usize::from(cid)) {
            if s.in_flight {
                s.in_flight = false;
                self.free.push_back(cid);
            }
        }
    }

    pub fn get(&self, cid: u16) -> Option<&Slot> {
        self.slots.get(usize::from(cid))
    }

    pub fn get_mut(&mut self, cid: u16) -> Option<&mut Slot> {
        self.slots.get_mut(usize::from(cid))
    }

    /// The slot of an outstanding command.
    pub fn in_flight_mut(&mut self, cid: u16) -> Option<&mut Slot> {
        self.slots.get_mut(usize::from(cid)).filter(|s| s.in_flight)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifo_reuse_and_bounds() {
        let mut s = Slots::new(3);
        let a = s.alloc().expect("free");
        let b = s.alloc().expect("free");
        let c = s.alloc().expect("free");
        assert_eq!((a, b, c), (0, 1, 2));
        assert!(s.alloc().is_none());
        for cid in [a, b, c] {
            s.get_mut(cid).expect("slot").start(Dir::None, 0);
        }
        assert_eq!(s.outstanding(), 3);
        s.free(b);
        s.free(b); // double free is ignored
        s.free(a);
        assert_eq!(s.outstanding(), 1);
        assert_eq!(s.alloc(), Some(b));
        assert_eq!(s.alloc(), Some(a));
        assert!(s.in_flight_mut(c).is_some());
        assert!(s.in_flight_mut(7).is_none());
    }

    #[test]
    fn buffers_are_kept() {
        let mut s = Slots::new(1);
        let cid = s.alloc().expect("free");
        let slot = s.get_mut(cid).expect("slot");
        slot.start(Dir::FromController, 8192);
        let ptr = slot.buf.as_ptr();
        s.free(cid);
        let cid = s.alloc().expect("free");
        let slot = s.get_mut(cid).expect("slot");
        slot.start(Dir::FromController, 4096);
        assert_eq!(slot.buf.as_ptr(), ptr);
        assert!(slot.buf.len() >= 4096);
    }
}
