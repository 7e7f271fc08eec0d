//! The blocking controller: one admin queue and N I/O queues, each on its
//! own connection, driven synchronously for tests and tools.
//!
//! Every call sends one command and waits for its completion (or the
//! configured timeout). When a keep-alive timeout is set, a Keep Alive is
//! sent first whenever half of it has passed since the last one.

mod admin;
mod io;
mod pipelined;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ferrite_nvme::admin::{fid, number_of_queues, parse_number_of_queues};
use ferrite_nvme::fabrics::{property, shst, Cap, Cc, Csts};
use ferrite_nvme::identify::IdentifyController;
use ferrite_nvme::nqn::UUID_NQN_PREFIX;
use ferrite_nvme::tcp::Digests;
use ferrite_nvme::Command;

use crate::error::{HostError, Result};
use crate::qpair::{
    Completed, Data, QueuePair, QueuePairConfig, SglMode, Trtype, ADMIN_IN_CAPSULE_MAX,
};
use crate::types::Cid;

/// The host UUID used when the caller does not pick one.
pub const DEFAULT_HOST_UUID: [u8; 16] = [
    0xfe, 0x22, 0x17, 0xe0, 0x5a, 0x4c, 0x4d, 0x1b, 0x9a, 0x61, 0x3c, 0x0d, 0x7e, 0x4b, 0x00, 0x01,
];

/// Formats a UUID as 8-4-4-4-12 hex.
pub fn uuid_string(u: &[u8; 16]) -> String {
    let h: Vec<String> = u.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        h[0..4].concat(),
        h[4..6].concat(),
        h[6..8].concat(),
        h[8..10].concat(),
        h[10..16].concat()
    )
}

/// The UUID-based host NQN for `uuid` (hostid and hostnqn agree).
pub fn uuid_hostnqn(uuid: &[u8; 16]) -> String {
    format!("{UUID_NQN_PREFIX}{}", uuid_string(uuid))
}

/// How to connect a controller.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// Transport (NVMe/TCP unless set).
    pub trtype: Trtype,
    /// Target address.
    pub addr: SocketAddr,
    /// Subsystem NQN.
    pub subnqn: String,
    /// Host NQN.
    pub hostnqn: String,
    /// Host identifier.
    pub hostid: [u8; 16],
    /// Request header digests.
    pub header_digest: bool,
    /// Request data digests.
    pub data_digest: bool,
    /// Keep Alive Timeout in ms (0 disables).
    pub kato_ms: u32,
    /// I/O queues to connect.
    pub io_queues: u16,
    /// Commands outstanding per I/O queue (clamped to CAP.MQES).
    pub queue_depth: u16,
    /// Timeout of each step and each command.
    pub timeout: Duration,
    /// Commands outstanding on the admin queue.
    pub admin_queue_depth: u16,
    /// Set CATTR "disable SQ flow control" on every queue.
    pub disable_sq_flow_control: bool,
    /// Upper bound on one command's data (further clamped to MDTS).
    pub max_transfer: u32,
    /// Enable the controller (CC.EN, wait CSTS.RDY); false leaves it disabled.
    pub enable: bool,
    /// DH-HMAC-CHAP secrets, used when a Connect response requires authentication.
    pub dhchap: Option<crate::auth::DhchapSecrets>,
}

impl ConnectOptions {
    /// Defaults: host [`DEFAULT_HOST_UUID`], no digests, KATO 30 s, one I/O
    /// queue of depth 32, 10 s timeout, 1 MiB maximum transfer.
    pub fn new(addr: SocketAddr, subnqn: impl Into<String>) -> ConnectOptions {
        ConnectOptions {
            trtype: Trtype::Tcp,
            addr,
            subnqn: subnqn.into(),
            hostnqn: uuid_hostnqn(&DEFAULT_HOST_UUID),
            hostid: DEFAULT_HOST_UUID,
            header_digest: false,
            data_digest: false,
            kato_ms: 30_000,
            io_queues: 1,
            queue_depth: 32,
            timeout: Duration::from_secs(10),
            admin_queue_depth: 31,
            disable_sq_flow_control: false,
            max_transfer: 1 << 20,
            enable: true,
            dhchap: None,
        }
    }

    /// Sets hostid to `uuid` and hostnqn to its UUID NQN.
    pub fn with_host_uuid(mut self, uuid: [u8; 16]) -> ConnectOptions {
        self.hostid = uuid;
        self.hostnqn = uuid_hostnqn(&uuid);
        self
    }

