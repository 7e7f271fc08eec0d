//! The secondary side: an event loop receiving records and an applier thread writing them to
//! the secondary appliance.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use ferrite_gateway_protocol::{
    decode, Ack, Credit, DomainId, Epoch, GroupId, Message, RecordHeader, RecordOp, Refuse,
    RefuseCode, Role, SeqNo, Timestamp,
};
use ferrite_host::{ConnectOptions, Controller};
use ferrite_link_crypto::Side;
use ferrite_ordering::{DomainState, GroupApplier, OrderingError};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::config::Config;
use crate::conn::{ConnError, Framed};
use crate::primary::hello;
use crate::status::Shared;

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);
const CONN0: usize = 16;
const DOMAIN: DomainId = DomainId(1);

/// What is applied, kept in `state_file` (written atomically after each applied batch, before
/// it is acknowledged).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedState {
    /// Last applied sequence number.
    pub applied: u64,
    /// Its timestamp.
    pub applied_ts: u64,
    /// The limit time reached.
    pub limit: u64,
}

impl AppliedState {
    /// Reads the state file (missing: nothing applied).
    pub fn load(path: &Path) -> Result<AppliedState> {
        match std::fs::read_to_string(path) {
            Ok(t) => {
                serde_json::from_str(&t).with_context(|| format!("state file {}", path.display()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(AppliedState::default()),
            Err(e) => Err(e).with_context(|| format!("state file {}", path.display())),
        }
    }

    fn save(&self, path: &Path) -> Result<()> {
        let tmp = path.with_extension("tmp");
        let f = std::fs::File::create(&tmp)?;
        serde_json::to_writer(&f, self)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    }
}

type Item = (RecordHeader, Vec<u8>);

/// Applies records in the order received, flushes, persists, reports the applied point.
fn applier(
    cfg: Config,
    rx: Receiver<Item>,
    done: Sender<AppliedState>,
    waker: Arc<Waker>,
    mut state: AppliedState,
    state_file: PathBuf,
) -> Result<()> {
    let target = cfg.target.context("target")?;
    let nqn = cfg.nqn.clone().context("nqn")?;
    let mut opts = ConnectOptions::new(target, nqn);
    opts.io_queues = 1;
    opts.kato_ms = 0;
    let mut c = Controller::connect(opts).context("connecting to the secondary appliance")?;
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
            if batch.len() >= 256 {
                break;
            }
        }
        let mut touched: Vec<u32> = Vec::new();
        for (h, data) in &batch {
            let nsid = cfg.target_nsid(h.nsid.0);
            match h.op {
                RecordOp::Write => c.write(1, nsid, h.slba, data, false),
                RecordOp::WriteZeroes => c.write_zeroes(1, nsid, h.slba, h.nblocks, false),
                RecordOp::Deallocate => c.write_zeroes(1, nsid, h.slba, h.nblocks, true),
            }
            .with_context(|| format!("applying record {} to namespace {nsid}", h.seq))?;
            if !touched.contains(&nsid) {
                touched.push(nsid);
            }
            state.applied = h.seq.0;
            state.applied_ts = h.ts.0;
            state.limit = state.limit.max(h.ts.0);
        }
        for nsid in touched {
            c.flush(1, nsid)
                .with_context(|| format!("flush namespace {nsid}"))?;
        }
        state.save(&state_file)?;
        if done.send(state).is_err() {
            break;
        }
        waker.wake()?;
    }
    Ok(())
}

/// The secondary replicator.
pub struct Secondary {
    cfg: Config,
    group: GroupId,
    listen: SocketAddr,
    state_file: PathBuf,
    status: Shared,
    stop: Arc<AtomicBool>,
}

impl std::fmt::Debug for Secondary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secondary")
            .field("group", &self.group)
            .finish_non_exhaustive()
    }
}

impl Secondary {
    /// Prepares the loop.
    pub fn new(cfg: Config, status: Shared, stop: Arc<AtomicBool>) -> Result<Secondary> {
        Ok(Secondary {
            group: GroupId(cfg.group),
            listen: cfg.listen.context("listen")?,
            state_file: cfg.state_file.clone().context("state_file")?,
            cfg,
            status,
            stop,
        })
    }

