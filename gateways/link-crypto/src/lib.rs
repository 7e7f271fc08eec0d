//! Authenticated encryption of the replicator link with a pre-shared key.
//!
//! Each side opens a connection by sending its gateway `Hello` in the clear with a fresh random
//! 32-byte nonce. Once a side knows both nonces it derives one key per direction:
//!
//! ```text
//! prk  = HKDF-Extract(salt = "ferrite-replicator link v1", ikm = PSK)
//! k_ps = HKDF-Expand(prk, "primary->secondary" || nonce_primary || nonce_secondary, 32)
//! k_sp = HKDF-Expand(prk, "secondary->primary" || nonce_primary || nonce_secondary, 32)
//! ```
//!
//! Every later frame is sealed: `[len: u32 LE][ChaCha20-Poly1305(plain frame)]`, `len` counting
//! ciphertext and tag, the AEAD nonce the direction's frame counter (4 zero bytes, u64 LE) and
//! the length bytes the associated data. So a peer without the key cannot produce a frame the
//! other side accepts (the first sealed frame is the key confirmation), a frame replayed,
//! dropped, reordered or altered within a connection fails at the counter, a frame recorded on
//! another connection fails because that connection's keys differ, and a truncated frame never
//! completes. Nothing here does I/O: [`Session`] seals into and opens from byte buffers.

#![forbid(unsafe_code)]

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use hkdf::Hkdf;
use rand::RngCore;
use sha2::Sha256;

/// Bytes of the length prefix of a sealed frame.
pub const HEADER: usize = 4;
/// Bytes of the Poly1305 tag.
pub const TAG: usize = 16;
/// Largest sealed body accepted (a record frame of 4 MiB of data plus headers fits).
pub const MAX_SEALED: usize = (4 << 20) + 4096 + TAG;
const SALT: &[u8] = b"ferrite-replicator link v1";

/// What went wrong with a sealed frame or a key.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LinkError {
    /// The key file is not 64 hex digits.
    #[error("pre-shared key: {0}")]
    BadKey(String),
    /// A sealed frame claims more bytes than any frame has.
    #[error("sealed frame of {0} bytes is longer than {MAX_SEALED} (not a peer with our key?)")]
    TooLong(usize),
    /// A sealed frame shorter than its tag.
    #[error("sealed frame of {0} bytes is shorter than its tag")]
    TooShort(usize),
    /// The frame does not authenticate: another key, or replayed, reordered or altered.
    #[error(
        "frame {0} failed authentication (wrong key, or a replayed, reordered or altered frame)"
    )]
    Auth(u64),
    /// The frame counter ran out (a connection must be re-established).
    #[error("frame counter exhausted")]
    CounterExhausted,
}

/// A pre-shared key: 32 bytes, written as 64 hex digits.
#[derive(Clone)]
pub struct Psk([u8; 32]);

impl std::fmt::Debug for Psk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Psk(..)")
    }
}

impl Psk {
    /// Parses 64 hex digits (surrounding whitespace ignored).
    pub fn from_hex(text: &str) -> Result<Psk, LinkError> {
        let t = text.trim();
        if t.len() != 64 {
            return Err(LinkError::BadKey(format!(
                "expected 64 hex digits, found {} characters",
                t.len()
            )));
        }
        let mut k = [0u8; 32];
        for (i, b) in k.iter_mut().enumerate() {
            *b = u8::from_str_radix(&t[2 * i..2 * i + 2], 16)
                .map_err(|_| LinkError::BadKey(format!("not hex at digit {}", 2 * i + 1)))?;
        }
        Ok(Psk(k))
    }

    /// The raw key (tests, key generation).
    pub fn from_bytes(k: [u8; 32]) -> Psk {
        Psk(k)
    }
}

/// Which end of the link this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Ships records (connects).
    Primary,
    /// Receives them (accepts).
    Secondary,
}

/// A fresh random nonce for a `Hello`.
pub fn fresh_nonce() -> [u8; 32] {
    let mut n = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut n);
    n
}

struct Direction {
    aead: ChaCha20Poly1305,
    counter: u64,
}

impl Direction {
    fn nonce(&self) -> Nonce {
        let mut n = [0u8; 12];
        n[4..].copy_from_slice(&self.counter.to_le_bytes());
        Nonce::from(n)
    }
}

/// The keys of one connection, both directions.
pub struct Session {
    tx: Direction,
    rx: Direction,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("sent", &self.tx.counter)
            .field("received", &self.rx.counter)
            .finish()
    }
}

fn key(prk: &Hkdf<Sha256>, label: &[u8], np: &[u8; 32], ns: &[u8; 32]) -> ChaCha20Poly1305 {
    let mut info = Vec::with_capacity(label.len() + 64);
    info.extend_from_slice(label);
    info.extend_from_slice(np);
    info.extend_from_slice(ns);
    let mut k = [0u8; 32];
    prk.expand(&info, &mut k)
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    ChaCha20Poly1305::new(Key::from_slice(&k))
}

impl Session {
    /// The session of `side` on a connection whose `Hello`s carried these nonces.
    pub fn new(
        psk: &Psk,
        side: Side,
        nonce_primary: &[u8; 32],
        nonce_secondary: &[u8; 32],
    ) -> Session {
        let prk = Hkdf::<Sha256>::new(Some(SALT), &psk.0);
        let ps = key(&prk, b"primary->secondary", nonce_primary, nonce_secondary);
        let sp = key(&prk, b"secondary->primary", nonce_primary, nonce_secondary);
        let (tx, rx) = match side {
            Side::Primary => (ps, sp),
            Side::Secondary => (sp, ps),
        };
        Session {
            tx: Direction {
                aead: tx,
                counter: 0,
            },
            rx: Direction {
                aead: rx,
                counter: 0,
            },
        }
    }

