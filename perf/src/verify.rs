//! Write-generation oracle of `--verify`.
//!
//! Every block written in verify mode is stamped: magic, its LBA, the
//! write's generation, then a pattern derived from both. A read checks
//! each block against the generation last written to it in this run (and,
//! for blocks not written in this run, that any stamp names the right LBA).

use core::fmt;

/// Stamp magic at the start of each block.
pub const MAGIC: [u8; 8] = *b"FERRLOAD";
/// Bytes of the stamp header (magic, LBA, generation).
pub const HEADER: usize = 24;
/// Smallest block size that can carry a stamp.
pub const MIN_BLOCK: usize = 32;

/// What a read found wrong with one block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// The block read.
    pub lba: u64,
    /// Generation expected (None: not written in this run).
    pub expected_gen: Option<u64>,
    /// LBA in the stamp found (None: no stamp).
    pub found_lba: Option<u64>,
    /// Generation in the stamp found.
    pub found_gen: Option<u64>,
    /// What is wrong.
    pub kind: MismatchKind,
}

/// Kinds of verify failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MismatchKind {
    /// A block written in this run has no stamp.
    Unstamped,
    /// The stamp names another LBA (misdirected write or read).
    WrongLba,
    /// The stamp has another generation (lost or stale write).
    WrongGeneration,
    /// The stamp is right but the body is not (torn or corrupt data).
    Corrupt,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            MismatchKind::Unstamped => "no stamp on a block written in this run",
            MismatchKind::WrongLba => "stamp of another LBA",
            MismatchKind::WrongGeneration => "wrong write generation",
            MismatchKind::Corrupt => "corrupt block body",
        };
        write!(f, "verify mismatch at LBA {}: {what}", self.lba)?;
        if let Some(g) = self.expected_gen {
            write!(f, ", expected generation {g}")?;
        }
        match (self.found_lba, self.found_gen) {
            (Some(l), Some(g)) => write!(f, ", found LBA {l} generation {g}"),
            _ => Ok(()),
        }
    }
}

fn word(lba: u64, gen: u64, i: u64) -> u64 {
    // splitmix64 of the three: cheap, and every word differs.
    let mut z = lba
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(gen.rotate_left(17))
        .wrapping_add(i.wrapping_mul(0xBF58_476D_1CE4_E5B9));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn fill_body(body: &mut [u8], lba: u64, gen: u64) {
    for (i, chunk) in body.chunks_mut(8).enumerate() {
        let w = word(lba, gen, i as u64).to_le_bytes();
        chunk.copy_from_slice(&w[..chunk.len()]);
    }
}

fn body_ok(body: &[u8], lba: u64, gen: u64) -> bool {
    body.chunks(8).enumerate().all(|(i, chunk)| {
        let w = word(lba, gen, i as u64).to_le_bytes();
        chunk == &w[..chunk.len()]
    })
}

fn le64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

/// Stamps `buf` (whole blocks of `block_size`) as written at `lba` with `gen`.
pub fn stamp(buf: &mut [u8], block_size: usize, lba: u64, gen: u64) {
    for (i, block) in buf.chunks_mut(block_size).enumerate() {
        let l = lba + i as u64;
        block[..8].copy_from_slice(&MAGIC);
        block[8..16].copy_from_slice(&l.to_le_bytes());
        block[16..24].copy_from_slice(&gen.to_le_bytes());
        fill_body(&mut block[HEADER..], l, gen);
    }
}

/// Checks one block read at `lba`; `expected` is the generation written to
/// it in this run, if any.
pub fn check_block(block: &[u8], lba: u64, expected: Option<u64>) -> Result<(), Mismatch> {
    let miss = |kind, found_lba, found_gen| Mismatch {
        lba,
        expected_gen: expected,
        found_lba,
        found_gen,
        kind,
    };
    if block.len() < MIN_BLOCK || block[..8] != MAGIC {
        return match expected {
            Some(_) => Err(miss(MismatchKind::Unstamped, None, None)),
            None => Ok(()),
        };
    }
    let found_lba = le64(&block[8..16]);
    let found_gen = le64(&block[16..24]);
    if found_lba != lba {
        return Err(miss(
            MismatchKind::WrongLba,
            Some(found_lba),
            Some(found_gen),
        ));
    }
    if expected.is_some_and(|g| g != found_gen) {
        return Err(miss(
            MismatchKind::WrongGeneration,
            Some(found_lba),
            Some(found_gen),
        ));
    }
    if !body_ok(&block[HEADER..], found_lba, found_gen) {
        return Err(miss(
            MismatchKind::Corrupt,
            Some(found_lba),
            Some(found_gen),
        ));
    }
    Ok(())
}

/// Expected generations of a region of blocks (0 = not written this run).
#[derive(Debug, Clone)]
pub struct Oracle {
    first_lba: u64,
    gens: Vec<u64>,
}

impl Oracle {
    /// Tracks `blocks` blocks from `first_lba`.
    pub fn new(first_lba: u64, blocks: u64) -> Oracle {
        Oracle {
            first_lba,
            gens: vec![0; blocks as usize],
        }
    }

    /// Records a completed write.
    pub fn written(&mut self, lba: u64, blocks: u32, gen: u64) {
        let s = (lba - self.first_lba) as usize;
        self.gens[s..s + blocks as usize].fill(gen);
    }

    /// Checks a completed read of whole blocks at `lba`.
    pub fn check_read(&self, data: &[u8], block_size: usize, lba: u64) -> Result<(), Mismatch> {
        for (i, block) in data.chunks(block_size).enumerate() {
            let l = lba + i as u64;
            let g = self.gens[(l - self.first_lba) as usize];
            check_block(block, l, (g != 0).then_some(g))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn detects_each_kind() {
        let bs = 512;
        let mut buf = vec![0u8; 4 * bs];
        stamp(&mut buf, bs, 100, 7);
        let mut o = Oracle::new(0, 1000);
        o.written(100, 4, 7);
        o.check_read(&buf, bs, 100).expect("clean");
        // Read back at the wrong place.
        let e = o.check_read(&buf, bs, 101).expect_err("wrong lba");
        assert_eq!(
            (e.kind, e.lba, e.found_lba),
            (MismatchKind::WrongLba, 101, Some(100))
        );
        assert!(e.to_string().contains("LBA 101"), "{e}");
        // A newer write lost.
        o.written(102, 1, 8);
        let e = o.check_read(&buf, bs, 100).expect_err("stale");
        assert_eq!((e.kind, e.lba), (MismatchKind::WrongGeneration, 102));
        // Corrupt body.
        o.written(102, 1, 7);
        buf[bs + 300] ^= 1;
        let e = o.check_read(&buf, bs, 100).expect_err("corrupt");
        assert_eq!((e.kind, e.lba), (MismatchKind::Corrupt, 101));
        // Zeroes where data was written.
        let zero = vec![0u8; bs];
        let e = o.check_read(&zero, bs, 100).expect_err("unstamped");
        assert_eq!(e.kind, MismatchKind::Unstamped);
        // Zeroes where nothing was written this run are fine.
        o.check_read(&zero, bs, 500).expect("never written");
    }

    proptest! {
        #[test]
        fn stamp_then_check_passes(lba in 0u64..1 << 40, gen in 1u64.., blocks in 1usize..8, shift in 5u32..13) {
            let bs = 1usize << shift;
            let mut buf = vec![0u8; blocks * bs];
            stamp(&mut buf, bs, lba, gen);
            for (i, b) in buf.chunks(bs).enumerate() {
                prop_assert!(check_block(b, lba + i as u64, Some(gen)).is_ok());
            }
        }
    }
}
