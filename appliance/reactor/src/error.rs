//! Typed errors of the reactor crate.

use crate::cores::CoreId;

/// Errors of starting, using and stopping the runtime.
#[derive(Debug, thiserror::Error)]
pub enum ReactorError {
    #[error("reactor index {index} out of range: there are {count} reactors")]
    NoSuchReactor { index: usize, count: usize },
    #[error("pinning reactor {index} to core {core} failed: {reason}")]
    Pin {
        index: usize,
        core: CoreId,
        reason: String,
    },
    #[error("starting the thread of reactor {index} failed: {source}")]
    Thread {
        index: usize,
        #[source]
        source: std::io::Error,
    },
    #[error("{op} failed: {source}")]
    Io {
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("reactor {index} has stopped")]
    ReactorGone { index: usize },
    #[error("reactor {index} panicked")]
    Panicked { index: usize },
    #[error("reactor {index} gave up waiting at shutdown: {pending} task(s) never finished")]
    ShutdownTimeout { index: usize, pending: usize },
    #[error("invalid runtime configuration: {0}")]
    Config(String),
}

impl ReactorError {
    pub(crate) fn io(op: &'static str, source: impl Into<std::io::Error>) -> Self {
        Self::Io {
            op,
            source: source.into(),
        }
    }
}

/// Why a message did not reach (or did not come back from) a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The bounded inbox is full: backpressure, try again later.
    #[error("task inbox is full")]
    Full,
    /// The task has stopped (or its reactor has): the message will never run.
    #[error("task has stopped")]
    Closed,
    /// `call` got no reply in time; the message may still run later.
    #[error("no reply within the timeout")]
    Timeout,
    /// `call` from a thread that runs the target task would wait for itself.
    #[error("call would wait for the reactor it runs on")]
    WouldDeadlock,
}

impl SendError {
    /// Whether sending the same message again later can succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Full)
    }
}

/// Errors of parsing an idle policy such as `poll` or `park:200us:1ms`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdlePolicyError {
    #[error("unknown idle policy {0:?}: expected \"poll\" or \"park[:AFTER[:MAX]]\"")]
    Unknown(String),
    #[error("invalid duration {0:?}: expected a number with a unit (ns, us, ms, s), e.g. 200us")]
    BadDuration(String),
    #[error("the longest park must be more than zero")]
    ZeroMax,
}
