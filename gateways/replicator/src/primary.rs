//! The primary side's event loop.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use ferrite_gateway_protocol::{
    decode, DomainId, GroupId, Hello, JournalPull, JournalTrim, Message, NodeId, Role, SeqNo,
};
use ferrite_link_crypto::{Psk, Side};
use ferrite_ordering::SendWindow;
use mio::net::{TcpStream, UnixStream};
use mio::{Events, Interest, Poll, Token};
use serde_json::json;

use crate::config::Config;
use crate::conn::{ConnError, Framed};
use crate::status::Shared;

const JOURNAL: Token = Token(0);
const PEER0: usize = 16;
const RECONNECT: Duration = Duration::from_millis(100);
const TICK: Duration = Duration::from_millis(5);
const DOMAIN: DomainId = DomainId(1);

struct Peer {
    conn: Option<Framed<TcpStream>>,
    retry_at: Instant,
}

/// The primary replicator's state.
pub struct Primary {
    cfg: Config,
    group: GroupId,
    journal_path: PathBuf,
    secondary: SocketAddr,
    poll: Poll,
    journal: Option<Framed<UnixStream>>,
    peers: Vec<Peer>,
    /// Initialised from the journal's trim point.
    window: Option<SendWindow>,
    /// Encoded record frames pulled and not acknowledged.
    cache: BTreeMap<u64, Vec<u8>>,
    pulled: u64,
    pull_outstanding: bool,
    /// Records the outstanding pull brought.
    pull_records: u64,
    next_pull: Instant,
    trim_sent: u64,
    last_heartbeat: Option<Vec<u8>>,
    rr: usize,
    sent_records: u64,
    acked_ts: u64,
    journal_head: u64,
    status: Shared,
    stop: Arc<AtomicBool>,
    /// The link's pre-shared key, if configured.
    psk: Option<Psk>,
}

fn peer_token(i: usize) -> Token {
    Token(PEER0 + i)
}

impl Primary {
    /// Prepares the loop (connections are made by [`Primary::run`]).
    pub fn new(cfg: Config, status: Shared, stop: Arc<AtomicBool>) -> Result<Primary> {
        let journal_path = cfg.journal_socket.clone().context("journal_socket")?;
        let secondary = cfg.secondary.context("secondary")?;
        let psk = cfg.psk()?;
        let now = Instant::now();
        Ok(Primary {
            group: GroupId(cfg.group),
            journal_path,
            secondary,
            poll: Poll::new()?,
            journal: None,
            peers: (0..cfg.connections)
                .map(|_| Peer {
                    conn: None,
                    retry_at: now,
                })
                .collect(),
            window: None,
            cache: BTreeMap::new(),
            pulled: 0,
            pull_outstanding: false,
            pull_records: 0,
            next_pull: now,
            trim_sent: 0,
            last_heartbeat: None,
            rr: 0,
            sent_records: 0,
            acked_ts: 0,
            journal_head: 0,
            status,
            stop,
            psk,
            cfg,
        })
    }

    fn connect_journal(&mut self) -> Result<()> {
        let std = std::os::unix::net::UnixStream::connect(&self.journal_path)
            .with_context(|| format!("journal endpoint {}", self.journal_path.display()))?;
        std.set_nonblocking(true)?;
        let mut s = UnixStream::from_std(std);
        self.poll
            .registry()
            .register(&mut s, JOURNAL, Interest::READABLE | Interest::WRITABLE)?;
        let mut f = Framed::new(s, None);
        f.queue_hello(&Message::Hello(hello(Role::Primary, [0; 32])))?;
        // From the trim point: the first answer tells where the journal starts.
        f.queue(&Message::JournalPull(JournalPull {
            group: self.group,
            domain: DOMAIN,
            from_seq: SeqNo(0),
            max_records: 1,
        }))?;
        self.pull_outstanding = true;
        self.journal = Some(f);
        Ok(())
    }

    fn connect_peers(&mut self, now: Instant) {
        for i in 0..self.peers.len() {
            if self.peers[i].conn.is_some() || now < self.peers[i].retry_at {
                continue;
            }
            match std::net::TcpStream::connect_timeout(&self.secondary, Duration::from_millis(500))
            {
                Ok(std) => {
                    let _ = std.set_nodelay(true);
                    if std.set_nonblocking(true).is_err() {
                        continue;
                    }
                    let mut s = TcpStream::from_std(std);
                    if self
                        .poll
                        .registry()
                        .register(
                            &mut s,
                            peer_token(i),
                            Interest::READABLE | Interest::WRITABLE,
                        )
                        .is_err()
                    {
                        continue;
                    }
                    let mut f = Framed::new(s, self.psk.as_ref().map(|k| (k, Side::Primary)));
                    let _ = f.queue_hello(&Message::Hello(hello(Role::Primary, f.hello_nonce())));
                    if let Some(hb) = &self.last_heartbeat {
                        f.queue_bytes(hb);
                    }
                    log::info!("connection {i} to {} up", self.secondary);
                    self.peers[i].conn = Some(f);
                    if let Some(w) = &mut self.window {
                        w.resend_all(0);
                    }
                }
                Err(e) => {
                    log::debug!("connection {i} to {}: {e}", self.secondary);
                    self.peers[i].retry_at = now + RECONNECT;
                }
            }
        }
    }

