//! Errors of the initiator.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use ferrite_nvme::fabrics::{parse_connect_invalid_param, ConnectParamLocation};
use ferrite_nvme::tcp::{fes, PduError, PduType};
use ferrite_nvme::{NvmeError, Status};
use thiserror::Error;

/// Result alias of this crate.
pub type Result<T, E = HostError> = std::result::Result<T, E>;

/// Everything that can go wrong talking to an NVMe/TCP target.
#[derive(Debug, Error)]
pub enum HostError {
    /// Nothing listens at the address.
    #[error("connection to {addr} refused")]
    ConnectionRefused {
        /// Target address.
        addr: SocketAddr,
    },
    /// The target reset the TCP connection.
    #[error("connection reset by the target")]
    ConnectionReset,
    /// The target closed the TCP connection (end of stream).
    #[error("connection closed by the target")]
    ConnectionClosed,
    /// No answer in time.
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: &'static str,
        /// How long we waited.
        after: Duration,
    },
    /// Fabrics Connect completed with an error status.
    #[error("Connect refused on queue {qid}: {}{}", connect_status_name(*status), invalid_param_suffix(*status, *dw0))]
    ConnectRejected {
        /// Queue the Connect was for.
        qid: u16,
        /// The status.
        status: Status,
        /// Completion dword 0 (IATTR/IPO for Invalid Parameters).
        dw0: u32,
    },
    /// A command completed with an error status.
    #[error("command failed: {0}")]
    Status(Status),
    /// DH-HMAC-CHAP failed: refused by the controller, or the controller failed to prove
    /// its own key.
    #[error("in-band authentication failed: {0}")]
    Authentication(#[from] ferrite_auth::AuthError),
    /// The target broke the NVMe/TCP protocol.
    #[error("protocol violation by the target: {0}")]
    Protocol(#[from] Violation),
    /// The target sent a C2HTermReq.
    #[error("target terminated the connection: C2HTermReq {} (FES {fes:#x}, FEI {fei:#x})", fes_name(*fes))]
    TermReq {
        /// Fatal error status.
        fes: u16,
        /// Fatal error information.
        fei: u32,
    },
    /// Received C2H data failed its data digest; the command's data is unusable.
    #[error("data digest mismatch on the data of command {cid}")]
    DataDigest {
        /// Command identifier.
        cid: u16,
    },
    /// Every command identifier of the queue is in use.
    #[error("queue full: {depth} commands outstanding")]
    QueueFull {
        /// Queue depth.
        depth: u16,
    },
    /// The caller asked for something impossible.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The queue pair cannot take commands in its current state.
    #[error("queue pair not ready: {0}")]
    NotReady(&'static str),
    /// There is no such I/O queue.
    #[error("no I/O queue {0}")]
    NoSuchQueue(u16),
    /// CSTS.CFS is set.
    #[error("controller fatal status (CSTS.CFS) is set")]
    ControllerFatal,
    /// Encoding or decoding a wire structure failed.
    #[error(transparent)]
    Nvme(#[from] NvmeError),
    /// Another socket error.
    #[error("RDMA error: {0}")]
    Rdma(String),

    #[error("socket error: {0}")]
    Io(io::Error),
}

impl HostError {
    /// The NVMe status, for command failures and Connect rejections.
    pub fn status(&self) -> Option<Status> {
        match self {
            HostError::Status(s) | HostError::ConnectRejected { status: s, .. } => Some(*s),
            _ => None,
        }
    }

    /// True for a timeout.
    pub fn is_timeout(&self) -> bool {
        matches!(self, HostError::Timeout { .. })
    }

    /// True when the connection is gone (closed, reset, terminated, or broken by a violation).
    pub fn is_connection_lost(&self) -> bool {
        matches!(
            self,
            HostError::ConnectionClosed
                | HostError::ConnectionReset
                | HostError::TermReq { .. }
                | HostError::Protocol(_)
                | HostError::Io(_)
        )
    }

    /// Maps a socket error to the variant that names it.
    pub(crate) fn from_io(e: io::Error) -> HostError {
        match e.kind() {
            io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe => HostError::ConnectionReset,
            io::ErrorKind::UnexpectedEof => HostError::ConnectionClosed,
            _ => HostError::Io(e),
        }
    }
}

/// A protocol violation committed by the target.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Violation {
    /// A PDU header failed validation (type, lengths, flags, header digest).
    #[error("bad PDU: {0}")]
    Pdu(#[from] PduError),
    /// A PDU type arrived that the connection state does not allow.
    #[error("unexpected {pdu_type:?} PDU while {state}")]
    Unexpected {
        /// The PDU type.
        pdu_type: PduType,
        /// Connection state.
        state: &'static str,
    },
    /// A PDU referred to a command identifier that is not outstanding.
    #[error("{pdu} for command {cid}, which is not outstanding")]
    UnknownCid {
        /// PDU kind.
        pdu: &'static str,
        /// The CID.
        cid: u16,
    },
    /// Data moved in the direction the command does not transfer.
    #[error("{pdu} for command {cid}, which transfers no data that way")]
    WrongDirection {
        /// PDU kind.
        pdu: &'static str,
        /// The CID.
        cid: u16,
    },
    /// C2HData not at the next expected offset.
    #[error("C2HData for command {cid} at offset {got}, expected {expected}")]
    DataOffset {
        /// The CID.
        cid: u16,
        /// Next expected offset.
        expected: u32,
        /// DATAO received.
        got: u32,
    },
    /// Data beyond the command's transfer length.
    #[error("{pdu} for command {cid}: offset {offset} + length {len} beyond the transfer of {total} bytes")]
    OutOfRange {
        /// PDU kind.
        pdu: &'static str,
        /// The CID.
        cid: u16,
        /// Offset.
        offset: u32,
        /// Length.
        len: u32,
        /// Command transfer length.
        total: u32,
    },
    /// R2T for a command whose data went in-capsule, or with zero length.
    #[error("invalid R2T for command {cid}: {reason}")]
    BadR2t {
        /// The CID.
        cid: u16,
        /// Why.
        reason: &'static str,
    },
    /// ICResp with a field the host cannot accept.
    #[error("invalid ICResp {field} = {value:#x}")]
    BadIcResp {
        /// Field name.
        field: &'static str,
        /// Value found.
        value: u32,
    },
    /// A command completed successfully without all of its data.
    #[error("command {cid} completed with {got} of {expected} data bytes")]
    ShortTransfer {
        /// The CID.
        cid: u16,
        /// Bytes asked for.
        expected: u32,
        /// Bytes received.
        got: u32,
    },
    /// A wire structure could not be decoded.
    #[error("undecodable {what}: {source}")]
    Decode {
        /// What was decoded.
        what: &'static str,
        /// Decoder error.
        source: NvmeError,
    },
}

/// Spec name of a Connect status (command-specific codes 80h..85h mean
/// something else for Connect than for I/O commands).
pub fn connect_status_name(status: Status) -> String {
    let name = match (status.sct(), status.sc()) {
        (1, 0x80) => "CONNECT_INCOMPATIBLE_FORMAT",
        (1, 0x81) => "CONNECT_CONTROLLER_BUSY",
        (1, 0x82) => "CONNECT_INVALID_PARAMETERS",
        (1, 0x83) => "CONNECT_RESTART_DISCOVERY",
        (1, 0x84) => "CONNECT_INVALID_HOST",
        (1, 0x85) => "INVALID_QUEUE_TYPE",
        (1, 0x90) => "DISCOVER_RESTART",
        (1, 0x91) => "AUTHENTICATION_REQUIRED",
        _ => return status.to_string(),
    };
    let dnr = if status.dnr() { ", dnr" } else { "" };
    format!(
        "{name} (sct {:#x}, sc {:#04x}{dnr})",
        status.sct(),
        status.sc()
    )
}

fn invalid_param_suffix(status: Status, dw0: u32) -> String {
    if status.code() != Status::CONNECT_INVALID_PARAMETERS {
        return String::new();
    }
    let (loc, off) = parse_connect_invalid_param(dw0);
    let loc = match loc {
        ConnectParamLocation::Command => "command",
        ConnectParamLocation::Data => "data",
    };
    format!(", parameter at {loc} byte {off}")
}

/// Spec name of a TermReq Fatal Error Status.
pub fn fes_name(value: u16) -> &'static str {
    match value {
        fes::INVALID_HEADER_FIELD => "Invalid PDU Header Field",
        fes::PDU_SEQUENCE_ERROR => "PDU Sequence Error",
        fes::HEADER_DIGEST_ERROR => "Header Digest Error",
        fes::DATA_OUT_OF_RANGE => "Data Transfer Out of Range",
        fes::DATA_LIMIT_EXCEEDED => "Data Transfer Limit Exceeded",
        fes::UNSUPPORTED_PARAMETER => "Unsupported Parameter",
        _ => "unknown FES",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_problem() {
        let e = HostError::ConnectRejected {
            qid: 0,
            status: Status::CONNECT_INVALID_HOST.with_dnr(),
            dw0: 0,
        };
        assert!(e.to_string().contains("Connect refused"), "{e}");
        assert!(e.to_string().contains("CONNECT_INVALID_HOST"), "{e}");
        assert_eq!(
            e.status().map(Status::code),
            Some(Status::CONNECT_INVALID_HOST)
        );
        let e = HostError::ConnectRejected {
            qid: 1,
            status: Status::CONNECT_INVALID_PARAMETERS,
            dw0: 0x0200_0001,
        };
        assert!(e.to_string().contains("data byte 512"), "{e}");
        let t = HostError::TermReq {
            fes: fes::HEADER_DIGEST_ERROR,
            fei: 0,
        };
        assert!(t.to_string().contains("Header Digest Error"), "{t}");
        assert!(t.is_connection_lost());
        let s = HostError::Status(Status::LBA_OUT_OF_RANGE);
        assert!(s.to_string().contains("LBA Out of Range"), "{s}");
        assert!(!s.is_connection_lost());
    }

    #[test]
    fn io_errors_are_classified() {
        let e = HostError::from_io(io::Error::from(io::ErrorKind::ConnectionReset));
        assert!(matches!(e, HostError::ConnectionReset));
        let e = HostError::from_io(io::Error::from(io::ErrorKind::UnexpectedEof));
        assert!(matches!(e, HostError::ConnectionClosed));
        let e = HostError::from_io(io::Error::from(io::ErrorKind::PermissionDenied));
        assert!(matches!(e, HostError::Io(_)));
    }
}
