//! The remote controller: its admin queue, owned by a manager thread that sends Keep Alives,
//! watches the namespaces, connects the channels' I/O queue pairs and runs resets.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ferrite_bdev::Capabilities;
use ferrite_host::{ConnectOptions, Controller, HostError, QueuePair, QueuePairConfig};
use ferrite_nvme::admin::{fid, number_of_queues, parse_number_of_queues};
use ferrite_nvme::identify::{oncs, IdentifyController, IdentifyNamespace};
use ferrite_nvme::tcp::Digests;

use crate::bdev::RemoteBdev;
use crate::options::MAX_IO_QUEUES;
use crate::{RemoteError, RemoteOptions};

/// How often the manager wakes up with nothing to do (Keep Alive, namespace checks).
const TICK: Duration = Duration::from_millis(500);
/// Keep Alive Timeout asked of the remote; a Keep Alive goes out every third of it.
const KATO_MS: u32 = 15_000;
/// Namespaces are re-identified this often (a shrink or a format change is noticed).
const NS_CHECK_EVERY: Duration = Duration::from_secs(1);
/// Longest wait for one connect step while attaching or reconnecting.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// State of a remote controller (see the crate diagram).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CtrlrState {
    /// Admin queue up; channels get queue pairs.
    Connected,
    /// Path lost: reconnecting, I/O held.
    Resetting,
    /// Path lost for longer than `ctrlr_loss_timeout`: still reconnecting, I/O fails.
    Failed,
    /// Detached: every I/O fails.
    Detached,
}

impl CtrlrState {
    pub fn as_str(self) -> &'static str {
        match self {
            CtrlrState::Connected => "enabled",
            CtrlrState::Resetting => "resetting",
            CtrlrState::Failed => "failed",
            CtrlrState::Detached => "deleting",
        }
    }

    /// The one transition check.
    pub fn is_transition_valid(from: CtrlrState, to: CtrlrState) -> bool {
        use CtrlrState::*;
        matches!(
            (from, to),
            (Connected, Resetting)
                | (Resetting, Connected)
                | (Resetting, Failed)
                | (Failed, Connected)
                | (_, Detached)
        )
    }
}

/// What `bdev_nvme_get_controllers` shows of one controller.
#[derive(Debug, Clone)]
pub struct ControllerInfo {
    pub options: RemoteOptions,
    pub state: CtrlrState,
    /// Controller ID of the current association (0 while disconnected).
    pub cntlid: u16,
    /// Resets started since attach.
    pub resets: u64,
    /// Why the last reset started or the last reconnect failed.
    pub last_error: Option<String>,
    /// I/O queue pairs connected for channels in the current association.
    pub io_queues: usize,
    pub namespaces: Vec<NamespaceInfo>,
    /// Capabilities the remote's Identify gave (ONCS, VWC).
    pub offloads: Offloads,
}

/// One remote namespace.
#[derive(Debug, Clone)]
pub struct NamespaceInfo {
    pub nsid: u32,
    pub bdev: String,
    pub block_size: u32,
    pub num_blocks: u64,
    /// Set when the namespace can no longer be used (gone, shrunk, reformatted).
    pub failure: Option<String>,
}

/// What the remote offloads (from Identify Controller ONCS and VWC).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Offloads {
    pub write_zeroes: bool,
    pub deallocate: bool,
    pub copy: bool,
    pub volatile_write_cache: bool,
}

impl Offloads {
    fn of(id: &IdentifyController) -> Offloads {
        let o = id.oncs.get();
        Offloads {
            write_zeroes: o & oncs::WRITE_ZEROES != 0,
            deallocate: o & oncs::DATASET_MANAGEMENT != 0,
            copy: o & oncs::COPY != 0,
            volatile_write_cache: id.vwc & 1 != 0,
        }
    }
}

/// A namespace as the channels see it.
#[derive(Debug)]
pub(crate) struct NsShared {
    pub nsid: u32,
    pub bdev_name: String,
    pub block_size: u32,
    pub num_blocks: u64,
    pub uuid: [u8; 16],
    pub caps: Capabilities,
    pub offloads: Offloads,
    /// Blocks in one offloaded Copy command (MSSRL, MCL, 65536).
    pub copy_chunk: u32,
    failed: AtomicBool,
    failure: Mutex<Option<String>>,
}

