//! NVMe Qualified Names.

use crate::error::{NvmeError, Result};

/// The well-known discovery subsystem NQN.
pub const DISCOVERY_NQN: &str = "nqn.2014-08.org.nvmexpress.discovery";

/// Maximum NQN length in bytes (the 256-byte fields hold it NUL-terminated).
pub const NQN_MAX_LEN: usize = 223;

/// Prefix of UUID-based NQNs.
pub const UUID_NQN_PREFIX: &str = "nqn.2014-08.org.nvmexpress:uuid:";

fn err(reason: &'static str) -> NvmeError {
    NvmeError::InvalidNqn { reason }
}

fn is_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, &c)| match i {
            8 | 13 | 18 | 23 => c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// Validates an NQN: at most 223 bytes, either the UUID form
/// `nqn.2014-08.org.nvmexpress:uuid:<8-4-4-4-12 hex>` or
/// `nqn.yyyy-mm.<reverse domain>[:<anything>]` (the discovery NQN included).
pub fn validate_nqn(nqn: &str) -> Result<()> {
    if nqn.len() > NQN_MAX_LEN {
        return Err(err("longer than 223 bytes"));
    }
    if nqn.contains('\0') {
        return Err(err("contains NUL"));
    }
    if let Some(uuid) = nqn.strip_prefix(UUID_NQN_PREFIX) {
        return if is_uuid(uuid) {
            Ok(())
        } else {
            Err(err("malformed UUID"))
        };
    }
    let rest = nqn.strip_prefix("nqn.").ok_or(err("missing nqn. prefix"))?;
    let date = rest.get(..7).ok_or(err("missing yyyy-mm date"))?;
    let d = date.as_bytes();
    let date_ok = d[..4].iter().all(u8::is_ascii_digit)
        && d[4] == b'-'
        && d[5..].iter().all(u8::is_ascii_digit)
        && matches!(
            &date[5..],
            "01" | "02" | "03" | "04" | "05" | "06" | "07" | "08" | "09" | "10" | "11" | "12"
        );
    if !date_ok {
        return Err(err("malformed yyyy-mm date"));
    }
    let after = &rest[7..];
    let domain_and_rest = after.strip_prefix('.').ok_or(err("missing . after date"))?;
    let domain = domain_and_rest.split(':').next().unwrap_or_default();
    if domain.is_empty()
        || domain.starts_with('.')
        || domain.ends_with('.')
        || domain.contains("..")
        || !domain
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'.')
    {
        return Err(err("malformed reverse domain name"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_common_forms() {
        validate_nqn(DISCOVERY_NQN).expect("discovery nqn");
        validate_nqn("nqn.2016-06.io.spdk:cnode1").expect("spdk style");
        validate_nqn("nqn.2014-08.org.nvmexpress:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6")
            .expect("uuid form");
        validate_nqn("nqn.2024-01.com.example:ferrite:vol-1").expect("colons after");
    }

    #[test]
    fn rejects_bad_forms() {
        for bad in [
            "",
            "nqn.",
            "iqn.2016-06.io.spdk:x",
            "nqn.2016-13.io.spdk:x",
            "nqn.2016-06io.spdk",
            "nqn.2016-06.:x",
            "nqn.2016-06.io..spdk",
            "nqn.2014-08.org.nvmexpress:uuid:not-a-uuid",
            "nqn.2016-06.io.sp dk",
        ] {
            assert!(validate_nqn(bad).is_err(), "{bad}");
        }
        let long = format!("nqn.2016-06.io.spdk:{}", "a".repeat(210));
        assert!(validate_nqn(&long).is_err());
    }

    proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,300}") {
            let _ = validate_nqn(&s);
        }
    }
}
