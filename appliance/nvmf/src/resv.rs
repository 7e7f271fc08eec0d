//! Persistent reservations of one namespace (NVMe base spec, "Reservations"): the registrants
//! (by 128-bit host identifier, so every controller of a host shares its registration), the
//! reservation holder and type, the generation, and Persist Through Power Loss.
//!
//! The state machine here is pure: each command returns its outcome (and the notifications it
//! owes other hosts) or the status it fails with. [`NsReservation`] wraps it for a namespace:
//! a mutex that only reservation commands and I/O under an active reservation take (an atomic
//! tells the I/O path whether it has to look), and a file that keeps the state across restarts.
//!
//! ```text
//!            register                 acquire(type)
//!  (none) ------------> registered -----------------> holder(type)
//!     ^   <------------            <-----------------      |
//!     |     unregister               release / preempted   | clear / preempt
//!     +----------------------------------------------------+
//! ```

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

use ferrite_nvme::Status;
use serde::{Deserialize, Serialize};

pub type HostId = [u8; 16];

/// Reservation types (RTYPE).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ResvType {
    WriteExclusive,
    ExclusiveAccess,
    WriteExclusiveRegistrantsOnly,
    ExclusiveAccessRegistrantsOnly,
    WriteExclusiveAllRegistrants,
    ExclusiveAccessAllRegistrants,
}

impl ResvType {
    pub fn from_code(code: u8) -> Option<ResvType> {
        Some(match code {
            1 => ResvType::WriteExclusive,
            2 => ResvType::ExclusiveAccess,
            3 => ResvType::WriteExclusiveRegistrantsOnly,
            4 => ResvType::ExclusiveAccessRegistrantsOnly,
            5 => ResvType::WriteExclusiveAllRegistrants,
            6 => ResvType::ExclusiveAccessAllRegistrants,
            _ => return None,
        })
    }

    pub fn code(self) -> u8 {
        match self {
            ResvType::WriteExclusive => 1,
            ResvType::ExclusiveAccess => 2,
            ResvType::WriteExclusiveRegistrantsOnly => 3,
            ResvType::ExclusiveAccessRegistrantsOnly => 4,
            ResvType::WriteExclusiveAllRegistrants => 5,
            ResvType::ExclusiveAccessAllRegistrants => 6,
        }
    }

    /// Every registrant holds an all-registrants reservation.
    pub fn all_registrants(self) -> bool {
        matches!(
            self,
            ResvType::WriteExclusiveAllRegistrants | ResvType::ExclusiveAccessAllRegistrants
        )
    }

    /// Registrants (not only the holder) may access: the registrants-only and all-registrants
    /// types.
    fn registrants_access(self) -> bool {
        !matches!(self, ResvType::WriteExclusive | ResvType::ExclusiveAccess)
    }

    /// Non-registrants may still read: the write-exclusive family.
    fn others_read(self) -> bool {
        matches!(
            self,
            ResvType::WriteExclusive
                | ResvType::WriteExclusiveRegistrantsOnly
                | ResvType::WriteExclusiveAllRegistrants
        )
    }
}

/// Reservation Notification log page types (RNLPT).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice {
    RegistrationPreempted = 1,
    ReservationReleased = 2,
    ReservationPreempted = 3,
}

/// Reservation Register action (RREGA).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegisterAction {
    Register,
    Unregister,
    Replace,
}

/// Reservation Acquire action (RACQA).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcquireAction {
    Acquire,
    Preempt,
    PreemptAndAbort,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registrant {
    pub hostid: HostId,
    pub key: u64,
}

/// The reservation state of a namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResvState {
    /// PRGEN: bumped by every successful Register action, Preempt and Clear.
    pub generation: u32,
    pub registrants: Vec<Registrant>,
    /// The holder (for all-registrants types: the registrant that acquired it; every
    /// registrant holds it).
    pub holder: Option<HostId>,
    pub rtype: Option<ResvType>,
    /// Persist Through Power Loss: kept across a restart of the target.
    pub ptpl: bool,
}

impl Default for ResvState {
    fn default() -> Self {
        ResvState {
            generation: 0,
            registrants: Vec::new(),
            holder: None,
            rtype: None,
            ptpl: true,
        }
    }
}

/// What a successful command owes other hosts.
pub type Notices = Vec<(HostId, Notice)>;

