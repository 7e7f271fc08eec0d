//! Controller registers of an NVMe PCIe function (BAR0), NVMe Base Specification 2.0 §3.1.4.

/// Controller Capabilities (64 bits).
pub const CAP: usize = 0x00;
/// Version.
pub const VS: usize = 0x08;
/// Interrupt Mask Set: every vector masked, the driver polls.
pub const INTMS: usize = 0x0c;
/// Controller Configuration.
pub const CC: usize = 0x14;
/// Controller Status.
pub const CSTS: usize = 0x1c;
/// Admin Queue Attributes.
pub const AQA: usize = 0x24;
/// Admin Submission Queue Base Address (64 bits).
pub const ASQ: usize = 0x28;
/// Admin Completion Queue Base Address (64 bits).
pub const ACQ: usize = 0x30;
/// First doorbell register.
pub const DOORBELL_BASE: usize = 0x1000;

/// The memory page size the driver configures (CC.MPS = 0) and builds PRPs for.
pub const PAGE: usize = 4096;

/// Decoded CAP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cap {
    /// Maximum queue entries supported (CAP.MQES is 0-based; this is the count).
    pub max_queue_entries: u32,
    /// Worst-case time to become ready after enable/disable, in milliseconds (CAP.TO * 500).
    pub timeout_ms: u64,
    /// Doorbell stride in bytes (4 << CAP.DSTRD).
    pub doorbell_stride: usize,
    /// The NVM command set is supported (CAP.CSS bit 0).
    pub nvm_command_set: bool,
    /// Smallest memory page size, bytes (4096 << CAP.MPSMIN).
    pub min_page: usize,
    /// NVM Subsystem Reset supported (CAP.NSSRS).
    pub subsystem_reset: bool,
}

impl Cap {
    pub fn decode(v: u64) -> Cap {
        Cap {
            max_queue_entries: (v & 0xffff) as u32 + 1,
            timeout_ms: ((v >> 24) & 0xff) * 500,
            doorbell_stride: 4usize << ((v >> 32) & 0xf),
            nvm_command_set: (v >> 37) & 1 == 1,
            min_page: 4096usize << ((v >> 48) & 0xf),
            subsystem_reset: (v >> 36) & 1 == 1,
        }
    }

    /// Offset of the submission queue tail doorbell of queue `qid`.
    pub fn sq_tail_doorbell(&self, qid: u16) -> usize {
        DOORBELL_BASE + (2 * usize::from(qid)) * self.doorbell_stride
    }

    /// Offset of the completion queue head doorbell of queue `qid`.
    pub fn cq_head_doorbell(&self, qid: u16) -> usize {
        DOORBELL_BASE + (2 * usize::from(qid) + 1) * self.doorbell_stride
    }
}

/// CC value enabling the controller: NVM command set, 4 KiB pages, round robin, 64-byte
/// submission and 16-byte completion entries.
pub fn cc_enable() -> u32 {
    const EN: u32 = 1;
    const CSS_NVM: u32 = 0 << 4;
    const MPS_4K: u32 = 0 << 7;
    const AMS_RR: u32 = 0 << 11;
    const IOSQES_64: u32 = 6 << 16;
    const IOCQES_16: u32 = 4 << 20;
    EN | CSS_NVM | MPS_4K | AMS_RR | IOSQES_64 | IOCQES_16
}

/// CSTS.RDY.
pub fn csts_ready(v: u32) -> bool {
    v & 1 == 1
}

/// CSTS.CFS: Controller Fatal Status.
pub fn csts_fatal(v: u32) -> bool {
    v & 2 == 2
}

/// All ones: the read went nowhere (device removed or the link is down).
pub fn device_gone(v: u32) -> bool {
    v == u32::MAX
}

/// AQA for admin queues of `entries` entries each (0-based fields).
pub fn aqa(entries: u32) -> u32 {
    let n = entries - 1;
    (n << 16) | n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_fields_decode() {
        // A CAP like that of QEMU's emulated NVMe: MQES 2047, CQR, TO 15 (7.5 s), DSTRD 0, CSS NVM, MPSMAX 4.
        let qemu: u64 = 0x0040_0020_0f01_07ff;
        let cap = Cap::decode(qemu);
        assert_eq!(cap.max_queue_entries, 2048);
        assert_eq!(cap.timeout_ms, 7500);
        assert_eq!(cap.doorbell_stride, 4);
        assert!(cap.nvm_command_set);
        assert_eq!(cap.min_page, 4096);
        assert!(!cap.subsystem_reset);
        // DSTRD 2 (16-byte stride), MPSMIN 1, NSSRS.
        let other = Cap::decode((2u64 << 32) | (1 << 36) | (1 << 48) | 63);
        assert_eq!(other.doorbell_stride, 16);
        assert_eq!(other.min_page, 8192);
        assert!(other.subsystem_reset);
        assert_eq!(other.max_queue_entries, 64);
    }

    #[test]
    fn doorbells_follow_the_stride() {
        let cap = Cap::decode(0);
        assert_eq!(cap.sq_tail_doorbell(0), 0x1000);
        assert_eq!(cap.cq_head_doorbell(0), 0x1004);
        assert_eq!(cap.sq_tail_doorbell(3), 0x1018);
        assert_eq!(cap.cq_head_doorbell(3), 0x101c);
        let wide = Cap::decode(3u64 << 32); // 32-byte stride
        assert_eq!(wide.sq_tail_doorbell(1), 0x1000 + 2 * 32);
        assert_eq!(wide.cq_head_doorbell(1), 0x1000 + 3 * 32);
    }

    #[test]
    fn register_values() {
        assert_eq!(cc_enable(), 0x0046_0001);
        assert_eq!(aqa(32), 0x001f_001f);
        assert!(csts_ready(1) && !csts_ready(0));
        assert!(csts_fatal(3) && !csts_fatal(1));
        assert!(device_gone(0xffff_ffff) && !device_gone(1));
        assert_eq!(
            (CAP, VS, CC, CSTS, AQA, ASQ, ACQ),
            (0, 8, 0x14, 0x1c, 0x24, 0x28, 0x30)
        );
    }
}
