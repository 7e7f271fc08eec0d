//! DH-HMAC-CHAP secrets in the `DHHC-1:XX:<base64>:` representation that `nvme gen-dhchap-key`
//! prints: XX is the hash used to transform the secret before use (00 = none), the base64 text
//! holds the 32, 48 or 64 secret bytes followed by their CRC-32 (little-endian).

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use rand::RngCore;

use crate::hash::HashId;
use crate::AuthError;

/// The text every secret starts with.
pub const PREFIX: &str = "DHHC-1:";
/// The string appended to the NQN when a secret is transformed (NVMe Base 2.0, 8.13.5.7).
const TRANSFORM_SUFFIX: &[u8] = b"NVMe-over-Fabrics";

/// A parsed secret. `Debug` never prints the key bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct DhchapKey {
    secret: Vec<u8>,
    transform: Option<HashId>,
}

impl std::fmt::Debug for DhchapKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DhchapKey")
            .field("len", &self.secret.len())
            .field("transform", &self.transform)
            .finish_non_exhaustive()
    }
}

fn bad(why: impl Into<String>) -> AuthError {
    AuthError::BadKey(why.into())
}

impl DhchapKey {
    /// Parses `DHHC-1:XX:<base64>:` (the trailing colon is optional, surrounding whitespace
    /// ignored). Errors name what is wrong: prefix, hash id, base64, length or CRC.
    pub fn parse(text: &str) -> Result<DhchapKey, AuthError> {
        let text = text.trim();
        let rest = text
            .strip_prefix(PREFIX)
            .ok_or_else(|| bad(format!("a DH-HMAC-CHAP secret starts with {PREFIX:?}")))?;
        let (hash, rest) = rest
            .split_once(':')
            .ok_or_else(|| bad("missing ':' after the hash identifier"))?;
        if hash.len() != 2 || !hash.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad(format!(
                "hash identifier {hash:?} is not two digits (00, 01, 02 or 03)"
            )));
        }
        let transform = match hash {
            "00" => None,
            _ => Some(
                hash.parse::<u8>()
                    .ok()
                    .and_then(HashId::from_id)
                    .ok_or_else(|| bad(format!("unknown hash identifier {hash}")))?,
            ),
        };
        let b64 = rest.strip_suffix(':').unwrap_or(rest);
        if b64.contains(':') {
            return Err(bad("unexpected ':' inside the base64 part"));
        }
        let raw = STANDARD
            .decode(b64)
            .map_err(|e| bad(format!("base64 part does not decode: {e}")))?;
        if !matches!(raw.len(), 36 | 52 | 68) {
            return Err(bad(format!(
                "decoded length {} is not 36, 52 or 68 bytes (a 32, 48 or 64 byte secret and its CRC-32)",
                raw.len()
            )));
        }
        let (secret, crc) = raw.split_at(raw.len() - 4);
        let stored = u32::from_le_bytes(crc.try_into().expect("four bytes"));
        let computed = crc32fast::hash(secret);
        if stored != computed {
            return Err(bad(format!(
                "CRC mismatch (stored {stored:08x}, computed {computed:08x})"
            )));
        }
        Ok(DhchapKey {
            secret: secret.to_vec(),
            transform,
        })
    }

    /// A secret from raw bytes (32, 48 or 64 of them).
    pub fn from_secret(secret: &[u8], transform: Option<HashId>) -> Result<DhchapKey, AuthError> {
        if !matches!(secret.len(), 32 | 48 | 64) {
            return Err(bad(format!(
                "secret length {} is not 32, 48 or 64 bytes",
                secret.len()
            )));
        }
        Ok(DhchapKey {
            secret: secret.to_vec(),
            transform,
        })
    }

    /// A fresh random secret, as `nvme gen-dhchap-key` makes one.
    pub fn generate(len: usize, transform: Option<HashId>) -> Result<DhchapKey, AuthError> {
        let mut secret = vec![0u8; len];
        rand::thread_rng().fill_bytes(&mut secret);
        DhchapKey::from_secret(&secret, transform)
    }

    /// The `DHHC-1:XX:<base64>:` text.
    pub fn to_text(&self) -> String {
        let mut raw = self.secret.clone();
        raw.extend_from_slice(&crc32fast::hash(&self.secret).to_le_bytes());
        format!(
            "{PREFIX}{:02}:{}:",
            self.transform.map_or(0, HashId::id),
            STANDARD.encode(raw)
        )
    }

    pub fn transform(&self) -> Option<HashId> {
        self.transform
    }

    pub fn len(&self) -> usize {
        self.secret.len()
    }

    pub fn is_empty(&self) -> bool {
        self.secret.is_empty()
    }

    /// The key used in the HMAC of a response: the secret itself, or
    /// HMAC_XX(secret, NQN || "NVMe-over-Fabrics") when the key names a transform hash. The
    /// host key is transformed with the host NQN, the controller key with the subsystem NQN.
    pub fn transformed(&self, nqn: &str) -> Vec<u8> {
        match self.transform {
            None => self.secret.clone(),
            Some(h) => h.hmac(&self.secret, &[nqn.as_bytes(), TRANSFORM_SUFFIX]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A key in the format of nvme-cli's documentation example, built here from known bytes:
    /// 32 bytes 0x00..0x1f, CRC-32 over them appended little-endian.
    #[test]
    fn known_key_round_trips_with_crc() {
        let secret: Vec<u8> = (0u8..32).collect();
        // CRC-32 (IEEE) of 00 01 .. 1f is 0x91267e8a.
        assert_eq!(crc32fast::hash(&secret), 0x91267e8a);
        let k = DhchapKey::from_secret(&secret, None).expect("32 bytes");
        let text = k.to_text();
        assert_eq!(
            text,
            "DHHC-1:00:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh+KfiaR:"
        );
        assert_eq!(DhchapKey::parse(&text).expect("parses"), k);
        // Without the trailing colon, with whitespace: still fine.
        assert_eq!(
            DhchapKey::parse(&format!(" {} \n", &text[..text.len() - 1])).unwrap(),
            k
        );
    }

    #[test]
    fn bad_keys_are_named() {
        let good = DhchapKey::from_secret(&[7u8; 48], Some(HashId::Sha384))
            .unwrap()
            .to_text();
        assert!(good.starts_with("DHHC-1:02:"));
        let cases = [
            ("DHHC-2:00:AAAA:", "starts with"),
            ("DHHC-1:0:AAAA:", "two digits"),
            ("DHHC-1:07:AAAA:", "unknown hash"),
            ("DHHC-1:00:!!!!:", "base64"),
            ("DHHC-1:00:AAAA:", "decoded length 3"),
        ];
        for (text, needle) in cases {
            let e = DhchapKey::parse(text).expect_err(text).to_string();
            assert!(e.contains(needle), "{text}: {e}");
        }
        // One flipped character in the base64 text breaks the CRC.
        let mut flipped = good.clone().into_bytes();
        flipped[12] = if flipped[12] == b'B' { b'C' } else { b'B' };
        let e = DhchapKey::parse(std::str::from_utf8(&flipped).unwrap()).unwrap_err();
        assert!(e.to_string().contains("CRC mismatch"), "{e}");
        assert!(DhchapKey::from_secret(&[0; 31], None).is_err());
    }

    /// The transform is HMAC with the key's own hash over NQN || "NVMe-over-Fabrics".
    #[test]
    fn transform_is_hmac_over_nqn_and_suffix() {
        let k = DhchapKey::from_secret(&[1u8; 32], Some(HashId::Sha256)).unwrap();
        let nqn = "nqn.2014-08.org.nvmexpress:uuid:0";
        let t = k.transformed(nqn);
        assert_eq!(t.len(), 32);
        assert_eq!(
            t,
            HashId::Sha256.hmac(
                &[1u8; 32],
                &[b"nqn.2014-08.org.nvmexpress:uuid:0NVMe-over-Fabrics"]
            )
        );
        assert_ne!(t, k.transformed("nqn.other"));
        let plain = DhchapKey::from_secret(&[1u8; 32], None).unwrap();
        assert_eq!(plain.transformed(nqn), vec![1u8; 32]);
        assert!(!format!("{k:?}").contains("1, 1"));
    }
}
