//! Reaching tasks from other threads: bounded inboxes, `TaskHandle`, `Spawner`.

use std::fmt;
use std::sync::atomic::{fence, AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use crossbeam_queue::ArrayQueue;

use crate::context::TaskContext;
use crate::error::{ReactorError, SendError};
use crate::shared::{CloseInbox, ReactorShared, ReactorStats, SpawnRequest};
use crate::slot::TaskSlot;
use crate::task::{Task, TaskId};

pub(crate) type Message<S> = Box<dyn FnOnce(&mut S, &mut TaskContext) + Send>;

/// Default capacity of a task inbox.
pub const DEFAULT_INBOX_CAPACITY: usize = 1024;

pub(crate) struct Inbox<S> {
    pub(crate) queue: ArrayQueue<Message<S>>,
    pub(crate) reactor: Arc<ReactorShared>,
    pub(crate) id: TaskId,
    pub(crate) name: Box<str>,
    closed: AtomicBool,
    full: AtomicU64,
}

impl<S> Inbox<S> {
    pub(crate) fn new(reactor: Arc<ReactorShared>, name: &str, capacity: usize) -> Self {
        Self {
            queue: ArrayQueue::new(capacity.max(1)),
            reactor,
            id: TaskId::next(),
            name: name.into(),
            closed: AtomicBool::new(false),
            full: AtomicU64::new(0),
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

impl<S> CloseInbox for Inbox<S> {
    /// Refuses further messages and drops pending ones unrun (a pending `call` then sees
    /// `Closed`). Same fence pairing as parking: a sender that saw `closed == false` after
    /// its push has its message drained (dropped) here.
    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        fence(Ordering::SeqCst);
        while self.queue.pop().is_some() {}
    }
}

/// A way to reach one task from any thread. Clone + Send + Sync.
pub struct TaskHandle<S> {
    inbox: Arc<Inbox<S>>,
}

impl<S> Clone for TaskHandle<S> {
    fn clone(&self) -> Self {
        Self {
            inbox: Arc::clone(&self.inbox),
        }
    }
}

impl<S> fmt::Debug for TaskHandle<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskHandle")
            .field("id", &self.inbox.id)
            .field("name", &self.inbox.name)
            .field("reactor", &self.inbox.reactor.index)
            .finish()
    }
}

impl<S: Task> TaskHandle<S> {
    /// Queues `f` to run on the task's reactor with the task's state. Lock-free and bounded: a
    /// full inbox returns `SendError::Full` and bumps a counter (backpressure, never an abort).
    /// Messages from one sender run in the order sent. `Ok` means queued: a message racing
    /// with the task's stop may still be dropped unrun (a pending `call` then sees `Closed`).
    pub fn send(
        &self,
        f: impl FnOnce(&mut S, &mut TaskContext) + Send + 'static,
    ) -> Result<(), SendError> {
        let inbox = &self.inbox;
        if inbox.is_closed() {
            return Err(SendError::Closed);
        }
        if inbox.queue.push(Box::new(f)).is_err() {
            inbox.full.fetch_add(1, Ordering::Relaxed);
            inbox
                .reactor
                .stats
                .inbox_full
                .fetch_add(1, Ordering::Relaxed);
            return Err(SendError::Full);
        }
        // `notify` fences: the closed re-check below and the parked check both see the reactor's
        // side of their pairing.
        inbox.reactor.notify();
        if inbox.closed.load(Ordering::Relaxed) {
            // The task stopped meanwhile; our message may even have run already. Whatever is
            // left will never run: drop it here so no reply sender stays stuck in the queue.
            while inbox.queue.pop().is_some() {}
        }
        Ok(())
    }

    /// Sends `f` and waits up to `timeout` for its result: for control threads. Calling it
    /// from the reactor that runs the task returns `WouldDeadlock`. On `Timeout` the message
    /// may still run later; its result is then discarded.
    pub fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut S, &mut TaskContext) -> R + Send + 'static,
        timeout: Duration,
    ) -> Result<R, SendError> {
        if self.inbox.reactor.would_deadlock() {
            return Err(SendError::WouldDeadlock);
        }
        let (tx, rx) = mpsc::sync_channel(1);
        self.send(move |s, cx| {
            // The caller may have given up (timeout): nobody to tell then.
            let _ = tx.send(f(s, cx));
        })?;
        rx.recv_timeout(timeout).map_err(|e| match e {
            mpsc::RecvTimeoutError::Timeout => SendError::Timeout,
            mpsc::RecvTimeoutError::Disconnected => SendError::Closed,
        })
    }

    /// Index of the reactor that runs the task.
    pub fn reactor_index(&self) -> usize {
        self.inbox.reactor.index
    }

    pub fn task_id(&self) -> TaskId {
        self.inbox.id
    }

    pub fn name(&self) -> &str {
        &self.inbox.name
    }

    /// Whether the task has stopped (messages are refused).
    pub fn is_closed(&self) -> bool {
        self.inbox.is_closed()
    }

    /// Sends refused with `Full` so far.
    pub fn full_count(&self) -> u64 {
        self.inbox.full.load(Ordering::Relaxed)
    }

    /// Messages waiting in the inbox.
    pub fn pending(&self) -> usize {
        self.inbox.queue.len()
    }
}

