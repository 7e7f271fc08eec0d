//! A controller: the association a host made with one subsystem through one admin queue, shared
//! by that admin queue and the I/O queues that joined it (possibly on other reactors).
//!
//! The I/O path touches only atomics here (the failed flag, per-queue counters it owns); the rest
//! sits behind a mutex used by admin commands, Connect and the control thread.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ferrite_nvme::fabrics::Csts;
use ferrite_nvme::Status;

use crate::error_log::ErrorLog;
use crate::subsystem::Subsystem;
use crate::MAX_NSID;

/// Asynchronous events this target raises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AsyncEvent {
    /// Notice: namespace attribute changed (log page 04h).
    NamespaceAttributeChanged,
    /// Notice: discovery log page changed (log page 70h).
    DiscoveryLogChanged,
    /// Notice: Asymmetric Namespace Access change (log page 0Ch).
    AnaChange,
    /// I/O command specific: reservation log page available (log page 80h).
    ReservationLogAvailable,
}

impl AsyncEvent {
    /// Completion dword 0 of the AER that reports this event.
    pub fn dw0(self) -> u32 {
        const TYPE_NOTICE: u32 = 2;
        const TYPE_IO_COMMAND_SPECIFIC: u32 = 6;
        let (kind, info, lid) = match self {
            AsyncEvent::NamespaceAttributeChanged => (TYPE_NOTICE, 0x00u32, 0x04u32),
            AsyncEvent::DiscoveryLogChanged => (TYPE_NOTICE, 0xF0, 0x70),
            AsyncEvent::AnaChange => (TYPE_NOTICE, 0x03, 0x0C),
            AsyncEvent::ReservationLogAvailable => (TYPE_IO_COMMAND_SPECIFIC, 0x00, 0x80),
        };
        kind | (info << 8) | (lid << 16)
    }

    /// The Asynchronous Event Configuration bit that enables it (0: not maskable there;
    /// reservation notices are masked per namespace instead).
    fn aec_bit(self) -> u32 {
        match self {
            AsyncEvent::NamespaceAttributeChanged => 1 << 8,
            AsyncEvent::DiscoveryLogChanged => 1 << 31,
            AsyncEvent::AnaChange => 1 << 11,
            AsyncEvent::ReservationLogAvailable => 0,
        }
    }
}

/// Per-queue counters behind the SMART / health log. Written by the queue's reactor only
/// (relaxed), summed when a host reads the log.
#[derive(Debug, Default)]
pub struct HealthCounters {
    pub read_commands: AtomicU64,
    pub write_commands: AtomicU64,
    pub bytes_read: AtomicU64,
    pub bytes_written: AtomicU64,
    pub media_errors: AtomicU64,
    /// Nanoseconds with at least one command outstanding.
    pub busy_ns: AtomicU64,
}

impl HealthCounters {
    pub fn add(&self, counter: &AtomicU64, value: u64) {
        // Single writer: a load+store pair avoids a locked RMW on the hot path.
        counter.store(
            counter.load(Ordering::Relaxed).wrapping_add(value),
            Ordering::Relaxed,
        );
    }

