//! The local stream endpoint: a Unix socket speaking the gateway protocol
//! (`JournalPull` / `JournalTrim` in, `Record` / `Heartbeat` /
//! `JournalStatus` out), from which `ferrite-replicator` pulls.
//!
//! One thread accepts, one thread serves each connection (this is the
//! control side, off the reactors). A connection starts with the client's
//! `Hello` (role primary), answered by the endpoint's `Hello` (role
//! appliance); access is the socket file's permissions. Each pull is
//! answered with the committed records from `from_seq` (0: from the trim
//! point; at most `max_records`), then a `Heartbeat` and a `JournalStatus`. An unknown
//! group, a pull below the trim point or a malformed frame is answered
//! with `Refuse` and the connection is closed.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use ferrite_gateway_protocol::{
    decode, Epoch, GroupId, Heartbeat, Hello, JournalStatus, Message, NodeId, ProtocolError,
    Record, Refuse, RefuseCode, Role, SeqNo,
};

use crate::error::JournalError;
use crate::reader::{JournalReader, ReadCtx};

/// Most records sent for one pull.
pub const MAX_PULL: u32 = 1024;

/// The readers of every journal of the daemon, by group.
#[derive(Debug, Default)]
pub struct Groups {
    readers: Mutex<HashMap<GroupId, Arc<Mutex<JournalReader>>>>,
}

impl Groups {
    /// Registers (or replaces) the reader of a group.
    pub fn insert(&self, reader: JournalReader) {
        let g = reader.journal().group();
        lock(&self.readers).insert(g, Arc::new(Mutex::new(reader)));
    }

    /// Removes a group.
    pub fn remove(&self, group: GroupId) -> bool {
        lock(&self.readers).remove(&group).is_some()
    }

    /// The reader of a group.
    pub fn get(&self, group: GroupId) -> Option<Arc<Mutex<JournalReader>>> {
        lock(&self.readers).get(&group).cloned()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Binds the endpoint at `path` (mode 0600: it streams every replicated write) and serves it on
/// a background thread. A stale socket left by a dead daemon is replaced; a live socket or a
/// file that is not a socket is an error, never deleted.
pub fn serve(path: &Path, groups: Arc<Groups>) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        let refuse = |why: &str| {
            std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!("{}: {why}", path.display()),
            )
        };
        if !meta.file_type().is_socket() {
            return Err(refuse("exists and is not a socket"));
        }
        if UnixStream::connect(path).is_ok() {
            return Err(refuse("another process serves this socket"));
        }
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    let p = path.to_path_buf();
    std::thread::Builder::new()
        .name("journal-endpoint".into())
        .spawn(move || {
            for conn in listener.incoming() {
                match conn {
                    Ok(stream) => {
                        let groups = groups.clone();
                        let _ = std::thread::Builder::new()
                            .name("journal-conn".into())
                            .spawn(move || {
                                if let Err(e) = Connection::new(stream, groups).run() {
                                    log::info!("journal endpoint connection closed: {e}");
                                }
                            });
                    }
                    Err(e) => log::warn!("journal endpoint accept: {e}"),
                }
            }
        })?;
    Ok(p)
}

#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("protocol: {0}")]
    Protocol(#[from] ProtocolError),
    #[error("refused: {0}")]
    Refused(String),
}

struct Connection {
    stream: UnixStream,
    groups: Arc<Groups>,
    rx: Vec<u8>,
    tx: Vec<u8>,
    /// Read channels opened on this thread, per group.
    cx: HashMap<GroupId, ReadCtx>,
}

impl Connection {
    fn new(stream: UnixStream, groups: Arc<Groups>) -> Connection {
        Connection {
            stream,
            groups,
            rx: Vec::with_capacity(4096),
            tx: Vec::with_capacity(1 << 16),
            cx: HashMap::new(),
        }
    }

    fn send(&mut self, m: &Message<'_>) -> Result<(), ConnError> {
        self.tx.clear();
        m.encode_to_vec(&mut self.tx)?;
        self.stream.write_all(&self.tx)?;
        Ok(())
    }

    fn refuse(&mut self, code: RefuseCode, reason: &str) -> ConnError {
        let reason: String = reason.chars().take(200).collect();
        let _ = self.send(&Message::Refuse(Refuse {
            code,
            reason: &reason,
        }));
        ConnError::Refused(reason)
    }

