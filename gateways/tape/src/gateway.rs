//! The gateway process's state: its library, catalog and jobs, and the `tape_*` JSON-RPC
//! methods (docs/rpc.md). One job runs at a time on the configured drive; RPCs that need the
//! library while it runs answer BUSY with the job's id.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};

use ferrite_rpc::protocol::{self, RpcError};
use ferrite_tape_device::vtl::VirtualLibrary;
use ferrite_tape_device::{open_library, Barcode, Element, Library, LibraryConfig};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::backup::{run_backup, BackupSpec, Progress};
use crate::catalog::{Catalog, JobState};
use crate::error::TapeError;
use crate::incremental::Incremental;
use crate::journal::{run_journal_archive, run_journal_replay, ArchiveSpec, ReplaySpec};
use crate::restore::{run_restore, run_verify, scan_cartridge, RestoreSpec};
use crate::source::NvmeTcpEndpoint;
use crate::tapeio::{now_secs, LabelState, Mounter};

fn default_chunk() -> u32 {
    1 << 20
}
fn default_window() -> usize {
    32
}
fn default_connections() -> usize {
    4
}
fn default_retention() -> u64 {
    30
}

/// The gateway's configuration file (TOML).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The JSON-RPC Unix socket.
    pub socket: PathBuf,
    /// The SQLite catalog.
    pub catalog: PathBuf,
    /// Bytes per tape data block.
    #[serde(default = "default_chunk")]
    pub chunk_bytes: u32,
    /// Issuer window m: requests in flight per job.
    #[serde(default = "default_window")]
    pub window: usize,
    /// NVMe/TCP connections per job.
    #[serde(default = "default_connections")]
    pub connections: usize,
    /// The drive jobs use.
    #[serde(default)]
    pub drive: usize,
    /// Days a finished job is kept: a cartridge can be recycled once every job with a part on
    /// it finished longer ago than this (default 30).
    #[serde(default = "default_retention")]
    pub retention_days: u64,
    /// ferrited's JSON-RPC socket, asked for the changed extents of incremental backups
    /// (`snapshot_diff`); a job may name another.
    #[serde(default)]
    pub appliance_socket: Option<PathBuf>,
    /// When no cartridge is writable, a job erases and reuses a full one whose jobs are all
    /// past retention (default true).
    #[serde(default = "yes")]
    pub auto_recycle: bool,
    pub library: LibraryConfig,
}

/// The running gateway.
#[derive(Debug)]
pub struct Gateway {
    config: Config,
    lib: Mutex<Library>,
    vtl: Option<VirtualLibrary>,
    jobs: Mutex<BTreeMap<u64, Arc<Progress>>>,
    /// Serialises job id allocation.
    ids: Mutex<()>,
}

fn rpc_err(e: TapeError) -> RpcError {
    let code = match &e {
        TapeError::CartridgeNotInLibrary(_) => protocol::NOT_FOUND,
        TapeError::Catalog(crate::catalog::CatalogError::NoSuchJob(_)) => protocol::NOT_FOUND,
        TapeError::Busy(_) => protocol::BUSY,
        TapeError::NoWritableCartridge(_) => protocol::NO_SPACE,
        TapeError::Invalid(_) | TapeError::TargetTooSmall { .. } => protocol::INVALID_PARAMS,
        TapeError::Device(ferrite_tape_device::DeviceError::InvalidBarcode(_)) => {
            protocol::INVALID_PARAMS
        }
        _ => protocol::INTERNAL_ERROR,
    };
    RpcError::new(code, e.to_string())
}

