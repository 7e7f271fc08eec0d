//! On-disk formats: the member label, the binary codec and the framing of log records and
//! checkpoints. Pure functions over bytes (fuzzed in `fuzz/`).

pub mod codec;
pub mod frame;
pub mod label;

/// Granule of every metadata structure on disk (label, records, slots).
pub const META_BLOCK: usize = 4096;

/// Rounds `n` up to a multiple of `META_BLOCK`.
pub fn round_up_block(n: u64) -> u64 {
    n.div_ceil(META_BLOCK as u64) * META_BLOCK as u64
}
