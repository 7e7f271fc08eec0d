//! Read-only views for monitoring (the Prometheus endpoint): per-controller command and byte
//! counters, taken off the I/O path (the admin-side controller table lock only).

use crate::controller::ControllerInfo;
use crate::target::Target;

/// One controller's identity and its health counters (SMART figures, all its queues).
#[derive(Debug, Clone)]
pub struct ControllerSnapshot {
    pub info: ControllerInfo,
    pub read_commands: u64,
    pub write_commands: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub media_errors: u64,
}

impl Target {
    pub fn controller_snapshots(&self) -> Vec<ControllerSnapshot> {
        let table = self.controllers.lock().unwrap_or_else(|p| p.into_inner());
        table
            .values()
            .map(|c| {
                let h = c.health_totals();
                ControllerSnapshot {
                    info: c.info(),
                    read_commands: h.read_commands,
                    write_commands: h.write_commands,
                    bytes_read: h.bytes_read,
                    bytes_written: h.bytes_written,
                    media_errors: h.media_errors,
                }
            })
            .collect()
    }
}