impl NsShared {
    pub(crate) fn failure(&self) -> Option<String> {
        if !self.failed.load(Ordering::Acquire) {
            return None;
        }
        lock(&self.failure).clone()
    }

    fn set_failure(&self, why: Option<String>) {
        let mut f = lock(&self.failure);
        if *f != why {
            match &why {
                Some(w) => log::error!("remote bdev {}: {w}", self.bdev_name),
                None => log::info!("remote bdev {}: usable again", self.bdev_name),
            }
        }
        self.failed.store(why.is_some(), Ordering::Release);
        *f = why;
    }
}

/// A channel's request for a queue pair: the manager puts one in `slot`, tagged with the
/// generation it belongs to.
#[derive(Debug, Default)]
pub(crate) struct Mailbox {
    pub slot: Mutex<Option<(u64, QueuePair)>>,
}

pub(crate) enum Msg {
    /// A channel opened (or lost its queue pair with its generation still current).
    NeedQueue,
    /// A channel's queue pair failed in `generation`.
    PathLost {
        generation: u64,
        why: String,
    },
    Stop,
}

#[derive(Debug)]
struct Status {
    state: CtrlrState,
    /// When the path was lost (Resetting, Failed).
    since: Option<Instant>,
    last_error: Option<String>,
    resets: u64,
    cntlid: u16,
    io_queues: usize,
}

/// What the channels and the manager share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub opts: RemoteOptions,
    /// Bumped by every reset: a queue pair of an older generation is dead.
    pub generation: AtomicU64,
    /// Failed or Detached: channels fail I/O instead of holding it.
    pub io_failing: AtomicBool,
    /// Largest data transfer of one command (MDTS and the options).
    pub max_transfer: u32,
    pub namespaces: Vec<Arc<NsShared>>,
    status: Mutex<Status>,
    mailboxes: Mutex<Vec<Weak<Mailbox>>>,
    wake: Mutex<mpsc::Sender<Msg>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    pub(crate) fn send(&self, msg: Msg) {
        // The manager is gone only after detach, when nobody needs an answer.
        let _ = lock(&self.wake).send(msg);
    }

    pub(crate) fn register(&self, mailbox: &Arc<Mailbox>) {
        lock(&self.mailboxes).push(Arc::downgrade(mailbox));
        self.send(Msg::NeedQueue);
    }

    /// The error a request fails with while I/O is failing.
    pub(crate) fn failing_error(&self) -> std::io::Error {
        let st = lock(&self.status);
        let msg = match st.state {
            CtrlrState::Detached => format!("remote controller {} was detached", self.opts.name),
            _ => format!(
                "remote controller {} ({} {}) unreachable for longer than ctrlr_loss_timeout_sec={} (last error: {})",
                self.opts.name,
                self.opts.addr,
                self.opts.subnqn,
                self.opts.ctrlr_loss_timeout.as_secs(),
                st.last_error.as_deref().unwrap_or("none")
            ),
        };
        std::io::Error::new(std::io::ErrorKind::NotConnected, msg)
    }

    fn set_state(&self, st: &mut Status, to: CtrlrState) {
        if st.state == to {
            return;
        }
        debug_assert!(
            CtrlrState::is_transition_valid(st.state, to),
            "remote controller {:?} -> {to:?}",
            st.state
        );
        log::info!(
            "remote controller {}: {} -> {}",
            self.opts.name,
            st.state.as_str(),
            to.as_str()
        );
        st.state = to;
        self.io_failing.store(
            matches!(to, CtrlrState::Failed | CtrlrState::Detached),
            Ordering::Release,
        );
    }
}

/// An attached remote controller and its namespaces' bdevs. Dropping it detaches.
#[derive(Debug)]
pub struct RemoteController {
    shared: Arc<Shared>,
    bdevs: Vec<Arc<RemoteBdev>>,
    manager: Mutex<Option<JoinHandle<()>>>,
}

fn connect_options(opts: &RemoteOptions) -> ConnectOptions {
    let mut c = ConnectOptions::new(opts.addr, opts.subnqn.clone());
    if let Some(h) = &opts.hostnqn {
        c.hostnqn = h.clone();
    }
    c.header_digest = opts.header_digest;
    c.data_digest = opts.data_digest;
    c.kato_ms = KATO_MS;
    c.io_queues = 0;
    c.queue_depth = opts.queue_depth;
    c.timeout = CONNECT_TIMEOUT;
    c
}

