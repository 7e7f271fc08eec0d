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
use ferrite_ordering::{DomainState, GroupApplier, Offer, OrderingError};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::config::Config;
use crate::conn::{ConnError, Framed};
use crate::primary::hello;
use crate::recv_log::{self, DurableAck, LogMsg, RecvLog};
use crate::status::Shared;

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);
const CONN0: usize = 16;
const DOMAIN: DomainId = DomainId(1);

/// What is applied, kept in `state_file` (written atomically after each applied batch; the
/// receive log holds what is acknowledged and not yet applied).
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
        crate::state_file::load(path, "state file")
    }

    fn save(&self, path: &Path) -> Result<()> {
        crate::state_file::save(path, self)
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
        // Records received before a restart: acknowledged, maybe trimmed on the primary, so
        // they are applied from here.
        let log_path = receive_log_path(&self.state_file);
        let group = self.group;
        let (rlog, replay) = RecvLog::open(&log_path, |f| match decode(f) {
            Ok(Some((Message::Record(r), _))) if r.header.group == group => Some(r.header.seq.0),
            _ => None,
        })?;
        let mut replayed = 0;
        for f in &replay {
            if let Ok((_, Some(_))) = on_frame(f, self.group, &mut applier_state) {
                replayed += 1;
            }
        }
        let mut durable = DurableAck::new(applier_state.domains()[0].prefix().0);
        let psk = self.cfg.psk()?;
        let mut poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let (tx, rx) = channel::<Item>();
        let (done_tx, done_rx) = channel::<AppliedState>();
        let (log_tx, log_rx) = channel::<LogMsg>();
        let (durable_tx, durable_rx) = channel::<u64>();
        let log_worker = {
            let waker = Arc::clone(&waker);
            std::thread::Builder::new()
                .name("receive-log".into())
                .spawn(move || {
                    let r = recv_log::writer(rlog, log_rx, durable_tx, Arc::clone(&waker));
                    if let Err(e) = &r {
                        log::error!("receive log: {e:#}");
                    }
                    let _ = waker.wake();
                    r
                })?
        };
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
            "group {}: accepting the primary on {}, applied up to {}, {replayed} records replayed from {}",
            self.group,
            self.listen,
            state.applied,
            log_path.display()
        );
        let mut conns: Vec<Option<Framed<TcpStream>>> = Vec::new();
        let mut applied = state;
        let mut queued = state.applied;
        let mut received: u64 = 0;
        let mut refused: u64 = 0;
        let mut auth_failures: u64 = 0;
        let mut events = Events::with_capacity(256);
        let window = self.cfg.window;
        // Acknowledged: what the receive log holds durably (or is applied already).
        let ack = |f: &mut Framed<TcpStream>, a: &AppliedState, held: u64, group: GroupId| {
            let _ = f.queue(&Message::Ack(Ack {
                group,
                domain: DOMAIN,
                epoch: Epoch(1),
                cum_seq: SeqNo(a.applied.max(held)),
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
                    "durable": durable.acked(),
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
            if log_worker.is_finished() {
                return match log_worker.join() {
                    Ok(r) => r.context("the receive log stopped"),
                    Err(_) => Err(anyhow::anyhow!("the receive log writer panicked")),
                };
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
                                ack(&mut f, &applied, durable.acked(), self.group);
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
                        let mut applied_now = false;
                        while let Ok(s) = done_rx.try_recv() {
                            applied = s;
                            applied_now = true;
                        }
                        if applied_now {
                            let _ = log_tx.send(LogMsg::Applied(applied.applied));
                        }
                        while let Ok(n) = durable_rx.try_recv() {
                            durable.durable(n);
                        }
                        for f in conns.iter_mut().flatten() {
                            ack(f, &applied, durable.acked(), self.group);
                        }
                    }
                    Token(t) => {
                        let i = t.wrapping_sub(CONN0);
                        let Some(Some(f)) = conns.get_mut(i) else {
                            continue;
                        };
                        let mut close: Option<String> = f.fill().err().map(|e| e.to_string());
                        let mut resent = false;
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
                                Ok((counted, accepted)) => {
                                    received += counted;
                                    if let Some(seq) = accepted {
                                        // Durable before it is acknowledged.
                                        let _ = log_tx.send(LogMsg::Record(seq, frame));
                                        durable.sent(applier_state.domains()[0].prefix().0);
                                    } else if counted > 0 {
                                        resent = true;
                                    }
                                }
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
                        if resent && close.is_none() {
                            // A retransmit of what is held: its acknowledgement was lost or
                            // refused (a restarted primary), so say it again.
                            ack(f, &applied, durable.acked(), self.group);
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
        drop(log_tx);
        let _ = log_worker.join();
        match worker.join() {
            Ok(r) => r,
            Err(_) => Err(anyhow::anyhow!("applier panicked")),
        }
    }
}

/// The receive log beside the state file.
fn receive_log_path(state_file: &Path) -> PathBuf {
    let mut p = state_file.as_os_str().to_owned();
    p.push(".rlog");
    PathBuf::from(p)
}

/// One frame from the primary: the records it counts, and the sequence number of a record
/// accepted (new, to be logged). `Err` refuses and closes the connection.
fn on_frame(
    frame: &[u8],
    group: GroupId,
    g: &mut GroupApplier<Item>,
) -> Result<(u64, Option<u64>), (RefuseCode, String)> {
    let m = match decode(frame) {
        Ok(Some((m, _))) => m,
        Ok(None) => return Ok((0, None)),
        Err(e) => return Err((RefuseCode::Protocol, e.to_string())),
    };
    let order = |e: OrderingError| match e {
        OrderingError::UnknownDomain { .. } => (RefuseCode::UnknownGroup, e.to_string()),
        _ => (RefuseCode::Protocol, e.to_string()),
    };
    match m {
        Message::Hello(h) if h.role == Role::Primary => Ok((0, None)),
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
                Ok(Offer::Accepted) => Ok((1, Some(r.header.seq.0))),
                Ok(_) | Err(OrderingError::OutOfWindow { .. }) => Ok((1, None)),
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
            Ok((0, None))
        }
        other => Err((
            RefuseCode::Protocol,
            format!("unexpected {:?} from the primary", other.kind()),
        )),
    }
}
