//! Raw kernel ABI: `linux/mtio.h` and `scsi/sg.h` layouts for x86_64/aarch64 Linux (LP64),
//! written out by hand from the kernel headers (no bindgen needed for four structs); the
//! size and offset assertions below are the regeneration check.

use std::mem::{offset_of, size_of};

/// `_IOC` direction bits.
const IOC_WRITE: u64 = 1;
const IOC_READ: u64 = 2;

/// `_IOC(dir, type, nr, size)` as the kernel encodes it on x86_64/aarch64.
pub const fn ioc(dir: u64, ty: u8, nr: u8, size: usize) -> u64 {
    (dir << 30) | ((size as u64) << 16) | ((ty as u64) << 8) | nr as u64
}

/// `struct mtop`: a tape operation and its count.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MtopRaw {
    pub mt_op: libc::c_short,
    pub mt_count: libc::c_int,
}

/// `struct mtget`: drive status (`__kernel_daddr_t` is `int`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MtgetRaw {
    pub mt_type: libc::c_long,
    pub mt_resid: libc::c_long,
    pub mt_dsreg: libc::c_long,
    pub mt_gstat: libc::c_long,
    pub mt_erreg: libc::c_long,
    pub mt_fileno: libc::c_int,
    pub mt_blkno: libc::c_int,
}

/// `struct mtpos`: the current logical block number.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MtposRaw {
    pub mt_blkno: libc::c_long,
}

/// `MTIOCTOP = _IOW('m', 1, struct mtop)`.
pub const MTIOCTOP: u64 = ioc(IOC_WRITE, b'm', 1, size_of::<MtopRaw>());
/// `MTIOCGET = _IOR('m', 2, struct mtget)`.
pub const MTIOCGET: u64 = ioc(IOC_READ, b'm', 2, size_of::<MtgetRaw>());
/// `MTIOCPOS = _IOR('m', 3, struct mtpos)`.
pub const MTIOCPOS: u64 = ioc(IOC_READ, b'm', 3, size_of::<MtposRaw>());

/// `mt_op` codes (`MTRESET` .. `MTWEOFI`) used by the wrapper.
pub mod op {
    pub const MTFSF: i16 = 1;
    pub const MTBSF: i16 = 2;
    pub const MTFSR: i16 = 3;
    pub const MTBSR: i16 = 4;
    pub const MTWEOF: i16 = 5;
    pub const MTREW: i16 = 6;
    pub const MTOFFL: i16 = 7;
    pub const MTNOP: i16 = 8;
    pub const MTEOM: i16 = 12;
    pub const MTERASE: i16 = 13;
    pub const MTSETBLK: i16 = 20;
    pub const MTSEEK: i16 = 22;
    pub const MTLOAD: i16 = 30;
    pub const MTUNLOAD: i16 = 31;
}

/// `mt_gstat` generic status bits (`GMT_*`).
pub mod gmt {
    pub const EOF: u32 = 0x8000_0000;
    pub const BOT: u32 = 0x4000_0000;
    pub const EOT: u32 = 0x2000_0000;
    pub const SM: u32 = 0x1000_0000;
    pub const EOD: u32 = 0x0800_0000;
    pub const WR_PROT: u32 = 0x0400_0000;
    pub const ONLINE: u32 = 0x0100_0000;
    pub const DR_OPEN: u32 = 0x0004_0000;
}

/// `mt_dsreg` fields: block size in the low 24 bits, density code in the top 8.
pub const MT_ST_BLKSIZE_MASK: u64 = 0x00ff_ffff;
pub const MT_ST_DENSITY_SHIFT: u32 = 24;

/// `struct sg_io_hdr` (interface id `'S'`).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct SgIoHdrRaw {
    pub interface_id: libc::c_int,
    pub dxfer_direction: libc::c_int,
    pub cmd_len: libc::c_uchar,
    pub mx_sb_len: libc::c_uchar,
    pub iovec_count: libc::c_ushort,
    pub dxfer_len: libc::c_uint,
    pub dxferp: *mut libc::c_void,
    pub cmdp: *const libc::c_uchar,
    pub sbp: *mut libc::c_uchar,
    pub timeout: libc::c_uint,
    pub flags: libc::c_uint,
    pub pack_id: libc::c_int,
    pub usr_ptr: *mut libc::c_void,
    pub status: libc::c_uchar,
    pub masked_status: libc::c_uchar,
    pub msg_status: libc::c_uchar,
    pub sb_len_wr: libc::c_uchar,
    pub host_status: libc::c_ushort,
    pub driver_status: libc::c_ushort,
    pub resid: libc::c_int,
    pub duration: libc::c_uint,
    pub info: libc::c_uint,
}

/// `SG_IO` ioctl number (`scsi/sg.h`).
pub const SG_IO: u64 = 0x2285;
pub const SG_INTERFACE_ID: libc::c_int = b'S' as libc::c_int;
pub const SG_DXFER_NONE: libc::c_int = -1;
pub const SG_DXFER_TO_DEV: libc::c_int = -2;
pub const SG_DXFER_FROM_DEV: libc::c_int = -3;
/// `SG_INFO_OK_MASK`/`SG_INFO_CHECK`: the info field's "something went wrong" bit.
pub const SG_INFO_CHECK: libc::c_uint = 0x1;

#[cfg(target_pointer_width = "64")]
const _: () = {
    assert!(size_of::<MtopRaw>() == 8);
    assert!(offset_of!(MtopRaw, mt_count) == 4);
    assert!(size_of::<MtgetRaw>() == 48);
    assert!(offset_of!(MtgetRaw, mt_gstat) == 24);
    assert!(offset_of!(MtgetRaw, mt_fileno) == 40);
    assert!(offset_of!(MtgetRaw, mt_blkno) == 44);
    assert!(size_of::<MtposRaw>() == 8);
    assert!(size_of::<SgIoHdrRaw>() == 88);
    assert!(offset_of!(SgIoHdrRaw, dxfer_len) == 12);
    assert!(offset_of!(SgIoHdrRaw, dxferp) == 16);
    assert!(offset_of!(SgIoHdrRaw, cmdp) == 24);
    assert!(offset_of!(SgIoHdrRaw, sbp) == 32);
    assert!(offset_of!(SgIoHdrRaw, timeout) == 40);
    assert!(offset_of!(SgIoHdrRaw, usr_ptr) == 56);
    assert!(offset_of!(SgIoHdrRaw, status) == 64);
    assert!(offset_of!(SgIoHdrRaw, sb_len_wr) == 67);
    assert!(offset_of!(SgIoHdrRaw, host_status) == 68);
    assert!(offset_of!(SgIoHdrRaw, resid) == 72);
    assert!(offset_of!(SgIoHdrRaw, info) == 80);
};

#[cfg(test)]
mod tests {
    use super::*;

    /// The ioctl numbers as `linux/mtio.h` and `scsi/sg.h` evaluate on x86_64.
    #[test]
    fn ioctl_numbers_match_the_kernel_headers() {
        assert_eq!(MTIOCTOP, 0x4008_6d01);
        assert_eq!(MTIOCGET, 0x8030_6d02);
        assert_eq!(MTIOCPOS, 0x8008_6d03);
        assert_eq!(SG_IO, 0x2285);
    }
}
