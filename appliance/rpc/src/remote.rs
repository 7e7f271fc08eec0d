//! What the `bdev_nvme_*` methods need from the daemon: remote controllers whose namespaces
//! are registered as bdevs.

use ferrite_bdev_remote::{ControllerInfo, RemoteOptions};

use crate::protocol::RpcError;

pub trait RemoteHost {
    /// Attaches a remote NVMe-oF/TCP controller and registers one bdev per namespace;
    /// returns their names.
    fn attach_remote(&self, opts: RemoteOptions) -> Result<Vec<String>, RpcError>;

    /// Unregisters the controller's bdevs (none may be exported or a pool member) and
    /// disconnects.
    fn detach_remote(&self, name: &str) -> Result<(), RpcError>;

    /// Every attached controller, sorted by name.
    fn remote_controllers(&self) -> Vec<ControllerInfo>;
}