    fn digests(&self) -> Digests {
        Digests::new(self.header_digest, self.data_digest)
    }

    fn queue_config(&self, qid: u16, depth: u16, cntlid: u16, in_capsule: u32) -> QueuePairConfig {
        QueuePairConfig {
            qid,
            queue_depth: depth,
            digests: self.digests(),
            hostnqn: self.hostnqn.clone(),
            hostid: self.hostid,
            subnqn: self.subnqn.clone(),
            cntlid,
            kato_ms: self.kato_ms,
            disable_sq_flow_control: self.disable_sq_flow_control,
            in_capsule_max: in_capsule,
            maxr2t: 0,
            max_transfer: self.max_transfer,
        }
    }
}

/// Data of a raw command.
#[derive(Debug)]
pub enum IoData<'a> {
    /// No data.
    None,
    /// Host to controller.
    Write(&'a [u8]),
    /// Controller to host, into this buffer (its length is the transfer length).
    Read(&'a mut [u8]),
}

/// One queue with a stash of completions not yet asked for.
#[derive(Debug)]
pub(crate) struct Queue {
    pub qp: QueuePair,
    stash: Vec<Completed>,
}

impl Queue {
    fn new(qp: QueuePair) -> Queue {
        Queue {
            qp,
            stash: Vec::with_capacity(64),
        }
    }

    /// Submits and waits; copies read data into `data`. Status is not checked.
    pub fn exec(
        &mut self,
        cmd: &Command,
        data: IoData<'_>,
        mode: SglMode,
        timeout: Duration,
    ) -> Result<Completed> {
        let d =
            match &data {
                IoData::None => Data::None,
                IoData::Write(w) => Data::Write(w),
                IoData::Read(r) => Data::Read(u32::try_from(r.len()).map_err(|_| {
                    HostError::InvalidArgument(format!("read of {} bytes", r.len()))
                })?),
            };
        let cid = self.qp.submit_with(cmd, d, mode)?;
        let done = self.wait_cid(cid, timeout)?;
        if let IoData::Read(buf) = data {
            let got = self.qp.data(cid);
            let n = got.len().min(buf.len());
            buf[..n].copy_from_slice(&got[..n]);
        }
        Ok(done)
    }

    /// Waits for the completion of `cid`, stashing others.
    pub fn wait_cid(&mut self, cid: Cid, timeout: Duration) -> Result<Completed> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(i) = self.stash.iter().position(|c| c.cid == cid) {
                return Ok(self.stash.swap_remove(i));
            }
            if self.qp.poll(&mut self.stash)? > 0 {
                continue;
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(HostError::Timeout {
                    what: "a command completion",
                    after: timeout,
                });
            }
            self.qp.wait(deadline - now)?;
        }
    }

    /// Completions that arrived for commands nobody waited on (e.g. AERs).
    pub fn take_stashed(&mut self) -> Vec<Completed> {
        std::mem::take(&mut self.stash)
    }
}

/// A connected NVMe-oF controller.
#[derive(Debug)]
pub struct Controller {
    opts: ConnectOptions,
    admin: Queue,
    io: Vec<Queue>,
    cntlid: u16,
    cap: Cap,
    vs: u32,
    id: Option<Box<IdentifyController>>,
    max_transfer: u32,
    block_sizes: HashMap<u32, u32>,
    last_keep_alive: Instant,
}