    fn drop_peer(&mut self, i: usize, why: &dyn std::fmt::Display) {
        if let Some(mut f) = self.peers[i].conn.take() {
            let _ = self.poll.registry().deregister(&mut f.stream);
            log::info!("connection {i} to {} lost: {why}", self.secondary);
        }
        self.peers[i].retry_at = Instant::now() + RECONNECT;
        if let Some(w) = &mut self.window {
            w.resend_all(0);
        }
    }

    /// A connected peer for the next frame, round robin.
    fn pick(&mut self) -> Option<usize> {
        let n = self.peers.len();
        for k in 0..n {
            let i = (self.rr + k) % n;
            if self.peers[i].conn.as_ref().is_some_and(|c| c.established()) {
                self.rr = i + 1;
                return Some(i);
            }
        }
        None
    }

    fn on_journal_frame(&mut self, frame: &[u8]) -> Result<()> {
        let Some((m, _)) = decode(frame)? else {
            return Ok(());
        };
        match m {
            Message::Hello(_) => {}
            Message::Record(r) => {
                if r.header.group != self.group {
                    anyhow::bail!("the journal sent a record of group {}", r.header.group);
                }
                self.pulled = self.pulled.max(r.header.seq.0);
                self.pull_records += 1;
                self.cache
                    .entry(r.header.seq.0)
                    .or_insert_with(|| frame.to_vec());
            }
            Message::Heartbeat(_) => {
                self.last_heartbeat = Some(frame.to_vec());
                for i in 0..self.peers.len() {
                    if let Some(f) = &mut self.peers[i].conn {
                        f.queue_bytes(frame);
                    }
                }
            }
            Message::JournalStatus(st) => {
                self.pull_outstanding = false;
                self.journal_head = st.head_seq.0;
                if self.window.is_none() {
                    let acked = st.tail_seq;
                    self.pulled = acked.0;
                    self.trim_sent = acked.0;
                    self.window = Some(SendWindow::new(
                        DOMAIN,
                        acked,
                        SeqNo(acked.0 + self.cfg.window),
                        self.cfg.rto_ms * 1_000_000,
                    ));
                    log::info!(
                        "journal of group {} starts after record {acked}",
                        self.group
                    );
                }
                // Pull again at once while records come (a paused journal sends none).
                let more = st.head_seq.0 > self.pulled && self.pull_records > 0;
                self.pull_records = 0;
                self.next_pull = if more {
                    Instant::now()
                } else {
                    Instant::now() + Duration::from_micros(self.cfg.idle_pull_us)
                };
            }
            Message::Refuse(r) => anyhow::bail!("the journal refused: {}", r.reason),
            other => anyhow::bail!("unexpected {:?} from the journal", other.kind()),
        }
        Ok(())
    }

    fn on_peer_frame(&mut self, frame: &[u8]) -> Result<(), String> {
        let m = match decode(frame) {
            Ok(Some((m, _))) => m,
            Ok(None) => return Ok(()),
            Err(e) => return Err(e.to_string()),
        };
        match m {
            Message::Hello(h) if h.role == Role::Secondary => {}
            Message::Ack(a) if a.group == self.group => {
                if let Some(w) = &mut self.window {
                    match w.on_ack(a.cum_seq) {
                        Ok(_) => {
                            self.acked_ts = self.acked_ts.max(a.applied_ts.0);
                            let acked = w.acked().0;
                            self.cache = self.cache.split_off(&(acked + 1));
                        }
                        Err(e) => log::debug!("{e}"),
                    }
                }
            }
            Message::Credit(c) if c.group == self.group => {
                if let Some(w) = &mut self.window {
                    w.on_credit(c.window_end);
                }
            }
            Message::Refuse(r) => return Err(format!("refused: {}", r.reason)),
            other => return Err(format!("unexpected {:?}", other.kind())),
        }
        Ok(())
    }