/// Connects the admin queue and asks for I/O queues; returns the controller and the number
/// of I/O queues granted.
fn connect_admin(opts: &RemoteOptions) -> Result<(Controller, u16), RemoteError> {
    let err = |what, source| RemoteError::Connect {
        addr: opts.addr,
        subnqn: opts.subnqn.clone(),
        what,
        source: Box::new(source),
    };
    let mut ctrl = Controller::connect(connect_options(opts)).map_err(|e| {
        err(
            match e {
                HostError::ConnectRejected { .. } => "the admin queue Connect was refused",
                _ => "connecting the admin queue",
            },
            e,
        )
    })?;
    let want = MAX_IO_QUEUES;
    let granted = ctrl
        .set_features(
            fid::NUMBER_OF_QUEUES,
            0,
            number_of_queues(want - 1, want - 1),
            false,
        )
        .map_err(|e| err("Set Features (Number of Queues)", e))?;
    let (nsqa, ncqa) = parse_number_of_queues(granted);
    let granted = want.min(nsqa.saturating_add(1)).min(ncqa.saturating_add(1));
    Ok((ctrl, granted))
}

/// Block size and size of an Identify Namespace, or why it cannot be a bdev.
fn usable(id: &IdentifyNamespace) -> Result<(u32, u64), String> {
    if id.nsze.get() == 0 {
        return Err("the namespace is not active".into());
    }
    let lbaf = id.current_lba_format();
    if lbaf.ms != 0 {
        return Err(format!(
            "LBA format with {} bytes of metadata per block is not supported",
            lbaf.ms
        ));
    }
    match lbaf.block_size() {
        Some(bs) if (512..=4096).contains(&bs) => Ok((bs, id.nsze.get())),
        Some(bs) => Err(format!(
            "block size {bs} is outside what Ferrite serves (512 to 4096)"
        )),
        None => Err(format!("invalid LBA data size 2^{}", lbaf.lbads)),
    }
}

/// Why a namespace that was `(bs, blocks)` at attach is unusable now, if it is.
fn check_namespace(ns: &NsShared, id: &IdentifyNamespace) -> Option<String> {
    match usable(id) {
        Err(why) => Some(format!("remote namespace {}: {why}", ns.nsid)),
        Ok((bs, _)) if bs != ns.block_size => Some(format!(
            "remote namespace {} block size changed from {} to {bs} bytes",
            ns.nsid, ns.block_size
        )),
        Ok((_, blocks)) if blocks < ns.num_blocks => Some(format!(
            "remote namespace {} shrank from {} to {blocks} blocks",
            ns.nsid, ns.num_blocks
        )),
        Ok(_) => None,
    }
}

