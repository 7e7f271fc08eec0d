//! NVMe in-band authentication: DH-HMAC-CHAP (NVMe Base 2.0 section 8.13.5, TP 8006).
//!
//! - [`key`]: secrets in the `DHHC-1:XX:<base64>:` form `nvme gen-dhchap-key` prints, with
//!   their CRC-32 and the optional NQN transform.
//! - [`hash`], [`dh`]: SHA-256/384/512 HMAC (RustCrypto) and the RFC 7919 FFDHE groups
//!   (`num-bigint`), plus the null group.
//! - [`message`]: the wire format of AUTH_Negotiate ... AUTH_Failure2 and the Authentication
//!   Send/Receive command dwords.
//! - [`ControllerAuth`]: the controller's per-queue state machine; the NVMe-oF layer feeds it
//!   Authentication Send payloads and asks it for Authentication Receive payloads.
//! - [`HostAuth`]: the host side, used by `ferrite-host` and by tests for full exchanges.
//! - [`Keyring`]: named secrets loaded from files (SPDK's `keyring_file_add_key`).
//!
//! No I/O happens here: both state machines are plain values driven by the caller.
#![forbid(unsafe_code)]
// Tests unwrap freely: a panic there is the failure report.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod dh;
pub mod hash;
pub mod key;
pub mod message;

mod controller;
mod host;
mod keyring;
mod response;
#[cfg(test)]
mod tests;

pub use controller::{AuthPolicy, AuthState, ControllerAuth, HostKeys};
pub use dh::DhGroup;
pub use hash::HashId;
pub use host::HostAuth;
pub use key::DhchapKey;
pub use keyring::{Keyring, KeyringEntry};
pub use message::{FailureReason, Message};
pub use response::{augmented_challenge, ctrl_response, host_response};

/// Errors of secrets, keyrings and the host side of an exchange.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("invalid DH-HMAC-CHAP secret: {0}")]
    BadKey(String),
    #[error("invalid DH public value: {0}")]
    BadDhValue(String),
    #[error("the controller refused authentication: {0}")]
    Refused(FailureReason),
    #[error("authentication protocol error ({reason}): {detail}")]
    Protocol {
        reason: FailureReason,
        detail: String,
    },
    #[error(
        "the controller's response does not match its key (bidirectional authentication failed)"
    )]
    ControllerNotAuthenticated,
    #[error("keyring: {0}")]
    Keyring(String),
}

impl AuthError {
    /// The explanation a host sends in AUTH_Failure2 for this error.
    pub fn failure_reason(&self) -> FailureReason {
        match self {
            AuthError::Protocol { reason, .. } | AuthError::Refused(reason) => *reason,
            AuthError::BadDhValue(_) => FailureReason::DhGroupUnusable,
            _ => FailureReason::Failed,
        }
    }
}
