//! Start-up and shutdown of the target: reactors, backends, subsystems, transport.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use ferrite_bdev::{BdevKind, BlockDevice, FileBdev, MallocBdev, NullBdev};
use ferrite_nvmf::{NamespaceParams, SubsystemParams, Target, TargetOptions};
use ferrite_reactor::{CoreList, IdlePolicy, Runtime, RuntimeConfig};
use ferrite_transport_tcp::{TcpOptions, TcpTransport};

use crate::config::{parse_hex16, parse_size, BdevConfig, Config};

/// A running target.
#[derive(Debug)]
pub struct Daemon {
    pub target: Arc<Target>,
    pub transport: TcpTransport,
    runtime: Runtime,
    /// Backing files to sync at shutdown.
    files: Vec<PathBuf>,
    pub listening: Vec<SocketAddr>,
}

impl Daemon {
    /// Starts everything `config` describes; `pin` pins reactors to their cores.
    pub fn start(config: &Config, pin: bool) -> Result<Daemon> {
        let cores: CoreList = match &config.cores {
            Some(text) => text
                .parse()
                .map_err(|e| anyhow!("invalid cores {text:?}: {e}"))?,
            None => CoreList::default(),
        };
        let idle: IdlePolicy = match &config.idle {
            Some(text) => text
                .parse()
                .map_err(|e| anyhow!("invalid idle policy {text:?}: {e}"))?,
            None => IdlePolicy::default(),
        };
        let runtime = Runtime::start(RuntimeConfig {
            cores: cores.clone(),
            idle,
            pin,
            ..RuntimeConfig::default()
        })
        .with_context(|| format!("starting reactors on cores {cores}"))?;
        log::info!(
            "{} reactor(s) on cores {cores}, idle policy {idle}",
            runtime.reactor_count()
        );
        let target = Target::new(TargetOptions::default());
        let mut files = Vec::new();
        for b in &config.bdevs {
            let bdev = open_bdev(b)?;
            if let Some(path) = &b.path {
                files.push(path.clone());
            }
            log::info!(
                "bdev {}: {} x {} bytes ({})",
                b.name,
                bdev.num_blocks(),
                bdev.block_size(),
                b.kind
            );
            target
                .add_bdev(&b.name, bdev)
                .with_context(|| format!("bdev {}", b.name))?;
        }
        for s in &config.subsystems {
            target
                .create_subsystem(SubsystemParams {
                    nqn: s.nqn.clone(),
                    serial: s.serial_number.clone(),
                    model: s.model_number.clone(),
                    allow_any_host: s.allow_any_host,
                    max_namespaces: None,
                })
                .with_context(|| format!("subsystem {}", s.nqn))?;
            for host in &s.hosts {
                target
                    .add_host(&s.nqn, host)
                    .with_context(|| format!("subsystem {} host {host}", s.nqn))?;
            }
            for ns in &s.namespaces {
                let hex = |field: &str, v: &Option<String>| -> Result<Option<[u8; 16]>> {
                    v.as_deref()
                        .map(|t| {
                            parse_hex16(t)
                                .ok_or_else(|| anyhow!("{field} {t:?} is not 32 hex digits"))
                        })
                        .transpose()
                };
                let params = NamespaceParams {
                    nsid: ns.nsid,
                    bdev_name: ns.bdev.clone(),
                    uuid: hex("uuid", &ns.uuid)?,
                    nguid: hex("nguid", &ns.nguid)?,
                };
                let nsid = target
                    .add_namespace(&s.nqn, params)
                    .with_context(|| format!("subsystem {} namespace", s.nqn))?;
                log::info!("subsystem {}: namespace {nsid} = bdev {}", s.nqn, ns.bdev);
            }
        }
        let transport = TcpTransport::start(Arc::clone(&target), &runtime, TcpOptions::default())?;
        let mut listening = Vec::new();
        for addr in &config.listen {
            listening.push(transport.listen(*addr)?);
        }
        Ok(Daemon {
            target,
            transport,
            runtime,
            files,
            listening,
        })
    }

    /// Controlled stop: controllers fail (hosts see their queues close), listeners and
    /// connections close, reactors stop, backing files are synced.
    pub fn shutdown(self) -> Result<()> {
        self.target.fail_all_controllers("target shutting down");
        self.transport.shutdown();
        self.runtime
            .shutdown()
            .map_err(|e| anyhow!("stopping reactors: {e}"))?;
        for path in &self.files {
            if let Err(e) = std::fs::File::open(path).and_then(|f| f.sync_all()) {
                log::warn!("sync {}: {e}", path.display());
            }
        }
        log::info!("ferrited stopped");
        Ok(())
    }

    pub fn reactor_stats(&self) -> Vec<ferrite_reactor::ReactorStats> {
        self.runtime.stats()
    }
}

fn open_bdev(b: &BdevConfig) -> Result<Arc<dyn BlockDevice>> {
    let kind: BdevKind = b
        .kind
        .parse()
        .map_err(|e| anyhow!("bdev {}: {e}", b.name))?;
    let block_size = b.block_size.unwrap_or(4096);
    let size = b.size.as_deref().map(parse_size).transpose()?;
    let blocks = |size: Option<u64>| -> Result<u64> {
        let size =
            size.ok_or_else(|| anyhow!("bdev {}: size is required for {} bdevs", b.name, b.kind))?;
        if size == 0 || size % block_size as u64 != 0 {
            bail!(
                "bdev {}: size {size} is not a positive multiple of the block size {block_size}",
                b.name
            );
        }
        Ok(size / block_size as u64)
    };
    Ok(match kind {
        BdevKind::Malloc => Arc::new(MallocBdev::new(&b.name, blocks(size)?, block_size)?),
        BdevKind::Null => Arc::new(NullBdev::new(&b.name, blocks(size)?, block_size)?),
        BdevKind::File => {
            let path = b
                .path
                .as_ref()
                .ok_or_else(|| anyhow!("bdev {}: path is required for file bdevs", b.name))?;
            let bdev = if path.exists() {
                FileBdev::open(&b.name, path, b.block_size)?
            } else {
                let size = size.ok_or_else(|| {
                    anyhow!(
                        "bdev {}: {} does not exist and no size was given to create it",
                        b.name,
                        path.display()
                    )
                })?;
                FileBdev::create(&b.name, path, size, block_size)?
            };
            Arc::new(bdev)
        }
    })
}
