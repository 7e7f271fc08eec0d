//! QoS on the I/O path: Read, Write and Compare pass this reactor's token buckets (the
//! namespace's bdev limit, then the host's) before `execute_io`; over a limit they wait here, with
//! their data buffer, and `poll` runs them when tokens come back. Other commands are not limited.
//! With no limit ever set this is one atomic load per command.

use ferrite_nvme::command::opcode::io as op;
use ferrite_nvme::Status;
use ferrite_qos::{Admit, Cost, Registry, Shaper};
use ferrite_reactor::TaskContext;

use crate::poll_group::{ConnId, Exec, GroupEvent, PollGroup, QpairState};
use crate::request::Request;
use crate::target::Target;

impl Target {
    /// The QoS limits the reactors enforce.
    pub fn qos(&self) -> &Registry {
        &self.qos
    }
}

/// One reactor's QoS state (part of its poll group).
#[derive(Debug, Default)]
pub(crate) struct QosGate {
    shaper: Option<Shaper<(ConnId, Request)>>,
    /// (QoS registry generation, target configuration generation) last adopted.
    synced: Option<(u64, u64)>,
    /// Bucket per bdev id.
    bdev_buckets: Vec<Option<u32>>,
    /// Per connection: (sync count, queue pair generation, host bucket).
    host_buckets: Vec<(u64, u16, Option<u32>)>,
    syncs: u64,
    /// Commands free to run, handed out by `qos_poll`.
    released: Vec<(ConnId, Request)>,
}

impl QosGate {
    /// Waiting or released commands, for the interrupt-mode deadline.
    pub(crate) fn next_deadline(&self) -> Option<std::time::Instant> {
        if !self.released.is_empty() {
            return Some(std::time::Instant::now());
        }
        self.shaper.as_ref().and_then(Shaper::next_deadline)
    }
}

impl PollGroup {
    /// `execute_io` behind the QoS limits.
    pub(crate) fn execute_io_shaped(
        &mut self,
        conn: ConnId,
        req: Request,
        cx: &mut TaskContext,
    ) -> Exec {
        let registry_gen = self.target.qos().generation();
        if registry_gen == 0 {
            return self.execute_io(conn, req, cx);
        }
        self.qos_sync(registry_gen, cx);
        if self.qos.shaper.as_ref().is_none_or(Shaper::is_empty) {
            return self.execute_io(conn, req, cx);
        }
        let write = match req.cmd.opcode {
            op::READ | op::COMPARE => false,
            op::WRITE => true,
            _ => return self.execute_io(conn, req, cx),
        };
        self.refresh(conn);
        let Some(ns) = self.ns_info(conn, req.cmd.nsid.get()) else {
            return self.execute_io(conn, req, cx);
        };
        let blocks = u64::from(req.cmd.cdw12.get() & 0xFFFF) + 1;
        let cost = Cost {
            write,
            bytes: blocks * u64::from(ns.block_size),
        };
        let bdev = self
            .qos
            .bdev_buckets
            .get(ns.bdev_id.0 as usize)
            .copied()
            .flatten();
        let path = [bdev, self.host_bucket(conn)];
        if path == [None, None] {
            return self.execute_io(conn, req, cx);
        }
        let shaper = self.qos.shaper.as_mut().expect("checked above");
        match shaper.admit(cx.now(), path, cost, (conn, req)) {
            Admit::Go((conn, req)) => self.execute_io(conn, req, cx),
            Admit::Queued => Exec::Pending,
        }
    }

    /// Adopts changed limits or a changed configuration (bdev ids).
    fn qos_sync(&mut self, registry_gen: u64, cx: &mut TaskContext) {
        let target_gen = self.target.generation();
        if self.qos.synced == Some((registry_gen, target_gen)) {
            return;
        }
        let table = self.target.qos().table();
        let cfg = self.target.config();
        let gate = &mut self.qos;
        let shaper = gate
            .shaper
            .get_or_insert_with(|| Shaper::new(cx.reactor_index()));
        let released = &mut gate.released;
        shaper.sync(&table, cx.now(), &mut |item| released.push(item));
        gate.bdev_buckets.clear();
        for (name, entry) in &cfg.bdevs {
            let index = entry.id.0 as usize;
            if gate.bdev_buckets.len() <= index {
                gate.bdev_buckets.resize(index + 1, None);
            }
            gate.bdev_buckets[index] = shaper.bdev_bucket(name);
        }
        gate.syncs += 1;
        gate.synced = Some((registry_gen, target_gen));
    }

    /// The bucket of the host on `conn`, cached per connection until the next sync.
    fn host_bucket(&mut self, conn: ConnId) -> Option<u32> {
        let qp = self.qpairs.get(conn.0 as usize)?.as_ref()?;
        let generation = qp.generation;
        let index = conn.0 as usize;
        let gate = &mut self.qos;
        if let Some(&(syncs, g, bucket)) = gate.host_buckets.get(index) {
            if syncs == gate.syncs && g == generation {
                return bucket;
            }
        }
        let bucket = qp
            .ctrl
            .as_ref()
            .and_then(|c| gate.shaper.as_ref()?.host_bucket(&c.hostnqn));
        if gate.host_buckets.len() <= index {
            gate.host_buckets.resize(index + 1, (0, 0, None));
        }
        gate.host_buckets[index] = (gate.syncs, generation, bucket);
        bucket
    }

    /// The timed poller: refills the buckets each timeslice and runs what the tokens allow.
    pub(crate) fn qos_poll(
        &mut self,
        cx: &mut TaskContext,
        out: &mut dyn FnMut(GroupEvent),
    ) -> bool {
        let Some(shaper) = self.qos.shaper.as_mut() else {
            return false;
        };
        let released = &mut self.qos.released;
        shaper.poll(cx.now(), &mut |item| released.push(item));
        if released.is_empty() {
            return false;
        }
        let mut batch = std::mem::take(&mut self.qos.released);
        for (conn, req) in batch.drain(..) {
            let active = self
                .qpair(conn)
                .is_some_and(|q| q.state == QpairState::Active);
            if !active {
                // Purged on removal; a command cannot outlive its queue here.
                debug_assert!(false, "QoS released a command of a closed queue");
                continue;
            }
            if let Exec::Done(resp) = self.execute_io(conn, req, cx) {
                out(GroupEvent::Respond(conn, resp));
            }
        }
        self.qos.released = batch;
        true
    }

    /// The queue is going away: its waiting commands complete (aborted) so it can drain.
    pub(crate) fn qos_purge(&mut self, conn: ConnId, cx: &mut TaskContext) {
        let mut doomed = Vec::new();
        if let Some(shaper) = self.qos.shaper.as_mut() {
            shaper.purge(|(c, _)| *c == conn, &mut |item| doomed.push(item));
        }
        let (gone, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.qos.released)
            .into_iter()
            .partition(|(c, _)| *c == conn);
        self.qos.released = kept;
        for (conn, req) in doomed.into_iter().chain(gone) {
            let resp =
                self.build_response(conn, req.slot, Status::ABORTED_SQ_DELETION, 0, req.buf, cx);
            if let Some(buf) = resp.buf {
                cx.put_buffer(buf);
            }
        }
    }
}
