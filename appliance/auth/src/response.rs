//! The response values of DH-HMAC-CHAP (NVMe Base 2.0, 8.13.5.4):
//!
//! - R1 = HMAC(Kh, C1 || S1 || T || SC_C || "HostHost" || NQNh || 00h || NQNc)
//! - R2 = HMAC(Kc, C2 || S2 || T || 00h || "Controller" || NQNc || 00h || NQNh)
//!
//! with S and T little-endian, Kh/Kc the transformed host/controller secrets, and, when a DH
//! group is used, each challenge C replaced by the augmented HMAC(H(g^xy mod p), C).

use crate::hash::HashId;

/// HMAC(H(session key), challenge).
pub fn augmented_challenge(hash: HashId, session_key: &[u8], challenge: &[u8]) -> Vec<u8> {
    hash.hmac(&hash.digest(session_key), &[challenge])
}

/// R1, the host's response to the controller's challenge.
#[allow(clippy::too_many_arguments)]
pub fn host_response(
    hash: HashId,
    key: &[u8],
    challenge: &[u8],
    seqnum: u32,
    tid: u16,
    sc_c: u8,
    hostnqn: &str,
    subnqn: &str,
) -> Vec<u8> {
    hash.hmac(
        key,
        &[
            challenge,
            &seqnum.to_le_bytes(),
            &tid.to_le_bytes(),
            &[sc_c],
            b"HostHost",
            hostnqn.as_bytes(),
            &[0],
            subnqn.as_bytes(),
        ],
    )
}

/// R2, the controller's response to the host's challenge.
pub fn ctrl_response(
    hash: HashId,
    key: &[u8],
    challenge: &[u8],
    seqnum: u32,
    tid: u16,
    hostnqn: &str,
    subnqn: &str,
) -> Vec<u8> {
    hash.hmac(
        key,
        &[
            challenge,
            &seqnum.to_le_bytes(),
            &tid.to_le_bytes(),
            &[0],
            b"Controller",
            subnqn.as_bytes(),
            &[0],
            hostnqn.as_bytes(),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// R1 spelled out byte by byte against the spec's concatenation, for a fixed input.
    #[test]
    fn host_response_concatenation() {
        let key = [0x11u8; 32];
        let c1 = [0x22u8; 32];
        let mut msg = c1.to_vec();
        msg.extend_from_slice(&[0x78, 0x56, 0x34, 0x12]); // S1 = 0x12345678
        msg.extend_from_slice(&[0x02, 0x01]); // T = 0x0102
        msg.push(0); // SC_C
        msg.extend_from_slice(b"HostHostnqn.h\0nqn.c");
        assert_eq!(
            host_response(
                HashId::Sha256,
                &key,
                &c1,
                0x1234_5678,
                0x0102,
                0,
                "nqn.h",
                "nqn.c"
            ),
            HashId::Sha256.hmac(&key, &[&msg])
        );
    }

    #[test]
    fn ctrl_response_concatenation() {
        let key = [0x33u8; 48];
        let c2 = [0x44u8; 48];
        let mut msg = c2.to_vec();
        msg.extend_from_slice(&[1, 0, 0, 0, 9, 0, 0]);
        msg.extend_from_slice(b"Controllernqn.c\0nqn.h");
        let r = ctrl_response(HashId::Sha384, &key, &c2, 1, 9, "nqn.h", "nqn.c");
        assert_eq!(r, HashId::Sha384.hmac(&key, &[&msg]));
        assert_eq!(r.len(), 48);
    }

    #[test]
    fn augmented_challenge_is_hmac_keyed_by_hashed_session_key() {
        let skey = vec![5u8; 256];
        let c = [6u8; 64];
        let a = augmented_challenge(HashId::Sha512, &skey, &c);
        assert_eq!(a, HashId::Sha512.hmac(&HashId::Sha512.digest(&skey), &[&c]));
        assert_ne!(a, augmented_challenge(HashId::Sha512, &[5u8; 255], &c));
    }
}