impl Controller {
    /// Connects the admin queue, enables the controller, identifies it,
    /// negotiates the number of queues and connects the I/O queues.
    pub fn connect(opts: ConnectOptions) -> Result<Controller> {
        if opts.io_queues > 0 && opts.queue_depth == 0 {
            return Err(HostError::InvalidArgument("queue depth 0".into()));
        }
        let admin_cfg = opts.queue_config(
            0,
            opts.admin_queue_depth,
            ferrite_nvme::fabrics::CNTLID_DYNAMIC,
            ADMIN_IN_CAPSULE_MAX,
        );
        let admin = QueuePair::connect_over(opts.trtype, opts.addr, admin_cfg, opts.timeout)?;
        let cntlid = admin.negotiated().cntlid;
        let admin_auth = admin.negotiated().auth_required;
        let mut ctrl = Controller {
            max_transfer: opts.max_transfer,
            opts,
            admin: Queue::new(admin),
            io: Vec::new(),
            cntlid,
            cap: Cap::new(),
            vs: 0,
            id: None,
            block_sizes: HashMap::new(),
            last_keep_alive: Instant::now(),
        };
        if admin_auth {
            crate::auth::authenticate(&mut ctrl.admin, &ctrl.opts)?;
        }
        ctrl.cap = Cap(ctrl.property_get(property::CAP)?);
        ctrl.vs = ctrl.property_get(property::VS)? as u32;
        if !ctrl.opts.enable {
            return Ok(ctrl);
        }
        ctrl.enable()?;
        let id = ctrl.identify_controller()?;
        ctrl.max_transfer = ctrl.opts.max_transfer.min(mdts_bytes(&id, ctrl.cap));
        let ioccsz = id.ioccsz.get();
        ctrl.id = Some(Box::new(id));
        if ctrl.opts.io_queues > 0 {
            ctrl.connect_io_queues(ioccsz)?;
        }
        Ok(ctrl)
    }

    /// Sets CC.EN (with 64-byte SQEs, 16-byte CQEs) and waits for CSTS.RDY.
    fn enable(&mut self) -> Result<()> {
        let cc = Cc(self.property_get(property::CC)? as u32);
        if !cc.en() {
            let cc = Cc::build(true, 0, self.cap.mpsmin(), 0, 0, 6, 4);
            self.property_set(property::CC, u64::from(cc.0))?;
        }
        // CAP.TO is in 500 ms units; wait at least the caller's timeout.
        let ready_timeout = self
            .opts
            .timeout
            .max(Duration::from_millis(u64::from(self.cap.to()) * 500));
        self.wait_csts("CSTS.RDY", ready_timeout, |c| c.rdy())
    }

    fn wait_csts(
        &mut self,
        what: &'static str,
        timeout: Duration,
        done: impl Fn(Csts) -> bool,
    ) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let csts = Csts(self.property_get(property::CSTS)? as u32);
            if csts.cfs() {
                return Err(HostError::ControllerFatal);
            }
            if done(csts) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(HostError::Timeout {
                    what,
                    after: timeout,
                });
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn connect_io_queues(&mut self, ioccsz: u32) -> Result<()> {
        let want = self.opts.io_queues;
        let value = number_of_queues(want - 1, want - 1);
        let granted = self.set_features(fid::NUMBER_OF_QUEUES, 0, value, false)?;
        let (nsqa, ncqa) = parse_number_of_queues(granted);
        let count = want.min(nsqa.saturating_add(1)).min(ncqa.saturating_add(1));
        if count < want {
            log::warn!("controller granted {count} I/O queues of {want} asked");
        }
        // MQES is 0-based; SQSIZE = depth must not exceed it.
        let depth = self.opts.queue_depth.min(self.cap.mqes().max(1));
        let in_capsule = (ioccsz.saturating_mul(16)).saturating_sub(64);
        for qid in 1..=count {
            let cfg = self.opts.queue_config(qid, depth, self.cntlid, in_capsule);
            let mut cfg = cfg;
            cfg.max_transfer = self.max_transfer;
            let qp =
                QueuePair::connect_over(self.opts.trtype, self.opts.addr, cfg, self.opts.timeout)?;
            let auth = qp.negotiated().auth_required;
            let mut q = Queue::new(qp);
            if auth {
                crate::auth::authenticate(&mut q, &self.opts)?;
            }
            self.io.push(q);
        }
        Ok(())
    }

    /// The options it was connected with.
    pub fn options(&self) -> &ConnectOptions {
        &self.opts
    }

    /// Runs DH-HMAC-CHAP again on the admin queue and every I/O queue (re-authentication);
    /// `secrets` replaces the ones connected with when given.
    pub fn reauthenticate(&mut self, secrets: Option<crate::auth::DhchapSecrets>) -> Result<()> {
        if let Some(s) = secrets {
            self.opts.dhchap = Some(s);
        }
        crate::auth::authenticate(&mut self.admin, &self.opts)?;
        for q in &mut self.io {
            crate::auth::authenticate(q, &self.opts)?;
        }
        Ok(())
    }

    /// Controller ID assigned at Connect.
    pub fn cntlid(&self) -> u16 {
        self.cntlid
    }