    fn snapshot(&self) -> HealthTotals {
        HealthTotals {
            read_commands: self.read_commands.load(Ordering::Relaxed),
            write_commands: self.write_commands.load(Ordering::Relaxed),
            bytes_read: self.bytes_read.load(Ordering::Relaxed),
            bytes_written: self.bytes_written.load(Ordering::Relaxed),
            media_errors: self.media_errors.load(Ordering::Relaxed),
            busy_ns: self.busy_ns.load(Ordering::Relaxed),
        }
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct HealthTotals {
    pub read_commands: u64,
    pub write_commands: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub media_errors: u64,
    pub busy_ns: u64,
}

impl std::ops::AddAssign for HealthTotals {
    fn add_assign(&mut self, o: HealthTotals) {
        self.read_commands += o.read_commands;
        self.write_commands += o.write_commands;
        self.bytes_read += o.bytes_read;
        self.bytes_written += o.bytes_written;
        self.media_errors += o.media_errors;
        self.busy_ns += o.busy_ns;
    }
}

/// Features a host can set. Values are the Set Features dword 11 encodings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Features {
    pub arbitration: u32,
    pub power_management: u32,
    pub temperature_threshold: u32,
    pub error_recovery: u32,
    /// Granted (NSQA, NCQA), 0-based, fixed once set.
    pub number_of_queues: Option<(u16, u16)>,
    pub async_event_config: u32,
}

impl Default for Features {
    fn default() -> Self {
        Features {
            arbitration: 0,
            power_management: 0,
            // Over-temperature threshold 0x157 (343 K), the spec's suggested default.
            temperature_threshold: 0x157,
            error_recovery: 0,
            number_of_queues: None,
            async_event_config: 1 << 8,
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct ControllerState {
    pub cc: u32,
    pub csts: u32,
    pub features: Features,
    /// Connected I/O queue ids.
    pub io_queues: BTreeSet<u16>,
    /// The reactor serving each queue (qid 0 included), recorded at Connect.
    pub queue_reactors: BTreeMap<u16, usize>,
    /// Events raised but not yet reported through an AER.
    pub pending_events: VecDeque<AsyncEvent>,
    /// Event types reported and not yet cleared by reading their log page (masked until then).
    pub reported_events: Vec<AsyncEvent>,
    pub changed_namespaces: BTreeSet<u32>,
    pub changed_overflow: bool,
    /// Reservation notifications not yet read: (log page type, NSID), oldest first.
    pub resv_log: VecDeque<(u8, u32)>,
    /// Reservation Notification log page count of the last entry queued.
    pub resv_log_count: u64,
    /// Reservation Notification Mask per NSID (feature 82h): bit 1 registration preempted,
    /// bit 2 reservation released, bit 3 reservation preempted; absent = nothing masked.
    pub resv_mask: BTreeMap<u32, u32>,
    pub counters: Vec<Arc<HealthCounters>>,
    /// Totals of queues that have gone.
    pub retired: HealthTotals,
}

#[derive(Debug)]
pub struct Controller {
    pub cntlid: u16,
    pub subnqn: String,
    pub hostnqn: String,
    pub hostid: [u8; 16],
    pub discovery: bool,
    /// Keep Alive Timeout in milliseconds; 0 disables the timer.
    kato_ms: AtomicU32,
    /// Nanoseconds since `epoch` of the last Keep Alive (or other admin command).
    last_keep_alive_ns: AtomicU64,
    epoch: Instant,
    failed: AtomicBool,
    errors: ErrorLog,
    /// CSTS.RDY, mirrored for the command paths (written under the state lock): while clear,
    /// only Fabrics commands are served.
    ready: AtomicBool,
    /// Bumped each time CC.EN goes from 1 to 0 (a controller reset). An I/O queue remembers the
    /// epoch it connected in; one from an earlier epoch is torn down and serves nothing.
    enable_epoch: AtomicU32,
    /// Feature 06h (volatile write cache enable), read on every write.
    write_cache_enabled: AtomicBool,
    event_pending: AtomicBool,
    failure_reason: Mutex<Option<String>>,
    state: Mutex<ControllerState>,
}

/// What `nvmf_get_controllers`-style listings show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControllerInfo {
    pub cntlid: u16,
    pub subnqn: String,
    pub hostnqn: String,
    pub hostid: [u8; 16],
    pub io_queues: Vec<u16>,
    /// (qid, reactor index) of the admin queue and every I/O queue.
    pub queue_reactors: Vec<(u16, usize)>,
    pub kato_ms: u32,
    pub failed: bool,
}

impl Controller {
    pub(crate) fn new(
        cntlid: u16,
        subsystem: &Subsystem,
        hostnqn: String,
        hostid: [u8; 16],
        kato_ms: u32,
        epoch: Instant,
    ) -> Controller {
        let ctrl = Controller {
            cntlid,
            subnqn: subsystem.nqn.clone(),
            hostnqn,
            hostid,
            discovery: subsystem.is_discovery(),
            kato_ms: AtomicU32::new(kato_ms),
            last_keep_alive_ns: AtomicU64::new(0),
            epoch,
            failed: AtomicBool::new(false),
            errors: ErrorLog::default(),
            ready: AtomicBool::new(false),
            enable_epoch: AtomicU32::new(0),
            write_cache_enabled: AtomicBool::new(true),
            event_pending: AtomicBool::new(false),
            failure_reason: Mutex::new(None),
            state: Mutex::new(ControllerState::default()),
        };
        ctrl.keep_alive(Instant::now());
        ctrl
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, ControllerState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn info(&self) -> ControllerInfo {
        let st = self.lock();
        ControllerInfo {
            cntlid: self.cntlid,
            subnqn: self.subnqn.clone(),
            hostnqn: self.hostnqn.clone(),
            hostid: self.hostid,
            io_queues: st.io_queues.iter().copied().collect(),
            queue_reactors: std::iter::once(0)
                .chain(st.io_queues.iter().copied())
                .filter_map(|qid| st.queue_reactors.get(&qid).map(|&r| (qid, r)))
                .collect(),
            kato_ms: self.kato_ms(),
            failed: self.is_failed(),
        }
    }

    pub fn kato_ms(&self) -> u32 {
        self.kato_ms.load(Ordering::Relaxed)
    }

    pub(crate) fn set_kato_ms(&self, ms: u32) {
        self.kato_ms.store(ms, Ordering::Relaxed);
    }

    pub(crate) fn keep_alive(&self, now: Instant) {
        let ns = now.saturating_duration_since(self.epoch).as_nanos() as u64;
        self.last_keep_alive_ns.store(ns, Ordering::Relaxed);
    }

    /// True when the keep-alive timer has expired at `now`.
    pub(crate) fn keep_alive_expired(&self, now: Instant) -> bool {
        let kato = self.kato_ms();
        if kato == 0 {
            return false;
        }
        let last =
            self.epoch + Duration::from_nanos(self.last_keep_alive_ns.load(Ordering::Relaxed));
        now.saturating_duration_since(last) > Duration::from_millis(kato as u64)
    }

    pub fn write_cache_enabled(&self) -> bool {
        self.write_cache_enabled.load(Ordering::Relaxed)
    }

    pub(crate) fn set_write_cache_enabled(&self, enabled: bool) {
        self.write_cache_enabled.store(enabled, Ordering::Relaxed);
    }

    /// CSTS.RDY: the host enabled the controller and has not reset it since.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// The current enable epoch (see [`Controller::reset`]).
    pub(crate) fn epoch(&self) -> u32 {
        self.enable_epoch.load(Ordering::Acquire)
    }

    /// CSTS.RDY changes with `st` locked.
    pub(crate) fn set_ready(&self, st: &mut ControllerState, ready: bool) {
        st.csts = Csts(st.csts).with_rdy(ready).0;
        self.ready.store(ready, Ordering::Release);
    }

    /// A controller reset (CC.EN 1 -> 0): not ready, and every I/O queue of the old epoch is
    /// gone; their connections are closed by their reactors, their qids free for the next
    /// enable.
    pub(crate) fn reset(&self, st: &mut ControllerState) {
        self.set_ready(st, false);
        self.enable_epoch.fetch_add(1, Ordering::AcqRel);
        st.io_queues.clear();
    }

    /// An I/O queue of epoch `epoch` is released: its qid is freed unless a reset already did.
    pub(crate) fn release_io_queue(&self, qid: u16, epoch: u32) {
        let mut st = self.lock();
        if self.epoch() == epoch {
            st.io_queues.remove(&qid);
        }
    }

    pub fn is_failed(&self) -> bool {
        self.failed.load(Ordering::Relaxed)
    }

    /// Fails the controller: every queue of it is disconnected by its reactor.
    pub fn fail(&self, reason: &str) {
        if !self.failed.swap(true, Ordering::AcqRel) {
            log::warn!(
                "controller {} ({}, host {}) failed: {reason}",
                self.cntlid,
                self.subnqn,
                self.hostnqn
            );
            *self
                .failure_reason
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = Some(reason.to_string());
            let mut st = self.lock();
            st.csts |= 1 << 1; // CSTS.CFS
        }
    }

    pub(crate) fn namespace_changed(&self, nsid: u32) {
        let mut st = self.lock();
        if st.changed_namespaces.len() >= 1024 {
            st.changed_overflow = true;
        } else if nsid <= MAX_NSID {
            st.changed_namespaces.insert(nsid);
        }
    }

    /// Queues an event for the next AER (if the host enabled it and it is not masked).
    pub fn raise_event(&self, event: AsyncEvent) {
        let mut st = self.lock();
        let bit = event.aec_bit();
        if bit != 0 && st.features.async_event_config & bit == 0 {
            return;
        }
        if st.reported_events.contains(&event) || st.pending_events.contains(&event) {
            return;
        }
        st.pending_events.push_back(event);
        self.event_pending.store(true, Ordering::Release);
    }

    pub(crate) fn has_pending_event(&self) -> bool {
        self.event_pending.load(Ordering::Acquire)
    }

    /// Takes the next event to report, masking its type until its log page is read.
    pub(crate) fn take_event(&self) -> Option<AsyncEvent> {
        let mut st = self.lock();
        let event = st.pending_events.pop_front()?;
        st.reported_events.push(event);
        if st.pending_events.is_empty() {
            self.event_pending.store(false, Ordering::Release);
        }
        Some(event)
    }

    /// A log page read with RAE clear unmasks its event type.
    pub(crate) fn clear_event(&self, st: &mut ControllerState, event: AsyncEvent) {
        st.reported_events.retain(|e| *e != event);
    }

    /// Records an error completion in the Error Information log: lock-free, so error
    /// completions on the I/O path never take the controller's mutex.
    pub(crate) fn record_error(&self, sqid: u16, cid: u16, status: Status, nsid: u32, lba: u64) {
        self.errors.record(sqid, cid, status, nsid, lba);
    }

    pub(crate) fn error_log(&self) -> &ErrorLog {
        &self.errors
    }

    pub(crate) fn register_counters(&self, counters: Arc<HealthCounters>) {
        self.lock().counters.push(counters);
    }

    pub(crate) fn retire_counters(&self, counters: &Arc<HealthCounters>) {
        let mut st = self.lock();
        if let Some(pos) = st.counters.iter().position(|c| Arc::ptr_eq(c, counters)) {
            let gone = st.counters.swap_remove(pos);
            st.retired += gone.snapshot();
        }
    }

    pub(crate) fn health_totals(&self) -> HealthTotals {
        let st = self.lock();
        let mut total = st.retired;
        for c in &st.counters {
            total += c.snapshot();
        }
        total
    }

    pub(crate) fn uptime(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.epoch)
    }
}
