//! The owner as a reactor task: one future (`Owner::init` then `Owner::run`) polled on every
//! poll of the task, on the reactor the pool was placed on (the daemon's housekeeping
//! reactor, or a private one-reactor runtime for a pool opened without one).
//!
//! Control messages arrive through the task's bounded lock-free inbox (`TaskHandle::send`)
//! and wait in a short queue the owner drains between operations; a full queue answers
//! `Busy` at once. Faults arrive on the pool's fault ring; producers ring the reactor with a
//! `ReactorWaker`, and `has_pending_work` keeps a reactor about to park from sleeping through
//! them.

use std::cell::{OnceCell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::{mpsc, Arc};
use std::task::{Context, Waker};

use ferrite_bdev::BlockDevice;
use ferrite_reactor::{PollStatus, Spawner, Task, TaskContext, TaskHandle};

use super::{Init, Owner};
use crate::disk::Disks;
use crate::exec::Hub;
use crate::shared::{Msg, PoolShared};
use crate::VolumeError;

/// Control messages waiting for the owner at most; more are refused with `Busy`.
pub(crate) const CONTROL_QUEUE: usize = 64;

/// The control messages the owner has not taken yet (shared by the task and its future).
pub(crate) type Inbox = Rc<RefCell<VecDeque<Msg>>>;

/// Where a pool's metadata owner runs: reactor `reactor` of the runtime `spawner` belongs to.
#[derive(Debug, Clone)]
pub struct Placement {
    pub spawner: Spawner,
    pub reactor: usize,
}

/// The owner task (see the module comment).
pub struct OwnerTask {
    fut: Option<Pin<Box<dyn Future<Output = ()>>>>,
    inbox: Inbox,
    hub: Rc<Hub>,
    shared: Rc<OnceCell<Arc<PoolShared>>>,
    /// Dropped with the task: `Pool` waits for that before it lets the members go.
    _done: mpsc::SyncSender<()>,
}

impl OwnerTask {
    /// Runs on the owner's reactor for each message sent to it.
    pub(crate) fn deliver(&mut self, m: Msg) {
        let mut q = self.inbox.borrow_mut();
        if q.len() < CONTROL_QUEUE {
            q.push_back(m);
            return;
        }
        match m {
            Msg::Cmd(_, reply) => {
                let pool = self
                    .shared
                    .get()
                    .map_or_else(String::new, |s| s.name.clone());
                let _ = reply.send(Err(VolumeError::Busy { pool }));
            }
            Msg::MemberError { .. } => log::warn!("volume owner: member error report dropped"),
        }
    }
}

impl Task for OwnerTask {
    fn poll(&mut self, cx: &mut TaskContext) -> PollStatus {
        let Some(fut) = self.fut.as_mut() else {
            return PollStatus::Idle;
        };
        self.hub.begin();
        // The reactor polls the task anyway: the future needs no waker of its own.
        let mut c = Context::from_waker(Waker::noop());
        if fut.as_mut().poll(&mut c).is_ready() {
            self.fut = None;
            cx.request_stop();
            return PollStatus::Busy;
        }
        let (busy, at) = self.hub.outcome();
        if let Some(at) = at {
            cx.wake_at(at);
        }
        PollStatus::from_busy(busy)
    }

    fn on_shutdown(&mut self, cx: &mut TaskContext) {
        match self.shared.get() {
            // Stop as a dropped pool would: no checkpoint (the log makes that safe).
            Some(s) => s.stop.store(true, std::sync::atomic::Ordering::SeqCst),
            None => {
                self.fut = None;
                cx.request_stop();
            }
        }
    }

    fn is_finished(&self) -> bool {
        self.fut.is_none()
    }

    fn has_pending_work(&self) -> bool {
        !self.inbox.borrow().is_empty() || self.shared.get().is_some_and(|s| s.owner_has_work())
    }
}

/// What `spawn` hands the pool: the shared state, the task and the end-of-task signal.
pub(crate) type Spawned = (Arc<PoolShared>, TaskHandle<OwnerTask>, mpsc::Receiver<()>);

/// Starts the owner task on `place`; returns once the pool is created or opened (or refused).
pub(crate) fn spawn(
    init: Init,
    devs: Vec<Arc<dyn BlockDevice>>,
    place: &Placement,
) -> Result<Spawned, VolumeError> {
    let (ready_tx, ready_rx) = mpsc::sync_channel(1);
    let (done_tx, done_rx) = mpsc::sync_channel::<()>(1);
    let handle = place
        .spawner
        .spawn(place.reactor, "volume-owner", move |cx| {
            let hub = Rc::new(Hub::default());
            let inbox = Inbox::default();
            let shared = Rc::new(OnceCell::new());
            let disks = Disks::open(&devs, Rc::clone(&hub));
            if let Ok(d) = &disks {
                for m in &d.members {
                    if let Some(fd) = m.ch.wakeup_fd() {
                        if let Err(e) = cx.register_wakeup_fd(fd) {
                            log::warn!("member {}: no wakeups for the owner: {e}", m.dev.name());
                        }
                    }
                }
            }
            let waker = cx.waker();
            let (inbox2, shared2) = (Rc::clone(&inbox), Rc::clone(&shared));
            let fut = async move {
                let owner = match disks {
                    Ok(d) => Owner::init(init, d, waker, inbox2).await,
                    Err(e) => Err(e.into()),
                };
                match owner {
                    Ok(owner) => {
                        let _ = shared2.set(Arc::clone(&owner.shared));
                        let _ = ready_tx.send(Ok(Arc::clone(&owner.shared)));
                        owner.run().await;
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                }
            };
            OwnerTask {
                fut: Some(Box::pin(fut)),
                inbox,
                hub,
                shared,
                _done: done_tx,
            }
        })
        .map_err(VolumeError::Placement)?;
    match ready_rx.recv() {
        Ok(Ok(shared)) => {
            let _ = shared.owner.set(handle.clone());
            Ok((shared, handle, done_rx))
        }
        Ok(Err(e)) => {
            // The task ends with its future: wait so the members are free again.
            let _ = done_rx.recv();
            Err(e)
        }
        Err(_) => Err(VolumeError::Placement(
            ferrite_reactor::ReactorError::ReactorGone {
                index: place.reactor,
            },
        )),
    }
}