impl RemoteController {
    /// Connects to the remote and makes a bdev of every usable active namespace.
    pub fn attach(opts: RemoteOptions) -> Result<Arc<RemoteController>, RemoteError> {
        opts.validate()?;
        let (mut ctrl, granted) = connect_admin(&opts)?;
        let fail = |message: String| RemoteError::Namespace {
            addr: opts.addr,
            subnqn: opts.subnqn.clone(),
            message,
        };
        let id = ctrl
            .identify()
            .cloned()
            .ok_or_else(|| fail("no Identify Controller data".into()))?;
        let offloads = Offloads::of(&id);
        let nsids = ctrl.active_namespaces().map_err(|e| RemoteError::Connect {
            addr: opts.addr,
            subnqn: opts.subnqn.clone(),
            what: "Identify (active namespace list)",
            source: Box::new(e),
        })?;
        let mut namespaces = Vec::new();
        let mut skipped = Vec::new();
        for nsid in nsids {
            let nsid_err = |e| RemoteError::Connect {
                addr: opts.addr,
                subnqn: opts.subnqn.clone(),
                what: "Identify Namespace",
                source: Box::new(e),
            };
            let nid = ctrl.identify_namespace(nsid).map_err(nsid_err)?;
            let (block_size, num_blocks) = match usable(&nid) {
                Ok(g) => g,
                Err(why) => {
                    log::warn!("remote controller {}: namespace {nsid}: {why}", opts.name);
                    skipped.push(format!("namespace {nsid}: {why}"));
                    continue;
                }
            };
            let mut uuid = nid.nguid;
            if uuid == [0; 16] {
                // No NGUID: a stable identity from where it lives.
                uuid = derived_uuid(&opts.subnqn, nsid);
            }
            let copy_chunk = [u32::from(nid.mssrl.get()), nid.mcl.get(), 65536]
                .into_iter()
                .filter(|&v| v > 0)
                .min()
                .unwrap_or(65536);
            namespaces.push(Arc::new(NsShared {
                nsid,
                bdev_name: format!("{}n{nsid}", opts.name),
                block_size,
                num_blocks,
                uuid,
                caps: Capabilities {
                    // Offloaded, or emulated with zero writes by the channel.
                    write_zeroes: true,
                    unmap: offloads.deallocate,
                    volatile_write_cache: offloads.volatile_write_cache,
                    max_transfer_bytes: ctrl.max_transfer().min(1 << 20),
                    copy: offloads.copy,
                    read_only: false,
                    thin_provisioned: nid.nsfeat & 1 != 0,
                },
                offloads,
                copy_chunk,
                failed: AtomicBool::new(false),
                failure: Mutex::new(None),
            }));
        }
        if namespaces.is_empty() {
            return Err(fail(if skipped.is_empty() {
                "the subsystem has no active namespace".into()
            } else {
                format!("no usable namespace ({})", skipped.join("; "))
            }));
        }
        let (tx, rx) = mpsc::channel();
        let shared = Arc::new(Shared {
            generation: AtomicU64::new(1),
            io_failing: AtomicBool::new(false),
            max_transfer: ctrl.max_transfer().min(1 << 20),
            namespaces,
            status: Mutex::new(Status {
                state: CtrlrState::Connected,
                since: None,
                last_error: None,
                resets: 0,
                cntlid: ctrl.cntlid(),
                io_queues: 0,
            }),
            mailboxes: Mutex::new(Vec::new()),
            wake: Mutex::new(tx),
            opts,
        });
        let bdevs = shared
            .namespaces
            .iter()
            .map(|ns| Arc::new(RemoteBdev::new(Arc::clone(&shared), Arc::clone(ns))))
            .collect();
        let mut manager = Manager {
            shared: Arc::clone(&shared),
            rx,
            ctrl: Some(ctrl),
            granted,
            assigned: Vec::new(),
            last_keep_alive: Instant::now(),
            last_ns_check: Instant::now(),
        };
        let handle = std::thread::Builder::new()
            .name(format!("remote-{}", shared.opts.name))
            .spawn(move || manager.run())
            .map_err(|e| {
                RemoteError::InvalidArgument(format!("cannot start the manager thread: {e}"))
            })?;
        log::info!(
            "remote controller {}: attached {} {} ({} namespaces, {granted} I/O queues, offloads {offloads:?})",
            shared.opts.name,
            shared.opts.addr,
            shared.opts.subnqn,
            shared.namespaces.len()
        );
        Ok(Arc::new(RemoteController {
            shared,
            bdevs,
            manager: Mutex::new(Some(handle)),
        }))
    }

    pub fn name(&self) -> &str {
        &self.shared.opts.name
    }

    pub fn options(&self) -> &RemoteOptions {
        &self.shared.opts
    }

    /// One bdev per usable namespace, in NSID order.
    pub fn bdevs(&self) -> &[Arc<RemoteBdev>] {
        &self.bdevs
    }

    pub fn state(&self) -> CtrlrState {
        lock(&self.shared.status).state
    }

    pub fn info(&self) -> ControllerInfo {
        let st = lock(&self.shared.status);
        ControllerInfo {
            options: self.shared.opts.clone(),
            state: st.state,
            cntlid: st.cntlid,
            resets: st.resets,
            last_error: st.last_error.clone(),
            io_queues: st.io_queues,
            namespaces: self
                .shared
                .namespaces
                .iter()
                .map(|ns| NamespaceInfo {
                    nsid: ns.nsid,
                    bdev: ns.bdev_name.clone(),
                    block_size: ns.block_size,
                    num_blocks: ns.num_blocks,
                    failure: ns.failure(),
                })
                .collect(),
            offloads: self
                .shared
                .namespaces
                .first()
                .map(|n| n.offloads)
                .unwrap_or_default(),
        }
    }

