//! The TCP ceiling for NVMe/TCP-shaped traffic on this machine: a minimal server and client that
//! exchange request and response messages of the sizes a 4 KiB read uses (a 72-byte command
//! capsule; a 24-byte C2HData header + the data + a 24-byte response capsule), at the same queue
//! depth and on the same cores, with no storage and no NVMe logic. Benchmarks report the target's
//! IOPS as a fraction of this.
//!
//! ```sh
//! ferrite-tcp-limit server --listen 127.0.0.1:4499 --core 0
//! ferrite-tcp-limit client --addr 127.0.0.1:4499 --core 1 --qd 32 --size 4096 --time 10
//! ```

use std::io::{IoSlice, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use hdrhistogram::Histogram;

const REQUEST: usize = 72;
const HEADER: usize = 24;

#[derive(Debug, Parser)]
#[command(
    name = "ferrite-tcp-limit",
    about = "TCP ceiling for NVMe/TCP-shaped request/response traffic"
)]
struct Args {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// Answer every 72-byte request with header + SIZE bytes + header (busy-polled, one thread).
    Server {
        #[arg(long)]
        listen: SocketAddr,
        #[arg(long)]
        core: Option<usize>,
        /// Response payload per request (the first 8 request bytes may override it: 0 = this).
        #[arg(long, default_value_t = 4096)]
        size: usize,
    },
    /// Keep QD requests outstanding for TIME seconds and report IOPS and latency.
    Client {
        #[arg(long)]
        addr: SocketAddr,
        #[arg(long)]
        core: Option<usize>,
        #[arg(long, default_value_t = 32)]
        qd: usize,
        #[arg(long, default_value_t = 4096)]
        size: usize,
        #[arg(long, default_value_t = 10)]
        time: u64,
    },
}

fn pin(core: Option<usize>) -> Result<()> {
    if let Some(core) = core {
        affinity::set_thread_affinity([core])
            .map_err(|e| anyhow::anyhow!("pin to core {core}: {e}"))?;
    }
    Ok(())
}

fn serve(stream: TcpStream, size: usize) -> Result<()> {
    stream.set_nodelay(true)?;
    stream.set_nonblocking(true)?;
    let mut stream = stream;
    let header = [0u8; HEADER];
    let payload = vec![0xA5u8; size];
    let mut rx = vec![0u8; 64 * 1024];
    let mut have = 0usize;
    let mut pending = 0usize; // responses owed
    let mut partial = 0usize; // bytes of the current response already sent
    let per = HEADER + size + HEADER;
    loop {
        match stream.read(&mut rx[have..]) {
            Ok(0) => return Ok(()),
            Ok(n) => {
                have += n;
                pending += have / REQUEST;
                let rest = have % REQUEST;
                rx.copy_within(have - rest..have, 0);
                have = rest;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e.into()),
        }
        while pending > 0 {
            // One writev for up to 16 responses, like a target batching its completions.
            let batch = pending.min(16);
            let mut parts: Vec<&[u8]> = Vec::with_capacity(batch * 3);
            for _ in 0..batch {
                parts.extend_from_slice(&[&header[..], &payload[..], &header[..]]);
            }
            let total = batch * per - partial;
            let mut skip = partial;
            let slices: Vec<IoSlice<'_>> = parts
                .into_iter()
                .filter_map(|part| {
                    if skip >= part.len() {
                        skip -= part.len();
                        None
                    } else {
                        let out = IoSlice::new(&part[skip..]);
                        skip = 0;
                        Some(out)
                    }
                })
                .collect();
            match stream.write_vectored(&slices) {
                Ok(n) => {
                    let done = partial + n;
                    pending -= done / per;
                    partial = done % per;
                    if n < total {
                        break;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e.into()),
            }
        }
    }
}

fn client(addr: SocketAddr, qd: usize, size: usize, time: u64) -> Result<()> {
    let mut stream = TcpStream::connect(addr).with_context(|| format!("connect {addr}"))?;
    stream.set_nodelay(true)?;
    let per = HEADER + size + HEADER;
    let request = [0u8; REQUEST];
    let mut sent_at = std::collections::VecDeque::with_capacity(qd);
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut rx = vec![0u8; 256 * 1024];
    let mut got = 0usize;
    let start = Instant::now();
    let end = start + Duration::from_secs(time);
    let mut ops = 0u64;
    for _ in 0..qd {
        stream.write_all(&request)?;
        sent_at.push_back(Instant::now());
    }
    while Instant::now() < end {
        let n = stream.read(&mut rx)?;
        if n == 0 {
            bail!("server closed the connection");
        }
        got += n;
        let mut out = 0;
        while got >= per {
            got -= per;
            let t = sent_at
                .pop_front()
                .context("more responses than requests")?;
            hist.record(t.elapsed().as_nanos() as u64 / 1000 + 1)?;
            ops += 1;
            out += 1;
        }
        if out > 0 {
            let burst = vec![0u8; REQUEST * out];
            stream.write_all(&burst)?;
            let now = Instant::now();
            for _ in 0..out {
                sent_at.push_back(now);
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "limit: QD {qd} x {size} B responses, {secs:.2} s\nops {ops}  IOPS {:.1}  MiB/s {:.2}\nlatency us: avg {:.1}  p50 {}  p99 {}  max {}",
        ops as f64 / secs,
        ops as f64 * size as f64 / secs / (1 << 20) as f64,
        hist.mean(),
        hist.value_at_quantile(0.5),
        hist.value_at_quantile(0.99),
        hist.max()
    );
    Ok(())
}

fn main() -> Result<()> {
    match Args::parse().mode {
        Mode::Server { listen, core, size } => {
            pin(core)?;
            let listener = TcpListener::bind(listen).with_context(|| format!("bind {listen}"))?;
            eprintln!("ferrite-tcp-limit: serving {size}-byte responses on {listen}");
            for stream in listener.incoming() {
                let stream = stream?;
                if let Err(e) = serve(stream, size) {
                    eprintln!("connection ended: {e}");
                }
            }
            Ok(())
        }
        Mode::Client {
            addr,
            core,
            qd,
            size,
            time,
        } => {
            pin(core)?;
            client(addr, qd, size, time)
        }
    }
}