impl ResvState {
    fn key_of(&self, host: &HostId) -> Option<u64> {
        self.registrants
            .iter()
            .find(|r| r.hostid == *host)
            .map(|r| r.key)
    }

    /// Whether `host` holds the reservation.
    pub fn holds(&self, host: &HostId) -> bool {
        match self.rtype {
            Some(t) if t.all_registrants() => self.key_of(host).is_some(),
            Some(_) => self.holder.as_ref() == Some(host),
            None => false,
        }
    }

    /// Whether a command from `host` may go ahead: `write` for the write command group
    /// (Write, Write Zeroes, Dataset Management, Copy, Flush), else the read group.
    pub fn allows(&self, host: &HostId, write: bool) -> bool {
        let Some(rtype) = self.rtype else {
            return true;
        };
        if self.holds(host) {
            return true;
        }
        if rtype.registrants_access() && self.key_of(host).is_some() {
            return true;
        }
        !write && rtype.others_read()
    }

    fn release_reservation(&mut self, releaser: &HostId) -> Notices {
        let notify = if self.rtype.is_some_and(|t| t.registrants_access()) {
            self.others(releaser, Notice::ReservationReleased)
        } else {
            Notices::new()
        };
        self.holder = None;
        self.rtype = None;
        notify
    }

    fn others(&self, host: &HostId, notice: Notice) -> Notices {
        self.registrants
            .iter()
            .filter(|r| r.hostid != *host)
            .map(|r| (r.hostid, notice))
            .collect()
    }

    fn check_key(&self, host: &HostId, crkey: u64) -> Result<(), Status> {
        match self.key_of(host) {
            Some(k) if k == crkey => Ok(()),
            _ => Err(Status::RESERVATION_CONFLICT),
        }
    }

    /// Reservation Register. `ignore_key` is IEKEY.
    pub fn register(
        &mut self,
        host: &HostId,
        action: RegisterAction,
        crkey: u64,
        nrkey: u64,
        ignore_key: bool,
    ) -> Result<Notices, Status> {
        let current = self.key_of(host);
        let mut notices = Notices::new();
        match action {
            RegisterAction::Register => match current {
                Some(k) if k == nrkey => return Ok(notices),
                Some(_) => return Err(Status::RESERVATION_CONFLICT),
                None => self.registrants.push(Registrant {
                    hostid: *host,
                    key: nrkey,
                }),
            },
            RegisterAction::Unregister => {
                let Some(k) = current else {
                    return Err(Status::RESERVATION_CONFLICT);
                };
                if !ignore_key && k != crkey {
                    return Err(Status::RESERVATION_CONFLICT);
                }
                let was_holder = self.holds(host);
                self.registrants.retain(|r| r.hostid != *host);
                let all = self.rtype.is_some_and(|t| t.all_registrants());
                // A holder leaving ends the reservation, except an all-registrants one that
                // other registrants still hold.
                if was_holder && (!all || self.registrants.is_empty()) {
                    notices = self.release_reservation(host);
                } else if all && self.holder.as_ref() == Some(host) {
                    self.holder = self.registrants.first().map(|r| r.hostid);
                }
            }
            RegisterAction::Replace => match current {
                Some(k) if ignore_key || k == crkey => {
                    for r in self.registrants.iter_mut().filter(|r| r.hostid == *host) {
                        r.key = nrkey;
                    }
                }
                Some(_) => return Err(Status::RESERVATION_CONFLICT),
                // Replacing with IEKEY set registers a host that was not a registrant.
                None if ignore_key => self.registrants.push(Registrant {
                    hostid: *host,
                    key: nrkey,
                }),
                None => return Err(Status::RESERVATION_CONFLICT),
            },
        }
        self.generation = self.generation.wrapping_add(1);
        Ok(notices)
    }

    /// Reservation Acquire.
    pub fn acquire(
        &mut self,
        host: &HostId,
        action: AcquireAction,
        rtype: ResvType,
        crkey: u64,
        prkey: u64,
    ) -> Result<Notices, Status> {
        self.check_key(host, crkey)?;
        match action {
            AcquireAction::Acquire => match self.rtype {
                None => {
                    self.holder = Some(*host);
                    self.rtype = Some(rtype);
                    Ok(Notices::new())
                }
                Some(t) if t == rtype && self.holds(host) => Ok(Notices::new()),
                Some(_) => Err(Status::RESERVATION_CONFLICT),
            },
            AcquireAction::Preempt | AcquireAction::PreemptAndAbort => {
                self.preempt(host, rtype, prkey)
            }
        }
    }