/// Creates tasks on reactors. Clone + Send + Sync: a listener task can keep one to place new
/// connections on the least loaded reactor.
#[derive(Clone)]
pub struct Spawner {
    reactors: Arc<[Arc<ReactorShared>]>,
    inbox_capacity: usize,
}

impl fmt::Debug for Spawner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Spawner")
            .field("reactors", &self.reactors.len())
            .field("inbox_capacity", &self.inbox_capacity)
            .finish()
    }
}

impl Spawner {
    pub(crate) fn new(reactors: Vec<Arc<ReactorShared>>, inbox_capacity: usize) -> Self {
        Self {
            reactors: reactors.into(),
            inbox_capacity,
        }
    }

    pub(crate) fn shared(&self) -> &[Arc<ReactorShared>] {
        &self.reactors
    }

    pub fn reactor_count(&self) -> usize {
        self.reactors.len()
    }

    /// Creates a task on reactor `index`. `init` runs on that reactor at the start of its next
    /// iteration; messages sent to the returned handle before then wait in the inbox and run
    /// after `init`, in order.
    pub fn spawn<S: Task>(
        &self,
        index: usize,
        name: &str,
        init: impl FnOnce(&mut TaskContext) -> S + Send + 'static,
    ) -> Result<TaskHandle<S>, ReactorError> {
        let reactor = self
            .reactors
            .get(index)
            .ok_or(ReactorError::NoSuchReactor {
                index,
                count: self.reactors.len(),
            })?;
        if reactor.exited.load(Ordering::Acquire) || reactor.stop.load(Ordering::Acquire) {
            return Err(ReactorError::ReactorGone { index });
        }
        let inbox = Arc::new(Inbox::<S>::new(
            Arc::clone(reactor),
            name,
            self.inbox_capacity,
        ));
        let slot_inbox = Arc::clone(&inbox);
        reactor.spawns.push(SpawnRequest {
            inbox: Arc::clone(&inbox) as Arc<dyn CloseInbox>,
            make: Box::new(move |cx| Box::new(TaskSlot::new(init(cx), slot_inbox))),
        });
        reactor.notify();
        if reactor.exited.load(Ordering::Relaxed) {
            // Retired after our check: the request is (or will be) dropped unrun.
            inbox.close();
            return Err(ReactorError::ReactorGone { index });
        }
        Ok(TaskHandle { inbox })
    }

    /// Statistics of every reactor, in index order.
    pub fn stats(&self) -> Vec<ReactorStats> {
        self.reactors.iter().map(|r| r.snapshot()).collect()
    }
}
