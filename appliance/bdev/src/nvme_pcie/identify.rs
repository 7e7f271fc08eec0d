//! The Identify data the driver uses: controller (MDTS, ONCS, VWC, NN) and namespace (size,
//! format), decoded from the 4 KiB pages the controller returns.

/// Fields of Identify Controller (CNS 01h).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControllerId {
    pub serial: String,
    pub model: String,
    /// Maximum Data Transfer Size as a power of two of the minimum page; 0 = no limit.
    pub mdts: u8,
    /// Optional NVM Command Support.
    pub oncs: u16,
    /// Volatile Write Cache present.
    pub vwc: bool,
    /// Number of Namespaces (highest NSID).
    pub nn: u32,
}

impl ControllerId {
    pub fn decode(page: &[u8; 4096]) -> ControllerId {
        let text = |r: std::ops::Range<usize>| String::from_utf8_lossy(&page[r]).trim().to_string();
        ControllerId {
            serial: text(4..24),
            model: text(24..64),
            mdts: page[77],
            oncs: u16::from_le_bytes([page[520], page[521]]),
            vwc: page[525] & 1 == 1,
            nn: u32::from_le_bytes([page[516], page[517], page[518], page[519]]),
        }
    }

    /// Dataset Management (deallocate) is supported.
    pub fn dsm(&self) -> bool {
        self.oncs & (1 << 2) != 0
    }

    /// Write Zeroes is supported.
    pub fn write_zeroes(&self) -> bool {
        self.oncs & (1 << 3) != 0
    }

    /// Largest transfer in bytes given the minimum page size, capped at `cap`.
    pub fn max_transfer(&self, min_page: usize, cap: usize) -> usize {
        if self.mdts == 0 || self.mdts >= 32 {
            cap
        } else {
            (min_page << self.mdts).min(cap)
        }
    }
}

/// Fields of Identify Namespace (CNS 00h).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NamespaceId {
    /// Namespace size in logical blocks.
    pub nsze: u64,
    /// Blocks allocated.
    pub nuse: u64,
    /// Logical block size of the formatted LBA format.
    pub block_size: u32,
    /// Metadata bytes per block of that format (the driver serves only 0).
    pub metadata: u16,
    /// Deallocated blocks read back zeroes (DLFEAT bits 2:0 = 001b).
    pub dealloc_reads_zeroes: bool,
    /// NSFEAT.THINP.
    pub thin: bool,
}

impl NamespaceId {
    /// `None` for an inactive namespace (all zeroes) or an LBA format out of range.
    pub fn decode(page: &[u8; 4096]) -> Option<NamespaceId> {
        let u64_at = |o: usize| u64::from_le_bytes(page[o..o + 8].try_into().unwrap_or([0; 8]));
        let nsze = u64_at(0);
        if nsze == 0 {
            return None;
        }
        let nlbaf = usize::from(page[25]);
        let flbas = usize::from(page[26] & 0x0f) | (usize::from(page[26] >> 5 & 3) << 4);
        if flbas > nlbaf || flbas >= 64 {
            return None;
        }
        let lbaf = 128 + 4 * flbas;
        let lbads = page[lbaf + 2];
        if !(9..=16).contains(&lbads) {
            return None;
        }
        Some(NamespaceId {
            nsze,
            nuse: u64_at(16),
            block_size: 1 << lbads,
            metadata: u16::from_le_bytes([page[lbaf], page[lbaf + 1]]),
            dealloc_reads_zeroes: page[33] & 7 == 1,
            thin: page[24] & 1 == 1,
        })
    }
}

/// The active namespace list (CNS 02h): NSIDs in increasing order, 0-terminated.
pub fn active_namespaces(page: &[u8; 4096]) -> Vec<u32> {
    page.chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .take_while(|&n| n != 0)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controller_fields_at_their_offsets() {
        let mut p = [0u8; 4096];
        p[4..24].copy_from_slice(b"ferrite15           ");
        p[24..64].copy_from_slice(&[b' '; 40]);
        p[24..28].copy_from_slice(b"QEMU");
        p[77] = 7;
        p[516..520].copy_from_slice(&256u32.to_le_bytes());
        p[520..522].copy_from_slice(&0b1100u16.to_le_bytes());
        p[525] = 1;
        let c = ControllerId::decode(&p);
        assert_eq!((c.serial.as_str(), c.model.as_str()), ("ferrite15", "QEMU"));
        assert_eq!((c.mdts, c.nn, c.vwc), (7, 256, true));
        assert!(c.dsm() && c.write_zeroes());
        assert_eq!(c.max_transfer(4096, 1 << 20), 512 << 10);
        assert_eq!(c.max_transfer(4096, 128 << 10), 128 << 10);
        p[520] = 0;
        p[77] = 0;
        let c = ControllerId::decode(&p);
        assert!(!c.dsm() && !c.write_zeroes());
        assert_eq!(c.max_transfer(4096, 1 << 20), 1 << 20);
    }

    #[test]
    fn namespace_format_and_size() {
        let mut p = [0u8; 4096];
        assert_eq!(NamespaceId::decode(&p), None, "inactive");
        p[0..8].copy_from_slice(&1000u64.to_le_bytes());
        p[16..24].copy_from_slice(&10u64.to_le_bytes());
        p[24] = 1;
        p[25] = 1; // two formats
        p[26] = 1; // formatted with the second
        p[33] = 1;
        p[128 + 2] = 9;
        p[132 + 2] = 12;
        let n = NamespaceId::decode(&p).expect("active");
        assert_eq!(
            (n.nsze, n.nuse, n.block_size, n.metadata),
            (1000, 10, 4096, 0)
        );
        assert!(n.thin && n.dealloc_reads_zeroes);
        p[26] = 2; // past NLBAF
        assert_eq!(NamespaceId::decode(&p), None);
    }

    #[test]
    fn namespace_list_stops_at_zero() {
        let mut p = [0u8; 4096];
        p[0..4].copy_from_slice(&1u32.to_le_bytes());
        p[4..8].copy_from_slice(&3u32.to_le_bytes());
        assert_eq!(active_namespaces(&p), vec![1, 3]);
        assert!(active_namespaces(&[0; 4096]).is_empty());
    }
}