fn params<T: for<'de> Deserialize<'de>>(v: Value) -> Result<T, RpcError> {
    serde_json::from_value(v).map_err(|e| RpcError::invalid_params(e.to_string()))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NamespaceParams {
    address: SocketAddr,
    subnqn: String,
    nsid: u32,
    #[serde(default)]
    name: Option<String>,
}

impl NamespaceParams {
    fn endpoint(self) -> NvmeTcpEndpoint {
        NvmeTcpEndpoint {
            address: self.address,
            subnqn: self.subnqn,
            nsid: self.nsid,
            name: self.name,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JobStartParams {
    #[serde(default = "backup_kind")]
    kind: String,
    #[serde(flatten)]
    source: NamespaceParams,
    #[serde(default)]
    connections: Option<usize>,
    #[serde(default)]
    shuffle: bool,
    /// Incremental: the job it builds on.
    #[serde(default)]
    base_job: Option<u64>,
    /// Incremental: the snapshot the base job holds, `"<pool>/<snapshot>"` (default: the base
    /// job's source name).
    #[serde(default)]
    base_snapshot: Option<String>,
    /// Incremental: ferrited's JSON-RPC socket (default: the configuration's).
    #[serde(default)]
    appliance_socket: Option<PathBuf>,
}

fn backup_kind() -> String {
    "backup".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RestoreParams {
    job: u64,
    #[serde(flatten)]
    target: NamespaceParams,
    #[serde(default)]
    connections: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ArchiveParams {
    group: u32,
    #[serde(default)]
    from_seq: Option<u64>,
    #[serde(default)]
    to_seq: Option<u64>,
    #[serde(default = "yes")]
    trim: bool,
    /// ferrited's journal stream endpoint (default: the appliance socket + ".journal").
    #[serde(default)]
    journal_socket: Option<PathBuf>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplayParams {
    /// Journal archive jobs in sequence order.
    jobs: Vec<u64>,
    #[serde(flatten)]
    target: NamespaceParams,
    #[serde(default)]
    journal_nsid: Option<u32>,
    #[serde(default)]
    up_to_seq: Option<u64>,
    #[serde(default)]
    up_to_ts: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JobParams {
    job: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BarcodeParams {
    barcode: String,
    #[serde(default)]
    force: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OptionalBarcode {
    #[serde(default)]
    barcode: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OptionalJob {
    #[serde(default)]
    job: Option<u64>,
}

/// Every method the gateway answers, for docs and the CLI.
pub const METHODS: &[&str] = &[
    "tape_library_status",
    "tape_cartridge_list",
    "tape_cartridge_label",
    "tape_cartridge_import",
    "tape_cartridge_eject",
    "tape_cartridge_recycle",
    "tape_job_start",
    "tape_journal_archive",
    "tape_journal_replay",
    "tape_restore",
    "tape_job_verify",
    "tape_job_status",
    "tape_job_cancel",
    "tape_scan",
];

impl Gateway {
    /// Opens the library and the catalog; marks jobs the previous process left running as
    /// interrupted.
    pub fn open(config: Config) -> Result<Gateway, TapeError> {
        if config.chunk_bytes == 0 || config.chunk_bytes as usize > crate::format::MAX_PAYLOAD {
            return Err(TapeError::Invalid(format!(
                "chunk_bytes must be 1..={}",
                crate::format::MAX_PAYLOAD
            )));
        }
        // One virtual library instance: the changer, the drives and the import/export
        // handle must share its state.
        let (lib, vtl) = match &config.library {
            LibraryConfig::Virtual(c) => {
                let vtl = VirtualLibrary::open(c)?;
                (vtl.clone().into_library()?, Some(vtl))
            }
            LibraryConfig::Scsi(_) => (open_library(&config.library)?, None),
        };
        if config.drive >= lib.drives.len() {
            return Err(TapeError::Invalid(format!(
                "drive {} does not exist in the library",
                config.drive
            )));
        }
        let catalog = Catalog::open(&config.catalog)?;
        let n = catalog.mark_interrupted()?;
        if n > 0 {
            log::warn!("{n} job(s) were interrupted by the previous gateway's end");
        }
        Ok(Gateway {
            config,
            lib: Mutex::new(lib),
            vtl,
            jobs: Mutex::new(BTreeMap::new()),
            ids: Mutex::new(()),
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    fn catalog(&self) -> Result<Catalog, RpcError> {
        Catalog::open(&self.config.catalog).map_err(|e| rpc_err(e.into()))
    }

    fn running_job(&self) -> Option<u64> {
        lock(&self.jobs)
            .values()
            .find(|p| *lock(&p.state) == JobState::Running)
            .map(|p| p.job)
    }

    fn library(&self) -> Result<MutexGuard<'_, Library>, RpcError> {
        match self.lib.try_lock() {
            Ok(g) => Ok(g),
            Err(TryLockError::Poisoned(p)) => Ok(p.into_inner()),
            Err(TryLockError::WouldBlock) => {
                Err(rpc_err(TapeError::Busy(self.running_job().unwrap_or(0))))
            }
        }
    }

    /// Dispatches one JSON-RPC method.
    pub fn call(self: &Arc<Self>, method: &str, p: Value) -> Result<Value, RpcError> {
        match method {
            "tape_library_status" => self.library_status(),
            "tape_cartridge_list" => self.cartridge_list(),
            "tape_cartridge_label" => self.cartridge_label(params(p)?),
            "tape_cartridge_import" => self.cartridge_import(params(p)?),
            "tape_cartridge_eject" => self.cartridge_eject(params(p)?),
            "tape_cartridge_recycle" => self.cartridge_recycle(params(p)?),
            "tape_job_start" => self.job_start(params(p)?),
            "tape_journal_archive" => self.journal_archive(params(p)?),
            "tape_journal_replay" => self.journal_replay(params(p)?),
            "tape_restore" => self.restore(params(p)?),
            "tape_job_verify" => self.verify(params(p)?),
            "tape_job_status" => self.job_status(params(p)?),
            "tape_job_cancel" => self.job_cancel(params(p)?),
            "tape_scan" => self.scan(params(p)?),
            _ => Err(RpcError::new(
                protocol::METHOD_NOT_FOUND,
                format!("unknown method {method:?}"),
            )),
        }
    }

    fn library_status(&self) -> Result<Value, RpcError> {
        let running = self.running_job();
        let mut lib = match self.library() {
            Ok(l) => l,
            Err(_) => return Ok(json!({"busy": true, "running_job": running})),
        };
        let inv = lib.changer.inventory().map_err(|e| rpc_err(e.into()))?;
        let mut drives = Vec::new();
        for d in lib.drives.iter_mut() {
            let st = d.status().map_err(|e| rpc_err(e.into()))?;
            drives.push(json!({"name": d.name(), "status": st}));
        }
        Ok(json!({
            "changer": lib.changer.name(),
            "inventory": inv,
            "drives": drives,
            "running_job": running,
        }))
    }

    fn cartridge_list(&self) -> Result<Value, RpcError> {
        let rows = self
            .catalog()?
            .cartridges()
            .map_err(|e| rpc_err(e.into()))?;
        let inv = match self.library() {
            Ok(mut l) => Some(l.changer.inventory().map_err(|e| rpc_err(e.into()))?),
            Err(_) => None,
        };
        let mut out: Vec<Value> = rows
            .iter()
            .map(|r| {
                let at = inv
                    .as_ref()
                    .and_then(|i| Barcode::new(&r.barcode).ok().and_then(|b| i.find(&b)));
                json!({"barcode": r.barcode, "labelled_at": r.labelled_at, "parts": r.parts,
                       "bytes": r.bytes, "element": at})
            })
            .collect();
        if let Some(inv) = &inv {
            for b in inv.slots.iter().chain(inv.import_export.iter()).flatten() {
                if !rows.iter().any(|r| r.barcode == b.as_str()) {
                    out.push(
                        json!({"barcode": b, "labelled_at": null, "parts": 0, "bytes": 0,
                                    "element": inv.find(b)}),
                    );
                }
            }
        }
        Ok(Value::Array(out))
    }

    fn cartridge_label(&self, p: BarcodeParams) -> Result<Value, RpcError> {
        let b = Barcode::new(&p.barcode).map_err(|e| rpc_err(e.into()))?;
        let mut lib = self.library()?;
        let cat = self.catalog()?;
        let mut m = Mounter::new(&mut lib, self.config.drive).map_err(rpc_err)?;
        let r = (|| -> Result<Value, TapeError> {
            m.mount(&b)?;
            let state = m.read_label()?;
            let refuse = match &state {
                LabelState::Blank => None,
                LabelState::Ours(_) if p.force => None,
                LabelState::Foreign(_) if p.force => None,
                LabelState::Ours(l) => Some(format!(
                    "cartridge {b} carries a ferrite-tape label of {}; force to erase it",
                    l.labelled_at
                )),
                LabelState::Foreign(why) => Some(format!(
                    "cartridge {b} holds another format ({why}); force to erase it"
                )),
            };
            if let Some(why) = refuse {
                return Err(TapeError::Invalid(why));
            }
            let expired = cat.jobs_on_cartridge(b.as_str())?;
            let label = m.write_label(&b, &cat)?;
            for j in &expired {
                cat.expire_job(j.id)?;
            }
            let ids: Vec<u64> = expired.iter().map(|j| j.id).collect();
            Ok(json!({"barcode": b, "labelled_at": label.labelled_at, "expired_jobs": ids}))
        })();
        let _ = m.dismount();
        r.map_err(rpc_err)
    }

    /// Erases and relabels a cartridge whose jobs are all past retention (or `force`); those
    /// jobs become `expired`.
    fn cartridge_recycle(&self, p: BarcodeParams) -> Result<Value, RpcError> {
        let b = Barcode::new(&p.barcode).map_err(|e| rpc_err(e.into()))?;
        let cat = self.catalog()?;
        if !cat
            .is_known_cartridge(b.as_str())
            .map_err(|e| rpc_err(e.into()))?
        {
            return Err(RpcError::not_found(format!(
                "cartridge {b} is not in the catalog (label it, or scan it first)"
            )));
        }
        let jobs = cat
            .jobs_on_cartridge(b.as_str())
            .map_err(|e| rpc_err(e.into()))?;
        // Jobs within retention, and every job a retained incremental builds on.
        let needed = cat
            .needed_jobs(self.retention_limit())
            .map_err(|e| rpc_err(e.into()))?;
        let kept: Vec<String> = jobs
            .iter()
            .filter(|j| needed.contains(&j.id))
            .map(|j| {
                format!(
                    "job {} ({:?}, within {} days or the base of one that is)",
                    j.id, j.state, self.config.retention_days
                )
            })
            .collect();
        if !kept.is_empty() && !p.force {
            return Err(RpcError::invalid_params(format!(
                "cartridge {b} holds parts of {}; force to recycle anyway",
                kept.join(", ")
            )));
        }
        drop(cat);
        self.cartridge_label(BarcodeParams {
            barcode: p.barcode,
            force: true,
        })
    }

    fn cartridge_import(&self, p: BarcodeParams) -> Result<Value, RpcError> {
        let b = Barcode::new(&p.barcode).map_err(|e| rpc_err(e.into()))?;
        let Some(vtl) = &self.vtl else {
            return Err(RpcError::invalid_params(
                "tape_cartridge_import puts cartridges into a virtual library; load a real library's mail slot by hand",
            ));
        };
        let mut lib = self.library()?;
        let at = vtl.insert(&b).map_err(|e| rpc_err(e.into()))?;
        let inv = lib.changer.inventory().map_err(|e| rpc_err(e.into()))?;
        let slot = match at {
            Element::ImportExport(_) => {
                let to = inv
                    .free_slot()
                    .ok_or_else(|| rpc_err(TapeError::Invalid("no free slot".into())))?;
                lib.changer
                    .move_medium(at, to)
                    .map_err(|e| rpc_err(e.into()))?;
                to
            }
            other => other,
        };
        Ok(json!({"barcode": b, "element": slot}))
    }

    fn cartridge_eject(&self, p: BarcodeParams) -> Result<Value, RpcError> {
        let b = Barcode::new(&p.barcode).map_err(|e| rpc_err(e.into()))?;
        let mut lib = self.library()?;
        let inv = lib.changer.inventory().map_err(|e| rpc_err(e.into()))?;
        let at = inv
            .find(&b)
            .ok_or_else(|| rpc_err(TapeError::CartridgeNotInLibrary(b.to_string())))?;
        if let Element::Drive(_) = at {
            Mounter::new(&mut lib, self.config.drive)
                .and_then(|mut m| m.dismount())
                .map_err(rpc_err)?;
        }
        let inv = lib.changer.inventory().map_err(|e| rpc_err(e.into()))?;
        let at = inv
            .find(&b)
            .ok_or_else(|| rpc_err(TapeError::CartridgeNotInLibrary(b.to_string())))?;
        if matches!(at, Element::ImportExport(_)) {
            return Ok(json!({"barcode": b, "element": at}));
        }
        let to = inv
            .import_export
            .iter()
            .position(Option::is_none)
            .map(|i| Element::ImportExport(i as u16))
            .ok_or_else(|| {
                rpc_err(TapeError::Invalid(
                    "every import/export slot is full".into(),
                ))
            })?;
        lib.changer
            .move_medium(at, to)
            .map_err(|e| rpc_err(e.into()))?;
        if let Some(vtl) = &self.vtl {
            vtl.take_out(to).map_err(|e| rpc_err(e.into()))?;
            return Ok(json!({"barcode": b, "element": null, "exported": true}));
        }
        Ok(json!({"barcode": b, "element": to}))
    }

    fn new_job(&self, kind: &'static str) -> Result<Arc<Progress>, RpcError> {
        let _g = lock(&self.ids);
        if let Some(j) = self.running_job() {
            return Err(rpc_err(TapeError::Busy(j)));
        }
        let from_catalog = self
            .catalog()?
            .next_job_id()
            .map_err(|e| rpc_err(e.into()))?;
        let mut jobs = lock(&self.jobs);
        let id = from_catalog.max(jobs.keys().next_back().map_or(1, |k| k + 1));
        let p = Arc::new(Progress::new(id, kind));
        jobs.insert(id, p.clone());
        Ok(p)
    }

    /// Runs `work` on a thread of its own with the library locked; the progress records the end.
    fn spawn_job(
        self: &Arc<Self>,
        p: Arc<Progress>,
        work: impl FnOnce(&mut Library, &Catalog, &Progress) -> Result<Value, TapeError>
            + Send
            + 'static,
    ) -> Result<Value, RpcError> {
        let me = self.clone();
        let id = p.job;
        let started = std::thread::Builder::new()
            .name(format!("tape-job-{id}"))
            .spawn(move || {
                let r = (|| {
                    let cat = Catalog::open(&me.config.catalog)?;
                    let mut lib = lock(&me.lib);
                    let r = work(&mut lib, &cat, &p);
                    if let Err(e) = &r {
                        let state = if matches!(e, TapeError::Cancelled(_)) {
                            JobState::Cancelled
                        } else {
                            JobState::Failed
                        };
                        let done = p.done_bytes.load(Ordering::Relaxed);
                        if cat.job(id).is_ok() {
                            let _ =
                                cat.finish_job(id, state, done, now_secs(), Some(&e.to_string()));
                        }
                    }
                    r
                })();
                match r {
                    Ok(v) => {
                        log::info!("job {id} done: {v}");
                        *lock(&p.result) = Some(v);
                        *lock(&p.state) = JobState::Done;
                    }
                    Err(e) => {
                        log::warn!("job {id} failed: {e}");
                        *lock(&p.error) = Some(e.to_string());
                        *lock(&p.state) = if matches!(e, TapeError::Cancelled(_)) {
                            JobState::Cancelled
                        } else {
                            JobState::Failed
                        };
                    }
                }
            });
        started.map_err(|e| RpcError::internal(format!("cannot start the job thread: {e}")))?;
        Ok(json!({"job": id}))
    }

    fn job_start(self: &Arc<Self>, p: JobStartParams) -> Result<Value, RpcError> {
        let incremental = match p.kind.as_str() {
            "backup" => None,
            "incremental" => Some(self.incremental_plan(&p)?),
            other => {
                return Err(RpcError::invalid_params(format!(
                    "job kind {other:?} is not supported (backup or incremental)"
                )))
            }
        };
        let progress = self.new_job(if incremental.is_some() {
            "incremental"
        } else {
            "backup"
        })?;
        let spec = BackupSpec {
            job: progress.job,
            endpoint: Arc::new(p.source.endpoint()),
            connections: self.connections(p.connections),
            chunk_bytes: self.config.chunk_bytes,
            window: self.config.window,
            shuffle: p.shuffle,
            drive: self.config.drive,
            incremental,
            recycle_before: self.recycle_before(),
        };
        self.spawn_job(progress, move |lib, cat, pr| {
            run_backup(lib, cat, &spec, pr).map(|r| serde_json::to_value(r).unwrap_or_default())
        })
    }

    /// Asks ferrited which extents of the snapshot named by the job changed since the
    /// snapshot its base job holds.
    fn incremental_plan(&self, p: &JobStartParams) -> Result<Incremental, RpcError> {
        let base_job = p.base_job.ok_or_else(|| {
            RpcError::invalid_params("an incremental backup needs base_job (a finished backup)")
        })?;
        self.finished_backup(base_job)?;
        let base = self
            .catalog()?
            .job(base_job)
            .map_err(|e| rpc_err(e.into()))?;
        let base_name = p
            .base_snapshot
            .clone()
            .or_else(|| base.source["name"].as_str().map(String::from))
            .ok_or_else(|| {
                RpcError::invalid_params(format!(
                    "job {base_job} recorded no snapshot name: give base_snapshot"
                ))
            })?;
        let target = p.source.name.as_deref().ok_or_else(|| {
            RpcError::invalid_params(
                "an incremental backup needs name: the \"<pool>/<snapshot>\" exported at nsid",
            )
        })?;
        let socket = p
            .appliance_socket
            .as_ref()
            .or(self.config.appliance_socket.as_ref())
            .ok_or_else(|| {
                RpcError::invalid_params(
                    "an incremental backup needs ferrited's socket: appliance_socket in the configuration or the request",
                )
            })?;
        Incremental::fetch(socket, base_job, &base_name, target).map_err(rpc_err)
    }

    fn journal_archive(self: &Arc<Self>, p: ArchiveParams) -> Result<Value, RpcError> {
        let socket = p
            .journal_socket
            .or_else(|| {
                self.config.appliance_socket.as_ref().map(|s| {
                    let mut s = s.clone().into_os_string();
                    s.push(".journal");
                    PathBuf::from(s)
                })
            })
            .ok_or_else(|| {
                RpcError::invalid_params(
                    "no journal endpoint: give journal_socket, or appliance_socket in the configuration",
                )
            })?;
        let progress = self.new_job("journal")?;
        let spec = ArchiveSpec {
            job: progress.job,
            socket,
            group: p.group,
            from_seq: p.from_seq,
            to_seq: p.to_seq,
            trim: p.trim,
            drive: self.config.drive,
            recycle_before: self.recycle_before(),
        };
        self.spawn_job(progress, move |lib, cat, pr| {
            run_journal_archive(lib, cat, &spec, pr)
                .map(|r| serde_json::to_value(r).unwrap_or_default())
        })
    }

    fn journal_replay(self: &Arc<Self>, p: ReplayParams) -> Result<Value, RpcError> {
        let cat = self.catalog()?;
        for &j in &p.jobs {
            let row = cat.job(j).map_err(|e| rpc_err(e.into()))?;
            if row.kind != "journal" || row.state != JobState::Done {
                return Err(RpcError::invalid_params(format!(
                    "job {j} is a {:?} {} job: only finished journal archives replay",
                    row.state, row.kind
                )));
            }
        }
        drop(cat);
        let progress = self.new_job("replay")?;
        let spec = ReplaySpec {
            job: progress.job,
            from_jobs: p.jobs,
            endpoint: Arc::new(p.target.endpoint()),
            journal_nsid: p.journal_nsid,
            up_to_seq: p.up_to_seq,
            up_to_ts: p.up_to_ts,
            drive: self.config.drive,
        };
        self.spawn_job(progress, move |lib, cat, pr| {
            run_journal_replay(lib, cat, &spec, pr)
                .map(|r| serde_json::to_value(r).unwrap_or_default())
        })
    }

    fn restore(self: &Arc<Self>, p: RestoreParams) -> Result<Value, RpcError> {
        self.finished_backup(p.job)?;
        let progress = self.new_job("restore")?;
        let spec = RestoreSpec {
            job: progress.job,
            from_job: p.job,
            endpoint: Arc::new(p.target.endpoint()),
            connections: self.connections(p.connections),
            window: self.config.window,
            drive: self.config.drive,
        };
        self.spawn_job(progress, move |lib, cat, pr| {
            run_restore(lib, cat, &spec, pr).map(|r| serde_json::to_value(r).unwrap_or_default())
        })
    }

    /// Jobs that finished before this are past retention (Unix seconds).
    fn retention_limit(&self) -> u64 {
        now_secs().saturating_sub(self.config.retention_days * 86_400)
    }

    /// What jobs may recycle automatically (None: automatic recycling is off).
    fn recycle_before(&self) -> Option<u64> {
        self.config.auto_recycle.then(|| self.retention_limit())
    }

    /// Connections for a job: the request's, else the configuration's, within 1..=64.
    fn connections(&self, asked: Option<usize>) -> usize {
        asked.unwrap_or(self.config.connections).clamp(1, 64)
    }

    /// Refuses a job that is not a finished backup, or an incremental whose chain of base jobs
    /// back to its full backup is not complete in the catalog.
    fn finished_backup(&self, job: u64) -> Result<(), RpcError> {
        crate::incremental::chain(&self.catalog()?, job)
            .map(|_| ())
            .map_err(|e| match e {
                TapeError::Catalog(c) => rpc_err(c.into()),
                other => RpcError::invalid_params(other.to_string()),
            })
    }

    fn verify(self: &Arc<Self>, p: JobParams) -> Result<Value, RpcError> {
        self.finished_backup(p.job)?;
        let progress = self.new_job("verify")?;
        let (from, drive) = (p.job, self.config.drive);
        self.spawn_job(progress, move |lib, cat, pr| {
            run_verify(lib, cat, from, drive, pr)
                .map(|r| serde_json::to_value(r).unwrap_or_default())
        })
    }

    fn progress_json(p: &Progress) -> Value {
        let done = p.done_bytes.load(Ordering::Relaxed);
        let total = p.total_bytes.load(Ordering::Relaxed);
        let secs = p.started.elapsed().as_secs_f64();
        let rate = if secs > 0.0 { done as f64 / secs } else { 0.0 };
        let eta = (rate > 0.0 && total >= done).then(|| (total - done) as f64 / rate);
        json!({
            "job": p.job,
            "kind": p.kind,
            "state": *lock(&p.state),
            "done_bytes": done,
            "total_bytes": total,
            "seconds": secs,
            "bytes_per_second": rate,
            "eta_seconds": eta,
            "cartridges": *lock(&p.cartridges),
            "error": *lock(&p.error),
            "queue": *lock(&p.queue),
            "result": *lock(&p.result),
        })
    }

    fn job_status(&self, p: OptionalJob) -> Result<Value, RpcError> {
        let cat = self.catalog()?;
        let jobs = lock(&self.jobs);
        if let Some(id) = p.job {
            if let Some(pr) = jobs.get(&id) {
                let mut v = Self::progress_json(pr);
                if let Ok(parts) = cat.parts(id) {
                    v["parts"] = json!(parts);
                }
                return Ok(v);
            }
            let row = cat.job(id).map_err(|e| rpc_err(e.into()))?;
            let parts = cat.parts(id).map_err(|e| rpc_err(e.into()))?;
            return Ok(
                json!({"job": id, "kind": row.kind, "state": row.state, "done_bytes": row.bytes_written,
                             "total_bytes": row.source_bytes, "error": row.error, "parts": parts, "source": row.source}),
            );
        }
        let mut out = Vec::new();
        for row in cat.jobs().map_err(|e| rpc_err(e.into()))? {
            out.push(match jobs.get(&row.id) {
                // The live progress, with the catalog's source (what was backed up, its name):
                // the Ansible tape role finds its jobs by name.
                Some(pr) => {
                    let mut v = Self::progress_json(pr);
                    v["source"] = row.source.clone();
                    v
                }
                None => json!({"job": row.id, "kind": row.kind, "state": row.state,
                               "done_bytes": row.bytes_written, "total_bytes": row.source_bytes,
                               "error": row.error, "source": row.source}),
            });
        }
        for (id, pr) in jobs.iter() {
            if !out.iter().any(|v| v["job"] == json!(id)) {
                out.push(Self::progress_json(pr));
            }
        }
        Ok(Value::Array(out))
    }

    fn job_cancel(&self, p: JobParams) -> Result<Value, RpcError> {
        let jobs = lock(&self.jobs);
        let pr = jobs
            .get(&p.job)
            .ok_or_else(|| RpcError::not_found(format!("no job {} in this gateway", p.job)))?;
        if *lock(&pr.state) != JobState::Running {
            return Err(RpcError::invalid_params(format!(
                "job {} is not running",
                p.job
            )));
        }
        pr.cancel.store(true, Ordering::Relaxed);
        Ok(json!({"job": p.job, "cancelling": true}))
    }

    fn scan(&self, p: OptionalBarcode) -> Result<Value, RpcError> {
        let mut lib = self.library()?;
        let cat = self.catalog()?;
        let targets: Vec<Barcode> = match p.barcode {
            Some(b) => vec![Barcode::new(&b).map_err(|e| rpc_err(e.into()))?],
            None => {
                let inv = lib.changer.inventory().map_err(|e| rpc_err(e.into()))?;
                inv.slots
                    .iter()
                    .flatten()
                    .chain(inv.drives.iter().filter_map(|d| d.barcode.as_ref()))
                    .cloned()
                    .collect()
            }
        };
        let mut m = Mounter::new(&mut lib, self.config.drive).map_err(rpc_err)?;
        let mut out = Vec::new();
        for b in targets {
            match scan_cartridge(&mut m, &b, &cat) {
                Ok(r) => out.push(json!(r)),
                Err(e) => out.push(json!({"barcode": b, "error": e.to_string()})),
            }
        }
        let _ = m.dismount();
        Ok(Value::Array(out))
    }
}
