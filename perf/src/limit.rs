//! `ferrite-perf limit`: the ceiling of this machine for NVMe/TCP-shaped
//! traffic. A minimal busy-polled TCP server and client exchange request and
//! response messages of the sizes the same NVMe/TCP workload puts on the wire
//! (same queue depth, connections and cores) with no storage and no NVMe
//! logic. Reports state the target's result as a fraction of this.
//!
//! Each connection opens with an 8-byte hello (request size, response size,
//! little endian u32 each); then every request of that size is answered by
//! one response of that size.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::config::{human_size, Workload};
use crate::error::PerfError;
use crate::stats::{Counters, Summary};

/// NVMe/TCP command capsule: 8-byte common header + 64-byte SQE.
pub const CAPSULE_CMD: u32 = 72;
/// NVMe/TCP response capsule: 8-byte header + 16-byte CQE.
pub const CAPSULE_RESP: u32 = 24;
/// C2HData / H2CData / R2T PDU header.
pub const DATA_HEADER: u32 = 24;
/// Largest response the server sends in one write call.
const TX_CHUNK: usize = 1 << 20;

/// Bytes on the wire per I/O: (host to target, target to host).
///
/// A read is a command capsule out and C2HData + data + response back. A
/// write carries its data in the capsule when it fits `in_capsule`;
/// beyond that the R2T/H2CData exchange moves the same bytes plus two
/// headers, which this models as one round trip (a slightly optimistic ceiling).
pub fn wire_shape(write: bool, io_size: u32, in_capsule: u32) -> (u32, u32) {
    match (write, io_size <= in_capsule) {
        (false, _) => (CAPSULE_CMD, DATA_HEADER + io_size + CAPSULE_RESP),
        (true, true) => (CAPSULE_CMD + io_size, CAPSULE_RESP),
        (true, false) => (
            CAPSULE_CMD + DATA_HEADER + io_size,
            DATA_HEADER + CAPSULE_RESP,
        ),
    }
}

/// A ceiling measurement.
#[derive(Debug, Clone)]
pub struct LimitConfig {
    /// Server address (client mode).
    pub addr: SocketAddr,
    /// Request bytes.
    pub request: u32,
    /// Response bytes.
    pub response: u32,
    /// I/O payload bytes, for MiB/s.
    pub io_size: u32,
    /// Requests outstanding per connection.
    pub queue_depth: u16,
    /// Connections.
    pub connections: u16,
    /// Client cores, one pinned thread each (empty: one unpinned thread).
    pub cores: Vec<usize>,
    /// Measured time.
    pub time: Duration,
}

impl LimitConfig {
    /// The ceiling for `workload` (writes when it writes at all) with `io_size` I/O.
    pub fn for_workload(addr: SocketAddr, workload: Workload, io_size: u32) -> LimitConfig {
        let (request, response) = wire_shape(workload.read_pct(50) == 0, io_size, 8192);
        LimitConfig {
            addr,
            request,
            response,
            io_size,
            queue_depth: 32,
            connections: 1,
            cores: Vec::new(),
            time: Duration::from_secs(10),
        }
    }
}

/// What the ceiling run measured.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LimitReport {
    /// Request bytes.
    pub request: u32,
    /// Response bytes.
    pub response: u32,
    /// Queue depth per connection.
    pub queue_depth: u16,
    /// Connections.
    pub connections: u16,
    /// IOPS, bandwidth and latency as for a target.
    pub summary: Summary,
}

impl std::fmt::Display for LimitReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = &self.summary;
        writeln!(
            f,
            "limit: {} B requests / {} B responses, QD {} x {} connection(s), {:.2} s",
            self.request, self.response, self.queue_depth, self.connections, s.seconds
        )?;
        writeln!(f, "{:<6} {}", "", crate::report::TABLE_HEADER)?;
        write!(f, "{:<6} {}", "limit", crate::report::table_row(s))
    }
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> PerfError {
    let what = what.into();
    move |source| PerfError::Io { what, source }
}

fn pin(core: Option<usize>) -> Result<(), PerfError> {
    if let Some(core) = core {
        affinity::set_thread_affinity([core])
            .map_err(|e| PerfError::Worker(format!("pin to core {core}: {e}")))?;
    }
    Ok(())
}

/// One server-side connection.
struct ServerConn {
    stream: TcpStream,
    hello: Option<(usize, usize)>,
    rx_have: usize,
    owed: usize,
}

