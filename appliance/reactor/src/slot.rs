//! Type-erased task storage on a reactor.

use std::any::Any;
use std::sync::Arc;

use crate::context::TaskContext;
use crate::handle::Inbox;
use crate::shared::CloseInbox;
use crate::task::{PollStatus, Task, TaskId};

/// What a reactor needs from a task of any type.
pub(crate) trait AnyTask {
    fn id(&self) -> TaskId;
    fn name(&self) -> &str;
    /// Runs up to `max_messages` inbox messages, then `poll` (unless a message asked to stop).
    /// Returns the poll status and the number of messages run.
    fn run(&mut self, cx: &mut TaskContext, max_messages: usize) -> (PollStatus, usize);
    /// Calls `on_shutdown` the first time only.
    fn begin_shutdown(&mut self, cx: &mut TaskContext);
    fn is_finished(&self) -> bool;
    fn has_mail(&self) -> bool;
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

pub(crate) struct TaskSlot<S> {
    pub(crate) state: S,
    inbox: Arc<Inbox<S>>,
    shutdown_called: bool,
}

impl<S> TaskSlot<S> {
    pub(crate) fn new(state: S, inbox: Arc<Inbox<S>>) -> Self {
        Self {
            state,
            inbox,
            shutdown_called: false,
        }
    }
}

impl<S> Drop for TaskSlot<S> {
    fn drop(&mut self) {
        self.inbox.close();
    }
}

impl<S: Task> AnyTask for TaskSlot<S> {
    fn id(&self) -> TaskId {
        self.inbox.id
    }

    fn name(&self) -> &str {
        &self.inbox.name
    }

    fn run(&mut self, cx: &mut TaskContext, max_messages: usize) -> (PollStatus, usize) {
        let mut ran = 0;
        while ran < max_messages {
            let Some(msg) = self.inbox.queue.pop() else {
                break;
            };
            msg(&mut self.state, cx);
            ran += 1;
            if cx.stop_requested() {
                return (PollStatus::Busy, ran);
            }
        }
        (self.state.poll(cx), ran)
    }

    fn begin_shutdown(&mut self, cx: &mut TaskContext) {
        if !self.shutdown_called {
            self.shutdown_called = true;
            self.state.on_shutdown(cx);
        }
    }

    fn is_finished(&self) -> bool {
        self.state.is_finished()
    }

    fn has_mail(&self) -> bool {
        !self.inbox.queue.is_empty() || self.state.has_pending_work()
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}