    /// Appends `plain` sealed (length prefix, ciphertext, tag) to `out`.
    pub fn seal(&mut self, plain: &[u8], out: &mut Vec<u8>) -> Result<(), LinkError> {
        if self.tx.counter == u64::MAX {
            return Err(LinkError::CounterExhausted);
        }
        let len = plain.len() + TAG;
        if len > MAX_SEALED {
            return Err(LinkError::TooLong(len));
        }
        let header = (len as u32).to_le_bytes();
        let ct = self
            .tx
            .aead
            .encrypt(
                &self.tx.nonce(),
                Payload {
                    msg: plain,
                    aad: &header,
                },
            )
            .map_err(|_| LinkError::TooLong(len))?;
        out.extend_from_slice(&header);
        out.extend_from_slice(&ct);
        self.tx.counter += 1;
        Ok(())
    }

    /// Opens the sealed frame at the start of `buf`: `None` while it is incomplete, else the
    /// plain frame and the bytes it took.
    pub fn open(&mut self, buf: &[u8]) -> Result<Option<(Vec<u8>, usize)>, LinkError> {
        let Some(header) = buf.get(..HEADER) else {
            return Ok(None);
        };
        let len = u32::from_le_bytes(header.try_into().expect("4 bytes")) as usize;
        if len > MAX_SEALED {
            return Err(LinkError::TooLong(len));
        }
        if len < TAG {
            return Err(LinkError::TooShort(len));
        }
        let Some(body) = buf.get(HEADER..HEADER + len) else {
            return Ok(None);
        };
        if self.rx.counter == u64::MAX {
            return Err(LinkError::CounterExhausted);
        }
        let plain = self
            .rx
            .aead
            .decrypt(
                &self.rx.nonce(),
                Payload {
                    msg: body,
                    aad: header,
                },
            )
            .map_err(|_| LinkError::Auth(self.rx.counter))?;
        self.rx.counter += 1;
        Ok(Some((plain, HEADER + len)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(kp: [u8; 32], ks: [u8; 32]) -> (Session, Session) {
        let (np, ns) = (fresh_nonce(), fresh_nonce());
        (
            Session::new(&Psk::from_bytes(kp), Side::Primary, &np, &ns),
            Session::new(&Psk::from_bytes(ks), Side::Secondary, &np, &ns),
        )
    }

    #[test]
    fn frames_round_trip_both_ways_and_partial_input_waits() {
        let (mut p, mut s) = pair([7; 32], [7; 32]);
        let mut wire = Vec::new();
        p.seal(b"record one", &mut wire).expect("seal");
        p.seal(b"record two", &mut wire).expect("seal");
        assert_eq!(s.open(&wire[..5]).expect("partial"), None);
        let (a, n) = s.open(&wire).expect("open").expect("whole");
        assert_eq!(a, b"record one");
        let (b, m) = s.open(&wire[n..]).expect("open").expect("whole");
        assert_eq!((b.as_slice(), n + m), (&b"record two"[..], wire.len()));
        let mut back = Vec::new();
        s.seal(b"ack", &mut back).expect("seal");
        assert_eq!(p.open(&back).expect("open").expect("whole").0, b"ack");
    }

    #[test]
    fn a_peer_with_another_key_is_refused() {
        let (mut p, mut s) = pair([1; 32], [2; 32]);
        let mut wire = Vec::new();
        p.seal(b"hello", &mut wire).expect("seal");
        assert_eq!(s.open(&wire), Err(LinkError::Auth(0)));
    }

    #[test]
    fn replayed_reordered_altered_and_foreign_frames_are_refused() {
        let (mut p, mut s) = pair([3; 32], [3; 32]);
        let (mut f1, mut f2) = (Vec::new(), Vec::new());
        p.seal(b"one", &mut f1).expect("seal");
        p.seal(b"two", &mut f2).expect("seal");
        // Reordered: frame 2 before frame 1.
        assert_eq!(s.open(&f2), Err(LinkError::Auth(0)));
        s.open(&f1).expect("in order").expect("whole");
        // Replayed.
        assert_eq!(s.open(&f1), Err(LinkError::Auth(1)));
        // Altered body, altered length.
        let mut bad = f2.clone();
        bad[6] ^= 1;
        assert_eq!(s.open(&bad), Err(LinkError::Auth(1)));
        let mut longer = f2.clone();
        longer[0] += 1;
        longer.push(0);
        assert_eq!(s.open(&longer), Err(LinkError::Auth(1)));
        s.open(&f2).expect("the real one").expect("whole");
        // A frame from another connection with the same key.
        let (mut p2, _) = pair([3; 32], [3; 32]);
        let mut other = Vec::new();
        p2.seal(b"three", &mut other).expect("seal");
        assert_eq!(s.open(&other), Err(LinkError::Auth(2)));
        // Lengths out of range.
        assert_eq!(s.open(&[1, 0, 0, 0, 0]), Err(LinkError::TooShort(1)));
        assert_eq!(
            s.open(&[0xff, 0xff, 0xff, 0xff]),
            Err(LinkError::TooLong(u32::MAX as usize))
        );
    }

    #[test]
    fn keys_parse_from_hex() {
        let k = Psk::from_hex(&format!("{}\n", "ab".repeat(32))).expect("hex");
        assert_eq!(k.0, [0xab; 32]);
        assert!(Psk::from_hex("abc").is_err());
        assert!(Psk::from_hex(&"zz".repeat(32)).is_err());
        assert_eq!(format!("{k:?}"), "Psk(..)", "the key never prints");
    }
}