    /// Runs until `stop` is set or applying fails.
    pub fn run(self) -> Result<()> {
        let state = AppliedState::load(&self.state_file)?;
        let mut applier_state: GroupApplier<Item> = GroupApplier::new(
            [(
                DOMAIN,
                DomainState {
                    applied: SeqNo(state.applied),
                    applied_ts: Timestamp(state.applied_ts),
                },
            )],
            Timestamp(state.limit),
            self.cfg.window * 4,
        );
        let psk = self.cfg.psk()?;
        let mut poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let (tx, rx) = channel::<Item>();
        let (done_tx, done_rx) = channel::<AppliedState>();
        let worker = {
            let (cfg, waker, file) = (
                self.cfg.clone(),
                Arc::clone(&waker),
                self.state_file.clone(),
            );
            std::thread::Builder::new()
                .name("applier".into())
                .spawn(move || {
                    let r = applier(cfg, rx, done_tx, Arc::clone(&waker), state, file);
                    if let Err(e) = &r {
                        log::error!("applier: {e:#}");
                    }
                    let _ = waker.wake();
                    r
                })?
        };
        let mut listener =
            TcpListener::bind(self.listen).with_context(|| format!("listen {}", self.listen))?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        log::info!(
            "group {}: accepting the primary on {}, applied up to {}",
            self.group,
            self.listen,
            state.applied
        );
        let mut conns: Vec<Option<Framed<TcpStream>>> = Vec::new();
        let mut applied = state;
        let mut queued = state.applied;
        let mut received: u64 = 0;
        let mut refused: u64 = 0;
        let mut auth_failures: u64 = 0;
        let mut events = Events::with_capacity(256);
        let window = self.cfg.window;
        let ack = |f: &mut Framed<TcpStream>, a: &AppliedState, group: GroupId| {
            let _ = f.queue(&Message::Ack(Ack {
                group,
                domain: DOMAIN,
                epoch: Epoch(1),
                cum_seq: SeqNo(a.applied),
                durable: true,
                applied_ts: Timestamp(a.applied_ts),
            }));
            let _ = f.queue(&Message::Credit(Credit {
                group,
                domain: DOMAIN,
                epoch: Epoch(1),
                window_end: SeqNo(a.applied + window),
            }));
        };
        while !self.stop.load(Ordering::Relaxed) {
            // Release what the limit allows, in timestamp order.
            while let Some(a) = applier_state.next_to_apply() {
                queued = a.seq.0;
                if tx.send(a.item).is_err() {
                    break;
                }
            }
            for c in conns.iter_mut() {
                if let Some(f) = c {
                    if f.flush().is_err() {
                        *c = None;
                    }
                }
            }
            let limit = applier_state.limit().0;
            let d = &applier_state.domains()[0];
            if let Ok(mut s) = self.status.lock() {
                *s = json!({
                    "role": "secondary",
                    "group": self.group.0,
                    "applied": applied.applied,
                    "applied_ts": applied.applied_ts,
                    "limit": limit,
                    "prefix": d.prefix().0,
                    "queued": queued,
                    "held": applier_state.held(),
                    "received": received,
                    "duplicates": d.duplicates(),
                    "refused": refused,
                    "auth_failures": auth_failures,
                    "sealed": psk.is_some(),
                    "connections": conns.iter().filter(|c| c.is_some()).count(),
                });
            }
            if worker.is_finished() {
                return match worker.join() {
                    Ok(r) => r.context("applier stopped"),
                    Err(_) => Err(anyhow::anyhow!("applier panicked")),
                };
            }
            match poll.poll(&mut events, Some(Duration::from_millis(20))) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            }
            for ev in events.iter() {
                match ev.token() {
                    LISTENER => loop {
                        match listener.accept() {
                            Ok((mut s, peer)) => {
                                let _ = s.set_nodelay(true);
                                let i = conns
                                    .iter()
                                    .position(Option::is_none)
                                    .unwrap_or(conns.len());
                                if i == conns.len() {
                                    conns.push(None);
                                }
                                poll.registry().register(
                                    &mut s,
                                    Token(CONN0 + i),
                                    Interest::READABLE | Interest::WRITABLE,
                                )?;
                                let mut f =
                                    Framed::new(s, psk.as_ref().map(|k| (k, Side::Secondary)));
                                let _ = f.queue_hello(&Message::Hello(hello(
                                    Role::Secondary,
                                    f.hello_nonce(),
                                )));
                                ack(&mut f, &applied, self.group);
                                log::info!("primary connected from {peer}");
                                conns[i] = Some(f);
                            }
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                            Err(e) => {
                                log::warn!("accept: {e}");
                                break;
                            }
                        }
                    },
                    WAKER => {
                        while let Ok(s) = done_rx.try_recv() {
                            applied = s;
                        }
                        for f in conns.iter_mut().flatten() {
                            ack(f, &applied, self.group);
                        }
                    }
                    Token(t) => {
                        let i = t.wrapping_sub(CONN0);
                        let Some(Some(f)) = conns.get_mut(i) else {
                            continue;
                        };
                        let mut close: Option<String> = f.fill().err().map(|e| e.to_string());
                        loop {
                            let frame = match f.next_frame() {
                                Ok(Some(fr)) => fr,
                                Ok(None) => break,
                                Err(e) => {
                                    if let ConnError::Auth(_) = e {
                                        // A peer without our key (or a tampered stream).
                                        auth_failures += 1;
                                        log::warn!("connection {i} refused: {e}");
                                    }
                                    close = Some(e.to_string());
                                    break;
                                }
                            };
                            match on_frame(&frame, self.group, &mut applier_state) {
                                Ok(counted) => received += counted,
                                Err((code, reason)) => {
                                    refused += 1;
                                    let _ = f.queue(&Message::Refuse(Refuse {
                                        code,
                                        reason: &reason,
                                    }));
                                    let _ = f.flush();
                                    close = Some(reason);
                                    break;
                                }
                            }
                        }
                        if let Some(why) = close {
                            log::info!("connection {i} closed: {why}");
                            if let Some(mut f) = conns[i].take() {
                                let _ = poll.registry().deregister(&mut f.stream);
                            }
                        }
                    }
                }
            }
        }
        // The applier finishes (and records) what it was given before the process exits.
        drop(tx);
        match worker.join() {
            Ok(r) => r,
            Err(_) => Err(anyhow::anyhow!("applier panicked")),
        }
    }
}

