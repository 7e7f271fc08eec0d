//! Physical Region Page entries for a transfer: PRP1 may start anywhere (dword aligned),
//! every later entry names a whole page. Two pages fit in PRP1 + PRP2; more go in a list that
//! PRP2 points to.

use super::regs::PAGE;

/// Where the pages of a transfer are: PRP1 and the page addresses after the first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prps {
    pub prp1: u64,
    /// Page-aligned addresses of the second and later pages.
    pub rest: Vec<u64>,
}

impl Prps {
    /// PRPs of `len` bytes at `iova` (`len > 0`, `iova` dword aligned).
    pub fn build(iova: u64, len: usize) -> Prps {
        debug_assert!(len > 0 && iova % 4 == 0);
        let page = PAGE as u64;
        let first_page = iova & !(page - 1);
        let end = iova + len as u64;
        let rest = (1..)
            .map(|i| first_page + i * page)
            .take_while(|&p| p < end)
            .collect();
        Prps { prp1: iova, rest }
    }

    /// PRP2 given where a list can go: 0 for one page, the second page for two, else
    /// `list_iova` (whose page must then hold `rest` as little-endian u64s; see
    /// [`Prps::needs_list`]).
    pub fn prp2(&self, list_iova: u64) -> u64 {
        match self.rest.len() {
            0 => 0,
            1 => self.rest[0],
            _ => list_iova,
        }
    }

    pub fn needs_list(&self) -> bool {
        self.rest.len() > 1
    }

    /// Entries one list page holds (no chaining: transfers are capped below it).
    pub const LIST_CAPACITY: usize = PAGE / 8;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Oracle: the set of pages the bytes [iova, iova+len) touch.
    fn pages_touched(iova: u64, len: usize) -> Vec<u64> {
        let mut v: Vec<u64> = (iova..iova + len as u64)
            .step_by(4)
            .map(|a| a & !(PAGE as u64 - 1))
            .collect();
        v.push((iova + len as u64 - 1) & !(PAGE as u64 - 1));
        v.dedup();
        v
    }

    #[test]
    fn every_alignment_and_length() {
        let base = 0x10_0000u64;
        for offset in (0..PAGE as u64).step_by(4) {
            for len in [
                4usize,
                512,
                4096 - offset as usize,
                4096,
                4097,
                8192,
                12288,
                65536,
                131072,
            ] {
                if len == 0 {
                    continue;
                }
                let iova = base + offset;
                let p = Prps::build(iova, len);
                assert_eq!(p.prp1, iova);
                let pages = pages_touched(iova, len);
                assert_eq!(p.rest, pages[1..].to_vec(), "offset {offset} len {len}");
                assert!(p.rest.iter().all(|a| a % PAGE as u64 == 0));
                let list = 0xdead_0000;
                match pages.len() {
                    1 => assert_eq!(p.prp2(list), 0),
                    2 => assert_eq!(p.prp2(list), pages[1]),
                    _ => {
                        assert!(p.needs_list());
                        assert_eq!(p.prp2(list), list);
                    }
                }
                assert!(p.rest.len() <= Prps::LIST_CAPACITY);
            }
        }
    }

    #[test]
    fn exact_page_boundaries() {
        assert_eq!(Prps::build(0x2000, 4096).rest, Vec::<u64>::new());
        assert_eq!(Prps::build(0x2ffc, 8).rest, vec![0x3000]);
        assert_eq!(Prps::build(0x2000, 8192).rest, vec![0x3000]);
        assert_eq!(Prps::build(0x2000, 8193).rest, vec![0x3000, 0x4000]);
    }
}
