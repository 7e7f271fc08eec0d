use thiserror::Error;

/// A failed verbs or connection-manager call, with the errno it left.
#[derive(Debug, Error)]
pub enum RdmaError {
    #[error("{call}: {source}")]
    Os {
        call: &'static str,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

impl RdmaError {
    /// The error of a call that just failed, from errno.
    pub(crate) fn last(call: &'static str) -> RdmaError {
        RdmaError::Os {
            call,
            source: std::io::Error::last_os_error(),
        }
    }

    /// The error of a call that returned an errno-style code (verbs post functions).
    pub(crate) fn code(call: &'static str, code: i32) -> RdmaError {
        RdmaError::Os {
            call,
            source: std::io::Error::from_raw_os_error(code),
        }
    }

    /// Whether retrying later can succeed (a full queue, a non-blocking call with nothing yet).
    pub fn is_retryable(&self) -> bool {
        matches!(self, RdmaError::Os { source, .. }
            if matches!(source.raw_os_error(), Some(libc::EAGAIN) | Some(libc::ENOMEM)))
    }
}