    fn preempt(&mut self, host: &HostId, rtype: ResvType, prkey: u64) -> Result<Notices, Status> {
        let mut notices: Notices;
        let holder_key = self.holder.and_then(|h| self.key_of(&h));
        match self.rtype {
            Some(t) if t.all_registrants() && prkey == 0 => {
                // Everyone else is unregistered; the preempter holds the new reservation.
                notices = self.others(host, Notice::RegistrationPreempted);
                self.registrants.retain(|r| r.hostid == *host);
                self.holder = Some(*host);
                self.rtype = Some(rtype);
            }
            Some(t) if !t.all_registrants() && prkey == 0 => return Err(Status::INVALID_FIELD),
            Some(t) if !t.all_registrants() && holder_key == Some(prkey) => {
                notices = self.unregister_key(host, prkey);
                let old_holder = self.holder;
                self.holder = Some(*host);
                self.rtype = Some(rtype);
                if let Some(h) = old_holder.filter(|h| h != host) {
                    if !notices.iter().any(|(n, _)| *n == h) {
                        notices.push((h, Notice::ReservationPreempted));
                    }
                }
            }
            _ => {
                // No reservation, or a key that is not the holder's: only registrations go.
                if prkey == 0 && self.rtype.is_none() {
                    return Err(Status::INVALID_FIELD);
                }
                if !self.registrants.iter().any(|r| r.key == prkey) {
                    return Err(Status::RESERVATION_CONFLICT);
                }
                notices = self.unregister_key(host, prkey);
                // All registrants hold an all-registrants reservation: it stays while any is
                // left, represented by one of them.
                if self.rtype.is_some_and(|t| t.all_registrants())
                    && self.holder.is_none_or(|h| self.key_of(&h).is_none())
                {
                    self.holder = self.registrants.first().map(|r| r.hostid);
                    if self.holder.is_none() {
                        self.rtype = None;
                    }
                }
            }
        }
        self.generation = self.generation.wrapping_add(1);
        Ok(notices)
    }

    /// Unregisters every other registrant with key `key`.
    fn unregister_key(&mut self, host: &HostId, key: u64) -> Notices {
        let gone: Notices = self
            .registrants
            .iter()
            .filter(|r| r.key == key && r.hostid != *host)
            .map(|r| (r.hostid, Notice::RegistrationPreempted))
            .collect();
        self.registrants
            .retain(|r| r.key != key || r.hostid == *host);
        gone
    }

    /// Reservation Release (`clear` false) or Clear.
    pub fn release(
        &mut self,
        host: &HostId,
        clear: bool,
        rtype_code: u8,
        crkey: u64,
    ) -> Result<Notices, Status> {
        self.check_key(host, crkey)?;
        if clear {
            let notices = self.others(host, Notice::ReservationPreempted);
            self.registrants.clear();
            self.holder = None;
            self.rtype = None;
            self.generation = self.generation.wrapping_add(1);
            return Ok(notices);
        }
        let Some(current) = self.rtype else {
            return Ok(Notices::new());
        };
        if !self.holds(host) {
            return Ok(Notices::new());
        }
        if current.code() != rtype_code {
            return Err(Status::INVALID_FIELD);
        }
        Ok(self.release_reservation(host))
    }

    /// The Reservation Status data structure, extended form (64-byte header, 64-byte
    /// registrant entries with 128-bit host identifiers). Controller ids are FFFFh: this is a
    /// dynamic-controller subsystem, a registration belongs to a host, not a controller.
    pub fn report_extended(&self) -> Vec<u8> {
        let mut out = vec![0u8; 64 + 64 * self.registrants.len()];
        out[0..4].copy_from_slice(&self.generation.to_le_bytes());
        out[4] = self.rtype.map_or(0, |t| t.code());
        let regctl = self.registrants.len().min(u16::MAX as usize) as u16;
        out[5..7].copy_from_slice(&regctl.to_le_bytes());
        out[9] = self.ptpl as u8;
        for (r, e) in self.registrants.iter().zip(out[64..].chunks_exact_mut(64)) {
            e[0..2].copy_from_slice(&0xFFFFu16.to_le_bytes());
            e[2] = self.holds(&r.hostid) as u8;
            e[8..16].copy_from_slice(&r.key.to_le_bytes());
            e[16..32].copy_from_slice(&r.hostid);
        }
        out
    }
}

