//! Remote NVMe-oF controllers (`bdev_nvme_attach_controller`, `[[nvme_controller]]`): their
//! namespaces are registered as bdevs `<name>n<nsid>`, usable as namespaces, pool members
//! or bases of fault-test bdevs. Attached after the `[[bdev]]` sections and before the pools,
//! so a pool can live on another appliance's capacity.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use ferrite_bdev::BlockDevice;
use ferrite_bdev_remote::{ControllerInfo, RemoteController, RemoteOptions};
use ferrite_rpc::methods::bdev_nvme::AttachParams;
use ferrite_rpc::protocol::{ALREADY_EXISTS, BUSY};
use ferrite_rpc::remote::RemoteHost;
use ferrite_rpc::{Appliance, RpcError};

use crate::control::Control;

/// The attached controllers with the section each is written back as.
#[derive(Debug, Default)]
pub(crate) struct Remotes {
    map: Mutex<BTreeMap<String, (Arc<RemoteController>, AttachParams)>>,
}

impl Remotes {
    fn map(&self) -> MutexGuard<'_, BTreeMap<String, (Arc<RemoteController>, AttachParams)>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The `[[nvme_controller]]` sections of the running configuration.
    pub(crate) fn configs(&self) -> Vec<AttachParams> {
        self.map().values().map(|(_, p)| p.clone()).collect()
    }

    /// The controller a bdev belongs to.
    pub(crate) fn controller_of(&self, bdev: &str) -> Option<String> {
        self.map()
            .values()
            .find(|(c, _)| c.bdevs().iter().any(|b| b.name() == bdev))
            .map(|(c, _)| c.name().to_string())
    }

    /// Detaches everything (shutdown).
    pub(crate) fn close_all(&self) {
        let all = std::mem::take(&mut *self.map());
        for (_, (c, _)) in all {
            c.detach();
        }
    }
}

impl Control {
    /// Attaches the controller `p` describes (a configuration section or an RPC).
    pub(crate) fn attach_remote_params(&self, p: &AttachParams) -> Result<Vec<String>, RpcError> {
        if !p.trtype.eq_ignore_ascii_case("tcp") {
            return Err(RpcError::invalid_params(format!(
                "nvme_controller {}: trtype {:?} is not supported (tcp)",
                p.name, p.trtype
            )));
        }
        let opts = p.tcp_options()?;
        self.attach(opts, p.clone())
    }

    fn attach(&self, opts: RemoteOptions, record: AttachParams) -> Result<Vec<String>, RpcError> {
        let name = opts.name.clone();
        if self.remotes.map().contains_key(&name) {
            return Err(RpcError::new(
                ALREADY_EXISTS,
                format!("NVMe controller {name} already exists"),
            ));
        }
        let ctrl =
            RemoteController::attach(opts).map_err(|e| RpcError::invalid_params(e.to_string()))?;
        let mut added: Vec<String> = Vec::new();
        for b in ctrl.bdevs() {
            let dev: Arc<dyn BlockDevice> = b.clone();
            if let Err(e) = self.target.add_bdev(b.name(), dev) {
                for n in &added {
                    let _ = self.target.remove_bdev(n);
                }
                ctrl.detach();
                return Err(RpcError::new(
                    ALREADY_EXISTS,
                    format!("controller {name}: bdev {}: {e}", b.name()),
                ));
            }
            added.push(b.name().to_string());
        }
        log::info!("NVMe controller {name}: bdevs {added:?}");
        self.remotes.map().insert(name, (ctrl, record));
        Ok(added)
    }
}

impl RemoteHost for Control {
    fn attach_remote(&self, opts: RemoteOptions) -> Result<Vec<String>, RpcError> {
        let record = AttachParams {
            name: opts.name.clone(),
            trtype: "tcp".into(),
            traddr: opts.addr.ip().to_string(),
            adrfam: None,
            trsvcid: Some(opts.addr.port().to_string()),
            subnqn: opts.subnqn.clone(),
            hostnqn: opts.hostnqn.clone(),
            hdgst: opts.header_digest,
            ddgst: opts.data_digest,
            ctrlr_loss_timeout_sec: Some(if opts.ctrlr_loss_timeout == std::time::Duration::MAX {
                -1
            } else {
                opts.ctrlr_loss_timeout.as_secs() as i64
            }),
            reconnect_delay_sec: Some(opts.reconnect_delay.as_secs()),
        };
        self.attach(opts, record)
    }

    fn detach_remote(&self, name: &str) -> Result<(), RpcError> {
        let _guard = self.volume_lock();
        let Some(ctrl) = self.remotes.map().get(name).map(|(c, _)| Arc::clone(c)) else {
            return Err(RpcError::not_found(format!(
                "no NVMe controller named {name}"
            )));
        };
        let names: Vec<String> = ctrl.bdevs().iter().map(|b| b.name().to_string()).collect();
        let cfg = self.target.config();
        for b in &names {
            if let Some(pool) = self.pools.pool_of_bdev(b) {
                return Err(RpcError::new(
                    BUSY,
                    format!("bdev {b} of controller {name} is a member of pool {pool} (delete the pool first)"),
                ));
            }
            if let Some(s) = cfg
                .subsystems
                .values()
                .find(|s| s.namespaces.values().any(|ns| &ns.bdev_name == b))
            {
                return Err(RpcError::new(
                    BUSY,
                    format!(
                        "bdev {b} of controller {name} is a namespace of {} (remove it first)",
                        s.nqn
                    ),
                ));
            }
            if let Some(over) = self.bdev_stacked_on(b) {
                return Err(RpcError::new(
                    BUSY,
                    format!(
                        "bdev {b} of controller {name} is the base of {over} (delete it first)"
                    ),
                ));
            }
        }
        drop(cfg);
        for b in &names {
            self.target.remove_bdev(b)?;
        }
        self.remotes.map().remove(name);
        ctrl.detach();
        log::info!("NVMe controller {name} detached over RPC");
        Ok(())
    }

    fn remote_controllers(&self) -> Vec<ControllerInfo> {
        self.remotes.map().values().map(|(c, _)| c.info()).collect()
    }
}
