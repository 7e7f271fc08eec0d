//! What `bdev_nvme_attach_controller` asks for.

use std::net::SocketAddr;
use std::time::Duration;

use crate::RemoteError;

/// Default `ctrlr_loss_timeout_sec`: I/O is held this long after a path loss.
pub const DEFAULT_CTRLR_LOSS_TIMEOUT: Duration = Duration::from_secs(30);
/// Default `reconnect_delay_sec`.
pub const DEFAULT_RECONNECT_DELAY: Duration = Duration::from_secs(1);
/// Default per-command timeout: a command outstanding longer starts a reset.
pub const DEFAULT_IO_TIMEOUT: Duration = Duration::from_secs(30);
/// Most I/O queues asked of the remote (one per reactor that opens a channel).
pub const MAX_IO_QUEUES: u16 = 64;

/// How to attach one remote controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteOptions {
    /// Controller name; its bdevs are `<name>n<nsid>`.
    pub name: String,
    pub addr: SocketAddr,
    pub subnqn: String,
    /// None: the initiator's default UUID host NQN.
    pub hostnqn: Option<String>,
    pub header_digest: bool,
    pub data_digest: bool,
    /// After a path loss, held I/O fails once this has passed without a reconnect (0: at once).
    pub ctrlr_loss_timeout: Duration,
    /// Pause between reconnect attempts.
    pub reconnect_delay: Duration,
    /// A command outstanding longer than this starts a reset.
    pub io_timeout: Duration,
    /// Commands outstanding per I/O queue (clamped to the remote's CAP.MQES).
    pub queue_depth: u16,
}

impl RemoteOptions {
    pub fn new(name: &str, addr: SocketAddr, subnqn: &str) -> RemoteOptions {
        RemoteOptions {
            name: name.to_owned(),
            addr,
            subnqn: subnqn.to_owned(),
            hostnqn: None,
            header_digest: false,
            data_digest: false,
            ctrlr_loss_timeout: DEFAULT_CTRLR_LOSS_TIMEOUT,
            reconnect_delay: DEFAULT_RECONNECT_DELAY,
            io_timeout: DEFAULT_IO_TIMEOUT,
            queue_depth: 64,
        }
    }

    /// Checks what can be checked without the network.
    pub fn validate(&self) -> Result<(), RemoteError> {
        let bad = |m: String| Err(RemoteError::InvalidArgument(m));
        if self.name.is_empty()
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
        {
            return bad(format!(
                "controller name {:?} must be letters, digits, '_', '-' or '.'",
                self.name
            ));
        }
        ferrite_nvme::nqn::validate_nqn(&self.subnqn)
            .map_err(|e| RemoteError::InvalidArgument(format!("subnqn {:?}: {e}", self.subnqn)))?;
        if let Some(h) = &self.hostnqn {
            ferrite_nvme::nqn::validate_nqn(h)
                .map_err(|e| RemoteError::InvalidArgument(format!("hostnqn {h:?}: {e}")))?;
        }
        if self.queue_depth < 2 {
            return bad(format!("queue depth {} below 2", self.queue_depth));
        }
        if self.reconnect_delay.is_zero() {
            return bad("reconnect_delay_sec must be at least 1".into());
        }
        if !self.ctrlr_loss_timeout.is_zero() && self.ctrlr_loss_timeout < self.reconnect_delay {
            return bad(format!(
                "ctrlr_loss_timeout_sec ({}) is shorter than reconnect_delay_sec ({}): no reconnect could ever be tried",
                self.ctrlr_loss_timeout.as_secs(),
                self.reconnect_delay.as_secs()
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_the_problem() {
        let addr = ([127, 0, 0, 1], 4420).into();
        let ok = RemoteOptions::new("r0", addr, "nqn.2026-01.io.ferrite:x");
        ok.validate().expect("valid");
        let mut o = ok.clone();
        o.name = "a b".into();
        assert!(o
            .validate()
            .expect_err("refused")
            .to_string()
            .contains("controller name"));
        let mut o = ok.clone();
        o.subnqn = "not-an-nqn".into();
        assert!(o
            .validate()
            .expect_err("refused")
            .to_string()
            .contains("subnqn"));
        let mut o = ok.clone();
        o.ctrlr_loss_timeout = Duration::from_secs(1);
        o.reconnect_delay = Duration::from_secs(5);
        assert!(o
            .validate()
            .expect_err("refused")
            .to_string()
            .contains("reconnect_delay_sec"));
        let mut o = ok;
        o.reconnect_delay = Duration::ZERO;
        assert!(o.validate().is_err());
    }
}