    /// Reads until one frame is buffered; returns its length.
    fn next_frame(&mut self) -> Result<Option<usize>, ConnError> {
        loop {
            match ferrite_gateway_protocol::frame_len(&self.rx) {
                Ok(Some(n)) if self.rx.len() >= n => return Ok(Some(n)),
                Ok(_) => {}
                Err(e) => return Err(self.refuse(RefuseCode::Protocol, &e.to_string())),
            }
            let mut chunk = [0u8; 4096];
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Ok(None);
            }
            self.rx.extend_from_slice(&chunk[..n]);
        }
    }

    /// Runs `f` on the group's reader with this thread's read channel; an
    /// unknown group or an error from `f` is refused (and closes).
    fn with_reader<T>(
        &mut self,
        group: GroupId,
        f: impl FnOnce(&mut JournalReader, &mut ReadCtx) -> Result<T, String>,
    ) -> Result<T, ConnError> {
        let Some(reader) = self.groups.get(group) else {
            return Err(self.refuse(
                RefuseCode::UnknownGroup,
                &format!("no journal for group {group}"),
            ));
        };
        let mut r = lock(&reader);
        let cx = match self.cx.entry(group) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => v.insert(ReadCtx::open(r.journal())?),
        };
        let res = f(&mut r, cx);
        drop(r);
        res.map_err(|reason| self.refuse(RefuseCode::Protocol, &reason))
    }

    fn run(mut self) -> Result<(), ConnError> {
        let mut hello_seen = false;
        while let Some(n) = self.next_frame()? {
            let frame: Vec<u8> = self.rx.drain(..n).collect();
            let msg = match decode(&frame) {
                Ok(Some((m, _))) => m,
                Ok(None) => return Err(self.refuse(RefuseCode::Protocol, "incomplete frame")),
                Err(e) => return Err(self.refuse(RefuseCode::Protocol, &e.to_string())),
            };
            match msg {
                Message::Hello(h) if !hello_seen => {
                    if h.role != Role::Primary {
                        return Err(self.refuse(
                            RefuseCode::Protocol,
                            "the journal endpoint serves the primary replicator only",
                        ));
                    }
                    hello_seen = true;
                    self.send(&Message::Hello(Hello {
                        role: Role::Appliance,
                        min_version: ferrite_gateway_protocol::wire::MIN_VERSION,
                        max_version: ferrite_gateway_protocol::wire::VERSION,
                        node: NodeId(0),
                        nonce: [0; 32],
                    }))?;
                }
                _ if !hello_seen => {
                    return Err(self.refuse(RefuseCode::Protocol, "expected Hello first"))
                }
                Message::JournalPull(p) => {
                    let max = p.max_records.clamp(1, MAX_PULL);

                    let mut tx = std::mem::take(&mut self.tx);
                    tx.clear();
                    let status = self.with_reader(p.group, |r, cx| {
                        r.persist_due(cx).map_err(|e| e.to_string())?;
                        let trimmed = r.journal().trimmed();
                        // 0: from the trim point (a replicator starting up).
                        let from = if p.from_seq.0 == 0 {
                            trimmed + 1
                        } else {
                            p.from_seq.0
                        };
                        if from <= trimmed {
                            return Err(format!(
                                "pull from {from} but the journal is trimmed up to {trimmed}"
                            ));
                        }
                        // Paused: nothing is shipped (the status still tells the head).
                        let end = if r.journal().is_paused() {
                            from - 1
                        } else {
                            r.journal().committed().min(from + u64::from(max) - 1)
                        };
                        for seq in from..=end {
                            let rec = r.read(cx, seq).map_err(|e| e.to_string())?;
                            Message::Record(Record {
                                header: rec.header,
                                data: &rec.data,
                            })
                            .encode_to_vec(&mut tx)
                            .map_err(|e| e.to_string())?;
                        }
                        let (ts, last_seq) = r.heartbeat(cx).map_err(|e| e.to_string())?;
                        Message::Heartbeat(Heartbeat {
                            group: p.group,
                            domain: p.domain,
                            epoch: Epoch(1),
                            ts,
                            last_seq,
                        })
                        .encode_to_vec(&mut tx)
                        .map_err(|e| e.to_string())?;
                        Ok(status(r, p.domain))
                    })?;
                    self.stream.write_all(&tx)?;
                    self.tx = tx;
                    self.send(&Message::JournalStatus(status))?;
                }
                Message::JournalTrim(t) => {
                    let status = self.with_reader(t.group, |r, cx| {
                        r.trim(cx, t.up_to_seq.0).map_err(|e| e.to_string())?;
                        Ok(status(r, t.domain))
                    })?;
                    self.send(&Message::JournalStatus(status))?;
                }
                other => {
                    return Err(self.refuse(
                        RefuseCode::Protocol,
                        &format!("unexpected {:?} on the journal endpoint", other.kind()),
                    ));
                }
            }
        }
        Ok(())
    }
}

fn status(r: &JournalReader, domain: ferrite_gateway_protocol::DomainId) -> JournalStatus {
    let j = r.journal();
    let s = j.stats();
    JournalStatus {
        group: j.group(),
        domain,
        tail_seq: SeqNo(s.trimmed),
        head_seq: SeqNo(s.committed),
        used_bytes: (s.reserved - s.trimmed) * s.slot_data_bytes,
        capacity: s.slots * s.slot_data_bytes,
        overflowed: s.full_refusals > 0 || j.is_broken(),
    }
}

impl From<JournalError> for ConnError {
    fn from(e: JournalError) -> Self {
        ConnError::Refused(e.to_string())
    }
}