    /// Stops the manager and disconnects; every I/O from now on fails.
    pub fn detach(&self) {
        let Some(handle) = lock(&self.manager).take() else {
            return;
        };
        {
            let mut st = lock(&self.shared.status);
            self.shared.set_state(&mut st, CtrlrState::Detached);
        }
        self.shared.generation.fetch_add(1, Ordering::AcqRel);
        self.shared.send(Msg::Stop);
        if handle.join().is_err() {
            log::error!("remote controller {}: manager panicked", self.name());
        }
        log::info!("remote controller {}: detached", self.name());
    }
}

impl Drop for RemoteController {
    fn drop(&mut self) {
        self.detach();
    }
}

/// A UUID for a namespace without NGUID: FNV-1a of the subsystem NQN and NSID, as version 8.
fn derived_uuid(subnqn: &str, nsid: u32) -> [u8; 16] {
    let mut out = [0u8; 16];
    for (half, seed) in [
        (0usize, 0xcbf2_9ce4_8422_2325u64),
        (8, 0x8422_2325_cbf2_9ce4),
    ] {
        let mut h = seed;
        for b in subnqn.bytes().chain(nsid.to_le_bytes()) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x100_0000_01b3);
        }
        out[half..half + 8].copy_from_slice(&h.to_le_bytes());
    }
    out[6] = (out[6] & 0x0f) | 0x80;
    out[8] = (out[8] & 0x3f) | 0x80;
    out
}

/// The manager thread: the one owner of the admin queue.
struct Manager {
    shared: Arc<Shared>,
    rx: mpsc::Receiver<Msg>,
    ctrl: Option<Controller>,
    /// I/O queues granted in the current association.
    granted: u16,
    /// Mailboxes served in the current generation, with their qid.
    assigned: Vec<(Weak<Mailbox>, u16)>,
    last_keep_alive: Instant,
    last_ns_check: Instant,
}

impl Manager {
    fn run(&mut self) {
        loop {
            let connected = self.ctrl.is_some();
            let wait = if connected {
                TICK
            } else {
                self.shared.opts.reconnect_delay
            };
            match self.rx.recv_timeout(wait) {
                Ok(Msg::Stop) | Err(RecvTimeoutError::Disconnected) => break,
                Ok(Msg::PathLost { generation, why }) => {
                    if generation == self.shared.generation.load(Ordering::Acquire)
                        && self.ctrl.is_some()
                    {
                        self.start_reset(why);
                    }
                }
                Ok(Msg::NeedQueue) | Err(RecvTimeoutError::Timeout) => {}
            }
            if self.ctrl.is_none() {
                self.try_reconnect();
            }
            if self.ctrl.is_some() {
                self.housekeeping();
            }
            // Housekeeping may have started a reset.
            if self.ctrl.is_some() {
                self.serve_queues();
            }
        }
        if let Some(c) = self.ctrl.take() {
            c.disconnect();
        }
    }

    /// Keep Alive and namespace checks; a failure starts a reset.
    fn housekeeping(&mut self) {
        let Some(ctrl) = self.ctrl.as_mut() else {
            return;
        };
        let mut result = Ok(());
        if self.last_keep_alive.elapsed() >= Duration::from_millis(u64::from(KATO_MS / 3)) {
            result = ctrl
                .keep_alive()
                .map_err(|e| format!("Keep Alive failed: {e}"));
            self.last_keep_alive = Instant::now();
        }
        if result.is_ok() && self.last_ns_check.elapsed() >= NS_CHECK_EVERY {
            self.last_ns_check = Instant::now();
            result = check_namespaces(ctrl, &self.shared.namespaces);
        }
        if let Err(why) = result {
            self.start_reset(why);
        }
    }