/// A namespace's reservations: the state, a fast "is anything reserved" flag for the I/O path,
/// and the file it is persisted in (when the target has a state directory).
#[derive(Debug, Default)]
pub struct NsReservation {
    state: Mutex<ResvState>,
    /// Preempt and Abort bookkeeping for the I/O path.
    pub aborts: crate::resv_abort::PreemptAborts,
    reserved: AtomicBool,
    file: Option<PathBuf>,
}

impl NsReservation {
    /// Loads the state kept in `file` (a missing file is an empty state).
    pub fn open(file: Option<PathBuf>) -> Result<NsReservation, String> {
        let state = match &file {
            Some(path) => load(path)?.unwrap_or_default(),
            None => ResvState::default(),
        };
        let reserved = AtomicBool::new(state.rtype.is_some());
        Ok(NsReservation {
            state: Mutex::new(state),
            aborts: Default::default(),
            reserved,
            file,
        })
    }

    pub fn lock(&self) -> MutexGuard<'_, ResvState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a command from `host` may proceed. Lock-free while nothing is reserved.
    pub fn allows(&self, host: &HostId, write: bool) -> bool {
        !self.reserved.load(Ordering::Acquire) || self.lock().allows(host, write)
    }

    /// Runs a state change; on success publishes the fast flag and persists the state. A
    /// state that cannot be written fails the command (Internal Error) and is rolled back, so
    /// what hosts were told always matches what a restart restores.
    pub fn change(
        &self,
        f: impl FnOnce(&mut ResvState) -> Result<Notices, Status>,
    ) -> Result<Notices, Status> {
        let mut st = self.lock();
        let before = st.clone();
        let notices = f(&mut st)?;
        if let Some(path) = &self.file {
            if let Err(e) = save(path, &st) {
                log::error!("cannot persist reservations to {}: {e}", path.display());
                *st = before;
                return Err(Status::INTERNAL_ERROR);
            }
        }
        self.reserved.store(st.rtype.is_some(), Ordering::Release);
        Ok(notices)
    }

    /// The namespace is gone: its persisted state goes too.
    pub fn discard(&self) {
        if let Some(path) = &self.file {
            if let Err(e) = std::fs::remove_file(path) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    log::warn!("cannot remove {}: {e}", path.display());
                }
            }
        }
    }
}

/// Format version of the reservation files.
const FILE_VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct ResvFile {
    version: u32,
    state: ResvState,
}

fn load(path: &Path) -> Result<Option<ResvState>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let file: ResvFile = serde_json::from_str(&text)
        .map_err(|e| format!("{} is not a reservation state file: {e}", path.display()))?;
    if file.version != FILE_VERSION {
        return Err(format!(
            "{} has version {}, this build reads {FILE_VERSION}",
            path.display(),
            file.version
        ));
    }
    // Without Persist Through Power Loss a restart starts from no reservations.
    Ok(Some(if file.state.ptpl {
        file.state
    } else {
        ResvState {
            ptpl: false,
            ..ResvState::default()
        }
    }))
}

