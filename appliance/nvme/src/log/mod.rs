//! Log pages: identifiers, structures and a helper that serves any
//! (offset, length) window of a log built into a byte buffer.

mod ana;
mod discovery;
mod health;

pub use ana::*;
pub use discovery::*;
pub use health::*;

use crate::error::{NvmeError, Result};

/// Error Information.
pub const LID_ERROR: u8 = 0x01;
/// SMART / Health Information.
pub const LID_SMART: u8 = 0x02;
/// Firmware Slot Information.
pub const LID_FIRMWARE_SLOT: u8 = 0x03;
/// Changed Namespace List.
pub const LID_CHANGED_NAMESPACES: u8 = 0x04;
/// Commands Supported and Effects.
pub const LID_COMMANDS_SUPPORTED: u8 = 0x05;
/// Asymmetric Namespace Access.
pub const LID_ANA: u8 = 0x0C;
/// Discovery (discovery controllers only).
pub const LID_DISCOVERY: u8 = 0x70;

/// Copies the window of the log `src` starting at byte `offset` into
/// `dst`; bytes past the end of the log read as zero. An offset beyond the
/// log or not dword aligned is an error (nvmf answers Invalid Field).
pub fn copy_log_window(src: &[u8], offset: u64, dst: &mut [u8]) -> Result<()> {
    if offset % 4 != 0 {
        return Err(NvmeError::InvalidField {
            field: "log page offset alignment",
            value: offset,
        });
    }
    let start = usize::try_from(offset)
        .ok()
        .filter(|&o| o <= src.len())
        .ok_or(NvmeError::LogOffsetOutOfRange {
            offset,
            len: src.len(),
        })?;
    let avail = &src[start..];
    let n = avail.len().min(dst.len());
    dst[..n].copy_from_slice(&avail[..n]);
    dst[n..].fill(0);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn windows() {
        let log: Vec<u8> = (0u8..16).collect();
        let mut out = [0xFFu8; 8];
        copy_log_window(&log, 4, &mut out).expect("in range");
        assert_eq!(out, [4, 5, 6, 7, 8, 9, 10, 11]);
        copy_log_window(&log, 12, &mut out).expect("in range");
        assert_eq!(out, [12, 13, 14, 15, 0, 0, 0, 0]);
        copy_log_window(&log, 16, &mut out).expect("at end");
        assert_eq!(out, [0; 8]);
        assert!(copy_log_window(&log, 20, &mut out).is_err());
        assert!(copy_log_window(&log, 2, &mut out).is_err());
        assert!(copy_log_window(&log, u64::MAX - 3, &mut out).is_err());
    }

    proptest! {
        #[test]
        fn window_matches_oracle(log in proptest::collection::vec(any::<u8>(), 0..300),
                                 offset in 0u64..400, len in 0usize..300) {
            let mut out = vec![0xAA; len];
            let r = copy_log_window(&log, offset, &mut out);
            if offset % 4 != 0 || offset as usize > log.len() {
                prop_assert!(r.is_err());
            } else {
                prop_assert!(r.is_ok());
                for (i, b) in out.iter().enumerate() {
                    let want = log.get(offset as usize + i).copied().unwrap_or(0);
                    prop_assert_eq!(*b, want);
                }
            }
        }
    }
}
