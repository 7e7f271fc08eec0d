//! Fixed-size text fields: space-padded ASCII (SN, MN, FR) and NUL-padded
//! strings (NQNs, transport addresses).

use crate::error::{NvmeError, Result};

/// Writes `value` into `dst`, padding with `pad`. For NUL padding at least
/// one NUL must remain, so the value may use `dst.len() - 1` bytes.
fn set_padded(field: &'static str, dst: &mut [u8], value: &str, pad: u8) -> Result<()> {
    let max = if pad == 0 {
        dst.len().saturating_sub(1)
    } else {
        dst.len()
    };
    if value.len() > max {
        return Err(NvmeError::TooLong {
            field,
            len: value.len(),
            max,
        });
    }
    if pad == b' ' && !value.is_ascii() {
        return Err(NvmeError::InvalidText { field });
    }
    if pad == 0 && value.as_bytes().contains(&0) {
        return Err(NvmeError::InvalidText { field });
    }
    dst[..value.len()].copy_from_slice(value.as_bytes());
    dst[value.len()..].fill(pad);
    Ok(())
}

/// Writes an ASCII value left-justified and padded with spaces (20h).
pub fn set_space_padded(field: &'static str, dst: &mut [u8], value: &str) -> Result<()> {
    set_padded(field, dst, value, b' ')
}

/// Writes a UTF-8 value NUL-terminated and padded with NULs.
pub fn set_nul_padded(field: &'static str, dst: &mut [u8], value: &str) -> Result<()> {
    set_padded(field, dst, value, 0)
}

/// Reads a space-padded ASCII field: the bytes before the first NUL (some
/// implementations NUL-pad instead), with trailing spaces trimmed.
pub fn space_padded_str<'a>(field: &'static str, src: &'a [u8]) -> Result<&'a str> {
    let src = src.split(|&b| b == 0).next().unwrap_or_default();
    let end = src.iter().rposition(|&b| b != b' ').map_or(0, |i| i + 1);
    let s = core::str::from_utf8(&src[..end]).map_err(|_| NvmeError::InvalidText { field })?;
    if !s.is_ascii() {
        return Err(NvmeError::InvalidText { field });
    }
    Ok(s)
}

/// Reads a NUL-terminated UTF-8 field; errors if no NUL is present.
pub fn nul_terminated_str<'a>(field: &'static str, src: &'a [u8]) -> Result<&'a str> {
    let end = src
        .iter()
        .position(|&b| b == 0)
        .ok_or(NvmeError::NotTerminated { field })?;
    core::str::from_utf8(&src[..end]).map_err(|_| NvmeError::InvalidText { field })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn padding() {
        let mut sn = [0u8; 8];
        set_space_padded("sn", &mut sn, "AB12").expect("fits");
        assert_eq!(&sn, b"AB12    ");
        assert_eq!(space_padded_str("sn", &sn), Ok("AB12"));
        assert!(set_space_padded("sn", &mut sn, "123456789").is_err());
        assert!(set_space_padded("sn", &mut sn, "é").is_err());

        let mut nqn = [0xAAu8; 8];
        set_nul_padded("nqn", &mut nqn, "nqn.x").expect("fits");
        assert_eq!(&nqn, b"nqn.x\0\0\0");
        assert_eq!(nul_terminated_str("nqn", &nqn), Ok("nqn.x"));
        assert!(set_nul_padded("nqn", &mut nqn, "12345678").is_err());
        assert!(nul_terminated_str("nqn", b"abc").is_err());
        assert!(nul_terminated_str("nqn", b"\xff\0").is_err());
    }

    proptest! {
        #[test]
        fn nul_round_trip(s in "[a-z0-9.:-]{0,31}") {
            let mut buf = [0u8; 32];
            set_nul_padded("f", &mut buf, &s).expect("fits");
            prop_assert_eq!(nul_terminated_str("f", &buf).expect("terminated"), s.as_str());
        }

        #[test]
        fn space_round_trip(s in "[A-Za-z0-9]([ A-Za-z0-9]{0,30}[A-Za-z0-9])?") {
            let mut buf = [0u8; 32];
            set_space_padded("f", &mut buf, &s).expect("fits");
            prop_assert_eq!(space_padded_str("f", &buf).expect("ascii"), s.as_str());
        }

        #[test]
        fn readers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = space_padded_str("f", &bytes);
            let _ = nul_terminated_str("f", &bytes);
        }
    }
}
