//! A volume as a block device.

use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use ferrite_bdev::{BdevError, BlockDevice, Capabilities, IoChannel};

use crate::channel::VolumeChannel;
use crate::info::{VolumeInfo, VolumeStats};
use crate::shared::{Cmd, Msg, Reply, VolumeShared};
use crate::Provisioning;

/// Largest Read/Write a volume accepts (requests are split at cluster boundaries inside).
pub const MAX_TRANSFER: u32 = 4 << 20;

/// A virtual namespace: a volume, snapshot or clone. Implements `BlockDevice`; its bdev name
/// is `"<pool>/<volume>"` (a rename yields a new handle with the new name).
pub struct Volume {
    pub(crate) bdev_name: String,
    pub(crate) vol_name: String,
    pub(crate) shared: Arc<VolumeShared>,
}

impl std::fmt::Debug for Volume {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Volume")
            .field("name", &self.bdev_name)
            .field("id", &self.shared.id)
            .finish()
    }
}

impl Volume {
    /// Name, kind, size, parent, clones, space use, ... (asks the owner; the last known
    /// answer when the pool is offline).
    pub fn info(&self) -> VolumeInfo {
        let (tx, rx) = mpsc::sync_channel(1);
        let asked = self
            .shared
            .pool
            .send(Msg::Cmd(Cmd::VolumeInfo(self.shared.id), tx))
            .is_ok();
        if asked {
            if let Ok(Ok(Reply::VolumeInfo(i))) = rx.recv_timeout(Duration::from_secs(10)) {
                *self.shared.last_info.lock().expect("info lock") = Some((*i).clone());
                return *i;
            }
        }
        self.shared
            .last_info
            .lock()
            .expect("info lock")
            .clone()
            .unwrap_or_else(|| VolumeInfo {
                name: self.vol_name.clone(),
                pool: self.shared.pool.name.clone(),
                kind: if self.shared.read_only {
                    crate::VolumeKind::Snapshot
                } else {
                    crate::VolumeKind::Volume
                },
                size_bytes: self.shared.table.load().size_bytes,
                parent: None,
                origin: None,
                clones: Vec::new(),
                allocated_bytes: 0,
                shared_bytes: 0,
                exclusive_bytes: 0,
                uuid: crate::uuid_string(&self.shared.uuid),
                read_only: self.shared.read_only,
                provisioning: self.shared.prov,
                created: 0,
            })
    }

    /// I/O counters summed over open and closed channels.
    pub fn stats(&self) -> VolumeStats {
        let mut s = VolumeStats::default();
        self.shared.retired.add_to(&mut s);
        for c in self
            .shared
            .channels
            .lock()
            .expect("channel registry lock")
            .iter()
        {
            c.counters.add_to(&mut s);
        }
        s.cow_copies = self.shared.cow_copies.load(Ordering::Relaxed);
        s
    }

    /// The bdev name, `"<pool>/<volume>"` (also `BlockDevice::name`).
    pub fn name(&self) -> &str {
        &self.bdev_name
    }

    pub fn pool_name(&self) -> &str {
        &self.shared.pool.name
    }

    pub fn volume_name(&self) -> String {
        self.vol_name.clone()
    }

    pub fn size_bytes(&self) -> u64 {
        self.shared.table.load().size_bytes
    }

    pub fn is_read_only(&self) -> bool {
        self.shared.read_only
    }
}

impl BlockDevice for Volume {
    fn name(&self) -> &str {
        &self.bdev_name
    }

    fn block_size(&self) -> u32 {
        self.shared.pool.block_size
    }

    fn num_blocks(&self) -> u64 {
        self.shared.table.load().num_blocks
    }

    fn capabilities(&self) -> Capabilities {
        let devs = &self.shared.pool.devs;
        Capabilities {
            write_zeroes: true,
            unmap: true,
            volatile_write_cache: devs.iter().any(|d| d.capabilities().volatile_write_cache),
            max_transfer_bytes: MAX_TRANSFER,
            copy: true,
            read_only: self.shared.read_only,
            thin_provisioned: self.shared.prov == Provisioning::Thin,
        }
    }

    fn uuid(&self) -> [u8; 16] {
        self.shared.uuid
    }

    fn open_channel(
        &self,
        buffers: &[&ferrite_bdev::PoolRegions],
    ) -> Result<Box<dyn IoChannel>, BdevError> {
        Ok(Box::new(VolumeChannel::open(
            Arc::clone(&self.shared),
            buffers,
        )?))
    }

    fn allocated_blocks(&self) -> Option<u64> {
        let t = self.shared.table.load();
        let mapped = (0..t.len())
            .filter(|&vc| !matches!(t.get(vc).state(), crate::entry::EntryState::Unallocated))
            .count() as u64;
        Some((mapped * self.shared.pool.cluster_blocks).min(t.num_blocks))
    }
}
