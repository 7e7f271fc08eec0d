//! One remote namespace as a [`BlockDevice`].

use std::sync::Arc;

use ferrite_bdev::{BdevError, BlockDevice, Capabilities, IoChannel, PoolRegions};

use crate::channel::RemoteChannel;
use crate::controller::{NsShared, Shared};

/// Namespace `nsid` of a remote controller, named `<controller>n<nsid>`.
#[derive(Debug)]
pub struct RemoteBdev {
    shared: Arc<Shared>,
    ns: Arc<NsShared>,
}

impl RemoteBdev {
    pub(crate) fn new(shared: Arc<Shared>, ns: Arc<NsShared>) -> RemoteBdev {
        RemoteBdev { shared, ns }
    }

    pub fn nsid(&self) -> u32 {
        self.ns.nsid
    }

    /// The controller's name.
    pub fn controller(&self) -> &str {
        &self.shared.opts.name
    }

    /// Why the namespace cannot be used now (gone, shrunk, reformatted), if so.
    pub fn failure(&self) -> Option<String> {
        self.ns.failure()
    }
}

impl BlockDevice for RemoteBdev {
    fn name(&self) -> &str {
        &self.ns.bdev_name
    }

    fn block_size(&self) -> u32 {
        self.ns.block_size
    }

    /// The size at attach: a remote that shrinks is reported as a failure, never as a
    /// smaller device under a pool.
    fn num_blocks(&self) -> u64 {
        self.ns.num_blocks
    }

    fn capabilities(&self) -> Capabilities {
        self.ns.caps
    }

    fn uuid(&self) -> [u8; 16] {
        self.ns.uuid
    }

    /// Registers a mailbox with the manager, which connects this channel's queue pair off
    /// the reactor; I/O submitted meanwhile is held.
    fn open_channel(&self, _buffers: &[&PoolRegions]) -> Result<Box<dyn IoChannel>, BdevError> {
        Ok(Box::new(RemoteChannel::open(
            Arc::clone(&self.shared),
            Arc::clone(&self.ns),
        )))
    }
}
