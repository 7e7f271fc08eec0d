//! The Diffie-Hellman part of DH-HMAC-CHAP: the RFC 7919 FFDHE groups (DH group ids 1..5) and
//! the null group (0, no exchange).
//!
//! The primes are derived, once per process, from their definition in RFC 7919 (appendix A):
//! p = 2^b - 2^(b-64) + (floor(2^(b-130) * e) + X) * 2^64 - 1, with generator 2, where e is
//! Euler's number and X the RFC's per-group offset. The tests check the 2048-bit prime against
//! the RFC's printed digits and every prime for being a safe prime.

use std::sync::OnceLock;

use num_bigint::BigUint;
use rand::RngCore;

use crate::AuthError;

/// A DH group identifier (DHGID) as carried in AUTH_Negotiate and the Challenge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DhGroup {
    Null = 0,
    Ffdhe2048 = 1,
    Ffdhe3072 = 2,
    Ffdhe4096 = 3,
    Ffdhe6144 = 4,
    Ffdhe8192 = 5,
}

impl DhGroup {
    pub const ALL: [DhGroup; 6] = [
        DhGroup::Null,
        DhGroup::Ffdhe2048,
        DhGroup::Ffdhe3072,
        DhGroup::Ffdhe4096,
        DhGroup::Ffdhe6144,
        DhGroup::Ffdhe8192,
    ];

    pub fn from_id(id: u8) -> Option<DhGroup> {
        DhGroup::ALL.into_iter().find(|g| g.id() == id)
    }

    pub fn id(self) -> u8 {
        self as u8
    }

    /// SPDK's and nvme-cli's names: `null`, `ffdhe2048` ... `ffdhe8192`.
    pub fn name(self) -> &'static str {
        match self {
            DhGroup::Null => "null",
            DhGroup::Ffdhe2048 => "ffdhe2048",
            DhGroup::Ffdhe3072 => "ffdhe3072",
            DhGroup::Ffdhe4096 => "ffdhe4096",
            DhGroup::Ffdhe6144 => "ffdhe6144",
            DhGroup::Ffdhe8192 => "ffdhe8192",
        }
    }

    pub fn from_name(name: &str) -> Option<DhGroup> {
        let name = name.trim().to_ascii_lowercase();
        DhGroup::ALL.into_iter().find(|g| g.name() == name)
    }

    /// Modulus size in bits (0 for the null group).
    pub fn bits(self) -> usize {
        match self {
            DhGroup::Null => 0,
            DhGroup::Ffdhe2048 => 2048,
            DhGroup::Ffdhe3072 => 3072,
            DhGroup::Ffdhe4096 => 4096,
            DhGroup::Ffdhe6144 => 6144,
            DhGroup::Ffdhe8192 => 8192,
        }
    }

    /// Length of a public value and of the shared secret on the wire (DHVLEN).
    pub fn value_len(self) -> usize {
        self.bits() / 8
    }

    /// RFC 7919's X for each group.
    fn offset(self) -> u64 {
        match self {
            DhGroup::Null => 0,
            DhGroup::Ffdhe2048 => 560_316,
            DhGroup::Ffdhe3072 => 2_625_351,
            DhGroup::Ffdhe4096 => 5_736_041,
            DhGroup::Ffdhe6144 => 15_705_020,
            DhGroup::Ffdhe8192 => 10_965_728,
        }
    }

    /// Private exponent length: twice the group's security strength, above RFC 7919's
    /// minimums (225, 275, 325, 375, 400 bits).
    fn exponent_bits(self) -> usize {
        match self {
            DhGroup::Null => 0,
            DhGroup::Ffdhe2048 => 256,
            DhGroup::Ffdhe3072 => 320,
            DhGroup::Ffdhe4096 => 384,
            DhGroup::Ffdhe6144 => 448,
            DhGroup::Ffdhe8192 => 512,
        }
    }

    /// The group's prime; `None` for the null group.
    pub fn prime(self) -> Option<&'static BigUint> {
        static PRIMES: [OnceLock<BigUint>; 5] = [
            OnceLock::new(),
            OnceLock::new(),
            OnceLock::new(),
            OnceLock::new(),
            OnceLock::new(),
        ];
        let i = (self.id() as usize).checked_sub(1)?;
        Some(PRIMES[i].get_or_init(|| derive_prime(self.bits(), self.offset())))
    }
}

impl std::fmt::Display for DhGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// floor(2^bits * e), by summing 2^(bits+64)/k! in fixed point and dropping the 64 guard bits
/// (the truncation error of the sum is far below them).
fn e_fixed(bits: usize) -> BigUint {
    let mut term = BigUint::from(1u8) << (bits + 64);
    let mut sum = term.clone();
    let mut k = 1u32;
    while term.bits() > 0 {
        term /= k;
        sum += &term;
        k += 1;
    }
    sum >> 64
}

fn derive_prime(b: usize, x: u64) -> BigUint {
    let one = BigUint::from(1u8);
    let mid = (e_fixed(b - 130) + BigUint::from(x)) << 64;
    (&one << b) - (&one << (b - 64)) + mid - one
}

/// One side's ephemeral DH key: the private exponent stays here, the public value goes on the
/// wire.
pub struct DhKeyPair {
    group: DhGroup,
    private: BigUint,
    public: Vec<u8>,
}

