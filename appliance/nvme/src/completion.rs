//! The 16-byte completion queue entry (CQE).

use core::mem::{offset_of, size_of};
use zerocopy::little_endian::{U16, U32};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::error::{NvmeError, Result};
use crate::status::Status;

/// A completion queue entry.
///
/// `status` is the wire half-word: `(Status << 1) | phase`. Over fabrics the
/// phase bit is unused and left zero.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    FromBytes,
    IntoBytes,
    KnownLayout,
    Immutable,
    Unaligned,
)]
#[repr(C)]
pub struct Completion {
    /// Command specific dword 0.
    pub dw0: U32,
    /// Command specific dword 1.
    pub dw1: U32,
    /// Submission queue head pointer.
    pub sqhd: U16,
    /// Submission queue identifier.
    pub sqid: U16,
    /// Command identifier.
    pub cid: U16,
    /// Status field with the phase bit in bit 0.
    pub status: U16,
}

const _: () = assert!(size_of::<Completion>() == 16);
const _: () = assert!(offset_of!(Completion, sqhd) == 8);
const _: () = assert!(offset_of!(Completion, cid) == 12);
const _: () = assert!(offset_of!(Completion, status) == 14);

impl Completion {
    /// Size of a CQE in bytes.
    pub const SIZE: usize = 16;

    /// A completion for `cid` with `status` (phase 0, results zero).
    pub fn new(cid: u16, status: Status) -> Completion {
        Completion {
            dw0: U32::new(0),
            dw1: U32::new(0),
            sqhd: U16::new(0),
            sqid: U16::new(0),
            cid: U16::new(cid),
            status: U16::new(status.to_wire(false)),
        }
    }

    /// Sets dword 0 (the command result).
    pub fn with_result(mut self, dw0: u32) -> Completion {
        self.dw0 = U32::new(dw0);
        self
    }

    /// Sets a 64-bit result across dword 0 (low) and dword 1 (high), as
    /// Property Get of an 8-byte property returns it.
    pub fn with_result64(mut self, value: u64) -> Completion {
        self.dw0 = U32::new(value as u32);
        self.dw1 = U32::new((value >> 32) as u32);
        self
    }

    /// Sets the SQ head pointer and SQ identifier.
    pub fn with_sq(mut self, sqhd: u16, sqid: u16) -> Completion {
        self.sqhd = U16::new(sqhd);
        self.sqid = U16::new(sqid);
        self
    }

    /// Decodes a CQE from the first 16 bytes of `bytes`.
    pub fn parse(bytes: &[u8]) -> Result<Completion> {
        Completion::read_from_prefix(bytes)
            .map(|(c, _)| c)
            .map_err(|_| NvmeError::TooShort {
                what: "completion",
                needed: Self::SIZE,
                got: bytes.len(),
            })
    }

    /// The status without the phase bit.
    pub fn status(&self) -> Status {
        Status::from_wire(self.status.get())
    }

    /// The phase tag.
    pub fn phase(&self) -> bool {
        self.status.get() & 1 != 0
    }

    /// Command identifier.
    pub fn cid(&self) -> u16 {
        self.cid.get()
    }

    /// Dword 0.
    pub fn result(&self) -> u32 {
        self.dw0.get()
    }

    /// Dwords 0 and 1 as one 64-bit value.
    pub fn result64(&self) -> u64 {
        u64::from(self.dw0.get()) | (u64::from(self.dw1.get()) << 32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn encodes_status_shifted() {
        let c = Completion::new(0x1234, Status::INVALID_FIELD.with_dnr()).with_result(7);
        let b = c.as_bytes();
        assert_eq!(&b[0..4], &[7, 0, 0, 0]);
        assert_eq!(&b[12..14], &[0x34, 0x12]);
        // (0x4002 << 1) = 0x8004
        assert_eq!(&b[14..16], &[0x04, 0x80]);
        assert_eq!(c.status(), Status::INVALID_FIELD.with_dnr());
        assert!(!c.phase());
    }

    proptest! {
        #[test]
        fn round_trip(bytes in proptest::collection::vec(any::<u8>(), 16)) {
            let c = Completion::parse(&bytes).expect("16 bytes");
            prop_assert_eq!(c.as_bytes(), &bytes[..]);
            let again = Completion::new(c.cid(), c.status()).with_result64(c.result64());
            prop_assert_eq!(again.status(), c.status());
            prop_assert_eq!(again.result64(), c.result64());
        }
    }
}
