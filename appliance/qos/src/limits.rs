//! The six rate limits and their validation.

use thiserror::Error;

/// SPDK's "megabytes" in `*_mbytes_per_sec` are MiB.
pub const MIB: u64 = 1024 * 1024;

/// One rate limit. The names are SPDK's `bdev_set_qos_limit` parameters; `r_ios_per_sec` and
/// `w_ios_per_sec` (read-only and write-only IOPS) are ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LimitKind {
    RwIos,
    RIos,
    WIos,
    RwBytes,
    RBytes,
    WBytes,
}

impl LimitKind {
    pub const ALL: [LimitKind; 6] = [
        LimitKind::RwIos,
        LimitKind::RIos,
        LimitKind::WIos,
        LimitKind::RwBytes,
        LimitKind::RBytes,
        LimitKind::WBytes,
    ];

    /// The RPC and configuration parameter name.
    pub fn name(self) -> &'static str {
        match self {
            LimitKind::RwIos => "rw_ios_per_sec",
            LimitKind::RIos => "r_ios_per_sec",
            LimitKind::WIos => "w_ios_per_sec",
            LimitKind::RwBytes => "rw_mbytes_per_sec",
            LimitKind::RBytes => "r_mbytes_per_sec",
            LimitKind::WBytes => "w_mbytes_per_sec",
        }
    }

    pub fn from_name(name: &str) -> Option<LimitKind> {
        LimitKind::ALL.into_iter().find(|k| k.name() == name)
    }

    fn index(self) -> usize {
        self as usize
    }

    /// Whether an I/O in direction `write` draws on this limit.
    pub fn applies(self, write: bool) -> bool {
        match self {
            LimitKind::RwIos | LimitKind::RwBytes => true,
            LimitKind::RIos | LimitKind::RBytes => !write,
            LimitKind::WIos | LimitKind::WBytes => write,
        }
    }

    pub fn is_bytes(self) -> bool {
        matches!(
            self,
            LimitKind::RwBytes | LimitKind::RBytes | LimitKind::WBytes
        )
    }
}

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum QosError {
    #[error("{0} must be a positive integer (got {1}); null removes the limit")]
    NotPositive(&'static str, i128),
    #[error("{0} = {1} is too large (at most {2})")]
    TooLarge(&'static str, u64, u64),
    #[error("no limit given: set at least one of rw_ios_per_sec, r_ios_per_sec, w_ios_per_sec, rw_mbytes_per_sec, r_mbytes_per_sec, w_mbytes_per_sec")]
    Nothing,
}

/// The limits of one namespace or host, in the units of their names (I/Os or MiB per second).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    values: [Option<u64>; 6],
}

/// Largest accepted value: 2^40 I/Os or MiB per second is beyond any device.
const MAX_VALUE: u64 = 1 << 40;

impl Limits {
    pub fn get(&self, kind: LimitKind) -> Option<u64> {
        self.values[kind.index()]
    }

    pub fn is_empty(&self) -> bool {
        self.values.iter().all(Option::is_none)
    }

    /// The limit as a rate per second in I/Os or bytes.
    pub fn rate(&self, kind: LimitKind) -> Option<f64> {
        let v = self.get(kind)?;
        Some(if kind.is_bytes() {
            v as f64 * MIB as f64
        } else {
            v as f64
        })
    }

    /// Set limits as (kind, value) pairs.
    pub fn iter(&self) -> impl Iterator<Item = (LimitKind, u64)> + '_ {
        LimitKind::ALL
            .into_iter()
            .filter_map(|k| self.get(k).map(|v| (k, v)))
    }

    /// Applies a checked update.
    pub fn apply(&self, update: &LimitUpdate) -> Limits {
        let mut next = *self;
        for (i, change) in update.changes.iter().enumerate() {
            if let Some(v) = change {
                next.values[i] = *v;
            }
        }
        next
    }
}

/// A change to some limits: per kind, unchanged, removed or set to a positive value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LimitUpdate {
    changes: [Option<Option<u64>>; 6],
}

impl LimitUpdate {
    /// Sets `kind` to `value` (None removes the limit). Zero, negative and absurd values are
    /// refused with an error naming the parameter.
    pub fn set(&mut self, kind: LimitKind, value: Option<i128>) -> Result<(), QosError> {
        let checked = match value {
            None => None,
            Some(v) if v <= 0 => return Err(QosError::NotPositive(kind.name(), v)),
            Some(v) if v > MAX_VALUE as i128 => {
                return Err(QosError::TooLarge(kind.name(), v as u64, MAX_VALUE))
            }
            Some(v) => Some(v as u64),
        };
        self.changes[kind.index()] = Some(checked);
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.changes.iter().all(Option::is_none)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for k in LimitKind::ALL {
            assert_eq!(LimitKind::from_name(k.name()), Some(k));
        }
        assert_eq!(LimitKind::from_name("rw_ios"), None);
    }

    #[test]
    fn zero_and_negative_are_refused() {
        let mut u = LimitUpdate::default();
        let e = u
            .set(LimitKind::RwIos, Some(0))
            .expect_err("must be refused");
        assert!(e.to_string().contains("rw_ios_per_sec must be a positive"));
        let e = u
            .set(LimitKind::WBytes, Some(-5))
            .expect_err("must be refused");
        assert!(e.to_string().contains("w_mbytes_per_sec") && e.to_string().contains("-5"));
        assert!(u.set(LimitKind::RBytes, Some(1 << 41)).is_err());
        assert!(u.is_empty());
    }

    #[test]
    fn updates_set_keep_and_remove() {
        let mut u = LimitUpdate::default();
        u.set(LimitKind::RwIos, Some(1000)).expect("must succeed");
        u.set(LimitKind::RBytes, Some(10)).expect("must succeed");
        let l = Limits::default().apply(&u);
        assert_eq!(l.get(LimitKind::RwIos), Some(1000));
        assert_eq!(l.rate(LimitKind::RBytes), Some(10.0 * MIB as f64));
        let mut u = LimitUpdate::default();
        u.set(LimitKind::RwIos, None).expect("must succeed");
        let l = l.apply(&u);
        assert_eq!(l.get(LimitKind::RwIos), None);
        assert_eq!(l.get(LimitKind::RBytes), Some(10));
        assert_eq!(l.iter().count(), 1);
    }
}