/// Writes atomically (temporary file, fsync, rename). Reservation commands are rare and the
/// file is small; this runs on the reactor that serves the command, as SPDK does.
fn save(path: &Path, state: &ResvState) -> std::io::Result<()> {
    use std::io::Write;
    let text = serde_json::to_string(&ResvFile {
        version: FILE_VERSION,
        state: state.clone(),
    })
    .map_err(std::io::Error::other)?;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: HostId = [0xA; 16];
    const B: HostId = [0xB; 16];
    const C: HostId = [0xC; 16];

    fn registered(hosts: &[(HostId, u64)]) -> ResvState {
        let mut s = ResvState::default();
        for (h, k) in hosts {
            s.register(h, RegisterAction::Register, 0, *k, false)
                .expect("register");
        }
        s
    }

    #[test]
    fn register_unregister_replace() {
        let mut s = registered(&[(A, 1)]);
        assert_eq!(s.generation, 1);
        // Registering again with the same key is fine, with another key a conflict.
        assert_eq!(
            s.register(&A, RegisterAction::Register, 0, 1, false),
            Ok(vec![])
        );
        assert_eq!(
            s.register(&A, RegisterAction::Register, 0, 2, false),
            Err(Status::RESERVATION_CONFLICT)
        );
        assert_eq!(
            s.register(&A, RegisterAction::Replace, 9, 2, false),
            Err(Status::RESERVATION_CONFLICT),
            "wrong current key"
        );
        s.register(&A, RegisterAction::Replace, 1, 2, false)
            .expect("replace");
        assert_eq!(s.key_of(&A), Some(2));
        s.register(&A, RegisterAction::Replace, 77, 3, true)
            .expect("IEKEY ignores the current key");
        assert_eq!(
            s.register(&B, RegisterAction::Unregister, 0, 0, false),
            Err(Status::RESERVATION_CONFLICT),
            "an unregistered host cannot unregister"
        );
        assert_eq!(
            s.register(&B, RegisterAction::Replace, 0, 5, false),
            Err(Status::RESERVATION_CONFLICT)
        );
        s.register(&A, RegisterAction::Unregister, 3, 0, false)
            .expect("unregister");
        assert!(s.registrants.is_empty());
    }

    #[test]
    fn acquire_needs_registration_and_the_right_key() {
        let mut s = registered(&[(A, 1), (B, 2)]);
        assert_eq!(
            s.acquire(&C, AcquireAction::Acquire, ResvType::WriteExclusive, 0, 0),
            Err(Status::RESERVATION_CONFLICT),
            "unregistered host"
        );
        assert_eq!(
            s.acquire(&A, AcquireAction::Acquire, ResvType::WriteExclusive, 2, 0),
            Err(Status::RESERVATION_CONFLICT),
            "wrong key"
        );
        s.acquire(&A, AcquireAction::Acquire, ResvType::WriteExclusive, 1, 0)
            .expect("acquire");
        assert!(s.holds(&A) && !s.holds(&B));
        s.acquire(&A, AcquireAction::Acquire, ResvType::WriteExclusive, 1, 0)
            .expect("the holder acquiring the same type again");
        assert_eq!(
            s.acquire(&A, AcquireAction::Acquire, ResvType::ExclusiveAccess, 1, 0),
            Err(Status::RESERVATION_CONFLICT)
        );
        assert_eq!(
            s.acquire(&B, AcquireAction::Acquire, ResvType::WriteExclusive, 2, 0),
            Err(Status::RESERVATION_CONFLICT),
            "held by another host"
        );
    }

    /// The access table of the spec, for the holder, another registrant and a non-registrant.
    #[test]
    fn access_by_type() {
        // (type, registrant read, registrant write, other read, other write)
        let table = [
            (ResvType::WriteExclusive, true, false, true, false),
            (ResvType::ExclusiveAccess, false, false, false, false),
            (
                ResvType::WriteExclusiveRegistrantsOnly,
                true,
                true,
                true,
                false,
            ),
            (
                ResvType::ExclusiveAccessRegistrantsOnly,
                true,
                true,
                false,
                false,
            ),
            (
                ResvType::WriteExclusiveAllRegistrants,
                true,
                true,
                true,
                false,
            ),
            (
                ResvType::ExclusiveAccessAllRegistrants,
                true,
                true,
                false,
                false,
            ),
        ];
        for (t, rr, rw, or, ow) in table {
            let mut s = registered(&[(A, 1), (B, 2)]);
            assert!(s.allows(&C, true), "no reservation: anyone");
            s.acquire(&A, AcquireAction::Acquire, t, 1, 0)
                .expect("acquire");
            assert!(s.allows(&A, false) && s.allows(&A, true), "{t:?} holder");
            assert_eq!(s.allows(&B, false), rr, "{t:?} registrant read");
            assert_eq!(s.allows(&B, true), rw, "{t:?} registrant write");
            assert_eq!(s.allows(&C, false), or, "{t:?} other read");
            assert_eq!(s.allows(&C, true), ow, "{t:?} other write");
            assert_eq!(s.holds(&B), t.all_registrants(), "{t:?} B holds");
        }
    }

    #[test]
    fn release_and_clear_notify_the_others() {
        let mut s = registered(&[(A, 1), (B, 2)]);
        s.acquire(&A, AcquireAction::Acquire, ResvType::WriteExclusive, 1, 0)
            .expect("acquire");
        assert_eq!(
            s.release(&B, false, 1, 2),
            Ok(vec![]),
            "not the holder: no-op"
        );
        assert!(s.holds(&A));
        assert_eq!(
            s.release(&A, false, 2, 1),
            Err(Status::INVALID_FIELD),
            "wrong type"
        );
        assert_eq!(
            s.release(&A, false, 1, 5),
            Err(Status::RESERVATION_CONFLICT),
            "wrong key"
        );
        // Write Exclusive: releasing notifies nobody.
        assert_eq!(s.release(&A, false, 1, 1), Ok(vec![]));
        assert_eq!(s.rtype, None);
        // Registrants-only: the other registrants hear of the release.
        s.acquire(
            &A,
            AcquireAction::Acquire,
            ResvType::WriteExclusiveRegistrantsOnly,
            1,
            0,
        )
        .expect("acquire");
        assert_eq!(
            s.release(&A, false, 3, 1),
            Ok(vec![(B, Notice::ReservationReleased)])
        );
        s.acquire(&A, AcquireAction::Acquire, ResvType::ExclusiveAccess, 1, 0)
            .expect("acquire");
        let g = s.generation;
        assert_eq!(
            s.release(&B, true, 0, 2),
            Ok(vec![(A, Notice::ReservationPreempted)])
        );
        assert!(s.registrants.is_empty() && s.rtype.is_none());
        assert_eq!(s.generation, g + 1);
    }

    #[test]
    fn preempt_takes_the_reservation_and_unregisters_the_victim() {
        let mut s = registered(&[(A, 1), (B, 2), (C, 3)]);
        s.acquire(&A, AcquireAction::Acquire, ResvType::ExclusiveAccess, 1, 0)
            .expect("acquire");
        assert_eq!(
            s.acquire(&B, AcquireAction::Preempt, ResvType::ExclusiveAccess, 2, 0),
            Err(Status::INVALID_FIELD),
            "PRKEY 0 against a single holder"
        );
        assert_eq!(
            s.acquire(&B, AcquireAction::Preempt, ResvType::WriteExclusive, 2, 42),
            Err(Status::RESERVATION_CONFLICT),
            "nobody has key 42"
        );
        let n = s
            .acquire(
                &B,
                AcquireAction::PreemptAndAbort,
                ResvType::WriteExclusive,
                2,
                1,
            )
            .expect("preempt the holder");
        assert_eq!(n, vec![(A, Notice::RegistrationPreempted)]);
        assert!(s.holds(&B));
        assert_eq!(s.rtype, Some(ResvType::WriteExclusive));
        assert_eq!(s.key_of(&A), None);
        // Preempting a non-holder's key removes the registration, keeps the reservation.
        let n = s
            .acquire(&B, AcquireAction::Preempt, ResvType::WriteExclusive, 2, 3)
            .expect("preempt C");
        assert_eq!(n, vec![(C, Notice::RegistrationPreempted)]);
        assert!(s.holds(&B));
    }

    #[test]
    fn all_registrants_preempt_with_zero_key_and_unregistering_holders() {
        let mut s = registered(&[(A, 1), (B, 2)]);
        s.acquire(
            &A,
            AcquireAction::Acquire,
            ResvType::ExclusiveAccessAllRegistrants,
            1,
            0,
        )
        .expect("acquire");
        // A holder leaving an all-registrants reservation leaves it with the others.
        s.register(&A, RegisterAction::Unregister, 1, 0, false)
            .expect("unregister");
        assert!(s.holds(&B));
        assert!(s.rtype.is_some());
        s.register(&C, RegisterAction::Register, 0, 3, false)
            .expect("register");
        let n = s
            .acquire(&C, AcquireAction::Preempt, ResvType::WriteExclusive, 3, 0)
            .expect("preempt everyone");
        assert_eq!(n, vec![(B, Notice::RegistrationPreempted)]);
        assert_eq!(s.registrants.len(), 1);
        assert!(s.holds(&C));
        // The last registrant of an all-registrants reservation leaving ends it.
        let mut s = registered(&[(A, 1)]);
        s.acquire(
            &A,
            AcquireAction::Acquire,
            ResvType::WriteExclusiveAllRegistrants,
            1,
            0,
        )
        .expect("acquire");
        s.register(&A, RegisterAction::Unregister, 1, 0, false)
            .expect("unregister");
        assert_eq!(s.rtype, None);
    }

    #[test]
    fn report_encodes_header_and_entries() {
        let mut s = registered(&[(A, 0x1111), (B, 0x2222)]);
        s.acquire(
            &B,
            AcquireAction::Acquire,
            ResvType::WriteExclusive,
            0x2222,
            0,
        )
        .expect("acquire");
        let r = s.report_extended();
        assert_eq!(r.len(), 64 * 3);
        assert_eq!(u32::from_le_bytes(r[0..4].try_into().expect("4")), 2);
        assert_eq!(r[4], 1);
        assert_eq!(u16::from_le_bytes([r[5], r[6]]), 2);
        assert_eq!(r[9], 1, "PTPL");
        let b = &r[128..192];
        assert_eq!(b[2], 1, "B holds");
        assert_eq!(u64::from_le_bytes(b[8..16].try_into().expect("8")), 0x2222);
        assert_eq!(&b[16..32], &B);
        assert_eq!(r[64 + 2], 0, "A does not hold");
    }

    #[test]
    fn state_survives_reopen_and_failed_commands_do_not_change_it() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("ns1.json");
        let r = NsReservation::open(Some(path.clone())).expect("open");
        assert!(r.allows(&C, true));
        r.change(|s| s.register(&A, RegisterAction::Register, 0, 7, false))
            .expect("register");
        r.change(|s| s.acquire(&A, AcquireAction::Acquire, ResvType::ExclusiveAccess, 7, 0))
            .expect("acquire");
        assert_eq!(
            r.change(|s| s.acquire(&B, AcquireAction::Acquire, ResvType::WriteExclusive, 0, 0)),
            Err(Status::RESERVATION_CONFLICT)
        );
        assert!(!r.allows(&B, false));
        drop(r);
        let r = NsReservation::open(Some(path.clone())).expect("reopen");
        assert!(r.lock().holds(&A));
        assert!(!r.allows(&B, false), "the fast flag is restored too");
        // Without PTPL a restart forgets the reservation.
        r.change(|s| {
            s.ptpl = false;
            Ok(Notices::new())
        })
        .expect("clear ptpl");
        drop(r);
        let r = NsReservation::open(Some(path.clone())).expect("reopen");
        assert!(r.lock().registrants.is_empty());
        assert!(!r.lock().ptpl);
        r.discard();
        assert!(!path.exists());
        std::fs::write(&path, "{not json").expect("write");
        assert!(NsReservation::open(Some(path)).is_err());
    }

    /// Random command sequences from three hosts keep the state consistent: a holder is a
    /// registrant, a reservation has a holder, keys stay unique per host, failed commands
    /// change nothing, and the holder always has access.
    mod prop {
        use super::*;
        use proptest::prelude::*;

        fn host(i: u8) -> HostId {
            [i + 1; 16]
        }

        proptest! {
            // Cheap cases; the default count missed an all-registrants holder bug.
            #![proptest_config(ProptestConfig::with_cases(4096))]
            #[test]
            fn invariants_hold(ops in proptest::collection::vec(
                (0u8..3, 0u8..4, 0u8..3, 1u8..7, 0u64..4, 0u64..4, any::<bool>()), 1..60)) {
                let mut s = ResvState::default();
                for (h, cmd, action, rtype, k1, k2, flag) in ops {
                    let h = host(h);
                    let before = s.clone();
                    let rtype = ResvType::from_code(rtype).expect("1..=6");
                    let result = match cmd {
                        0 => {
                            let a = [RegisterAction::Register, RegisterAction::Unregister,
                                     RegisterAction::Replace][action as usize];
                            s.register(&h, a, k1, k2, flag)
                        }
                        1 => {
                            let a = [AcquireAction::Acquire, AcquireAction::Preempt,
                                     AcquireAction::PreemptAndAbort][action as usize];
                            s.acquire(&h, a, rtype, k1, k2)
                        }
                        2 => s.release(&h, flag, rtype.code(), k1),
                        _ => Ok(Notices::new()),
                    };
                    match result {
                        Err(_) => prop_assert_eq!(&s, &before, "a failed command changed state"),
                        Ok(notices) => {
                            prop_assert!(notices.iter().all(|(n, _)| *n != h),
                                "the issuer is never notified");
                        }
                    }
                    let mut ids: Vec<HostId> = s.registrants.iter().map(|r| r.hostid).collect();
                    ids.sort();
                    ids.dedup();
                    prop_assert_eq!(ids.len(), s.registrants.len(), "one registration per host");
                    prop_assert_eq!(s.rtype.is_some(), s.holder.is_some());
                    if let Some(holder) = s.holder {
                        prop_assert!(s.key_of(&holder).is_some(), "the holder is registered");
                        prop_assert!(s.allows(&holder, true));
                    }
                }
            }
        }
    }
}
