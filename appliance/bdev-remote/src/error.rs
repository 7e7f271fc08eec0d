//! Errors of attaching a remote controller.

use ferrite_host::HostError;

/// Why an attach (or a reconnect) failed.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// A parameter is wrong before anything is tried.
    #[error("invalid parameter: {0}")]
    InvalidArgument(String),
    /// The remote could not be reached or refused us (`what` says at which step).
    #[error("remote {addr} subsystem {subnqn}: {what}: {source}")]
    Connect {
        addr: std::net::SocketAddr,
        subnqn: String,
        what: &'static str,
        #[source]
        source: Box<HostError>,
    },
    /// The remote has no namespace we can use.
    #[error("remote {addr} subsystem {subnqn}: {message}")]
    Namespace {
        addr: std::net::SocketAddr,
        subnqn: String,
        message: String,
    },
}