impl std::fmt::Debug for DhKeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DhKeyPair")
            .field("group", &self.group)
            .finish_non_exhaustive()
    }
}

fn to_fixed_be(v: &BigUint, len: usize) -> Vec<u8> {
    let raw = v.to_bytes_be();
    let mut out = vec![0u8; len.saturating_sub(raw.len())];
    out.extend_from_slice(&raw);
    out
}

impl DhKeyPair {
    /// A fresh key pair; `None` for the null group.
    pub fn generate(group: DhGroup) -> Option<DhKeyPair> {
        let p = group.prime()?;
        let mut bytes = vec![0u8; group.exponent_bits() / 8];
        rand::thread_rng().fill_bytes(&mut bytes);
        // x in [2, 2^bits): never 0 or 1.
        let private = BigUint::from_bytes_be(&bytes).max(BigUint::from(2u8));
        Some(DhKeyPair::from_private(group, p, private))
    }

    fn from_private(group: DhGroup, p: &BigUint, private: BigUint) -> DhKeyPair {
        let public = BigUint::from(2u8).modpow(&private, p);
        DhKeyPair {
            group,
            public: to_fixed_be(&public, group.value_len()),
            private,
        }
    }

    pub fn group(&self) -> DhGroup {
        self.group
    }

    /// g^x mod p, big-endian, padded to the group size.
    pub fn public(&self) -> &[u8] {
        &self.public
    }

    /// (peer)^x mod p, big-endian, padded to the group size: the session key both sides hash.
    /// The peer's value must be exactly the group size and lie in (1, p-1).
    pub fn shared_secret(&self, peer: &[u8]) -> Result<Vec<u8>, AuthError> {
        let len = self.group.value_len();
        if peer.len() != len {
            return Err(AuthError::BadDhValue(format!(
                "{} bytes for {} (needs {len})",
                peer.len(),
                self.group
            )));
        }
        let p = self.group.prime().expect("a key pair has a real group");
        let y = BigUint::from_bytes_be(peer);
        let one = BigUint::from(1u8);
        if y <= one || y >= p - &one {
            return Err(AuthError::BadDhValue(format!(
                "public value outside (1, p-1) for {}",
                self.group
            )));
        }
        Ok(to_fixed_be(&y.modpow(&self.private, p), len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7919 appendix A.1 prints ffdhe2048's p in hex; its first and last 256 bits.
    #[test]
    fn ffdhe2048_matches_the_rfc_digits() {
        let p = DhGroup::Ffdhe2048.prime().expect("real group");
        let hex = format!("{p:X}");
        assert_eq!(hex.len(), 512);
        assert!(hex.starts_with(
            "FFFFFFFFFFFFFFFFADF85458A2BB4A9AAFDC5620273D3CF1D8B9C583CE2D3695A9E13641146433FB"
        ));
        assert!(hex.ends_with("886B423861285C97FFFFFFFFFFFFFFFF"));
    }

    /// Fermat test base 3 on p and on q = (p-1)/2: a wrong X (or a wrong e) would fail.
    fn assert_safe_prime(group: DhGroup) {
        let p = group.prime().expect("real group");
        let one = BigUint::from(1u8);
        let three = BigUint::from(3u8);
        assert_eq!(p.bits() as usize, group.bits());
        assert_eq!(three.modpow(&(p - &one), p), one, "{group}: p not prime");
        let q = (p - &one) >> 1;
        assert_eq!(three.modpow(&(&q - &one), &q), one, "{group}: q not prime");
    }

    #[test]
    fn small_groups_are_safe_primes() {
        assert_safe_prime(DhGroup::Ffdhe2048);
        assert_safe_prime(DhGroup::Ffdhe3072);
        assert_safe_prime(DhGroup::Ffdhe4096);
    }

    #[test]
    fn large_groups_are_safe_primes() {
        assert_safe_prime(DhGroup::Ffdhe6144);
        assert_safe_prime(DhGroup::Ffdhe8192);
    }

    #[test]
    fn both_sides_agree_and_bad_values_are_refused() {
        let a = DhKeyPair::generate(DhGroup::Ffdhe2048).expect("real group");
        let b = DhKeyPair::generate(DhGroup::Ffdhe2048).expect("real group");
        assert_eq!(a.public().len(), 256);
        let s1 = a.shared_secret(b.public()).unwrap();
        assert_eq!(s1, b.shared_secret(a.public()).unwrap());
        assert_eq!(s1.len(), 256);
        let mut one = vec![0u8; 256];
        one[255] = 1;
        assert!(a.shared_secret(&one).is_err());
        assert!(a.shared_secret(&[0xff; 256]).is_err());
        assert!(a.shared_secret(&b.public()[1..]).is_err());
        assert!(DhKeyPair::generate(DhGroup::Null).is_none());
    }

    /// A fixed exponent gives the published public value: 2^1 = 2 and 2^8 = 256.
    #[test]
    fn public_value_is_two_to_the_private() {
        let p = DhGroup::Ffdhe2048.prime().unwrap();
        let k = DhKeyPair::from_private(DhGroup::Ffdhe2048, p, BigUint::from(8u8));
        assert_eq!(&k.public()[..254], &[0u8; 254][..]);
        assert_eq!(&k.public()[254..], &[1, 0]);
    }
}