    fn start_reset(&mut self, why: String) {
        log::warn!(
            "remote controller {}: path lost: {why}; reconnecting every {:?}, I/O held up to ctrlr_loss_timeout_sec={}",
            self.shared.opts.name,
            self.shared.opts.reconnect_delay,
            self.shared.opts.ctrlr_loss_timeout.as_secs()
        );
        if let Some(c) = self.ctrl.take() {
            c.disconnect();
        }
        self.assigned.clear();
        self.shared.generation.fetch_add(1, Ordering::AcqRel);
        let mut st = lock(&self.shared.status);
        st.resets += 1;
        st.last_error = Some(why);
        st.since = Some(Instant::now());
        st.cntlid = 0;
        st.io_queues = 0;
        let to = if self.shared.opts.ctrlr_loss_timeout.is_zero() {
            CtrlrState::Failed
        } else {
            CtrlrState::Resetting
        };
        self.shared.set_state(&mut st, CtrlrState::Resetting);
        self.shared.set_state(&mut st, to);
    }

    fn try_reconnect(&mut self) {
        let result = connect_admin(&self.shared.opts).and_then(|(mut ctrl, granted)| {
            check_namespaces(&mut ctrl, &self.shared.namespaces)
                .map_err(RemoteError::InvalidArgument)?;
            Ok((ctrl, granted))
        });
        let mut st = lock(&self.shared.status);
        match result {
            Ok((ctrl, granted)) => {
                st.cntlid = ctrl.cntlid();
                st.since = None;
                self.granted = granted;
                self.ctrl = Some(ctrl);
                self.last_keep_alive = Instant::now();
                self.last_ns_check = Instant::now();
                // Queue pairs of the new association only.
                self.shared.generation.fetch_add(1, Ordering::AcqRel);
                self.shared.set_state(&mut st, CtrlrState::Connected);
            }
            Err(e) => {
                log::debug!(
                    "remote controller {}: reconnect: {e}",
                    self.shared.opts.name
                );
                st.last_error = Some(e.to_string());
                let lost_for = st.since.map_or(Duration::ZERO, |s| s.elapsed());
                if st.state == CtrlrState::Resetting
                    && lost_for >= self.shared.opts.ctrlr_loss_timeout
                {
                    log::error!(
                        "remote controller {}: lost for {lost_for:?}: failing I/O ({e})",
                        self.shared.opts.name
                    );
                    self.shared.set_state(&mut st, CtrlrState::Failed);
                }
            }
        }
    }

    /// Connects a queue pair for every channel that has none in this generation.
    fn serve_queues(&mut self) {
        let generation = self.shared.generation.load(Ordering::Acquire);
        let live: Vec<Arc<Mailbox>> = {
            let mut all = lock(&self.shared.mailboxes);
            all.retain(|w| w.strong_count() > 0);
            all.iter().filter_map(Weak::upgrade).collect()
        };
        self.assigned.retain(|(w, _)| w.strong_count() > 0);
        for mb in live {
            if self
                .assigned
                .iter()
                .any(|(w, _)| std::ptr::eq(w.as_ptr(), Arc::as_ptr(&mb)))
            {
                continue;
            }
            let Some(qid) = (1..=self.granted).find(|q| self.assigned.iter().all(|(_, a)| a != q))
            else {
                let why = format!(
                    "the remote granted {} I/O queues and every one is in use",
                    self.granted
                );
                log::error!("remote controller {}: {why}", self.shared.opts.name);
                lock(&self.shared.status).last_error = Some(why);
                return;
            };
            match self.connect_queue(qid) {
                Ok(qp) => {
                    *lock(&mb.slot) = Some((generation, qp));
                    self.assigned.push((Arc::downgrade(&mb), qid));
                }
                Err(e) => {
                    self.start_reset(format!("connecting I/O queue {qid}: {e}"));
                    return;
                }
            }
        }
        lock(&self.shared.status).io_queues = self.assigned.len();
    }

    fn connect_queue(&mut self, qid: u16) -> Result<QueuePair, HostError> {
        let ctrl = self
            .ctrl
            .as_mut()
            .expect("queues are served only while connected");
        let o = &self.shared.opts;
        let id = ctrl
            .identify()
            .ok_or(HostError::NotReady("no Identify Controller data"))?;
        let ioccsz = id.ioccsz.get();
        let cfg = QueuePairConfig {
            qid,
            queue_depth: o.queue_depth.min(ctrl.cap().mqes().max(1)),
            digests: Digests::new(o.header_digest, o.data_digest),
            hostnqn: ctrl.options().hostnqn.clone(),
            hostid: ctrl.options().hostid,
            subnqn: o.subnqn.clone(),
            cntlid: ctrl.cntlid(),
            kato_ms: 0,
            disable_sq_flow_control: false,
            in_capsule_max: ioccsz.saturating_mul(16).saturating_sub(64),
            maxr2t: 0,
            max_transfer: self.shared.max_transfer,
        };
        let qp = QueuePair::connect(o.addr, cfg, CONNECT_TIMEOUT)?;
        if qp.negotiated().auth_required {
            return Err(HostError::InvalidArgument(
                "the remote requires DH-HMAC-CHAP, which the remote backend does not do".into(),
            ));
        }
        Ok(qp)
    }
}