/// Serves every connection on `listener` from this (busy-polling) thread
/// until `stop` is set.
pub fn serve(listener: TcpListener, stop: &AtomicBool) -> Result<(), PerfError> {
    listener
        .set_nonblocking(true)
        .map_err(io_err("listener non-blocking"))?;
    let zeros = vec![0u8; TX_CHUNK];
    let mut rx = vec![0u8; 256 * 1024];
    let mut conns: Vec<ServerConn> = Vec::new();
    let mut turn = 0u32;
    while !stop.load(Ordering::Relaxed) {
        turn = turn.wrapping_add(1);
        if conns.is_empty() || turn % 256 == 0 {
            match listener.accept() {
                Ok((s, _)) => {
                    s.set_nodelay(true).map_err(io_err("nodelay"))?;
                    s.set_nonblocking(true).map_err(io_err("non-blocking"))?;
                    conns.push(ServerConn {
                        stream: s,
                        hello: None,
                        rx_have: 0,
                        owed: 0,
                    });
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    if conns.is_empty() {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
                Err(e) => return Err(io_err("accept")(e)),
            }
        }
        conns.retain_mut(|c| match serve_once(c, &mut rx, &zeros) {
            Ok(open) => open,
            Err(e) => {
                log::debug!("limit server: connection ended: {e}");
                false
            }
        });
    }
    Ok(())
}

/// Reads what arrived and writes what is owed; false when the peer closed.
fn serve_once(c: &mut ServerConn, rx: &mut [u8], zeros: &[u8]) -> std::io::Result<bool> {
    match c.stream.read(rx) {
        Ok(0) => return Ok(false),
        Ok(mut n) => {
            if c.hello.is_none() {
                // The 8-byte hello arrives before anything else; tiny, so
                // it is in the first segment in practice, but count it anyway.
                let need = 8 - c.rx_have;
                let take = need.min(n);
                rx.copy_within(..take, 0);
                c.rx_have += take;
                if c.rx_have < 8 {
                    return Ok(true);
                }
                let req = u32::from_le_bytes([rx[0], rx[1], rx[2], rx[3]]) as usize;
                let resp = u32::from_le_bytes([rx[4], rx[5], rx[6], rx[7]]) as usize;
                if req == 0 || resp == 0 {
                    return Err(std::io::Error::new(ErrorKind::InvalidData, "zero sizes"));
                }
                c.hello = Some((req, resp));
                c.rx_have = 0;
                n -= take;
            }
            let (req, resp) = c.hello.unwrap_or((1, 1));
            c.rx_have += n;
            c.owed += (c.rx_have / req) * resp;
            c.rx_have %= req;
        }
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        Err(e) => return Err(e),
    }
    while c.owed > 0 {
        let n = c.owed.min(zeros.len());
        match c.stream.write(&zeros[..n]) {
            Ok(w) => {
                c.owed -= w;
                if w < n {
                    break;
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// One client-side connection.
struct ClientConn {
    stream: TcpStream,
    sent_at: VecDeque<Instant>,
    rx_have: usize,
    tx_owed: usize,
}

fn client_thread(
    cfg: &LimitConfig,
    conns: usize,
    start: Instant,
    deadline: Instant,
) -> Result<Counters, PerfError> {
    let (req, resp) = (cfg.request as usize, cfg.response as usize);
    let mut list = Vec::with_capacity(conns);
    for _ in 0..conns {
        let mut s = TcpStream::connect(cfg.addr).map_err(io_err(format!(
            "connecting to the limit server {}",
            cfg.addr
        )))?;
        s.set_nodelay(true).map_err(io_err("nodelay"))?;
        let mut hello = [0u8; 8];
        hello[..4].copy_from_slice(&cfg.request.to_le_bytes());
        hello[4..].copy_from_slice(&cfg.response.to_le_bytes());
        s.write_all(&hello).map_err(io_err("hello"))?;
        s.set_nonblocking(true).map_err(io_err("non-blocking"))?;
        list.push(ClientConn {
            stream: s,
            sent_at: VecDeque::with_capacity(usize::from(cfg.queue_depth)),
            rx_have: 0,
            tx_owed: 0,
        });
    }
    let zeros = vec![0u8; TX_CHUNK.min(req * usize::from(cfg.queue_depth)).max(req)];
    let mut rx = vec![0u8; 256 * 1024];
    let mut counters = Counters::default();
    let now = Instant::now();
    for c in &mut list {
        for _ in 0..cfg.queue_depth {
            c.sent_at.push_back(now);
        }
        c.tx_owed = req * usize::from(cfg.queue_depth);
    }
    let ioerr = |e| io_err("limit client")(e);
    while Instant::now() < deadline {
        for c in &mut list {
            while c.tx_owed > 0 {
                let n = c.tx_owed.min(zeros.len());
                match c.stream.write(&zeros[..n]) {
                    Ok(w) => {
                        c.tx_owed -= w;
                        if w < n {
                            break;
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => return Err(ioerr(e)),
                }
            }
            let n = match c.stream.read(&mut rx) {
                Ok(0) => {
                    return Err(PerfError::Io {
                        what: "limit client".into(),
                        source: std::io::Error::new(
                            ErrorKind::UnexpectedEof,
                            "the limit server closed the connection",
                        ),
                    })
                }
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => continue,
                Err(e) => return Err(ioerr(e)),
            };
            c.rx_have += n;
            let now = Instant::now();
            let slot = (now.duration_since(start).as_secs()) as usize;
            while c.rx_have >= resp {
                c.rx_have -= resp;
                let Some(t) = c.sent_at.pop_front() else {
                    break;
                };
                let lat = now.duration_since(t).as_nanos() as u64;
                counters.record(false, u64::from(cfg.io_size), lat, slot);
                c.sent_at.push_back(now);
                c.tx_owed += req;
            }
        }
    }
    Ok(counters)
}

/// Runs the client side against a server at `cfg.addr`.
pub fn client(cfg: &LimitConfig) -> Result<LimitReport, PerfError> {
    if cfg.queue_depth == 0 || cfg.connections == 0 || cfg.request == 0 || cfg.response == 0 {
        return Err(PerfError::Config(
            "limit: queue depth, connections and sizes must be non-zero".into(),
        ));
    }
    let threads = cfg.cores.len().max(1).min(usize::from(cfg.connections));
    let start = Instant::now();
    let deadline = start + cfg.time;
    let handles: Vec<_> = (0..threads)
        .map(|i| {
            let conns = (usize::from(cfg.connections) + threads - 1 - i) / threads;
            let core = cfg.cores.get(i).copied();
            let cfg = cfg.clone();
            std::thread::Builder::new()
                .name(format!("limit-client-{i}"))
                .spawn(move || {
                    pin(core)?;
                    client_thread(&cfg, conns, start, deadline)
                })
                .map_err(|e| PerfError::Worker(e.to_string()))
        })
        .collect::<Result<_, _>>()?;
    let mut total = Counters::default();
    for h in handles {
        let c = h
            .join()
            .map_err(|_| PerfError::Worker("a limit client thread panicked".into()))??;
        total.merge(&c);
    }
    let elapsed = start.elapsed().min(cfg.time);
    Ok(LimitReport {
        request: cfg.request,
        response: cfg.response,
        queue_depth: cfg.queue_depth,
        connections: cfg.connections,
        summary: total.summary(
            &format!("limit {}", human_size(cfg.io_size)),
            elapsed,
            Duration::from_secs(1),
        ),
    })
}

/// Runs a server thread pinned to `server_core` on a loopback port and the
/// client against it, then stops the server.
pub fn run_both(cfg: &LimitConfig, server_core: Option<usize>) -> Result<LimitReport, PerfError> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(io_err("bind the limit server"))?;
    let addr = listener.local_addr().map_err(io_err("local address"))?;
    let stop = Arc::new(AtomicBool::new(false));
    let server = {
        let stop = stop.clone();
        std::thread::Builder::new()
            .name("limit-server".into())
            .spawn(move || {
                pin(server_core)?;
                serve(listener, &stop)
            })
            .map_err(|e| PerfError::Worker(e.to_string()))?
    };
    let mut c = cfg.clone();
    c.addr = addr;
    let r = client(&c);
    stop.store(true, Ordering::Relaxed);
    let s = server
        .join()
        .map_err(|_| PerfError::Worker("the limit server panicked".into()))?;
    let r = r?;
    s?;
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_shapes() {
        assert_eq!(wire_shape(false, 4096, 8192), (72, 24 + 4096 + 24));
        assert_eq!(wire_shape(true, 4096, 8192), (72 + 4096, 24));
        assert_eq!(wire_shape(true, 131072, 8192), (72 + 24 + 131072, 48));
    }

    #[test]
    fn both_sides_exchange_messages() {
        let mut cfg = LimitConfig::for_workload(
            "127.0.0.1:1".parse().expect("addr"),
            Workload::RandWrite,
            4096,
        );
        cfg.time = Duration::from_millis(300);
        cfg.queue_depth = 4;
        cfg.connections = 2;
        let r = run_both(&cfg, None).expect("limit run");
        assert!(r.summary.ops > 0, "{r}");
        assert_eq!((r.request, r.response), (72 + 4096, 24));
        assert!(r.to_string().contains("limit"));
    }
}
