//! Core ids and core lists (`0,1`, `0-3,6`, `0x3`).

use std::fmt;
use std::str::FromStr;

/// Errors of parsing a core list such as `0-3,6` or `0xf`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CoreListError {
    #[error("empty core list")]
    Empty,
    #[error("invalid core number {0:?} (expected a decimal number such as 3)")]
    BadNumber(String),
    #[error("invalid core range {0:?}: start is after end")]
    ReversedRange(String),
    #[error("core {0} is listed twice")]
    Duplicate(usize),
    #[error("invalid core mask {0:?} (expected hex digits after 0x, with at least one bit set)")]
    BadMask(String),
    #[error("core {core} is beyond the highest supported core {max}")]
    TooLarge { core: usize, max: usize },
}

/// Highest core number accepted: the kernel's default `CPU_SETSIZE` is 1024.
pub const MAX_CORE: usize = 1023;

/// A CPU core number as the kernel numbers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CoreId(pub usize);

impl fmt::Display for CoreId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A non-empty, ascending set of cores: reactor `i` runs on `list[i]`.
///
/// Parses a comma-separated list of cores and ranges (`0,1`, `0-3,6`, optionally in SPDK-style
/// brackets `[0-3]`) or, only with a `0x` prefix, a hex mask (`0x3` = cores 0 and 1; `3` is
/// core 3). Displays as the canonical list form (`0-3,6`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CoreList(Vec<CoreId>);

impl CoreList {
    /// A list of the given cores, sorted. Fails on an empty list, a duplicate or a core above
    /// [`MAX_CORE`].
    pub fn new(cores: impl IntoIterator<Item = CoreId>) -> Result<Self, CoreListError> {
        let mut v: Vec<CoreId> = cores.into_iter().collect();
        if v.is_empty() {
            return Err(CoreListError::Empty);
        }
        v.sort_unstable();
        for pair in v.windows(2) {
            if pair[0] == pair[1] {
                return Err(CoreListError::Duplicate(pair[0].0));
            }
        }
        if let Some(last) = v.last().filter(|c| c.0 > MAX_CORE) {
            return Err(CoreListError::TooLarge {
                core: last.0,
                max: MAX_CORE,
            });
        }
        Ok(Self(v))
    }

    /// Cores `0..count` (at least one).
    pub fn first(count: usize) -> Result<Self, CoreListError> {
        Self::new((0..count).map(CoreId))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always false: a core list has at least one core.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn get(&self, index: usize) -> Option<CoreId> {
        self.0.get(index).copied()
    }

    pub fn as_slice(&self) -> &[CoreId] {
        &self.0
    }

    pub fn iter(&self) -> impl Iterator<Item = CoreId> + '_ {
        self.0.iter().copied()
    }

    fn parse_mask(text: &str, digits: &str) -> Result<Self, CoreListError> {
        let bad = || CoreListError::BadMask(text.to_string());
        if digits.is_empty() {
            return Err(bad());
        }
        let mut cores = Vec::new();
        for (nibble_index, ch) in digits.chars().rev().enumerate() {
            let nibble = ch.to_digit(16).ok_or_else(bad)? as usize;
            for bit in 0..4 {
                if nibble & (1 << bit) != 0 {
                    let core = nibble_index * 4 + bit;
                    if core > MAX_CORE {
                        return Err(CoreListError::TooLarge {
                            core,
                            max: MAX_CORE,
                        });
                    }
                    cores.push(CoreId(core));
                }
            }
        }
        if cores.is_empty() {
            return Err(bad());
        }
        Self::new(cores)
    }
}

impl Default for CoreList {
    /// Core 0 only.
    fn default() -> Self {
        Self(vec![CoreId(0)])
    }
}

fn parse_core(text: &str) -> Result<usize, CoreListError> {
    let t = text.trim();
    if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
        return Err(CoreListError::BadNumber(t.to_string()));
    }
    let core: usize = t
        .parse()
        .map_err(|_| CoreListError::BadNumber(t.to_string()))?;
    if core > MAX_CORE {
        return Err(CoreListError::TooLarge {
            core,
            max: MAX_CORE,
        });
    }
    Ok(core)
}