/// Re-identifies every namespace; marks the unusable ones failed (and clears those usable
/// again). Err: the admin queue failed.
fn check_namespaces(ctrl: &mut Controller, namespaces: &[Arc<NsShared>]) -> Result<(), String> {
    for ns in namespaces {
        match ctrl.identify_namespace(ns.nsid) {
            Ok(id) => ns.set_failure(check_namespace(ns, &id)),
            Err(HostError::Status(s)) => ns.set_failure(Some(format!(
                "remote namespace {}: Identify failed with {s}",
                ns.nsid
            ))),
            Err(e) => return Err(format!("Identify Namespace {}: {e}", ns.nsid)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrite_nvme::identify::LbaFormat;

    fn ns_id(lbads: u8, ms: u16, nsze: u64) -> IdentifyNamespace {
        let mut id = IdentifyNamespace::zeroed();
        id.nsze = nsze.into();
        id.lbaf[0] = LbaFormat { ms, lbads, rp: 0 }.encode().into();
        id
    }

    fn shared_ns(bs: u32, blocks: u64) -> NsShared {
        NsShared {
            nsid: 1,
            bdev_name: "r0n1".into(),
            block_size: bs,
            num_blocks: blocks,
            uuid: [0; 16],
            caps: Capabilities {
                write_zeroes: true,
                unmap: false,
                volatile_write_cache: false,
                max_transfer_bytes: 4096,
                copy: false,
                read_only: false,
                thin_provisioned: false,
            },
            offloads: Offloads::default(),
            copy_chunk: 1,
            failed: AtomicBool::new(false),
            failure: Mutex::new(None),
        }
    }

    #[test]
    fn namespace_checks_name_the_change() {
        assert_eq!(usable(&ns_id(12, 0, 100)), Ok((4096, 100)));
        assert!(usable(&ns_id(12, 0, 0))
            .expect_err("refused")
            .contains("not active"));
        assert!(usable(&ns_id(12, 8, 100))
            .expect_err("refused")
            .contains("metadata"));
        assert!(usable(&ns_id(13, 0, 100))
            .expect_err("refused")
            .contains("8192"));
        let ns = shared_ns(4096, 100);
        assert_eq!(check_namespace(&ns, &ns_id(12, 0, 100)), None);
        assert_eq!(check_namespace(&ns, &ns_id(12, 0, 200)), None);
        let shrunk = check_namespace(&ns, &ns_id(12, 0, 50)).expect("shrunk");
        assert!(shrunk.contains("shrank from 100 to 50"), "{shrunk}");
        let bs = check_namespace(&ns, &ns_id(9, 0, 800)).expect("block size");
        assert!(bs.contains("from 4096 to 512"), "{bs}");
        ns.set_failure(Some(shrunk.clone()));
        assert_eq!(ns.failure(), Some(shrunk));
        ns.set_failure(None);
        assert_eq!(ns.failure(), None);
    }

    #[test]
    fn state_transitions() {
        use CtrlrState::*;
        assert!(CtrlrState::is_transition_valid(Connected, Resetting));
        assert!(CtrlrState::is_transition_valid(Failed, Connected));
        assert!(CtrlrState::is_transition_valid(Failed, Detached));
        assert!(!CtrlrState::is_transition_valid(Connected, Failed));
        assert!(!CtrlrState::is_transition_valid(Detached, Connected));
    }

    #[test]
    fn derived_uuids_are_stable_and_distinct() {
        let a = derived_uuid("nqn.x", 1);
        assert_eq!(a, derived_uuid("nqn.x", 1));
        assert_ne!(a, derived_uuid("nqn.x", 2));
        assert_ne!(a, derived_uuid("nqn.y", 1));
        assert_eq!(a[6] >> 4, 8);
    }
}