    fn pump(&mut self, now: Instant, now_ns: u64) -> Result<()> {
        let Some(w) = &mut self.window else {
            return Ok(());
        };
        // Trim what the secondary holds.
        let acked = w.acked().0;
        if acked > self.trim_sent {
            if let Some(j) = &mut self.journal {
                j.queue(&Message::JournalTrim(JournalTrim {
                    group: self.group,
                    domain: DOMAIN,
                    up_to_seq: SeqNo(acked),
                }))?;
                self.trim_sent = acked;
            }
        }
        // Pull more while there is room.
        let room = (self.cfg.window as usize).saturating_sub(self.cache.len());
        if !self.pull_outstanding && room > 0 && now >= self.next_pull {
            if let Some(j) = &mut self.journal {
                j.queue(&Message::JournalPull(JournalPull {
                    group: self.group,
                    domain: DOMAIN,
                    from_seq: SeqNo(self.pulled.max(acked) + 1),
                    max_records: room.min(1024) as u32,
                }))?;
                self.pull_outstanding = true;
            }
        }
        // Send new records and due retransmits, spread over the connections.
        let mut to_send = Vec::new();
        if self
            .peers
            .iter()
            .any(|p| p.conn.as_ref().is_some_and(|c| c.established()))
        {
            let w = self.window.as_mut().expect("checked above");
            w.due(now_ns, 256, &mut to_send);
            while w.can_send_new() && w.next_new().0 <= self.pulled {
                match w.send_new(now_ns) {
                    Some(s) => to_send.push(s),
                    None => break,
                }
            }
        }
        for seq in to_send {
            let Some(i) = self.pick() else { break };
            if let (Some(frame), Some(f)) = (self.cache.get(&seq.0), &mut self.peers[i].conn) {
                f.queue_bytes(frame);
                self.sent_records += 1;
            }
        }
        Ok(())
    }

    fn publish_status(&self) {
        let w = self.window.as_ref();
        let acked = w.map_or(0, |w| w.acked().0);
        let v = json!({
            "role": "primary",
            "group": self.group.0,
            "journal_head": self.journal_head,
            "pulled": self.pulled,
            "acked": acked,
            "lag_records": self.journal_head.saturating_sub(acked),
            "in_flight": w.map_or(0, |w| w.in_flight()),
            "retransmits": w.map_or(0, |w| w.retransmits()),
            "sent_records": self.sent_records,
            "acked_ts": self.acked_ts,
            "connections": self.peers.iter().filter(|p| p.conn.is_some()).count(),
        });
        if let Ok(mut s) = self.status.lock() {
            // The initial copy's progress stays visible after it finished.
            let copy = s.get("copy").cloned();
            *s = v;
            if let Some(c) = copy {
                s["copy"] = c;
            }
        }
    }

    /// Runs until `stop` is set or the journal endpoint fails.
    pub fn run(mut self) -> Result<()> {
        self.connect_journal()?;
        let mut events = Events::with_capacity(256);
        let start = Instant::now();
        let mut frames = Vec::new();
        while !self.stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            self.connect_peers(now);
            self.pump(now, (now - start).as_nanos() as u64)?;
            // Write out.
            if let Some(j) = &mut self.journal {
                j.flush()
                    .map_err(|e| anyhow::anyhow!("journal endpoint: {e}"))?;
            }
            for i in 0..self.peers.len() {
                let r = match &mut self.peers[i].conn {
                    Some(f) => f.flush(),
                    None => Ok(()),
                };
                if let Err(e) = r {
                    self.drop_peer(i, &e);
                }
            }
            self.publish_status();
            match self.poll.poll(&mut events, Some(TICK)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            }
            for ev in events.iter() {
                if ev.token() == JOURNAL {
                    let j = self.journal.as_mut().context("journal connection")?;
                    if let Err(e) = j.fill() {
                        anyhow::bail!("journal endpoint: {e}");
                    }
                    frames.clear();
                    while let Some(f) = j
                        .next_frame()
                        .map_err(|e| anyhow::anyhow!("journal endpoint: {e}"))?
                    {
                        frames.push(f);
                    }
                    for f in std::mem::take(&mut frames) {
                        self.on_journal_frame(&f)?;
                    }
                    continue;
                }
                let i = ev.token().0.wrapping_sub(PEER0);
                if i >= self.peers.len() {
                    continue;
                }
                let mut got = Vec::new();
                let res: Result<(), ConnError> = (|| {
                    let Some(f) = &mut self.peers[i].conn else {
                        return Ok(());
                    };
                    f.fill()?;
                    while let Some(fr) = f.next_frame()? {
                        got.push(fr);
                    }
                    Ok(())
                })();
                for fr in &got {
                    if let Err(e) = self.on_peer_frame(fr) {
                        self.drop_peer(i, &e);
                        break;
                    }
                }
                if let Err(e) = res {
                    self.drop_peer(i, &e);
                }
            }
        }
        Ok(())
    }
}

pub(crate) fn hello(role: Role, nonce: [u8; 32]) -> Hello {
    Hello {
        role,
        min_version: ferrite_gateway_protocol::wire::MIN_VERSION,
        max_version: ferrite_gateway_protocol::wire::VERSION,
        node: NodeId(0),
        nonce,
    }
}

impl std::fmt::Debug for Primary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Primary")
            .field("group", &self.group)
            .field("pulled", &self.pulled)
            .finish_non_exhaustive()
    }
}