/// One frame from the primary; `Err` refuses and closes the connection.
fn on_frame(
    frame: &[u8],
    group: GroupId,
    g: &mut GroupApplier<Item>,
) -> Result<u64, (RefuseCode, String)> {
    let m = match decode(frame) {
        Ok(Some((m, _))) => m,
        Ok(None) => return Ok(0),
        Err(e) => return Err((RefuseCode::Protocol, e.to_string())),
    };
    let order = |e: OrderingError| match e {
        OrderingError::UnknownDomain { .. } => (RefuseCode::UnknownGroup, e.to_string()),
        _ => (RefuseCode::Protocol, e.to_string()),
    };
    match m {
        Message::Hello(h) if h.role == Role::Primary => Ok(0),
        Message::Record(r) => {
            if r.header.group != group {
                return Err((
                    RefuseCode::UnknownGroup,
                    format!(
                        "group {} is not replicated here (this is group {group})",
                        r.header.group
                    ),
                ));
            }
            let d = g.domain_mut(r.header.domain).map_err(order)?;
            match d.offer(r.header.seq, r.header.ts, (r.header, r.data.to_vec())) {
                Ok(_) | Err(OrderingError::OutOfWindow { .. }) => Ok(1),
                Err(e) => Err(order(e)),
            }
        }
        Message::Heartbeat(h) => {
            if h.group != group {
                return Err((
                    RefuseCode::UnknownGroup,
                    format!("group {} is not replicated here", h.group),
                ));
            }
            g.domain_mut(h.domain)
                .map_err(order)?
                .heartbeat(h.ts, h.last_seq)
                .map_err(order)?;
            Ok(0)
        }
        other => Err((
            RefuseCode::Protocol,
            format!("unexpected {:?} from the primary", other.kind()),
        )),
    }
}
