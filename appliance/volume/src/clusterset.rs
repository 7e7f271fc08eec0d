//! A set of cluster numbers as a bitmap with a count (free, needs-zeroing, reserved sets).

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSet {
    bits: Vec<u64>,
    len: u64,
    capacity: u64,
}

impl ClusterSet {
    pub fn new(capacity: u64) -> Self {
        Self {
            bits: vec![0; capacity.div_ceil(64) as usize],
            len: 0,
            capacity,
        }
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn contains(&self, c: u64) -> bool {
        c < self.capacity && self.bits[(c / 64) as usize] & (1 << (c % 64)) != 0
    }

    /// Adds `c` (below the capacity); returns false if it was present.
    pub fn insert(&mut self, c: u64) -> bool {
        debug_assert!(c < self.capacity);
        let w = &mut self.bits[(c / 64) as usize];
        let m = 1 << (c % 64);
        if *w & m != 0 {
            return false;
        }
        *w |= m;
        self.len += 1;
        true
    }

    /// Removes `c`; returns false if it was absent.
    pub fn remove(&mut self, c: u64) -> bool {
        if !self.contains(c) {
            return false;
        }
        self.bits[(c / 64) as usize] &= !(1 << (c % 64));
        self.len -= 1;
        true
    }

    /// The smallest member at or after `from`, wrapping around.
    pub fn first_from(&self, from: u64) -> Option<u64> {
        if self.len == 0 {
            return None;
        }
        let scan = |lo: u64, hi: u64| {
            let mut c = lo;
            while c < hi {
                let w = self.bits[(c / 64) as usize] >> (c % 64);
                if w != 0 {
                    let found = c + u64::from(w.trailing_zeros());
                    return (found < hi).then_some(found);
                }
                c = (c / 64 + 1) * 64;
            }
            None
        };
        let from = from.min(self.capacity);
        scan(from, self.capacity).or_else(|| scan(0, from))
    }

    pub fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        self.bits.iter().enumerate().flat_map(|(i, &w)| {
            let mut w = w;
            std::iter::from_fn(move || {
                if w == 0 {
                    return None;
                }
                let b = u64::from(w.trailing_zeros());
                w &= w - 1;
                Some(i as u64 * 64 + b)
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_operations() {
        let mut s = ClusterSet::new(200);
        assert!(s.first_from(0).is_none());
        assert!(s.insert(5) && s.insert(130) && s.insert(199));
        assert!(!s.insert(5));
        assert_eq!(s.len(), 3);
        assert_eq!(s.first_from(0), Some(5));
        assert_eq!(s.first_from(6), Some(130));
        assert_eq!(s.first_from(131), Some(199));
        s.remove(199);
        assert_eq!(s.first_from(131), Some(5), "wraps around");
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![5, 130]);
        assert!(!s.contains(500) && !s.remove(7));
    }
}
