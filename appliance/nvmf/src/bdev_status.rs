//! The NVMe status a host sees for a backend failure: one mapping for reads and writes (`io`)
//! and for Copy (`copy`), below both.

use ferrite_bdev::BdevError;
use ferrite_nvme::Status;

/// The status a host sees for a backend failure.
pub(crate) fn status_of(e: &BdevError, is_read: bool) -> Status {
    match e {
        BdevError::OutOfRange { .. } => Status::LBA_OUT_OF_RANGE,
        BdevError::Unsupported(_) => Status::INVALID_OPCODE,
        BdevError::ReadOnly => Status::NAMESPACE_WRITE_PROTECTED,
        BdevError::NoSpace => Status::CAPACITY_EXCEEDED,
        BdevError::NotReady(_) => Status::NAMESPACE_NOT_READY,
        BdevError::Io(err) if err.raw_os_error() == Some(libc_enospc()) => {
            Status::CAPACITY_EXCEEDED
        }
        BdevError::Io(_) if is_read => Status::UNRECOVERED_READ_ERROR,
        BdevError::Io(_) => Status::WRITE_FAULT,
        _ => Status::INTERNAL_ERROR,
    }
}

/// ENOSPC on Linux.
const fn libc_enospc() -> i32 {
    28
}
