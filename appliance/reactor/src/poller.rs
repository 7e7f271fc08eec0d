//! The epoll set a reactor parks on: its own eventfd plus every registered wakeup fd.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use rustix::buffer::spare_capacity;
use rustix::event::{epoll, eventfd, EventfdFlags, Timespec};
use rustix::io::Errno;

/// epoll user data of the reactor's own eventfd; wakeup fds use `FD_TOKEN`.
const EVENTFD_TOKEN: u64 = 0;
const FD_TOKEN: u64 = 1;
const MAX_EVENTS: usize = 64;
const MAX_PARK: Duration = Duration::from_secs(3600);

/// The reactor's doorbell: any thread writes it to end a park.
#[derive(Debug)]
pub(crate) struct Doorbell {
    fd: OwnedFd,
}

impl Doorbell {
    pub(crate) fn new() -> std::io::Result<Self> {
        let fd = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?;
        Ok(Self { fd })
    }

    pub(crate) fn ring(&self) {
        // EAGAIN means the counter is saturated: it is readable, which is all we need.
        if let Err(e) = rustix::io::write(&self.fd, &1u64.to_ne_bytes()) {
            if e != Errno::AGAIN {
                log::error!("reactor doorbell write failed: {e}");
            }
        }
    }

    /// Resets the counter so the next park blocks again.
    fn drain(&self) {
        let mut buf = [0u8; 8];
        match rustix::io::read(&self.fd, &mut buf) {
            Ok(_) | Err(Errno::AGAIN) => {}
            Err(e) => log::error!("reactor doorbell read failed: {e}"),
        }
    }

    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Outcome of one park.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Wake {
    /// The doorbell rang (a message, a spawn or a stop).
    pub doorbell: bool,
    /// Some registered wakeup fd is readable.
    pub fd_ready: bool,
}

pub(crate) struct Poller {
    epoll: OwnedFd,
    /// Reused across waits: no allocation while parking.
    events: Vec<epoll::Event>,
    registered: usize,
}

impl std::fmt::Debug for Poller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Poller")
            .field("epoll", &self.epoll)
            .field("registered", &self.registered)
            .finish()
    }
}

impl Poller {
    pub(crate) fn new(doorbell: &Doorbell) -> std::io::Result<Self> {
        let epoll = epoll::create(epoll::CreateFlags::CLOEXEC)?;
        epoll::add(
            &epoll,
            doorbell.as_fd(),
            epoll::EventData::new_u64(EVENTFD_TOKEN),
            epoll::EventFlags::IN,
        )?;
        Ok(Self {
            epoll,
            events: Vec::with_capacity(MAX_EVENTS),
            registered: 0,
        })
    }

    /// Level-triggered: as long as the fd stays readable, parking returns at once.
    pub(crate) fn register(&mut self, fd: BorrowedFd<'_>) -> std::io::Result<()> {
        epoll::add(
            &self.epoll,
            fd,
            epoll::EventData::new_u64(FD_TOKEN),
            epoll::EventFlags::IN,
        )?;
        self.registered += 1;
        Ok(())
    }

    pub(crate) fn unregister(&mut self, fd: BorrowedFd<'_>) -> std::io::Result<()> {
        epoll::delete(&self.epoll, fd)?;
        self.registered = self.registered.saturating_sub(1);
        Ok(())
    }

    /// Registered wakeup fds (closed fds leave epoll on their own and are still counted).
    pub(crate) fn registered(&self) -> usize {
        self.registered
    }

    /// Blocks until the doorbell or a wakeup fd is readable, or `timeout` passes.
    pub(crate) fn wait(&mut self, doorbell: &Doorbell, timeout: Duration) -> Wake {
        self.events.clear();
        // Capped so the timeout fits plain epoll_pwait (milliseconds in a c_int).
        let ts = Timespec::try_from(timeout.min(MAX_PARK)).expect("an hour fits a timespec");
        let mut wake = Wake::default();
        match epoll::wait(&self.epoll, spare_capacity(&mut self.events), Some(&ts)) {
            Ok(_) => {}
            Err(Errno::INTR) => return wake,
            Err(e) => {
                log::error!("epoll_wait failed: {e}");
                return wake;
            }
        }
        for ev in &self.events {
            let data = ev.data;
            if data.u64() == EVENTFD_TOKEN {
                wake.doorbell = true;
            } else {
                wake.fd_ready = true;
            }
        }
        if wake.doorbell {
            doorbell.drain();
        }
        wake
    }
}