impl FromStr for CoreList {
    type Err = CoreListError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let text = s.trim();
        if let Some(digits) = text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
            return Self::parse_mask(text, digits);
        }
        let inner = match text.strip_prefix('[') {
            Some(rest) => rest
                .strip_suffix(']')
                .ok_or_else(|| CoreListError::BadNumber(text.to_string()))?,
            None => text,
        };
        if inner.trim().is_empty() {
            return Err(CoreListError::Empty);
        }
        let mut cores = Vec::new();
        for item in inner.split(',') {
            match item.split_once('-') {
                Some((lo, hi)) => {
                    let (lo, hi) = (parse_core(lo)?, parse_core(hi)?);
                    if lo > hi {
                        return Err(CoreListError::ReversedRange(item.trim().to_string()));
                    }
                    cores.extend((lo..=hi).map(CoreId));
                }
                None => cores.push(CoreId(parse_core(item)?)),
            }
        }
        Self::new(cores)
    }
}

impl fmt::Display for CoreList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut i = 0;
        while i < self.0.len() {
            let start = self.0[i].0;
            let mut end = start;
            while i + 1 < self.0.len() && self.0[i + 1].0 == end + 1 {
                end += 1;
                i += 1;
            }
            if start != self.0[0].0 {
                f.write_str(",")?;
            }
            if end == start {
                write!(f, "{start}")?;
            } else {
                write!(f, "{start}-{end}")?;
            }
            i += 1;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cores(s: &str) -> Vec<usize> {
        s.parse::<CoreList>()
            .unwrap_or_else(|e| panic!("{s:?} should parse: {e}"))
            .iter()
            .map(|c| c.0)
            .collect()
    }

    #[test]
    fn parses_lists_ranges_and_masks() {
        assert_eq!(cores("0"), vec![0]);
        assert_eq!(cores("3"), vec![3], "no 0x means a core number, not a mask");
        assert_eq!(cores("0,1"), vec![0, 1]);
        assert_eq!(cores(" 6, 0-3 "), vec![0, 1, 2, 3, 6]);
        assert_eq!(cores("[0-1,4]"), vec![0, 1, 4]);
        assert_eq!(cores("0x3"), vec![0, 1]);
        assert_eq!(cores("0XA0"), vec![5, 7]);
        assert_eq!(cores("0x100"), vec![8]);
        assert_eq!(cores("5-5"), vec![5]);
    }

    #[test]
    fn rejects_bad_input_with_clear_errors() {
        let err = |s: &str| s.parse::<CoreList>().expect_err(s);
        assert_eq!(err(""), CoreListError::Empty);
        assert_eq!(err("[]"), CoreListError::Empty);
        assert_eq!(err("a"), CoreListError::BadNumber("a".into()));
        assert_eq!(err("1,,2"), CoreListError::BadNumber("".into()));
        assert_eq!(err("-1"), CoreListError::BadNumber("".into()));
        assert_eq!(err("+1"), CoreListError::BadNumber("+1".into()));
        assert_eq!(err("3-1"), CoreListError::ReversedRange("3-1".into()));
        assert_eq!(err("1,0-2"), CoreListError::Duplicate(1));
        assert_eq!(err("0x"), CoreListError::BadMask("0x".into()));
        assert_eq!(err("0x0"), CoreListError::BadMask("0x0".into()));
        assert_eq!(err("0xg"), CoreListError::BadMask("0xg".into()));
        assert_eq!(
            err("0-99999999999999999999999"),
            CoreListError::BadNumber("99999999999999999999999".into())
        );
        assert_eq!(
            err("1024"),
            CoreListError::TooLarge {
                core: 1024,
                max: MAX_CORE
            }
        );
        assert!(matches!(
            err(&format!("0x1{}", "0".repeat(256))),
            CoreListError::TooLarge { .. }
        ));
        assert_eq!(err("[0"), CoreListError::BadNumber("[0".into()));
        // Messages name the offending input.
        assert!(err("3-1").to_string().contains("3-1"));
    }

    #[test]
    fn displays_canonical_ranges_and_round_trips() {
        for (input, shown) in [
            ("0", "0"),
            ("6,0-3", "0-3,6"),
            ("0x3", "0-1"),
            ("1,3,5", "1,3,5"),
            ("0-2,4-5,7", "0-2,4-5,7"),
        ] {
            let list: CoreList = input.parse().expect("valid");
            assert_eq!(list.to_string(), shown);
            assert_eq!(shown.parse::<CoreList>().expect("round trip"), list);
        }
        assert_eq!(CoreList::default().to_string(), "0");
        assert_eq!(CoreList::first(3).expect("3 cores").to_string(), "0-2");
    }
}
