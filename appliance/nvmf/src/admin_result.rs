//! The outcome of an admin handler, shared by `admin` (which dispatches) and `logpage` (which
//! fills log pages): below both, so they depend on it and not on each other.

use ferrite_nvme::Status;

/// Outcome of a handler that produced data or a plain status.
pub(crate) struct AdminResult {
    pub status: Status,
    pub dw0: u32,
    /// Bytes of the command's buffer that go to the host.
    pub data_len: u32,
}

impl AdminResult {
    pub(crate) fn status(status: Status) -> AdminResult {
        AdminResult {
            status,
            dw0: 0,
            data_len: 0,
        }
    }

    pub(crate) fn ok(dw0: u32) -> AdminResult {
        AdminResult {
            status: Status::SUCCESS,
            dw0,
            data_len: 0,
        }
    }

    pub(crate) fn data(len: u32) -> AdminResult {
        AdminResult {
            status: Status::SUCCESS,
            dw0: 0,
            data_len: len,
        }
    }
}