    /// CAP as read at connect.
    pub fn cap(&self) -> Cap {
        self.cap
    }

    /// VS as read at connect.
    pub fn version(&self) -> u32 {
        self.vs
    }

    /// Identify Controller data read at connect (None when not enabled).
    pub fn identify(&self) -> Option<&IdentifyController> {
        self.id.as_deref()
    }

    /// Largest data transfer of one command (options and MDTS).
    pub fn max_transfer(&self) -> u32 {
        self.max_transfer
    }

    /// I/O queues connected (qids 1..=count).
    pub fn io_queue_count(&self) -> u16 {
        self.io.len() as u16
    }

    /// The admin queue pair.
    pub fn admin_queue(&mut self) -> &mut QueuePair {
        &mut self.admin.qp
    }

    /// The queue pair of I/O queue `qid`.
    pub fn io_queue(&mut self, qid: u16) -> Result<&mut QueuePair> {
        Ok(&mut self.io_mut(qid)?.qp)
    }

    /// Takes the I/O queue pairs out (qid order) to drive them from a
    /// poll loop elsewhere; the controller keeps its admin queue.
    pub fn take_io_queues(&mut self) -> Vec<QueuePair> {
        self.io.drain(..).map(|q| q.qp).collect()
    }

    /// Completions on the admin queue that no call waited for (AERs).
    pub fn take_admin_events(&mut self) -> Result<Vec<Completed>> {
        let mut sink = Vec::new();
        self.admin.qp.poll(&mut sink)?;
        let mut all = self.admin.take_stashed();
        all.extend(sink);
        Ok(all)
    }

    fn io_mut(&mut self, qid: u16) -> Result<&mut Queue> {
        qid.checked_sub(1)
            .and_then(|i| self.io.get_mut(usize::from(i)))
            .ok_or(HostError::NoSuchQueue(qid))
    }

    /// Sends a Keep Alive if half the KATO has passed since the last one.
    fn maybe_keep_alive(&mut self) -> Result<()> {
        let kato = self.opts.kato_ms;
        if kato == 0 {
            return Ok(());
        }
        if self.last_keep_alive.elapsed() >= Duration::from_millis(u64::from(kato / 2)) {
            self.keep_alive()?;
        }
        Ok(())
    }

    /// Normal shutdown: CC.SHN = 01b, then wait for CSTS.SHST = complete.
    pub fn shutdown(&mut self) -> Result<()> {
        let cc = self.property_get(property::CC)? as u32;
        let cc = (cc & !(0x3 << 14)) | (u32::from(ferrite_nvme::fabrics::shn::NORMAL) << 14);
        self.property_set(property::CC, u64::from(cc))?;
        let timeout = self.opts.timeout;
        self.wait_csts("CSTS.SHST complete", timeout, |c| {
            c.shst() == shst::COMPLETE
        })
    }

    /// Closes the I/O queues, then the admin queue.
    pub fn disconnect(mut self) {
        for q in &mut self.io {
            q.qp.close();
        }
        self.admin.qp.close();
    }
}

/// MDTS in bytes (u32::MAX when unlimited); the unit is CAP.MPSMIN.
fn mdts_bytes(id: &IdentifyController, cap: Cap) -> u32 {
    if id.mdts == 0 {
        return u32::MAX;
    }
    let page = 1u64 << (12 + u32::from(cap.mpsmin()));
    let bytes = page << u32::from(id.mdts.min(20));
    u32::try_from(bytes).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_formatting() {
        let s = uuid_string(&DEFAULT_HOST_UUID);
        assert_eq!(s, "fe2217e0-5a4c-4d1b-9a61-3c0d7e4b0001");
        assert!(uuid_hostnqn(&DEFAULT_HOST_UUID).starts_with("nqn.2014-08.org.nvmexpress:uuid:"));
        ferrite_nvme::nqn::validate_nqn(&uuid_hostnqn(&DEFAULT_HOST_UUID)).expect("valid nqn");
    }

    #[test]
    fn mdts_units() {
        let mut id = IdentifyController::zeroed();
        let cap = Cap::new();
        assert_eq!(mdts_bytes(&id, cap), u32::MAX);
        id.mdts = 5;
        assert_eq!(mdts_bytes(&id, cap), 128 * 1024);
        assert_eq!(mdts_bytes(&id, cap.with_mpsmin(1)), 256 * 1024);
    }
}
